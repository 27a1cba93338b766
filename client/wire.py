"""The client's side of the wire: protobuf messages to and from numpy arrays and results.

Client and AsyncClient build every request here and read every reply here, so both send and
return exactly the same things. Local checks raise InvalidArgument before anything is sent;
a reply the client cannot read raises JitnetError with INTERNAL.

Enum-like arguments accept their short names in any case ("sigmoid", "TANH",
"cross-entropy"), the proto names ("ACTIVATION_RELU") or the proto numbers.
"""

from __future__ import annotations

import datetime as _dt
import math

import grpc
import numpy as np

from jitnet.v1 import jitnet_pb2 as pb

from .errors import InvalidArgument, JitnetError
from .results import GradientCheck, LayerGradients, LayerStep, Model, Progress, StepTrace

# --- enums: accept "sigmoid", "SIGMOID", "ACTIVATION_SIGMOID" or 1 ---------------------------

_ENUMS = {
    # kind: (enum wrapper, prefix, short name when the wire says UNSPECIFIED)
    "activation": (pb.Activation, "ACTIVATION_", "sigmoid"),
    "loss": (pb.Loss, "LOSS_", "mse"),
    "init": (pb.Init, "INIT_", "xavier"),
    "gradient_mode": (pb.GradientMode, "GRADIENT_MODE_", "exact"),
    "dtype": (pb.Dtype, "DTYPE_", "float64"),
    "optimizer": (pb.Optimizer, "OPTIMIZER_", "none"),  # Model.optimizer: none stored yet
}


def enum_short_names(kind: str) -> list[str]:
    """The short names a kind ("activation", "loss", "init", "gradient_mode", "dtype")
    accepts."""
    enum, prefix, _ = _ENUMS[kind]
    return [name[len(prefix):].lower() for name in enum.keys() if not name.endswith("UNSPECIFIED")]


def enum_number(kind: str, value, field: str) -> int:
    """The proto number for a short name, a proto name or a number (None: 0, UNSPECIFIED);
    InvalidArgument naming `field` for anything else."""
    enum, prefix, _ = _ENUMS[kind]
    if value is None:
        return 0
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) in enum.values():
            return int(value)
    else:
        name = str(getattr(value, "name", value)).strip().upper().replace("-", "_")
        if not name.startswith(prefix):
            name = prefix + name
        if name in enum.keys():
            return enum.Value(name)
    raise InvalidArgument(f"{field} {value!r} is not one of {', '.join(enum_short_names(kind))}")


def enum_short_name(kind: str, number: int) -> str:
    """The short name of a proto number: UNSPECIFIED reads as the server's default, and a
    number this client does not know (a newer server's) as its digits."""
    enum, prefix, default = _ENUMS[kind]
    if number == 0:
        return default
    try:
        return enum.Name(number)[len(prefix):].lower()
    except ValueError:
        return str(number)


# --- tensors ---------------------------------------------------------------------------------

def to_tensor(array, *, raw: bool = True, field: str = "tensor") -> pb.Tensor:
    """A float64 numpy array (or nested lists) as a Tensor, raw bytes or values."""
    a = _float_array(array, field)
    tensor = pb.Tensor(shape=a.shape)
    if a.size:
        if raw:
            tensor.raw = np.ascontiguousarray(a, dtype="<f8").tobytes()
        else:
            tensor.values.extend(a.ravel().tolist())
    return tensor


def from_tensor(tensor: pb.Tensor, field: str = "tensor") -> np.ndarray:
    """A Tensor (either form) as a fresh, writable float64 numpy array of its shape."""
    shape = tuple(tensor.shape)
    if tensor.raw:
        array = np.frombuffer(tensor.raw, dtype="<f8").astype(np.float64)
    elif tensor.values:
        array = np.array(tensor.values, dtype=np.float64)
    else:
        array = np.zeros(0, dtype=np.float64)
    if not shape:
        shape = (array.size,)
    if array.size != math.prod(shape):
        raise JitnetError(f"the server sent {field} of shape {list(shape)} with {array.size} "
                          "values", grpc.StatusCode.INTERNAL)
    return array.reshape(shape)


def _float_array(values, field: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{field} must be numbers: {e}") from None


def _matrix(values, field: str) -> np.ndarray:
    """[rows, columns]; a single 1-D sample becomes one row."""
    a = _float_array(values, field)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        raise InvalidArgument(f"{field} must be a 2-D [rows, columns] array, got shape "
                              f"{list(a.shape)}")
    return a


def _targets(values, rows: int) -> np.ndarray:
    """Targets as [rows, outputs]; a 1-D vector of one value per row becomes a column."""
    t = _float_array(values, "targets")
    if t.ndim == 1:
        t = t.reshape(1, -1) if rows == 1 else t.reshape(-1, 1)
    if t.ndim != 2:
        raise InvalidArgument(f"targets must be a 2-D [rows, outputs] array, got shape "
                              f"{list(t.shape)}")
    return t


def _vector(values, field: str) -> list[float]:
    return _float_array(values, field).ravel().tolist()


# --- requests --------------------------------------------------------------------------------

def _layer_proto(layer, k: int, raw: bool) -> pb.Layer:
    """One layer given as W, (W, b) or {"weights": W, "biases": b}."""
    if isinstance(layer, dict):
        w, b = layer.get("weights"), layer.get("biases")
    elif isinstance(layer, (tuple, list)) and len(layer) == 2 and np.ndim(layer[0]) == 2:
        w, b = layer
    else:
        w, b = layer, None
    out = pb.Layer(weights=to_tensor(w, raw=raw, field=f"layers[{k}].weights"))
    if b is not None:
        out.biases.CopyFrom(to_tensor(b, raw=raw, field=f"layers[{k}].biases"))
    return out


def _metadata(metadata) -> dict[str, str]:
    """Strings to strings (the server bounds how many and how long)."""
    if metadata is None:
        return {}
    try:
        items = dict(metadata).items()
    except (TypeError, ValueError):
        raise InvalidArgument(f"metadata must be a mapping of strings to strings, got "
                              f"{type(metadata).__name__}") from None
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgument(f"metadata[{key!r}] is {type(value).__name__}: keys and values "
                                  "are strings (json.dumps anything else)")
    return dict(items)


def create_model_request(layer_sizes, hidden, output, loss, bias, gradient_mode, init, seed,
                         layers, model_id, raw, dtype=None, metadata=None) -> pb.CreateModelRequest:
    try:
        sizes = [int(s) for s in layer_sizes]
    except (TypeError, ValueError):
        raise InvalidArgument(f"layer_sizes must be whole numbers, got {layer_sizes!r}") from None
    if any(s < 1 for s in sizes):
        raise InvalidArgument(f"layer_sizes {sizes}: every layer needs at least 1 neuron")
    arch = pb.Architecture(
        layer_sizes=sizes,
        hidden_activation=enum_number("activation", hidden, "hidden activation"),
        output_activation=enum_number("activation", output, "output activation"),
        loss=enum_number("loss", loss, "loss"), bias=bool(bias),
        gradient_mode=enum_number("gradient_mode", gradient_mode, "gradient_mode"),
        dtype=enum_number("dtype", dtype, "dtype"))
    request = pb.CreateModelRequest(model_id=model_id or "", architecture=arch,
                                    init=enum_number("init", init, "init"), seed=int(seed),
                                    metadata=_metadata(metadata))
    for k, layer in enumerate(layers or ()):
        request.layers.append(_layer_proto(layer, k, raw))
    return request


def train_request(model_id, inputs, targets, epochs, learning_rate, batch_size, momentum, shuffle,
                  seed, target_loss, report_every, raw) -> pb.TrainRequest:
    x = _matrix(inputs, "inputs")
    t = _targets(targets, x.shape[0])
    if int(epochs) < 1:
        raise InvalidArgument(f"epochs is {epochs}; train for at least 1 epoch")
    return pb.TrainRequest(
        model_id=model_id, inputs=to_tensor(x, raw=raw), targets=to_tensor(t, raw=raw),
        epochs=int(epochs), learning_rate=float(learning_rate), batch_size=int(batch_size),
        momentum=float(momentum), shuffle=bool(shuffle), seed=int(seed),
        target_loss=float(target_loss), report_every=int(report_every))


def predict_request(model_id, inputs, raw) -> tuple[pb.PredictRequest, bool]:
    """The request, and whether the inputs were one 1-D sample (its output is 1-D too)."""
    a = _float_array(inputs, "inputs")
    single = a.ndim == 1
    inputs = to_tensor(_matrix(a, "inputs"), raw=raw)
    return pb.PredictRequest(model_id=model_id, inputs=inputs), single


def step_request(model_id, input, target, learning_rate, dry_run) -> pb.StepRequest:
    return pb.StepRequest(model_id=model_id, input=_vector(input, "input"),
                          target=_vector(target, "target"), learning_rate=float(learning_rate),
                          dry_run=bool(dry_run))


def check_gradients_request(model_id, input, target, epsilon) -> pb.CheckGradientsRequest:
    return pb.CheckGradientsRequest(model_id=model_id, input=_vector(input, "input"),
                                    target=_vector(target, "target"),
                                    epsilon=float(epsilon or 0.0))


# --- replies ---------------------------------------------------------------------------------

def predict_outputs(reply: pb.PredictResponse, single: bool, with_version: bool):
    """Outputs [n, n_out] ([n_out] for a single sample), with the model version if asked."""
    out = from_tensor(reply.outputs, "outputs")
    if single and out.ndim == 2 and out.shape[0] == 1:
        out = out[0]
    return (out, reply.model_version) if with_version else out


def _time(ts) -> _dt.datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=_dt.timezone.utc)


def _layer_arrays(layer: pb.Layer, k: int):
    """(W [fan_out, fan_in], b [fan_out] or None when the layer has no biases)."""
    w = from_tensor(layer.weights, f"layers[{k}].weights")
    has_b = layer.HasField("biases") and math.prod(layer.biases.shape or [0]) > 0
    b = from_tensor(layer.biases, f"layers[{k}].biases") if has_b else None
    return w, b


def model_from_proto(m: pb.Model) -> Model:
    arch = m.architecture
    layers = (tuple(_layer_arrays(layer, k) for k, layer in enumerate(m.layers))
              if len(m.layers) else None)
    return Model(
        id=m.id, layer_sizes=tuple(int(s) for s in arch.layer_sizes),
        hidden_activation=enum_short_name("activation", arch.hidden_activation),
        output_activation=enum_short_name("activation", arch.output_activation),
        loss=enum_short_name("loss", arch.loss),
        bias=arch.bias if arch.HasField("bias") else True,
        gradient_mode=enum_short_name("gradient_mode", arch.gradient_mode),
        version=m.version, epochs_trained=m.epochs_trained, iterations=m.iterations,
        last_loss=m.last_loss, create_time=_time(m.create_time), update_time=_time(m.update_time),
        parameter_count=m.parameter_count, layers=layers,
        dtype=enum_short_name("dtype", arch.dtype), metadata=dict(m.metadata),
        optimizer=enum_short_name("optimizer", m.optimizer))


def step_trace_from_proto(reply: pb.StepResponse, request: pb.StepRequest) -> StepTrace:
    layers = []
    for k, lt in enumerate(reply.layers):
        w, b = _layer_arrays(lt.updated, k)
        if lt.HasField("before"):
            w0, b0 = _layer_arrays(lt.before, k)
        else:
            w0 = b0 = None
        layers.append(LayerStep(np.array(lt.net), np.array(lt.output), np.array(lt.error),
                                np.array(lt.delta), w0, b0, w, b))
    return StepTrace(request.model_id, np.array(request.input), np.array(request.target),
                     request.learning_rate, request.dry_run, tuple(layers), reply.loss,
                     reply.model_version)


def progress_from_proto(msg: pb.TrainResponse, epochs: int) -> Progress:
    return Progress(msg.epoch, epochs, msg.loss, msg.iterations, msg.elapsed_seconds,
                    msg.model_version, msg.done)


def gradient_check_from_proto(reply: pb.CheckGradientsResponse,
                              request: pb.CheckGradientsRequest) -> GradientCheck:
    layers = []
    for k, lg in enumerate(reply.layers):
        w, b = _layer_arrays(lg.analytic, k)
        nw, nb = _layer_arrays(lg.numeric, k)
        layers.append(LayerGradients(w, b, nw, nb, lg.max_relative_error))
    return GradientCheck(request.model_id, np.array(request.input), np.array(request.target),
                         tuple(layers), reply.loss, reply.max_relative_error, reply.epsilon,
                         reply.model_version)
