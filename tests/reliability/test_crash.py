"""Crash safety.

SIGKILL: a subprocess server is killed at a random moment while one thread Trains a model and
another Steps a second one, 20 times, restarting it each time. After every restart each model
loads, at a version at least as new as the last one the client saw acknowledged, with finite
weights equal, byte for byte, to what that version committed: a Step's version is compared
with the weights its reply carried (or, for the one Step in flight at the kill, replayed as a
dry run from the version before), and a Train's version is replayed from the version the Train
started at (training is deterministic: version v0 + j is epoch j x report_every of the call).

Disk full and I/O errors: os.write, os.fsync and os.replace (and os.link, for a create) fail
with ENOSPC or EIO for files in the data directory of an in-process server. The call fails
with RESOURCE_EXHAUSTED "disk ... full" or INTERNAL naming the OS's reason, the previous
version is intact and no temp file is left; the next call after the disk recovers succeeds.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time

import grpc
import numpy as np
import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.stored import (C, TIMEOUT, all_finite, explicit_layers, fingerprint, temp_files,
                         weight_bytes, weights)
from tests.support.rpc import error_of, tensor

ITERATIONS = int(os.environ.get("JITNET_CRASH_ITERATIONS", "20"))
REPORT_EVERY = 10
ARCH_M = pb.Architecture(layer_sizes=[8, 64, 8], hidden_activation=pb.ACTIVATION_TANH,
                         output_activation=pb.ACTIVATION_LINEAR)  # 1096 parameters, 17 KB file
ARCH_S = pb.Architecture(layer_sizes=[8, 32, 2])


def _train_request(model_id: str, epochs: int, outputs: int = 8) -> pb.TrainRequest:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 8))
    y = np.tanh(x @ rng.normal(size=(8, outputs)) / 3)
    # momentum 0: the update does not read the stored momentum state, so a replay from the
    # weights alone is exact
    return pb.TrainRequest(model_id=model_id, inputs=tensor(x, raw=True),
                           targets=tensor(y, raw=True), epochs=epochs, learning_rate=0.01,
                           batch_size=4, shuffle=True, seed=11, report_every=REPORT_EVERY)


def _step_request(model_id: str, j: int) -> pb.StepRequest:
    rng = np.random.default_rng(j)
    return pb.StepRequest(model_id=model_id, input=rng.random(8).tolist(),
                          target=rng.random(2).tolist(), learning_rate=0.05)


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
            request = _step_request("s", self.j)
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
        replies = list(stub.Train(_train_request("replay-m", versions * REPORT_EVERY),
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
    replayed = _replayed_step(server.stub, step_acked[1], _step_request("s", 10**6))
    real = server.stub.Step(_step_request("s", 10**6), timeout=TIMEOUT)
    assert weight_bytes(pb.Model(layers=_updated_layers(real))) == replayed
    step_acked[real.model_version] = _updated_layers(real)
    last_train_acked = 1
    next_step = 0
    outcomes = []
    for iteration in range(ITERATIONS):
        stub = server.stub
        start = weights(stub, "m")  # nobody else changes m between the kills
        stepper = _Stepper(stub, step_acked, next_step)
        stream = stub.Train(_train_request("m", 10**6), timeout=60)
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


# -- disk full and I/O errors -------------------------------------------------------------------


def _in(data_dir: str, fd_or_path) -> bool:
    """Whether a descriptor or path is in the data directory (other files are left alone)."""
    if isinstance(fd_or_path, int):
        try:
            path = os.readlink(f"/proc/self/fd/{fd_or_path}")
        except OSError:
            return False
    else:
        path = os.path.abspath(os.fspath(fd_or_path))
    return path == data_dir or path.startswith(data_dir + os.sep)


def _failing(monkeypatch, data_dir: str, name: str, code: int) -> None:
    real = getattr(os, name)

    def fail(target, *args, **kwargs):
        if _in(data_dir, args[0] if name in ("replace", "link") and args else target):
            raise OSError(code, os.strerror(code))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, name, fail)


@pytest.mark.parametrize("name", ["write", "fsync", "replace"], ids=["write", "fsync",
                                                                  "replace-or-link"])
@pytest.mark.parametrize("code, status, words", [
    (errno.ENOSPC, C.RESOURCE_EXHAUSTED, ["disk", "full", "previous version is kept"]),
    (errno.EDQUOT, C.RESOURCE_EXHAUSTED, ["disk", "full"]),
    (errno.EIO, C.INTERNAL, ["Input/output error", "previous version is kept"]),
], ids=["ENOSPC", "EDQUOT", "EIO"])
def test_disk_errors_fail_the_call_and_keep_the_previous_version(make_server, monkeypatch,
                                                                 name, code, status, words):
    server = make_server()
    stub = server.stub
    data_dir = server.data_dir
    stub.CreateModel(pb.CreateModelRequest(model_id="d", architecture=ARCH_S, seed=5),
                     timeout=TIMEOUT)
    before = fingerprint(data_dir)
    kept = weights(stub, "d")
    with monkeypatch.context() as patch:
        _failing(patch, data_dir, name, code)
        if name == "replace":  # a create links its temp file into place instead
            _failing(patch, data_dir, "link", code)
        calls = {
            "Step": lambda: stub.Step(_step_request("d", 0), timeout=TIMEOUT),
            "Train": lambda: stub.Train(_train_request("d", 3, outputs=2), timeout=TIMEOUT),
            "CreateModel": lambda: stub.CreateModel(pb.CreateModelRequest(
                model_id="fresh", architecture=ARCH_S), timeout=TIMEOUT),
        }
        for rpc, call in calls.items():
            exc = error_of(call)
            assert exc.code() == status, (rpc, exc.code(), exc.details())
            for word in words:
                assert word in exc.details(), (rpc, word, exc.details())
            assert not temp_files(data_dir), (rpc, temp_files(data_dir))
            assert fingerprint(data_dir) == before, rpc
    # the previous version is intact, served, and the model can change again
    again = weights(stub, "d")
    assert (again.version, weight_bytes(again)) == (kept.version, weight_bytes(kept))
    assert stub.Step(_step_request("d", 0), timeout=TIMEOUT).model_version == 2
    assert list(stub.Train(_train_request("d", 3, outputs=2), timeout=TIMEOUT))[-1].model_version == 3
    assert stub.CreateModel(pb.CreateModelRequest(model_id="fresh", architecture=ARCH_S),
                            timeout=TIMEOUT).model.version == 1


def test_a_failed_directory_fsync_after_the_rename_keeps_the_new_version(make_server,
                                                                        monkeypatch):
    """Only the rename's durability is in doubt then: the call succeeds and says so in the log
    (the new file is in place and complete)."""
    server = make_server()
    stub = server.stub
    stub.CreateModel(pb.CreateModelRequest(model_id="d", architecture=ARCH_S), timeout=TIMEOUT)
    real = os.fsync

    def fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}") and _in(server.data_dir, fd):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert stub.Step(_step_request("d", 0), timeout=TIMEOUT).model_version == 2
    monkeypatch.undo()
    assert weights(stub, "d").version == 2 and not temp_files(server.data_dir)


def test_a_failed_delete_keeps_the_model(make_server, monkeypatch):
    server = make_server()
    stub = server.stub
    stub.CreateModel(pb.CreateModelRequest(model_id="d", architecture=ARCH_S), timeout=TIMEOUT)
    _failing(monkeypatch, server.data_dir, "unlink", errno.EIO)
    exc = error_of(lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="d"),
                                            timeout=TIMEOUT))
    assert exc.code() == C.INTERNAL and "Input/output error" in exc.details()
    monkeypatch.undo()
    assert weights(stub, "d").version == 1
