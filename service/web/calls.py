"""The page's calls go to the server's own gRPC port through one jitnet Client, so the token,
limits, validation, metrics and access log apply to them as to any client's.

Each HTTP request is served by a thread of its own; `Forwarding` (a client interceptor on the
one channel) adds that request's bearer token to every call the thread makes, and keeps the
thread's streaming calls (Train) so that they can be cancelled from another thread, the one
that notices the page went away (server.py).
"""

from __future__ import annotations

import collections
import contextlib
import threading

import grpc


class _Details(collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                     "compression")), grpc.ClientCallDetails):
    """A call's details with other metadata (grpc's own ClientCallDetails is abstract)."""


class Scope:
    """One HTTP request's calls: its token, and the streams it opened."""

    def __init__(self, token: str | None):
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.streams: list[grpc.Call] = []
        self.cancelled = threading.Event()
        self._lock = threading.Lock()

    def opened(self, call: grpc.Call) -> None:
        with self._lock:
            self.streams.append(call)
            cancelled = self.cancelled.is_set()
        if cancelled:  # the page left before the call began
            call.cancel()

    def cancel(self) -> None:
        """Cancels every stream of the request (thread-safe): the page has gone away."""
        with self._lock:
            self.cancelled.set()
            streams = list(self.streams)
        for call in streams:
            call.cancel()


class Forwarding(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self):
        self._local = threading.local()

    @contextlib.contextmanager
    def scope(self, token: str | None):
        """`with forwarding.scope(token) as scope:` every call this thread makes inside."""
        scope = Scope(token)
        self._local.scope = scope
        try:
            yield scope
        finally:
            self._local.scope = None

    def _details(self, details: grpc.ClientCallDetails) -> tuple[grpc.ClientCallDetails,
                                                                  Scope | None]:
        scope = getattr(self._local, "scope", None)
        if scope is None or not scope.metadata:
            return details, scope
        metadata = [*(details.metadata or ()), *scope.metadata]
        return _Details(details.method, details.timeout, metadata, details.credentials,
                        details.wait_for_ready, details.compression), scope

    def intercept_unary_unary(self, continuation, client_call_details, request):
        details, _ = self._details(client_call_details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        details, scope = self._details(client_call_details)
        call = continuation(details, request)
        if scope is not None:
            scope.opened(call)
        return call
