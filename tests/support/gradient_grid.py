"""The grid the gradient tests sweep: every hidden activation x output and loss x bias x
gradient mode the engine supports (tests/engine/test_gradients.py, tests/gradients/)."""

from __future__ import annotations

import itertools

from jitnet.service.engine.model import Activation, GradientMode, Loss

HIDDEN = [Activation.SIGMOID, Activation.TANH, Activation.RELU, Activation.LINEAR]
OUTPUT_LOSS = [(Activation.SIGMOID, Loss.MSE), (Activation.SIGMOID, Loss.CROSS_ENTROPY),
               (Activation.LINEAR, Loss.MSE), (Activation.SOFTMAX, Loss.MSE),
               (Activation.SOFTMAX, Loss.CROSS_ENTROPY)]
MODES = [GradientMode.EXACT, GradientMode.ARTICLE]
GRID = list(itertools.product(HIDDEN, OUTPUT_LOSS, [True, False], MODES))


def case_id(case) -> str:
    hidden, (output, loss), bias, mode = case
    return (f"{hidden.name.lower()}-{output.name.lower()}-{loss.name.lower()}-"
            f"{'bias' if bias else 'nobias'}-{mode.name.lower()}")
