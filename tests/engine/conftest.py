"""Shared fixtures of the engine tests, and the `jit_only` marker.

`jit_only` marks tests that are only affordable with compiled kernels (convergence runs); the
NUMBA_DISABLE_JIT rerun in test_nojit.py deselects them with -m "not slow and not jit_only".

`tier` runs a test once per kernel tier (jit/): tier 0, the generic kernels, and tier 1, each
architecture's specialised kernels, compiled in this process as the test first needs them (the
room's HERE mode; a server compiles in a process of its own). A module opts in with
`pytestmark = pytest.mark.usefixtures("tier")`; the same assertions then hold for both.
"""

import pytest

from jitnet.client import datasets
from jitnet.service.engine import jit


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "jit_only: needs compiled kernels; deselected in the NUMBA_DISABLE_JIT rerun")


@pytest.fixture
def xor():
    """The article's XOR table: inputs [4, 2], targets [4, 1] (copies: a test may write them)."""
    inputs, targets, _ = datasets.xor()
    return inputs, targets


@pytest.fixture(scope="session")
def tier1_kernel_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tier1-kernels")


@pytest.fixture(params=[0, 1], ids=["tier0", "tier1"])
def tier(request, tier1_kernel_dir):
    if request.param == 1:
        jit.room.configure(jit.Mode.HERE, directory=tier1_kernel_dir, max_loaded=1 << 20)
    else:
        jit.room.configure(jit.Mode.OFF)
    try:
        yield request.param
    finally:
        jit.room.configure(jit.Mode.OFF)
