"""Helpers of the service tests: request builders, a subprocess server, bounded polling."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

TIMEOUT = 20.0  # every RPC of the tests has a deadline

ARTICLE_HIDDEN = [[0.2, 0.6], [0.5, 0.7], [0.4, 0.9], [0.8, 0.3]]
ARTICLE_OUTPUT = [[0.6, 0.7, 0.3, 0.4]]
XOR_X = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
XOR_Y = [[0.0], [1.0], [1.0], [0.0]]


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


def long_train_request(model_id: str, rows: int = 256, epochs: int = 1_000_000,
                       report_every: int = 20, **fields) -> pb.TrainRequest:
    """A Train that runs until cancelled, reporting (and committing) often."""
    rng = np.random.default_rng(0)
    x = rng.random((rows, 2))
    y = (x.sum(axis=1, keepdims=True) > 1.0).astype(float)
    return pb.TrainRequest(model_id=model_id, inputs=tensor(x, raw=True),
                           targets=tensor(y, raw=True), epochs=epochs, learning_rate=0.1,
                           report_every=report_every, **fields)


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    """Runs `call`, which must fail, and returns its status code."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            for _ in result:  # a stream fails while it is read
                pass
    except grpc.RpcError as exc:
        return exc.code()
    raise AssertionError("the call succeeded")


def error_of(call: Callable[[], object]) -> grpc.RpcError:
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            for _ in result:
                pass
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02,
             what: str = "condition"):
    """Polls until predicate() is truthy; returns its value. Bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def health_status(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServerProcess:
    """`python -m jitnet.service.server --port 0` as a subprocess; port parsed from its log."""

    _LISTENING = re.compile(r"listening on \S+?:(\d+) ")

    def __init__(self, data_dir, *args: str, env: dict | None = None):
        command = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1",
                   "--port", "0", "--data-dir", str(data_dir), *args]
        # Generic kernels only unless asked for (see fixtures.make_server).
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ,
                                                     "JITNET_SPECIALISED_KERNELS": "0",
                                                     **(env or {})})
        self.lines: list[str] = []
        self._port_found = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._port_found.wait(60):
            self.kill()
            raise AssertionError("server did not log its port:\n" + self.log)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.NetworkServiceStub(self.channel)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = self._LISTENING.search(line)
            if match and not self.port:
                self.port = int(match.group(1))
                self._port_found.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_serving(self, timeout: float = 60) -> None:
        def serving():
            try:
                return health_status(self.channel) == SERVING
            except grpc.RpcError:
                return False
        wait_for(serving, timeout, 0.05, "SERVING")

    def signal(self, signum) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # by pid, never by name
            self.proc.wait(10)

    def close(self) -> None:
        self.channel.close()
        self.kill()
