"""A small in-memory NetworkService over the engine (service.model / service.training), for the
client tests when the real server (service/server.py) is not there. Same wire behaviour the
client relies on: replies use the request's tensor form, errors map to api.md's codes."""

from __future__ import annotations

import functools
import re
import threading
from concurrent import futures

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from jitnet.service import errors, model, training
from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

_CODES = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Busy, grpc.StatusCode.ABORTED),
    (errors.Diverged, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
]


def _code(e):
    for kind, code in _CODES:
        if isinstance(e, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _unary(fn):
    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except errors.JitnetError as e:
            context.abort(_code(e), str(e))
    return wrapper


def _array(t: pb.Tensor) -> np.ndarray:
    shape = tuple(t.shape)
    if t.raw:
        a = np.frombuffer(t.raw, "<f8").astype(float)
    else:
        a = np.array(t.values, dtype=float)
    if a.size != int(np.prod(shape)):
        raise errors.InvalidArgument(f"tensor of shape {list(shape)} has {a.size} values")
    return a.reshape(shape)


def _tensor(a, raw: bool) -> pb.Tensor:
    a = np.ascontiguousarray(a, dtype=float)
    t = pb.Tensor(shape=a.shape)
    if a.size:
        if raw:
            t.raw = a.astype("<f8").tobytes()
        else:
            t.values.extend(a.ravel().tolist())
    return t


class _Entry:
    def __init__(self, mid, net, created):
        self.id, self.net, self.version = mid, net, 1
        self.epochs = self.iterations = 0
        self.loss = 0.0
        self.created = created
        self.busy = threading.Lock()


class FakeNetworkService(pb_grpc.NetworkServiceServicer):
    def __init__(self):
        self.models: dict[str, _Entry] = {}
        self.lock = threading.Lock()
        self.counter = 0

    def _get(self, mid) -> _Entry:
        with self.lock:
            if mid not in self.models:
                raise errors.NotFound(f"model '{mid}' not found")
            return self.models[mid]

    def _proto(self, e: _Entry, weights: bool, raw: bool) -> pb.Model:
        arch = e.net.arch
        m = pb.Model(id=e.id, version=e.version, epochs_trained=e.epochs,
                     iterations=e.iterations, last_loss=e.loss, parameter_count=arch.n_params)
        m.architecture.layer_sizes.extend(arch.layer_sizes)
        m.architecture.hidden_activation = int(arch.hidden_activation)
        m.architecture.output_activation = int(arch.output_activation)
        m.architecture.loss = int(arch.loss)
        m.architecture.bias = arch.bias
        m.architecture.gradient_mode = int(arch.gradient_mode)
        m.create_time.FromSeconds(e.created)
        m.update_time.GetCurrentTime()
        if weights:
            for w, b in e.net.layers():
                layer = m.layers.add(weights=_tensor(w, raw))
                if b is not None:
                    layer.biases.CopyFrom(_tensor(b, raw))
        return m

    @_unary
    def CreateModel(self, request, context):
        a = request.architecture
        arch = model.Architecture(
            tuple(a.layer_sizes), a.hidden_activation or 1, a.output_activation or 1,
            a.loss or 1, a.bias if a.HasField("bias") else True, a.gradient_mode or 1)
        raw = any(layer.weights.raw for layer in request.layers) or not request.layers
        if request.layers:
            layers = [(_array(layer.weights),
                       _array(layer.biases) if layer.HasField("biases") else None)
                      for layer in request.layers]
            net = model.Network.from_layers(arch, layers)
        else:
            net = model.Network.initialise(arch, request.init or 2, request.seed)
        if request.model_id and not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}",
                                                 request.model_id):
            raise errors.InvalidArgument(f"model_id {request.model_id!r} is not a valid id")
        with self.lock:
            mid = request.model_id
            if not mid:
                self.counter += 1
                mid = f"m{self.counter}"
            if mid in self.models:
                raise errors.AlreadyExists(f"model '{mid}' already exists")
            e = self.models[mid] = _Entry(mid, net, 1_700_000_000)
        return pb.CreateModelResponse(model=self._proto(e, True, raw))

    @_unary
    def GetModel(self, request, context):
        e = self._get(request.model_id)
        return pb.GetModelResponse(model=self._proto(e, request.include_weights, request.raw))

    @_unary
    def ListModels(self, request, context):
        with self.lock:
            ids = sorted(self.models)
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = ids[start : start + size]
        token = str(start + size) if start + size < len(ids) else ""
        return pb.ListModelsResponse(
            models=[self._proto(self.models[i], False, True) for i in page], next_page_token=token)

    @_unary
    def DeleteModel(self, request, context):
        e = self._get(request.model_id)
        if not e.busy.acquire(blocking=False):
            raise errors.Busy(f"model '{e.id}' is being trained")
        with self.lock:
            del self.models[e.id]
        return pb.DeleteModelResponse()

    def Train(self, request, context):
        try:
            e = self._get(request.model_id)
            if not e.busy.acquire(blocking=False):
                raise errors.Busy(f"model '{e.id}' is being trained by another call")
            try:
                x, t = _array(request.inputs), _array(request.targets)
                options = training.TrainOptions(
                    request.epochs, request.learning_rate, request.batch_size, request.momentum,
                    request.shuffle, request.seed, request.target_loss, request.report_every)
                for p in training.train(e.net, x, t, options,
                                        should_stop=lambda: not context.is_active()):
                    e.net = model.Network(e.net.arch, p.params)
                    e.version += 1
                    e.epochs += p.epoch
                    e.iterations += p.iterations
                    e.loss = p.loss
                    yield pb.TrainResponse(epoch=p.epoch, loss=p.loss, iterations=p.iterations,
                                           elapsed_seconds=p.elapsed_seconds,
                                           model_version=e.version, done=p.done)
            finally:
                e.busy.release()
        except errors.JitnetError as err:
            context.abort(_code(err), str(err))

    @_unary
    def Step(self, request, context):
        e = self._get(request.model_id)
        if request.dry_run:
            result = e.net.step(list(request.input), list(request.target), request.learning_rate)
        else:
            if not e.busy.acquire(blocking=False):
                raise errors.Busy(f"model '{e.id}' is being trained by another call")
            try:
                result = e.net.step(list(request.input), list(request.target),
                                    request.learning_rate)
                e.net = model.Network(e.net.arch, result.params)
                e.version += 1
            finally:
                e.busy.release()
        reply = pb.StepResponse(loss=result.loss, model_version=e.version)
        for lt in result.layers:
            layer = reply.layers.add(net=lt.net, output=lt.output, error=lt.error,
                                     delta=lt.delta)
            layer.updated.weights.CopyFrom(_tensor(lt.weights, False))
            layer.before.weights.CopyFrom(_tensor(lt.weights_before, False))
            if lt.biases is not None:
                layer.updated.biases.CopyFrom(_tensor(lt.biases, False))
                layer.before.biases.CopyFrom(_tensor(lt.biases_before, False))
        return reply

    @_unary
    def Predict(self, request, context):
        e = self._get(request.model_id)
        x = _array(request.inputs)
        raw = bool(request.inputs.raw) or not request.inputs.values
        return pb.PredictResponse(outputs=_tensor(e.net.predict(x), raw), model_version=e.version)


def create_server(host: str = "127.0.0.1"):
    """(server, port), started, on a free port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_NetworkServiceServicer_to_server(FakeNetworkService(), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, port
