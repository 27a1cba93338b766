"""Protobuf <-> numpy and domain objects, both ways, for jitnet.v1, and nothing else.

Tensors: exactly one of `values` or `raw` (little-endian float64) carries the data; a tensor with
a zero dimension carries neither. Decoded arrays are native float64 and C-contiguous, fresh and
writable, except where a caller that only reads asks for a read-only view of the raw bytes
(Predict): server/warmup.py compiles the kernels for exactly these array types. Enum fields use
api.md's defaults for UNSPECIFIED and reject numbers the proto does not define.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence

import numpy as np
from google.protobuf import timestamp_pb2

from jitnet.v1 import jitnet_pb2 as pb

from ...engine.model import (
    Activation,
    Architecture,
    Dtype,
    GradientCheck,
    GradientMode,
    Init,
    Loss,
    StepResult,
)
from ...engine.optimizers import Optimizer
from ...engine.schedules import Kind, Schedule
from ...engine.training import EarlyStopping, Monitor, Progress, TrainOptions
from ...errors import InvalidArgument
from ...store import validate_id

_LE_F8 = np.dtype("<f8")
_FLOAT64 = np.dtype(np.float64)
# Every tensor of the API is [rows, columns] or [n]. More dimensions are refused before numpy
# sees them: it fails (INTERNAL) past 64 dimensions, or on a zero-size shape whose other
# dimensions multiply past its index range.
MAX_DIMS = 2


# -- tensors ----------------------------------------------------------------------------------


def rows_of(tensor: pb.Tensor) -> int:
    """The first dimension, read before anything is decoded (for the row limits)."""
    return int(tensor.shape[0]) if len(tensor.shape) else 0


def to_array(tensor: pb.Tensor, field: str, raw: bytes | None = None, *,
             read_only: bool = False) -> np.ndarray:
    """The tensor's data as a fresh float64 array of its shape. Checks sizes before decoding.

    `raw`: `tensor.raw` when the caller has read it already. Every read of a bytes field makes a
    new copy of it (0.5 MB for 1,000 digits rows), so the hot path reads it once.
    `read_only`: raw [rows, columns] may come back as a read-only view of `raw` itself, one copy
    of the data (and its page faults) fewer, for a caller that only reads it (Predict)."""
    if raw is None:
        raw = tensor.raw
    n_values = len(tensor.values)
    dims = tensor.shape
    if raw and not n_values and len(dims) == 2:
        # The common case (the jitnet client sends raw [rows, columns]), checked as below.
        rows, columns = dims
        if len(raw) == 8 * rows * columns:
            values = np.frombuffer(raw, dtype=_LE_F8)
            if not (read_only and values.dtype is _FLOAT64 and values.flags.aligned):
                values = values.astype(np.float64)  # not this host's float64, or writable
            return values.reshape(rows, columns)
    shape = [int(d) for d in dims]
    has_values, has_raw = n_values > 0, len(raw) > 0
    if has_values and has_raw:
        raise InvalidArgument(f"{field} sets both values and raw; send the data in exactly one")
    if not shape:
        raise InvalidArgument(f"{field}.shape is empty; give the tensor's dimensions, e.g. "
                              "[rows, columns]")
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(f"{field}.shape has {len(shape)} dimensions; tensors here are "
                              "[rows, columns] or [n]")
    count = math.prod(shape)
    if count == 0:
        if has_values or has_raw:
            raise InvalidArgument(f"{field} has shape {shape} with a zero dimension, so it "
                                  "carries no data, but values or raw is set")
        return np.zeros(shape, dtype=np.float64)
    if has_raw:
        if len(raw) != 8 * count:
            raise InvalidArgument(f"{field}.raw has {len(raw)} bytes; shape {shape} "
                                  f"needs 8 x {count} = {8 * count} (little-endian float64)")
        array = np.frombuffer(raw, dtype=_LE_F8).astype(np.float64, copy=True)
    else:
        if n_values != count:
            raise InvalidArgument(f"{field}.values has {n_values} numbers; shape "
                                  f"{shape} needs {count}")
        array = np.fromiter(tensor.values, dtype=np.float64, count=count)
    return array.reshape(shape)


def from_array(array: np.ndarray, raw: bool) -> pb.Tensor:
    tensor = pb.Tensor()
    write_array(tensor, array, raw)
    return tensor


def write_array(tensor: pb.Tensor, array: np.ndarray, raw: bool) -> None:
    """Fills an empty Tensor in place (a reply's field: building a Tensor and assigning it to
    the reply would copy the data once more)."""
    array = np.asarray(array, dtype=np.float64)
    tensor.shape.extend(array.shape)
    if array.size:
        if raw:
            tensor.raw = np.ascontiguousarray(array, dtype=_LE_F8).tobytes()
        else:
            tensor.values.extend(array.ravel().tolist())


def vector(values: Sequence[float]) -> np.ndarray:
    """A repeated double field (Step's input and target) as a fresh float64 array."""
    return np.fromiter(values, dtype=np.float64, count=len(values))


# -- enums and the architecture -----------------------------------------------------------------


def _enum_from_proto(value: int, proto_enum, kind, default, field: str):
    """A proto enum field as the domain's enum member: 0 (UNSPECIFIED) is `default`; numbers
    the proto lacks are rejected."""
    if value == 0:
        return default
    if value not in proto_enum.values():
        names = ", ".join(n for n in proto_enum.keys() if not n.endswith("_UNSPECIFIED"))
        raise InvalidArgument(f"{field} is {value}, not a value of {proto_enum.DESCRIPTOR.name}; "
                              f"use one of {names}")
    prefix = _PREFIX[proto_enum.DESCRIPTOR.name]
    return kind[proto_enum.Name(value)[len(prefix):]]


_PREFIX = {"Activation": "ACTIVATION_", "Loss": "LOSS_", "Init": "INIT_",
           "GradientMode": "GRADIENT_MODE_", "Dtype": "DTYPE_", "Optimizer": "OPTIMIZER_",
           "Kind": "KIND_", "Monitor": "MONITOR_"}


def architecture_from_proto(arch: pb.Architecture, field: str = "architecture") -> Architecture:
    """api.md's defaults: sigmoid, MSE, EXACT, bias on. Model validates the rest."""
    if not len(arch.layer_sizes):
        raise InvalidArgument(f"{field}.layer_sizes is empty; give [inputs, hidden..., outputs], "
                              "e.g. [2, 4, 1]")
    return Architecture(
        layer_sizes=tuple(int(s) for s in arch.layer_sizes),
        hidden_activation=_enum_from_proto(arch.hidden_activation, pb.Activation, Activation,
                                Activation.SIGMOID, f"{field}.hidden_activation"),
        output_activation=_enum_from_proto(arch.output_activation, pb.Activation, Activation,
                                Activation.SIGMOID, f"{field}.output_activation"),
        loss=_enum_from_proto(arch.loss, pb.Loss, Loss, Loss.MSE, f"{field}.loss"),
        bias=arch.bias if arch.HasField("bias") else True,
        gradient_mode=_enum_from_proto(arch.gradient_mode, pb.GradientMode, GradientMode,
                            GradientMode.EXACT, f"{field}.gradient_mode"),
        dtype=_enum_from_proto(arch.dtype, pb.Dtype, Dtype, Dtype.FLOAT64, f"{field}.dtype"),
    )


def bias_of(arch: pb.Architecture) -> bool:
    return arch.bias if arch.HasField("bias") else True


def architecture_to_proto(arch: Architecture) -> pb.Architecture:
    return pb.Architecture(
        layer_sizes=arch.layer_sizes,
        hidden_activation=pb.Activation.Value("ACTIVATION_" + arch.hidden_activation.name),
        output_activation=pb.Activation.Value("ACTIVATION_" + arch.output_activation.name),
        loss=pb.Loss.Value("LOSS_" + arch.loss.name),
        bias=arch.bias,
        gradient_mode=pb.GradientMode.Value("GRADIENT_MODE_" + arch.gradient_mode.name),
        # float64 is the unset default, so float64 models answer as they did before dtypes
        dtype=pb.DTYPE_UNSPECIFIED if arch.dtype == Dtype.FLOAT64 else pb.DTYPE_FLOAT32,
    )


# A model's metadata (CreateModelRequest.metadata): bounded, so that a model's stored form and
# every GetModel reply stay small whatever a client sends.
MAX_METADATA_ENTRIES = 64
MAX_METADATA_ENTRY_BYTES = 4096


def metadata_from_proto(metadata, field: str = "metadata") -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidArgument(f"{field} has {len(metadata)} entries; at most "
                              f"{MAX_METADATA_ENTRIES} are kept with a model")
    for key, value in metadata.items():
        if not key:
            raise InvalidArgument(f"{field} has an empty key; name every entry")
        size = len(key.encode()) + len(value.encode())
        if size > MAX_METADATA_ENTRY_BYTES:
            raise InvalidArgument(f"{field}[{key[:40]!r}] is {size} bytes with its key; at most "
                                  f"{MAX_METADATA_ENTRY_BYTES} per entry")
    return dict(metadata)


def init_from_proto(value: int) -> Init:
    return _enum_from_proto(value, pb.Init, Init, Init.XAVIER, "init")


def layers_from_proto(layers: Sequence[pb.Layer]) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Explicit weights: (W [fan_out, fan_in], b or None) per layer; Network checks shapes."""
    out = []
    for k, layer in enumerate(layers):
        if not layer.HasField("weights"):
            raise InvalidArgument(f"layers[{k}].weights is missing")
        weights = to_array(layer.weights, f"layers[{k}].weights")
        biases = (to_array(layer.biases, f"layers[{k}].biases") if layer.HasField("biases")
                  else None)
        out.append((weights, biases))
    return out


def layer_to_proto(weights: np.ndarray, biases: np.ndarray | None, raw: bool) -> pb.Layer:
    layer = pb.Layer(weights=from_array(weights, raw))
    if biases is not None:
        layer.biases.CopyFrom(from_array(biases, raw))
    return layer


# -- models -------------------------------------------------------------------------------------


def timestamp(ns: int) -> timestamp_pb2.Timestamp:
    seconds, nanos = divmod(int(ns), 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def model_to_proto(record, include_weights: bool = False, raw: bool = False) -> pb.Model:
    """A store record (id, arch, version, counters, times, params) as a Model message."""
    model = pb.Model(
        id=record.id,
        architecture=architecture_to_proto(record.arch),
        version=record.version,
        epochs_trained=record.epochs_trained,
        iterations=record.iterations,
        last_loss=record.last_loss,
        create_time=timestamp(record.create_time_ns),
        update_time=timestamp(record.update_time_ns),
        parameter_count=record.arch.n_params,
        optimizer=(pb.OPTIMIZER_UNSPECIFIED if record.optimizer.optimizer is None
                   else pb.Optimizer.Value("OPTIMIZER_" + record.optimizer.optimizer.name)),
        metadata=record.metadata,
    )
    if include_weights:
        model.layers.extend(layer_to_proto(w, b, raw) for w, b in record.network.layers())
    return model


# -- Train, Step and CheckGradients -------------------------------------------------------------


def _optional(message, field: str) -> float | None:
    return getattr(message, field) if message.HasField(field) else None


def train_options(request: pb.TrainRequest) -> TrainOptions:
    """The options of a Train; the engine checks them (naming each field)."""
    schedule = request.schedule
    stopping = request.early_stopping
    return TrainOptions(
        epochs=int(request.epochs),
        learning_rate=float(request.learning_rate),
        batch_size=int(request.batch_size),
        momentum=float(request.momentum),
        shuffle=bool(request.shuffle),
        seed=int(request.seed),
        target_loss=float(request.target_loss),
        report_every=int(request.report_every),
        optimizer=_enum_from_proto(request.optimizer, pb.Optimizer, Optimizer, Optimizer.SGD,
                                   "optimizer"),
        beta1=_optional(request, "beta1"),
        beta2=_optional(request, "beta2"),
        epsilon=_optional(request, "epsilon"),
        weight_decay=float(request.weight_decay),
        nesterov=bool(request.nesterov),
        schedule=Schedule(
            kind=_enum_from_proto(schedule.kind, pb.LearningRateSchedule.Kind, Kind,
                                  Kind.CONSTANT, "schedule.kind"),
            step_epochs=int(schedule.step_epochs), gamma=float(schedule.gamma),
            patience=int(schedule.patience),
            min_learning_rate=float(schedule.min_learning_rate)),
        validation_fraction=float(request.validation_fraction),
        early_stopping=EarlyStopping(
            patience=int(stopping.patience), min_delta=float(stopping.min_delta),
            restore_best=_optional(stopping, "restore_best"),
            monitor=_enum_from_proto(stopping.monitor, pb.Monitor, Monitor, None,
                                     "early_stopping.monitor")),
        reset_optimizer=bool(request.reset_optimizer),
    )


def sample_weights_from_proto(request: pb.TrainRequest) -> np.ndarray | None:
    """TrainRequest.sample_weights as a [n] array, None when the request has none."""
    if not request.HasField("sample_weights"):
        return None
    weights = to_array(request.sample_weights, "sample_weights")
    return weights.reshape(-1) if weights.ndim == 2 and weights.shape[1] == 1 else weights


def validation_from_proto(request: pb.TrainRequest) -> tuple[np.ndarray, np.ndarray] | None:
    """(validation inputs, targets) when the request sends them, both or neither."""
    given = [f for f in ("validation_inputs", "validation_targets") if request.HasField(f)]
    if not given:
        return None
    if len(given) == 1:
        missing = ({"validation_inputs", "validation_targets"} - set(given)).pop()
        raise InvalidArgument(f"{given[0]} is set but {missing} is not; a validation set "
                              "needs both")
    return (to_array(request.validation_inputs, "validation_inputs"),
            to_array(request.validation_targets, "validation_targets"))


def train_response(progress: Progress, version: int) -> pb.TrainResponse:
    response = pb.TrainResponse(
        epoch=progress.epoch,
        loss=progress.loss,
        iterations=progress.iterations,
        elapsed_seconds=progress.elapsed_seconds,
        model_version=version,
        done=progress.done,
        learning_rate=progress.learning_rate,
        best_epoch=progress.best_epoch,
        stop_reason=0 if progress.stop_reason is None else int(progress.stop_reason),
    )
    for field in ("validation_loss", "accuracy", "validation_accuracy"):
        value = getattr(progress, field)
        if value is not None:
            setattr(response, field, value)
    return response


def step_response(result: StepResult, version: int) -> pb.StepResponse:
    response = pb.StepResponse(loss=result.loss, model_version=version)
    for trace in result.layers:
        response.layers.append(pb.LayerTrace(
            net=trace.net.tolist(),
            output=trace.output.tolist(),
            error=trace.error.tolist(),
            delta=trace.delta.tolist(),
            updated=layer_to_proto(trace.weights, trace.biases, raw=False),
            before=layer_to_proto(trace.weights_before, trace.biases_before, raw=False),
        ))
    return response


def gradient_check_response(result: GradientCheck, version: int) -> pb.CheckGradientsResponse:
    response = pb.CheckGradientsResponse(loss=result.loss,
                                         max_relative_error=result.max_relative_error,
                                         epsilon=result.epsilon, model_version=version)
    for layer in result.layers:
        response.layers.append(pb.LayerGradients(
            analytic=layer_to_proto(layer.weights, layer.biases, raw=False),
            numeric=layer_to_proto(layer.numeric_weights, layer.numeric_biases, raw=False),
            max_relative_error=layer.max_relative_error,
        ))
    return response


# -- ListModels page tokens -------------------------------------------------------------------


def page_token(last_id: str) -> str:
    """The token of the page after the model `last_id`: opaque to clients."""
    return base64.urlsafe_b64encode(b"after:" + last_id.encode()).decode().rstrip("=")


def page_start(token: str) -> str:
    """The id after which a page starts ("" for the first page, token "")."""
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        text = ""
    if not text.startswith("after:"):
        raise InvalidArgument("page_token is not one this server gave out; use the "
                              "next_page_token of the previous ListModels reply")
    return validate_id(text[len("after:"):], "page_token")
