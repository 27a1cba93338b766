"""Several server processes on one port: `jitnet serve --workers N` (or `auto`, one per core).

The parent serves nothing itself. It takes the port, starts N workers (each a whole server:
`python -m jitnet.service.server.workers`, running lifecycle.serve with the parent's
settings), and then:

  * a worker that exits is started again (after a pause that grows while it keeps failing);
    more than MAX_DEATHS deaths within DEATH_WINDOW_SECONDS means something is wrong with every
    worker (a bad setting, a full disk): the parent stops the others and exits 1;
  * SIGTERM or SIGINT goes on to every worker, which drains as a single server does (health
    NOT_SERVING, calls in flight get the grace); the parent exits 0 once all have exited 0,
    and kills any still running after the grace plus a margin. A second signal is passed on
    too (workers then cut their calls at once).

How the port is shared: every worker binds it with SO_REUSEPORT and the kernel hands each new
connection to one of them (connections, not calls: one client channel talks to one worker).
The workers share nothing but the port, the model store (as separate servers already do: file
leases, refresh by stat) and the kernel directory (a specialisation compiles once per machine).
A single server keeps SO_REUSEPORT off, so that a second one on a taken port fails; the parent
checks the same before it starts any worker, then keeps a socket bound to the port (not
listening: it takes no connections) so that no other program takes it while a worker restarts.

Each worker's health answers for that worker (protocols/health.py names its pid in the trailing
metadata), and its log lines carry its number. With --metrics-port P, worker i serves its own
/metrics on port P + i (Prometheus scrapes each; docs/operations.md). With --web-port, the
parent serves the playground page, whose API calls the shared port like any client.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from ..config import Config, ConfigError

_LOGGER = logging.getLogger(__name__)

# More deaths than this within the window: the parent gives up (exit 1).
MAX_DEATHS = 5
DEATH_WINDOW_SECONDS = 60.0
# Pause before restarting a worker, doubled for each quick death in a row, up to the maximum.
RESTART_PAUSE_SECONDS = 0.5
MAX_RESTART_PAUSE_SECONDS = 5.0
# A worker that lived this long is doing fine: its next death starts the pause over.
HEALTHY_SECONDS = 30.0
# After the grace, how long workers may take to exit before they are killed.
EXIT_MARGIN_SECONDS = 3.0
_POLL_SECONDS = 0.1

_WORKER_FLAG = "--worker"


def run(config: Config) -> int:
    """The parent of config.workers servers; returns its exit code."""
    from ..observability import logs

    logs.configure(config.log_level, config.log_format, "parent")
    try:
        reservation, port = _reserve_port(config)
    except OSError as exc:
        _LOGGER.critical("cannot start: %s:%d: %s", config.host, config.port, exc)
        return 1
    page = None
    if config.web_port is not None:  # the parent serves the page; it calls the shared port
        from ..web import for_config
        try:
            page = for_config(config, port)
        except OSError as exc:
            reservation.close()
            _LOGGER.critical("cannot serve the page on %s:%d: %s", config.web_host,
                             config.web_port, exc)
            return 1
    parent = _Parent(config, port)
    try:
        if page is not None:
            page.start()
            _LOGGER.info("the playground page: %s (served by the parent, calling the "
                         "workers' port)", page.url)
        return parent.run()
    finally:
        if page is not None:
            page.close()
        reservation.close()


def _reserve_port(config: Config) -> tuple[socket.socket, int]:
    """Checks the port is free (a plain bind, as a single server would), then keeps it bound
    with SO_REUSEPORT, which the workers' sockets share. Port 0: a free port, chosen here."""
    family, kind, proto, _, address = socket.getaddrinfo(
        config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    probe = socket.socket(family, kind, proto)
    try:
        # As grpc binds a single server's port: SO_REUSEADDR (old connections in TIME_WAIT do
        # not count) but not SO_REUSEPORT, so EADDRINUSE when anyone listens there.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
        port = probe.getsockname()[1]
    finally:
        probe.close()
    reservation = socket.socket(family, kind, proto)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind((address[0], port, *address[2:]))
    return reservation, port


class _Parent:
    def __init__(self, config: Config, port: int):
        self.config = config
        self.port = port
        self.stop = threading.Event()
        self.signals: list[int] = []
        self.workers: dict[int, subprocess.Popen] = {}
        self.started_at: dict[int, float] = {}
        self.quick_deaths: collections.Counter = collections.Counter()
        self.deaths: collections.deque = collections.deque()

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, self._on_signal)
        config = self.config
        _LOGGER.info("listening on %s:%d (%d workers of %d threads, data dir %s, %s, auth %s)",
                     config.host, self.port, config.workers, config.threads, config.data_dir,
                     "TLS" if config.tls else "plaintext",
                     "bearer token" if config.auth_token else "off")
        for index in range(config.workers):
            self._start(index)
        restart_at: dict[int, float] = {}
        while not self.stop.wait(_POLL_SECONDS):
            now = time.monotonic()
            for index, proc in list(self.workers.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.workers[index]
                pause = self._died(index, code, now)
                if pause is None:
                    _LOGGER.critical("workers keep dying (%d deaths within %g s); stopping",
                                     len(self.deaths), DEATH_WINDOW_SECONDS)
                    self._stop_all(signal.SIGTERM)
                    self._wait_all()
                    return 1
                restart_at[index] = now + pause
            for index, when in list(restart_at.items()):
                if now >= when and not self.stop.is_set():
                    del restart_at[index]
                    self._start(index)
        _LOGGER.info("%s: draining %d worker(s), calls in flight get %g s",
                     signal.Signals(self.signals[0]).name, len(self.workers),
                     config.grace_seconds)
        self._stop_all(signal.SIGTERM)
        return self._wait_all()

    def _on_signal(self, signum, _frame) -> None:
        self.signals.append(signum)
        if self.stop.is_set():  # a second signal: on to the workers, which cut at once
            self._stop_all(signum)
        self.stop.set()

    def _start(self, index: int) -> None:
        env = dict(os.environ, **self.config.to_env())
        # The page is the parent's (run); a worker serves gRPC only.
        env.update(JITNET_PORT=str(self.port), JITNET_WORKERS="1", JITNET_WEB_PORT="")
        if self.config.metrics_port:  # one /metrics per worker: the port, then the next ones
            env["JITNET_METRICS_PORT"] = str(self.config.metrics_port + index)
        proc = subprocess.Popen(
            [sys.executable, "-m", "jitnet.service.server.workers", _WORKER_FLAG, str(index),
             str(os.getpid())], env=env)
        self.workers[index] = proc
        self.started_at[index] = time.monotonic()
        _LOGGER.info("worker %d started (pid %d)", index, proc.pid)

    def _died(self, index: int, code: int, now: float) -> float | None:
        """Records a death; the pause before the restart, or None to give up."""
        lived = now - self.started_at[index]
        what = (f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited {code}")
        _LOGGER.error("worker %d %s after %.1f s; restarting it", index, what, lived)
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - DEATH_WINDOW_SECONDS:
            self.deaths.popleft()
        if len(self.deaths) > MAX_DEATHS:
            return None
        self.quick_deaths[index] = 0 if lived >= HEALTHY_SECONDS else self.quick_deaths[index] + 1
        return min(MAX_RESTART_PAUSE_SECONDS,
                   RESTART_PAUSE_SECONDS * 2 ** max(0, self.quick_deaths[index] - 1))

    def _stop_all(self, signum: int) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)  # by pid

    def _wait_all(self) -> int:
        """Waits for every worker to exit (killing those past the grace); 0 if all exited 0."""
        deadline = time.monotonic() + self.config.grace_seconds + EXIT_MARGIN_SECONDS + 2.0
        code = 0
        for index, proc in self.workers.items():
            try:
                result = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _LOGGER.error("worker %d still running after the grace; killing it", index)
                proc.kill()
                result = proc.wait()
            if result not in (0, -signal.SIGTERM, -signal.SIGINT):  # signalled before its
                code = 1  # handlers were set: it had nothing to drain
        _LOGGER.info("stopped" if code == 0 else "stopped; a worker did not exit cleanly")
        logging.shutdown()
        return code


# -- a worker -----------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    """SIGTERM to this worker when the parent dies (Linux's PR_SET_PDEATHSIG); a parent gone
    before that was set means exit now: a worker never outlives its parent for long."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        sys.exit(0)


def worker_main(argv: list[str]) -> int:
    """`python -m jitnet.service.server.workers --worker INDEX PARENT_PID`, settings in JITNET_*."""
    from ..observability import logs
    from .lifecycle import serve

    parser = argparse.ArgumentParser(prog="python -m jitnet.service.server.workers")
    parser.add_argument(_WORKER_FLAG, dest="index", type=int, required=True)
    parser.add_argument("parent", type=int)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format, f"worker {args.index}")
    return serve(config, reuse_port=True)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
