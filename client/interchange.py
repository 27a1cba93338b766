"""A network on its way between jitnet and another library: what the ONNX and scikit-learn
importers read out of a file or an estimator, and what create_model needs to make it a model.

Weights are jitnet's: W [fan_out, fan_in] (W[j, i] joins input i to neuron j) and b [fan_out],
held as float64 whatever the source's dtype (a float32 value is exact in float64); `dtype` says
which the model computes in. Activations and losses are the client's short names ("relu",
"softmax", "cross_entropy").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from .results import Model

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")
OUTPUT_ACTIVATIONS = ("sigmoid", "linear", "softmax")


@dataclasses.dataclass(frozen=True, eq=False)
class NetworkSpec:
    """Everything a model is made of, with its weights; `metadata` goes into the model's
    metadata (the classes of a classifier as JSON text, where it came from)."""

    layer_sizes: tuple[int, ...]
    hidden_activation: str
    output_activation: str
    loss: str
    bias: bool
    layers: tuple[tuple[np.ndarray, np.ndarray | None], ...]
    dtype: str = "float64"
    gradient_mode: str = "exact"
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_model(cls, model: Model) -> NetworkSpec:
        """The spec of a model fetched with its weights (get_model(include_weights=True))."""
        if model.layers is None:
            raise ValueError(f"model '{model.id}' was fetched without its weights: use "
                             "get_model(model_id, include_weights=True)")
        return cls(model.layer_sizes, model.hidden_activation, model.output_activation,
                   model.loss, model.bias, model.layers, model.dtype, model.gradient_mode,
                   dict(model.metadata))

    @property
    def activations(self) -> tuple[str, ...]:
        """One activation per layer of neurons, input side first."""
        n = len(self.layer_sizes) - 1
        return (self.hidden_activation,) * (n - 1) + (self.output_activation,)

    def create_arguments(self) -> dict:
        """Client.create_model's keyword arguments for this network (but the model id)."""
        return dict(layer_sizes=list(self.layer_sizes), hidden=self.hidden_activation,
                    output=self.output_activation, loss=self.loss, bias=self.bias,
                    gradient_mode=self.gradient_mode, dtype=self.dtype,
                    layers=[(w, b) for w, b in self.layers], metadata=dict(self.metadata))

    def with_changes(self, *, loss: str | None = None, dtype: str | None = None,
                     metadata: Mapping[str, str] | None = None) -> NetworkSpec:
        """This network with another loss or dtype, and `metadata` added to (over) its own."""
        merged = {**self.metadata, **(metadata or {})}
        return dataclasses.replace(self, loss=loss or self.loss, dtype=dtype or self.dtype,
                                   metadata=merged)
