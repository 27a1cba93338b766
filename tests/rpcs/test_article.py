"""The article's worked example (api.md) through Step on a real server: ARTICLE mode gives the
article's printed numbers, EXACT mode the true gradient step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import ARTICLE_HIDDEN, ARTICLE_OUTPUT, TIMEOUT, array, article_request


def _trunc2(values):
    return [math.floor(v * 100) / 100 for v in values]


def test_article_example_in_article_mode(stub):
    created = stub.CreateModel(article_request(), timeout=TIMEOUT).model
    assert created.version == 1 and created.architecture.bias is False
    step = stub.Step(pb.StepRequest(model_id="article", input=[0, 1], target=[1],
                                    learning_rate=0.001), timeout=TIMEOUT)
    hidden, output = step.layers
    assert hidden.net == pytest.approx([0.6, 0.7, 0.9, 0.3])
    assert _trunc2(hidden.output) == [0.64, 0.66, 0.71, 0.57]
    assert _trunc2(output.output) == [0.78]
    # The article truncates at every line and computes on with the truncated numbers, so the
    # lines after the outputs agree only roughly with exact arithmetic.
    assert output.net == pytest.approx([1.28], abs=0.02)
    assert output.error == pytest.approx([0.22], abs=0.01)
    assert output.delta == pytest.approx([0.04], abs=0.01)
    assert hidden.error == pytest.approx([0.024, 0.028, 0.012, 0.016], abs=0.005)
    assert hidden.delta == pytest.approx([0.005, 0.006, 0.002, 0.003], abs=0.002)
    new_out = array(output.updated.weights).ravel()
    assert new_out == pytest.approx([0.60003, 0.70003, 0.30003, 0.40003], abs=1e-5)
    assert array(output.before.weights).tolist() == ARTICLE_OUTPUT
    assert array(hidden.before.weights).tolist() == ARTICLE_HIDDEN
    assert step.model_version == 2
    model = stub.GetModel(pb.GetModelRequest(model_id="article", include_weights=True),
                          timeout=TIMEOUT).model
    assert (model.version, model.iterations) == (2, 1)
    assert model.last_loss == pytest.approx(step.loss)
    np.testing.assert_array_equal(array(model.layers[1].weights).ravel(), new_out)


def test_article_example_in_exact_mode_is_the_true_gradient_step(stub):
    stub.CreateModel(article_request("exact", pb.GRADIENT_MODE_EXACT), timeout=TIMEOUT)
    step = stub.Step(pb.StepRequest(model_id="exact", input=[0, 1], target=[1],
                                    learning_rate=0.001), timeout=TIMEOUT)
    # numpy: the gradient of 0.5 (t - y)^2 through two sigmoid layers, one descent step
    def sig(z):
        return 1 / (1 + np.exp(-z))
    w1, w2 = np.array(ARTICLE_HIDDEN), np.array(ARTICLE_OUTPUT)
    x, t, lr = np.array([0.0, 1.0]), np.array([1.0]), 0.001
    h = sig(w1 @ x)
    y = sig(w2 @ h)
    d2 = (t - y) * y * (1 - y)
    d1 = (w2.T @ d2) * h * (1 - h)
    np.testing.assert_allclose(array(step.layers[1].updated.weights), w2 + lr * np.outer(d2, h),
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(array(step.layers[0].updated.weights), w1 + lr * np.outer(d1, x),
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(step.layers[1].delta, d2, rtol=1e-12)
    assert step.loss == pytest.approx(0.5 * float(((t - y) ** 2).sum()), rel=1e-12)

