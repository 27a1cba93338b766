"""The PostgreSQL store: models in one database that servers on many hosts share
(base.ModelStore), selected by a postgresql:// DSN (`--store` / JITNET_STORE).

Schema, version 1 (created, or migrated from an older version, by the first server that opens
the database: `open()`, under an advisory lock so that servers starting together agree):

    jitnet_schema   (version)                       one row: the schema version
    jitnet_models   (id PK, version, body)          body: the newest version in model_format's
                                                    encoding (sha256 included), stored as is
    jitnet_leases   (id PK -> jitnet_models, epoch, holder, expires)
    jitnet_lease_epochs                             a sequence: each lease taken gets a new epoch

Reading. Every model's newest version is held in memory and `get` never touches the database:
Predict answers from memory, also while the database is down. Other servers' changes arrive by
LISTEN/NOTIFY (every create, commit and delete notifies in its own transaction, so the notice
goes out when it commits): the listener re-reads that one model, within milliseconds. A notice
sent while the listener is disconnected is lost, so after every (re)connect the listener
re-reads every model's (version, xmin) and fetches what changed, and it does so again every
`poll_seconds` as a backstop. xmin (the row version's transaction) stands in for the file store's
inode and mtime: it changes whenever the row is written, also by hand. A row whose body cannot be
read is refused as the file store refuses a damaged file: the server keeps serving the last good
version it read, and changing the model needs a readable one.

Leases and fencing. Taking a lease writes a row in jitnet_leases with a fresh epoch and an
expiry `lease_seconds` ahead on the database's clock (an expired row is taken over; a live one
answers Busy). The holder renews it every lease_seconds / 3. A commit is one transaction that
first renews the lease row only if it still carries the holder's epoch and has not expired, and
stores nothing otherwise (LeaseLost); the row lock it takes there is held until the commit ends,
so a server taking the lease over waits for it, and a holder that lost the lease (its process
stalled or its link to the database was down past the expiry, and someone took over) can never
commit afterwards. The epoch and the expiry are checked where the data is written, on one clock,
so no clock of a server host matters. A server that dies holding a lease (SIGKILL, a host cut
off) frees it at most `lease_seconds` after its last renewal, so within lease_seconds of dying.

Rows with an expiry rather than session-level advisory locks: an advisory lock is freed when the
database notices the holder's connection is gone, which for a host cut off depends on the
database server's TCP keepalive settings (hours by default), and a commit made on another
connection than the lock's would not be fenced by it. The lease row gives one stated bound and a
fence checked inside the commit's own transaction.

The database unreachable. Every operation that needs it raises StoreUnavailable (UNAVAILABLE)
within a few seconds (connect_timeout, tcp_user_timeout and keepalives are set on every
connection unless the DSN sets them); what is in memory keeps answering `get`. The pool
(psycopg_pool) replaces broken connections; the listener reconnects with a backoff of at most a
second, then re-syncs. A commit whose connection broke may or may not have been stored: the call
fails with StoreUnavailable, and if it was stored, every server sees it once connected again.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Mapping

import numpy as np
import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg_pool import ConnectionPool

from ..engine.model import Architecture
from ..engine.optimizers import OptimizerState
from ..errors import (
    AlreadyExists,
    Busy,
    DiskFull,
    FailedPrecondition,
    LeaseLost,
    NotFound,
    StorageFailed,
    StoreUnavailable,
)
from . import model_format
from .base import Lease, LoadReport, ModelRecord, ModelStore, validate_id

_LOGGER = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CHANNEL = "jitnet_models"
# Serialises schema creation and migration among servers starting at once.
_SCHEMA_LOCK = zlib.crc32(b"jitnet schema") << 16

# Connection settings used unless the DSN sets them. A cut link then fails a query within about
# tcp_user_timeout instead of TCP's minutes of retransmissions; connect_timeout bounds a connect.
CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "1",
    "keepalives_count": "3",
    "tcp_user_timeout": "3000",  # ms
    "application_name": "jitnet",
}
POOL_SIZE = 8  # connections per server at most (calls changing models, lease renewals)
POOL_TIMEOUT = 5.0  # seconds a call waits for a connection before StoreUnavailable
OUTAGE_POOL_TIMEOUT = 1.0  # the same while the store is known to be unreachable: fail fast
RECONNECT_SECONDS = 2.0  # a pool slot failing to reconnect this long is given up and re-made on
                         # demand, so that after a long outage no slot waits out a long backoff
HEARTBEAT_SECONDS = 1.0  # the listener asks the database this often whether it is still there
MAX_BACKOFF_SECONDS = 1.0  # the listener's reconnect backoff grows to this
FETCH_BATCH = 16  # model bodies fetched per query (each up to 32 MiB at the default limits)

_SCHEMA_V1 = (
    "CREATE TABLE jitnet_schema (version integer NOT NULL)",
    "CREATE TABLE jitnet_models ("
    " id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$'),"
    " version bigint NOT NULL CHECK (version >= 1),"
    " body bytea NOT NULL)",
    # Parameters do not compress; EXTERNAL stores them out of line without trying.
    "ALTER TABLE jitnet_models ALTER COLUMN body SET STORAGE EXTERNAL",
    "CREATE TABLE jitnet_leases ("
    " id text PRIMARY KEY REFERENCES jitnet_models (id) ON DELETE CASCADE,"
    " epoch bigint NOT NULL,"
    " holder text NOT NULL,"
    " expires timestamptz NOT NULL)",
    "CREATE SEQUENCE jitnet_lease_epochs",
)
# MIGRATIONS[n]: the statements that take schema version n to n + 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {}


@dataclasses.dataclass
class _Entry:
    record: ModelRecord | None  # the newest readable version (None: never read one)
    error: str | None  # why the stored row cannot be read; None when it can
    signature: tuple[int, str]  # (version, xmin) of the row this entry was read from
    generation: int  # when it was installed, on the store's counter


class PostgresStore(ModelStore):
    """Models in a PostgreSQL database. Thread-safe; servers on any host may share it."""

    def __init__(self, dsn: str, *, lease_seconds: float = 10.0, poll_seconds: float = 5.0):
        try:
            params = pg_conninfo.conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            raise RuntimeError(f"--store / JITNET_STORE is not a valid PostgreSQL DSN: {exc}"
                               ) from None
        for key, value in CONNECTION_DEFAULTS.items():
            params.setdefault(key, value)
        self._conninfo = pg_conninfo.make_conninfo("", **params)
        self.location = _display(params)
        self.lease_seconds = float(lease_seconds)
        self.poll_seconds = float(poll_seconds)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._entries: dict[str, _Entry] = {}
        self._ids: list[str] = []
        self._generation = 0
        self._lock = threading.Lock()  # guards _entries, _ids, _generation
        self._held: dict[int, PostgresLease] = {}  # epoch -> lease, renewed by the renewer
        self._held_lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._down_since: float | None = None  # monotonic time of the first failure of an outage

    # -- start-up -------------------------------------------------------------------------------

    def open(self) -> LoadReport:
        """Creates or migrates the schema, loads every model and starts listening. Raises
        StoreUnavailable when the database cannot be reached (the server retries), and
        FailedPrecondition when its schema is newer than this server knows."""
        if self._pool is not None:
            raise RuntimeError("the store is already open")
        with _database_errors(self, "loading the models"):
            with self._connect() as conn:
                _migrate(conn)
                loaded, failed = self._load_all(conn)
        pool_logger = logging.getLogger("psycopg.pool")
        if pool_logger.level == logging.NOTSET:
            # The pool logs every failed reconnect, several a second in an outage; the store
            # logs an outage once, when it begins, and once when it ends.
            pool_logger.setLevel(logging.ERROR)
        self._pool = ConnectionPool(
            self._conninfo, kwargs={"autocommit": True}, min_size=1, max_size=POOL_SIZE,
            timeout=POOL_TIMEOUT, check=ConnectionPool.check_connection, open=False,
            name="jitnet-store", reconnect_timeout=RECONNECT_SECONDS,
            reconnect_failed=lambda pool: None)  # logged by _unreachable
        self._pool.open(wait=False)
        for target, name in ((self._listen, "jitnet-store-listener"),
                             (self._renew, "jitnet-lease-renewer")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return LoadReport(loaded, failed)

    def close(self) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()
        if self._pool is not None:
            self._pool.close(timeout=5)
            self._pool = None

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self._conninfo, autocommit=True)

    def _load_all(self, conn: psycopg.Connection) -> tuple[list[str], dict[str, str]]:
        rows = conn.execute("SELECT id, version, xmin::text FROM jitnet_models").fetchall()
        self._fetch(conn, [model_id for model_id, _, _ in rows])
        loaded, failed = [], {}
        for model_id in self.ids():
            entry = self._entries[model_id]
            if entry.error is None:
                loaded.append(model_id)
            else:
                failed[model_id] = entry.error
        return loaded, failed

    # -- reading --------------------------------------------------------------------------------

    def get(self, model_id: str) -> ModelRecord:
        """The newest version this server holds: from memory, never the database."""
        entry = self._entries.get(model_id)  # only valid ids are ever held
        if entry is None:
            validate_id(model_id)
            raise NotFound(f"model '{model_id}' not found")
        if entry.record is None:
            raise FailedPrecondition(entry.error)
        return entry.record

    def ids(self) -> list[str]:
        return list(self._ids)

    def reread(self, model_id: str) -> ModelRecord:
        """The model's newest committed version, asked of the database now."""
        validate_id(model_id)
        with _database_errors(self, f"reading model '{model_id}'"):
            with self._connection() as conn:
                self._refresh_one(conn, model_id)
        return self.get(model_id)

    def _refresh_one(self, conn: psycopg.Connection, model_id: str) -> None:
        """Brings this server's copy of one model up to the database's row (or forgets it)."""
        entry = self._entries.get(model_id)
        version, xmin = entry.signature if entry else (0, "")
        generation = self._generation
        row = conn.execute(
            "SELECT version, xmin::text,"
            " CASE WHEN version <> %s OR xmin::text <> %s THEN body END"
            " FROM jitnet_models WHERE id = %s", (version, xmin, model_id),
            binary=True).fetchone()
        if row is None:
            self._forget(model_id, generation)
        elif row[2] is not None:
            self._install(model_id, row[0], row[1], row[2], generation)

    def _fetch(self, conn: psycopg.Connection, model_ids: list[str]) -> None:
        """Reads these models' rows and holds them (a few at a time: bodies can be big)."""
        for at in range(0, len(model_ids), FETCH_BATCH):
            batch = model_ids[at:at + FETCH_BATCH]
            generation = self._generation
            rows = conn.execute(
                "SELECT id, version, xmin::text, body FROM jitnet_models WHERE id = ANY(%s)",
                (batch,), binary=True).fetchall()
            for model_id, version, xmin, body in rows:
                self._install(model_id, version, xmin, body, generation)
            for gone in set(batch) - {row[0] for row in rows}:
                self._forget(gone, generation)

    def _resync(self, conn: psycopg.Connection) -> None:
        """Compares every model's (version, xmin) with this server's copies; fetches what
        changed and forgets what is gone. After a reconnect, and every poll_seconds."""
        generation = self._generation
        rows = conn.execute("SELECT id, version, xmin::text FROM jitnet_models").fetchall()
        current = {model_id: (version, xmin) for model_id, version, xmin in rows}
        with self._lock:
            held = list(self._entries)
        for model_id in set(held) - set(current):
            self._forget(model_id, generation)
        changed = [model_id for model_id, signature in current.items()
                   if (entry := self._entries.get(model_id)) is None
                   or entry.signature != signature]
        if changed:
            self._fetch(conn, sorted(changed))

    def _install(self, model_id: str, version: int, xmin: str, body,
                 read_began: int) -> None:
        """Holds a row read from the database by a query that began at generation
        `read_began`. What was held before that query began is replaced whatever its version
        (a model deleted and created again starts over at 1); what a commit or another read
        installed meanwhile is kept unless this row is newer."""
        try:
            record, error = model_format.decode(body, model_id), None
            if record.version != version:
                raise model_format.Unreadable(f"its body says version {record.version}, its "
                                              f"row {version}")
        except model_format.Unreadable as exc:
            record, error = None, (
                f"model '{model_id}' cannot be used: its stored row in {self.location} is "
                f"unreadable ({exc}). Delete the model, or restore it from a backup")
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is not None:
                if entry.signature == (version, xmin) or (
                        entry.generation > read_began and entry.signature[0] >= version):
                    return
                if error is not None:
                    if entry.error != error:
                        _LOGGER.error("%s", error)
                    record = entry.record  # keep serving the last good one, as the file store
            elif error is not None:
                _LOGGER.error("%s", error)
            self._put(model_id, _Entry(record, error, (version, xmin), 0))

    def _hold_committed(self, record: ModelRecord, xmin: str) -> None:
        """Holds a version this server just committed, unless it holds a newer one already."""
        with self._lock:
            entry = self._entries.get(record.id)
            if entry is None or entry.signature[0] <= record.version:
                self._put(record.id, _Entry(record, None, (record.version, xmin), 0))

    def _put(self, model_id: str, entry: _Entry) -> None:
        """Call with _lock held."""
        self._generation += 1
        entry.generation = self._generation
        if model_id not in self._entries:
            bisect.insort(self._ids, model_id)
        self._entries[model_id] = entry

    def _forget(self, model_id: str, generation: int | None = None) -> None:
        """Drops a model; with `generation`, only if what is held was installed before then
        (a read that began earlier must not undo a newer create)."""
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is None or (generation is not None and entry.generation > generation):
                return
            del self._entries[model_id]
            self._ids.remove(model_id)
            self._generation += 1

    # -- writing --------------------------------------------------------------------------------

    def create(self, model_id: str, arch: Architecture, params: np.ndarray,
               metadata: Mapping[str, str] | None = None) -> ModelRecord:
        validate_id(model_id)
        record = ModelRecord.first_version(model_id, arch, params, metadata)
        body = model_format.encode(record)
        with _database_errors(self, f"creating model '{model_id}'"):
            with self._connection() as conn, conn.transaction():
                row = conn.execute(
                    "INSERT INTO jitnet_models (id, version, body) VALUES (%s, 1, %s)"
                    " ON CONFLICT (id) DO NOTHING RETURNING xmin::text",
                    (model_id, body)).fetchone()
                if row is None:
                    raise AlreadyExists(f"model '{model_id}' already exists; pick another id, "
                                        "or delete it first")
                _notify(conn, 1, model_id)
        self._hold_committed(record, row[0])
        return record

    def lease(self, model_id: str) -> PostgresLease:
        """Takes the model's lease row (a new epoch, an expiry lease_seconds ahead): Busy while
        another holder's has not expired. The lease holds the newest committed record."""
        validate_id(model_id)
        with _database_errors(self, f"taking the lease on model '{model_id}'"):
            with self._connection() as conn, conn.transaction():
                row = conn.execute(
                    "SELECT version, xmin::text FROM jitnet_models WHERE id = %s FOR KEY SHARE",
                    (model_id,)).fetchone()
                if row is None:
                    self._forget(model_id)
                    raise NotFound(f"model '{model_id}' not found")
                taken = conn.execute(
                    "INSERT INTO jitnet_leases (id, epoch, holder, expires)"
                    " VALUES (%(id)s, nextval('jitnet_lease_epochs'), %(holder)s,"
                    "         clock_timestamp() + %(ttl)s * interval '1 second')"
                    " ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch,"
                    "   holder = EXCLUDED.holder, expires = EXCLUDED.expires"
                    " WHERE jitnet_leases.expires <= clock_timestamp()"
                    " RETURNING epoch",
                    {"id": model_id, "holder": self.holder, "ttl": self.lease_seconds}
                ).fetchone()
                if taken is None:
                    raise self._busy(conn, model_id)
                entry = self._entries.get(model_id)
                if entry is None or entry.signature != tuple(row):
                    self._refresh_one(conn, model_id)
                    entry = self._entries.get(model_id)
                if entry is None:
                    raise NotFound(f"model '{model_id}' not found")
                if entry.error is not None:
                    raise FailedPrecondition(entry.error)  # rolls the lease back
        lease = PostgresLease(self, model_id, taken[0], entry.record)
        with self._held_lock:
            self._held[lease.epoch] = lease
        return lease

    def _busy(self, conn: psycopg.Connection, model_id: str) -> Busy:
        row = conn.execute("SELECT holder FROM jitnet_leases WHERE id = %s",
                           (model_id,)).fetchone()
        where = f" (its lease is held by server {row[0]})" if row else ""
        return Busy(f"model '{model_id}' is being trained by another call{where}; try again "
                    "when it finishes (Predict and GetModel keep working meanwhile)")

    def delete(self, model_id: str) -> None:
        """Removes a model, also an unreadable one. Busy while a live lease is on it."""
        validate_id(model_id)
        with _database_errors(self, f"deleting model '{model_id}'"):
            with self._connection() as conn, conn.transaction():
                row = conn.execute("SELECT 1 FROM jitnet_models WHERE id = %s FOR UPDATE",
                                   (model_id,)).fetchone()
                if row is None:
                    self._forget(model_id)
                    raise NotFound(f"model '{model_id}' not found")
                held = conn.execute(
                    "SELECT 1 FROM jitnet_leases WHERE id = %s AND expires > clock_timestamp()",
                    (model_id,)).fetchone()
                if held is not None:
                    raise self._busy(conn, model_id)
                conn.execute("DELETE FROM jitnet_models WHERE id = %s", (model_id,))
                _notify(conn, 0, model_id)
        self._forget(model_id)

    def _commit(self, lease: PostgresLease, record: ModelRecord) -> None:
        """Stores a lease's new version if, inside the same transaction, the lease row still
        carries its epoch and has not expired; LeaseLost (nothing stored) otherwise."""
        body = model_format.encode(record)
        what = f"committing version {record.version} of model '{record.id}'"
        with _database_errors(self, what, in_doubt=True):
            with self._connection() as conn, conn.transaction():
                renewed = conn.execute(
                    "UPDATE jitnet_leases SET expires = clock_timestamp() + %s * interval"
                    " '1 second' WHERE id = %s AND epoch = %s AND expires > clock_timestamp()",
                    (self.lease_seconds, record.id, lease.epoch)).rowcount
                if renewed != 1:
                    lease.lost = True
                    raise LeaseLost(
                        f"the lease on model '{record.id}' expired (it was not renewed within "
                        f"{self.lease_seconds:g} s, as when the store was unreachable) and may "
                        "be held by another call now; nothing was stored, the model keeps its "
                        "last committed version. Try again")
                row = conn.execute(
                    "UPDATE jitnet_models SET version = %s, body = %s"
                    " WHERE id = %s AND version = %s RETURNING xmin::text",
                    (record.version, body, record.id, record.version - 1)).fetchone()
                if row is None:  # only a hand-made change to the table gets here
                    raise LeaseLost(f"model '{record.id}' changed in the database under the "
                                    "lease; nothing was stored. Try again")
                _notify(conn, record.version, record.id)
        self._hold_committed(record, row[0])

    def _release(self, lease: PostgresLease) -> None:
        with self._held_lock:
            self._held.pop(lease.epoch, None)
        if self._down_since is not None:
            return  # the database is unreachable now: the lease frees when it expires
        try:
            with self._connection(timeout=1.0) as conn:
                conn.execute("DELETE FROM jitnet_leases WHERE id = %s AND epoch = %s",
                             (lease.model_id, lease.epoch))
        except psycopg.Error as exc:
            _LOGGER.warning("could not release the lease on model '%s' (%s); it frees within "
                            "%g s", lease.model_id, _reason(exc), self.lease_seconds)

    def _connection(self, timeout: float | None = None):
        if self._pool is None:
            raise RuntimeError("the store is not open")
        if timeout is None and self._down_since is not None:
            timeout = OUTAGE_POOL_TIMEOUT
        return self._pool.connection(timeout=timeout)

    # -- background: the listener and the lease renewer -----------------------------------------

    def _listen(self) -> None:
        """LISTEN, re-sync, then apply notices as they come; on any failure, reconnect with
        backoff and re-sync again (notices sent meanwhile are lost)."""
        backoff = 0.05
        while not self._closing.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._resync(conn)
                    self._reachable()
                    backoff = 0.05
                    next_poll = time.monotonic() + self.poll_seconds
                    next_beat = time.monotonic() + HEARTBEAT_SECONDS
                    while not self._closing.is_set():
                        # Short waits, so that close() is quick.
                        notices = list(conn.notifies(timeout=0.2, stop_after=1))
                        now = time.monotonic()
                        if notices:
                            self._apply(conn, (n.payload for n in notices))
                        elif now >= next_poll:
                            self._resync(conn)
                            next_poll = now + self.poll_seconds
                        elif now >= next_beat:
                            conn.execute("SELECT 1")  # a cut link shows within seconds
                        else:
                            continue
                        next_beat = now + HEARTBEAT_SECONDS
                        self._reachable()
            except psycopg.Error as exc:
                self._unreachable(exc)
            except Exception:  # noqa: BLE001 - a bug must not end the listener for good
                _LOGGER.exception("the store's listener failed; reconnecting")
            self._closing.wait(backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)

    def _apply(self, conn: psycopg.Connection, payloads: Iterable[str]) -> None:
        """Notices are 'version id' (0 for a delete): re-read each model whose held version is
        older, once per batch."""
        newest: dict[str, int] = {}
        for payload in payloads:
            version, _, model_id = payload.partition(" ")
            if not version.isdigit():
                continue
            seen = newest.get(model_id)
            newest[model_id] = 0 if seen == 0 or version == "0" else max(int(version), seen or 0)
        for model_id, version in newest.items():
            entry = self._entries.get(model_id)
            if version and entry is not None and entry.signature[0] >= version:
                continue  # our own commit, or already read
            self._refresh_one(conn, model_id)

    def _renew(self) -> None:
        """Extends every lease this server holds, every lease_seconds / 3."""
        period = self.lease_seconds / 3
        while not self._closing.wait(period):
            with self._held_lock:
                held = list(self._held.values())
            if not held:
                continue
            try:
                with self._connection(timeout=period) as conn:
                    rows = conn.execute(
                        "UPDATE jitnet_leases SET expires = clock_timestamp() + %s * interval"
                        " '1 second' FROM unnest(%s::text[], %s::bigint[]) AS held(id, epoch)"
                        " WHERE jitnet_leases.id = held.id AND jitnet_leases.epoch = held.epoch"
                        " AND jitnet_leases.expires > clock_timestamp()"
                        " RETURNING jitnet_leases.epoch",
                        (self.lease_seconds, [lease.model_id for lease in held],
                         [lease.epoch for lease in held])).fetchall()
            except psycopg.Error as exc:
                self._unreachable(exc)
                continue
            renewed = {epoch for (epoch,) in rows}
            for lease in held:
                if lease.epoch not in renewed and not (lease.released or lease.lost):
                    lease.lost = True
                    _LOGGER.warning("the lease on model '%s' expired before it was renewed; "
                                    "its holder cannot commit any more", lease.model_id)

    def _reachable(self) -> None:
        if self._down_since is not None:
            _LOGGER.info("the model store %s is reachable again after %.1f s",
                         self.location, time.monotonic() - self._down_since)
            self._down_since = None

    def _unreachable(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            _LOGGER.warning("the model store %s is unreachable (%s); Predict answers from "
                            "memory, changes are refused until it is back", self.location,
                            _reason(exc))


class PostgresLease(Lease):
    """A lease row (model, epoch), renewed by the store while held."""

    def __init__(self, store: PostgresStore, model_id: str, epoch: int, record: ModelRecord):
        self._store = store
        self.model_id = model_id
        self.epoch = epoch
        self.record = record
        self.released = False
        self.lost = False  # the renewer or a commit found it expired (logged once)

    def commit(self, params: np.ndarray, optimizer: OptimizerState, *, last_loss: float,
               epochs_trained: int | None = None, iterations: int | None = None) -> ModelRecord:
        if self.released:
            raise self.released_error()
        record = self.record.next_version(params, optimizer, last_loss=last_loss,
                                          epochs_trained=epochs_trained, iterations=iterations)
        self._store._commit(self, record)
        self.record = record
        return record

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._store._release(self)


# -- helpers --------------------------------------------------------------------------------------


def _migrate(conn: psycopg.Connection) -> None:
    """Creates the schema, or brings an older one up to SCHEMA_VERSION."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        exists = conn.execute("SELECT to_regclass('jitnet_schema')").fetchone()[0]
        if exists is None:
            for statement in _SCHEMA_V1:
                conn.execute(statement)
            conn.execute("INSERT INTO jitnet_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            _LOGGER.info("created the jitnet schema, version %d", SCHEMA_VERSION)
            return
        version = conn.execute("SELECT version FROM jitnet_schema").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise FailedPrecondition(
                f"the database's jitnet schema is version {version}, newer than this server "
                f"knows ({SCHEMA_VERSION}): a newer jitnet migrated it. Run that version")
        while version < SCHEMA_VERSION:
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
            conn.execute("UPDATE jitnet_schema SET version = %s", (version,))
            _LOGGER.info("migrated the jitnet schema to version %d", version)


def _notify(conn: psycopg.Connection, version: int, model_id: str) -> None:
    """Sent when the transaction commits, to every server listening on the database."""
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{version} {model_id}"))


class _database_errors:
    """Turns the database's errors into the store's: unreachable -> StoreUnavailable, out of
    disk -> DiskFull, anything else it refuses -> StorageFailed."""

    def __init__(self, store: PostgresStore, what: str, in_doubt: bool = False):
        self.store, self.what, self.in_doubt = store, what, in_doubt

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or not isinstance(exc, psycopg.Error):
            return False
        store = self.store
        if isinstance(exc, psycopg.errors.DiskFull):
            raise DiskFull(f"{self.what}: the database's disk is full; the previous version is "
                           "kept. Free some space and retry") from None
        if isinstance(exc, psycopg.OperationalError):
            store._unreachable(exc)
            outcome = ("it may or may not have been stored; if it was, every server shows it "
                       "once the store is back" if self.in_doubt else "nothing was changed")
            raise StoreUnavailable(
                f"the model store {store.location} is unreachable ({_reason(exc)}): "
                f"{self.what} failed, {outcome}. Predict keeps answering from the versions "
                "in memory; retry in a moment") from None
        raise StorageFailed(f"{self.what} failed in the database: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _display(params: dict) -> str:
    """The DSN without its password, for logs and messages."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user")
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{params.get('dbname', '')}"
