"""The gRPC server: build it (`create_server`), run it until SIGTERM (`run`), or both from the
command line (`python -m jitnet.service.server --port 0`; `jitnet serve` calls `run`).

Lifecycle:
  start      the port answers at once; health is NOT_SERVING and NetworkService calls get
             UNAVAILABLE while a background thread compiles the kernels (warm-up) and loads the
             stored models; then health turns SERVING.
  SIGTERM    (or SIGINT) health turns NOT_SERVING for good, new calls are refused (UNAVAILABLE),
             calls in flight get `grace_seconds` to finish, then they are cut (long work sees
             the cut and stops between chunks); `run` returns 0. A second signal cuts at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Callable, Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jitnet.v1 import jitnet_pb2, jitnet_pb2_grpc

from . import config as config_module
from .auth import BearerTokenInterceptor
from .config import Config, ConfigError
from .servicer import NetworkServicer
from .store import Store
from .warmup import warm_up as default_warm_up

_LOGGER = logging.getLogger(__name__)

SERVICE_NAME = jitnet_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclasses.dataclass
class ServerHandle:
    """A built server. Unpacks as `server, port = create_server(config)`."""

    server: grpc.Server
    port: int
    config: Config
    store: Store
    health: health.HealthServicer
    ready: threading.Event  # set once warmed up and loaded: SERVING
    warm_up: Callable[[], object]
    startup_error: BaseException | None = None

    def __iter__(self) -> Iterator:
        return iter((self.server, self.port))

    def start(self) -> ServerHandle:
        """Starts answering (health NOT_SERVING), then warms up and loads in the background."""
        self.server.start()
        threading.Thread(target=self._start_up, name="jitnet-startup", daemon=True).start()
        return self

    def _start_up(self) -> None:
        try:
            began = time.perf_counter()
            self.warm_up()
            warmed = time.perf_counter()
            report = self.store.open()
            _LOGGER.info("warm-up %.2f s; %d model(s) loaded from %s in %.2f s%s",
                         warmed - began, len(report.loaded), self.store.data_dir,
                         time.perf_counter() - warmed,
                         f"; {len(report.failed)} unreadable: {', '.join(report.failed)}"
                         if report.failed else "")
        except BaseException as exc:  # noqa: BLE001 - reported to run(), which exits 1
            _LOGGER.critical("start-up failed: %s", exc, exc_info=exc)
            self.startup_error = exc
            return
        self.ready.set()
        for name in ("", SERVICE_NAME):
            self.health.set(name, _SERVING)  # ignored once draining has begun
        _LOGGER.info("SERVING")

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def drain(self, grace: float | None = None) -> threading.Event:
        """Health NOT_SERVING, refuse new calls, give calls in flight `grace` seconds (default
        the configured grace), then cut them. Returns the event set once fully stopped."""
        self.health.enter_graceful_shutdown()
        return self.server.stop(self.config.grace_seconds if grace is None else grace)


def create_server(config: Config, *, warm_up: Callable[[], object] = default_warm_up
                  ) -> ServerHandle:
    """Builds and binds a server; `.start()` it. `warm_up` is injectable for tests."""
    lim = config.limits
    options = [
        ("grpc.max_receive_message_length", lim.max_message_bytes),
        ("grpc.max_send_message_length", lim.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second server on a taken port fails instead of sharing it
    ]
    interceptors = [BearerTokenInterceptor(config.auth_token)] if config.auth_token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="jitnet"),
        interceptors=interceptors, options=options,
        maximum_concurrent_rpcs=lim.max_concurrent_calls)

    store = Store(config.data_dir, refresh_seconds=config.refresh_seconds)
    ready = threading.Event()
    jitnet_pb2_grpc.add_NetworkServiceServicer_to_server(
        NetworkServicer(store, lim, ready), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, _NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    if config.tls:
        with open(config.tls_key, "rb") as key, open(config.tls_cert, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port(config.address, credentials)
    else:
        port = server.add_insecure_port(config.address)
    if not port:
        raise RuntimeError(f"could not listen on {config.address}")
    return ServerHandle(server, port, config, store, health_servicer, ready, warm_up)


def run(config: Config, *, warm_up: Callable[[], object] = default_warm_up) -> int:
    """Serves until SIGTERM or SIGINT, then drains. Returns the process exit code."""
    _configure_logging(config.log_level)
    try:
        handle = create_server(config, warm_up=warm_up)
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
    handle.start()
    _LOGGER.info("listening on %s:%d (%s, data dir %s, %d workers, auth %s)", config.host,
                 handle.port, "TLS" if config.tls else "plaintext", handle.store.data_dir,
                 config.workers, "bearer token" if config.auth_token else "off")
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
    _LOGGER.info("stopped")
    return 0


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jitnet.service.server",
                                     description="Serve jitnet's NetworkService.")
    config_module.add_arguments(parser)
    try:
        config = Config.from_namespace(parser.parse_args(argv))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
