"""The model store: committed versions of models, leases, visibility across servers.

The interface is base.py (ModelStore, Lease, ModelRecord: what the servicers, warm-up and
start-up depend on); file.py (one directory, the embedded default) and postgres.py (a PostgreSQL
database shared by servers on many hosts) implement it; model_format.py is the stored form of a
version, the same in both. `open_store` picks an implementation from a location; the
implementations import base.py only, so nothing below this module imports it.
"""

from __future__ import annotations

from .base import (
    Lease,
    LoadReport,
    ModelRecord,
    ModelStore,
    frozen,
    is_valid_id,
    new_id,
    validate_id,
)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def open_store(location: str, *, refresh_seconds: float = 0.5, lease_seconds: float = 10.0,
               poll_seconds: float = 5.0) -> ModelStore:
    """The store at `location`: a directory path or a file: URL (the embedded file store; it
    re-checks a cached model every `refresh_seconds`), or a postgresql:// DSN (a PostgreSQL
    store; a dead holder's lease frees within `lease_seconds`, versions are re-read every
    `poll_seconds` as a backstop for lost change notifications). Nothing is opened yet."""
    if is_postgres(location):
        from .postgres import PostgresStore

        return PostgresStore(location, lease_seconds=lease_seconds, poll_seconds=poll_seconds)
    from .file import FileStore

    path = location[len("file:"):] if location.startswith("file:") else location
    if path.startswith("//"):  # file:///abs/path
        path = path[2:]
    return FileStore(path, refresh_seconds=refresh_seconds)


__all__ = ["Lease", "LoadReport", "ModelRecord", "ModelStore", "frozen", "is_postgres",
           "is_valid_id", "new_id", "open_store", "validate_id"]
