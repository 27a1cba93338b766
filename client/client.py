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

Requests are built and replies read in wire.py; the values calls return are in results.py.
This module never imports the service (nor numba): a client program stays light.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

from . import wire
from .errors import InvalidArgument, JitnetError, from_rpc_error
from .read_your_writes import VersionMemory
from .results import GradientCheck, Model, Progress, StepTrace

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 30.0  # seconds, for every unary call
LIST_PAGE_SIZE = 100

# Calls without side effects are retried (within their deadline) when a replica goes away under
# them: behind nginx, a call that reaches a replica just as it drains or exits fails with
# UNAVAILABLE (nginx's 502; nginx never re-sends a gRPC call it has sent) or CANCELLED (grpc
# cancels calls it had accepted but not yet handed to a handler when shutdown began). Train,
# Step, CreateModel and DeleteModel are never retried. tests/deploy/test_topology.py.
RETRY_SERVICE_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": "jitnet.v1.NetworkService", "method": m}
             for m in ("Predict", "GetModel", "ListModels")],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"]},
}]})

_CHANNEL_OPTIONS = (
    # Messages can carry whole data sets; the server enforces its own limits.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.service_config", RETRY_SERVICE_CONFIG),
    # A Train stream may be quiet for a long time and has no deadline by default: ping every
    # 30 s while a call is open, so a server that vanished is noticed within 50 s. The server
    # accepts pings every 10 s or more (service/server/lifecycle.py).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
)


def channel_options(extra: Sequence = ()) -> list[tuple[str, object]]:
    """The options a jitnet client opens its channel with (no message size limit of its own,
    RETRY_SERVICE_CONFIG, keepalive pings while a call is open), followed by `extra`. For
    programs that open their own grpc channel to a jitnet server (loadtest/locustfile.py)."""
    return [*_CHANNEL_OPTIONS, *extra]


def _channel_credentials(tls: bool, root_certificates):
    if not tls and root_certificates is None:
        return None
    if isinstance(root_certificates, (str, os.PathLike)):
        with open(root_certificates, "rb") as f:
            root_certificates = f.read()
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


class _ClientBase:
    """What Client and AsyncClient share: the settings, the stubs, deadlines. Each opens its
    own kind of channel (grpc or grpc.aio) in _open_channel."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float = DEFAULT_TIMEOUT,
                 tls: bool = False, root_certificates: bytes | str | os.PathLike | None = None,
                 token: str | None = None, raw: bool = True, options: Sequence = (),
                 interceptors: Sequence = ()):
        """`target` host:port; `timeout` the default deadline of unary calls in seconds;
        `tls` with the system's roots, or `root_certificates` (PEM bytes or a file) to trust;
        `token` sent as a bearer token; `raw` tensors as bytes (else values); `options` added
        to channel_options(); `interceptors` client interceptors of the channel's kind."""
        if timeout is None or not timeout > 0:
            raise InvalidArgument(f"timeout is {timeout}; every call needs a deadline: give "
                                  "a number of seconds above 0")
        self.target = target
        self.timeout = float(timeout)
        self.raw = raw
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._credentials = _channel_credentials(tls, root_certificates)
        self._channel, channel = self._open_channel(channel_options(options), interceptors)
        self._stub = pb_grpc.NetworkServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)
        # The last version of each model this client committed or saw, sent as min_version.
        self.versions = VersionMemory()

    def _open_channel(self, options: list, interceptors: Sequence):
        """(the channel to close, the channel to call through)."""
        raise NotImplementedError

    # Requests that read a version carry min_version: the caller's, else the last one seen.

    def _get_model_request(self, model_id: str, include_weights: bool,
                           min_version: int | None) -> pb.GetModelRequest:
        return pb.GetModelRequest(model_id=model_id, include_weights=include_weights,
                                  raw=self.raw,
                                  min_version=self.versions.min_version(model_id, min_version))

    def _predict_request(self, model_id: str, inputs, min_version: int | None):
        request, single = wire.predict_request(model_id, inputs, self.raw)
        request.min_version = self.versions.min_version(model_id, min_version)
        return request, single

    def _step_request(self, model_id: str, input, target, learning_rate: float, dry_run: bool,
                      min_version: int | None) -> pb.StepRequest:
        request = wire.step_request(model_id, input, target, learning_rate, dry_run)
        if dry_run:  # a Step that commits reads the newest version under its lease anyway
            request.min_version = self.versions.min_version(model_id, min_version)
        return request

    def _imported_request(self, spec, model_id: str, metadata) -> pb.CreateModelRequest:
        """CreateModel for a network read from another library (interchange.NetworkSpec)."""
        arguments = spec.with_changes(metadata=metadata).create_arguments()
        return wire.create_model_request(
            arguments["layer_sizes"], arguments["hidden"], arguments["output"],
            arguments["loss"], arguments["bias"], arguments["gradient_mode"], "xavier", 0,
            arguments["layers"], model_id, self.raw, arguments["dtype"], arguments["metadata"])

    def _saw(self, model: Model) -> Model:
        self.versions.saw(model.id, model.version)
        return model

    def _deadline(self, timeout: float | None) -> float:
        if timeout is None:
            return self.timeout
        if not timeout > 0:
            raise InvalidArgument(f"timeout is {timeout}; give a number of seconds above 0")
        return float(timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r}, timeout={self.timeout})"


class Client(_ClientBase):
    """A blocking client. Use it as a context manager, or call close()."""

    def _open_channel(self, options: list, interceptors: Sequence):
        if self._credentials is not None:
            channel = grpc.secure_channel(self.target, self._credentials, options=options)
        else:
            channel = grpc.insecure_channel(self.target, options=options)
        if interceptors:
            return channel, grpc.intercept_channel(channel, *interceptors)
        return channel, channel

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
                     seed: int = 0, layers=None, model_id: str = "", dtype=None,
                     metadata: Mapping[str, str] | None = None,
                     timeout: float | None = None) -> Model:
        """Creates a model; `layers` ([(W [fan_out, fan_in], b or None)]) gives explicit weights.
        The server makes an id when model_id is empty. `dtype` "float64" (None: the server's
        default, float64) or "float32"; `metadata` strings kept with the model and returned
        in Model.metadata (at most 64 entries of at most 4 KiB). Returns the model with its
        weights."""
        request = wire.create_model_request(layer_sizes, hidden, output, loss, bias,
                                            gradient_mode, init, seed, layers, model_id,
                                            self.raw, dtype, metadata)
        return self._create(request, timeout)

    def _create(self, request: pb.CreateModelRequest, timeout) -> Model:
        model = wire.model_from_proto(self._call(self._stub.CreateModel, request, timeout).model)
        self.versions.created(model.id, model.version)
        return model

    # -- models in and out: ONNX, scikit-learn (client/onnx.py, client/sklearn.py) --

    def import_onnx(self, source, model_id: str = "", *, output: str | None = None,
                    loss=None, dtype=None, metadata: Mapping[str, str] | None = None,
                    timeout: float | None = None) -> Model:
        """Creates a model from an ONNX file (a path, its bytes or an onnx.ModelProto): the
        graphs jitnet.client.onnx.from_onnx reads (UnsupportedModel, before any call, for
        the others). `metadata` is added to what the import keeps (source, classes)."""
        from . import onnx as jitnet_onnx

        spec = jitnet_onnx.from_onnx(source, output=output, loss=loss, dtype=dtype)
        return self._create(self._imported_request(spec, model_id, metadata), timeout)

    def import_sklearn(self, estimator, model_id: str = "", *, dtype=None,
                       metadata: Mapping[str, str] | None = None,
                       timeout: float | None = None) -> Model:
        """Creates a model from a fitted scikit-learn MLPClassifier or MLPRegressor (its
        weights, activations, output and a matching loss; a classifier's classes in
        metadata["classes"] as JSON)."""
        from .sklearn import from_sklearn

        spec = from_sklearn(estimator).with_changes(dtype=dtype)
        return self._create(self._imported_request(spec, model_id, metadata), timeout)

    def export_onnx(self, model_id: str, path=None, *, min_version: int | None = None,
                    timeout: float | None = None) -> bytes:
        """The model's current version as an ONNX file (jitnet.client.onnx.to_onnx), written
        to `path` when given; returns the file's bytes."""
        from . import onnx as jitnet_onnx

        model = self.get_model(model_id, include_weights=True, min_version=min_version,
                               timeout=timeout)
        return jitnet_onnx.serialized(model, path)

    def get_model(self, model_id: str, include_weights: bool = False, *,
                  min_version: int | None = None, timeout: float | None = None) -> Model:
        """The model, at least `min_version` (default: the last version this client committed
        or saw; 0: any)."""
        request = self._get_model_request(model_id, include_weights, min_version)
        return self._saw(wire.model_from_proto(self._call(self._stub.GetModel, request,
                                                          timeout).model))

    def list_models(self, *, page_size: int = LIST_PAGE_SIZE,
                    timeout: float | None = None) -> list[Model]:
        """Every model, following the pages (each page is one call with its own deadline)."""
        models, token, seen = [], "", set()
        while True:
            reply = self._call(self._stub.ListModels,
                               pb.ListModelsRequest(page_size=page_size, page_token=token),
                               timeout)
            models.extend(self._saw(wire.model_from_proto(m)) for m in reply.models)
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
        request = wire.train_request(model_id, inputs, targets, epochs, learning_rate,
                                     batch_size, momentum, shuffle, seed, target_loss,
                                     report_every, self.raw)
        return self._train_stream(request, timeout)

    def _train_stream(self, request: pb.TrainRequest, timeout) -> Iterator[Progress]:
        for msg in self._train_messages(request, timeout):
            yield wire.progress_from_proto(msg, request.epochs)

    def _train_messages(self, request: pb.TrainRequest, timeout) -> Iterator[pb.TrainResponse]:
        """Train's replies as they come (the estimator of client/sklearn.py reads their
        validation fields); closing the generator cancels the call."""
        call = self._stub.Train(request, timeout=timeout, metadata=self._metadata)
        try:
            for msg in call:
                self.versions.saw(request.model_id, msg.model_version)
                yield msg
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
        request, single = self._predict_request(model_id, inputs, min_version)
        reply = self._call(self._stub.Predict, request, timeout)
        self.versions.saw(model_id, reply.model_version)
        return wire.predict_outputs(reply, single, with_version)

    def step(self, model_id: str, input, target, learning_rate: float, *, dry_run: bool = False,
             min_version: int | None = None, timeout: float | None = None) -> StepTrace:
        """One iteration on one sample with every intermediate value; dry_run keeps the weights
        (and is answered by `min_version` or newer, as predict)."""
        request = self._step_request(model_id, input, target, learning_rate, dry_run, min_version)
        reply = self._call(self._stub.Step, request, timeout)
        self.versions.saw(model_id, reply.model_version)
        return wire.step_trace_from_proto(reply, request)

    def check_gradients(self, model_id: str, input, target, *, epsilon: float = 0.0,
                        timeout: float | None = None) -> GradientCheck:
        """For one sample, the engine's gradient of every parameter beside a central finite
        difference with step `epsilon` (0: the server's 1e-4), and the largest relative error.
        Changes nothing."""
        request = wire.check_gradients_request(model_id, input, target, epsilon)
        reply = self._call(self._stub.CheckGradients, request, timeout)
        return wire.gradient_check_from_proto(reply, request)

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


class AsyncClient(_ClientBase):
    """The same calls over grpc.aio: `async with AsyncClient(...) as c: await c.predict(...)`.
    train() is an async generator; aclose() (or leaving `async for`) cancels the call."""

    def _open_channel(self, options: list, interceptors: Sequence):
        kwargs = {"options": options, "interceptors": list(interceptors) or None}
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(self.target, self._credentials, **kwargs)
        else:
            channel = grpc.aio.insecure_channel(self.target, **kwargs)
        return channel, channel

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
                           model_id: str = "", dtype=None,
                           metadata: Mapping[str, str] | None = None,
                           timeout: float | None = None) -> Model:
        request = wire.create_model_request(layer_sizes, hidden, output, loss, bias,
                                            gradient_mode, init, seed, layers, model_id,
                                            self.raw, dtype, metadata)
        return await self._create(request, timeout)

    async def _create(self, request: pb.CreateModelRequest, timeout) -> Model:
        reply = await self._call(self._stub.CreateModel, request, timeout)
        model = wire.model_from_proto(reply.model)
        self.versions.created(model.id, model.version)
        return model

    async def import_onnx(self, source, model_id: str = "", *, output: str | None = None,
                          loss=None, dtype=None, metadata: Mapping[str, str] | None = None,
                          timeout: float | None = None) -> Model:
        from . import onnx as jitnet_onnx

        spec = jitnet_onnx.from_onnx(source, output=output, loss=loss, dtype=dtype)
        return await self._create(self._imported_request(spec, model_id, metadata), timeout)

    async def import_sklearn(self, estimator, model_id: str = "", *, dtype=None,
                             metadata: Mapping[str, str] | None = None,
                             timeout: float | None = None) -> Model:
        from .sklearn import from_sklearn

        spec = from_sklearn(estimator).with_changes(dtype=dtype)
        return await self._create(self._imported_request(spec, model_id, metadata), timeout)

    async def export_onnx(self, model_id: str, path=None, *, min_version: int | None = None,
                          timeout: float | None = None) -> bytes:
        from . import onnx as jitnet_onnx

        model = await self.get_model(model_id, include_weights=True, min_version=min_version,
                                     timeout=timeout)
        return jitnet_onnx.serialized(model, path)

    async def get_model(self, model_id: str, include_weights: bool = False, *,
                        min_version: int | None = None, timeout: float | None = None) -> Model:
        request = self._get_model_request(model_id, include_weights, min_version)
        reply = await self._call(self._stub.GetModel, request, timeout)
        return self._saw(wire.model_from_proto(reply.model))

    async def list_models(self, *, page_size: int = LIST_PAGE_SIZE,
                          timeout: float | None = None) -> list[Model]:
        models, token, seen = [], "", set()
        while True:
            reply = await self._call(self._stub.ListModels,
                                     pb.ListModelsRequest(page_size=page_size, page_token=token),
                                     timeout)
            models.extend(self._saw(wire.model_from_proto(m)) for m in reply.models)
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
        request = wire.train_request(model_id, inputs, targets, epochs, learning_rate,
                                     batch_size, momentum, shuffle, seed, target_loss,
                                     report_every, self.raw)
        return self._train_stream(request, timeout)

    async def _train_stream(self, request: pb.TrainRequest, timeout) -> AsyncIterator[Progress]:
        call = self._stub.Train(request, timeout=timeout, metadata=self._metadata)
        try:
            async for msg in call:
                self.versions.saw(request.model_id, msg.model_version)
                yield wire.progress_from_proto(msg, request.epochs)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()

    async def predict(self, model_id: str, inputs, *, with_version: bool = False,
                      min_version: int | None = None, timeout: float | None = None):
        request, single = self._predict_request(model_id, inputs, min_version)
        reply = await self._call(self._stub.Predict, request, timeout)
        self.versions.saw(model_id, reply.model_version)
        return wire.predict_outputs(reply, single, with_version)

    async def step(self, model_id: str, input, target, learning_rate: float, *,
                   dry_run: bool = False, min_version: int | None = None,
                   timeout: float | None = None) -> StepTrace:
        request = self._step_request(model_id, input, target, learning_rate, dry_run, min_version)
        reply = await self._call(self._stub.Step, request, timeout)
        self.versions.saw(model_id, reply.model_version)
        return wire.step_trace_from_proto(reply, request)

    async def check_gradients(self, model_id: str, input, target, *, epsilon: float = 0.0,
                              timeout: float | None = None) -> GradientCheck:
        request = wire.check_gradients_request(model_id, input, target, epsilon)
        reply = await self._call(self._stub.CheckGradients, request, timeout)
        return wire.gradient_check_from_proto(reply, request)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        reply = await self._call(self._health.Check,
                                 health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
