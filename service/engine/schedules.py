"""Learning-rate schedules: the rate of each epoch of a Train call, as torch's schedulers give it.

    CONSTANT  the request's learning_rate throughout
    STEP      torch StepLR: lr * gamma^floor(epoch / step_epochs)
    COSINE    torch CosineAnnealingLR with T_max = the call's epochs and eta_min =
              min_learning_rate: eta_min + (lr - eta_min) (1 + cos(pi epoch / T_max)) / 2
    PLATEAU   torch ReduceLROnPlateau (mode min, factor gamma, threshold 1e-4 relative,
              cooldown 0, min_lr = min_learning_rate, eps 1e-8) on the monitored loss

`epoch` counts the call's epochs from 0 (api.md: a schedule starts again with each call). The
rate changes between epochs only; training.py runs a chunk of epochs as one kernel call while
the rate stays the same (`same_until`), and PLATEAU, which needs each epoch's loss, one epoch
at a time.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from ..errors import InvalidArgument


class Kind(enum.IntEnum):
    """The proto's LearningRateSchedule.Kind numbers."""

    CONSTANT = 1
    STEP = 2
    COSINE = 3
    PLATEAU = 4


DEFAULT_GAMMA = 0.1  # torch's StepLR gamma and ReduceLROnPlateau factor
DEFAULT_PLATEAU_PATIENCE = 10  # torch's ReduceLROnPlateau patience
PLATEAU_THRESHOLD = 1e-4  # relative: an epoch improves when loss < best * (1 - 1e-4)
PLATEAU_EPS = 1e-8  # a reduction smaller than this is not made (torch's eps)

# Which fields each kind reads; any other set is refused (it would otherwise be ignored).
_FIELDS = {Kind.CONSTANT: (), Kind.STEP: ("step_epochs", "gamma"), Kind.COSINE:
           ("min_learning_rate",), Kind.PLATEAU: ("gamma", "patience", "min_learning_rate")}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A schedule as a request gives it; 0 in gamma and patience means torch's default."""

    kind: Kind = Kind.CONSTANT
    step_epochs: int = 0
    gamma: float = 0.0
    patience: int = 0
    min_learning_rate: float = 0.0

    def __post_init__(self):
        try:
            kind = Kind(self.kind)
        except ValueError:
            names = ", ".join(k.name for k in Kind)
            raise InvalidArgument(f"schedule.kind {self.kind!r} is not one of {names}") from None
        object.__setattr__(self, "kind", kind)
        for field in ("step_epochs", "gamma", "patience", "min_learning_rate"):
            if getattr(self, field) and field not in _FIELDS[kind]:
                uses = ", ".join(_FIELDS[kind]) or "nothing else"
                raise InvalidArgument(f"schedule.{field} is set, but a {kind.name} schedule "
                                      f"uses {uses}")
        if kind is Kind.STEP and self.step_epochs < 1:
            raise InvalidArgument("schedule.step_epochs is 0; a STEP schedule multiplies the "
                                  "rate by gamma every step_epochs epochs: give at least 1")
        gamma = float(self.gamma)
        if gamma and (not math.isfinite(gamma) or not 0.0 < gamma <= 1.0
                      or (kind is Kind.PLATEAU and gamma == 1.0)):
            bound = "(0, 1)" if kind is Kind.PLATEAU else "(0, 1]"
            raise InvalidArgument(f"schedule.gamma is {gamma}; the factor must be in {bound} "
                                  f"(0: torch's {DEFAULT_GAMMA})")
        floor = float(self.min_learning_rate)
        if not math.isfinite(floor) or floor < 0.0:
            raise InvalidArgument(f"schedule.min_learning_rate is {floor}; it must be 0 or a "
                                  "finite positive rate")

    def check_rate(self, learning_rate: float) -> None:
        if self.min_learning_rate and self.min_learning_rate >= learning_rate:
            raise InvalidArgument(
                f"schedule.min_learning_rate is {self.min_learning_rate:g}, not below "
                f"learning_rate {learning_rate:g}, where the {self.kind.name} schedule starts")

    @property
    def each_epoch(self) -> bool:
        """Whether the rate depends on each epoch's loss (PLATEAU)."""
        return self.kind is Kind.PLATEAU


class Rates:
    """The rates of one call's epochs: `rate(epoch)`, and for PLATEAU `observe` after each
    epoch. Schedule must be valid for learning_rate (Schedule.check_rate)."""

    def __init__(self, schedule: Schedule, learning_rate: float, epochs: int):
        self.schedule, self.start, self.epochs = schedule, float(learning_rate), int(epochs)
        self.gamma = schedule.gamma or DEFAULT_GAMMA
        self.current = self.start  # PLATEAU's rate now
        self.best, self.bad_epochs = math.inf, 0

    def rate(self, epoch: int) -> float:
        s, kind = self.schedule, self.schedule.kind
        if kind is Kind.STEP:
            return self.start * self.gamma ** (epoch // s.step_epochs)
        if kind is Kind.COSINE:
            floor = s.min_learning_rate
            return floor + (self.start - floor) * (1.0 + math.cos(math.pi * epoch
                                                                  / self.epochs)) / 2.0
        if kind is Kind.PLATEAU:
            return self.current
        return self.start

    def same_until(self, epoch: int) -> int:
        """The first epoch after `epoch` whose rate may differ from its."""
        kind = self.schedule.kind
        if kind is Kind.STEP:
            step = self.schedule.step_epochs
            return (epoch // step + 1) * step
        if kind in (Kind.COSINE, Kind.PLATEAU):
            return epoch + 1
        return self.epochs

    def observe(self, loss: float) -> bool:
        """PLATEAU, after an epoch with this monitored loss: torch's step(), with cooldown 0.
        False when the rate should come down but cannot (it is at min_learning_rate, or the cut
        would be under PLATEAU_EPS): the call then stops (STOP_REASON_MIN_LEARNING_RATE)."""
        if self.schedule.kind is not Kind.PLATEAU:
            return True
        if loss < self.best * (1.0 - PLATEAU_THRESHOLD):
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > (self.schedule.patience or DEFAULT_PLATEAU_PATIENCE):
            lowered = max(self.current * self.gamma, self.schedule.min_learning_rate)
            if self.current - lowered <= PLATEAU_EPS:
                return False
            self.current, self.bad_epochs = lowered, 0
        return True
