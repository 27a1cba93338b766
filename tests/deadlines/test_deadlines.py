"""Deadlines and cancellation. A cancelled or expired Train stops at its next chunk, frees its
worker (the server has one here, so the next call proves it) and its lease (a new Train on the
same model succeeds right after), and leaves the model at a version it committed: whole
progress reports only, nothing after the stop. A call whose deadline passes while it waits
for a worker never runs, so it cannot change a model behind its caller's back. (That the
client library puts a deadline on every call is tested in tests/client.)"""

from __future__ import annotations

import time

import grpc
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, C, create, long_train_request, unless, xor_predict
from tests.support.stored import all_finite, weights
from tests.support.waiting import wait_for

REPORT_EVERY = 10


def _until_free(stub, model_id: str, limit: float = 2.0) -> float:
    """Seconds until a new (1-epoch) Train on model_id succeeds; only ABORTED is retried."""
    began = time.monotonic()
    replies = wait_for(lambda: unless(lambda: stub.Train(long_train_request(
        model_id, epochs=1, report_every=0), timeout=TIMEOUT), C.ABORTED), limit, 0.01,
        "the lease freed")
    assert replies[-1].done
    return time.monotonic() - began


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
    other = stub.Predict(xor_predict("other"), timeout=2)
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
