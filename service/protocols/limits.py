"""Configured limits, checked on plain numbers before anything is allocated.

Each check raises LimitExceeded (RESOURCE_EXHAUSTED) naming what was asked, the limit, its
configured value and the flag and variable that change it. Requests over the message size and
calls over the number at once are refused by grpc itself (server options, see server/lifecycle.py),
whose messages name the sizes but not the setting; replies are checked here before they are sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from ..config import Limits
from ..errors import LimitExceeded


def _over(limits: Limits, field: str, what: str) -> LimitExceeded:
    return LimitExceeded(f"{what}, over the server's limit {limits.hint(field)}")


def check_architecture(limits: Limits, layer_sizes: Sequence[int], bias: bool) -> None:
    """Layers, width and parameter count of a model about to be created."""
    sizes = [int(s) for s in layer_sizes]
    if len(sizes) - 1 > limits.max_layers:
        raise _over(limits, "max_layers", f"layer_sizes has {len(sizes) - 1} layers of neurons")
    for position, size in enumerate(sizes):
        if size > limits.max_layer_width:
            raise _over(limits, "max_layer_width", f"layer_sizes[{position}] is {size}")
    params = sum(o * i + (o if bias else 0) for i, o in pairwise(sizes))
    if params > limits.max_parameters:
        raise _over(limits, "max_parameters", f"the model would have {params} parameters")


def check_rows(limits: Limits, rows: int, field: str) -> None:
    if rows > limits.max_rows:
        raise _over(limits, "max_rows", f"{field} has {rows} rows")


def check_work(limits: Limits, epochs: int, rows: int) -> None:
    """epochs x rows of one Train call."""
    if epochs * rows > limits.max_work:
        raise _over(limits, "max_work", f"{epochs} epochs x {rows} rows is {epochs * rows:g} "
                    "sample iterations")


def check_gradient_check(limits: Limits, arch, model_id: str) -> None:
    """A CheckGradients: two forward passes per parameter, and a reply with two values per
    parameter, both refused before any work."""
    passes = 2 * arch.n_params
    if passes > limits.max_gradient_check_passes:
        raise _over(limits, "max_gradient_check_passes",
                    f"checking the gradients of model '{model_id}' takes 2 x {arch.n_params} "
                    f"parameters = {passes} forward passes")
    check_message(limits, gradient_check_reply_bound(arch),
                  f"the CheckGradients reply for model '{model_id}'")


def check_message(limits: Limits, size: int, what: str) -> None:
    """A reply about to be sent (grpc would refuse it with a message naming no setting)."""
    if size > limits.max_message_bytes:
        raise _over(limits, "max_message_bytes", f"{what} would be {size} bytes")


# -- reply sizes ---------------------------------------------------------------------------------
# Bounds of a reply's size from the model's shape alone, so that a reply that cannot be sent is
# refused before the work (or the commit) that would produce it. Doubles are 8 bytes on the wire
# in either tensor form (raw, or packed values); the rest is protobuf framing, bounded generously.


def weights_bytes(arch) -> int:
    """The weights and biases alone: any reply carrying them is at least this big."""
    return 8 * arch.n_params


def model_with_weights_bound(arch) -> int:
    """At most the size of a Model message carrying the weights: per layer two tensors'
    framing, and the metadata (id, architecture, counters, times)."""
    return 8 * arch.n_params + 64 * arch.n_layers + 4096


def step_reply_bound(arch) -> int:
    """At most the size of a StepResponse: every layer's weights twice (before and after) and
    four numbers per neuron (net, output, error, delta), with framing."""
    return 16 * arch.n_params + 32 * arch.n_units + 160 * arch.n_layers + 64


def gradient_check_reply_bound(arch) -> int:
    """At most the size of a CheckGradientsResponse: two values per parameter (analytic and
    numeric), per layer four tensors' and two layers' framing, and a few numbers."""
    return 16 * arch.n_params + 160 * arch.n_layers + 64


def check_weights_reply(limits: Limits, arch, model_id: str) -> None:
    """A reply with the weights of a model, refused before it is built when it cannot fit."""
    check_message(limits, weights_bytes(arch), f"the reply with the weights of model '{model_id}'")


def check_step_reply(limits: Limits, arch, model_id: str) -> None:
    """Before a Step: a reply that cannot be sent must not follow a commit."""
    check_message(limits, step_reply_bound(arch),
                  f"the Step reply with the weights of model '{model_id}'")


def check_outputs_reply(limits: Limits, rows: int, columns: int) -> None:
    """Predict's outputs, refused before they are computed: rows x columns doubles."""
    check_message(limits, 8 * rows * columns, "the Predict reply")
