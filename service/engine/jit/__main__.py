"""The compile process: `python -m jitnet.service.engine.jit MODULE...`.

Compiles generated tier-1 modules (build.py) into numba's on-disk cache and exits; the server
that started it then loads the compiled code from the cache. Prints `compiled PATH` or, when the
cache already held it (another process compiled it first), `cached PATH`. Exit 0 on success, 1
with the error on stderr otherwise.

It runs at the lowest priority there is: Linux's SCHED_IDLE (it gets a core only when nothing
else wants it, and a server thread that wakes up takes the core back at once; a plain nice
value still let it delay a waking Predict by milliseconds), else nice 19. On a server busy on
every core, a compile therefore waits for idle time.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jitnet.service.engine.jit",
                                     description="Compile tier-1 kernel modules into numba's "
                                                 "cache.")
    parser.add_argument("modules", nargs="+", type=Path, help="generated t1_*.py files")
    args = parser.parse_args(argv)
    _die_with_parent()
    _lowest_priority()
    from .build import compile_kernels  # at low priority: importing numba is work too

    for path in args.modules:
        began = time.perf_counter()
        try:
            compiled = compile_kernels(path)
        except Exception as exc:  # noqa: BLE001 - reported to the server that asked
            print(f"jitnet compile: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"{'compiled' if compiled else 'cached'} {path} "
              f"{time.perf_counter() - began:.2f}", flush=True)
    return 0


def _lowest_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def _die_with_parent() -> None:
    """SIGTERM when the server that started this process exits (Linux's PR_SET_PDEATHSIG): a
    compile nobody waits for stops (the cache is written atomically, per file)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
