"""The store implementations the contract suite runs against, each behind one small Backend.

A Backend makes stores on one fresh location (each like another server sharing it), damages a
model's stored form the way that store can be damaged, and says how soon another server's
commit is visible. A new store plugs in by adding a Backend here and passing the suite.

Backends are made per test with (tmp_path, fixture): `fixture(name)` is pytest's
request.getfixturevalue, for a backend that needs a service (the PostgreSQL cluster).
"""

from __future__ import annotations

import abc

from jitnet.service.store import ModelStore, open_store

# How often the stores under test re-check what another server committed.
REFRESH_SECONDS = 0.05


class Backend(abc.ABC):
    name: str
    location: str  # what open_store and `jitnet serve --store` take
    # How long another server's commit may take to be visible here, at most.
    visible_within: float = 4 * REFRESH_SECONDS

    def store(self, *, opened: bool = True, attentive: bool = True) -> ModelStore:
        """A store on this backend's location (opened unless asked): one more server.
        attentive=False: one that would not look for other servers' changes by itself for a
        minute (only what the store pushes to it, such as PostgreSQL's notices, arrives)."""
        refresh = REFRESH_SECONDS if attentive else 60.0
        store = open_store(self.location, refresh_seconds=refresh, poll_seconds=refresh)
        if opened:
            store.open()
        self._made.append(store)
        return store

    @abc.abstractmethod
    def corrupt(self, model_id: str) -> None:
        """Damages the model's newest stored version so that it cannot be read."""

    def close(self) -> None:
        for store in self._made:
            store.close()

    def __init__(self):
        self._made: list[ModelStore] = []


class FileBackend(Backend):
    name = "file"

    def __init__(self, tmp_path, fixture):
        super().__init__()
        self.directory = tmp_path / "models"
        self.location = str(self.directory)

    def corrupt(self, model_id: str) -> None:
        path = self.directory / f"{model_id}.jitnet"
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # in the parameters: the checksum no longer matches
        path.write_bytes(bytes(raw))


class PostgresBackend(Backend):
    """A fresh database in the session's throwaway PostgreSQL cluster."""

    name = "postgres"
    # Notices arrive within milliseconds; the margin is for a busy test machine. The 100 ms of
    # normal operation is measured by benchmarks/stores.py.
    visible_within = 1.0

    def __init__(self, tmp_path, fixture):
        super().__init__()
        self.location = fixture("postgres_dsn")
        self.cluster = fixture("postgres_cluster")

    def corrupt(self, model_id: str) -> None:
        """Flips a byte in the middle of the stored body, in place: the row's version stays,
        its checksum no longer matches (what a bad restore or a hand edit leaves)."""
        self.cluster.sql(
            "UPDATE jitnet_models SET body = set_byte(body, length(body) / 2,"
            " get_byte(body, length(body) / 2) # 255) WHERE id = %s", (model_id,),
            dbname=self.location.rsplit("/", 1)[1])


BACKENDS = {"file": FileBackend, "postgres": PostgresBackend}
