"""The file store's own promises, beyond the contract (test_contract.py): its file format and
the reasons it gives for an unreadable file, leftovers of a crash, disk errors, the refresh
interval."""

from __future__ import annotations

import errno
import os
import struct

import numpy as np
import pytest

from jitnet.service.engine.model import (
    Activation,
    Architecture,
    GradientMode,
    Init,
    Loss,
    initial_parameters,
)
from jitnet.service.engine.optimizers import NO_STATE, Optimizer, OptimizerState
from jitnet.service.errors import DiskFull, FailedPrecondition, NotFound, StorageFailed
from jitnet.service.store import file as store_module
from jitnet.service.store.file import FORMAT_VERSION, MAGIC
from jitnet.service.store.file import FileStore as Store

ARCH = Architecture((3, 4, 2), hidden_activation=Activation.TANH,
                    output_activation=Activation.SOFTMAX, loss=Loss.CROSS_ENTROPY, bias=False,
                    gradient_mode=GradientMode.ARTICLE)


def _params(seed=0):
    return initial_parameters(ARCH, Init.HE, seed)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "d", refresh_seconds=0)
    s.open()
    return s


def test_a_reopened_directory_gives_back_every_field_exactly(store, tmp_path):
    params = _params()
    created = store.create("m", ARCH, params.copy())
    assert (created.version, created.epochs_trained, created.iterations) == (1, 0, 0)
    with store.lease("m") as lease:
        velocity = np.linspace(-1, 1, ARCH.n_params)
        committed = lease.commit(params * 2, OptimizerState.sgd(velocity, steps=4),
                                 epochs_trained=3, iterations=12, last_loss=0.25)
    assert (committed.version, committed.epochs_trained, committed.iterations) == (2, 3, 12)
    fresh = Store(tmp_path / "d")
    fresh.open()
    loaded = fresh.get("m")
    assert loaded.arch == ARCH
    assert (loaded.version, loaded.epochs_trained, loaded.iterations, loaded.last_loss) == (
        2, 3, 12, 0.25)
    assert loaded.create_time_ns == created.create_time_ns
    assert loaded.update_time_ns == committed.update_time_ns >= created.update_time_ns
    assert loaded.params.tobytes() == (params * 2).tobytes()
    assert loaded.velocity.tobytes() == velocity.tobytes()
    assert (loaded.optimizer.optimizer, loaded.optimizer.steps) == (Optimizer.SGD, 4)
    for array in (loaded.params, *loaded.optimizer.arrays, committed.params, created.params):
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 1.0
    assert loaded.network is loaded.network  # one Network per version
    raw = (tmp_path / "d" / "m.jitnet").read_bytes()
    assert raw[:8] == MAGIC and struct.unpack("<I", raw[8:12])[0] == 2


def test_refresh_interval_bounds_staleness(tmp_path):
    now = [0.0]
    a = Store(tmp_path, refresh_seconds=0)
    b = Store(tmp_path, refresh_seconds=0.5, clock=lambda: now[0])
    a.open()
    b.open()
    a.create("m", ARCH, _params())
    assert b.get("m").version == 1
    with a.lease("m") as lease:
        lease.commit(_params(1), NO_STATE, last_loss=0.5)
    now[0] = 0.4
    assert b.get("m").version == 1  # cached, not yet due for a stat
    now[0] = 0.6
    assert b.get("m").version == 2


def _corrupt(path, how):
    raw = bytearray(path.read_bytes())
    if how == "magic":
        raw[0:8] = b"NOTJITNT"
    elif how == "version":
        raw[8:12] = struct.pack("<I", FORMAT_VERSION + 1)  # a format from the future
    elif how == "checksum":
        raw[-40] ^= 1
    elif how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "empty":
        raw = b""
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how, reason", [("magic", "not a jitnet model file"),
                                         ("version", f"format version {FORMAT_VERSION + 1}"),
                                         ("checksum", "checksum mismatch"),
                                         ("truncated", "truncated"), ("empty", "truncated")])
def test_unreadable_files_fail_alone_and_can_be_deleted(tmp_path, how, reason):
    first = Store(tmp_path)
    first.open()
    first.create("ok", ARCH, _params())
    first.create("broken", ARCH, _params())
    _corrupt(tmp_path / "broken.jitnet", how)
    store = Store(tmp_path)
    report = store.open()
    assert report.loaded == ["ok"] and list(report.failed) == ["broken"]
    assert store.get("ok").version == 1
    for attempt in (lambda: store.get("broken"), lambda: store.lease("broken")):
        with pytest.raises(FailedPrecondition, match=reason) as info:
            attempt()
        assert "'broken'" in str(info.value) and "unreadable" in str(info.value)
    assert store.page("", 10) == ([store.get("ok")], False)
    store.delete("broken")
    with pytest.raises(NotFound):
        store.get("broken")


def test_leftover_temp_files_are_removed_but_not_ones_being_written(tmp_path):
    import fcntl
    leftover = tmp_path / ".tmp-m-123-dead"
    leftover.write_bytes(b"partial")
    busy = tmp_path / ".tmp-m-456-live"
    busy.write_bytes(b"in progress")
    fd = os.open(busy, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        store = Store(tmp_path)
        assert store.open().temp_files_removed == 1
        assert not leftover.exists() and busy.exists()
        assert store.ids() == []
    finally:
        os.close(fd)


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("code, kind", [(errno.ENOSPC, DiskFull), (errno.EIO, StorageFailed)])
def test_disk_errors_keep_the_previous_version_and_remove_the_temp_file(
        tmp_path, monkeypatch, where, code, kind):
    store = Store(tmp_path, refresh_seconds=0)
    store.open()
    store.create("m", ARCH, _params())
    before = (tmp_path / "m.jitnet").read_bytes()
    real = getattr(os, where)

    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store_module.os, where, failing)
    with store.lease("m") as lease, pytest.raises(kind) as info:
        lease.commit(_params(1), NO_STATE, last_loss=1.0)
    monkeypatch.setattr(store_module.os, where, real)
    assert "previous version is kept" in str(info.value)
    assert (tmp_path / "m.jitnet").read_bytes() == before
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []
    assert store.get("m").version == 1
    assert Store(tmp_path).get("m").version == 1
    with store.lease("m") as lease:  # and the lease still works afterwards
        assert lease.commit(_params(1), NO_STATE, last_loss=1.0).version == 2
