"""The compose topology as processes on loopback: two `jitnet serve` replicas sharing one data
directory, and Debian's nginx in front of them with deploy/nginx.conf rendered for their ports
by deploy/render_nginx.py, run as compose users run it (a script, not a module).

No container engine is involved. Every process is started here, stopped here by its own pid
(never by name), binds 127.0.0.1 only, and every wait is bounded in time.

The rendered config is post-processed for the tests in one way only: `access_log off;` becomes
an access log naming the replica that answered each call (`$upstream_addr`) and the call's
grpc-status trailer, so a test can count which replica served what without any help from the
API. Everything else is exactly what compose runs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter

import pytest

from .rpc import is_serving
from .servers import ROOT, STOP_TIMEOUT, ServerProcess, free_port
from .waiting import wait_for

RENDER = ROOT / "deploy" / "render_nginx.py"

# One line per call: the replica(s) nginx tried, the HTTP status, the replica's grpc-status (a
# trailer, or a header in a trailers-only reply; "-" when absent) and the method. `|` separates
# fields; `$upstream_addr` lists several when nginx moved on to another replica.
ACCESS_LOG_FORMAT = ("'$upstream_addr|$status|$upstream_trailer_grpc_status|"
                     "$upstream_http_grpc_status|$request_uri'")


def render(upstreams: list[str], listen: str) -> subprocess.CompletedProcess:
    """`python deploy/render_nginx.py --upstream A --upstream B --listen L` (the config on
    stdout; exit 2 and a message for an address it refuses)."""
    command = [sys.executable, str(RENDER), "--listen", listen]
    for address in upstreams:
        command += ["--upstream", address]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def rendered(upstreams: list[str], listen: str) -> str:
    done = render(upstreams, listen)
    assert done.returncode == 0, done.stderr
    return done.stdout


def logged_config(upstreams: list[str], listen: str) -> str:
    """The rendered config with the access log switched on (see the module docstring)."""
    text = rendered(upstreams, listen)
    assert text.count("access_log off;") == 1, "deploy/nginx.conf changed: update the tests"
    return text.replace(
        "access_log off;",
        f"log_format jitnet_upstream {ACCESS_LOG_FORMAT};\n"
        "    access_log access.log jitnet_upstream;",
    )


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if found is None:
        pytest.skip("nginx not installed (apt-get install -y nginx)")
    return found


class Nginx:
    """Debian's nginx, foreground, in its own prefix directory, with the test config."""

    def __init__(self, prefix: pathlib.Path, upstreams: list[str]):
        self.binary = nginx_binary()
        self.prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.access_log = prefix / "access.log"
        self.stderr_path = prefix / "nginx.stderr"
        for _ in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            self.conf.write_text(logged_config(upstreams, f"127.0.0.1:{self.port}"))
            with open(self.stderr_path, "wb") as stderr:
                self.proc = subprocess.Popen(
                    [self.binary, "-e", "stderr", "-c", str(self.conf), "-p", f"{prefix}/",
                     "-g", "daemon off;"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                if wait_for(self._listening, 10.0, 0.01, "nginx listening") == "listening":
                    return
            except AssertionError:
                pass
            self.stop()
        raise AssertionError(f"nginx did not start:\n{self.stderr}")

    def _listening(self) -> str | None:
        if self.proc.poll() is not None:
            return "exited"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return "listening"
        except OSError:
            return None

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

    def settled(self, count: int, timeout: float = 5.0) -> None:
        """Until the access log has `count` lines: nginx writes a call's line as it finishes
        it, just after the client got its reply."""
        wait_for(lambda: len(self.entries()) >= count, timeout, what=f"{count} access-log lines")

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


@dataclasses.dataclass
class Stack:
    replicas: list[ServerProcess]
    nginx: Nginx

    @property
    def target(self) -> str:
        return self.nginx.address

    def stop(self) -> None:
        self.nginx.stop()
        for replica in self.replicas:
            replica.stop()
            replica.close()


def start_stack(root: pathlib.Path, *replica_args: str) -> Stack:
    """Two replicas on one data dir (both SERVING, with `replica_args` as extra flags), then
    nginx rendered with their ports."""
    nginx_binary()  # skip before starting anything
    data_dir = root / "data"
    replicas = [ServerProcess(data_dir, "--grace-seconds", "5", *replica_args, name=name)
                for name in ("a", "b")]
    try:
        for replica in replicas:
            replica.wait_serving()
        nginx = Nginx(root / "nginx", [r.address for r in replicas])
    except BaseException:
        for replica in replicas:
            replica.close()
        raise
    stack = Stack(replicas, nginx)
    wait_for(lambda: is_serving(stack.target), 10.0, 0.05, "SERVING through nginx")
    return stack
