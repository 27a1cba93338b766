"""Fixtures shared by every test folder (registered by tests/conftest.py): real servers on
127.0.0.1 port 0, in-process (`make_server`, `server`, `stub`; one for the whole session behind
`address` and `client`) or as subprocesses (`spawn`), with the kernels compiled once per
session (`warmed`).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import signal
import subprocess

import pytest

from jitnet.client import Client
from jitnet.service.server import warmup

from .rpc import ARTICLE_HIDDEN, ARTICLE_OUTPUT
from .servers import STOP_TIMEOUT, InProcessServer, ServerProcess, start_in_process


@pytest.fixture(scope="session")
def warmed():
    """Kernels compiled (or loaded from the cache) once per session; servers made afterwards
    skip their own warm-up unless a test injects one."""
    warmup.warm_up()


@pytest.fixture
def make_server(tmp_path, warmed):
    """make_server(**settings) -> InProcessServer, on tmp_path/data unless `data_dir` is given.
    Settings are Config fields; `limits` a dict; `warm_up` and `wait_ready` as
    servers.start_in_process takes them."""
    running: list[InProcessServer] = []

    def make(**settings) -> InProcessServer:
        server = start_in_process(settings.pop("data_dir", tmp_path / "data"), **settings)
        running.append(server)
        return server

    yield make
    for server in running:
        server.close()


@pytest.fixture
def server(make_server) -> InProcessServer:
    return make_server()


@pytest.fixture
def stub(server):
    return server.stub


@pytest.fixture
def spawn(tmp_path, warmed):
    """spawn(*flags, data_dir=None, env=None, serving=True) -> ServerProcess:
    `python -m jitnet.service.server` on 127.0.0.1 port 0 (SERVING unless `serving=False`).
    At the end each one still running is stopped by its pid: SIGTERM (so it exits as in
    production, through its drain), SIGKILL if it has not exited in time. Tests that use it
    are marked slow."""
    started: list[ServerProcess] = []

    def start(*flags: str, data_dir=None, env=None, serving: bool = True) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", *flags, env=env)
        started.append(server)
        if serving:
            server.wait_serving()
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.signal(signal.SIGTERM)
    for server in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(STOP_TIMEOUT)
        server.close()


# -- one server for the session, for tests that only need somewhere to call (client, CLI) -------


@pytest.fixture(scope="session")
def shared_server(tmp_path_factory, warmed) -> InProcessServer:
    running = start_in_process(tmp_path_factory.mktemp("models"), log_level="WARNING")
    yield running
    running.close()


@pytest.fixture(scope="session")
def address(shared_server) -> str:
    return shared_server.address


@pytest.fixture
def client(address):
    with Client(address) as c:
        yield c


_ids = itertools.count(1)


@pytest.fixture
def model_id(request) -> str:
    """A model id unique to this test (the session's server is shared)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:100]
    return f"{name}-{next(_ids)}"


@pytest.fixture
def article(client, model_id):
    """The article's network (api.md): 2-4-1 sigmoid, no bias, ARTICLE mode, its weights."""
    return client.create_model([2, 4, 1], bias=False, gradient_mode="article",
                               layers=[ARTICLE_HIDDEN, ARTICLE_OUTPUT], model_id=model_id)


@pytest.fixture
def cli_run(address, capsys):
    """cli_run(*argv) -> (exit code, stdout, stderr): `jitnet ...` through cli.main against the
    session's server."""
    from jitnet.client import cli

    def run(*argv):
        code = cli.main([*argv, "--target", address])
        out, err = capsys.readouterr()
        return code, out, err
    return run
