"""Every backward path against central finite differences of the mean loss and against naive.py.

The engine's gradient is read through the public API: one full-batch epoch with learning rate 1
and no momentum moves the parameters by exactly the descent direction (minus the mean gradient).
Step gives each layer's nets, outputs, errors and deltas for one sample.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitnet.service.engine import kernels, training
from jitnet.service.engine.model import Activation, Architecture, GradientMode, Loss, Network

from ..support.gradient_grid import GRID, HIDDEN, MODES, OUTPUT_LOSS, case_id
from . import naive

pytestmark = pytest.mark.usefixtures("tier")  # both kernel tiers (conftest.py)

# GRID: every activation x output/loss x bias x mode. The depth (1 to 4 layers of neurons) and
# the batch (1 or 5 rows) cycle with the case's index so that every (activation, mode) pair meets
# depths above 1 with both batch sizes, and every (bias, mode) pair meets all four depths;
# the widths (1 to 5) are random per case.
def grid_shape(index):
    return 1 + (index // 2 + index // 8) % 4, 1 if (index // 4) % 2 else 5


def make_problem(seed, hidden, output, loss, bias, mode, sizes=None, rows=1, depth=2):
    """A random architecture (`depth` layers of neurons, unless `sizes` is given) and data set.
    For relu, no net lies within 1e-3 of the kink, so finite differences (h = 1e-6) never
    straddle it."""
    rng = np.random.default_rng(seed)
    if sizes is None:
        sizes = [int(s) for s in rng.integers(1, 6, depth + 1)]
        if output == Activation.SOFTMAX:
            sizes[-1] = max(sizes[-1], 2)  # a 1-wide softmax is constant
    arch = Architecture(tuple(sizes), hidden, output, loss, bias=bias, gradient_mode=mode)
    for _ in range(100):
        layers = naive.random_layers(rng, sizes, bias)
        x = rng.normal(0.0, 1.0, (rows, sizes[0]))
        trace = naive.forward(layers, x, arch)
        if hidden != Activation.RELU or all(np.abs(z).min() > 1e-3 for z, _ in trace[:-1]):
            break
    else:
        raise AssertionError("no relu problem away from the kink; change the seed")
    t = naive.random_targets(rng, rows, sizes[-1], arch)
    return arch, layers, x, t


def engine_descent(arch, layers, x, t):
    """(descent per layer, mean loss) from one full-batch epoch at learning rate 1."""
    net = Network.from_layers(arch, layers)
    options = training.TrainOptions(epochs=1, learning_rate=1.0, batch_size=x.shape[0])
    (progress,) = training.train(net, x, t, options)
    before, after = net.layers(), net.layers(progress.params)
    descent = [(w1 - w0, None if b0 is None else b1 - b0)
               for (w0, b0), (w1, b1) in zip(before, after, strict=True)]
    return descent, progress.loss


def assert_layers_close(ours, ref, **tol):
    assert len(ours) == len(ref)
    for k, ((w, b), (rw, rb)) in enumerate(zip(ours, ref, strict=True)):
        np.testing.assert_allclose(w, rw, err_msg=f"layer {k} weights", **tol)
        assert (b is None) == (rb is None)
        if b is not None:
            np.testing.assert_allclose(b, rb, err_msg=f"layer {k} biases", **tol)


# Engine vs naive: same math, different arithmetic order (BLAS, fastmath reassociation).
CLOSE = dict(rtol=1e-9, atol=1e-12)
# Finite differences: O(h^2) truncation plus ~eps/h rounding, h = 1e-6.
FD = dict(rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", GRID, ids=case_id)
def test_backward_matches_naive_and_finite_differences(case):
    hidden, (output, loss), bias, mode = case
    index = GRID.index(case)
    depth, rows = grid_shape(index)
    arch, layers, x, t = make_problem(index, hidden, output, loss, bias, mode, rows=rows,
                                      depth=depth)
    ours, ours_loss = engine_descent(arch, layers, x, t)
    ref = naive.backward(layers, x, t, arch)
    assert ours_loss == pytest.approx(ref.losses.mean(), rel=1e-12, abs=1e-15)
    assert_layers_close(ours, ref.descent, **CLOSE)
    if mode == GradientMode.EXACT:
        # EXACT is the true gradient; ARTICLE deliberately is not (f' applied to the output).
        fd = naive.finite_difference_descent(layers, x, t, arch)
        assert_layers_close(ref.descent, fd, **FD)
        assert_layers_close(ours, fd, **FD)


@pytest.mark.parametrize("case", GRID[::3], ids=case_id)
def test_step_trace_matches_naive(case):
    hidden, (output, loss), bias, mode = case
    index = GRID.index(case)
    arch, layers, x, t = make_problem(100 + index, hidden, output, loss, bias, mode,
                                      depth=grid_shape(index)[0])
    result = Network.from_layers(arch, layers).step(x[0], t[0], 0.1)
    ref = naive.backward(layers, x, t, arch)
    assert result.loss == pytest.approx(ref.losses[0], rel=1e-12, abs=1e-15)
    for k, trace in enumerate(result.layers):
        z, a = ref.trace[k]
        np.testing.assert_allclose(trace.net, z[0], **CLOSE)
        np.testing.assert_allclose(trace.output, a[0], **CLOSE)
        np.testing.assert_allclose(trace.error, ref.errors[k][0], **CLOSE)
        np.testing.assert_allclose(trace.delta, ref.deltas[k][0], **CLOSE)
        np.testing.assert_allclose(trace.weights, layers[k][0] + 0.1 * ref.descent[k][0], **CLOSE)


def test_article_mode_differs_from_exact_where_it_should():
    # Guards the grid against a mode switch that does nothing: sigmoid hidden, MSE.
    _, layers, x, t = make_problem(7, Activation.SIGMOID, Activation.SIGMOID, Loss.MSE, True,
                                   GradientMode.EXACT, sizes=[3, 4, 2], rows=4)
    exact = Architecture((3, 4, 2), gradient_mode=GradientMode.EXACT)
    article = Architecture((3, 4, 2), gradient_mode=GradientMode.ARTICLE)
    g_exact, _ = engine_descent(exact, layers, x, t)
    g_article, _ = engine_descent(article, layers, x, t)
    assert np.abs(g_exact[0][0] - g_article[0][0]).max() > 1e-4


@pytest.mark.parametrize("loss", [Loss.MSE, Loss.CROSS_ENTROPY])
def test_cross_entropy_delta_is_t_minus_y_in_both_modes(loss):
    # With cross-entropy the derivative cancels in both modes: same deltas, EXACT or ARTICLE.
    sizes = [3, 4, 3]
    _, layers, x, t = make_problem(11, Activation.TANH, Activation.SOFTMAX, loss, True,
                                   GradientMode.EXACT, sizes=sizes, rows=1)
    deltas = []
    for mode in MODES:
        arch = Architecture(tuple(sizes), Activation.TANH, Activation.SOFTMAX, loss,
                            gradient_mode=mode)
        out = Network.from_layers(arch, layers).step(x[0], t[0], 0.1).layers[-1]
        deltas.append(out.delta)
        if loss == Loss.CROSS_ENTROPY:
            np.testing.assert_allclose(out.delta, t[0] - out.output, **CLOSE)
    same = np.allclose(deltas[0], deltas[1], rtol=1e-12, atol=1e-15)
    assert same == (loss == Loss.CROSS_ENTROPY)  # softmax + MSE: s = y vs s = softmax(y)


# ---------------------------------------------------------------------------------------------
# Mini-batches with a partial last batch, and layers on both sides of the BLAS threshold.

PARTIAL = [(Activation.TANH, Activation.SOFTMAX, Loss.CROSS_ENTROPY, True, GradientMode.EXACT),
           (Activation.RELU, Activation.LINEAR, Loss.MSE, False, GradientMode.EXACT),
           (Activation.SIGMOID, Activation.SIGMOID, Loss.MSE, True, GradientMode.ARTICLE),
           (Activation.LINEAR, Activation.SOFTMAX, Loss.MSE, True, GradientMode.ARTICLE),
           (Activation.SIGMOID, Activation.SIGMOID, Loss.CROSS_ENTROPY, False, GradientMode.EXACT)]


def assert_training_matches_naive(arch, layers, x, t, epochs, batch_size, momentum, lr=0.3):
    net = Network.from_layers(arch, layers)
    options = training.TrainOptions(epochs=epochs, learning_rate=lr, batch_size=batch_size,
                                    momentum=momentum, report_every=1)
    progress = list(training.train(net, x, t, options))
    ref_layers, ref_velocity, ref_losses = naive.train(layers, x, t, arch, epochs, lr,
                                                        batch_size, momentum)
    np.testing.assert_allclose([p.loss for p in progress], ref_losses, rtol=1e-9, atol=1e-14)
    assert_layers_close(net.layers(progress[-1].params), ref_layers, rtol=1e-9, atol=1e-12)
    if momentum:
        assert_layers_close(net.layers(progress[-1].velocity), ref_velocity, rtol=1e-9,
                            atol=1e-12)


def names(values):
    return "-".join(getattr(v, "name", str(v)).lower() for v in values)


@pytest.mark.parametrize("case", PARTIAL, ids=names)
def test_partial_last_batch_matches_naive(case):
    hidden, output, loss, bias, mode = case
    arch, layers, x, t = make_problem(3, hidden, output, loss, bias, mode, sizes=[3, 5, 4, 3],
                                      rows=11)
    # 11 rows in batches of 4: 4, 4, 3.
    assert_training_matches_naive(arch, layers, x, t, epochs=3, batch_size=4, momentum=0.5)


def blas_width(rows):
    """A square layer width whose rows x width x width multiply-adds reach BLAS_MIN_WORK."""
    return math.isqrt(kernels.BLAS_MIN_WORK // rows) + 2


@pytest.mark.parametrize("hidden,output,loss", [
    (Activation.RELU, Activation.SOFTMAX, Loss.CROSS_ENTROPY),
    (Activation.TANH, Activation.LINEAR, Loss.MSE),
    (Activation.SIGMOID, Activation.SOFTMAX, Loss.MSE),
], ids=lambda v: v.name.lower())
def test_blas_sized_layers_match_naive_and_finite_differences(hidden, output, loss):
    # Batch 6: the two wide layers take the BLAS path, the narrow output layer the loops.
    rows = 6
    width = blas_width(rows)
    sizes = [width, width, width, 3]
    assert rows * width * width >= kernels.BLAS_MIN_WORK > rows * width * 3
    arch, layers, x, t = make_problem(5, hidden, output, loss, True, GradientMode.EXACT,
                                      sizes=sizes, rows=rows)
    ours, _ = engine_descent(arch, layers, x, t)
    ref = naive.backward(layers, x, t, arch)
    assert_layers_close(ours, ref.descent, **CLOSE)
    fd = naive.finite_difference_descent(layers, x, t, arch)
    assert_layers_close(ours, fd, **FD)


def test_blas_and_loop_paths_within_one_epoch():
    # 13 rows in batches of 6: 6, 6 (BLAS) then 1 (below the threshold: loops), with momentum.
    rows = 6
    width = blas_width(rows)
    assert width * width < kernels.BLAS_MIN_WORK
    arch, layers, x, t = make_problem(9, Activation.TANH, Activation.SIGMOID, Loss.MSE, True,
                                      GradientMode.EXACT, sizes=[width, width, 2], rows=13)
    assert_training_matches_naive(arch, layers, x, t, epochs=2, batch_size=rows, momentum=0.9,
                                  lr=0.1)


def test_single_sample_blas_layer():
    # One row through a layer that is BLAS-sized on its own.
    width = blas_width(1)
    arch, layers, x, t = make_problem(4, Activation.SIGMOID, Activation.LINEAR, Loss.MSE, False,
                                      GradientMode.EXACT, sizes=[width, width, 1], rows=1)
    ours, _ = engine_descent(arch, layers, x, t)
    assert_layers_close(ours, naive.backward(layers, x, t, arch).descent, **CLOSE)
    assert_layers_close(ours, naive.finite_difference_descent(layers, x, t, arch), **FD)


# ---------------------------------------------------------------------------------------------
# Random architectures, batch sizes and options, explored by hypothesis (a fixed, derandomized
# set of examples: the same run in CI every time; raise max_examples locally to explore more).


@st.composite
def training_problems(draw):
    hidden = draw(st.sampled_from(HIDDEN))
    output, loss = draw(st.sampled_from(OUTPUT_LOSS))
    mode = draw(st.sampled_from(MODES))
    bias = draw(st.booleans())
    depth = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(1, 6), min_size=depth + 1, max_size=depth + 1))
    if output == Activation.SOFTMAX:
        sizes[-1] = max(sizes[-1], 2)
    rows = draw(st.integers(1, 9))
    batch = draw(st.integers(1, rows))
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    seed = draw(st.integers(0, 2**32 - 1))
    return hidden, output, loss, bias, mode, sizes, rows, batch, momentum, seed


def random_training_run_matches_naive(problem):
    hidden, output, loss, bias, mode, sizes, rows, batch, momentum, seed = problem
    arch, layers, x, t = make_problem(seed, hidden, output, loss, bias, mode, sizes=sizes,
                                      rows=rows)
    assert_training_matches_naive(arch, layers, x, t, epochs=2, batch_size=batch,
                                  momentum=momentum, lr=0.2)


@pytest.mark.parametrize("tier", [0], indirect=True, ids=["tier0"])
@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(training_problems())
def test_random_training_runs_match_naive(problem):
    random_training_run_matches_naive(problem)


# At tier 1 nearly every example is an architecture of its own, compiled for it (seconds
# each): fewer examples, the same check.
@pytest.mark.parametrize("tier", [1], indirect=True, ids=["tier1"])
@settings(max_examples=12, deadline=None, database=None, derandomize=True)
@given(training_problems())
def test_random_training_runs_match_naive_at_tier_1(problem):
    random_training_run_matches_naive(problem)
