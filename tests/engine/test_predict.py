"""Forward pass and Predict against naive.py, empty and single-sample inputs, and the input
validation that runs before any kernel."""

import itertools

import numpy as np
import pytest

from jitnet.service import errors
from jitnet.service.engine import model, training
from jitnet.service.engine.model import Activation, Architecture, Loss, Network

from . import naive

pytestmark = pytest.mark.usefixtures("tier")  # both kernel tiers (conftest.py)

HIDDEN = [Activation.SIGMOID, Activation.TANH, Activation.RELU, Activation.LINEAR]
OUTPUT = [Activation.SIGMOID, Activation.LINEAR, Activation.SOFTMAX]


def random_network(seed, sizes, hidden=Activation.TANH, output=Activation.SIGMOID, bias=True):
    rng = np.random.default_rng(seed)
    arch = Architecture(tuple(sizes), hidden, output, Loss.MSE, bias=bias)
    layers = naive.random_layers(rng, sizes, bias, scale=2.0)
    return Network.from_layers(arch, layers), layers, rng


@pytest.mark.parametrize("hidden,output,bias",
                         list(itertools.product(HIDDEN, OUTPUT, [True, False])),
                         ids=lambda v: getattr(v, "name", str(v)).lower())
def test_predict_matches_naive(hidden, output, bias):
    net, layers, rng = random_network(len(hidden.name) * 7 + output, [4, 6, 5, 3], hidden,
                                      output, bias)
    x = rng.normal(0.0, 2.0, (7, 4))
    ours = net.predict(x)
    np.testing.assert_allclose(ours, naive.predict(layers, x, net.arch), rtol=1e-12, atol=1e-15)
    if output == Activation.SOFTMAX:
        np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=1e-14)


def test_predict_in_blocks_matches_naive():
    # More rows than one Predict block, with a partial last block: both the BLAS path (full
    # blocks) and the loop path (the 3-row tail) of the dense forward.
    n = 2 * model.PREDICT_BLOCK + 3
    net, layers, rng = random_network(1, [5, 8, 8, 2], Activation.RELU, Activation.SOFTMAX)
    x = rng.normal(0.0, 1.0, (n, 5))
    np.testing.assert_allclose(net.predict(x), naive.predict(layers, x, net.arch), rtol=1e-12,
                               atol=1e-15)
    # Row r of a big batch is the prediction of row r alone (a fresh Network: see below).
    alone = Network(net.arch, net.params).predict(x[-1])
    np.testing.assert_allclose(alone, net.predict(x)[-1:], rtol=1e-12)


@pytest.mark.parametrize("first,then", [(10, 3), (10, 1), (2 * model.PREDICT_BLOCK, 5)])
def test_predict_fewer_rows_after_more_rows(first, then):
    # One Network serves many Predicts of varying size (the servicer shares it between calls);
    # a smaller call after a bigger one reuses the thread's scratch buffers.
    net, layers, rng = random_network(9, [2, 3, 1])
    for rows in (first, then, first):
        x = rng.normal(size=(rows, 2))
        np.testing.assert_allclose(net.predict(x), naive.predict(layers, x, net.arch),
                                   rtol=1e-12, atol=1e-15)


def test_softmax_is_stable_for_large_nets():
    # Nets around 1e3 would overflow a naive exp(z) / sum exp(z).
    arch = Architecture((1, 3), output_activation=Activation.SOFTMAX, bias=False)
    net = Network.from_layers(arch, [(np.array([[1000.0], [999.0], [-1000.0]]), None)])
    out = net.predict([[1.0]])
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], naive.softmax(np.array([1000.0, 999.0, -1000.0])),
                               rtol=1e-12)


def test_predict_zero_rows_returns_zero_rows():
    net, _, _ = random_network(2, [3, 4, 2])
    out = net.predict(np.empty((0, 3)))
    assert out.shape == (0, 2)
    assert out.dtype == np.float64


def test_predict_single_sample_vector():
    net, layers, _ = random_network(3, [3, 4, 2])
    out = net.predict([0.1, -0.2, 0.3])
    assert out.shape == (1, 2)
    np.testing.assert_allclose(out, naive.predict(layers, [[0.1, -0.2, 0.3]], net.arch),
                               rtol=1e-12)


def test_predict_does_not_change_the_network():
    net, _, rng = random_network(4, [3, 4, 2])
    before = net.params.copy()
    net.predict(rng.normal(size=(10, 3)))
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("bad,words", [
    (np.zeros((2, 4)), ["inputs", "4 columns", "3"]),           # wrong column count
    (np.zeros((2, 2)), ["inputs", "2 columns", "3"]),
    (np.zeros((2, 3, 1)), ["inputs", "2-D", "[2, 3, 1]"]),       # wrong ndim
    (np.float64(1.0), ["inputs", "2-D"]),                       # a scalar
    (np.zeros(5), ["inputs"]),                                  # a vector of the wrong length
    ([[0.0, np.nan, 0.0]], ["inputs[0, 1]", "nan", "finite"]),
    ([[0.0, 0.0, 0.0], [0.0, 0.0, np.inf]], ["inputs[1, 2]", "inf", "finite"]),
    ([[-np.inf, 0.0, 0.0]], ["inputs[0, 0]", "inf"]),
], ids=["4-columns", "2-columns", "3-d", "scalar", "bad-vector", "nan", "inf", "minus-inf"])
def test_predict_rejects_bad_inputs_naming_the_field(bad, words):
    net, _, _ = random_network(5, [3, 4, 2])
    with pytest.raises(errors.InvalidArgument) as caught:
        net.predict(bad)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("sample,target,field", [
    ([0.0, 0.0], [0.0, 0.0], "input"),
    ([0.0, 0.0, 0.0], [0.0], "target"),
    ([0.0, np.nan, 0.0], [0.0, 0.0], "input"),
    ([0.0, 0.0, 0.0], [np.inf, 0.0], "target"),
    ([[0.0] * 3] * 2, [[0.0] * 2] * 2, "one sample"),
])
def test_step_rejects_bad_samples_naming_the_field(sample, target, field):
    net, _, _ = random_network(6, [3, 4, 2])
    with pytest.raises(errors.InvalidArgument, match=field):
        net.step(sample, target, 0.1)


@pytest.mark.parametrize("rate", [0.0, -0.1, np.nan, np.inf])
def test_step_rejects_bad_learning_rate(rate):
    net, _, _ = random_network(7, [3, 4, 2])
    with pytest.raises(errors.InvalidArgument, match="learning_rate"):
        net.step([0.0, 0.0, 0.0], [0.0, 0.0], rate)


@pytest.mark.parametrize("inputs,targets,field", [
    (np.zeros((0, 3)), np.zeros((0, 2)), "inputs"),          # Train needs at least one row
    (np.zeros((4, 3)), np.zeros((3, 2)), "rows"),             # one target row per input row
    (np.zeros((4, 3)), np.zeros((4, 1)), "targets"),
    (np.zeros((4, 2)), np.zeros((4, 2)), "inputs"),
    (np.zeros((4, 3)), np.full((4, 2), np.nan), "targets"),
])
def test_train_rejects_bad_data_naming_the_field(inputs, targets, field):
    net, _, _ = random_network(8, [3, 4, 2])
    options = training.TrainOptions(epochs=1, learning_rate=0.1)
    with pytest.raises(errors.InvalidArgument, match=field):
        next(training.train(net, inputs, targets, options))
