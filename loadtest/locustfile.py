"""Locust load test for a jitnet server or the nginx in front of its replicas.

Each simulated user creates its own XOR 2-4-1 model (so users never contend for a model's
training lease), then mostly calls Predict (in both tensor forms), with some Step (half of them
dry runs) and a little Train, and deletes the model when it stops. Every call is reported to
locust by a client interceptor, so failures are counted per RPC, and has a deadline.

Headless, against the compose stack or a local server (see docs/deploy.md):

    locust -f loadtest/locustfile.py --headless -u 10 -r 10 -t 30s --host 127.0.0.1:50051 \
        --only-summary --exit-code-on-error 1 --csv loadtest-out   # loadtest-out_stats.csv

Under compose: `docker compose --profile load up loadtest` (the image runs this file against
nginx:50051). tests/deploy/test_loadtest.py runs it through nginx to two real replicas.
"""

from __future__ import annotations

import random
import struct
import time
import uuid

# grpc's own event loop must cooperate with gevent (locust's users are greenlets); this has to
# happen before any channel exists. locust has already monkey-patched the stdlib by now.
import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

from locust import User, constant, task  # noqa: E402

from jitnet.client import channel_options  # noqa: E402
from jitnet.v1 import jitnet_pb2, jitnet_pb2_grpc  # noqa: E402

TIMEOUT_SECONDS = 10.0  # every call has a deadline: a stuck server shows up as failures, not a hang

# The jitnet client's channel options: Predict, GetModel and ListModels are retried when the
# replica that got them goes away (nginx answers 502, or grpc cancels a call accepted during
# shutdown), so scaling or restarting replicas under load costs no Predict.
CHANNEL_OPTIONS = channel_options()

XOR_INPUTS = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0]  # [4, 2], row-major
XOR_TARGETS = [0.0, 1.0, 1.0, 0.0]  # [4, 1]


def tensor(values: list[float], shape: list[int], raw: bool = False) -> jitnet_pb2.Tensor:
    """A Tensor in either wire form: `values`, or `raw` little-endian float64 bytes."""
    if raw:
        return jitnet_pb2.Tensor(shape=shape, raw=struct.pack(f"<{len(values)}d", *values))
    return jitnet_pb2.Tensor(shape=shape, values=values)


def xor_architecture() -> jitnet_pb2.Architecture:
    return jitnet_pb2.Architecture(
        layer_sizes=[2, 4, 1],
        hidden_activation=jitnet_pb2.ACTIVATION_SIGMOID,
        output_activation=jitnet_pb2.ACTIVATION_SIGMOID,
        loss=jitnet_pb2.LOSS_MSE,
    )


def _method_name(details: grpc.ClientCallDetails) -> str:
    method = details.method
    if isinstance(method, bytes):
        method = method.decode()
    return method.rsplit("/", 1)[-1]  # "/jitnet.v1.NetworkService/Predict" -> "Predict"


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Reports every call to locust: name, latency, response size and the error if any."""

    def __init__(self, environment):
        self.environment = environment

    def report(self, name: str, start: float, length: int, exception: BaseException | None) -> None:
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exception,
            context={},
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        start = time.perf_counter()
        call = continuation(client_call_details, request)
        length, exception = 0, None
        try:
            length = call.result().ByteSize()  # waits for the reply; raises the call's RpcError
        except grpc.RpcError as error:
            exception = error
        self.report(_method_name(client_call_details), start, length, exception)
        return call  # the stub's caller still sees the reply or the same error

    def intercept_unary_stream(self, continuation, client_call_details, request):
        # A stream is timed from the call to its last message, reported once when it ends.
        start = time.perf_counter()
        call = continuation(client_call_details, request)
        return self._timed_stream(_method_name(client_call_details), start, call)

    def _timed_stream(self, name, start, call):
        length, exception = 0, None
        try:
            for message in call:
                length += message.ByteSize()
                yield message
        except grpc.RpcError as error:
            exception = error
            raise
        finally:
            self.report(name, start, length, exception)


class JitnetUser(User):
    """One client with its own model. --host is the server's host:port (no scheme)."""

    wait_time = constant(0)  # closed loop: each user sends its next call as soon as one returns

    def on_start(self) -> None:
        target = (self.host or "").removeprefix("grpc://").removeprefix("http://")
        if not target:
            raise ValueError("pass --host HOST:PORT of a jitnet server or of nginx")
        self.interceptor = LocustInterceptor(self.environment)
        self.plain_channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.channel = grpc.intercept_channel(self.plain_channel, self.interceptor)
        self.stub = jitnet_pb2_grpc.NetworkServiceStub(self.channel)
        self.model_id = f"locust-{uuid.uuid4().hex}"  # unique per user: no ABORTED between users
        self.rng = random.Random()
        # Without its model the user could only produce NOT_FOUND noise: a failed create (already
        # reported by the interceptor) propagates, which locust logs and which ends this user.
        try:
            self.stub.CreateModel(
                jitnet_pb2.CreateModelRequest(
                    model_id=self.model_id,
                    architecture=xor_architecture(),
                    init=jitnet_pb2.INIT_XAVIER,
                    seed=self.rng.getrandbits(32),
                ),
                timeout=TIMEOUT_SECONDS,
            )
        except grpc.RpcError:
            self.channel.close()
            raise

    def on_stop(self) -> None:
        # When locust stops a user in the middle of a Train, the call is cancelled, but the
        # server holds the model's training lease until it notices (between two chunks of
        # epochs), and answers DeleteModel with ABORTED until then. So the delete is retried
        # on ABORTED for up to a second, and reported to locust once, with its final outcome.
        stub = jitnet_pb2_grpc.NetworkServiceStub(self.plain_channel)
        request = jitnet_pb2.DeleteModelRequest(model_id=self.model_id)
        start, exception = time.perf_counter(), None
        try:
            for _ in range(20):
                try:
                    stub.DeleteModel(request, timeout=TIMEOUT_SECONDS)
                    exception = None
                    break
                except grpc.RpcError as error:
                    exception = error
                    if error.code() != grpc.StatusCode.ABORTED:
                        break
                    time.sleep(0.05)  # gevent's sleep: locust has patched the stdlib
            self.interceptor.report("DeleteModel", start, 0, exception)
        finally:
            self.channel.close()

    def _call(self, fn) -> None:
        # Errors are already counted by the interceptor; re-raising would only add a traceback.
        try:
            fn()
        except grpc.RpcError:
            pass

    @task(6)
    def predict_values(self) -> None:
        request = jitnet_pb2.PredictRequest(model_id=self.model_id,
                                            inputs=tensor(XOR_INPUTS, [4, 2]))
        self._call(lambda: self.stub.Predict(request, timeout=TIMEOUT_SECONDS))

    @task(4)
    def predict_raw(self) -> None:
        row = self.rng.randrange(4)
        request = jitnet_pb2.PredictRequest(
            model_id=self.model_id,
            inputs=tensor(XOR_INPUTS[2 * row : 2 * row + 2], [1, 2], raw=True),
        )
        self._call(lambda: self.stub.Predict(request, timeout=TIMEOUT_SECONDS))

    @task(2)
    def step(self) -> None:
        row = self.rng.randrange(4)
        request = jitnet_pb2.StepRequest(
            model_id=self.model_id,
            input=XOR_INPUTS[2 * row : 2 * row + 2],
            target=[XOR_TARGETS[row]],
            learning_rate=0.5,
            dry_run=self.rng.random() < 0.5,  # half of them also commit a version
        )
        self._call(lambda: self.stub.Step(request, timeout=TIMEOUT_SECONDS))

    @task(1)
    def train(self) -> None:
        request = jitnet_pb2.TrainRequest(
            model_id=self.model_id,
            inputs=tensor(XOR_INPUTS, [4, 2], raw=True),
            targets=tensor(XOR_TARGETS, [4, 1], raw=True),
            epochs=20,
            learning_rate=0.5,
            shuffle=True,
            seed=self.rng.getrandbits(32),
        )
        # Drain the stream: the interceptor reports it once, when the last message arrives.
        self._call(lambda: list(self.stub.Train(request, timeout=TIMEOUT_SECONDS)))
