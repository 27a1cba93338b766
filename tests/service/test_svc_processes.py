"""Servers as processes: `python -m jitnet.service.server --port 0`, killed, restarted, drained,
and two of them sharing one data directory (as compose replicas do)."""

from __future__ import annotations

import signal
import time

import grpc
import numpy as np
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.support.rpc import (NOT_SERVING, SERVING, TIMEOUT, XOR_X, XOR_Y, ServerProcess, code_of,
                         create, long_train_request, tensor, wait_for)

C = grpc.StatusCode


@pytest.fixture
def spawn(tmp_path):
    started: list[ServerProcess] = []

    def start(*args: str, data_dir=None) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", *args)
        started.append(server)
        server.wait_serving()
        return server

    yield start
    for server in started:
        server.close()


def _weights(stub, model_id):
    return stub.GetModel(pb.GetModelRequest(model_id=model_id, include_weights=True, raw=True),
                         timeout=TIMEOUT).model


def test_sigkill_and_restart_keep_versions_weights_and_predictions(spawn, tmp_path):
    first = spawn()
    stub = first.stub
    create(stub, "kept", sizes=(2, 8, 1), seed=4)
    list(stub.Train(pb.TrainRequest(model_id="kept", inputs=tensor(XOR_X), targets=tensor(XOR_Y),
                                    epochs=200, learning_rate=0.5, momentum=0.9,
                                    report_every=50), timeout=TIMEOUT))
    stub.Step(pb.StepRequest(model_id="kept", input=[1, 0], target=[1], learning_rate=0.1),
              timeout=TIMEOUT)
    create(stub, "mid", sizes=(2, 16, 1))
    probe = tensor(np.random.default_rng(5).random((50, 2)), raw=True)
    before = _weights(stub, "kept")
    predicted = stub.Predict(pb.PredictRequest(model_id="kept", inputs=probe), timeout=TIMEOUT)
    # a Train streaming (and committing) when the process dies
    stream = stub.Train(long_train_request("mid", report_every=5), timeout=60)
    seen = [next(stream).model_version for _ in range(3)]
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL

    second = spawn()
    after = _weights(second.stub, "kept")
    assert (after.version, after.epochs_trained, after.iterations, after.last_loss) == (
        before.version, before.epochs_trained, before.iterations, before.last_loss) == (
        6, 200, 801, before.last_loss)
    assert after.create_time == before.create_time and after.update_time == before.update_time
    for a, b in zip(after.layers, before.layers):
        assert a.weights.raw == b.weights.raw and a.biases.raw == b.biases.raw
    again = second.stub.Predict(pb.PredictRequest(model_id="kept", inputs=probe),
                                timeout=TIMEOUT)
    assert again.outputs.raw == predicted.outputs.raw and again.model_version == 6
    # the model killed mid-Train is at a committed version at least as new as the last reported
    mid = _weights(second.stub, "mid")
    assert mid.version >= seen[-1]
    assert all(np.isfinite(np.frombuffer(layer.weights.raw)).all() for layer in mid.layers)
    # momentum state survived too: the next Train picks up where the killed one left off
    assert list(second.stub.Train(long_train_request("mid", epochs=5, momentum=0.5),
                                  timeout=TIMEOUT))[-1].model_version == mid.version + 1


def test_two_processes_share_one_data_directory(spawn):
    a = spawn()
    b = spawn(data_dir=a_dir(a))
    create(a.stub, "shared", seed=2)
    began = time.monotonic()
    reply = wait_for(lambda: _try_predict(b.stub, "shared"), 2, what="B serving A's model")
    assert time.monotonic() - began < 1.0 and reply.model_version == 1
    assert [m.id for m in b.stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models] == [
        "shared"]
    # trained through A, served by B at the new version within a second
    last = list(a.stub.Train(pb.TrainRequest(model_id="shared", inputs=tensor(XOR_X),
                                             targets=tensor(XOR_Y), epochs=300,
                                             learning_rate=0.5), timeout=TIMEOUT))[-1]
    began = time.monotonic()
    wait_for(lambda: _version(b.stub, "shared") == last.model_version, 2,
             what="B serving the new version")
    assert time.monotonic() - began < 1.0
    via_a = a.stub.Predict(pb.PredictRequest(model_id="shared", inputs=tensor(XOR_X, raw=True)),
                           timeout=TIMEOUT)
    via_b = b.stub.Predict(pb.PredictRequest(model_id="shared", inputs=tensor(XOR_X, raw=True)),
                           timeout=TIMEOUT)
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
    wait_for(lambda: _train_ok(b.stub, "shared"), 5, what="the cross-process lock freed")
    # deleted through B, gone from A
    b.stub.DeleteModel(pb.DeleteModelRequest(model_id="shared"), timeout=TIMEOUT)
    wait_for(lambda: _try_predict(a.stub, "shared") is None, 2, what="A sees the delete")


def a_dir(server: ServerProcess):
    return server.proc.args[server.proc.args.index("--data-dir") + 1]


def _try_predict(stub, model_id):
    try:
        return stub.Predict(pb.PredictRequest(model_id=model_id, inputs=tensor(XOR_X)),
                            timeout=TIMEOUT)
    except grpc.RpcError as exc:
        assert exc.code() == C.NOT_FOUND, exc
        return None


def _version(stub, model_id) -> int:
    return stub.GetModel(pb.GetModelRequest(model_id=model_id), timeout=TIMEOUT).model.version


def _train_ok(stub, model_id) -> bool:
    try:
        return list(stub.Train(long_train_request(model_id, epochs=1), timeout=TIMEOUT))[-1].done
    except grpc.RpcError as exc:
        assert exc.code() == C.ABORTED, exc
        return False


def test_sigterm_drains_finishes_calls_in_flight_cuts_late_ones_and_exits_0(spawn):
    server = spawn("--grace-seconds", "3")
    stub = server.stub
    create(stub, "short")
    create(stub, "long")
    # calibrate: epochs of this data set per second on this machine (a Train that takes about
    # 0.5 s alone, so well within the 3 s grace with another Train beside it)
    probe = list(stub.Train(long_train_request("short", epochs=400), timeout=TIMEOUT))[-1]
    epochs = max(20, int(0.5 * 400 / max(probe.elapsed_seconds, 1e-3)))
    watch = health_pb2_grpc.HealthStub(server.channel).Watch(
        health_pb2.HealthCheckRequest(service="jitnet.v1.NetworkService"), timeout=30)
    assert next(watch).status == SERVING
    short = stub.Train(long_train_request("short", epochs=epochs, report_every=epochs // 5),
                       timeout=30)
    long = stub.Train(long_train_request("long"), timeout=30)
    next(short)
    next(long)
    server.signal(signal.SIGTERM)
    assert next(watch).status == NOT_SERVING

    def refused():
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            try:
                pb_grpc.NetworkServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=2)
                return False
            except grpc.RpcError as exc:
                return exc.code() == C.UNAVAILABLE
    wait_for(refused, 2, what="new calls refused")
    finished = list(short)  # in flight: finishes within the grace
    assert finished[-1].done and finished[-1].epoch == epochs
    assert code_of(lambda: list(long)) in (C.CANCELLED, C.UNAVAILABLE)  # outlived the grace
    assert server.wait(10) == 0
    assert "draining" in server.log and "stopped" in server.log
