"""The compose topology on loopback (tests/support/topology.py): one stack shared by the tests
that leave both replicas running, and a stack of its own for a test that stops one."""

from __future__ import annotations

import pytest

from tests.support.topology import start_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory, warmed):
    """`warmed` fills the numba cache first, so the replicas load compiled kernels instead of
    both compiling them at once (a fresh clone's first run)."""
    running = start_stack(tmp_path_factory.mktemp("stack"))
    yield running
    running.stop()


@pytest.fixture
def fresh_stack(tmp_path, warmed):
    running = start_stack(tmp_path)
    yield running
    running.stop()
