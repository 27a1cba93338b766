"""A network: its architecture and one flat parameter buffer, with validation before any kernel.

`Architecture` says what the network is; `Network` holds the weights and runs Predict and Step.
Training many epochs lives in training.py. Nothing here knows about protobuf or disk.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import threading
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import NamedTuple

import numpy as np

from ..errors import Cancelled, Diverged, InvalidArgument
from . import jit, kernels


class Activation(enum.IntEnum):
    SIGMOID = kernels.SIGMOID
    TANH = kernels.TANH
    RELU = kernels.RELU
    LINEAR = kernels.LINEAR
    SOFTMAX = kernels.SOFTMAX  # output layer only


class Loss(enum.IntEnum):
    MSE = kernels.MSE  # 0.5 * sum((t - y)^2), the article's
    CROSS_ENTROPY = kernels.CROSS_ENTROPY


class Init(enum.IntEnum):
    UNIFORM = 1  # U[0, 1) for weights and biases, the article's
    XAVIER = 2  # U(-sqrt(6 / (fan_in + fan_out)), +...), biases 0
    HE = 3  # N(0, 2 / fan_in), biases 0


class GradientMode(enum.IntEnum):
    EXACT = kernels.EXACT
    ARTICLE = kernels.ARTICLE  # f'(y) instead of f'(net): the article's arithmetic


class Dtype(enum.IntEnum):
    """The dtype of a network's parameters and arithmetic (the proto's Dtype numbers)."""

    FLOAT64 = 1
    FLOAT32 = 2

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(np.float64 if self is Dtype.FLOAT64 else np.float32)


HIDDEN_ACTIVATIONS = (Activation.SIGMOID, Activation.TANH, Activation.RELU, Activation.LINEAR)
OUTPUT_ACTIVATIONS = (Activation.SIGMOID, Activation.LINEAR, Activation.SOFTMAX)

# Samples in their stored order (the kernels' `orders` argument with no columns). Writable, like
# the shuffled orders, so that numba compiles one variant of the kernels for both (a read-only
# array is another argument type); it has no element to change.
NO_ORDER = np.empty((0, 0), dtype=np.int64)

# Rows a Predict pushes through the layers at once; bounds the scratch memory of a call.
PREDICT_BLOCK = 256

# The gradient check (the proto's CheckGradientsResponse). A central difference is off by
# about h^2 (the loss's curvature) plus the rounding of the loss over 2h. Measured over the
# engine tests' grid of activations and losses, trained XOR and 64-64-10 digits nets: h = 1e-4
# gave the smallest worst relative error (2e-6; under 6e-7 but for gradients below 1e-6),
# 1e-3 up to 1e-5 (curvature), 1e-5 and 1e-6 up to 4e-5 and 5e-4 (rounding). Gradients under
# the floor are compared against it: a finite difference cannot resolve them much better.
DEFAULT_EPSILON = 1e-4
RELATIVE_ERROR_FLOOR = 1e-6
# A gradient check runs its finite differences in chunks of about this many multiply-adds,
# checking for cancellation between them.
CHECK_CHUNK_WORK = 4_000_000

_FLOAT64 = np.dtype(np.float64)
_room = jit.room  # read on every one-sample Predict: its generation says when to rebind


def _enum_member(kind: type[enum.IntEnum], value, field: str):
    """kind(value), or InvalidArgument naming the field and the members it may be."""
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(m.name for m in kind)
        raise InvalidArgument(f"{field} {value!r} is not one of {names}") from None


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a network is. Raises InvalidArgument, naming the field, when it cannot be built."""

    layer_sizes: tuple[int, ...]
    hidden_activation: Activation = Activation.SIGMOID
    output_activation: Activation = Activation.SIGMOID
    loss: Loss = Loss.MSE
    bias: bool = True
    gradient_mode: GradientMode = GradientMode.EXACT
    dtype: Dtype = Dtype.FLOAT64

    def __post_init__(self):
        sizes = tuple(self.layer_sizes)
        if len(sizes) < 2:
            raise InvalidArgument(
                f"layer_sizes needs at least two entries (inputs and outputs), got {list(sizes)}"
            )
        for position, size in enumerate(sizes):
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
                raise InvalidArgument(
                    f"layer_sizes[{position}] is {size!r}; every layer needs at least 1 neuron"
                )
        object.__setattr__(self, "layer_sizes", tuple(int(s) for s in sizes))
        hidden = _enum_member(Activation, self.hidden_activation, "hidden_activation")
        output = _enum_member(Activation, self.output_activation, "output_activation")
        loss = _enum_member(Loss, self.loss, "loss")
        mode = _enum_member(GradientMode, self.gradient_mode, "gradient_mode")
        dtype = _enum_member(Dtype, self.dtype, "dtype")
        if dtype is not Dtype.FLOAT64:  # until the kernels compile per dtype (issue 22)
            raise InvalidArgument(f"dtype {dtype.name} is not served yet; use FLOAT64")
        if hidden not in HIDDEN_ACTIVATIONS:
            raise InvalidArgument(
                f"hidden_activation {hidden.name} is for the output layer only; use SIGMOID, "
                "TANH, RELU or LINEAR"
            )
        if output not in OUTPUT_ACTIVATIONS:
            raise InvalidArgument(
                f"output_activation {output.name} is not supported; use SIGMOID, LINEAR or SOFTMAX"
            )
        if loss == Loss.CROSS_ENTROPY and output not in (Activation.SIGMOID, Activation.SOFTMAX):
            raise InvalidArgument(
                "loss CROSS_ENTROPY needs a SOFTMAX or SIGMOID output_activation, "
                f"not {output.name}; use LOSS_MSE for a {output.name} output"
            )
        for name, value in (("hidden_activation", hidden), ("output_activation", output),
                            ("loss", loss), ("gradient_mode", mode), ("bias", bool(self.bias)),
                            ("dtype", dtype)):
            object.__setattr__(self, name, value)

    @property
    def n_layers(self) -> int:
        """Layers of neurons (weight matrices): len(layer_sizes) - 1."""
        return len(self.layer_sizes) - 1

    @functools.cached_property
    def layout(self) -> np.ndarray:
        """int64 [n_layers, 5]: fan_in, fan_out, where W and b start in params, first unit."""
        rows, at, unit = [], 0, self.layer_sizes[0]
        for fan_in, fan_out in pairwise(self.layer_sizes):
            w_at = at
            at += fan_in * fan_out
            b_at = at if self.bias else -1
            at += fan_out if self.bias else 0
            rows.append((fan_in, fan_out, w_at, b_at, unit))
            unit += fan_out
        layout = np.array(rows, dtype=np.int64)
        layout.setflags(write=False)
        return layout

    @functools.cached_property
    def n_params(self) -> int:
        return sum(o * i + (o if self.bias else 0)
                   for i, o in pairwise(self.layer_sizes))

    @property
    def n_units(self) -> int:
        return sum(self.layer_sizes)

    @functools.cached_property
    def kinds(self) -> np.ndarray:
        """int64 [hidden, output, loss, gradient mode], as the kernels take them."""
        kinds = np.array([self.hidden_activation, self.output_activation, self.loss,
                          self.gradient_mode], dtype=np.int64)
        kinds.setflags(write=False)
        return kinds

    def work_buffers(self, rows: int) -> np.ndarray:
        """Scratch for `rows` samples at once: nets, outputs, errors, deltas, targets, and the
        rows' shares of a batch (sample weights; kernels.py's `s`)."""
        return np.zeros((6, rows * self.n_units), dtype=self.dtype.numpy)

    def describe(self) -> str:
        sizes = "-".join(map(str, self.layer_sizes))
        return (f"{sizes} {self.hidden_activation.name.lower()}/"
                f"{self.output_activation.name.lower()} {self.loss.name.lower()}"
                f"{'' if self.bias else ' no-bias'} {self.gradient_mode.name.lower()}")


def as_matrix(values, columns: int, field: str, *, min_rows: int = 0) -> np.ndarray:
    """Checks and converts an [n, columns] float64 array: finite, the right width."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1 and columns and array.size == columns:
        array = array.reshape(1, columns)
    if array.ndim != 2:
        raise InvalidArgument(f"{field} must be a 2-D [rows, {columns}] array, got shape "
                              f"{list(array.shape)}")
    if array.shape[1] != columns:
        raise InvalidArgument(f"{field} has {array.shape[1]} columns; the model expects {columns}")
    if array.shape[0] < min_rows:
        raise InvalidArgument(f"{field} has {array.shape[0]} rows; at least {min_rows} needed")
    check_finite(array, field)
    return np.ascontiguousarray(array)


def check_finite(array: np.ndarray, field: str) -> None:
    if array.size and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        where = "[" + ", ".join(map(str, bad)) + "]"
        raise InvalidArgument(f"{field}{where} is {array[tuple(bad)]}; values must be finite")


def check_learning_rate(learning_rate: float, field: str = "learning_rate") -> float:
    rate = float(learning_rate)
    if not np.isfinite(rate) or rate <= 0.0:
        raise InvalidArgument(f"{field} is {learning_rate}; it must be a finite number above 0 "
                              "(the article uses 0.001, XOR trains well with 0.5)")
    return rate


def initial_parameters(arch: Architecture, init: Init, seed: int) -> np.ndarray:
    """Seeded initial weights: one seed always gives the same parameters."""
    init = _enum_member(Init, init, "init")
    rng = np.random.default_rng(seed)
    params = np.zeros(arch.n_params, dtype=np.float64)
    for fan_in, fan_out, w_at, b_at, _ in arch.layout:
        w = params[w_at : w_at + fan_out * fan_in]
        if init == Init.UNIFORM:
            w[:] = rng.random(w.size)
            if b_at >= 0:
                params[b_at : b_at + fan_out] = rng.random(fan_out)
        elif init == Init.XAVIER:
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            w[:] = rng.uniform(-limit, limit, w.size)
        else:
            w[:] = rng.normal(0.0, np.sqrt(2.0 / fan_in), w.size)
    return params


class LayerTrace(NamedTuple):
    """One layer of neurons in a Step, as the article writes it out."""

    net: np.ndarray  # weighted sums
    output: np.ndarray  # activations
    error: np.ndarray  # output layer: target - output; hidden: sum(delta_next * w)
    delta: np.ndarray  # error times the activation's derivative
    weights_before: np.ndarray  # [fan_out, fan_in]
    biases_before: np.ndarray | None
    weights: np.ndarray  # after the update
    biases: np.ndarray | None


class StepResult(NamedTuple):
    layers: list[LayerTrace]
    loss: float
    params: np.ndarray  # all parameters after the update


class LayerGradients(NamedTuple):
    """One layer's gradient check: both in the sign of Step's update (the descent direction)."""

    weights: np.ndarray  # analytic, [fan_out, fan_in]: delta_j * input_i
    biases: np.ndarray | None  # analytic: delta_j
    numeric_weights: np.ndarray  # central differences of the loss, same sign
    numeric_biases: np.ndarray | None
    max_relative_error: float


class GradientCheck(NamedTuple):
    layers: list[LayerGradients]
    loss: float  # the sample's loss at the weights checked
    max_relative_error: float
    epsilon: float


def relative_errors(analytic: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    """|a - n| / max(|a|, |n|, RELATIVE_ERROR_FLOOR), element by element."""
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), RELATIVE_ERROR_FLOOR)
    return np.abs(analytic - numeric) / scale


def check_epsilon(epsilon: float | None) -> float:
    """The finite difference's step: None or 0 means DEFAULT_EPSILON."""
    if epsilon is None or epsilon == 0.0:
        return DEFAULT_EPSILON
    h = float(epsilon)
    if not np.isfinite(h) or not 0.0 < h <= 0.1:
        raise InvalidArgument(f"epsilon is {epsilon}; the finite difference's step must be in "
                              f"(0, 0.1], or 0 for the default {DEFAULT_EPSILON:g}")
    return h


class _Scratch(threading.local):
    work = None  # [2, rows * units]: nets and outputs of up to PREDICT_BLOCK samples
    # One sample: (the kernel room's generation when bound, the kernels' predict_sample, its
    # [2, units] buffers). A tuple: one thread-local lookup per call.
    sample = (-1, None, None)


class Network:
    """An architecture and its parameters, stored flat: per layer W [fan_out, fan_in], then b.

    A Network's parameters are never changed in place by Predict or Step, so one Network can be
    shared by any number of threads; training works on a copy (training.py).
    """

    def __init__(self, arch: Architecture, params: np.ndarray):
        params = np.ascontiguousarray(params, dtype=np.float64)
        if params.shape != (arch.n_params,):
            raise InvalidArgument(f"the architecture {arch.describe()} has {arch.n_params} "
                                  f"parameters, got {params.size}")
        self.arch = arch
        self.params = params
        # What predict() needs on every call, looked up once.
        self._sample_shape = (arch.layer_sizes[0],)
        self._sample_output_shape = (1, arch.layer_sizes[-1])
        self._units = arch.n_units
        self._scratch = _Scratch()  # per-thread predict buffers: no allocation per call

    @classmethod
    def initialise(cls, arch: Architecture, init: Init = Init.XAVIER, seed: int = 0) -> Network:
        return cls(arch, initial_parameters(arch, init, seed))

    @classmethod
    def from_layers(cls, arch: Architecture,
                    layers: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> Network:
        """Explicit weights: one (W [fan_out, fan_in], b [fan_out] or None) per layer."""
        if len(layers) != arch.n_layers:
            raise InvalidArgument(f"layers has {len(layers)} entries; layer_sizes "
                                  f"{list(arch.layer_sizes)} needs {arch.n_layers}")
        params = np.empty(arch.n_params, dtype=np.float64)
        for k, ((fan_in, fan_out, w_at, b_at, _), (w, b)) in enumerate(
                zip(arch.layout, layers, strict=True)):
            w = np.asarray(w, dtype=np.float64)
            if w.shape != (fan_out, fan_in):
                raise InvalidArgument(f"layers[{k}].weights has shape {list(w.shape)}; expected "
                                      f"[{fan_out}, {fan_in}] ([fan_out, fan_in])")
            check_finite(w, f"layers[{k}].weights")
            params[w_at : w_at + w.size] = w.ravel()
            if arch.bias:
                if b is None:
                    raise InvalidArgument(f"layers[{k}].biases is missing; the architecture has "
                                          f"biases (set bias false for none)")
                b = np.asarray(b, dtype=np.float64)
                if b.shape != (fan_out,):
                    raise InvalidArgument(f"layers[{k}].biases has shape {list(b.shape)}; "
                                          f"expected [{fan_out}]")
                check_finite(b, f"layers[{k}].biases")
                params[b_at : b_at + fan_out] = b
            elif b is not None and np.asarray(b).size:
                raise InvalidArgument(f"layers[{k}].biases is set, but the architecture has no "
                                      "biases (bias is false)")
        return cls(arch, params)

    def layers(self, params: np.ndarray | None = None):
        """Per layer (W view [fan_out, fan_in], b view or None) into `params` (default: ours)."""
        params = self.params if params is None else params
        out = []
        for fan_in, fan_out, w_at, b_at, _ in self.arch.layout:
            w = params[w_at : w_at + fan_out * fan_in].reshape(fan_out, fan_in)
            b = params[b_at : b_at + fan_out] if b_at >= 0 else None
            out.append((w, b))
        return out

    def predict(self, inputs) -> np.ndarray:
        """outputs [n, n_out] for inputs [n, n_in] (a single sample [n_in] gives [1, n_out])."""
        x = inputs
        # What a server passes (a float64 C array of the right width) takes the same checks as
        # as_matrix in fewer steps: this runs on every Predict, and for one sample its Python
        # work costs as much as the network. Anything else goes through as_matrix.
        if type(x) is np.ndarray and x.dtype is _FLOAT64 and x.shape == self._sample_shape:
            # One sample (strided or not: the kernels take either): this thread's kernel, bound
            # once per kernel generation (jit/room.py), which is tier 1's compiled entry point
            # once it is loaded. np.ndarray(shape) is np.empty without its argument parsing.
            sample = self._scratch.sample
            if sample[0] != _room.generation:
                sample = self._bind_sample()
            out = np.ndarray(self._sample_output_shape)
            # The kernel counts the inputs that are not finite while it reads them (one pass,
            # not a separate np.isfinite scan); then nothing is returned and check_finite says
            # which.
            if sample[1](out, x, self.params, sample[2]):
                check_finite(x, "inputs")
            return out
        if not (type(x) is np.ndarray and x.dtype is _FLOAT64 and x.ndim == 2
                and x.shape[1] == self._sample_shape[0] and x.flags.c_contiguous):
            x = as_matrix(inputs, self._sample_shape[0], "inputs")
        rows = x.shape[0]
        out = np.empty((rows, self._sample_output_shape[1]))
        work = self._scratch.work
        if work is None or work.shape[1] < min(rows, PREDICT_BLOCK) * self._units:
            work = self._scratch.work = np.empty((2, max(1, min(rows, PREDICT_BLOCK))
                                                  * self._units))
        if rows and jit.kernels_for(self.arch).predict_rows(out, x, self.params, work):
            check_finite(x, "inputs")
        return out

    def _bind_sample(self) -> tuple:
        generation = _room.generation  # before asking: a swap after this rebinds again
        sample = (generation, jit.kernels_for(self.arch).predict_sample,
                  np.empty((2, self._units)))
        self._scratch.sample = sample
        return sample

    def step(self, sample_input, target, learning_rate: float) -> StepResult:
        """One iteration on one sample, keeping every intermediate value. Does not change self."""
        arch = self.arch
        rate = check_learning_rate(learning_rate)
        x, t = self._one_sample(sample_input, target)
        params = self.params.copy()
        grad, velocity = np.zeros_like(params), np.zeros_like(params)
        work = arch.work_buffers(1)
        z, a, e, d = work[:4]
        loss = jit.kernels_for(arch).step(params, velocity, grad, work, x, t, rate)
        if not np.isfinite(params).all():
            raise Diverged(f"learning_rate {learning_rate} makes the weights overflow; lower it")
        before, after = self.layers(), self.layers(params)
        traces = []
        for (_, fan_out, _, _, u_at), (w0, b0), (w1, b1) in zip(arch.layout, before, after,
                                                                 strict=True):
            span = slice(u_at, u_at + fan_out)
            traces.append(LayerTrace(z[span].copy(), a[span].copy(), e[span].copy(),
                                     d[span].copy(), w0.copy(), None if b0 is None else b0.copy(),
                                     w1, b1))
        return StepResult(traces, float(loss), params)

    def check_gradients(self, sample_input, target, epsilon: float | None = None, *,
                        should_stop: Callable[[], bool] = lambda: False) -> GradientCheck:
        """For one sample, the backward pass's gradient of every parameter beside a central
        finite difference of the loss, both as the descent direction (minus dLoss/dp, the sign
        of Step's update). Two forward passes per parameter, in chunks; raises Cancelled when
        should_stop() turns true between chunks. Does not change self."""
        arch = self.arch
        h = check_epsilon(epsilon)
        x, t = self._one_sample(sample_input, target)
        params = self.params.copy()  # the finite differences move one parameter at a time
        analytic, velocity = np.zeros_like(params), np.zeros_like(params)
        z, a, e, d, t_buf, s = arch.work_buffers(1)
        # Learning rate 0: forward, loss and backward into `analytic`, no update. It also
        # leaves the sample in a and t_buf, where finite_differences reads it.
        loss = kernels.iteration(params, velocity, analytic, z, a, e, d, t_buf, s, arch.layout,
                                 arch.kinds, x, t, NO_ORDER, 0, 0, 1, 0.0, 0.0)
        if not np.isfinite(loss):
            raise InvalidArgument(f"the loss of this sample is {loss} at the model's weights; "
                                  "its gradient cannot be checked")
        numeric = np.zeros_like(params)
        chunk = max(1, CHECK_CHUNK_WORK // (2 * arch.n_params))
        for first in range(0, arch.n_params, chunk):
            if should_stop():
                raise Cancelled(f"the gradient check stopped after {first} of {arch.n_params} "
                                "parameters: the call was cancelled or its deadline passed")
            kernels.finite_differences(numeric, params, z, a, e, d, t_buf, arch.layout,
                                       arch.kinds, first, min(first + chunk, arch.n_params), h)
        errors = relative_errors(analytic, numeric)
        layers = []
        for (w, b), (nw, nb), (ew, eb) in zip(self.layers(analytic), self.layers(numeric),
                                              self.layers(errors), strict=True):
            worst = max(float(ew.max(initial=0.0)), 0.0 if eb is None else float(eb.max()))
            layers.append(LayerGradients(w, b, nw, nb, worst))
        return GradientCheck(layers, float(loss), float(errors.max(initial=0.0)), h)

    def _one_sample(self, sample_input, target) -> tuple[np.ndarray, np.ndarray]:
        """input and target of Step and CheckGradients as [1, n] rows."""
        x = as_matrix(sample_input, self.arch.layer_sizes[0], "input")
        t = as_matrix(target, self.arch.layer_sizes[-1], "target")
        if x.shape[0] != 1 or t.shape[0] != 1:
            raise InvalidArgument("one sample: input and target must be single rows")
        return x, t

    def __repr__(self) -> str:
        return f"Network({self.arch.describe()}, {self.arch.n_params} parameters)"
