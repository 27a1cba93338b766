"""The error table (service/protocols/status.py) through a real in-process server: NOT_FOUND,
ALREADY_EXISTS, FAILED_PRECONDITION for a diverging Train, ABORTED while another call trains,
INTERNAL (logged, telling the caller nothing of the bug) for anything unexpected. Malformed
requests (INVALID_ARGUMENT) are tested in tests/validation, limits (RESOURCE_EXHAUSTED) in
tests/limits, disk errors in tests/crash, the token (UNAUTHENTICATED) in tests/security."""

from __future__ import annotations

import numpy as np

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import (
    TIMEOUT,
    C,
    array,
    create,
    expect_error,
    long_train_request,
    model_calls,
    tensor,
    unless,
)
from tests.support.waiting import wait_for


def test_not_found_and_already_exists(stub):
    for call in [*model_calls(stub, "nope").values(),
                 lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="nope"),
                                          timeout=TIMEOUT)]:
        expect_error(C.NOT_FOUND, call, "'nope'", "not found")
    create(stub, "taken")
    expect_error(C.ALREADY_EXISTS, lambda: create(stub, "taken"), "taken")


def test_divergence_keeps_the_last_committed_finite_model(stub):
    create(stub, "wild", sizes=(1, 1), output_activation=pb.ACTIVATION_LINEAR)
    x, y = [[100.0], [-50.0]], [[1e3], [-2e3]]
    first = list(stub.Train(pb.TrainRequest(model_id="wild", inputs=tensor(x), targets=tensor(y),
                                            epochs=1, learning_rate=1e-6), timeout=TIMEOUT))
    assert first[-1].model_version == 2
    details = expect_error(C.FAILED_PRECONDITION, lambda: stub.Train(pb.TrainRequest(
        model_id="wild", inputs=tensor(x), targets=tensor(y), epochs=500, learning_rate=10.0),
        timeout=TIMEOUT), "learning rate")
    assert "loss" in details
    model = stub.GetModel(pb.GetModelRequest(model_id="wild", include_weights=True),
                          timeout=TIMEOUT).model
    assert model.version == 2
    assert np.isfinite(array(model.layers[0].weights)).all()
    # and the lease is free again
    assert list(stub.Train(pb.TrainRequest(model_id="wild", inputs=tensor(x), targets=tensor(y),
                                           epochs=1, learning_rate=1e-6),
                           timeout=TIMEOUT))[-1].model_version == 3


def test_aborted_while_another_call_trains(stub):
    create(stub, "busy")
    call = stub.Train(long_train_request("busy"), timeout=60)
    try:
        first = next(call)
        assert first.model_version >= 2
        calls = model_calls(stub, "busy")
        for attempt in (calls["Train"], calls["Step"],
                        lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="busy"),
                                                 timeout=TIMEOUT)):
            expect_error(C.ABORTED, attempt, "busy", "being trained")
        # reads keep working on the last committed version
        dry = stub.Step(pb.StepRequest(model_id="busy", input=[0, 1], target=[1],
                                       learning_rate=0.1, dry_run=True), timeout=TIMEOUT)
        assert dry.model_version >= first.model_version
        got = stub.GetModel(pb.GetModelRequest(model_id="busy"), timeout=TIMEOUT).model
        assert got.version >= first.model_version
    finally:
        call.cancel()
    # cancelling stops the work and frees the lease (next chunk, ~0.1 s)
    wait_for(lambda: unless(calls["Step"], C.ABORTED), 5, what="lease released after cancel")


def test_unexpected_error_is_internal_and_logged(server, monkeypatch, caplog):
    create(server.stub, "x")

    def broken(model_id):
        raise RuntimeError("secret internals /etc/shadow")

    monkeypatch.setattr(server.handle.store, "get", broken)
    with caplog.at_level("ERROR", logger="jitnet.service.protocols.jitnet_v1.servicer"):
        details = expect_error(C.INTERNAL, lambda: server.stub.GetModel(
            pb.GetModelRequest(model_id="x"), timeout=TIMEOUT), "incident")
    assert "secret" not in details and "RuntimeError" not in details
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)
