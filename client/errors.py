"""Typed client errors: every failed call raises a JitnetError subclass, never a grpc.RpcError.

Each class carries the gRPC status `code` (a StatusCode) and the server's `details`, and
an `exit_code` the `jitnet` command returns for it (Triton's client turns RpcError into its own
InferenceServerException the same way, `from None`, so tracebacks stay short):

    exit  class                status
    1     JitnetError          anything not listed below (UNKNOWN, UNIMPLEMENTED, ...)
    2     InvalidArgument      INVALID_ARGUMENT (also bad local input: a file, a flag value;
                               UnsupportedModel: an ONNX graph or estimator jitnet cannot import)
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
from grpc import StatusCode

_BY_CODE: dict[StatusCode, type[JitnetError]] = {}  # filled by the subclasses' statements


class JitnetError(Exception):
    """A call failed. `code` is the StatusCode, `details` the server's message, `request_id`
    the id the server's access log has the call under (None when it keeps none).

    A subclass names its status and exit code in its class statement, `status=` and
    `exit_code=`; that also makes it the error error_for() raises for that status."""

    code: StatusCode = StatusCode.UNKNOWN
    exit_code: int = 1
    request_id: str | None = None

    def __init_subclass__(cls, *, status: StatusCode | None = None,
                          exit_code: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.code = status
            _BY_CODE[status] = cls
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, details: str = "", code: StatusCode | None = None):
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


class InvalidArgument(JitnetError, ValueError, status=StatusCode.INVALID_ARGUMENT, exit_code=2):
    """The request is malformed: a shape, a value, an enum, a name. Also raised locally."""


class UnsupportedModel(InvalidArgument):
    """A file or object that cannot become a jitnet model (an ONNX graph, a scikit-learn
    estimator): raised locally, before anything is sent. The message names the node, tensor or
    attribute and says what to do instead."""


class NotFound(JitnetError, status=StatusCode.NOT_FOUND, exit_code=3):
    """No model with that id."""


class AlreadyExists(JitnetError, status=StatusCode.ALREADY_EXISTS, exit_code=4):
    """A model with that id exists already."""


class Aborted(JitnetError, status=StatusCode.ABORTED, exit_code=5):
    """The model is being trained by another call; retry later."""


class FailedPrecondition(JitnetError, status=StatusCode.FAILED_PRECONDITION, exit_code=6):
    """E.g. training diverged (non-finite loss); the model keeps its last committed weights."""


class ResourceExhausted(JitnetError, status=StatusCode.RESOURCE_EXHAUSTED, exit_code=7):
    """Over one of the server's limits (rows, parameters, message size, ...)."""


class Unavailable(JitnetError, status=StatusCode.UNAVAILABLE, exit_code=8):
    """No server answered, or it is draining. Retrying (elsewhere) may succeed."""


class DeadlineExceeded(JitnetError, status=StatusCode.DEADLINE_EXCEEDED, exit_code=9):
    """The call's deadline passed before it finished."""


class Cancelled(JitnetError, status=StatusCode.CANCELLED, exit_code=10):
    """The call was cancelled (by this client, or by a server shutting down)."""


class Unauthenticated(JitnetError, status=StatusCode.UNAUTHENTICATED, exit_code=11):
    """The server asks for a bearer token and got none, or another one."""


class PermissionDenied(Unauthenticated, status=StatusCode.PERMISSION_DENIED):
    """The caller may not make this call; the command exits as for Unauthenticated."""


class Internal(JitnetError, status=StatusCode.INTERNAL, exit_code=12):
    """A server bug; the message gives an incident id, the server's log its traceback."""


def error_for(code: StatusCode | None, details: str | None) -> JitnetError:
    """The typed error for a status (JitnetError itself for codes without a class)."""
    code = code if code is not None else StatusCode.UNKNOWN
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
