"""Crash safety under SIGKILL.

A subprocess server is killed at a random moment while one thread Trains a model and another
Steps a second one, 20 times, restarting it each time. After every restart each model loads,
at a version at least as new as the last one the client saw acknowledged, with finite weights
equal, byte for byte, to what that version committed: a Step's version is compared with the
weights its reply carried (or, for the one Step in flight at the kill, replayed as a dry run
from the version before), and a Train's version is replayed from the version the Train started
at (training is deterministic: version v0 + j is epoch j x report_every of the call).

Once more, with momentum: after one kill every field of a committed model (version, counters,
loss, times, weights, momentum state) and its predictions are exactly as before.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import grpc
import numpy as np
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, C, create, long_train_request, tensor, xor_train
from tests.support.stored import all_finite, explicit_layers, temp_files, weight_bytes, weights

from .workload import ARCH_M, ARCH_S, REPORT_EVERY, step_request, train_request

pytestmark = pytest.mark.slow

ITERATIONS = int(os.environ.get("JITNET_CRASH_ITERATIONS", "20"))


def _updated_layers(reply: pb.StepResponse) -> list[pb.Layer]:
    return [trace.updated for trace in reply.layers]


class _Stepper(threading.Thread):
    """Steps model `s` until the server dies, recording every acknowledged version's weights."""

    def __init__(self, stub, acked: dict, first: int):
        super().__init__(daemon=True)
        self.stub, self.acked, self.j = stub, acked, first
        self.in_flight: pb.StepRequest | None = None
        self.error: BaseException | None = None

    def run(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            request = step_request("s", self.j)
            self.in_flight = request
            try:
                reply = self.stub.Step(request, timeout=5)
            except grpc.RpcError as exc:
                if exc.code() not in (C.UNAVAILABLE, C.CANCELLED, C.DEADLINE_EXCEEDED):
                    self.error = exc
                return  # the server was killed
            self.acked[reply.model_version] = _updated_layers(reply)
            self.in_flight = None
            self.j += 1


class _TrainReader(threading.Thread):
    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.versions = stream, []
        self.error: BaseException | None = None

    def run(self):
        try:
            for reply in self.stream:
                self.versions.append(reply.model_version)
        except grpc.RpcError as exc:
            if exc.code() not in (C.UNAVAILABLE, C.CANCELLED):
                self.error = exc


def _replayed_step(stub, base_layers, request: pb.StepRequest) -> bytes:
    """The weights a Step makes from `base_layers`: a dry run on a scratch copy."""
    stub.CreateModel(pb.CreateModelRequest(model_id="replay-s", architecture=ARCH_S,
                                           layers=base_layers), timeout=TIMEOUT)
    try:
        dry = pb.StepRequest()
        dry.CopyFrom(request)
        dry.model_id, dry.dry_run = "replay-s", True
        reply = stub.Step(dry, timeout=TIMEOUT)
        return weight_bytes(pb.Model(layers=_updated_layers(reply)))
    finally:
        stub.DeleteModel(pb.DeleteModelRequest(model_id="replay-s"), timeout=TIMEOUT)


def _replayed_train(stub, start: pb.Model, versions: int) -> pb.Model:
    """The model after `versions` progress commits of the crash loop's Train from `start`."""
    stub.CreateModel(pb.CreateModelRequest(model_id="replay-m", architecture=ARCH_M,
                                           layers=explicit_layers(start)), timeout=TIMEOUT)
    try:
        replies = list(stub.Train(train_request("replay-m", versions * REPORT_EVERY),
                                  timeout=120))
        assert replies[-1].done and replies[-1].model_version == 1 + versions
        return weights(stub, "replay-m")
    finally:
        stub.DeleteModel(pb.DeleteModelRequest(model_id="replay-m"), timeout=TIMEOUT)


def test_sigkill_during_train_and_step_keeps_every_acknowledged_version(spawn, tmp_path):
    rng = random.Random(20261127)  # the kill moments, reproducible
    data_dir = tmp_path / "data"
    server = spawn(data_dir=data_dir)
    server.stub.CreateModel(pb.CreateModelRequest(model_id="m", architecture=ARCH_M, seed=1),
                            timeout=TIMEOUT)
    server.stub.CreateModel(pb.CreateModelRequest(model_id="s", architecture=ARCH_S, seed=2),
                            timeout=TIMEOUT)
    step_acked = {1: explicit_layers(weights(server.stub, "s"))}  # version -> layers
    # the replay of a Step is exact: a dry run on a copy gives what the real Step committed
    replayed = _replayed_step(server.stub, step_acked[1], step_request("s", 10**6))
    real = server.stub.Step(step_request("s", 10**6), timeout=TIMEOUT)
    assert weight_bytes(pb.Model(layers=_updated_layers(real))) == replayed
    step_acked[real.model_version] = _updated_layers(real)
    last_train_acked = 1
    next_step = 0
    outcomes = []
    for iteration in range(ITERATIONS):
        stub = server.stub
        start = weights(stub, "m")  # nobody else changes m between the kills
        stepper = _Stepper(stub, step_acked, next_step)
        stream = stub.Train(train_request("m", 10**6), timeout=60)
        reader = _TrainReader(stream)
        reader.start()
        stepper.start()
        # kill at a random moment once both are under way (a Train commits every ~ms here)
        began = time.monotonic()
        while not reader.versions and time.monotonic() - began < 20:
            time.sleep(0.005)
        assert reader.versions, f"iteration {iteration}: no Train progress\n{server.log}"
        time.sleep(rng.uniform(0.0, 0.4))
        server.kill()
        reader.join(10)
        stepper.join(10)
        assert not reader.is_alive() and not stepper.is_alive()
        assert reader.error is None and stepper.error is None, (reader.error, stepper.error)
        last_train_acked = max(reader.versions)
        next_step = stepper.j + 1

        server = spawn(data_dir=data_dir)  # restart on the same directory
        stub = server.stub
        assert not temp_files(data_dir), temp_files(data_dir)  # crash leftovers cleaned up
        listed = {m.id for m in stub.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT).models}
        assert listed == {"m", "s"}

        # the stepped model: the last acknowledged version, or the one Step in flight
        s = weights(stub, "s")
        acked = max(step_acked)
        assert all_finite(s)
        if s.version == acked:
            assert weight_bytes(s) == weight_bytes(pb.Model(layers=step_acked[acked]))
        else:
            assert s.version == acked + 1 and stepper.in_flight is not None, (s.version, acked)
            assert weight_bytes(s) == _replayed_step(stub, step_acked[acked], stepper.in_flight)
            step_acked[s.version] = explicit_layers(s)

        # the trained model: at least the last acknowledged version, and exactly what it was
        m = weights(stub, "m")
        assert m.version >= last_train_acked, (m.version, last_train_acked)
        assert all_finite(m)
        commits = m.version - start.version
        assert m.epochs_trained == start.epochs_trained + commits * REPORT_EVERY
        if commits:
            assert weight_bytes(m) == weight_bytes(_replayed_train(stub, start, commits))
        else:
            assert weight_bytes(m) == weight_bytes(start)
        outcomes.append((commits, m.version - last_train_acked, s.version - acked))
    print(f"\n{ITERATIONS} kills: (Train commits, Train versions committed but not yet "
          f"acknowledged, Step in flight committed) per kill: {outcomes}")
    assert len(outcomes) == ITERATIONS


def test_sigkill_and_restart_keep_versions_weights_and_predictions(spawn):
    first = spawn()
    stub = first.stub
    create(stub, "kept", sizes=(2, 8, 1), seed=4)
    list(stub.Train(xor_train("kept", 200, momentum=0.9, report_every=50), timeout=TIMEOUT))
    stub.Step(pb.StepRequest(model_id="kept", input=[1, 0], target=[1], learning_rate=0.1),
              timeout=TIMEOUT)
    create(stub, "mid", sizes=(2, 16, 1))
    probe = tensor(np.random.default_rng(5).random((50, 2)), raw=True)
    before = weights(stub, "kept")
    predicted = stub.Predict(pb.PredictRequest(model_id="kept", inputs=probe), timeout=TIMEOUT)
    # a Train streaming (and committing) when the process dies
    stream = stub.Train(long_train_request("mid", report_every=5), timeout=60)
    seen = [next(stream).model_version for _ in range(3)]
    first.kill()
    assert first.proc.returncode == -signal.SIGKILL

    second = spawn()
    after = weights(second.stub, "kept")
    assert (after.version, after.epochs_trained, after.iterations, after.last_loss) == (
        before.version, before.epochs_trained, before.iterations, before.last_loss) == (
        6, 200, 801, before.last_loss)
    assert after.create_time == before.create_time and after.update_time == before.update_time
    for a, b in zip(after.layers, before.layers, strict=True):
        assert a.weights.raw == b.weights.raw and a.biases.raw == b.biases.raw
    again = second.stub.Predict(pb.PredictRequest(model_id="kept", inputs=probe),
                                timeout=TIMEOUT)
    assert again.outputs.raw == predicted.outputs.raw and again.model_version == 6
    # the model killed mid-Train is at a committed version at least as new as the last reported
    mid = weights(second.stub, "mid")
    assert mid.version >= seen[-1]
    assert all(np.isfinite(np.frombuffer(layer.weights.raw)).all() for layer in mid.layers)
    # momentum state survived too: the next Train picks up where the killed one left off
    assert list(second.stub.Train(long_train_request("mid", epochs=5, momentum=0.5),
                                  timeout=TIMEOUT))[-1].model_version == mid.version + 1
