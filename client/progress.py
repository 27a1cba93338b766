"""Training with a progress bar, for `jitnet train` and `jitnet demo`."""

from __future__ import annotations

import sys
import time

from . import explain
from .client import Client
from .datasets import DataSet
from .results import Progress


class ProgressBar:
    """One line on stderr, redrawn in place on a terminal: epochs, bar, loss, time. Off a
    terminal (logs, pipes) it writes a plain line at most every `every` seconds."""

    def __init__(self, total: int, stream=None, enabled: bool = True, width: int = 24,
                 every: float = 5.0):
        self.total, self.width, self.every = total, width, every
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = False
        self.last = time.monotonic()

    def line(self, p: Progress) -> str:
        share = min(1.0, p.epoch / self.total) if self.total else 1.0
        filled = int(round(share * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        extra = "".join(f"{name} {explain.fmt(value, 4)} " for name, value in (
            ("val_loss", p.validation_loss), ("acc", p.accuracy),
            ("val_acc", p.validation_accuracy)) if value is not None)
        return (f"epoch {p.epoch:>{len(str(self.total))}}/{self.total} [{bar}] "
                f"loss {explain.fmt(p.loss, 4):<10} {extra}{p.elapsed_seconds:.1f} s")

    def update(self, p: Progress) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self.line(p))
            self.stream.flush()
            self.drawn = True
        elif time.monotonic() - self.last >= self.every and not p.done:
            self.stream.write(self.line(p) + "\n")
            self.stream.flush()
            self.last = time.monotonic()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def train_with_progress(client: Client, model_id: str, data: DataSet, bar: ProgressBar,
                        history: list | None = None, **options) -> Progress | None:
    """Trains with `bar` showing the progress; the last Progress, or None if none came.
    Every Progress is appended to `history` when one is given (for a training plot)."""
    last = None
    progress = client.train(model_id, data.inputs, data.targets, **options)
    try:
        for last in progress:
            bar.update(last)
            if history is not None:
                history.append(last)
    finally:
        progress.close()  # on Ctrl-C: cancels the call; the model keeps its last commit
        bar.close()
    return last


def trained_line(model_id: str, p: Progress | None, target_loss: float) -> str:
    """The one line `jitnet train` and the demo print at the end: how far it got and why."""
    if p is None:
        return f"model '{model_id}': no progress reported"
    if p.stop_reason == "early_stopping":
        why = f"stopped early: no improvement since epoch {p.best_epoch}"
    elif p.stop_reason == "min_learning_rate":
        why = "stopped: the PLATEAU schedule could lower the rate no further"
    elif p.stop_reason == "target_loss" or (target_loss and p.loss <= target_loss):
        why = f"reached the target loss {explain.fmt(target_loss)}"
    else:
        why = "all epochs done"
    kept = f", kept epoch {p.best_epoch}'s weights" if p.best_epoch else ""
    validation = ("" if p.validation_loss is None
                  else f", validation loss {explain.fmt(p.validation_loss)}")
    return (f"trained '{model_id}': {p.epoch} epochs, {p.iterations} iterations, loss "
            f"{explain.fmt(p.loss)}{validation} ({why}{kept}), version {p.version}, "
            f"{p.elapsed_seconds:.3g} s")
