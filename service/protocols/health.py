"""grpc.health.v1 as jitnet serves it: NOT_SERVING while starting (kernels compiling, models
loading), SERVING once ready, NOT_SERVING for good from the start of a drain. Health answers
without a token and on threads of its own (server/guard.py), so probes always get through.

Each server process answers for itself: with several workers on one port (server/workers.py) a Check
reaches one of them, and its trailing metadata `jitnet-worker-pid` says which.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

from grpc_health.v1 import health, health_pb2

from .. import errors

SERVICE_NAME = health.SERVICE_NAME
SERVING = health_pb2.HealthCheckResponse.SERVING
WORKER_PID = "jitnet-worker-pid"  # trailing metadata of a Check: the process that answered
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_WHOLE_SERVER = health_pb2.HealthCheckRequest(service="")


def check_ready(ready: threading.Event) -> None:
    """Before the work of any RPC that needs the kernels and the models (every protocol):
    UNAVAILABLE while the server is still starting."""
    if not ready.is_set():
        raise errors.Unavailable("the server is starting (compiling kernels, loading models); "
                                 "retry in a moment")


class HealthServicer(health.HealthServicer):
    """grpc's health service, plus `end_watches`: an open Watch is a call in flight like any
    other, so a load balancer watching the server would hold a drain for the whole grace."""

    def __init__(self, services: Iterable[str] = ()):
        super().__init__(experimental_non_blocking=True)
        self._names = ("", *services)  # "" is the server as a whole
        for name in self._names:
            self.set(name, NOT_SERVING)
        self._watches_lock = threading.Lock()
        self._watches: set[Callable] = set()
        self._watches_ended = False

    def Check(self, request, context):
        context.set_trailing_metadata(((WORKER_PID, str(os.getpid())),))
        return super().Check(request, context)

    def Watch(self, request, context, send_response_callback=None):
        if send_response_callback is None:  # a server without non-blocking streams
            return super().Watch(request, context)
        lock, ended = threading.Lock(), []

        def send(response):  # once ended (response None), a stream sends nothing more
            with lock:
                if ended:
                    return
                if response is None:
                    ended.append(True)
                send_response_callback(response)

        with self._watches_lock:
            self._watches.add(send)
            already_ended = self._watches_ended
        context.add_callback(lambda: self._forget_watch(send))
        result = super().Watch(request, context, send)
        if already_ended:
            send(None)
        return result

    def is_serving(self) -> bool:
        """Whether a probe's Check of the server as a whole ("") answers SERVING right now:
        asked of grpc's Check itself, so that other protocols' readiness (the Open Inference
        Protocol's ServerReady) can never disagree with grpc.health.v1."""
        return super().Check(_WHOLE_SERVER, None).status == SERVING

    def serve(self) -> None:
        """SERVING for the server and every service (ignored once draining has begun)."""
        for name in self._names:
            self.set(name, SERVING)

    def _forget_watch(self, send) -> None:
        with self._watches_lock:
            self._watches.discard(send)

    def end_watches(self) -> None:
        """Ends every Watch stream (status OK, after the last status sent) and any opened later."""
        with self._watches_lock:
            self._watches_ended = True
            watches, self._watches = list(self._watches), set()
        for send in watches:
            send(None)

