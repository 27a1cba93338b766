"""What the client's calls return: plain values holding numpy arrays, no protobuf."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Model:
    """A model as the server describes it. `layers` (numpy [(W, b or None)], W [fan_out, fan_in])
    is there after create_model and get_model(include_weights=True), else None. `dtype` is
    "float64" or "float32" (the parameters' and the arithmetic's); `optimizer` the optimizer
    whose state is stored with the weights ("none" before any Train); `metadata` the strings its
    creator kept with it (CreateModelRequest.metadata: an imported classifier's classes, ...)."""

    id: str
    layer_sizes: tuple[int, ...]
    hidden_activation: str
    output_activation: str
    loss: str
    bias: bool
    gradient_mode: str
    version: int
    epochs_trained: int
    iterations: int
    last_loss: float
    create_time: _dt.datetime | None
    update_time: _dt.datetime | None
    parameter_count: int
    layers: tuple[tuple[np.ndarray, np.ndarray | None], ...] | None = dataclasses.field(
        default=None, compare=False, repr=False)
    dtype: str = "float64"
    optimizer: str = "none"  # whose state is stored with the weights: sgd, adam, adamw
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False,
                                                    repr=False)

    @property
    def activations(self) -> tuple[str, ...]:
        """One activation per layer of neurons, input side first."""
        n = len(self.layer_sizes) - 1
        return (self.hidden_activation,) * (n - 1) + (self.output_activation,)

    def describe(self) -> str:
        """E.g. '2-4-1 sigmoid/sigmoid mse, no bias, article gradients'."""
        text = (f"{'-'.join(map(str, self.layer_sizes))} "
                f"{self.hidden_activation}/{self.output_activation} {self.loss}")
        if not self.bias:
            text += ", no bias"
        if self.gradient_mode != "exact":
            text += f", {self.gradient_mode} gradients"
        return text


@dataclasses.dataclass(frozen=True)
class Progress:
    """One Train progress message; its `version` is already committed."""

    epoch: int  # epochs done in this call
    epochs: int  # epochs asked for
    loss: float  # mean per-sample loss over the last epoch
    iterations: int  # samples trained on in this call
    elapsed_seconds: float
    version: int  # the model's committed version this progress belongs to
    done: bool  # the last message of the call


@dataclasses.dataclass(frozen=True, eq=False)
class LayerStep:
    """One layer of neurons in a Step: the article's numbers, input side first."""

    net: np.ndarray  # weighted sums
    output: np.ndarray  # activations
    error: np.ndarray  # output layer: target - output; hidden: sum(delta_next * w)
    delta: np.ndarray  # error times the activation's derivative
    weights_before: np.ndarray | None  # [fan_out, fan_in]
    biases_before: np.ndarray | None
    weights: np.ndarray  # after the update (unchanged on the server when dry_run)
    biases: np.ndarray | None


@dataclasses.dataclass(frozen=True, eq=False)
class StepTrace:
    """A Step: the sample and learning rate sent, and every layer's numbers the server gave."""

    model_id: str
    input: np.ndarray
    target: np.ndarray
    learning_rate: float
    dry_run: bool
    layers: tuple[LayerStep, ...]
    loss: float
    version: int  # the committed version after the step (the current one for a dry run)


@dataclasses.dataclass(frozen=True, eq=False)
class LayerGradients:
    """One layer's gradient check. Every value is in the sign of Step's update, the descent
    direction (minus dLoss/dw): a Step moves W by learning_rate * weights."""

    weights: np.ndarray  # the engine's backward pass, [fan_out, fan_in]: delta_j * input_i
    biases: np.ndarray | None  # delta_j
    numeric_weights: np.ndarray  # central finite differences of the loss, same sign
    numeric_biases: np.ndarray | None
    max_relative_error: float


@dataclasses.dataclass(frozen=True, eq=False)
class GradientCheck:
    """CheckGradients for one sample: the relative error of a parameter is
    |analytic - numeric| / max(|analytic|, |numeric|, 1e-6)."""

    model_id: str
    input: np.ndarray
    target: np.ndarray
    layers: tuple[LayerGradients, ...]
    loss: float  # the sample's loss at the weights checked
    max_relative_error: float
    epsilon: float  # the finite difference's step
    version: int  # the model version whose weights were checked
