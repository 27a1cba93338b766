"""Fixtures of the kernel-room tests: one kernel directory for the session (an architecture
compiled by one test is found in the cache by the next, as on a server), and the room, set up
by a test and put back to OFF after it."""

import subprocess
import sys

import pytest

from jitnet.service.engine import jit
from jitnet.service.engine.jit import build


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture
def room(kernel_dir):
    """The process's kernel room in BACKGROUND mode (the server's) on the session's directory;
    OFF again afterwards."""
    jit.room.configure(jit.Mode.BACKGROUND, directory=kernel_dir, max_loaded=8,
                       after_predicts=5)
    try:
        yield jit.room
    finally:
        jit.room.wait_idle(120)
        jit.room.configure(jit.Mode.OFF)


@pytest.fixture(scope="session")
def compiled(kernel_dir):
    """compiled(arch) -> arch, its tier-1 kernels in the session's cache (compiled by the
    compile process once per session, as a server would)."""
    done = set()

    def compile_(arch):
        if arch not in done:
            path = build.write_source(arch, kernel_dir)
            result = subprocess.run([sys.executable, "-m", "jitnet.service.engine.jit", str(path)],
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr
            done.add(arch)
        return arch
    return compile_
