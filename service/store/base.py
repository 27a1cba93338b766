"""The model store's interface: what the servicers, warm-up and start-up depend on.

A store keeps committed versions of models. Its promises (api.md), which every implementation
keeps and tests/store/test_contract.py checks against each one:

  * ids are validated (`validate_id`) before anything is looked up or written;
  * `create` makes version 1, and refuses an id that exists (AlreadyExists), also when another
    server made it a moment ago;
  * changing a model takes its `lease`: one holder at a time across every thread and server
    sharing the store (the others get Busy); each `Lease.commit` makes version + 1, durably,
    before it returns, and a version is seen whole or not at all;
  * a lease that lost the right to commit (released; for a store whose leases expire, not
    renewed in time, so that another server may hold the model now) never commits: its commit
    raises LeaseLost and stores nothing. The store states how soon a dead holder's lease frees;
  * `get_at_least(id, n)` answers version n or newer: a server holding an older version (or
    none yet) re-reads that model from the store first; FailedPrecondition names both versions
    when the store has none that new;
  * records are immutable (their arrays are read-only), so a reader holding one (Predict) never
    sees half-updated weights;
  * a model whose stored form cannot be read leaves the others serving: `get` raises
    FailedPrecondition saying why, unless this process read a good version earlier, which it
    keeps serving; changing it needs a readable version;
  * another server's commit becomes visible here within the store's stated bound;
  * a store that cannot reach its location (a database that is down) raises StoreUnavailable,
    from `open` too; what is in memory keeps answering `get`.

Implementations also report to `events` (events.Events; the server sets it): each commit with
the seconds it took, each lease refused (Busy), each failure of their own (STORE_FAILURES).

Implementations: file.FileStore (one directory, the default; model_format.py is the stored
form of a version), postgres.PostgresStore (a PostgreSQL database shared by servers on many
hosts); the package's `open_store` picks one from a location. They import this module, never
the package's factory.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import re
import secrets
import time
import types
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ..engine.model import Architecture, Network
from ..engine.optimizers import NO_STATE, OptimizerState
from ..errors import FailedPrecondition, InvalidArgument, LeaseLost, NotFound
from ..events import QUIET, Events

_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def validate_id(model_id: str, field: str = "model_id") -> str:
    """Ids are 1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.', so an id can
    never name a path outside a data directory (nor a lock or temp file)."""
    if not isinstance(model_id, str) or not _ID.fullmatch(model_id):
        shown = model_id if len(str(model_id)) <= 40 else str(model_id)[:40] + "..."
        raise InvalidArgument(f"{field} {shown!r} is not a valid model id: use 1 to 128 "
                              "characters of A-Z a-z 0-9 . _ -, not starting with '.'")
    return model_id


def is_valid_id(model_id: str) -> bool:
    return bool(_ID.fullmatch(model_id))


def new_id() -> str:
    return "model-" + secrets.token_hex(6)


def frozen(array, dtype=np.float64) -> np.ndarray:
    """A read-only contiguous 1-D array of `dtype`; takes ownership of a fresh one, else
    copies."""
    if (isinstance(array, np.ndarray) and array.dtype == dtype and array.ndim == 1
            and array.flags.c_contiguous and array.flags.owndata):
        out = array
    else:
        out = np.array(array, dtype=dtype, copy=True).ravel()
    out.setflags(write=False)
    return out


def frozen_state(state: OptimizerState, dtype) -> OptimizerState:
    """The state with its arrays frozen (fresh ones in place, others copied)."""
    if state.optimizer is None:
        return NO_STATE
    return dataclasses.replace(state, arrays=tuple(frozen(a, dtype) for a in state.arrays))


def frozen_metadata(metadata: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return types.MappingProxyType(dict(sorted((metadata or {}).items())))


@dataclasses.dataclass(frozen=True, eq=False)
class ModelRecord:
    """One committed version of a model. Immutable: the arrays are read-only."""

    id: str
    arch: Architecture
    version: int
    epochs_trained: int
    iterations: int
    last_loss: float
    create_time_ns: int
    update_time_ns: int
    params: np.ndarray  # the engine's flat buffer, in arch.dtype
    optimizer: OptimizerState = NO_STATE  # committed with the weights; its arrays like params
    metadata: Mapping[str, str] = dataclasses.field(default_factory=frozen_metadata)

    @classmethod
    def first_version(cls, model_id: str, arch: Architecture, params: np.ndarray,
                      metadata: Mapping[str, str] | None = None) -> ModelRecord:
        """Version 1 of a new model: these parameters (frozen), no optimizer state, nothing
        trained, the creator's metadata."""
        now = time.time_ns()
        return cls(model_id, arch, 1, 0, 0, 0.0, now, now, frozen(params, arch.dtype.numpy),
                   NO_STATE, frozen_metadata(metadata))

    def next_version(self, params: np.ndarray, optimizer: OptimizerState, *, last_loss: float,
                     epochs_trained: int | None, iterations: int | None) -> ModelRecord:
        """Version + 1 with these parameters and optimizer state (frozen: fresh arrays in
        place, others copied) and counters (None: unchanged), as a Lease commits it."""
        dtype = self.arch.dtype.numpy
        return dataclasses.replace(
            self, version=self.version + 1,
            epochs_trained=self.epochs_trained if epochs_trained is None else int(epochs_trained),
            iterations=self.iterations if iterations is None else int(iterations),
            last_loss=float(last_loss), update_time_ns=max(time.time_ns(), self.update_time_ns),
            params=frozen(params, dtype), optimizer=frozen_state(optimizer, dtype))

    @property
    def velocity(self) -> np.ndarray:
        """SGD's momentum buffer to continue from (a fresh copy; zeros when the stored state is
        not SGD's)."""
        return self.optimizer.velocity(self.params)

    @functools.cached_property
    def network(self) -> Network:
        """The Network of this version, built once: Predict reuses it until the next commit."""
        return Network(self.arch, self.params)


class LoadReport(NamedTuple):
    loaded: list[str]
    failed: dict[str, str]  # id -> why its stored form is unreadable
    temp_files_removed: int = 0


class Lease(abc.ABC):
    """Held while a call changes one model; release it (or leave the `with`) to let others in."""

    model_id: str
    record: ModelRecord  # the newest committed version, updated by each commit

    @abc.abstractmethod
    def commit(self, params: np.ndarray, optimizer: OptimizerState, *, last_loss: float,
               epochs_trained: int | None = None, iterations: int | None = None) -> ModelRecord:
        """Stores version + 1 (these parameters and this optimizer state) durably, then makes
        it the served version, and returns it. Counters are the new totals (None: unchanged).
        Takes ownership of the arrays.
        LeaseLost, storing nothing, once the lease was released or lost."""

    @abc.abstractmethod
    def release(self) -> None:
        """Lets the next writer in; idempotent."""

    def released_error(self) -> LeaseLost:
        """What a commit after release raises."""
        return LeaseLost(f"the lease on model '{self.model_id}' was released; nothing was "
                         "stored, the model keeps its last committed version")

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ModelStore(abc.ABC):
    """Committed versions of models, shared by every server that opens the same location."""

    location: str  # where the models are, for logs and messages
    events: Events = QUIET  # who hears of commits, refused leases and failures (metrics, traces)

    @abc.abstractmethod
    def open(self) -> LoadReport:
        """Prepares the location and loads every model. A model that cannot be read is
        reported with the reason; the others serve. StoreUnavailable when the location cannot
        be reached now (the caller retries)."""

    @abc.abstractmethod
    def get(self, model_id: str) -> ModelRecord:
        """The newest committed version: NotFound, or FailedPrecondition saying why a model's
        stored form cannot be read."""

    @abc.abstractmethod
    def reread(self, model_id: str) -> ModelRecord:
        """Reads the model's newest committed version from the store itself now, not from this
        server's copy, updates the copy and returns it; errors as `get`."""

    def get_at_least(self, model_id: str, min_version: int) -> ModelRecord:
        """`get`, but version `min_version` or newer (0: any): a server whose copy is older, or
        that has not seen the model yet, re-reads it from the store first. FailedPrecondition,
        naming both versions, when the store has none that new. Read-your-writes across
        servers (api.md): a client asks for the version it last committed or saw."""
        if not min_version:
            return self.get(model_id)
        try:
            record = self.get(model_id)
            if record.version >= min_version:
                return record
        except (NotFound, FailedPrecondition):
            pass  # perhaps made or repaired by another server a moment ago: ask the store
        record = self.reread(model_id)
        if record.version < min_version:
            raise FailedPrecondition(
                f"model '{model_id}' is at version {record.version}, older than the "
                f"min_version {min_version} the request asks for, and the store has no newer "
                "one (a model deleted and created again starts over at version 1: ask for "
                "min_version 0)")
        return record

    @abc.abstractmethod
    def ids(self) -> list[str]:
        """Every model id, sorted."""

    @abc.abstractmethod
    def create(self, model_id: str, arch: Architecture, params: np.ndarray,
               metadata: Mapping[str, str] | None = None) -> ModelRecord:
        """Version 1 of a new model, with its creator's metadata; AlreadyExists when the id
        is taken."""

    @abc.abstractmethod
    def lease(self, model_id: str) -> Lease:
        """The exclusive right to change a model, across threads and servers: Busy when another
        call holds it, NotFound, or FailedPrecondition for an unreadable model."""

    @abc.abstractmethod
    def delete(self, model_id: str) -> None:
        """Removes a model, also an unreadable one. Busy while someone holds its lease."""

    def close(self) -> None:  # noqa: B027 - optional: a store that holds nothing open has nothing to do
        """Releases what the store holds open (connections, threads)."""

    def page(self, after: str, limit: int) -> tuple[list[ModelRecord], bool]:
        """Up to `limit` readable models with ids after `after`, in id order, and whether more
        ids follow. Unreadable models are left out (GetModel explains them)."""
        records = []
        for model_id in self.ids():
            if model_id <= after:
                continue
            if len(records) == limit:
                return records, True
            try:
                records.append(self.get(model_id))
            except (NotFound, FailedPrecondition):
                continue
        return records, False
