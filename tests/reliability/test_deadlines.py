"""Deadlines and cancellation. A cancelled or expired Train stops at its next chunk, frees its
worker (the server has one here, so the next call proves it) and its lease (a new Train on the
same model succeeds right after), and leaves the model at a version it committed: whole
progress reports only, nothing after the stop. A call whose deadline passes while it waits
for a worker never runs, so it cannot change a model behind its caller's back."""

from __future__ import annotations

import time

import grpc
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.stored import C, TIMEOUT, all_finite, weights
from tests.support.rpc import create, long_train_request, tensor, XOR_X

REPORT_EVERY = 10


def _until_free(stub, model_id: str, limit: float = 2.0) -> float:
    """Seconds until a new (1-epoch) Train on model_id succeeds; only ABORTED is retried."""
    began = time.monotonic()
    while True:
        try:
            replies = list(stub.Train(long_train_request(model_id, epochs=1, report_every=0),
                                      timeout=TIMEOUT))
            assert replies[-1].done
            return time.monotonic() - began
        except grpc.RpcError as exc:
            assert exc.code() == C.ABORTED, exc
            assert time.monotonic() - began < limit, "the lease was not freed"
            time.sleep(0.01)


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_a_stopped_train_frees_its_worker_and_lease_and_keeps_committed_versions(make_server,
                                                                                 how):
    server = make_server(threads=1)  # one thread: the next call needs the stopped one's
    stub = server.stub
    create(stub, "t")
    create(stub, "other")
    start = weights(stub, "t")
    stream = stub.Train(long_train_request("t", report_every=REPORT_EVERY),
                        timeout=60 if how == "cancel" else 0.8)
    acked = [next(stream).model_version, next(stream).model_version]
    if how == "cancel":
        stream.cancel()
    try:
        list(stream)
        raise AssertionError("the Train was not stopped")
    except grpc.RpcError as exc:
        assert exc.code() == (C.CANCELLED if how == "cancel" else C.DEADLINE_EXCEEDED), exc
    stopped = time.monotonic()
    # the worker is free: another model's Predict is answered promptly
    other = stub.Predict(pb.PredictRequest(model_id="other", inputs=tensor(XOR_X)), timeout=2)
    assert other.model_version == 1
    # the lease is free: a Train on the same model succeeds right after
    model = weights(stub, "t")
    assert _until_free(stub, "t") < 1.0
    assert time.monotonic() - stopped < 2.0
    # the model was at a version it committed: whole reports, at least the last acknowledged
    assert model.version >= acked[-1]
    assert model.epochs_trained == start.epochs_trained + (model.version - 1) * REPORT_EVERY
    assert all_finite(model)
    # and nothing moved after the stop but the 1-epoch Train just made
    time.sleep(0.3)
    assert weights(stub, "t").version == model.version + 1


def test_a_call_whose_deadline_passes_while_queued_never_runs(make_server):
    server = make_server(threads=1)
    stub = server.stub
    create(stub, "busy")
    create(stub, "queued")
    train = stub.Train(long_train_request("busy"), timeout=60)
    next(train)
    # queued behind the Train on the only worker; its deadline passes while it waits
    step = stub.Step.future(pb.StepRequest(model_id="queued", input=[0.0, 1.0], target=[1.0],
                                           learning_rate=0.1), timeout=0.3)
    with pytest.raises(grpc.RpcError) as info:
        step.result(timeout=5)
    assert info.value.code() == C.DEADLINE_EXCEEDED
    time.sleep(0.2)
    train.cancel()
    time.sleep(0.3)  # the worker picks up whatever is queued now
    assert stub.GetModel(pb.GetModelRequest(model_id="queued"),
                         timeout=TIMEOUT).model.version == 1


def test_every_client_call_carries_a_deadline(make_server):
    """The jitnet client sets a deadline on every unary call (Train too when asked), checked
    by an interceptor on the client's channel."""
    from jitnet.client import Client

    server = make_server()
    seen = []

    class Record(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def intercept_unary_unary(self, continuation, details, request):
            seen.append((details.method, details.timeout))
            return continuation(details, request)

        def intercept_unary_stream(self, continuation, details, request):
            seen.append((details.method, details.timeout))
            return continuation(details, request)

    with Client(f"127.0.0.1:{server.port}", interceptors=[Record()]) as client:
        client.create_model([2, 3, 1], model_id="c")
        client.get_model("c")
        client.list_models()
        client.predict("c", XOR_X)
        client.step("c", [0, 1], [1], learning_rate=0.1)
        list(client.train("c", XOR_X, [[0], [1], [1], [0]], epochs=2, learning_rate=0.1,
                          timeout=30))
        client.delete_model("c")
    methods = {method.rsplit("/", 1)[-1] for method, _ in seen}
    assert {"CreateModel", "GetModel", "ListModels", "Predict", "Step", "Train",
            "DeleteModel"} <= methods
    assert all(timeout is not None and timeout > 0 for _, timeout in seen), seen
