"""The article's worked example (api.md) in ARTICLE mode: line by line from the article's own
printed inputs, and end to end through Network.step; the same Step in EXACT mode is the true
gradient step; and the article's vocabulary (4 iterations = 1 XOR epoch)."""

import numpy as np
import pytest

from jitnet.client import datasets
from jitnet.service.engine import kernels, training
from jitnet.service.engine.model import Activation, Architecture, GradientMode, Loss, Network

from . import naive

pytestmark = pytest.mark.usefixtures("tier")  # both kernel tiers (conftest.py)

HIDDEN_W = np.array(datasets.ARTICLE_HIDDEN)
OUTPUT_W = np.array(datasets.ARTICLE_OUTPUT)
INPUT, TARGET, LR = [0.0, 1.0], [1.0], 0.001

# The article's printed numbers, line by line.
HIDDEN_NET = [0.6, 0.7, 0.9, 0.3]
HIDDEN_OUT = np.array([0.64, 0.66, 0.71, 0.57])
OUTPUT_NET, OUTPUT_OUT, OUTPUT_ERROR, OUTPUT_DELTA = 1.28, 0.78, 0.22, 0.04
HIDDEN_ERROR = np.array([0.024, 0.028, 0.012, 0.016])
HIDDEN_DERIV = [0.22, 0.224, 0.220, 0.23]  # printed with 2, 3, 3 and 2 decimals
HIDDEN_DERIV_PLACES = [2, 3, 3, 2]
HIDDEN_DELTA = np.array([0.005, 0.006, 0.002, 0.003])
NEW_OUTPUT_W = [0.6000256, 0.7000264, 0.3000284, 0.4000228]
NEW_HIDDEN_W = [[0.2, 0.600005], [0.5, 0.700006], [0.4, 0.900002], [0.8, 0.300003]]
ABOUT_NEW_OUTPUT_W = [0.60003, 0.70003, 0.30003, 0.40003]  # api.md, 5 decimals


def arch(sizes=(2, 4, 1), output=Activation.SIGMOID, mode=GradientMode.ARTICLE):
    return Architecture(sizes, Activation.SIGMOID, output, Loss.MSE, bias=False,
                        gradient_mode=mode)


def article_network(mode=GradientMode.ARTICLE):
    return Network.from_layers(arch(mode=mode), [(HIDDEN_W, None), (OUTPUT_W, None)])


def trunc(x, places):
    """The article's printing: truncated, not rounded. The 1e-9 keeps exact products such as
    0.04 * 0.6, which binary floating point lands a hair below 0.024, on their printed value."""
    scale = 10.0**places
    return np.floor(np.asarray(x, dtype=np.float64) * scale + 1e-9) / scale


def logit(p):
    return np.log(np.asarray(p) / (1.0 - np.asarray(p)))


# ---------------------------------------------------------------------------------------------
# Line by line: each line's formula, fed the article's printed (truncated) inputs, gives the
# article's printed result at its printed precision.


def test_hidden_nets():
    # net1_h = 0 * 0.2 + 1 * 0.6 = 0.6 ...: exact, the inputs are 0 and 1.
    hidden = article_network().step(INPUT, TARGET, LR).layers[0]
    np.testing.assert_allclose(hidden.net, HIDDEN_NET, rtol=0, atol=1e-15)


def test_hidden_outputs():
    # output1_h = f(0.6) = 0.64 ...
    ours = [kernels.activate(net, kernels.SIGMOID) for net in HIDDEN_NET]
    np.testing.assert_allclose(trunc(ours, 2), HIDDEN_OUT, rtol=0, atol=1e-12)
    # The same through the public API: the article's hidden layer alone.
    layer = Network.from_layers(arch((2, 4)), [(HIDDEN_W, None)])
    np.testing.assert_allclose(trunc(layer.predict(INPUT)[0], 2), HIDDEN_OUT, atol=1e-12)


def test_output_net_and_output():
    # net_o = 0.64 * 0.6 + 0.66 * 0.7 + 0.71 * 0.3 + 0.57 * 0.4 = 1.28: a linear 4-1 layer.
    layer = Network.from_layers(arch((4, 1), output=Activation.LINEAR), [(OUTPUT_W, None)])
    assert trunc(layer.predict(HIDDEN_OUT)[0, 0], 2) == pytest.approx(OUTPUT_NET, abs=1e-12)
    # output_o = f(1.28) = 0.78
    ours = kernels.activate(OUTPUT_NET, kernels.SIGMOID)
    assert trunc(ours, 2) == pytest.approx(OUTPUT_OUT, abs=1e-12)


def test_output_error_and_delta():
    # deriv(0.78) = 0.21: the article applies f(y)(1 - f(y)) to the output y = 0.78.
    deriv = kernels.derivative(OUTPUT_NET, OUTPUT_OUT, kernels.SIGMOID, kernels.ARTICLE)
    assert trunc(deriv, 2) == pytest.approx(0.21, abs=1e-12)
    # delta = deriv(0.78) * 0.22 = 0.04
    assert trunc(deriv * OUTPUT_ERROR, 2) == pytest.approx(OUTPUT_DELTA, abs=1e-12)
    # The same through Step: a 1-1 neuron whose output is exactly the printed 0.78.
    neuron = Network.from_layers(arch((1, 1)), [(logit([[OUTPUT_OUT]]), None)])
    out = neuron.step([1.0], TARGET, LR).layers[0]
    assert out.output[0] == pytest.approx(OUTPUT_OUT, abs=1e-15)
    assert out.error[0] == pytest.approx(OUTPUT_ERROR, abs=1e-15)  # error = 1 - 0.78
    assert out.delta[0] == pytest.approx(deriv * out.error[0], rel=1e-12)
    assert trunc(out.delta[0], 2) == pytest.approx(OUTPUT_DELTA, abs=1e-12)


def test_hidden_errors_deltas_and_output_weight_update():
    # A 1-4-1 network whose hidden outputs are the printed 0.64 0.66 0.71 0.57 (sigmoid of
    # their logits) and whose linear output neuron gets delta exactly 0.04 (target = y + 0.04).
    net = Network.from_layers(arch((1, 4, 1), output=Activation.LINEAR),
                              [(logit(HIDDEN_OUT)[:, None], None), (OUTPUT_W, None)])
    y = net.predict([1.0])[0, 0]
    hidden, out = net.step([1.0], [y + OUTPUT_DELTA], LR).layers
    np.testing.assert_allclose(hidden.output, HIDDEN_OUT, atol=1e-15)
    np.testing.assert_allclose(out.delta, [OUTPUT_DELTA], atol=1e-15)
    # error1_h = 0.04 * 0.6 = 0.024 ...: printed exactly.
    np.testing.assert_allclose(hidden.error, HIDDEN_ERROR, rtol=0, atol=1e-12)
    # deriv(0.64) = 0.22, deriv(0.66) = 0.224, ...
    derivs = [kernels.derivative(0.0, h, kernels.SIGMOID, kernels.ARTICLE) for h in HIDDEN_OUT]
    for deriv, places, printed in zip(derivs, HIDDEN_DERIV_PLACES, HIDDEN_DERIV, strict=True):
        assert trunc(deriv, places) == pytest.approx(printed, abs=1e-12)
    # delta_error1_h = deriv(0.64) * 0.024 = 0.005 ...: 3 decimals.
    np.testing.assert_allclose(hidden.delta, np.array(derivs) * HIDDEN_ERROR, rtol=1e-12)
    np.testing.assert_allclose(trunc(hidden.delta, 3), HIDDEN_DELTA, rtol=0, atol=1e-12)
    # hidden_to_output_1 = 0.6 + 0.64 * 0.04 * 0.001 = 0.6000256 ...: printed in full.
    np.testing.assert_allclose(out.weights[0], NEW_OUTPUT_W, rtol=0, atol=1e-12)


def test_input_to_hidden_weight_update():
    # input_to_hidden_2 = 0.6 + 1 * 0.005 * 0.001 = 0.600005 ...: the article's hidden layer as
    # a linear layer whose deltas are exactly the printed 0.005 0.006 0.002 0.003.
    layer = Network.from_layers(arch((2, 4), output=Activation.LINEAR), [(HIDDEN_W, None)])
    y = layer.predict(INPUT)[0]
    trace = layer.step(INPUT, y + HIDDEN_DELTA, LR).layers[0]
    np.testing.assert_allclose(trace.delta, HIDDEN_DELTA, atol=1e-15)
    np.testing.assert_allclose(trace.weights, NEW_HIDDEN_W, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# End to end: one Step of the article's network, against every printed number.


def within(ours, printed, low, high):
    """low <= ours - printed <= high, elementwise (1e-12 slack for the float arithmetic)."""
    diff = np.atleast_1d(ours) - np.asarray(printed)
    assert np.all(diff >= np.asarray(low) - 1e-12) and np.all(diff <= np.asarray(high) + 1e-12), (
        f"ours {ours} - printed {printed} = {diff}, outside [{low}, {high}]")


def test_step_agrees_with_every_printed_number_within_the_truncation():
    result = article_network().step(INPUT, TARGET, LR)
    hidden, out = result.layers
    # The article computes each line from the previous lines' *printed* numbers and truncates
    # the result to 2 decimals (3 for hidden deltas); Step keeps full precision. So
    #   ours - printed = (this line's truncation: in [0, one unit of the last printed digit))
    #                  + (upstream differences carried through this line's formula).
    # Bounds used to carry them: sigmoid' <= 1/4; D(y) = f(y)(1 - f(y)) <= 1/4 and
    # |D'(y)| <= 0.1 (max of s(1-s)(1-2s) is 0.096); all weights here are positive, so sums of
    # truncated-down terms are one-sided.
    unit = 0.01
    tol_h = unit  # hidden outputs: f(exact net), truncated
    within(hidden.output, HIDDEN_OUT, 0.0, tol_h)
    tol_net = OUTPUT_W.sum() * tol_h + unit  # sum w_k h_k, each h_k up to tol_h low, truncated
    within(out.net, OUTPUT_NET, 0.0, tol_net)
    tol_y = tol_net / 4 + unit  # sigmoid: increasing, slope <= 1/4
    within(out.output, OUTPUT_OUT, 0.0, tol_y)
    within(out.error, OUTPUT_ERROR, -tol_y, 0.0)  # 1 - y: the output's difference, negated
    # delta = D(y) e vs trunc(trunc(D(0.78)) * 0.22):
    #   D |e - 0.22| + 0.22 (|D(y) - D(0.78)| + D's truncation) + the product's truncation.
    tol_d = 0.25 * tol_y + OUTPUT_ERROR * (0.1 * tol_y + unit) + unit
    within(out.delta, OUTPUT_DELTA, -tol_d, tol_d)
    tol_eh = OUTPUT_W[0] * tol_d  # hidden error = delta * w, printed exactly from 0.04
    within(hidden.error, HIDDEN_ERROR, -tol_eh, tol_eh)
    # hidden delta = D(h) e_h vs trunc3(trunc(D(h_printed)) * e_h_printed), likewise.
    tol_dh = 0.25 * tol_eh + HIDDEN_ERROR * (0.1 * tol_h + unit) + 0.001
    within(hidden.delta, HIDDEN_DELTA, -tol_dh, tol_dh)
    # new output weight = w + lr h delta, printed in full from the printed h and delta.
    tol_wo = LR * ((HIDDEN_OUT + tol_h) * tol_d + OUTPUT_DELTA * tol_h)
    within(out.weights[0], NEW_OUTPUT_W, -tol_wo, tol_wo)
    # ... and api.md's "about 0.60003 0.70003 0.30003 0.40003": equal once rounded to 5 places.
    np.testing.assert_allclose(out.weights[0], ABOUT_NEW_OUTPUT_W, rtol=0, atol=0.5e-5)
    # new hidden weight = w + lr x delta_h: unchanged where the input is 0.
    tol_wh = LR * 1.0 * tol_dh
    np.testing.assert_array_equal(hidden.weights[:, 0], HIDDEN_W[:, 0])
    within(hidden.weights[:, 1], np.array(NEW_HIDDEN_W)[:, 1], -tol_wh, tol_wh)
    # Step reports the loss before the update, 0.5 (t - y)^2, and leaves the network alone.
    assert result.loss == pytest.approx(0.5 * out.error[0] ** 2, rel=1e-12)
    np.testing.assert_array_equal(hidden.weights_before, HIDDEN_W)


@pytest.mark.parametrize("mode", [GradientMode.ARTICLE, GradientMode.EXACT])
def test_step_trace_matches_naive(mode):
    net = article_network(mode)
    result = net.step(INPUT, TARGET, LR)
    layers = [(HIDDEN_W.copy(), None), (OUTPUT_W.copy(), None)]
    ref = naive.backward(layers, [INPUT], [TARGET], net.arch)
    for k, trace in enumerate(result.layers):
        z, a = ref.trace[k]
        np.testing.assert_allclose(trace.net, z[0], rtol=1e-13)
        np.testing.assert_allclose(trace.output, a[0], rtol=1e-13)
        np.testing.assert_allclose(trace.error, ref.errors[k][0], rtol=1e-12)
        np.testing.assert_allclose(trace.delta, ref.deltas[k][0], rtol=1e-12)
        np.testing.assert_allclose(trace.weights, layers[k][0] + LR * ref.descent[k][0],
                                   rtol=0, atol=1e-15)


def test_exact_mode_is_the_true_gradient_step():
    net = article_network(GradientMode.EXACT)
    result = net.step(INPUT, TARGET, LR)
    layers = [(HIDDEN_W.copy(), None), (OUTPUT_W.copy(), None)]
    # w_new = w - lr dL/dw with L = 0.5 (t - y)^2: the step divided by lr is minus the gradient.
    fd = naive.finite_difference_descent(layers, [INPUT], [TARGET], net.arch)
    for trace, (w, _), (g, _) in zip(result.layers, layers, fd, strict=True):
        np.testing.assert_allclose((trace.weights - w) / LR, g, rtol=1e-6, atol=1e-9)
    # ARTICLE mode is not that step: its derivative differs (0.21 vs y(1-y) = 0.17 at 0.78).
    article = article_network().step(INPUT, TARGET, LR).layers[1].delta[0]
    assert abs(article - result.layers[1].delta[0]) > 5e-3


# ---------------------------------------------------------------------------------------------
# Vocabulary: an iteration is one sample forward and backward; 4 iterations are one XOR epoch.


def test_four_iterations_are_one_xor_epoch(xor):
    inputs, targets = xor
    net = Network.initialise(Architecture((2, 4, 1)), seed=3)
    progress = list(training.train(net, inputs, targets,
                                   training.TrainOptions(epochs=3, learning_rate=0.5,
                                                         report_every=1)))
    assert [p.epoch for p in progress] == [1, 2, 3]
    assert [p.iterations for p in progress] == [4, 8, 12]
    # One epoch with batch size 1 is exactly four Steps, one per sample, in order.
    params = net.params
    for x, t in zip(inputs, targets, strict=True):
        params = Network(net.arch, params).step(x, t, 0.5).params
    np.testing.assert_allclose(progress[0].params, params, rtol=1e-13, atol=1e-15)
