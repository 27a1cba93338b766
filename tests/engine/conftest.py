"""Shared fixtures of the engine tests, and the `jit_only` marker.

`jit_only` marks tests that are only affordable with compiled kernels (convergence runs); the
NUMBA_DISABLE_JIT rerun in test_nojit.py deselects them with -m "not slow and not jit_only".
"""

import pytest
from jitnet.client import datasets


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "jit_only: needs compiled kernels; deselected in the NUMBA_DISABLE_JIT rerun")


@pytest.fixture
def xor():
    """The article's XOR table: inputs [4, 2], targets [4, 1] (copies: a test may write them)."""
    inputs, targets, _ = datasets.xor()
    return inputs, targets
