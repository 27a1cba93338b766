"""Optimizers: how Train moves the weights along the batch gradient, and what each keeps.

Each is torch.optim's update, to rounding (api.md, "Optimizers, regularisation, schedules"):

    SGD     torch.optim.SGD, dampening 0: momentum, nesterov, weight_decay added to the gradient
    ADAM    torch.optim.Adam: weight_decay added to the gradient; epsilon added to sqrt(v_hat)
    ADAMW   torch.optim.AdamW: the weights first multiplied by 1 - lr * weight_decay

with one parameter group for the weights and one with weight_decay 0 for the biases. The update
loops themselves are kernels (kernels.py, `optimizer_update`, beside the batch gradient they
consume): numba functions like the rest, over the same flat buffers, so that a batch never
leaves compiled code, and written as llm.c's AdamW loop is, one line per step of the math. This
module holds what surrounds them: the enum, the state kept between calls, the hyperparameters
as the kernels take them, and the checks of every setting (before any kernel runs).

An optimizer's state lives beside the parameters, arrays of their shape and dtype, and is
committed with them (the store keeps it in the stored format): SGD's velocity; Adam's and
AdamW's first and second moments, with the count of steps taken for the bias correction. In the
engine's sign (kernels.py: `grad` is the descent direction):

    velocity = -lr * torch's momentum_buffer, the rate of the last update: what version-1
               models stored, so they continue as they did. When a schedule changes the rate,
               training.py rescales it by new / old, which keeps torch's update.
    m        = -torch's exp_avg;   v = torch's exp_avg_sq;   steps = torch's state["step"]
"""

from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np

from ..errors import InvalidArgument
from . import kernels


class Optimizer(enum.IntEnum):
    """The proto's Optimizer numbers."""

    SGD = kernels.SGD  # momentum and nesterov as torch.optim.SGD (dampening 0)
    ADAM = kernels.ADAM  # torch.optim.Adam: weight decay added to the gradient
    ADAMW = kernels.ADAMW  # torch.optim.AdamW: weight decay decoupled from the moments


# The arrays each optimizer keeps, in order.
STATE_ARRAYS = {Optimizer.SGD: ("velocity",), Optimizer.ADAM: ("m", "v"),
                Optimizer.ADAMW: ("m", "v")}

# torch's defaults for what a request leaves unset.
DEFAULT_BETA1, DEFAULT_BETA2, DEFAULT_EPSILON = 0.9, 0.999, 1e-8


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

    @classmethod
    def of(cls, optimizer: Optimizer, state: np.ndarray, steps: int) -> OptimizerState:
        """The state to keep from a training's working arrays ([k, n_params]; copied)."""
        return cls(optimizer, tuple(row.copy() for row in state), steps)

    def velocity(self, params: np.ndarray) -> np.ndarray:
        """SGD's momentum buffer to continue from: a copy of the stored one, or zeros when the
        state is not SGD's."""
        if self.optimizer is Optimizer.SGD:
            return np.array(self.arrays[0], dtype=params.dtype, copy=True)
        return np.zeros_like(params)

    def working(self, optimizer: Optimizer, params: np.ndarray,
                reset: bool = False) -> tuple[np.ndarray, int]:
        """(state [k, n_params], steps) for a training with `optimizer`: a copy of this state
        when it is that optimizer's, of the parameters' size, and not `reset`; else a fresh
        one (zeros, 0 steps), as api.md says a Train with another optimizer starts."""
        names = STATE_ARRAYS[optimizer]
        state = np.zeros((len(names), params.size), dtype=params.dtype)
        if (reset or self.optimizer is not optimizer
                or any(a.shape != params.shape for a in self.arrays)):
            return state, 0
        for row, array in zip(state, self.arrays, strict=True):
            row[:] = array
        return state, self.steps


NO_STATE = OptimizerState(None)


@dataclasses.dataclass(frozen=True)
class Settings:
    """An optimizer and its hyperparameters, checked (InvalidArgument naming the field). None
    means unset: beta1, beta2 and epsilon then take torch's defaults, and setting one of them
    for SGD (or momentum and nesterov for Adam) is refused rather than ignored."""

    optimizer: Optimizer = Optimizer.SGD
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float | None = None
    beta2: float | None = None
    epsilon: float | None = None
    weight_decay: float = 0.0

    def __post_init__(self):
        try:
            optimizer = Optimizer(self.optimizer)
        except ValueError:
            names = ", ".join(o.name for o in Optimizer)
            raise InvalidArgument(f"optimizer {self.optimizer!r} is not one of {names}") from None
        object.__setattr__(self, "optimizer", optimizer)
        if not math.isfinite(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise InvalidArgument(f"momentum is {self.momentum}; it must be in [0, 1)")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0.0:
            raise InvalidArgument(f"weight_decay is {self.weight_decay}; it must be 0 or a "
                                  "finite positive number (it applies to weights, never biases)")
        if optimizer is Optimizer.SGD:
            for field in ("beta1", "beta2", "epsilon"):
                if getattr(self, field) is not None:
                    raise InvalidArgument(f"{field} is for ADAM and ADAMW; optimizer is SGD "
                                          "(leave it unset, or choose ADAM or ADAMW)")
            if self.nesterov and self.momentum == 0.0:
                raise InvalidArgument("nesterov needs momentum above 0 (as torch.optim.SGD); "
                                      "set momentum, e.g. 0.9, or leave nesterov off")
            return
        if self.momentum != 0.0 or self.nesterov:
            field = "momentum" if self.momentum != 0.0 else "nesterov"
            raise InvalidArgument(f"{field} is for SGD; {optimizer.name}'s moments are set by "
                                  "beta1 and beta2")
        for field, default in (("beta1", DEFAULT_BETA1), ("beta2", DEFAULT_BETA2)):
            value = getattr(self, field)
            value = default if value is None else float(value)
            if not math.isfinite(value) or not 0.0 <= value < 1.0:
                raise InvalidArgument(f"{field} is {value}; it must be in [0, 1) (unset: "
                                      f"{default})")
            object.__setattr__(self, field, value)
        epsilon = DEFAULT_EPSILON if self.epsilon is None else float(self.epsilon)
        if not math.isfinite(epsilon) or epsilon <= 0.0:
            raise InvalidArgument(f"epsilon is {epsilon}; it must be a finite number above 0 "
                                  f"(unset: {DEFAULT_EPSILON:g}, added to sqrt(v_hat))")
        object.__setattr__(self, "epsilon", epsilon)

    def check_rate(self, learning_rate: float) -> None:
        """What depends on the (largest) learning rate too."""
        if self.optimizer is Optimizer.ADAMW and learning_rate * self.weight_decay >= 1.0:
            raise InvalidArgument(
                f"weight_decay x learning_rate is {self.weight_decay * learning_rate:g}; AdamW "
                "multiplies the weights by 1 - learning_rate x weight_decay each step, which "
                "must stay above 0: lower weight_decay")

    def hyper(self, learning_rate: float) -> np.ndarray:
        """The kernels' `hyper` array at this rate (kernels.LR, ... by index)."""
        hyper = np.zeros(kernels.N_HYPER, dtype=np.float64)
        hyper[kernels.LR] = learning_rate
        hyper[kernels.MOMENTUM] = self.momentum
        hyper[kernels.NESTEROV] = 1.0 if self.nesterov else 0.0
        hyper[kernels.BETA1] = self.beta1 or 0.0
        hyper[kernels.BETA2] = self.beta2 or 0.0
        hyper[kernels.EPSILON] = self.epsilon or 0.0
        hyper[kernels.WEIGHT_DECAY] = self.weight_decay
        return hyper

    @property
    def one_sample(self) -> bool:
        """Whether the one-sample path (kernels.sample_epochs, tier 1) computes this update:
        plain SGD with momentum, without Nesterov or weight decay."""
        return (self.optimizer is Optimizer.SGD and not self.nesterov
                and self.weight_decay == 0.0)
