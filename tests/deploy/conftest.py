"""The compose topology as processes on loopback: two `jitnet serve` replicas sharing one data
directory, and Debian's nginx in front of them with deploy/nginx.conf rendered for their ports.

No container engine is involved. Every process is started here, stopped here by its own pid
(never by name), binds 127.0.0.1 only, and every wait is bounded in time.

The rendered config is post-processed for the tests in one way only: `access_log off;` becomes
an access log naming the replica that answered each call (`$upstream_addr`) and the call's
grpc-status trailer, so a test can count which replica served what without any help from the
API. Everything else is exactly what compose runs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING

# Process start-up is bounded by these; with a warm numba cache a replica is SERVING in ~1-2 s.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def load_render():
    """deploy/render_nginx.py by path, the way compose users run it (deploy/ is no package)."""
    spec = importlib.util.spec_from_file_location("render_nginx", ROOT / "deploy" / "render_nginx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_nginx = load_render()

# One line per call: the replica(s) nginx tried, the HTTP status, the replica's grpc-status (a
# trailer, or a header in a trailers-only reply; "-" when absent) and the method. `|` separates
# fields; `$upstream_addr` lists several when nginx moved on to another replica.
ACCESS_LOG_FORMAT = ("'$upstream_addr|$status|$upstream_trailer_grpc_status|"
                     "$upstream_http_grpc_status|$request_uri'")


def logged_config(upstreams: list[str], listen: str) -> str:
    """render() output with the access log switched on (see the module docstring)."""
    text = render_nginx.render(upstreams, listen)
    assert text.count("access_log off;") == 1, "deploy/nginx.conf changed: update the tests"
    return text.replace(
        "access_log off;",
        f"log_format jitnet_upstream {ACCESS_LOG_FORMAT};\n"
        "    access_log access.log jitnet_upstream;",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def health(address: str, timeout: float = 2.0) -> int | None:
    """The health status at `address`, or None when nothing answers."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout)
            return reply.status
    except grpc.RpcError:
        return None


class Replica:
    """`python -m jitnet.service.server` on 127.0.0.1 port 0; the port is read from its log."""

    _LISTENING = re.compile(r"listening on \S+?:(\d+) ")

    def __init__(self, name: str, data_dir: pathlib.Path, *args: str):
        self.name = name
        command = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1",
                   "--port", "0", "--data-dir", str(data_dir), *args]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.lines: list[str] = []
        self.port = 0
        self._port_known = threading.Event()
        threading.Thread(target=self._read, name=f"{name}-stderr", daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = self._LISTENING.search(line)
            if match and not self.port:
                self.port = int(match.group(1))
                self._port_known.set()
        self._port_known.set()  # the process ended: wake a waiter

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        began = time.monotonic()
        if not self._port_known.wait(timeout) or not self.port:
            raise AssertionError(f"replica {self.name} did not log its port:\n{self.log}")
        left = timeout - (time.monotonic() - began)

        def serving():
            if self.proc.poll() is not None:
                raise AssertionError(f"replica {self.name} exited with {self.proc.returncode}:"
                                     f"\n{self.log}")
            return health(self.address, 1.0) == SERVING
        wait_for(serving, max(left, 1.0), 0.05, f"replica {self.name} SERVING")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # by pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Nginx:
    """Debian's nginx, foreground, in its own prefix directory, with the test config."""

    def __init__(self, prefix: pathlib.Path, upstreams: list[str]):
        self.binary = nginx_binary()
        self.prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.access_log = prefix / "access.log"
        self.stderr_path = prefix / "nginx.stderr"
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            self.conf.write_text(logged_config(upstreams, f"127.0.0.1:{self.port}"))
            with open(self.stderr_path, "wb") as stderr:
                self.proc = subprocess.Popen(
                    [self.binary, "-e", "stderr", "-c", str(self.conf), "-p", f"{prefix}/",
                     "-g", "daemon off;"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
            if self._wait_listening(10.0):
                return
            self.stop()
        raise AssertionError(f"nginx did not start:\n{self.stderr}")

    def _wait_listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.01)
        return False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def entries(self) -> list[tuple[list[str], str, str, str]]:
        """Access-log lines as (upstream addresses tried, HTTP status, grpc-status, method);
        grpc-status is "-" when the replica sent none (nginx answered 502 itself)."""
        if not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            upstreams, status, trailer, header, uri = line.split("|")
            out.append(([a.strip() for a in upstreams.split(",")], status,
                        trailer if trailer != "-" else header, uri.rsplit("/", 1)[-1]))
        return out

    def failed(self, method: str, since: int = 0) -> list[tuple[list[str], str, str, str]]:
        """The `method` calls that did not end with HTTP 200 and grpc-status 0. Status 499 (the
        client went away mid-call: locust stopping its users at the end of a run) is the
        client's doing and not counted."""
        return [e for e in self.entries()[since:]
                if e[3] == method and e[1] != "499" and (e[1] != "200" or e[2] != "0")]

    def served(self, method: str, since: int = 0) -> Counter:
        """How many `method` calls each replica answered (the last address nginx tried), over
        the access-log lines from index `since` on."""
        return Counter(ups[-1] for ups, _, _, m in self.entries()[since:] if m == method)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful, to the master we started (by pid)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if found is None:
        pytest.skip("nginx not installed (apt-get install -y nginx)")
    return found


@dataclasses.dataclass
class Stack:
    replicas: list[Replica]
    nginx: Nginx
    data_dir: pathlib.Path

    @property
    def target(self) -> str:
        return self.nginx.address

    def replica_at(self, address: str) -> Replica:
        return next(r for r in self.replicas if r.address == address)

    def stop(self) -> None:
        self.nginx.stop()
        for replica in self.replicas:
            replica.stop()


def start_stack(root: pathlib.Path, *replica_args: str) -> Stack:
    """Two replicas on one data dir (both SERVING), then nginx rendered with their ports."""
    nginx_binary()  # skip before starting anything
    data_dir = root / "data"
    replicas = [Replica(name, data_dir, "--grace-seconds", "5", *replica_args)
                for name in ("a", "b")]
    try:
        for replica in replicas:
            replica.wait_serving()
        nginx = Nginx(root / "nginx", [r.address for r in replicas])
    except BaseException:
        for replica in replicas:
            replica.stop()
        raise
    stack = Stack(replicas, nginx, data_dir)
    wait_for(lambda: health(stack.target) == SERVING, 10.0, 0.05, "SERVING through nginx")
    return stack


@pytest.fixture(scope="session")
def warm_kernels():
    """Fills the numba cache once, so the replicas load compiled kernels instead of both
    compiling them at once (a fresh clone's first run)."""
    from jitnet.service import warmup
    warmup.warm_up()


@pytest.fixture(scope="session")
def stack(tmp_path_factory, warm_kernels):
    """A stack shared by the tests that leave both replicas running."""
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.fixture
def fresh_stack(tmp_path, warm_kernels):
    """A stack of its own, for a test that stops a replica."""
    running = start_stack(tmp_path)
    yield running
    running.stop()
