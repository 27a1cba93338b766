"""The store implementations the contract suite runs against, each behind one small Backend.

A Backend makes stores on one fresh location (each like another server sharing it), damages a
model's stored form the way that store can be damaged, and says how soon another server's
commit is visible. A new store plugs in by adding a Backend here and passing the suite.
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

    def store(self, *, opened: bool = True) -> ModelStore:
        """A store on this backend's location (opened unless asked): one more server."""
        store = open_store(self.location, refresh_seconds=REFRESH_SECONDS)
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

    def __init__(self, tmp_path):
        super().__init__()
        self.directory = tmp_path / "models"
        self.location = str(self.directory)

    def corrupt(self, model_id: str) -> None:
        path = self.directory / f"{model_id}.jitnet"
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # in the parameters: the checksum no longer matches
        path.write_bytes(bytes(raw))


BACKENDS = {"file": FileBackend}
