"""The file store, the embedded default: one directory, one file per model (base.ModelStore).

Layout of the data directory:

    <id>.jitnet             a model (model_format.py)
    .locks/<id>.lock        the per-model training lock (flock); made only for an existing
                            model, kept when the model is deleted
    .tmp-<id>-<pid>-<rand>  a write in progress; a crash can leave one behind, it is cleaned up

A model file is one version in model_format's encoding (magic, format version, metadata,
parameters, optimizer state, sha256), the same bytes the PostgreSQL store keeps in a row.

Writes go to a temp file in the same directory, are fsynced, renamed over the old file
(os.replace, or os.link for a create so two creators cannot both win) and the directory is
fsynced: a reader or a crash sees the old version or the new one, never a mix.

Several server processes may share a directory. A cached model is checked against its file
(os.stat: inode, size, mtime) at most every `refresh_seconds`, and the id list is rescanned as
often, so a commit by one process is served by the others soon after. Changing a model (Train,
Step, Delete) takes a lease: an exclusive, non-blocking `flock` on the model's lock file, which
excludes other processes and, because each lease opens its own descriptor, other threads too.

Records are immutable: their arrays are read-only, and a commit makes a new record, so a reader
holding a record (Predict) never sees half-updated weights.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np

from ..engine.model import Architecture
from ..engine.optimizers import OptimizerState
from ..errors import AlreadyExists, Busy, DiskFull, FailedPrecondition, NotFound, StorageFailed
from . import model_format
from .base import Lease, LoadReport, ModelRecord, ModelStore, is_valid_id, validate_id
from .model_format import FORMAT_VERSION, HEADER, HEADER_V1, MAGIC  # noqa: F401 - the format

_LOGGER = logging.getLogger(__name__)

SUFFIX = ".jitnet"
_TMP_PREFIX = ".tmp-"
_LOCK_DIR = ".locks"


class _Signature(NamedTuple):
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> _Signature:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclasses.dataclass
class _Entry:
    record: ModelRecord | None  # the newest readable version (None: never read one)
    error: str | None  # why the current file cannot be read; None when it can
    signature: _Signature
    checked_at: float


_Unreadable = model_format.Unreadable


class FileStore(ModelStore):
    """Models in `data_dir`, one file each. Thread-safe; several processes may share the
    directory."""

    def __init__(self, data_dir: str | os.PathLike, *, refresh_seconds: float = 0.5,
                 clock: Callable[[], float] = time.monotonic):
        self.data_dir = os.path.abspath(os.fspath(data_dir))
        self.location = self.data_dir
        self._refresh = float(refresh_seconds)
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._ids: list[str] = []
        self._scanned_at: float | None = None
        # Serialises reading files into the cache, so an older read never replaces a newer one.
        self._lock = threading.RLock()

    # -- start-up -------------------------------------------------------------------------------

    def open(self) -> LoadReport:
        """Creates the directory, removes abandoned temp files and loads every model. A model
        whose file is unreadable is remembered with the reason; the others serve."""
        os.makedirs(os.path.join(self.data_dir, _LOCK_DIR), exist_ok=True)
        removed = self._remove_abandoned_temp_files()
        loaded, failed = [], {}
        with self._lock:
            for model_id in self._scan():
                entry = self._refresh_entry(model_id, force=True)
                if entry is None:
                    continue
                if entry.error is not None:
                    failed[model_id] = entry.error  # logged when it was read
                else:
                    loaded.append(model_id)
        return LoadReport(loaded, failed, removed)

    def _remove_abandoned_temp_files(self) -> int:
        """A temp file nobody holds a lock on is left over from a crash (writers lock theirs)."""
        removed = 0
        for name in os.listdir(self.data_dir):
            if not name.startswith(_TMP_PREFIX):
                continue
            path = os.path.join(self.data_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
                removed += 1
            except OSError:
                pass  # being written by a live process, or already gone
            finally:
                os.close(fd)
        if removed:
            _LOGGER.info("removed %d abandoned temp file(s) from %s", removed, self.data_dir)
        return removed

    # -- reading --------------------------------------------------------------------------------

    def _path(self, model_id: str) -> str:
        return os.path.join(self.data_dir, model_id + SUFFIX)

    def get(self, model_id: str) -> ModelRecord:
        """The newest committed version. NotFound, or FailedPrecondition for a model whose
        stored file cannot be read (and that this process never read a good version of)."""
        entry = self._entries.get(model_id)  # only valid ids are ever cached
        if entry is None or self._clock() - entry.checked_at >= self._refresh:
            validate_id(model_id)
            with self._lock:
                entry = self._refresh_entry(model_id)
        if entry is None:
            raise NotFound(f"model '{model_id}' not found")
        if entry.record is None:
            raise FailedPrecondition(entry.error)
        return entry.record

    def reread(self, model_id: str) -> ModelRecord:
        """The newest committed version, its file checked now (re-read if it changed)."""
        validate_id(model_id)
        with self._lock:
            entry = self._refresh_entry(model_id, force=True)
        if entry is None:
            raise NotFound(f"model '{model_id}' not found")
        if entry.record is None:
            raise FailedPrecondition(entry.error)
        return entry.record

    def _refresh_entry(self, model_id: str, force: bool = False) -> _Entry | None:
        """Re-reads the model's file when it changed since it was cached. Call with _lock held."""
        now = self._clock()
        entry = self._entries.get(model_id)
        if entry is not None and not force and now - entry.checked_at < self._refresh:
            return entry  # another thread refreshed it while we waited for the lock
        path = self._path(model_id)
        try:
            signature = _Signature.of(os.stat(path))
        except FileNotFoundError:
            self._forget(model_id)
            return None
        if entry is not None and entry.signature == signature:
            entry.checked_at = now
            return entry
        try:
            record, signature = _read(path, model_id)
            entry = _Entry(record, None, signature, now)
        except FileNotFoundError:
            self._forget(model_id)
            return None
        except (_Unreadable, OSError) as exc:
            why = (f"model '{model_id}' cannot be used: its stored file {model_id}{SUFFIX} is "
                   f"unreadable ({exc}). Delete the model, or restore the file from a backup")
            if entry is None or entry.error != why:
                _LOGGER.error("%s", why)
                self.events.store_failed(model_id, "unreadable")
            # Keep serving the last good version read (if any), as TF Serving keeps v1 when v2
            # fails to load; changing the model needs a readable file.
            entry = _Entry(entry.record if entry else None, why, signature, now)
        self._entries[model_id] = entry
        if model_id not in self._ids:
            self._ids.append(model_id)
            self._ids.sort()
        return entry

    def _forget(self, model_id: str) -> None:
        self._entries.pop(model_id, None)
        if model_id in self._ids:
            self._ids.remove(model_id)

    def _scan(self) -> list[str]:
        """Rescans the directory for model files. Call with _lock held."""
        ids = []
        for name in os.listdir(self.data_dir):
            if name.endswith(SUFFIX) and not name.startswith("."):
                model_id = name[: -len(SUFFIX)]
                if is_valid_id(model_id):
                    ids.append(model_id)
        ids.sort()
        for gone in set(self._entries) - set(ids):
            del self._entries[gone]
        self._ids = ids
        self._scanned_at = self._clock()
        return ids

    def ids(self) -> list[str]:
        """Every model id, sorted; rescanned at most every refresh_seconds."""
        with self._lock:
            if self._scanned_at is None or self._clock() - self._scanned_at >= self._refresh:
                self._scan()
            return list(self._ids)

    # -- writing --------------------------------------------------------------------------------

    def create(self, model_id: str, arch: Architecture, params: np.ndarray,
               metadata: Mapping[str, str] | None = None) -> ModelRecord:
        """Version 1 of a new model. AlreadyExists when the id is taken, also by a model
        another process created a moment ago."""
        validate_id(model_id)
        record = ModelRecord.first_version(model_id, arch, params, metadata)
        path = self._path(model_id)
        if os.path.exists(path):
            raise AlreadyExists(f"model '{model_id}' already exists; pick another id, or "
                                "delete it first")
        with self._lock:
            signature = self._write(record, exclusive=True)
            self._entries[model_id] = _Entry(record, None, signature, self._clock())
            if model_id not in self._ids:
                self._ids.append(model_id)
                self._ids.sort()
        return record

    def lease(self, model_id: str) -> FileLease:
        """The exclusive right to change a model, across threads and processes. Busy when
        another call holds it; the lease holds the newest committed record."""
        validate_id(model_id)
        if not os.path.exists(self._path(model_id)):
            # No lock file for an id that names no model: callers cannot fill .locks/.
            raise NotFound(f"model '{model_id}' not found")
        lease = self._lock_only(model_id)
        try:
            with self._lock:
                entry = self._refresh_entry(model_id, force=True)
            if entry is None:
                raise NotFound(f"model '{model_id}' not found")
            if entry.error is not None:
                raise FailedPrecondition(entry.error)
            lease.record = entry.record
            return lease
        except BaseException:
            lease.release()
            raise

    def delete(self, model_id: str) -> None:
        """Removes a model, also one whose file is unreadable. Busy while it is being trained."""
        validate_id(model_id)
        if not os.path.exists(self._path(model_id)):
            with self._lock:
                self._forget(model_id)
            raise NotFound(f"model '{model_id}' not found")
        with self._lock_only(model_id):
            try:
                os.unlink(self._path(model_id))
            except FileNotFoundError:
                with self._lock:
                    self._forget(model_id)
                raise NotFound(f"model '{model_id}' not found") from None
            except OSError as exc:
                self.events.store_failed(model_id, "write")
                raise StorageFailed(f"could not delete model '{model_id}': "
                                    f"{exc.strerror or exc}") from None
            self._fsync_dir()
            with self._lock:
                self._forget(model_id)

    def _lock_only(self, model_id: str) -> FileLease:
        """Takes the model's lock without reading the model (Delete needs no readable file)."""
        validate_id(model_id)
        lock_path = os.path.join(self.data_dir, _LOCK_DIR, model_id + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the lock directory went away: recreate it
            os.makedirs(os.path.dirname(lock_path), exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.events.lease_refused(model_id)
            raise Busy(f"model '{model_id}' is being trained by another call; try again when "
                       "it finishes (Predict and GetModel keep working meanwhile)") from None
        return FileLease(self, model_id, fd, None)

    def _commit(self, record: ModelRecord) -> None:
        with self._lock:
            signature = self._write(record, exclusive=False)
            self._entries[record.id] = _Entry(record, None, signature, self._clock())

    def _write(self, record: ModelRecord, *, exclusive: bool) -> _Signature:
        """Temp file, fsync, rename into place, fsync the directory. On failure the previous
        file is untouched and the temp file removed."""
        path = self._path(record.id)
        fd, tmp = self._new_temp(record.id)
        try:
            try:
                _write_record(fd, record)
                os.fsync(fd)
                if exclusive:
                    try:
                        os.link(tmp, path)  # fails if the id exists, even across processes
                    except FileExistsError:
                        raise AlreadyExists(f"model '{record.id}' already exists; pick another "
                                            "id, or delete it first") from None
                    os.unlink(tmp)
                else:
                    os.replace(tmp, path)
                signature = _Signature.of(os.fstat(fd))
            except OSError as exc:
                raise self._storage_error(exc, record.id) from None
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
        self._fsync_dir()
        return signature

    def _new_temp(self, model_id: str) -> tuple[int, str]:
        """An exclusive temp file, locked so a starting server never removes it under us."""
        for _ in range(5):
            tmp = os.path.join(self.data_dir,
                               f"{_TMP_PREFIX}{model_id}-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError as exc:
                raise self._storage_error(exc, model_id) from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink > 0:
                return fd, tmp
            os.close(fd)  # a starting server took it for a leftover between open and lock
        self.events.store_failed(model_id, "write")
        raise StorageFailed(f"could not create a temp file for model '{model_id}' in the data "
                            "directory")

    def _storage_error(self, exc: OSError, model_id: str) -> Exception:
        error = _storage_error(exc, model_id)
        self.events.store_failed(model_id, "disk_full" if isinstance(error, DiskFull) else "write")
        return error

    def _fsync_dir(self) -> None:
        try:
            dir_fd = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:  # the rename happened; only its durability is in doubt
            _LOGGER.warning("fsync of the data directory %s failed: %s", self.data_dir, exc)


class FileLease(Lease):
    """A flock on the model's lock file, held while a call changes the model."""

    def __init__(self, store: FileStore, model_id: str, fd: int, record: ModelRecord | None):
        self._store = store
        self.model_id = model_id
        self._fd = fd
        self.record = record  # the newest committed version

    def commit(self, params: np.ndarray, optimizer: OptimizerState, *, last_loss: float,
               epochs_trained: int | None = None, iterations: int | None = None) -> ModelRecord:
        """Writes version + 1 durably, then makes it the served version. Counters are the new
        totals (None: unchanged). Takes ownership of the arrays (fresh ones are frozen in
        place, others copied)."""
        if self._fd < 0:
            raise self.released_error()
        record = self.record.next_version(params, optimizer, last_loss=last_loss,
                                          epochs_trained=epochs_trained, iterations=iterations)
        began = time.perf_counter()
        self._store._commit(record)
        self._store.events.committed(record.id, record.version, time.perf_counter() - began)
        self.record = record
        return record

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # closing the descriptor drops the flock


def _storage_error(exc: OSError, model_id: str) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"could not save model '{model_id}': the disk of the data directory is "
                        "full; the previous version is kept. Free some space and retry")
    reason = exc.strerror or str(exc)
    return StorageFailed(f"could not save model '{model_id}': {reason}; the previous version is "
                         "kept")



# -- the file: model_format's encoding, written and read in parts -------------------------------


def _write_record(fd: int, record: ModelRecord) -> None:
    for part in model_format.parts(record):
        _write_all(fd, part)


def _write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read(path: str, model_id: str) -> tuple[ModelRecord, _Signature]:
    """Parses a model file straight into its arrays; raises _Unreadable with a reason a person
    can act on."""
    with open(path, "rb") as f:
        signature = _Signature.of(os.fstat(f.fileno()))
        return model_format.read(f, signature.size, model_id), signature
