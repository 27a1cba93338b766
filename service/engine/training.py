"""Training: epochs over a data set, driven from Python in chunks, each chunk one kernel call.

Python does only what is cheap and needs Python: seeded shuffling, the learning rate of each
epoch (schedules.py), validation and early stopping after an epoch, progress, cancellation and
commits between chunks (umap's layout: the hot loop stays compiled). `train` is a generator;
the caller commits the parameters and optimizer state of each Progress it receives before
telling anyone about it.

A chunk is several epochs in one kernel call while nothing needs Python between them: a
constant rate (or a STEP schedule within one step), no validation, no early stopping. Validation
data, early stopping and the COSINE and PLATEAU schedules make each kernel call one epoch, which
costs some tens of microseconds of Python per epoch (benchmarks/engine.py measures it).

Which kernels: plain SGD (momentum, no Nesterov, no weight decay) one sample at a time and
without sample weights runs the one-sample path (kernels.sample_epochs, tier 1 when
specialised); everything else the batch path (kernels.batch_epochs, batches of 1 included).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import Cancelled, Diverged, InvalidArgument
from ..events import QUIET, Events
from . import jit
from .model import (
    NO_ORDER,
    PREDICT_BLOCK,
    Activation,
    Architecture,
    Network,
    as_matrix,
    check_learning_rate,
)
from .optimizers import NO_STATE, Optimizer, OptimizerState, Settings
from .schedules import Rates, Schedule

# A chunk (one kernel call between cancellation checks) aims at this many seconds.
CHUNK_SECONDS = 0.1
# With report_every 0, progress (and a commit) about this often.
AUTO_REPORT_SECONDS = 1.0
# Bound on one chunk's shuffle orders, in samples (8 bytes each).
MAX_ORDER_ENTRIES = 1 << 21
# The held-out rows of validation_fraction are drawn from a stream of their own, so that the
# shuffling (default_rng(seed)) is the same as when training on the other rows alone.
HOLDOUT_STREAM = 0x6A69746E  # "jitn"


class Monitor(enum.IntEnum):
    """What early stopping (and PLATEAU) watches: the proto's Monitor numbers."""

    LOSS = 1  # the training loss of each epoch
    VALIDATION_LOSS = 2
    VALIDATION_ACCURACY = 3


class StopReason(enum.IntEnum):
    """Why a call ended: the proto's StopReason numbers."""

    EPOCHS = 1  # every epoch asked for ran
    TARGET_LOSS = 2  # an epoch's loss reached target_loss
    EARLY_STOPPING = 3  # no improvement of the monitored value for `patience` epochs
    MIN_LEARNING_RATE = 4  # PLATEAU could bring the rate no lower


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Keras' EarlyStopping: stop after `patience` epochs in which the monitored value did not
    improve by more than min_delta; patience 0 is off. restore_best None means true: the call's
    last commit then holds the best epoch's weights and optimizer state. monitor None: the
    validation loss when there is validation data, else the training loss."""

    patience: int = 0
    min_delta: float = 0.0
    restore_best: bool | None = None
    monitor: Monitor | None = None

    def __post_init__(self):
        if self.patience < 0:
            raise InvalidArgument(f"early_stopping.patience is {self.patience}; give a number "
                                  "of epochs, or 0 for no early stopping")
        if not math.isfinite(self.min_delta) or self.min_delta < 0.0:
            raise InvalidArgument(f"early_stopping.min_delta is {self.min_delta}; it must be 0 "
                                  "or a finite positive improvement")
        if self.monitor is not None:
            try:
                object.__setattr__(self, "monitor", Monitor(self.monitor))
            except ValueError:
                names = ", ".join(m.name for m in Monitor)
                raise InvalidArgument(f"early_stopping.monitor {self.monitor!r} is not one of "
                                      f"{names}") from None
        if not self.patience:
            for field, unset in (("min_delta", 0.0), ("restore_best", None), ("monitor", None)):
                if getattr(self, field) != unset:
                    raise InvalidArgument(f"early_stopping.{field} is set, but "
                                          "early_stopping.patience is 0 (no early stopping); "
                                          "give the patience in epochs")

    @property
    def on(self) -> bool:
        return self.patience > 0


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    epochs: int
    learning_rate: float
    batch_size: int = 1  # 0 or 1: the article's iteration, one sample at a time
    momentum: float = 0.0
    shuffle: bool = False
    seed: int = 0  # drives shuffling and the held-out rows of validation_fraction
    target_loss: float = 0.0  # stop once an epoch's mean loss is at or below it; 0: never
    report_every: int = 0  # epochs between progress reports; 0: about once a second
    optimizer: Optimizer = Optimizer.SGD
    beta1: float | None = None  # Adam, AdamW; None: 0.9
    beta2: float | None = None  # None: 0.999
    epsilon: float | None = None  # None: 1e-8
    weight_decay: float = 0.0  # on weights, never biases
    nesterov: bool = False
    schedule: Schedule = Schedule()
    validation_fraction: float = 0.0  # a held-out share of the rows, in (0, 1); 0: none
    early_stopping: EarlyStopping = EarlyStopping()
    reset_optimizer: bool = False  # start the optimizer's state afresh
    settings: Settings = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.epochs, (int, np.integer)) or self.epochs < 1:
            raise InvalidArgument(f"epochs is {self.epochs}; train for at least 1 epoch")
        check_learning_rate(self.learning_rate)
        if self.batch_size < 0:
            raise InvalidArgument(f"batch_size is {self.batch_size}; use 0 or 1 for one sample "
                                  "at a time, or a larger batch")
        if not np.isfinite(self.target_loss) or self.target_loss < 0.0:
            raise InvalidArgument(f"target_loss is {self.target_loss}; use 0 (never stop early) "
                                  "or a finite positive loss")
        if self.report_every < 0:
            raise InvalidArgument(f"report_every is {self.report_every}; use 0 for the server's "
                                  "choice or a number of epochs")
        settings = Settings(self.optimizer, float(self.momentum), bool(self.nesterov),
                            self.beta1, self.beta2, self.epsilon, float(self.weight_decay))
        settings.check_rate(self.learning_rate)
        self.schedule.check_rate(self.learning_rate)
        fraction = float(self.validation_fraction)
        if not math.isfinite(fraction) or not 0.0 <= fraction < 1.0:
            raise InvalidArgument(f"validation_fraction is {fraction}; hold out a share in "
                                  "(0, 1), e.g. 0.1, or 0 for none")
        object.__setattr__(self, "settings", settings)


@dataclasses.dataclass(frozen=True)
class Progress:
    epoch: int  # epochs done in this call
    loss: float  # mean per-sample loss of the last epoch (weighted by the sample weights)
    iterations: int  # iterations (samples) done in this call
    elapsed_seconds: float
    params: np.ndarray  # what to commit, a private copy (the caller may keep it)
    optimizer: OptimizerState  # the optimizer's state that goes with params
    done: bool  # the last progress of the call
    learning_rate: float = 0.0  # in effect during the last epoch
    validation_loss: float | None = None  # the last epoch's, when there is validation data
    accuracy: float | None = None  # classifiers: on the training rows, at the epoch's end
    validation_accuracy: float | None = None
    best_epoch: int = 0  # with early stopping: the epoch whose weights are the best so far
    stop_reason: StopReason | None = None  # on the last progress
    params_loss: float = 0.0  # the training loss of the epoch whose weights `params` are

    @property
    def velocity(self) -> np.ndarray:
        """SGD's velocity in the state (zeros for another optimizer's)."""
        return self.optimizer.velocity(self.params)


@dataclasses.dataclass(frozen=True)
class Data:
    """What one call trains and validates on, checked: inputs [n, n_in], targets [n, n_out],
    weights [n] or None, validation rows (possibly none)."""

    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None
    validation_inputs: np.ndarray | None
    validation_targets: np.ndarray | None

    @property
    def validated(self) -> bool:
        return self.validation_inputs is not None


def classes_of(arch: Architecture) -> bool:
    """Whether the model is a classifier, which reports accuracy (api.md): a softmax output
    (the argmax) or a sigmoid one (each output's side of 0.5)."""
    return arch.output_activation in (Activation.SOFTMAX, Activation.SIGMOID)


def class_keys(targets: np.ndarray, arch: Architecture) -> np.ndarray | None:
    """Each row's class, for stratifying: the argmax of a softmax model's target row, the
    pattern of sides of 0.5 of a sigmoid model's; None for other models."""
    if arch.output_activation is Activation.SOFTMAX:
        return np.argmax(targets, axis=1)
    if arch.output_activation is Activation.SIGMOID:
        return np.unique(targets > 0.5, axis=0, return_inverse=True)[1].reshape(-1)
    return None


def holdout(targets: np.ndarray, fraction: float, seed: int,
            arch: Architecture) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows), both in ascending order. ceil(fraction * n) rows are
    held out (scikit-learn's train_test_split), drawn with `seed` from their own stream and,
    for classifiers, stratified: each class gives its share of them, the largest remainders
    rounded up, so that every class's held-out count is within one row of its exact share."""
    n = targets.shape[0]
    held = math.ceil(fraction * n)
    if held >= n:
        raise InvalidArgument(f"validation_fraction {fraction} of {n} rows would hold out "
                              f"{held} of them, leaving none to train on")
    rng = np.random.default_rng((HOLDOUT_STREAM, seed))
    keys = class_keys(targets, arch)
    if keys is None:
        keys = np.zeros(n, dtype=np.int64)
    classes, counts = np.unique(keys, return_counts=True)
    exact = held * counts / n
    share = np.floor(exact).astype(np.int64)
    for k in np.argsort(-(exact - share), kind="stable")[: held - int(share.sum())]:
        share[k] += 1
    chosen = [rng.permutation(np.flatnonzero(keys == c))[:s]
              for c, s in zip(classes, share, strict=True)]
    rows = np.sort(np.concatenate(chosen))
    keep = np.ones(n, dtype=bool)
    keep[rows] = False
    return np.flatnonzero(keep), rows


def prepare(arch: Architecture, inputs, targets, options: TrainOptions, sample_weights=None,
            validation=None) -> Data:
    """Checks the call's arrays against the model and the options (InvalidArgument naming the
    field), and holds out validation_fraction's rows."""
    x = as_matrix(inputs, arch.layer_sizes[0], "inputs", min_rows=1)
    t = as_matrix(targets, arch.layer_sizes[-1], "targets", min_rows=1)
    if x.shape[0] != t.shape[0]:
        raise InvalidArgument(f"inputs has {x.shape[0]} rows but targets has {t.shape[0]}; "
                              "give one target row per input row")
    n = x.shape[0]
    weights = None
    if sample_weights is not None:
        weights = np.asarray(sample_weights, dtype=np.float64)
        if weights.ndim == 2 and weights.shape[1] == 1:
            weights = weights[:, 0]
        if weights.ndim != 1 or weights.shape[0] != n:
            raise InvalidArgument(f"sample_weights has shape {list(weights.shape)}; give one "
                                  f"weight per row: [{n}]")
        bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0.0))
        if bad.size:
            raise InvalidArgument(f"sample_weights[{bad[0]}] is {weights[bad[0]]}; weights "
                                  "must be finite and at least 0")
        if not weights.sum() > 0.0:
            raise InvalidArgument("sample_weights are all 0; at least one row must count")
        weights = np.ascontiguousarray(weights)
    vx = vt = None
    if validation is not None:
        if options.validation_fraction:
            raise InvalidArgument("validation_fraction is set and so are validation_inputs and "
                                  "validation_targets; give one or the other")
        vx = as_matrix(validation[0], arch.layer_sizes[0], "validation_inputs", min_rows=1)
        vt = as_matrix(validation[1], arch.layer_sizes[-1], "validation_targets", min_rows=1)
        if vx.shape[0] != vt.shape[0]:
            raise InvalidArgument(f"validation_inputs has {vx.shape[0]} rows but "
                                  f"validation_targets has {vt.shape[0]}; give one target row "
                                  "per input row")
    elif options.validation_fraction:
        kept, held = holdout(t, options.validation_fraction, options.seed, arch)
        vx, vt = x[held], t[held]
        x, t = np.ascontiguousarray(x[kept]), np.ascontiguousarray(t[kept])
        if weights is not None:
            weights = np.ascontiguousarray(weights[kept])  # validation is not weighted
            if not weights.sum() > 0.0:
                raise InvalidArgument("sample_weights are 0 on every row left to train on "
                                      "once validation_fraction's rows are held out")
    data = Data(x, t, weights, vx, vt)
    _check_monitor(arch, options, data)
    return data


def _check_monitor(arch: Architecture, options: TrainOptions, data: Data) -> None:
    monitor = options.early_stopping.monitor
    if monitor in (Monitor.VALIDATION_LOSS, Monitor.VALIDATION_ACCURACY) and not data.validated:
        raise InvalidArgument(f"early_stopping.monitor is {monitor.name}, but there is no "
                              "validation data: give validation_inputs and validation_targets "
                              "or validation_fraction, or monitor LOSS")
    if monitor is Monitor.VALIDATION_ACCURACY and not classes_of(arch):
        raise InvalidArgument(f"early_stopping.monitor is VALIDATION_ACCURACY, but the model's "
                              f"{arch.output_activation.name} output has no classes (accuracy "
                              "is for SOFTMAX and SIGMOID outputs); monitor VALIDATION_LOSS")


def monitored(options: TrainOptions, data: Data) -> tuple[Monitor, Monitor]:
    """(early stopping's monitor, PLATEAU's): unset, the validation loss when there is
    validation data, else the training loss; PLATEAU watches early stopping's unless that is
    an accuracy (it lowers the rate on a loss)."""
    default = Monitor.VALIDATION_LOSS if data.validated else Monitor.LOSS
    stopping = options.early_stopping.monitor or default
    return stopping, stopping if stopping is not Monitor.VALIDATION_ACCURACY else default


class _Best:
    """Early stopping's bookkeeping. With restore_best, the best epoch's weights and optimizer
    state are copied (only on an improvement) into buffers made once."""

    def __init__(self, stopping: EarlyStopping, monitor: Monitor, params, state):
        self.stopping, self.monitor = stopping, monitor
        self.restore = stopping.restore_best is not False
        self.sign = -1.0 if monitor is Monitor.VALIDATION_ACCURACY else 1.0  # minimised
        self.value, self.epoch, self.wait, self.loss = math.inf, 0, 0, 0.0
        self.params, self.state, self.steps = np.empty_like(params), np.empty_like(state), 0

    def update(self, value: float, epoch: int, loss: float, params, state, steps) -> bool:
        """After an epoch; True when it is time to stop."""
        value = self.sign * value
        if value < self.value - self.stopping.min_delta:
            self.value, self.epoch, self.wait, self.loss = value, epoch, 0, loss
            if self.restore:
                np.copyto(self.params, params)
                np.copyto(self.state, state)
                self.steps = steps
            return False
        self.wait += 1
        return self.wait >= self.stopping.patience


def train(net: Network, inputs, targets, options: TrainOptions,
          state: OptimizerState = NO_STATE,
          should_stop: Callable[[], bool] = lambda: False,
          clock: Callable[[], float] = time.monotonic,
          events: Events = QUIET, *, sample_weights=None, validation=None,
          velocity: np.ndarray | None = None) -> Iterator[Progress]:
    """Trains a copy of net's parameters; yields Progress every report_every epochs (or about
    once a second) and once at the end (done=True). Each chunk is reported to `events`.

    `state`: the optimizer state to continue from (used when it is options.optimizer's and
    reset_optimizer is off; `velocity` is the same for SGD, as a bare array). `sample_weights`
    [n]; `validation` (inputs, targets), or options.validation_fraction.

    Raises InvalidArgument for arrays that do not fit (before any kernel runs), Diverged when an
    epoch's loss is non-finite (nothing after the last Progress is kept) and Cancelled when
    should_stop() turns true between chunks.
    """
    arch = net.arch
    data = prepare(arch, inputs, targets, options, sample_weights, validation)
    if velocity is not None and state is NO_STATE:
        state = OptimizerState.sgd(np.asarray(velocity, dtype=net.params.dtype))
    return _run(net, data, options, state, should_stop, clock, events)


def _run(net, data: Data, options: TrainOptions, start_state: OptimizerState, should_stop,
         clock, events) -> Iterator[Progress]:
    arch, settings = net.arch, options.settings
    x, t = data.inputs, data.targets
    n = x.shape[0]
    batch = max(1, min(options.batch_size, n))
    dtype = net.params.dtype
    params = net.params.copy()
    state, steps = start_state.working(settings.optimizer, params, options.reset_optimizer)
    steps = np.array([steps], dtype=np.int64)
    one_sample = batch == 1 and settings.one_sample and data.weights is None
    weights = data.weights if data.weights is not None else np.empty(0, dtype=dtype)
    grad = np.zeros_like(params)
    work = arch.work_buffers(batch)
    rng = np.random.default_rng(options.seed)
    # Asked once: the whole call runs on one tier (jit/room.py), whatever is swapped in
    # meanwhile; asking with `training` is what gets an architecture specialised.
    kernels = jit.kernels_for(arch, training=True)
    evaluate = _Evaluator(arch, kernels, params)
    rates = Rates(options.schedule, options.learning_rate, options.epochs)
    stopping, plateau_monitor = monitored(options, data)
    best = (_Best(options.early_stopping, stopping, params, state)
            if options.early_stopping.on else None)
    each_epoch = data.validated or best is not None or options.schedule.each_epoch
    classifier = classes_of(arch)

    start = clock()
    done_epochs = 0
    rate = rates.rate(0)
    last_report_epoch, last_report_time = 0, start
    chunk = 1  # epochs per kernel call; grows until a call takes about CHUNK_SECONDS
    max_chunk = max(1, MAX_ORDER_ENTRIES // n) if options.shuffle else 1 << 30
    while True:
        if should_stop():
            raise Cancelled(f"training stopped after {done_epochs} epochs; the model keeps its "
                            "last committed version")
        new_rate = rates.rate(done_epochs)
        if new_rate != rate and settings.optimizer is Optimizer.SGD:
            # velocity = lr x torch's buffer (optimizers.py): the buffer stays, the rate moves
            state[0] *= new_rate / rate
        rate = new_rate
        epochs = min(chunk, options.epochs - done_epochs, rates.same_until(done_epochs)
                     - done_epochs, 1 if each_epoch else chunk)
        if options.report_every:
            epochs = min(epochs, last_report_epoch + options.report_every - done_epochs)
        orders = (np.stack([rng.permutation(n) for _ in range(epochs)]) if options.shuffle
                  else NO_ORDER)
        losses = np.empty(epochs, dtype=np.float64)
        began = clock()
        if one_sample:
            ran = kernels.sample_epochs(params, state[0], work, x, t, orders, rate,
                                        settings.momentum, options.target_loss, losses)
            steps[0] += ran * n
        else:
            ran = kernels.batch_epochs(params, state, steps, grad, work, x, t, weights, orders,
                                       batch, int(settings.optimizer), settings.hyper(rate),
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
                           f"{rate}). The model keeps its last committed weights")
        # Far below the aim, grow 8-fold (still under half of it): each chunk costs some tens
        # of microseconds of Python, a few percent of a short fast run if taken 2-fold.
        if took < CHUNK_SECONDS / 16:
            chunk = min(chunk * 8, max_chunk)
        elif took < CHUNK_SECONDS / 2:
            chunk = min(chunk * 2, max_chunk)
        elif took > CHUNK_SECONDS * 2 and chunk > 1:
            chunk //= 2

        reason = None
        validation_loss = validation_accuracy = None
        if data.validated:
            validation_loss, validation_accuracy = evaluate(data.validation_inputs,
                                                            data.validation_targets, None)
        if each_epoch:  # one epoch was run: what watches epochs watches this one
            values = {Monitor.LOSS: loss, Monitor.VALIDATION_LOSS: validation_loss,
                      Monitor.VALIDATION_ACCURACY: validation_accuracy}
            if best is not None and best.update(values[stopping], done_epochs, loss, params,
                                                state, int(steps[0])):
                reason = StopReason.EARLY_STOPPING
            if not rates.observe(values[plateau_monitor]) and reason is None:
                reason = StopReason.MIN_LEARNING_RATE
        if options.target_loss > 0.0 and loss <= options.target_loss:
            reason = StopReason.TARGET_LOSS
        elif reason is None and done_epochs >= options.epochs:
            reason = StopReason.EPOCHS

        now = clock()
        due = (done_epochs - last_report_epoch >= options.report_every if options.report_every
               else now - last_report_time >= AUTO_REPORT_SECONDS)
        if reason is not None or due:
            last_report_epoch, last_report_time = done_epochs, now
            accuracy = (evaluate(x, t, data.weights)[1] if classifier else None)
            kept_params, kept_state, kept_steps, kept_loss = params, state, int(steps[0]), loss
            if reason is not None and best is not None and best.epoch and best.restore:
                kept_params, kept_state, kept_steps, kept_loss = (best.params, best.state,
                                                                  best.steps, best.loss)
            yield Progress(done_epochs, loss, done_epochs * n, now - start, kept_params.copy(),
                           OptimizerState.of(settings.optimizer, kept_state, kept_steps),
                           reason is not None, rate, validation_loss, accuracy,
                           validation_accuracy, best.epoch if best is not None else 0, reason,
                           kept_loss)
        if reason is not None:
            return


class _Evaluator:
    """evaluate_rows on a set of rows at the current parameters: (mean loss, accuracy or None
    for a model without classes), weighted when weights are given."""

    def __init__(self, arch: Architecture, kernels, params: np.ndarray):
        self.arch, self.kernels, self.params = arch, kernels, params
        self.totals = np.zeros(3, dtype=np.float64)
        self.work = arch.work_buffers(PREDICT_BLOCK)
        self.no_weights = np.empty(0, dtype=params.dtype)
        self.classifier = classes_of(arch)

    def __call__(self, inputs, targets, weights) -> tuple[float, float | None]:
        self.kernels.evaluate_rows(self.totals, inputs, targets,
                                   self.no_weights if weights is None else weights, self.params,
                                   self.work)
        loss, right, count = (float(v) for v in self.totals)
        return loss / count, (right / count if self.classifier else None)
