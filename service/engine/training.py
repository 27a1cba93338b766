"""Training: epochs over a data set, driven from Python in chunks, each chunk one kernel call.

Python does only what is cheap and needs Python: seeded shuffling, progress, cancellation and
commits between chunks (umap's layout: the hot loop stays compiled). `train` is a generator; the
caller commits the parameters of each Progress it receives before telling anyone about it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import Cancelled, Diverged, InvalidArgument
from ..events import QUIET, Events
from . import jit
from .model import NO_ORDER, Network, as_matrix, check_learning_rate

# A chunk (one kernel call between cancellation checks) aims at this many seconds.
CHUNK_SECONDS = 0.1
# With report_every 0, progress (and a commit) about this often.
AUTO_REPORT_SECONDS = 1.0
# Bound on one chunk's shuffle orders, in samples (8 bytes each).
MAX_ORDER_ENTRIES = 1 << 21


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    epochs: int
    learning_rate: float
    batch_size: int = 1  # 0 or 1: the article's iteration, one sample at a time
    momentum: float = 0.0
    shuffle: bool = False
    seed: int = 0  # drives shuffling only
    target_loss: float = 0.0  # stop once an epoch's mean loss is at or below it; 0: never
    report_every: int = 0  # epochs between progress reports; 0: about once a second

    def __post_init__(self):
        if not isinstance(self.epochs, (int, np.integer)) or self.epochs < 1:
            raise InvalidArgument(f"epochs is {self.epochs}; train for at least 1 epoch")
        check_learning_rate(self.learning_rate)
        if self.batch_size < 0:
            raise InvalidArgument(f"batch_size is {self.batch_size}; use 0 or 1 for one sample "
                                  "at a time, or a larger batch")
        if not np.isfinite(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise InvalidArgument(f"momentum is {self.momentum}; it must be in [0, 1)")
        if not np.isfinite(self.target_loss) or self.target_loss < 0.0:
            raise InvalidArgument(f"target_loss is {self.target_loss}; use 0 (never stop early) "
                                  "or a finite positive loss")
        if self.report_every < 0:
            raise InvalidArgument(f"report_every is {self.report_every}; use 0 for the server's "
                                  "choice or a number of epochs")


@dataclasses.dataclass(frozen=True)
class Progress:
    epoch: int  # epochs done in this call
    loss: float  # mean per-sample loss of the last epoch
    iterations: int  # iterations (samples) done in this call
    elapsed_seconds: float
    params: np.ndarray  # a private copy: the caller may keep it
    velocity: np.ndarray
    done: bool  # the last progress of the call


def train(net: Network, inputs, targets, options: TrainOptions,
          velocity: np.ndarray | None = None,
          should_stop: Callable[[], bool] = lambda: False,
          clock: Callable[[], float] = time.monotonic,
          events: Events = QUIET) -> Iterator[Progress]:
    """Trains a copy of net's parameters; yields Progress every report_every epochs (or about
    once a second) and once at the end (done=True). Each chunk is reported to `events`.

    Raises Diverged when an epoch's loss is non-finite (nothing after the last Progress is kept)
    and Cancelled when should_stop() turns true between chunks.
    """
    arch = net.arch
    x = as_matrix(inputs, arch.layer_sizes[0], "inputs", min_rows=1)
    t = as_matrix(targets, arch.layer_sizes[-1], "targets", min_rows=1)
    if x.shape[0] != t.shape[0]:
        raise InvalidArgument(f"inputs has {x.shape[0]} rows but targets has {t.shape[0]}; "
                              "give one target row per input row")
    n = x.shape[0]
    batch = max(1, min(options.batch_size, n))
    params = net.params.copy()
    velocity = (np.zeros_like(params) if velocity is None
                else np.array(velocity, dtype=np.float64, copy=True))
    if velocity.shape != params.shape:
        velocity = np.zeros_like(params)
    grad = np.zeros_like(params)
    work = arch.work_buffers(batch)
    rng = np.random.default_rng(options.seed)
    # Asked once: the whole call runs on one tier (jit/room.py), whatever is swapped in
    # meanwhile; asking with `training` is what gets an architecture specialised.
    kernels = jit.kernels_for(arch, training=True)

    start = clock()
    done_epochs = 0
    last_report_epoch, last_report_time = 0, start
    chunk = 1  # epochs per kernel call; grows until a call takes about CHUNK_SECONDS
    max_chunk = max(1, MAX_ORDER_ENTRIES // n) if options.shuffle else 1 << 30
    while True:
        if should_stop():
            raise Cancelled(f"training stopped after {done_epochs} epochs; the model keeps its "
                            "last committed version")
        epochs = min(chunk, options.epochs - done_epochs)
        if options.report_every:
            epochs = min(epochs, last_report_epoch + options.report_every - done_epochs)
        orders = (np.stack([rng.permutation(n) for _ in range(epochs)]) if options.shuffle
                  else NO_ORDER)
        losses = np.empty(epochs, dtype=np.float64)
        began = clock()
        ran = kernels.train_epochs(params, velocity, grad, work, x, t, orders, batch,
                                   options.learning_rate, options.momentum,
                                   options.target_loss, losses)
        took = clock() - began
        done_epochs += ran
        loss = float(losses[ran - 1])
        events.chunk_trained(ran, ran * n, took, loss)
        # The loss is measured before each update, so the last update can still overflow.
        if not np.isfinite(loss) or not np.isfinite(params).all():
            events.diverged()
            what = f"the loss became {loss}" if not np.isfinite(loss) else "the weights overflowed"
            raise Diverged(f"{what} at epoch {done_epochs}; lower the learning rate (it was "
                           f"{options.learning_rate}). The model keeps its last committed weights")
        # Far below the aim, grow 8-fold (still under half of it): each chunk costs some tens
        # of microseconds of Python, a few percent of a short fast run if taken 2-fold.
        if took < CHUNK_SECONDS / 16:
            chunk = min(chunk * 8, max_chunk)
        elif took < CHUNK_SECONDS / 2:
            chunk = min(chunk * 2, max_chunk)
        elif took > CHUNK_SECONDS * 2 and chunk > 1:
            chunk //= 2

        now = clock()
        finished = (done_epochs >= options.epochs
                    or (options.target_loss > 0.0 and loss <= options.target_loss))
        due = (done_epochs - last_report_epoch >= options.report_every if options.report_every
               else now - last_report_time >= AUTO_REPORT_SECONDS)
        if finished or due:
            last_report_epoch, last_report_time = done_epochs, now
            yield Progress(done_epochs, loss, done_epochs * n, now - start, params.copy(),
                           velocity.copy(), finished)
        if finished:
            return
