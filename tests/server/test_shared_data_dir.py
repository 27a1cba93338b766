"""Two server processes on one data directory, as compose replicas run: a model made, trained
or deleted through one is served by the other within a second, predictions agree bit for bit,
and one model is trained by one process at a time (the other gets ABORTED until the lock is
free)."""

from __future__ import annotations

import time

import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (
    TIMEOUT,
    C,
    code_of,
    create,
    long_train_request,
    unless,
    xor_predict,
    xor_train,
)
from tests.support.waiting import wait_for


def _version(stub, model_id) -> int:
    return stub.GetModel(pb.GetModelRequest(model_id=model_id), timeout=TIMEOUT).model.version


def _predicted(server):
    """The server's Predict of model "shared", or None while it has no such model."""
    return unless(lambda: server.stub.Predict(xor_predict("shared"), timeout=TIMEOUT),
                  C.NOT_FOUND)


@pytest.mark.slow
def test_two_processes_share_one_data_directory(spawn):
    a = spawn()
    b = spawn(data_dir=a.data_dir)
    create(a.stub, "shared", seed=2)
    began = time.monotonic()
    reply = wait_for(lambda: _predicted(b), 2, what="B serving A's model")
    assert time.monotonic() - began < 1.0 and reply.model_version == 1
    assert [m.id for m in b.stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models] == [
        "shared"]
    # trained through A, served by B at the new version within a second
    last = list(a.stub.Train(xor_train("shared", 300), timeout=TIMEOUT))[-1]
    began = time.monotonic()
    wait_for(lambda: _version(b.stub, "shared") == last.model_version, 2,
             what="B serving the new version")
    assert time.monotonic() - began < 1.0
    via_a = a.stub.Predict(xor_predict("shared", raw=True), timeout=TIMEOUT)
    via_b = b.stub.Predict(xor_predict("shared", raw=True), timeout=TIMEOUT)
    assert via_a.outputs.raw == via_b.outputs.raw
    # one model trained through both at once: the second gets ABORTED
    stream = a.stub.Train(long_train_request("shared"), timeout=60)
    try:
        next(stream)
        assert code_of(lambda: b.stub.Train(long_train_request("shared", epochs=1),
                                            timeout=TIMEOUT)) == C.ABORTED
        assert code_of(lambda: b.stub.DeleteModel(pb.DeleteModelRequest(model_id="shared"),
                                                  timeout=TIMEOUT)) == C.ABORTED
    finally:
        stream.cancel()
    # A's cancelled Train stops and frees the lock, so B can train it now
    wait_for(lambda: unless(lambda: b.stub.Train(long_train_request("shared", epochs=1),
                                                 timeout=TIMEOUT), C.ABORTED), 5,
             what="the cross-process lock freed")
    # deleted through B, gone from A
    b.stub.DeleteModel(pb.DeleteModelRequest(model_id="shared"), timeout=TIMEOUT)
    wait_for(lambda: _predicted(a) is None, 2, what="A sees the delete")
