"""Fixtures shared by every test folder (registered by tests/conftest.py): real servers on
127.0.0.1 port 0, in-process (`make_server`, `server`, `stub`) or as subprocesses (`spawn`),
with the kernels compiled once per session (`warmed`).
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from jitnet.service import warmup
from jitnet.service.config import Config, Limits
from jitnet.service.server import ServerHandle, create_server
from jitnet.v1 import jitnet_pb2_grpc as pb_grpc

from .rpc import ServerProcess


@pytest.fixture(scope="session")
def warmed():
    """Kernels compiled (or loaded from the cache) once per session; servers made afterwards
    skip their own warm-up unless a test injects one."""
    warmup.warm_up()


@dataclasses.dataclass
class Running:
    handle: ServerHandle
    channel: grpc.Channel
    stub: pb_grpc.NetworkServiceStub

    @property
    def port(self) -> int:
        return self.handle.port

    @property
    def data_dir(self) -> str:
        return self.handle.store.data_dir

    def close(self) -> None:
        self.channel.close()
        self.handle.drain(0).wait(10)


@pytest.fixture
def make_server(tmp_path, warmed):
    """make_server(**settings) -> Running. Settings are Config fields; `limits` a dict."""
    running: list[Running] = []

    def make(*, warm_up=lambda: None, wait_ready: bool = True, **settings) -> Running:
        limits = Limits(**settings.pop("limits", {}))
        settings.setdefault("data_dir", str(tmp_path / "data"))
        settings.setdefault("refresh_seconds", 0.1)
        # Generic kernels only, unless a test is about specialising (tests/jit): otherwise
        # every Train of a new architecture would start a compile process beside the suite.
        settings.setdefault("specialised_kernels", 0)
        config = Config(host="127.0.0.1", port=0, limits=limits, **settings)
        handle = create_server(config, warm_up=warm_up).start()
        if wait_ready:
            assert handle.wait_ready(30), f"not ready: {handle.startup_error!r}"
        channel = grpc.insecure_channel(f"127.0.0.1:{handle.port}")
        server = Running(handle, channel, pb_grpc.NetworkServiceStub(channel))
        running.append(server)
        return server

    yield make
    for server in running:
        server.close()


@pytest.fixture
def server(make_server) -> Running:
    return make_server()


@pytest.fixture
def stub(server):
    return server.stub


@pytest.fixture
def spawn(tmp_path, warmed):
    """spawn(*flags, data_dir=None, env=None, serving=True) -> rpc.ServerProcess:
    `python -m jitnet.service.server` on 127.0.0.1 port 0, killed by pid at the end."""
    started = []

    def start(*flags: str, data_dir=None, env=None, serving: bool = True):
        server = ServerProcess(data_dir or tmp_path / "data", *flags, env=env)
        started.append(server)
        if serving:
            server.wait_serving()
        return server

    yield start
    for server in started:
        server.close()
