"""explain.py: the article's naming for deeper networks, biases, exact gradients, formatting."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.client import explain


@pytest.mark.parametrize("value, text", [
    (0.6, "0.6"), (1.0, "1"), (0.0, "0"), (-0.0, "0"), (0.645656306, "0.645656"),
    (0.600029785, "0.60003"), (1e-7, "1e-07"), (-2.5, "-2.5"), (1234567.0, "1.23457e+06"),
])
def test_fmt_has_up_to_six_significant_digits(value, text):
    assert explain.fmt(value) == text


def test_an_update_shows_enough_digits_to_differ():
    assert explain._fmt_new(0.2, 0.2 + 3e-9) == "0.200000003"
    assert explain._fmt_new(0.2, 0.2) == "0.2"


def test_deeper_network_names_layers_h1_h2_o(client, model_id):
    m = client.create_model([2, 3, 2, 1], hidden="tanh", output="linear", init="uniform",
                            seed=1, model_id=model_id)
    trace = client.step(model_id, [0.5, -1], [0.25], 0.1)
    text = explain.explain(trace, m)
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith("net1_h1 = 0.5 * ") for line in lines)
    assert any(line.startswith("output2_h2 = f_h(net2_h2) = f_h(") for line in lines)
    assert any(line.startswith("output_o = f_o(net_o) = f_o(") for line in lines)
    assert "f_h'(x) = 1 - tanh(x)^2 = 1 - y^2" in lines and "f_o(x) = x" in lines
    assert any(line.startswith("error1_h2 = delta_o * ") for line in lines)
    assert any(line.startswith("error3_h1 = delta1_h2 * ") and "+ delta2_h2 * " in line
               for line in lines)
    assert any(line.startswith("delta1_h1 = f_h'(net1_h1) * error1_h1 = ") for line in lines)
    assert any(line.startswith("b_h1[3] = old + delta3_h1 * learning_rate = ") for line in lines)
    assert any(line.startswith("w_h1[1,2] = old + input2 * delta1_h1 * learning_rate = ")
               and "(-1)" in line for line in lines)
    assert lines[-1].startswith("loss = ") and f"version {trace.version}" in lines[-1]
    # The shown derivative times the error is the server's delta, and every result is its.
    deltas = [line for line in lines if line.startswith("delta")]
    for line in deltas:
        *_, product, result = line.split(" = ")
        d, e = (float(v.strip("()")) for v in product.split(" * "))
        assert d * e == pytest.approx(float(result), rel=1e-4, abs=1e-9)
    assert f"= {explain.fmt(trace.layers[-1].output[0])}" in text
    # Every layer's updated weights appear on the right of their lines.
    assert f"= {explain._fmt_new(m.layers[0][0][0, 1], trace.layers[0].weights[0, 1])}" in text


def test_cross_entropy_and_softmax_lines(client, model_id):
    m = client.create_model([2, 3, 2], output="softmax", loss="cross_entropy", init="uniform",
                            model_id=model_id)
    trace = client.step(model_id, [1, 0], [0, 1], 0.1, dry_run=True)
    text = explain.explain(trace, m)
    assert "output1_o = exp(net1_o) / sum(exp(net_o)) = exp(" in text
    assert "delta2_o = error2_o = " in text and "the derivative cancels" in text
    assert "f_o(x) = exp(x_j) / sum_k exp(x_k)" in text


def test_explain_rebuilds_old_weights_when_the_server_sends_none(client, article):
    trace = client.step(article.id, [0, 1], [1], 0.001, dry_run=True)
    stripped = type(trace)(**{**trace.__dict__, "layers": tuple(
        type(layer)(**{**layer.__dict__, "weights_before": None, "biases_before": None})
        for layer in trace.layers)})
    assert explain.explain(stripped, article) == explain.explain(trace, article)
    np.testing.assert_allclose(explain.weights_before(stripped, 1)[0], article.layers[1][0])
