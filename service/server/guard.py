"""The call guard: what every single-request handler gets, wrapped once as it is registered.

  * request bytes that do not parse answer INVALID_ARGUMENT (grpc alone answers INTERNAL);
  * health Check runs on a thread pool of its own, so probes answer while every worker trains;
  * running handlers are counted, so shutdown knows whether any outlived the grace;
  * a handler marked `fastpath.may_return_bytes` may answer with its reply already encoded
    (protocols/fastpath.py's one-sample Predict and one-row ModelInfer);
  * with observability on (metrics, access log, traces), the handler is handed to the
    Observer, which measures it (observability/__init__.py); off, nothing of it is on the path.

Wrapped once, not intercepted: an interceptor runs on every call (about 5 us of a one-sample
Predict). `Registering` stands in for the server while the generated `add_*_to_server` functions
and reflection register their handlers, and hands each handler to the guard.

This module leans on grpc internals; they are named in the block below, and
tests/server/test_guard.py fails loudly when a grpcio upgrade changes any of them.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc

from ..protocols.fastpath import returns_bytes

# -- grpc internals (grpcio 1.85) -----------------------------------------------------------
# grpc.RpcMethodHandler objects are namedtuples (grpc._utilities.RpcMethodHandler): a wrapped
# handler is a copy made with `_replace`.
# grpc._server reads two optional attributes of a handler's behaviour: NON_BLOCKING (the
# behaviour returns at once and replies through a callback: health Watch) and THREAD_POOL (run
# it on that executor instead of the server's).
NON_BLOCKING = "experimental_non_blocking"
THREAD_POOL = "experimental_thread_pool"
# The generated code registers a service both as a generic handler and, by name, through
# Server.add_registered_method_handlers (grpcio >= 1.62), which Registering must offer too.
REGISTERED_METHODS = "add_registered_method_handlers"


def _replaced(handler: grpc.RpcMethodHandler, **changes) -> grpc.RpcMethodHandler:
    return handler._replace(**changes)


# -------------------------------------------------------------------------------------------

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
class _Malformed:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, method: str, error: Exception):
        self.details = (f"the {method.rsplit('/', 1)[-1]} request does not parse ({error}); "
                        "send the message the method's proto declares")


class CallGuard:
    """Wraps handlers (see the module's docstring) and counts the ones running."""

    def __init__(self, health_pool: futures.ThreadPoolExecutor, observer=None):
        self._health_pool = health_pool
        self._observer = observer  # observability.Observer, or None: nothing observed
        # A plain lock (entered in C) and a polled wait_idle: a Condition costs a one-sample
        # Predict a few Python frames, and only shutdown ever waits.
        self._count_lock = threading.Lock()
        self._running = 0

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None
             ) -> grpc.RpcMethodHandler | None:
        if handler is None:
            return None  # unknown methods: grpc's own handling, and not counted
        if handler.request_streaming:  # reflection's stream: grpc's own handling
            return handler if self._observer is None else self._observed(method, handler)
        request_class = _message_class(handler.request_deserializer)
        parse = _tolerant(handler.request_deserializer, method)
        if handler.response_streaming:
            return _replaced(handler, request_deserializer=parse, unary_stream=self._wrap(
                handler.unary_stream, method, True, request_class))
        serialize = handler.response_serializer
        if returns_bytes(handler.unary_unary):
            serialize = _passing_bytes(serialize)
        return _replaced(handler, request_deserializer=parse, response_serializer=serialize,
                         unary_unary=self._wrap(handler.unary_unary, method, False,
                                                request_class))

    def _observed(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.response_streaming:
            return _replaced(handler, stream_stream=self._observer.wrap(
                method, "bidi_stream", handler.stream_stream))
        return _replaced(handler, stream_unary=self._observer.wrap(
            method, "client_stream", handler.stream_unary))

    def _wrap(self, behavior, method: str, streaming: bool, request_class):
        def call(request, context, *rest):
            if isinstance(request, _Malformed):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details)
            if rest:  # non-blocking (health Watch): returns at once, replies by callback
                return behavior(request, context, *rest)
            if streaming:
                return self._counted_stream(behavior(request, context))
            with self._count_lock:
                self._running += 1
            try:
                return behavior(request, context)
            finally:
                with self._count_lock:
                    self._running -= 1

        if self._observer is not None:  # outermost: it sees the guard's statuses too
            call = self._observer.wrap(method, "server_stream" if streaming else "unary", call,
                                       request_class, bool(getattr(behavior, NON_BLOCKING, False)))
        for name in (NON_BLOCKING, THREAD_POOL):
            if hasattr(behavior, name):
                setattr(call, name, getattr(behavior, name))
        if method == HEALTH_CHECK:
            setattr(call, THREAD_POOL, self._health_pool)
        return call

    def _counted_stream(self, responses):
        with self._count_lock:
            self._running += 1
        try:
            yield from responses
        finally:
            with self._count_lock:
                self._running -= 1

    def wait_idle(self, timeout: float, interval: float = 0.01) -> bool:
        """Whether every handler has returned, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._running:
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)
        return True


class Registering:
    """Stands in for the server while handlers are registered; the guard wraps each once."""

    def __init__(self, server: grpc.Server, guard: CallGuard):
        self._server, self._guard = server, guard

    def add_generic_rpc_handlers(self, generic_handlers) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedGeneric(h, self._guard) for h in generic_handlers))

    def add_registered_method_handlers(self, service: str, method_handlers: dict) -> None:
        getattr(self._server, REGISTERED_METHODS)(service, {
            name: self._guard.wrap(f"/{service}/{name}", handler)
            for name, handler in method_handlers.items()})


class _GuardedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose handlers are wrapped by the guard, once per method."""

    def __init__(self, inner: grpc.GenericRpcHandler, guard: CallGuard):
        self._inner, self._guard = inner, guard
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method or ""
        try:
            return self._wrapped[method]
        except KeyError:
            wrapped = self._guard.wrap(method, self._inner.service(handler_call_details))
            if wrapped is not None:  # not the names a client made up: the dict would grow
                self._wrapped[method] = wrapped
            return wrapped


def _passing_bytes(serialize):
    def serializer(reply):
        return reply if type(reply) is bytes else serialize(reply)
    return serializer


def _message_class(deserialize):
    """The request message's class: generated code passes its `FromString` classmethod."""
    owner = getattr(deserialize, "__self__", None)
    return owner if isinstance(owner, type) else None


def _tolerant(deserialize, method: str):
    if deserialize is None:
        return None

    def parse(data):
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, and whatever a parser raises
            return _Malformed(method, exc)
    return parse
