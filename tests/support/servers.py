"""Servers for the tests, each on 127.0.0.1 with a port the OS picks: in this process
(`start_in_process`) or as `python -m jitnet.service.server` (`ServerProcess`). A process is
stopped by its own pid, never by name."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading

import grpc

from jitnet.service.config import Config, Limits
from jitnet.service.server.lifecycle import ServerHandle, create_server
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

from .rpc import is_serving
from .waiting import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
# A server process is SERVING in ~1-2 s with a warm numba cache; these bound the slow cases.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A port nothing listens on now (for programs that cannot be given port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class InProcessServer:
    handle: ServerHandle
    channel: grpc.Channel
    stub: pb_grpc.NetworkServiceStub
    data_dir: str

    @property
    def port(self) -> int:
        return self.handle.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.channel.close()
        self.handle.drain(0).wait(10)
        self.handle.store.close()


def start_in_process(data_dir, *, warm_up=lambda: None, wait_ready: bool = True,
                     **settings) -> InProcessServer:
    """A started server; `settings` are Config fields, `limits` a dict of Limits fields.
    Warm-up is skipped (the session's `warmed` fixture compiled the kernels) unless a test
    passes its own."""
    limits = Limits(**settings.pop("limits", {}))
    settings.setdefault("refresh_seconds", 0.1)
    # Generic kernels only, unless a test is about specialising (tests/jit): otherwise every
    # Train of a new architecture would start a compile process beside the suite.
    settings.setdefault("specialised_kernels", 0)
    config = Config(host="127.0.0.1", port=0, data_dir=str(data_dir), limits=limits, **settings)
    handle = create_server(config, warm_up=warm_up).start()
    if wait_ready:
        assert handle.wait_ready(30), f"not ready: {handle.startup_error!r}"
    channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
    return InProcessServer(handle, channel, pb_grpc.NetworkServiceStub(channel),
                           os.path.abspath(os.fspath(data_dir)))


class ServerProcess:
    """`python -m jitnet.service.server --host 127.0.0.1 --port 0 --data-dir DIR ARGS...`.
    Starting returns at once; `port` (read from the log) and `wait_serving()` wait, bounded."""

    _LISTENING = re.compile(r"listening on \S+?:(\d+) ")

    def __init__(self, data_dir, *args: str, env: dict | None = None, name: str = "server"):
        self.name = name
        self.data_dir = pathlib.Path(data_dir)
        command = [sys.executable, "-m", "jitnet.service.server", "--host", "127.0.0.1",
                   "--port", "0", "--data-dir", str(data_dir), *args]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, cwd=ROOT,
                                     # generic kernels only unless asked for (start_in_process)
                                     env={**os.environ, "JITNET_SPECIALISED_KERNELS": "0",
                                          **(env or {})})
        self.lines: list[str] = []
        self._port = 0
        self._port_known = threading.Event()
        self._channel: grpc.Channel | None = None
        threading.Thread(target=self._read, name=f"{name}-log", daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = self._LISTENING.search(line)
            if match and not self._port:
                self._port = int(match.group(1))
                self._port_known.set()
        self._port_known.set()  # the process ended: wake a waiter

    @property
    def log(self) -> str:
        return "".join(self.lines)

    @property
    def port(self) -> int:
        if not self._port_known.wait(START_TIMEOUT) or not self._port:
            raise AssertionError(f"{self.name} did not log its port:\n{self.log}")
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return self._channel

    @property
    def stub(self) -> pb_grpc.NetworkServiceStub:
        return pb_grpc.NetworkServiceStub(self.channel)

    def wait_serving(self, timeout: float = START_TIMEOUT,
                     channel: grpc.Channel | None = None) -> None:
        """Until health answers SERVING (on `channel`, e.g. a TLS one, or a plaintext one);
        fails at once if the process exits."""
        def serving() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                     f"{self.log}")
            return is_serving(channel or self.channel, 1.0)

        wait_for(serving, timeout, 0.05, f"{self.name} SERVING")

    def signal(self, signum) -> None:
        self.proc.send_signal(signum)  # by pid

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (a drain), then SIGKILL if it has not exited within STOP_TIMEOUT."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self.kill()
