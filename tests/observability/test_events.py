"""What the engine and the store report through events.Events (metrics and traces listen)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from jitnet.service import events
from jitnet.service.engine import training
from jitnet.service.engine.model import Activation, Architecture, Init, Network, initial_parameters
from jitnet.service.errors import Busy, DiskFull, Diverged, FailedPrecondition, StorageFailed
from jitnet.service.store import file as store_module
from jitnet.service.store.file import FileStore

ARCH = Architecture((2, 3, 1))


class Recorder(events.Events):
    def __init__(self):
        self.seen = []

    def chunk_trained(self, epochs, iterations, seconds, loss):
        self.seen.append(("chunk", epochs, iterations, seconds >= 0, np.isfinite(loss)))

    def diverged(self):
        self.seen.append(("diverged",))

    def committed(self, model_id, version, seconds):
        self.seen.append(("committed", model_id, version, seconds > 0))

    def lease_refused(self, model_id):
        self.seen.append(("lease_refused", model_id))

    def store_failed(self, model_id, kind):
        self.seen.append(("store_failed", model_id, kind))


@pytest.fixture
def recorded(tmp_path):
    store = FileStore(tmp_path / "d", refresh_seconds=0)
    store.events = recorder = Recorder()
    store.open()
    store.create("m", ARCH, initial_parameters(ARCH, Init.XAVIER, 0))
    return store, recorder


def test_the_base_listens_to_nothing_and_is_every_stores_default():
    assert FileStore.events is events.QUIET
    assert events.QUIET.committed("m", 2, 0.1) is None


def test_commits_and_refused_leases(recorded):
    store, recorder = recorded
    with store.lease("m") as lease:
        lease.commit(lease.record.params.copy(), lease.record.optimizer, last_loss=0.5)
        with pytest.raises(Busy):
            store.lease("m")
        with pytest.raises(Busy):
            store.delete("m")
        lease.commit(lease.record.params.copy(), lease.record.optimizer, last_loss=0.4)
    assert recorder.seen == [("committed", "m", 2, True), ("lease_refused", "m"),
                             ("lease_refused", "m"), ("committed", "m", 3, True)]


@pytest.mark.parametrize("code, error, kind", [(errno.ENOSPC, DiskFull, "disk_full"),
                                               (errno.EIO, StorageFailed, "write")])
def test_failed_writes_name_their_kind(recorded, monkeypatch, code, error, kind):
    store, recorder = recorded

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store_module.os, "fsync", failing)
    with store.lease("m") as lease, pytest.raises(error):
        lease.commit(lease.record.params.copy(), lease.record.optimizer, last_loss=0.5)
    assert recorder.seen == [("store_failed", "m", kind)]  # and no commit


def test_an_unreadable_file_is_reported_once(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "bad.jitnet").write_bytes(b"nonsense")
    store = FileStore(tmp_path / "d", refresh_seconds=0)
    store.events = recorder = Recorder()
    assert store.open().failed.keys() == {"bad"}
    for _ in range(3):
        with pytest.raises(FailedPrecondition):
            store.get("bad")
    assert recorder.seen == [("store_failed", "bad", "unreadable")]


def test_training_reports_each_chunk_and_a_divergence():
    recorder = Recorder()
    net = Network.initialise(ARCH, Init.XAVIER, 1)
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([[0.0], [1.0], [1.0], [0.0]])
    progress = list(training.train(net, x, y, training.TrainOptions(epochs=50, learning_rate=0.5,
                                                                   report_every=7),
                                   events=recorder))
    chunks = [e for e in recorder.seen if e[0] == "chunk"]
    assert progress[-1].epoch == 50 and sum(c[1] for c in chunks) == 50
    assert all(c[2] == 4 * c[1] and c[3] and c[4] for c in chunks)
    assert len(chunks) >= len(progress)  # a chunk never spans two reports

    recorder.seen.clear()
    linear = Network.initialise(Architecture((2, 4, 1), Activation.LINEAR, Activation.LINEAR),
                                seed=1)
    with pytest.raises(Diverged), np.errstate(over="ignore", invalid="ignore"):
        for _ in training.train(linear, x, y, training.TrainOptions(epochs=1000,
                                                                    learning_rate=1e6),
                                events=recorder):
            pass
    assert recorder.seen[-1] == ("diverged",)
    assert recorder.seen[-2][0] == "chunk" and not recorder.seen[-2][4]  # its loss: non-finite
