"""Calls of the tests: request builders over the shared data (XOR and the article's network,
from jitnet.client.datasets), and how a call's outcome is read (code_of, error_of,
expect_error, unless)."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.client import datasets
from jitnet.client.errors import JitnetError
from jitnet.v1 import jitnet_pb2 as pb

from .waiting import wait_for  # noqa: F401 - importable from here too, as it used to be

TIMEOUT = 20.0  # every RPC of the tests has a deadline
C = grpc.StatusCode
SERVICE = "jitnet.v1.NetworkService"
RPCS = ("CreateModel", "GetModel", "ListModels", "DeleteModel", "Train", "Step", "Predict",
        "CheckGradients")
# In the proto since turn 3's contract landed; they join RPCS as the server implements them.
DATASET_RPCS = ("UploadDataset", "GetDataset", "ListDatasets", "DeleteDataset")
STREAMING = {"Train"}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

XOR = datasets.xor()
XOR_X, XOR_Y = XOR.inputs, XOR.targets
ARTICLE_HIDDEN, ARTICLE_OUTPUT = datasets.ARTICLE_HIDDEN, datasets.ARTICLE_OUTPUT


# -- requests -----------------------------------------------------------------------------------


def tensor(rows, raw: bool = False) -> pb.Tensor:
    array = np.asarray(rows, dtype=np.float64)
    t = pb.Tensor(shape=array.shape)
    if array.size:
        if raw:
            t.raw = array.astype("<f8").tobytes()
        else:
            t.values.extend(array.ravel().tolist())
    return t


def array(t: pb.Tensor) -> np.ndarray:
    if t.raw:
        return np.frombuffer(t.raw, dtype="<f8").reshape(list(t.shape))
    return np.array(t.values, dtype=np.float64).reshape(list(t.shape))


def article_request(model_id: str = "article", mode=pb.GRADIENT_MODE_ARTICLE):
    """CreateModel of the article's network: 2-4-1 sigmoid, no bias, its weights."""
    return pb.CreateModelRequest(
        model_id=model_id,
        architecture=pb.Architecture(layer_sizes=[2, 4, 1], loss=pb.LOSS_MSE, bias=False,
                                     hidden_activation=pb.ACTIVATION_SIGMOID,
                                     output_activation=pb.ACTIVATION_SIGMOID,
                                     gradient_mode=mode),
        layers=[pb.Layer(weights=tensor(ARTICLE_HIDDEN)), pb.Layer(weights=tensor(ARTICLE_OUTPUT))])


def create(stub, model_id: str, sizes=(2, 4, 1), seed: int = 1, **arch) -> pb.Model:
    return stub.CreateModel(pb.CreateModelRequest(
        model_id=model_id, architecture=pb.Architecture(layer_sizes=list(sizes), **arch),
        seed=seed), timeout=TIMEOUT).model


def xor_train(model_id: str, epochs: int = 1, learning_rate: float = 0.5, raw: bool = False,
              **fields) -> pb.TrainRequest:
    """A Train on the XOR table (for a 2-input, 1-output model)."""
    return pb.TrainRequest(model_id=model_id, inputs=tensor(XOR.inputs, raw),
                           targets=tensor(XOR.targets, raw), epochs=epochs,
                           learning_rate=learning_rate, **fields)


def xor_predict(model_id: str, raw: bool = False) -> pb.PredictRequest:
    return pb.PredictRequest(model_id=model_id, inputs=tensor(XOR.inputs, raw))


def long_train_request(model_id: str, rows: int = 256, epochs: int = 1_000_000,
                       report_every: int = 20, **fields) -> pb.TrainRequest:
    """A Train that runs until cancelled, reporting (and committing) often."""
    rng = np.random.default_rng(0)
    x = rng.random((rows, 2))
    y = (x.sum(axis=1, keepdims=True) > 1.0).astype(float)
    return pb.TrainRequest(model_id=model_id, inputs=tensor(x, raw=True),
                           targets=tensor(y, raw=True), epochs=epochs, learning_rate=0.1,
                           report_every=report_every, **fields)


def model_calls(stub, model_id: str, **options) -> dict[str, Callable[[], object]]:
    """The calls that read or change one model of 2 inputs and 1 output, by RPC name;
    `options` go to every call (e.g. metadata)."""
    options.setdefault("timeout", TIMEOUT)
    return {
        "GetModel": lambda: stub.GetModel(pb.GetModelRequest(model_id=model_id), **options),
        "Predict": lambda: stub.Predict(xor_predict(model_id), **options),
        "Step": lambda: stub.Step(pb.StepRequest(model_id=model_id, input=[0, 1], target=[1],
                                                 learning_rate=0.1), **options),
        "Train": lambda: stub.Train(xor_train(model_id), **options),
        "CheckGradients": lambda: stub.CheckGradients(pb.CheckGradientsRequest(
            model_id=model_id, input=[0, 1], target=[1]), **options),
    }


# -- outcomes -----------------------------------------------------------------------------------


def finished(result):
    """A unary reply as it is; a stream read to its end (a stream fails while it is read)."""
    if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
        return list(result)
    return result


def error_of(call: Callable[[], object]) -> grpc.RpcError:
    """Runs `call`, which must fail, and returns its error."""
    try:
        finished(call())
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """Runs `call`, which must fail, and returns its status code."""
    return error_of(call).code()


def expect_error(code: grpc.StatusCode, call: Callable[[], object], *words: str) -> str:
    """Runs `call`, which must fail with `code` and a message holding every one of `words`;
    returns the message."""
    exc = error_of(call)
    assert exc.code() == code, (exc.code(), exc.details())
    for word in words:
        assert word in exc.details(), (word, exc.details())
    return exc.details()


def unless(call: Callable[[], object], *codes: grpc.StatusCode):
    """call()'s result (a stream read to its end), or None when it fails with one of `codes`
    ("not yet": ABORTED while another call trains, ...). Other failures propagate. Takes the
    client library's errors as well as grpc's."""
    try:
        return finished(call())
    except grpc.RpcError as exc:
        if exc.code() in codes:
            return None
        raise
    except JitnetError as exc:
        if exc.code in codes:
            return None
        raise


def health_status(channel: grpc.Channel, service: str = "", timeout: float = 5) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status


def is_serving(target: grpc.Channel | str, timeout: float = 2.0) -> bool:
    """Whether health at `target` (a channel, or an address on a fresh plaintext channel)
    answers SERVING; False when nothing answers."""
    try:
        if isinstance(target, str):
            with grpc.insecure_channel(target) as channel:
                return health_status(channel, timeout=timeout) == SERVING
        return health_status(target, timeout=timeout) == SERVING
    except grpc.RpcError:
        return False


def __getattr__(name: str):
    """ServerProcess lives in servers.py (which imports this module); importable from here too,
    as it used to be."""
    if name == "ServerProcess":
        from .servers import ServerProcess
        return ServerProcess
    raise AttributeError(name)
