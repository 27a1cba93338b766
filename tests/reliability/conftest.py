"""Reliability tests: the service under malformed input, limits, crashes, drains, load and
attackers. They reuse the service tests' helpers (tests/service/svc_helpers.py) and fixtures
(`warmed`, `make_server` from tests/service/conftest.py), loaded here rather than copied.

Every server binds 127.0.0.1 port 0; subprocess servers are stopped by their own pid; every
loop is bounded in count and time; every RPC has a deadline.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

_SERVICE_TESTS = pathlib.Path(__file__).resolve().parent.parent / "service"
if str(_SERVICE_TESTS) not in sys.path:
    sys.path.insert(0, str(_SERVICE_TESTS))


def _service_fixtures():
    spec = importlib.util.spec_from_file_location("jitnet_service_test_fixtures",
                                                  _SERVICE_TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_fixtures = _service_fixtures()
warmed = _fixtures.warmed  # kernels compiled (or loaded from the numba cache) once per session
make_server = _fixtures.make_server  # make_server(**Config fields) -> Running, in-process
Running = _fixtures.Running

def pytest_terminal_summary(terminalreporter):
    from rel_helpers import SUMMARY  # filled by the tests: fuzz cases run, soak figures

    if SUMMARY:
        terminalreporter.section("reliability")
        for key, value in SUMMARY.items():
            terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture
def spawn(tmp_path, warmed):
    """spawn(*flags, data_dir=None, env=None, serving=True) -> svc_helpers.ServerProcess:
    `python -m jitnet.service.server` on 127.0.0.1 port 0, killed by pid at the end."""
    from svc_helpers import ServerProcess

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
