"""The one error table: each domain error (errors.py) becomes its gRPC status here, for every
protocol the server speaks. Servicer methods raise; `mapped` is the only place that aborts.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import uuid
from collections.abc import Callable

import grpc

from .. import errors

_LOGGER = logging.getLogger(__name__)

# api.md "Errors". Looked up along the exception's MRO, most specific first.
STATUS = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Busy: grpc.StatusCode.ABORTED,
    errors.LeaseLost: grpc.StatusCode.ABORTED,
    errors.Diverged: grpc.StatusCode.FAILED_PRECONDITION,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,  # the database is unreachable
    errors.Cancelled: grpc.StatusCode.CANCELLED,  # DEADLINE_EXCEEDED when the deadline passed
    errors.StorageFailed: grpc.StatusCode.INTERNAL,
}


def status_of(exc: BaseException, context: grpc.ServicerContext) -> tuple[grpc.StatusCode, str]:
    """The status and message for an exception. Anything not in the table is a bug: INTERNAL,
    logged with its traceback under an incident id; its message says nothing of the internals."""
    for kind in type(exc).__mro__:
        code = STATUS.get(kind)
        if code is not None:
            if code is grpc.StatusCode.CANCELLED and deadline_passed(context):
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            return code, str(exc)
    incident = uuid.uuid4().hex[:12]
    _LOGGER.error("internal error, incident %s", incident, exc_info=exc)
    return grpc.StatusCode.INTERNAL, (f"internal server error (incident {incident}); the "
                                      "server's log has the details")


def deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def mapped(method):
    """Wraps a servicer method (unary or server-streaming): every exception becomes its status."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - every error becomes a status
                context.abort(*status_of(exc, context))
        return stream

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status
            context.abort(*status_of(exc, context))
    return unary


def stop_signal(context: grpc.ServicerContext) -> Callable[[], bool]:
    """should_stop for long work: the client cancelled, its deadline passed, or the server cut
    the call (grace expired). The callback fires on any of these."""
    event = threading.Event()
    context.add_callback(event.set)
    return lambda: event.is_set() or deadline_passed(context)
