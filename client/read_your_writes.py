"""Read your writes across replicas (api.md): the client remembers, per model, the last version
it committed or saw, and asks for at least that version (`min_version`) when it reads. A replica
holding an older version re-reads the store before answering, so behind a balancer one client
never sees a version older than its own last commit.

Used by Client and AsyncClient; nothing here touches the wire.
"""

from __future__ import annotations

import operator
import threading

from .errors import InvalidArgument


class VersionMemory:
    """model id -> the newest version this client committed or saw. Thread-safe."""

    def __init__(self):
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def saw(self, model_id: str, version: int) -> None:
        """A version committed (Train, Step, CreateModel) or read (Predict, GetModel, ...)."""
        if version:
            with self._lock:
                if version > self._versions.get(model_id, 0):
                    self._versions[model_id] = int(version)

    def created(self, model_id: str, version: int) -> None:
        """A new model: what was remembered of an earlier model of that id no longer counts."""
        with self._lock:
            self._versions[model_id] = int(version)

    def forget(self, model_id: str) -> None:
        """The model was deleted."""
        with self._lock:
            self._versions.pop(model_id, None)

    def min_version(self, model_id: str, asked: int | None = None) -> int:
        """What to send: the caller's `min_version` when given (0 reads any version), else the
        version remembered for the model (0 when none)."""
        if asked is None:
            return self._versions.get(model_id, 0)
        try:
            value = operator.index(asked)
        except TypeError:
            value = -1
        if isinstance(asked, bool) or value < 0:
            raise InvalidArgument(f"min_version is {asked!r}; give a version number (0 or more)")
        return value
