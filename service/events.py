"""What the engine, the store and start-up report as they work: a tiny listener interface.

The training loop, the store and the server call these methods at the moments they know of
(a chunk of epochs ran, a commit became durable, a lease was refused, a write failed). The
methods here do nothing; `observability.Observer` overrides them to count (Prometheus) and to
draw child spans (OpenTelemetry). So the engine and the store import neither library, and with
observability off a report costs one call of an empty method, made between chunks and around
commits, never per Predict.

Reports arrive on the thread doing the work, inside the call that asked for it (a span can
become the child of that call's span). A listener must not raise.
"""

from __future__ import annotations


class Events:
    """Every report the service makes. This base ignores them all."""

    def chunk_trained(self, epochs: int, iterations: int, seconds: float, loss: float) -> None:
        """One kernel call of training finished: `epochs` epochs, `iterations` samples, in
        `seconds`, the last epoch's mean loss `loss`."""

    def diverged(self) -> None:
        """Training stopped because the loss or the weights became non-finite."""

    def committed(self, model_id: str, version: int, seconds: float) -> None:
        """A new version of a model is durable; writing it took `seconds`."""

    def lease_refused(self, model_id: str) -> None:
        """A call could not change a model because another call holds its lease (Busy)."""

    def store_failed(self, model_id: str, kind: str) -> None:
        """The store could not do its part: kind is one of STORE_FAILURES."""

    def warmed_up(self, seconds: float) -> None:
        """The kernels are compiled (or loaded from numba's cache); it took `seconds`."""


# The kinds of store_failed, a closed set (they become a metric's label values).
STORE_FAILURES = (
    "disk_full",  # a write found the data directory's disk full; the previous version is kept
    "write",  # a write or delete failed for another reason (EIO, permissions)
    "unreadable",  # a stored model could not be read (corrupt, truncated, foreign format)
)

QUIET = Events()  # the listener when nobody listens
