"""Typed client errors: every failed call raises a JitnetError subclass, never a grpc.RpcError.

Each class carries the gRPC status `code` (a grpc.StatusCode) and the server's `details`, and
an `exit_code` the `jitnet` command returns for it (Triton's client turns RpcError into its own
InferenceServerException the same way, `from None`, so tracebacks stay short):

    exit  class                status
    1     JitnetError          anything not listed below (UNKNOWN, UNIMPLEMENTED, ...)
    2     InvalidArgument      INVALID_ARGUMENT (also bad local input: a file, a flag value)
    3     NotFound             NOT_FOUND
    4     AlreadyExists        ALREADY_EXISTS
    5     Aborted              ABORTED (the model is being trained by another call)
    6     FailedPrecondition   FAILED_PRECONDITION (training diverged; the good weights stay)
    7     ResourceExhausted    RESOURCE_EXHAUSTED (over a server limit)
    8     Unavailable          UNAVAILABLE (no server there, or it is draining)
    9     DeadlineExceeded     DEADLINE_EXCEEDED
    10    Cancelled            CANCELLED
    11    Unauthenticated      UNAUTHENTICATED (and PermissionDenied, PERMISSION_DENIED)
    12    Internal             INTERNAL (a server bug; its log has the traceback)
"""

from __future__ import annotations

import grpc


class JitnetError(Exception):
    """A call failed. `code` is the grpc.StatusCode, `details` the server's message,
    `request_id` the id the server's access log has the call under (None when it keeps none)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    exit_code: int = 1
    request_id: str | None = None

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None):
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        # The one line the CLI prints after "error: ".
        text = f"{self.code.name}: {self.details}" if self.details else self.code.name
        return f"{text} (request id {self.request_id})" if self.request_id else text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, details={self.details!r})"


class InvalidArgument(JitnetError, ValueError):
    """The request is malformed: a shape, a value, an enum, a name. Also raised locally."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    exit_code = 2


class NotFound(JitnetError):
    code = grpc.StatusCode.NOT_FOUND
    exit_code = 3


class AlreadyExists(JitnetError):
    code = grpc.StatusCode.ALREADY_EXISTS
    exit_code = 4


class Aborted(JitnetError):
    """The model is being trained by another call; retry later."""

    code = grpc.StatusCode.ABORTED
    exit_code = 5


class FailedPrecondition(JitnetError):
    """E.g. training diverged (non-finite loss); the model keeps its last committed weights."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    exit_code = 6


class ResourceExhausted(JitnetError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    exit_code = 7


class Unavailable(JitnetError):
    """No server answered, or it is draining. Retrying (elsewhere) may succeed."""

    code = grpc.StatusCode.UNAVAILABLE
    exit_code = 8


class DeadlineExceeded(JitnetError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    exit_code = 9


class Cancelled(JitnetError):
    code = grpc.StatusCode.CANCELLED
    exit_code = 10


class Unauthenticated(JitnetError):
    code = grpc.StatusCode.UNAUTHENTICATED
    exit_code = 11


class PermissionDenied(Unauthenticated):
    code = grpc.StatusCode.PERMISSION_DENIED


class Internal(JitnetError):
    code = grpc.StatusCode.INTERNAL
    exit_code = 12


_BY_CODE: dict[grpc.StatusCode, type[JitnetError]] = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, Aborted, FailedPrecondition,
                ResourceExhausted, Unavailable, DeadlineExceeded, Cancelled, Unauthenticated,
                PermissionDenied, Internal)
}


def error_for(code: grpc.StatusCode | None, details: str | None) -> JitnetError:
    """The typed error for a status (JitnetError itself for codes without a class)."""
    code = code if code is not None else grpc.StatusCode.UNKNOWN
    return _BY_CODE.get(code, JitnetError)(details or "", code)


def from_rpc_error(error: grpc.RpcError) -> JitnetError:
    """Converts a failed call (a grpc.Call that is also an RpcError) into its typed error."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    typed = error_for(code, details)
    typed.request_id = _request_id(error)
    return typed


def _request_id(error: grpc.RpcError) -> str | None:
    """The server's x-request-id, returned in the trailing metadata (its --access-log)."""
    try:
        metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    except Exception:  # noqa: BLE001 - a call that never reached a server has none
        return None
    for key, value in metadata or ():
        if key == "x-request-id":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None
