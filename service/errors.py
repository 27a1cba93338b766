"""Domain errors. No grpc here: the servicer maps each type to a status through one table."""


class JitnetError(Exception):
    """Base of every error a caller can act on. The message is shown to the user as is."""


class InvalidArgument(JitnetError):
    """The request is malformed: a shape, a value, an enum, a name. Say which field and why."""


class NotFound(JitnetError):
    """No model has that id."""


class AlreadyExists(JitnetError):
    """The model id is taken."""


class Busy(JitnetError):
    """The model is being trained by another call (locally or by another server process)."""


class LeaseLost(JitnetError):
    """A lease can no longer commit: it was released, or (PostgreSQL store) it expired while its
    holder could not renew it and may now be someone else's. Nothing was stored; the model keeps
    its last committed version. Like Busy, a concurrency conflict: the caller may retry."""


class Diverged(JitnetError):
    """The loss turned non-finite; the model keeps its last committed, finite weights."""


class FailedPrecondition(JitnetError):
    """The request is valid, but the stored state does not allow it (e.g. a corrupt model file)."""


class LimitExceeded(JitnetError):
    """Over a configured limit: parameters, width, rows, work per call, calls at once, disk."""


class Unavailable(JitnetError):
    """The server is draining or cannot serve this now; retrying elsewhere may succeed."""


class StoreUnavailable(Unavailable):
    """The model store cannot be reached (the database is down or cut off). Changes are refused;
    Predict keeps answering from the versions in memory."""


class Cancelled(JitnetError):
    """The caller cancelled or its deadline passed; the work stopped between chunks."""


class DiskFull(LimitExceeded):
    """A write failed because the data directory's disk is full; the previous version is kept."""


class StorageFailed(JitnetError):
    """A write to the data directory failed for another reason (EIO, permissions); the previous
    version is kept. Maps to INTERNAL, but its message (what failed, the OS's reason) is shown."""
