"""The server's lifecycle: build it (`create_server`), serve it until SIGTERM (`serve`). The command
line (`python -m jitnet.service.server`, `jitnet serve`) goes through main.py, which runs one such
server or, with workers, the parent of several (workers.py); this module knows neither.

Lifecycle:
  start      the port answers at once; health is NOT_SERVING and NetworkService calls get
             UNAVAILABLE while a background thread compiles the kernels (warm-up) and loads the
             stored models; then health turns SERVING. A store that cannot be reached (a
             database that is down) is retried with backoff; the server stays NOT_SERVING
             until the models are loaded.
  SIGTERM    (or SIGINT) health turns NOT_SERVING for good, new calls are refused (UNAVAILABLE),
             health Watch streams end (an open one would hold the drain), calls in flight get
             `grace_seconds` to finish, then they are cut (long work sees the cut and stops
             between chunks); `serve` returns 0. A handler that cannot see the cut (one long
             kernel call) gets EXIT_MARGIN_SECONDS more, then the process exits 0 without it:
             every commit is atomic, so that is as safe as a crash. A second signal cuts at once.

At start, after warm-up, the kernel room (engine/jit/) is set up from the settings and
loads the specialised kernels of stored models' architectures from its cache (or queues their
compile): a restart is warm.

The other rooms of the server: guard.py wraps every handler (malformed requests, health's own
threads, the count of running calls), protocols/health.py is grpc.health.v1 with a drain,
observability/ has the metrics endpoint, the access log and traces (each off unless configured).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jitnet.inference import open_inference_grpc_pb2_grpc
from jitnet.v1 import jitnet_pb2, jitnet_pb2_grpc

from ..config import Config
from ..engine import jit
from ..errors import FailedPrecondition, NotFound, StoreUnavailable
from ..events import QUIET
from ..observability import Observer, logs
from ..protocols import health
from ..protocols.inference.servicer import SERVICE_NAME as INFERENCE_SERVICE_NAME
from ..protocols.inference.servicer import InferenceServicer
from ..protocols.jitnet_v1.servicer import NetworkServicer
from ..store import LoadReport, ModelStore, open_store
from ..web import WebServer
from ..web import for_config as web_for_config
from .auth import BearerTokenInterceptor
from .guard import CallGuard, Registering
from .warmup import warm_up as default_warm_up

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = jitnet_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name

# After the grace, how long handlers that cannot see the cut may still run before the process
# exits without them.
EXIT_MARGIN_SECONDS = 1.0

# At start, the longest wait between two attempts to reach an unreachable store.
STORE_RETRY_MAX_SECONDS = 5.0

# Keepalive. The server pings a connection every minute and drops a peer that does not answer
# within 20 s, so a client that vanished mid-Train has its call cancelled and its lease freed.
# Clients may ping every 10 s or more, with or without calls in flight (faster ones get GOAWAY
# too_many_pings); the jitnet client pings every 30 s while a call is open.
KEEPALIVE_OPTIONS = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
)


@dataclasses.dataclass
class ServerHandle:
    """A built server: `.start()` it, `.drain()` it."""

    server: grpc.Server
    port: int
    config: Config
    store: ModelStore
    health: health.HealthServicer
    ready: threading.Event  # set once warmed up and loaded: SERVING
    warm_up: Callable[[], object]
    calls: CallGuard
    observer: Observer | None = None  # metrics, access log, traces; None when all are off
    startup_error: BaseException | None = None
    stopping: threading.Event = dataclasses.field(default_factory=threading.Event)
    listen: Callable[[], int] | None = None  # a worker binds its shared port once ready
    web: WebServer | None = None  # the playground page (--web-port), a client of `port`

    @property
    def metrics_port(self) -> int | None:
        """The port of /metrics (None: metrics off)."""
        return self.observer.metrics_port if self.observer is not None else None

    def start(self) -> ServerHandle:
        """Starts answering (health NOT_SERVING), then warms up and loads in the background.

        A worker (workers.py) warms up and loads first and binds its port after: the port is
        shared, so until then the other workers take every new connection, and none of them
        meets a worker that would answer UNAVAILABLE while it starts."""
        if self.listen is not None:
            self._start_up()
            if self.startup_error is None:
                self.listen()
                self.server.start()
            return self
        self.server.start()
        if self.web is not None:  # answers at once; its calls get UNAVAILABLE until SERVING
            self.web.start()
        threading.Thread(target=self._start_up, name="jitnet-startup", daemon=True).start()
        return self

    def _start_up(self) -> None:
        try:
            began = time.perf_counter()
            self.warm_up()
            warmed = time.perf_counter()
            (self.observer or QUIET).warmed_up(warmed - began)
            report = self._open_store()
            if report is None:  # drained before the store could be reached
                return
            _LOGGER.info("warm-up %.2f s; %d model(s) loaded from %s in %.2f s%s",
                         warmed - began, len(report.loaded), self.store.location,
                         time.perf_counter() - warmed,
                         f"; {len(report.failed)} unreadable: {', '.join(report.failed)}"
                         if report.failed else "")
            self._specialise(report)
        except BaseException as exc:  # noqa: BLE001 - reported to run(), which exits 1
            _LOGGER.critical("start-up failed: %s", exc, exc_info=exc)
            self.startup_error = exc
            return
        # Everything allocated so far (modules, compiled kernels, loaded models) lives as long
        # as the process: moving it out of the collector's view keeps full collections short,
        # which were up to ~40 ms of p99 under load (benchmarks/serve.py).
        gc.collect()
        gc.freeze()
        self.ready.set()
        self.health.serve()  # ignored once draining has begun
        _LOGGER.info("SERVING")

    def _open_store(self) -> LoadReport | None:
        """Loads the models; while the store is unreachable (a database that is down), retries
        with backoff, NOT_SERVING meanwhile. None when a drain began first."""
        delay = 0.5
        while True:
            try:
                return self.store.open()
            except StoreUnavailable as exc:
                _LOGGER.warning("cannot load the models yet: %s. NOT_SERVING until they are "
                                "loaded; retrying in %g s", exc, delay)
            if self.stopping.wait(delay):
                return None
            delay = min(2 * delay, STORE_RETRY_MAX_SECONDS)

    def _specialise(self, report: LoadReport) -> None:
        """The kernel room, set up after warm-up (which compiles the generic kernels): the
        stored models' architectures, most recently changed first, get their specialised
        kernels from the cache now, or queued for compiling."""
        config = self.config
        jit.room.configure(jit.Mode.BACKGROUND, directory=config.kernel_dir,
                           max_loaded=config.specialised_kernels,
                           after_predicts=config.specialise_after_predicts)
        if not config.specialised_kernels or not config.specialise_at_start:
            return
        records = []
        for model_id in report.loaded:
            try:
                records.append(self.store.get(model_id))
            except (NotFound, FailedPrecondition):
                continue  # deleted or damaged since
        records.sort(key=lambda record: record.update_time_ns, reverse=True)
        began = time.perf_counter()
        loaded, queued = jit.room.prefetch([r.arch for r in records],
                                           config.specialise_at_start)
        if loaded or queued:
            _LOGGER.info("specialised kernels: %d architecture(s) loaded from %s in %.0f ms, "
                         "%d queued for compiling", loaded, jit.room.directory,
                         1e3 * (time.perf_counter() - began), queued)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def drain(self, grace: float | None = None) -> threading.Event:
        """Health NOT_SERVING, refuse new calls, give calls in flight `grace` seconds (default
        the configured grace), then cut them. Returns the event set once fully stopped."""
        self.stopping.set()
        self.health.enter_graceful_shutdown()
        if self.web is not None:  # no new page requests; its calls in flight get the grace
            self.web.stop_listening()
        stopped = self.server.stop(self.config.grace_seconds if grace is None else grace)
        self.health.end_watches()  # after stop(): a client's renewed Watch is refused
        if self.web is not None:
            web = self.web
            threading.Thread(target=lambda: stopped.wait() and web.close(),
                             name="jitnet-web-close", daemon=True).start()
        if self.observer is not None:  # /metrics answers until the last call has ended
            observer = self.observer
            threading.Thread(target=lambda: stopped.wait() and observer.close(),
                             name="jitnet-observer-close", daemon=True).start()
        return stopped

    def wait_idle(self, timeout: float) -> bool:
        """Whether every handler has returned, waiting up to `timeout` seconds."""
        return self.calls.wait_idle(timeout)


def create_server(config: Config, *, warm_up: Callable[[], object] = default_warm_up,
                  reuse_port: bool = False) -> ServerHandle:
    """Builds and binds a server; `.start()` it. `warm_up` is injectable for tests;
    `reuse_port` is for the workers of one parent (workers.py), which share the port."""
    lim = config.limits
    options = [
        ("grpc.max_receive_message_length", lim.max_message_bytes),
        ("grpc.max_send_message_length", lim.max_message_bytes),
        # Alone, a second server on a taken port fails instead of sharing it; workers share.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        *KEEPALIVE_OPTIONS,
    ]
    store = open_store(config.store_location, refresh_seconds=config.refresh_seconds,
                       lease_seconds=config.lease_seconds,
                       poll_seconds=config.store_poll_seconds)
    observer = Observer.of(config, store)
    if observer is not None:
        store.events = observer
    calls = CallGuard(futures.ThreadPoolExecutor(max_workers=2,
                                                 thread_name_prefix="jitnet-health"), observer)
    # Only the optional token check is an interceptor: an interceptor runs on every call, ~5 us
    # of a one-sample Predict, so the guard wraps handlers once, as they are registered.
    interceptors = [BearerTokenInterceptor(config.auth_token)] if config.auth_token else None
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="jitnet"),
        interceptors=interceptors, options=options,
        maximum_concurrent_rpcs=lim.max_concurrent_calls)
    guarded = Registering(server, calls)

    ready = threading.Event()
    # Both protocols on one port, through the same guard, the same store and limits, and the
    # same readiness: jitnet.v1 and the Open Inference Protocol (protocols/inference/).
    health_servicer = health.HealthServicer([SERVICE_NAME, INFERENCE_SERVICE_NAME])
    jitnet_pb2_grpc.add_NetworkServiceServicer_to_server(
        NetworkServicer(store, lim, ready, observer or QUIET), guarded)
    open_inference_grpc_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(store, lim, ready, health_servicer.is_serving), guarded)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, guarded)
    reflection.enable_server_reflection(
        (SERVICE_NAME, INFERENCE_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
        guarded)

    credentials = None
    if config.tls:
        with open(config.tls_key, "rb") as key, open(config.tls_cert, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])

    def listen() -> int:  # grpc binds (and listens) as a port is added
        port = (server.add_secure_port(config.address, credentials) if credentials
                else server.add_insecure_port(config.address))
        if not port:
            raise RuntimeError(f"could not listen on {config.address}")
        return port

    if observer is not None and config.metrics_port is not None:
        try:
            observer.serve_metrics(config.host, config.metrics_port)
        except OSError as exc:
            raise RuntimeError(f"could not serve metrics on {config.host}:"
                               f"{config.metrics_port}: {exc}") from None
    if reuse_port:  # a worker: the parent chose the port (and serves any page); bound once
        return ServerHandle(server, config.port, config, store, health_servicer, ready,
                            warm_up, calls, observer, listen=listen)
    try:
        port = listen()
        try:
            web = _page(config, port)
        except RuntimeError:
            server.stop(0)  # frees the gRPC port again
            raise
    except RuntimeError:
        if observer is not None:
            observer.close()
        raise
    return ServerHandle(server, port, config, store, health_servicer, ready, warm_up, calls,
                        observer, web=web)


def _page(config: Config, port: int) -> WebServer | None:
    """The playground page on --web-host:--web-port, calling this server's port."""
    try:
        return web_for_config(config, port)
    except OSError as exc:
        raise RuntimeError(f"could not serve the page on {config.web_host}:{config.web_port}: "
                           f"{exc}") from None


def serve(config: Config, *, warm_up: Callable[[], object] = default_warm_up,
          reuse_port: bool = False) -> int:
    """One server: serves until SIGTERM or SIGINT, then drains. Returns the process exit code.
    `reuse_port` is for a worker of a parent (workers.py)."""
    logs.configure(config.log_level, config.log_format)
    try:
        handle = create_server(config, warm_up=warm_up, reuse_port=reuse_port)
    except (OSError, RuntimeError) as exc:
        _LOGGER.critical("cannot start: %s", exc)
        return 1
    stop = threading.Event()
    signals = []

    def on_signal(signum, _frame):
        signals.append(signum)
        stop.set()
        if len(signals) > 1:
            _LOGGER.warning("second signal: cutting the calls in flight now")
            handle.server.stop(0)

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    try:
        handle.start()
    except (OSError, RuntimeError) as exc:  # a worker binding its port after warm-up
        _LOGGER.critical("cannot start: %s", exc)
        return 1
    _LOGGER.info("listening on %s:%d (%s, store %s, %d threads, auth %s)", config.host,
                 handle.port, "TLS" if config.tls else "plaintext", handle.store.location,
                 config.threads, "bearer token" if config.auth_token else "off")
    if handle.web is not None:
        _LOGGER.info("the playground page: %s", handle.web.url)
    if handle.observer is not None:
        _LOGGER.info("observability: metrics %s, access log %s, tracing %s",
                     f"on http://{config.host}:{handle.metrics_port}/metrics"
                     if handle.metrics_port is not None else "off",
                     "on" if config.access_log else "off", "on" if config.tracing else "off")
    while not stop.wait(0.5):
        if handle.startup_error is not None:
            handle.drain(0).wait(5)
            return 1
    _LOGGER.info("%s: draining, calls in flight get %g s", signal.Signals(signals[0]).name,
                 config.grace_seconds)
    stopped = handle.drain()
    if not stopped.wait(config.grace_seconds + 5):
        _LOGGER.error("calls still running %g s after the grace; exiting anyway",
                      config.grace_seconds + 5)
    if not handle.wait_idle(EXIT_MARGIN_SECONDS):
        # A handler inside one long kernel call cannot see the cut; waiting for it would keep
        # the process past its grace (and an orchestrator would SIGKILL it). Commits are
        # atomic, so leaving now is as safe as a crash and leaves no partial model behind.
        _LOGGER.warning("calls cut at the grace are still computing; exiting without them")
        _LOGGER.info("stopped")
        if handle.observer is not None:
            handle.observer.close()
        logging.shutdown()
        os._exit(0)
    if handle.observer is not None:
        handle.observer.close()
    handle.store.close()
    _LOGGER.info("stopped")
    return 0

