"""Drain, in process (ServerHandle.drain) and of a subprocess server (SIGTERM): health turns
NOT_SERVING and Watch streams end, new calls get UNAVAILABLE, calls in flight finish within
the grace, the exit code is 0; a call that outlives the grace is cut, its work stops and its
lease is freed, and the process still exits within the grace plus a small margin, also when its
handler is inside one long kernel call that cannot see the cut; a second signal cuts at once.

A health Watch stream left open (a load balancer watching) used to hold the drain for the
whole grace, being a call in flight like any other; the server now ends Watch streams when it
drains, so the drain takes as long as the real calls in flight."""

from __future__ import annotations

import contextlib
import signal
import time

import grpc
import numpy as np
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jitnet.service.errors import Busy
from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc
from tests.support.rpc import (
    NOT_SERVING,
    SERVICE,
    SERVING,
    TIMEOUT,
    C,
    code_of,
    create,
    long_train_request,
    tensor,
)
from tests.support.waiting import wait_for


def _refused(port: int) -> bool:
    """Whether a new call on a new connection is refused (UNAVAILABLE)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return code_of(lambda: pb_grpc.NetworkServiceStub(channel).ListModels(
            pb.ListModelsRequest(), timeout=2)) == C.UNAVAILABLE


def _lease_free(store, model_id) -> bool:
    with contextlib.suppress(Busy):
        store.lease(model_id).release()
        return True
    return False


def _epochs_for(stub, model_id: str, seconds: float) -> int:
    """Epochs of long_train_request's data this machine trains in about `seconds` now."""
    probe = list(stub.Train(long_train_request(model_id, epochs=300), timeout=TIMEOUT))[-1]
    return max(20, int(seconds * 300 / max(probe.elapsed_seconds, 1e-3)))


# -- in process ---------------------------------------------------------------------------------


def test_drain_ends_watches_refuses_new_calls_and_finishes_calls_in_flight(server):
    """Open health Watch streams (a load balancer watching) end at once, so they do not hold
    the drain for the whole grace; the call in flight finishes."""
    create(server.stub, "d")
    health = health_pb2_grpc.HealthStub(server.channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(service=name), timeout=30)
               for name in ("", SERVICE, SERVICE)]
    for watch in watches:
        assert next(watch).status == SERVING
    stream = server.stub.Train(long_train_request("d", epochs=300, report_every=10), timeout=30)
    first = next(stream)
    began = time.monotonic()
    stopped = server.handle.drain(20)
    for watch in watches:
        assert [r.status for r in watch] == [NOT_SERVING]  # then the stream ends
    assert _refused(server.port)
    rest = list(stream)  # the call in flight finishes normally
    assert rest[-1].done and rest[-1].epoch == 300 and rest[-1].model_version > first.model_version
    assert stopped.wait(5)
    assert time.monotonic() - began < 3


def test_a_call_outliving_the_grace_is_cut_and_its_work_stops(server):
    create(server.stub, "cut")
    stream = server.stub.Train(long_train_request("cut"), timeout=30)
    next(stream)
    stopped = server.handle.drain(0.3)
    assert code_of(lambda: list(stream)) in (C.CANCELLED, C.UNAVAILABLE, C.ABORTED)
    assert stopped.wait(10)
    # the training loop saw the cut: the lease is free (a store call succeeds at once)
    wait_for(lambda: _lease_free(server.handle.store, "cut"), 5, what="lease freed")


# -- a server process and SIGTERM ---------------------------------------------------------------


@pytest.mark.slow
def test_drain_with_an_open_watch_finishes_calls_in_flight_refuses_new_ones_and_exits_0(spawn):
    grace = 10.0
    server = spawn("--grace-seconds", str(grace))
    stub = server.stub
    create(stub, "inflight")
    epochs = _epochs_for(stub, "inflight", 0.7)
    watch = health_pb2_grpc.HealthStub(server.channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
    assert next(watch).status == SERVING
    stream = stub.Train(long_train_request("inflight", epochs=epochs,
                                           report_every=max(1, epochs // 10)), timeout=30)
    first = next(stream)
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    # health first: the watcher hears NOT_SERVING, then its stream ends (status OK), so it
    # does not hold the drain
    assert next(watch).status == NOT_SERVING
    assert list(watch) == [] and watch.code() == C.OK
    wait_for(lambda: _refused(server.port), 3, what="new calls refused")
    rest = list(stream)  # the call in flight finishes, every progress committed
    assert rest[-1].done and rest[-1].epoch == epochs
    assert rest[-1].model_version > first.model_version
    assert server.wait(grace) == 0
    took = time.monotonic() - began
    # as long as the call in flight took, not the 10 s grace the open Watch used to hold
    assert took < 5.0, took
    assert "draining" in server.log and "stopped" in server.log
    # everything it acknowledged is there after a restart
    again = spawn(data_dir=server.data_dir)
    assert again.stub.GetModel(pb.GetModelRequest(model_id="inflight"),
                               timeout=TIMEOUT).model.version == rest[-1].model_version


@pytest.mark.slow
def test_calls_outliving_the_grace_are_cut_and_the_process_exits_in_time(spawn):
    """Two calls outlive a 1 s grace: a Train that sees the cut between chunks, and a Train
    whose first epoch is one kernel call of several seconds that cannot. The process exits 0
    within the grace + 2.5 s all the same, and a restart finds every model at a committed
    version."""
    grace = 1.0
    server = spawn("--grace-seconds", str(grace))
    stub = server.stub
    create(stub, "cooperative")
    stub.CreateModel(pb.CreateModelRequest(
        model_id="stubborn", architecture=pb.Architecture(layer_sizes=[500, 1000, 1])),
        timeout=TIMEOUT)
    cooperative = stub.Train(long_train_request("cooperative"), timeout=60)
    next(cooperative)
    rng = np.random.default_rng(0)
    process = psutil.Process(server.proc.pid)
    cpu_before = sum(process.cpu_times()[:2])
    # one sample at a time through 0.5M weights: 8,000 of them take seconds in one kernel call
    stubborn = stub.Train(pb.TrainRequest(
        model_id="stubborn", inputs=tensor(rng.random((8000, 500)), raw=True),
        targets=tensor(rng.random((8000, 1)), raw=True), epochs=1, learning_rate=0.01),
        timeout=60)
    # wait until its epoch is computing (the process burns CPU; no progress can come yet)
    wait_for(lambda: sum(process.cpu_times()[:2]) - cpu_before > 0.6, 15,
             what="the long epoch under way")
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    for stream in (cooperative, stubborn):
        assert code_of(lambda stream=stream: list(stream)) in (C.CANCELLED, C.UNAVAILABLE)
    assert server.wait(grace + 10) == 0
    took = time.monotonic() - began
    assert took < grace + 2.5, took
    assert "exiting without them" in server.log
    again = spawn(data_dir=server.data_dir)
    models = {m.id: m.version for m in again.stub.ListModels(pb.ListModelsRequest(),
                                                            timeout=TIMEOUT).models}
    assert models.keys() == {"cooperative", "stubborn"} and models["stubborn"] == 1


@pytest.mark.slow
def test_a_call_cut_at_the_grace_ends_and_the_process_exits_0(spawn):
    """Only a Train that sees the cut between chunks outlives the grace: the process waits for
    its handler to return (the exit margin) and exits 0 the ordinary way."""
    grace = 1.0
    server = spawn("--grace-seconds", str(grace))
    create(server.stub, "long")
    stream = server.stub.Train(long_train_request("long"), timeout=60)
    next(stream)
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    assert code_of(lambda: list(stream)) in (C.CANCELLED, C.UNAVAILABLE)
    assert server.wait(grace + 10) == 0
    assert time.monotonic() - began < grace + 2.5
    assert "draining" in server.log and "stopped" in server.log


@pytest.mark.slow
def test_a_second_signal_cuts_at_once(spawn):
    server = spawn("--grace-seconds", "30")
    create(server.stub, "t")
    stream = server.stub.Train(long_train_request("t"), timeout=60)
    next(stream)
    server.signal(signal.SIGTERM)
    wait_for(lambda: "draining" in server.log, 5, what="the drain to begin")
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    assert code_of(lambda: list(stream)) in (C.CANCELLED, C.UNAVAILABLE)
    assert server.wait(10) == 0
    assert time.monotonic() - began < 3.5
