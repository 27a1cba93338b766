"""The jitnet client: numpy arrays in and out, typed errors, a deadline on every call.

    from jitnet.client import Client

    with Client("127.0.0.1:50051") as client:
        model = client.create_model([2, 4, 1], init="uniform", model_id="xor")
        for progress in client.train("xor", X, Y, epochs=5000, learning_rate=0.5):
            print(progress.epoch, progress.loss)
        print(client.predict("xor", X))

Conventions:

- Tensors travel as raw little-endian float64 bytes (`raw=True`, the default); `raw=False`
  sends the friendly `values` form. Both give the same numbers.
- Every unary call gets a deadline: the per-call `timeout` argument, else the client's
  `timeout` (30 s by default). Train is a long stream: it has no deadline unless its own
  `timeout` is given. Closing the progress generator (or leaving the `for` loop with break,
  an exception or Ctrl-C) cancels the call; the model keeps its last committed version.
- A failed call raises a JitnetError subclass (see errors.py) carrying `.code` and `.details`,
  never a grpc.RpcError.
- Read your writes: the client remembers the last version of each model it committed or saw
  and asks for at least that version (`min_version`) on predict, get_model and dry-run step,
  so behind a balancer it never reads a version older than its own last commit
  (read_your_writes.py). A `min_version` argument overrides it (0: any version).
- Enum-like arguments accept their short names in any case ("sigmoid", "TANH",
  "cross-entropy"), the proto names ("ACTIVATION_RELU") or the proto numbers.

This module never imports the service (nor numba): a client program stays light.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import time
from typing import AsyncIterator, Iterator, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

from .errors import InvalidArgument, JitnetError, from_rpc_error
from .read_your_writes import VersionMemory

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0  # seconds, for every unary call
LIST_PAGE_SIZE = 100

# Calls without side effects are retried (within their deadline) when a replica goes away under
# them: behind nginx, a call that reaches a replica just as it drains or exits fails with
# UNAVAILABLE (nginx's 502; nginx never re-sends a gRPC call it has sent) or CANCELLED (grpc
# cancels calls it had accepted but not yet handed to a handler when shutdown began). Train,
# Step, CreateModel and DeleteModel are never retried. tests/deploy/test_topology.py.
_RETRY_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": "jitnet.v1.NetworkService", "method": m}
             for m in ("Predict", "GetModel", "ListModels")],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"]},
}]})

# Messages can carry whole data sets; the server enforces its own limits.
_CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.service_config", _RETRY_SERVICE_CONFIG),
    # A Train stream may be quiet for a long time and has no deadline by default: ping every
    # 30 s while a call is open, so a server that vanished is noticed within 50 s. The server
    # accepts pings every 10 s or more (service/server.py).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
)


# --- enums: accept "sigmoid", "SIGMOID", "ACTIVATION_SIGMOID" or 1 ---------------------------

_ENUMS = {
    # field: (enum wrapper, prefix, default name when the wire says UNSPECIFIED)
    "activation": (pb.Activation, "ACTIVATION_", "sigmoid"),
    "loss": (pb.Loss, "LOSS_", "mse"),
    "init": (pb.Init, "INIT_", "xavier"),
    "gradient_mode": (pb.GradientMode, "GRADIENT_MODE_", "exact"),
}


def choices(kind: str) -> list[str]:
    """The short names a kind ("activation", "loss", "init", "gradient_mode") accepts."""
    enum, prefix, _ = _ENUMS[kind]
    return [name[len(prefix):].lower() for name in enum.keys() if not name.endswith("UNSPECIFIED")]


def _enum_value(kind: str, value, field: str) -> int:
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
    raise InvalidArgument(f"{field} {value!r} is not one of {', '.join(choices(kind))}")


def _enum_name(kind: str, value: int) -> str:
    enum, prefix, default = _ENUMS[kind]
    if value == 0:
        return default
    try:
        return enum.Name(value)[len(prefix):].lower()
    except ValueError:  # a newer server's value
        return str(value)


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


# --- results ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Model:
    """A model as the server describes it. `layers` (numpy [(W, b or None)], W [fan_out, fan_in])
    is there after create_model and get_model(include_weights=True), else None."""

    id: str
    layer_sizes: tuple[int, ...]
    hidden_activation: str
    output_activation: str
    loss: str
    bias: bool
    gradient_mode: str
    version: int
    epochs_trained: int
    iterations: int
    last_loss: float
    create_time: _dt.datetime | None
    update_time: _dt.datetime | None
    parameter_count: int
    layers: tuple[tuple[np.ndarray, np.ndarray | None], ...] | None = dataclasses.field(
        default=None, compare=False, repr=False)

    @property
    def activations(self) -> tuple[str, ...]:
        """One activation per layer of neurons, input side first."""
        n = len(self.layer_sizes) - 1
        return (self.hidden_activation,) * (n - 1) + (self.output_activation,)

    def describe(self) -> str:
        """E.g. '2-4-1 sigmoid/sigmoid mse, no bias, article gradients'."""
        text = (f"{'-'.join(map(str, self.layer_sizes))} "
                f"{self.hidden_activation}/{self.output_activation} {self.loss}")
        if not self.bias:
            text += ", no bias"
        if self.gradient_mode != "exact":
            text += f", {self.gradient_mode} gradients"
        return text


@dataclasses.dataclass(frozen=True)
class Progress:
    """One Train progress message; its `version` is already committed."""

    epoch: int  # epochs done in this call
    epochs: int  # epochs asked for
    loss: float  # mean per-sample loss over the last epoch
    iterations: int  # samples trained on in this call
    elapsed_seconds: float
    version: int  # the model's committed version this progress belongs to
    done: bool  # the last message of the call


@dataclasses.dataclass(frozen=True, eq=False)
class LayerStep:
    """One layer of neurons in a Step: the article's numbers, input side first."""

    net: np.ndarray  # weighted sums
    output: np.ndarray  # activations
    error: np.ndarray  # output layer: target - output; hidden: sum(delta_next * w)
    delta: np.ndarray  # error times the activation's derivative
    weights_before: np.ndarray | None  # [fan_out, fan_in]
    biases_before: np.ndarray | None
    weights: np.ndarray  # after the update (unchanged on the server when dry_run)
    biases: np.ndarray | None


@dataclasses.dataclass(frozen=True, eq=False)
class StepTrace:
    model_id: str
    input: np.ndarray
    target: np.ndarray
    learning_rate: float
    dry_run: bool
    layers: tuple[LayerStep, ...]
    loss: float
    version: int  # the committed version after the step (the current one for a dry run)


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
    sizes = tuple(int(s) for s in arch.layer_sizes)
    bias = arch.bias if arch.HasField("bias") else True
    count = m.parameter_count or sum(o * i + (o if bias else 0) for i, o in zip(sizes, sizes[1:]))
    layers = (tuple(_layer_arrays(layer, k) for k, layer in enumerate(m.layers))
              if len(m.layers) else None)
    return Model(
        id=m.id, layer_sizes=sizes,
        hidden_activation=_enum_name("activation", arch.hidden_activation),
        output_activation=_enum_name("activation", arch.output_activation),
        loss=_enum_name("loss", arch.loss), bias=bias,
        gradient_mode=_enum_name("gradient_mode", arch.gradient_mode),
        version=m.version, epochs_trained=m.epochs_trained, iterations=m.iterations,
        last_loss=m.last_loss, create_time=_time(m.create_time), update_time=_time(m.update_time),
        parameter_count=count, layers=layers)


def _trace_from_proto(reply: pb.StepResponse, request: pb.StepRequest) -> StepTrace:
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


def _progress(msg: pb.TrainResponse, epochs: int) -> Progress:
    return Progress(msg.epoch, epochs, msg.loss, msg.iterations, msg.elapsed_seconds,
                    msg.model_version, msg.done)


# --- requests (shared by Client and AsyncClient) ---------------------------------------------

def _layer_proto(layer, k: int, raw: bool) -> pb.Layer:
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


def _create_request(layer_sizes, hidden, output, loss, bias, gradient_mode, init, seed, layers,
                    model_id, raw) -> pb.CreateModelRequest:
    try:
        sizes = [int(s) for s in layer_sizes]
    except (TypeError, ValueError):
        raise InvalidArgument(f"layer_sizes must be whole numbers, got {layer_sizes!r}") from None
    if any(s < 1 for s in sizes):
        raise InvalidArgument(f"layer_sizes {sizes}: every layer needs at least 1 neuron")
    arch = pb.Architecture(
        layer_sizes=sizes,
        hidden_activation=_enum_value("activation", hidden, "hidden activation"),
        output_activation=_enum_value("activation", output, "output activation"),
        loss=_enum_value("loss", loss, "loss"), bias=bool(bias),
        gradient_mode=_enum_value("gradient_mode", gradient_mode, "gradient_mode"))
    request = pb.CreateModelRequest(model_id=model_id or "", architecture=arch,
                                    init=_enum_value("init", init, "init"), seed=int(seed))
    for k, layer in enumerate(layers or ()):
        request.layers.append(_layer_proto(layer, k, raw))
    return request


def _train_request(model_id, inputs, targets, epochs, learning_rate, batch_size, momentum, shuffle,
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


def _predict_request(model_id, inputs, raw) -> tuple[pb.PredictRequest, bool]:
    a = _float_array(inputs, "inputs")
    single = a.ndim == 1
    inputs = to_tensor(_matrix(a, "inputs"), raw=raw)
    return pb.PredictRequest(model_id=model_id, inputs=inputs), single


def _predict_result(reply: pb.PredictResponse, single: bool, with_version: bool):
    out = from_tensor(reply.outputs, "outputs")
    if single and out.ndim == 2 and out.shape[0] == 1:
        out = out[0]
    return (out, reply.model_version) if with_version else out


def _step_request(model_id, input, target, learning_rate, dry_run) -> pb.StepRequest:
    return pb.StepRequest(model_id=model_id, input=_vector(input, "input"),
                          target=_vector(target, "target"), learning_rate=float(learning_rate),
                          dry_run=bool(dry_run))


def _channel_credentials(tls: bool, root_certificates):
    if not tls and root_certificates is None:
        return None
    if isinstance(root_certificates, (str, os.PathLike)):
        with open(root_certificates, "rb") as f:
            root_certificates = f.read()
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


class _Base:
    def __init__(self, target, timeout, tls, root_certificates, token, raw):
        if timeout is None or not timeout > 0:
            raise InvalidArgument(f"timeout is {timeout}; every call needs a deadline: give "
                                  "a number of seconds above 0")
        self.target = target
        self.timeout = float(timeout)
        self.raw = raw
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._credentials = _channel_credentials(tls, root_certificates)
        # The last version of each model this client committed or saw, sent as min_version.
        self.versions = VersionMemory()

    def _deadline(self, timeout: float | None) -> float:
        if timeout is None:
            return self.timeout
        if not timeout > 0:
            raise InvalidArgument(f"timeout is {timeout}; give a number of seconds above 0")
        return float(timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r}, timeout={self.timeout})"


class Client(_Base):
    """A blocking client. Use it as a context manager, or call close()."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float = DEFAULT_TIMEOUT,
                 tls: bool = False, root_certificates: bytes | str | os.PathLike | None = None,
                 token: str | None = None, raw: bool = True, options: Sequence = (),
                 interceptors: Sequence = ()):
        super().__init__(target, timeout, tls, root_certificates, token, raw)
        options = list(_CHANNEL_OPTIONS) + list(options)
        if self._credentials is not None:
            channel = grpc.secure_channel(target, self._credentials, options=options)
        else:
            channel = grpc.insecure_channel(target, options=options)
        self._channel = channel
        if interceptors:
            channel = grpc.intercept_channel(channel, *interceptors)
        self._stub = pb_grpc.NetworkServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, rpc, request, timeout):
        try:
            return rpc(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    # -- models --

    def create_model(self, layer_sizes: Sequence[int], *, hidden="sigmoid", output="sigmoid",
                     loss="mse", bias: bool = True, gradient_mode="exact", init="xavier",
                     seed: int = 0, layers=None, model_id: str = "",
                     timeout: float | None = None) -> Model:
        """Creates a model; `layers` ([(W [fan_out, fan_in], b or None)]) gives explicit weights.
        The server makes an id when model_id is empty. Returns the model with its weights."""
        request = _create_request(layer_sizes, hidden, output, loss, bias, gradient_mode, init,
                                  seed, layers, model_id, self.raw)
        model = model_from_proto(self._call(self._stub.CreateModel, request, timeout).model)
        self.versions.created(model.id, model.version)
        return model

    def get_model(self, model_id: str, include_weights: bool = False, *,
                  min_version: int | None = None, timeout: float | None = None) -> Model:
        """The model, at least `min_version` (default: the last version this client committed
        or saw; 0: any)."""
        request = pb.GetModelRequest(model_id=model_id, include_weights=include_weights,
                                     raw=self.raw,
                                     min_version=self.versions.min_version(model_id, min_version))
        model = model_from_proto(self._call(self._stub.GetModel, request, timeout).model)
        self.versions.saw(model.id, model.version)
        return model

    def list_models(self, *, page_size: int = LIST_PAGE_SIZE,
                    timeout: float | None = None) -> list[Model]:
        """Every model, following the pages (each page is one call with its own deadline)."""
        models, token, seen = [], "", set()
        while True:
            reply = self._call(self._stub.ListModels,
                               pb.ListModelsRequest(page_size=page_size, page_token=token),
                               timeout)
            models.extend(model_from_proto(m) for m in reply.models)
            for m in reply.models:
                self.versions.saw(m.id, m.version)
            token = reply.next_page_token
            if not token or token in seen:  # a repeated token would loop forever
                return models
            seen.add(token)

    def delete_model(self, model_id: str, *, timeout: float | None = None) -> None:
        self._call(self._stub.DeleteModel, pb.DeleteModelRequest(model_id=model_id), timeout)
        self.versions.forget(model_id)

    # -- training and inference --

    def train(self, model_id: str, inputs, targets, *, epochs: int, learning_rate: float,
              batch_size: int = 1, momentum: float = 0.0, shuffle: bool = False, seed: int = 0,
              target_loss: float = 0.0, report_every: int = 0,
              timeout: float | None = None) -> Iterator[Progress]:
        """Trains on inputs [n, n_in] and targets [n, n_out]; yields Progress as the server
        commits. No deadline unless `timeout` is given; closing the generator cancels the call.
        The call starts on the first next()."""
        request = _train_request(model_id, inputs, targets, epochs, learning_rate, batch_size,
                                 momentum, shuffle, seed, target_loss, report_every, self.raw)
        return self._train_stream(request, timeout)

    def _train_stream(self, request: pb.TrainRequest, timeout) -> Iterator[Progress]:
        call = self._stub.Train(request, timeout=timeout, metadata=self._metadata)
        try:
            for msg in call:
                self.versions.saw(request.model_id, msg.model_version)
                yield _progress(msg, request.epochs)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()  # a no-op once the call has ended

    def predict(self, model_id: str, inputs, *, with_version: bool = False,
                min_version: int | None = None, timeout: float | None = None):
        """Outputs [n, n_out] for inputs [n, n_in]; a 1-D input gives a 1-D output.
        With with_version=True, returns (outputs, model_version). Answered by version
        `min_version` or newer (default: the last version this client committed or saw, so
        it reads its own writes on any replica; 0: any version)."""
        request, single = _predict_request(model_id, inputs, self.raw)
        request.min_version = self.versions.min_version(model_id, min_version)
        reply = self._call(self._stub.Predict, request, timeout)
        self.versions.saw(model_id, reply.model_version)
        return _predict_result(reply, single, with_version)

    def step(self, model_id: str, input, target, learning_rate: float, *, dry_run: bool = False,
             min_version: int | None = None, timeout: float | None = None) -> StepTrace:
        """One iteration on one sample with every intermediate value; dry_run keeps the weights
        (and is answered by `min_version` or newer, as predict)."""
        request = _step_request(model_id, input, target, learning_rate, dry_run)
        if dry_run:
            request.min_version = self.versions.min_version(model_id, min_version)
        reply = self._call(self._stub.Step, request, timeout)
        self.versions.saw(model_id, reply.model_version)
        return _trace_from_proto(reply, request)

    # -- health --

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """'SERVING', 'NOT_SERVING', ... as grpc.health.v1 reports it."""
        reply = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service),
                           timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def wait_until_serving(self, timeout: float = 60.0, *, service: str = "") -> None:
        """Polls health until SERVING; raises Unavailable (or the last error) after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                status = self.health(service, timeout=max(0.05, min(left, 1.0)))
                if status == "SERVING":
                    return
                last = JitnetError(f"health is {status}", grpc.StatusCode.UNAVAILABLE)
            except JitnetError as e:
                last = e
            if time.monotonic() >= deadline:
                raise type(last)(f"{self.target} not serving after {timeout:g} s: "
                                 f"{last.details}", last.code)
            time.sleep(0.05)


class AsyncClient(_Base):
    """The same calls over grpc.aio: `async with AsyncClient(...) as c: await c.predict(...)`.
    train() is an async generator; aclose() (or leaving `async for`) cancels the call."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float = DEFAULT_TIMEOUT,
                 tls: bool = False, root_certificates: bytes | str | os.PathLike | None = None,
                 token: str | None = None, raw: bool = True, options: Sequence = (),
                 interceptors: Sequence = ()):
        super().__init__(target, timeout, tls, root_certificates, token, raw)
        options = list(_CHANNEL_OPTIONS) + list(options)
        kwargs = {"options": options, "interceptors": list(interceptors) or None}
        if self._credentials is not None:
            self._channel = grpc.aio.secure_channel(target, self._credentials, **kwargs)
        else:
            self._channel = grpc.aio.insecure_channel(target, **kwargs)
        self._stub = pb_grpc.NetworkServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _call(self, rpc, request, timeout):
        try:
            return await rpc(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None

    async def create_model(self, layer_sizes: Sequence[int], *, hidden="sigmoid",
                           output="sigmoid", loss="mse", bias: bool = True,
                           gradient_mode="exact", init="xavier", seed: int = 0, layers=None,
                           model_id: str = "", timeout: float | None = None) -> Model:
        request = _create_request(layer_sizes, hidden, output, loss, bias, gradient_mode, init,
                                  seed, layers, model_id, self.raw)
        reply = await self._call(self._stub.CreateModel, request, timeout)
        model = model_from_proto(reply.model)
        self.versions.created(model.id, model.version)
        return model

    async def get_model(self, model_id: str, include_weights: bool = False, *,
                        min_version: int | None = None, timeout: float | None = None) -> Model:
        request = pb.GetModelRequest(model_id=model_id, include_weights=include_weights,
                                     raw=self.raw,
                                     min_version=self.versions.min_version(model_id, min_version))
        model = model_from_proto((await self._call(self._stub.GetModel, request, timeout)).model)
        self.versions.saw(model.id, model.version)
        return model

    async def list_models(self, *, page_size: int = LIST_PAGE_SIZE,
                          timeout: float | None = None) -> list[Model]:
        models, token, seen = [], "", set()
        while True:
            reply = await self._call(self._stub.ListModels,
                                     pb.ListModelsRequest(page_size=page_size, page_token=token),
                                     timeout)
            models.extend(model_from_proto(m) for m in reply.models)
            for m in reply.models:
                self.versions.saw(m.id, m.version)
            token = reply.next_page_token
            if not token or token in seen:
                return models
            seen.add(token)

    async def delete_model(self, model_id: str, *, timeout: float | None = None) -> None:
        await self._call(self._stub.DeleteModel, pb.DeleteModelRequest(model_id=model_id),
                         timeout)
        self.versions.forget(model_id)

    def train(self, model_id: str, inputs, targets, *, epochs: int, learning_rate: float,
              batch_size: int = 1, momentum: float = 0.0, shuffle: bool = False, seed: int = 0,
              target_loss: float = 0.0, report_every: int = 0,
              timeout: float | None = None) -> AsyncIterator[Progress]:
        request = _train_request(model_id, inputs, targets, epochs, learning_rate, batch_size,
                                 momentum, shuffle, seed, target_loss, report_every, self.raw)
        return self._train_stream(request, timeout)

    async def _train_stream(self, request: pb.TrainRequest, timeout) -> AsyncIterator[Progress]:
        call = self._stub.Train(request, timeout=timeout, metadata=self._metadata)
        try:
            async for msg in call:
                self.versions.saw(request.model_id, msg.model_version)
                yield _progress(msg, request.epochs)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    async def predict(self, model_id: str, inputs, *, with_version: bool = False,
                      min_version: int | None = None, timeout: float | None = None):
        request, single = _predict_request(model_id, inputs, self.raw)
        request.min_version = self.versions.min_version(model_id, min_version)
        reply = await self._call(self._stub.Predict, request, timeout)
        self.versions.saw(model_id, reply.model_version)
        return _predict_result(reply, single, with_version)

    async def step(self, model_id: str, input, target, learning_rate: float, *,
                   dry_run: bool = False, min_version: int | None = None,
                   timeout: float | None = None) -> StepTrace:
        request = _step_request(model_id, input, target, learning_rate, dry_run)
        if dry_run:
            request.min_version = self.versions.min_version(model_id, min_version)
        reply = await self._call(self._stub.Step, request, timeout)
        self.versions.saw(model_id, reply.model_version)
        return _trace_from_proto(reply, request)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        reply = await self._call(self._health.Check,
                                 health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
