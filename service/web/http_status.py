"""The page API's one error table: each gRPC status the server answers becomes one HTTP status,
with the server's message as it is. Errors of the HTTP layer itself (a bad body, a wrong
content type, a body too big) are HttpErrors made here too, so every error the page sees has
the same shape:

    {"error": {"status": 404, "code": "NOT_FOUND", "message": "model 'm1' not found"}}
"""

from __future__ import annotations

from http import HTTPStatus

from grpc import StatusCode

from jitnet.client import JitnetError

# api.md's error table, as HTTP says it. A status not listed (UNKNOWN, DATA_LOSS, ...) is 500.
HTTP_STATUS: dict[StatusCode, HTTPStatus] = {
    StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    StatusCode.ABORTED: HTTPStatus.CONFLICT,  # the model is being trained: try again later
    StatusCode.FAILED_PRECONDITION: HTTPStatus.PRECONDITION_FAILED,  # e.g. training diverged
    StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,  # over a server limit
    StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,  # starting up, or draining
    StatusCode.CANCELLED: HTTPStatus.SERVICE_UNAVAILABLE,  # the server cut the call (drain)
    StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    StatusCode.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
}


class HttpError(Exception):
    """An error answered as its HTTP status with the JSON body above."""

    def __init__(self, status: HTTPStatus, message: str, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code or status.name
        self.message = message
        self.headers = dict(headers or {})
        if status == HTTPStatus.UNAUTHORIZED:
            self.headers.setdefault("WWW-Authenticate", 'Bearer realm="jitnet"')

    def to_json(self) -> dict:
        return {"error": {"status": int(self.status), "code": self.code,
                          "message": self.message}}


class BadRequest(HttpError):
    """A request the API cannot read (a field missing or of the wrong kind): 400, like the
    server's INVALID_ARGUMENT, whose code it carries."""

    def __init__(self, message: str):
        super().__init__(HTTPStatus.BAD_REQUEST, message, StatusCode.INVALID_ARGUMENT.name)


def from_call(error: JitnetError) -> HttpError:
    """A failed gRPC call (the client's typed error) as its HTTP error."""
    status = HTTP_STATUS.get(error.code, HTTPStatus.INTERNAL_SERVER_ERROR)
    return HttpError(status, error.details or error.code.name, error.code.name)
