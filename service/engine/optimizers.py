"""Optimizers: how Train moves the weights along the batch gradient, and what each keeps.

An optimizer's state lives beside the parameters, arrays of their shape and dtype, and is
committed with them (the store keeps it in the stored format): SGD's momentum buffer; Adam's
and AdamW's first and second moments, with the count of steps taken for the bias correction.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np


class Optimizer(enum.IntEnum):
    """The proto's Optimizer numbers."""

    SGD = 1  # momentum and nesterov as torch.optim.SGD (dampening 0)
    ADAM = 2  # torch.optim.Adam: weight decay added to the gradient
    ADAMW = 3  # torch.optim.AdamW: weight decay decoupled from the moments


# The arrays each optimizer keeps, in order.
STATE_ARRAYS = {Optimizer.SGD: ("velocity",), Optimizer.ADAM: ("m", "v"),
                Optimizer.ADAMW: ("m", "v")}


@dataclasses.dataclass(frozen=True, eq=False)
class OptimizerState:
    """What an optimizer keeps between Train calls. `optimizer` None: none yet (a new model, or
    one whose state was reset). `arrays` are STATE_ARRAYS[optimizer], each the shape of the
    parameters; `steps` counts the updates made with this state (Adam's t)."""

    optimizer: Optimizer | None
    arrays: tuple[np.ndarray, ...] = ()
    steps: int = 0

    def __post_init__(self):
        expected = 0 if self.optimizer is None else len(STATE_ARRAYS[self.optimizer])
        if len(self.arrays) != expected:
            raise ValueError(f"{self.optimizer!r} keeps {expected} arrays, not "
                             f"{len(self.arrays)}")
        if self.optimizer is not None:
            object.__setattr__(self, "optimizer", Optimizer(self.optimizer))
        object.__setattr__(self, "arrays", tuple(self.arrays))
        object.__setattr__(self, "steps", int(self.steps))

    @classmethod
    def sgd(cls, velocity: np.ndarray, steps: int = 0) -> OptimizerState:
        return cls(Optimizer.SGD, (velocity,), steps)

    def velocity(self, params: np.ndarray) -> np.ndarray:
        """SGD's momentum buffer to continue from: a copy of the stored one, or zeros when the
        state is not SGD's."""
        if self.optimizer is Optimizer.SGD:
            return np.array(self.arrays[0], dtype=params.dtype, copy=True)
        return np.zeros_like(params)


NO_STATE = OptimizerState(None)
