"""Initialisation (U[0, 1), Xavier, He; seeds), explicit layers, and architecture validation."""

from itertools import pairwise

import numpy as np
import pytest

from jitnet.service import errors
from jitnet.service.engine.model import (
    Activation,
    Architecture,
    GradientMode,
    Init,
    Loss,
    Network,
    initial_parameters,
)

# Wide enough layers for the statistics below: 2,000 to 10,000 draws per layer.
SIZES = (100, 100, 20)


def layers_of(init, seed=0, sizes=SIZES, bias=True):
    net = Network.initialise(Architecture(sizes, bias=bias), init, seed)
    return net.layers()


def test_uniform_weights_and_biases_in_zero_one():
    for w, b in layers_of(Init.UNIFORM):
        for p in (w, b):
            assert p.min() >= 0.0 and p.max() < 1.0
            # U[0, 1): mean 1/2, variance 1/12; n >= 20 draws, so a loose 5 sigma bound.
            assert abs(p.mean() - 0.5) < 5 * np.sqrt(1 / 12 / p.size)
        assert np.unique(w).size == w.size  # actually random, not a constant fill


@pytest.mark.parametrize("sizes", [(100, 100, 20), (3, 50, 7)])
def test_xavier_within_its_limit_biases_zero(sizes):
    for w, b in layers_of(Init.XAVIER, sizes=sizes):
        fan_out, fan_in = w.shape
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(w).max() <= limit
        assert np.abs(w).max() > 0.9 * limit  # fills the range, not a narrower one
        # U(-limit, limit) has std limit / sqrt(3).
        assert np.std(w) == pytest.approx(limit / np.sqrt(3), rel=0.1)
        np.testing.assert_array_equal(b, 0.0)


def test_he_std_is_sqrt_two_over_fan_in_biases_zero():
    for w, b in layers_of(Init.HE):
        fan_in = w.shape[1]
        # std of n normal draws has relative error ~ 1 / sqrt(2n) <= 1.6 % here.
        assert np.std(w) == pytest.approx(np.sqrt(2.0 / fan_in), rel=0.08)
        assert abs(np.mean(w)) < 5 * np.sqrt(2.0 / fan_in) / np.sqrt(w.size)
        np.testing.assert_array_equal(b, 0.0)


def test_default_init_is_xavier():
    arch = Architecture(SIZES)
    np.testing.assert_array_equal(Network.initialise(arch, seed=4).params,
                                  Network.initialise(arch, Init.XAVIER, seed=4).params)


@pytest.mark.parametrize("init", list(Init), ids=lambda i: i.name.lower())
def test_same_seed_same_params_different_seed_different(init):
    arch = Architecture((3, 5, 2))
    first = initial_parameters(arch, init, 7)
    np.testing.assert_array_equal(first, initial_parameters(arch, init, 7))
    assert not np.array_equal(first, initial_parameters(arch, init, 8))
    assert first.shape == (arch.n_params,)


def test_no_bias_means_no_bias_parameters():
    arch = Architecture((3, 5, 2), bias=False)
    net = Network.initialise(arch, Init.UNIFORM, 1)
    assert net.params.size == 3 * 5 + 5 * 2
    assert all(b is None for _, b in net.layers())


@pytest.mark.parametrize("bias", [True, False])
def test_explicit_layers_round_trip(bias):
    rng = np.random.default_rng(0)
    sizes = (3, 5, 4, 2)
    given = [(rng.normal(size=(o, i)), rng.normal(size=o) if bias else None)
             for i, o in pairwise(sizes)]
    net = Network.from_layers(Architecture(sizes, bias=bias), given)
    back = net.layers()
    assert len(back) == len(given)
    for (w, b), (w0, b0) in zip(back, given, strict=True):
        np.testing.assert_array_equal(w, w0)  # [fan_out, fan_in], not transposed
        if bias:
            np.testing.assert_array_equal(b, b0)
        else:
            assert b is None
    # The Network owns its copy: changing the caller's arrays afterwards changes nothing.
    given[0][0][0, 0] += 1.0
    assert net.layers()[0][0][0, 0] != given[0][0][0, 0]


def test_explicit_layers_apply_weights_as_fan_out_by_fan_in():
    # weights[j][i] joins input i to neuron j: one input at a time picks out a column.
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    arch = Architecture((2, 3), output_activation=Activation.LINEAR, bias=False)
    net = Network.from_layers(arch, [(w, None)])
    np.testing.assert_array_equal(net.predict([[1.0, 0.0], [0.0, 1.0]]), w.T)


GOOD_W0, GOOD_W1 = np.zeros((4, 3)), np.zeros((2, 4))


@pytest.mark.parametrize("bias,layers,words", [
    (True, [(GOOD_W0, np.zeros(4))], ["layers", "1 entries", "needs 2"]),
    (True, [(np.zeros((3, 4)), np.zeros(4)), (GOOD_W1, np.zeros(2))],
     ["layers[0].weights", "[3, 4]", "[4, 3]"]),
    (True, [(GOOD_W0, np.zeros(4)), (np.zeros((2, 5)), np.zeros(2))],
     ["layers[1].weights", "[2, 4]"]),
    (True, [(GOOD_W0, np.zeros(4)), (GOOD_W1, None)], ["layers[1].biases", "missing"]),
    (True, [(GOOD_W0, np.zeros(3)), (GOOD_W1, np.zeros(2))], ["layers[0].biases", "[4]"]),
    (False, [(GOOD_W0, np.zeros(4)), (GOOD_W1, None)], ["layers[0].biases", "no biases"]),
    (True, [(np.full((4, 3), np.nan), np.zeros(4)), (GOOD_W1, np.zeros(2))],
     ["layers[0].weights", "finite"]),
    (True, [(GOOD_W0, np.zeros(4)), (GOOD_W1, [0.0, np.inf])], ["layers[1].biases", "finite"]),
], ids=["too-few-layers", "transposed", "wrong-fan-in", "missing-biases", "short-biases",
        "extra-biases", "nan-weights", "inf-biases"])
def test_explicit_layer_errors_name_the_field(bias, layers, words):
    with pytest.raises(errors.InvalidArgument) as caught:
        Network.from_layers(Architecture((3, 4, 2), bias=bias), layers)
    for word in words:
        assert word in str(caught.value)


def test_wrong_parameter_count_is_rejected():
    with pytest.raises(errors.InvalidArgument, match="parameters"):
        Network(Architecture((3, 4, 2)), np.zeros(7))


def test_unknown_init_is_rejected():
    with pytest.raises(errors.InvalidArgument, match="init"):
        initial_parameters(Architecture((2, 2)), 9, 0)


# ---------------------------------------------------------------------------------------------
# Architecture validation: InvalidArgument naming the field, before any kernel runs.


@pytest.mark.parametrize("kwargs,words", [
    (dict(layer_sizes=()), ["layer_sizes", "at least two"]),
    (dict(layer_sizes=(3,)), ["layer_sizes", "at least two"]),
    (dict(layer_sizes=(2, 0, 1)), ["layer_sizes[1]", "at least 1"]),
    (dict(layer_sizes=(2, 3, -1)), ["layer_sizes[2]"]),
    (dict(layer_sizes=(2, 1.5, 1)), ["layer_sizes[1]"]),
    (dict(layer_sizes=(2, 3), hidden_activation=Activation.SOFTMAX),
     ["hidden_activation", "SOFTMAX", "output layer only"]),
    (dict(layer_sizes=(2, 3), output_activation=Activation.TANH),
     ["output_activation", "TANH"]),
    (dict(layer_sizes=(2, 3), output_activation=Activation.LINEAR, loss=Loss.CROSS_ENTROPY),
     ["CROSS_ENTROPY", "LINEAR", "SOFTMAX or SIGMOID"]),
    (dict(layer_sizes=(2, 3), hidden_activation=9), ["hidden_activation", "9"]),
    (dict(layer_sizes=(2, 3), output_activation=0), ["output_activation", "0"]),
    (dict(layer_sizes=(2, 3), loss=7), ["loss", "7", "MSE"]),
    (dict(layer_sizes=(2, 3), gradient_mode=3), ["gradient_mode", "3", "EXACT", "ARTICLE"]),
], ids=["no-layers", "one-layer", "zero-sized", "negative", "fractional", "softmax-hidden",
        "tanh-output", "cross-entropy-linear", "unknown-hidden", "unspecified-output",
        "unknown-loss", "unknown-mode"])
def test_architecture_errors_are_helpful(kwargs, words):
    with pytest.raises(errors.InvalidArgument) as caught:
        Architecture(**kwargs)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("output", [Activation.SIGMOID, Activation.SOFTMAX])
def test_cross_entropy_accepts_sigmoid_and_softmax(output):
    arch = Architecture((2, 3), output_activation=output, loss=Loss.CROSS_ENTROPY)
    assert arch.loss == Loss.CROSS_ENTROPY


def test_architecture_takes_plain_enum_numbers():
    # The servicer passes proto enum numbers; they mean the same members.
    arch = Architecture((2, 3, 1), 3, 5, 2, True, 2)
    assert (arch.hidden_activation, arch.output_activation, arch.loss, arch.gradient_mode) == (
        Activation.RELU, Activation.SOFTMAX, Loss.CROSS_ENTROPY, GradientMode.ARTICLE)
    assert arch.n_layers == 2
