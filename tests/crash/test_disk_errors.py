"""Disk full and I/O errors: os.write, os.fsync and os.replace (and os.link, for a create) fail
with ENOSPC, EDQUOT or EIO for files in the data directory of an in-process server. The call
fails with RESOURCE_EXHAUSTED "disk ... full" or INTERNAL naming the OS's reason, the previous
version is intact and no temp file is left; the next call after the disk recovers succeeds.
(The file store's own handling, below the RPCs, is tested in tests/store.)"""

from __future__ import annotations

import errno
import os

import pytest

from jitnet.v1 import jitnet_pb2 as pb
from tests.support.rpc import TIMEOUT, C, expect_error
from tests.support.stored import fingerprint, temp_files, weight_bytes, weights

from .workload import ARCH_S, step_request, train_request


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
            "Step": lambda: stub.Step(step_request("d", 0), timeout=TIMEOUT),
            "Train": lambda: stub.Train(train_request("d", 3, outputs=2), timeout=TIMEOUT),
            "CreateModel": lambda: stub.CreateModel(pb.CreateModelRequest(
                model_id="fresh", architecture=ARCH_S), timeout=TIMEOUT),
        }
        for rpc, call in calls.items():
            expect_error(status, call, *words)
            assert not temp_files(data_dir), (rpc, temp_files(data_dir))
            assert fingerprint(data_dir) == before, rpc
    # the previous version is intact, served, and the model can change again
    again = weights(stub, "d")
    assert (again.version, weight_bytes(again)) == (kept.version, weight_bytes(kept))
    assert stub.Step(step_request("d", 0), timeout=TIMEOUT).model_version == 2
    trained = list(stub.Train(train_request("d", 3, outputs=2), timeout=TIMEOUT))
    assert trained[-1].model_version == 3
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
    assert stub.Step(step_request("d", 0), timeout=TIMEOUT).model_version == 2
    monkeypatch.undo()
    assert weights(stub, "d").version == 2 and not temp_files(server.data_dir)


def test_a_failed_delete_keeps_the_model(make_server, monkeypatch):
    server = make_server()
    stub = server.stub
    stub.CreateModel(pb.CreateModelRequest(model_id="d", architecture=ARCH_S), timeout=TIMEOUT)
    _failing(monkeypatch, server.data_dir, "unlink", errno.EIO)
    expect_error(C.INTERNAL, lambda: stub.DeleteModel(pb.DeleteModelRequest(model_id="d"),
                                                      timeout=TIMEOUT), "Input/output error")
    monkeypatch.undo()
    assert weights(stub, "d").version == 1
