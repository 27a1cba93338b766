"""The fast engine tests once more with NUMBA_DISABLE_JIT=1: the kernels run as plain Python,
so coverage sees them and a failure shows a readable Python traceback instead of numba's."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOJIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")

# jit_only: the rerun deselects this very test, and the skip guards any other way in.
pytestmark = [pytest.mark.jit_only, pytest.mark.slow]


@pytest.mark.skipif(NOJIT, reason="already running without JIT (no recursion)")
def test_engine_tests_pass_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "tests/engine", "-m", "not slow and not jit_only",
               "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, (
        f"{' '.join(command)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}")
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, summary
    assert "failed" not in summary and "error" not in summary, summary
