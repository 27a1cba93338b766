"""Network.check_gradients against an independent finite difference (tests/engine/naive.py's
plain-numpy forward pass and loss) for every activation, output, loss, bias and gradient mode;
its analytic half against naive's backward pass; the step h; cancellation between chunks."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.service.engine import model as model_module
from jitnet.service.engine.model import Activation, Architecture, GradientMode, Loss, Network
from jitnet.service.errors import Cancelled, InvalidArgument

from ..engine import naive
from ..support.gradient_grid import GRID, MODES, case_id

H = 1e-4  # the server's default step


def make_problem(seed, hidden, output, loss, bias, mode, depth=None):
    """A random network of 1 to 3 layers of neurons and one sample. With relu, no net input
    lies within 1e-2 of the kink, where a finite difference of step H would straddle it."""
    rng = np.random.default_rng(seed)
    depth = depth or 1 + seed % 3
    sizes = [int(s) for s in rng.integers(1, 6, depth + 1)]
    if output == Activation.SOFTMAX:
        sizes[-1] = max(sizes[-1], 2)  # a 1-wide softmax is constant
    arch = Architecture(tuple(sizes), hidden, output, loss, bias=bias, gradient_mode=mode)
    for _ in range(200):
        layers = naive.random_layers(rng, sizes, bias)
        x = rng.normal(0.0, 1.0, (1, sizes[0]))
        trace = naive.forward(layers, x, arch)
        if hidden != Activation.RELU or all(np.abs(z).min() > 1e-2 for z, _ in trace[:-1]):
            break
    else:
        raise AssertionError("no relu problem away from the kink; change the seed")
    return arch, layers, x, naive.random_targets(rng, 1, sizes[-1], arch)


def relative_errors(a, n):
    return np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), 1e-6)


def flat(pairs):
    return np.concatenate([np.ravel(p) for pair in pairs for p in pair if p is not None])


def assert_check_matches(check, layers, x, t, arch, h=H):
    """The check's numeric half equals the independent finite difference, its analytic half
    naive's backward pass, and its relative errors follow from those two."""
    numeric = naive.finite_difference_descent(
        [(w.copy(), None if b is None else b.copy()) for w, b in layers], x, t, arch, h)
    analytic = naive.backward(layers, x, t, arch).descent
    assert len(check.layers) == len(layers)
    for k, (got, (nw, nb), (aw, ab)) in enumerate(
            zip(check.layers, numeric, analytic, strict=True)):
        # Both finite differences of one loss in different arithmetic: each loss is off by a
        # few ulp, over 2h that is about 1e-12.
        np.testing.assert_allclose(got.numeric_weights, nw, rtol=1e-7, atol=1e-10,
                                   err_msg=f"layer {k} numeric weights")
        np.testing.assert_allclose(got.weights, aw, rtol=1e-9, atol=1e-13,
                                   err_msg=f"layer {k} analytic weights")
        assert (got.biases is None) == (nb is None) == (got.numeric_biases is None)
        if nb is not None:
            np.testing.assert_allclose(got.numeric_biases, nb, rtol=1e-7, atol=1e-10)
            np.testing.assert_allclose(got.biases, ab, rtol=1e-9, atol=1e-13)
        # Relative errors agree as far as the two finite differences do: to about 1e-12
        # over the gradient's size, under 1e-6 here.
        expected = relative_errors(flat([(aw, ab)]), flat([(nw, nb)])).max()
        assert got.max_relative_error == pytest.approx(expected, rel=1e-3, abs=1e-6)
    expected = relative_errors(flat(analytic), flat(numeric)).max()
    assert check.max_relative_error == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert check.loss == pytest.approx(naive.mean_loss(layers, x, t, arch), rel=1e-12,
                                       abs=1e-15)
    return expected


@pytest.mark.parametrize("case", GRID, ids=case_id)
def test_check_equals_an_independent_finite_difference(case):
    hidden, (output, loss), bias, mode = case
    arch, layers, x, t = make_problem(GRID.index(case), hidden, output, loss, bias, mode)
    check = Network.from_layers(arch, layers).check_gradients(x[0], t[0])
    assert check.epsilon == H
    worst = assert_check_matches(check, layers, x, t, arch)
    if mode == GradientMode.EXACT:
        assert worst < 1e-5  # about 1e-6: the backward pass is the true gradient


def test_article_mode_shows_how_far_the_articles_derivative_is():
    # The article's network: f(y) (1 - f(y)) instead of y (1 - y) is 20-30% off everywhere
    # the gradient is not zero; the same network in EXACT mode agrees.
    hidden = np.array([[0.2, 0.6], [0.5, 0.7], [0.4, 0.9], [0.8, 0.3]])
    out = np.array([[0.6, 0.7, 0.3, 0.4]])
    checks = {}
    for mode in MODES:
        arch = Architecture((2, 4, 1), bias=False, gradient_mode=mode)
        layers = [(hidden, None), (out, None)]
        checks[mode] = Network.from_layers(arch, layers).check_gradients([0.0, 1.0], [1.0])
        assert_check_matches(checks[mode], layers, np.array([[0.0, 1.0]]), np.array([[1.0]]),
                             arch)
    assert checks[GradientMode.EXACT].max_relative_error < 1e-7
    article = checks[GradientMode.ARTICLE]
    assert 0.2 < article.max_relative_error < 0.3
    # The numeric half is the true gradient whatever the mode.
    for a, e in zip(article.layers, checks[GradientMode.EXACT].layers, strict=True):
        np.testing.assert_array_equal(a.numeric_weights, e.numeric_weights)
    # Input 1 is 0: its weights get no gradient, in either column.
    assert (article.layers[0].weights[:, 0] == 0).all()
    assert (article.layers[0].numeric_weights[:, 0] == 0).all()


def test_bigger_blas_sized_network_agrees():
    # 40 inputs into 60 neurons: the forward pass takes the BLAS path.
    rng = np.random.default_rng(5)
    sizes = (40, 60, 4)
    arch = Architecture(sizes, Activation.TANH, Activation.SOFTMAX, Loss.CROSS_ENTROPY)
    layers = naive.random_layers(rng, sizes, True)
    x, t = rng.random((1, 40)), naive.random_targets(rng, 1, 4, arch)
    check = Network.from_layers(arch, layers).check_gradients(x[0], t[0])
    assert assert_check_matches(check, layers, x, t, arch) < 1e-5


@pytest.mark.parametrize("h", [1e-3, 1e-5])
def test_the_step_is_the_one_asked_for(h):
    arch, layers, x, t = make_problem(11, Activation.SIGMOID, Activation.SIGMOID, Loss.MSE,
                                      True, GradientMode.EXACT, depth=2)
    check = Network.from_layers(arch, layers).check_gradients(x[0], t[0], h)
    assert check.epsilon == h
    assert_check_matches(check, layers, x, t, arch, h)


@pytest.mark.parametrize("epsilon", [-1e-4, float("nan"), float("inf"), 0.5])
def test_a_bad_step_is_invalid(epsilon):
    net = Network.initialise(Architecture((2, 1)))
    with pytest.raises(InvalidArgument, match="epsilon"):
        net.check_gradients([0, 1], [1], epsilon)


@pytest.mark.parametrize("sample,target,field", [([0, 1, 2], [1], "input"),
                                                 ([0, float("nan")], [1], "input"),
                                                 ([0, 1], [], "target")])
def test_a_bad_sample_is_invalid(sample, target, field):
    net = Network.initialise(Architecture((2, 1)))
    with pytest.raises(InvalidArgument, match=field):
        net.check_gradients(sample, target)


def test_the_network_is_left_as_it_was():
    arch, layers, x, t = make_problem(4, Activation.TANH, Activation.LINEAR, Loss.MSE, True,
                                      GradientMode.EXACT, depth=2)
    net = Network.from_layers(arch, layers)
    before = net.params.copy()
    net.check_gradients(x[0], t[0])
    np.testing.assert_array_equal(net.params, before)


def test_should_stop_cancels_between_chunks(monkeypatch):
    monkeypatch.setattr(model_module, "CHECK_CHUNK_WORK", 2 * 17 * 3)  # 3 parameters a chunk
    net = Network.initialise(Architecture((2, 4, 1)))  # 17 parameters: 6 chunks
    asked = []

    def stop():
        asked.append(True)
        return len(asked) > 2

    with pytest.raises(Cancelled, match="after 6 of 17 parameters"):
        net.check_gradients([0, 1], [1], should_stop=stop)
    assert len(asked) == 3
