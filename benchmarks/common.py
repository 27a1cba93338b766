"""What engine.py and serve.py share: pinning to cores, medians, the machine and versions for a
report's header, and rewriting one section of docs/benchmarks.md.

Standard library only, and nothing runs on import but reading this process's CPU affinity:
engine.py imports it before numpy, which must see the thread settings engine.py makes first.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


def _allowed_cores() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return set()


# The cores this process may use when it starts, read once: after a script has pinned itself,
# asking again would say the other cores do not exist, and its children could not be pinned.
MACHINE_CORES = _allowed_cores()


def pin_self(core: int) -> bool:
    """Pins this process (and the children it starts later) to `core`; False where that core
    does not exist or the OS cannot pin."""
    if core not in MACHINE_CORES:
        return False
    os.sched_setaffinity(0, {core})
    return True


def pinned_to(core: int | None):
    """A subprocess preexec_fn pinning the child to `core`; None where that core does not exist."""
    if core is None or core not in MACHINE_CORES:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def median(values) -> float:
    """The median, nan for no values."""
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


def _cpuinfo(field: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown CPU"


def cpu_flags(wanted=("avx2", "fma", "avx512f")) -> str:
    """Which of the vector instruction sets that matter to numba and BLAS the CPU has."""
    flags = set((_cpuinfo("flags") or "").split())
    return " ".join(f for f in wanted if f in flags)


def machine() -> str:
    """E.g. 'Intel(R) Xeon(R) Processor, 2 cores, Linux 6.18.44, x86_64'."""
    return (f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"{platform.machine()}")


def versions(*distributions: str) -> str:
    """'Python 3.11.7, numpy 2.4.6, ...' for the installed distributions named."""
    parts = [f"Python {platform.python_version()}"]
    for name in distributions:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def wait_specialised(log: Path, architectures: tuple[str, ...], poke: Callable[[], None],
                     is_running: Callable[[], bool], timeout: float = 600.0) -> None:
    """Until a server's log (at INFO) says each architecture ("64-64-10", as
    Architecture.describe() starts) is served by its specialised kernels, calling `poke`
    (Predicts, towards --specialise-after-predicts) meanwhile. The compile runs at the lowest
    priority, which under a measurement's load can wait for minutes: servers are compared at
    their steady tier, not while one of them is still on the generic kernels."""
    loaded = [re.compile(rf"(^|\W){re.escape(sizes)} \S+ \S+ \S+: specialised kernels loaded",
                         re.MULTILINE) for sizes in architectures]
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        if all(pattern.search(text) for pattern in loaded):
            return
        if time.monotonic() > deadline or not is_running():
            raise RuntimeError(f"{', '.join(architectures)} not specialised within "
                               f"{timeout:.0f} s; see {log}")
        poke()
        time.sleep(0.2)


def write_section(text: str, heading: str, path: Path = DOC) -> None:
    """Replaces the section that starts with the line `heading` (up to the next `## ` line), or
    appends it; every other line of the file stays as it is."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = current.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(current.rstrip("\n") + "\n\n" + text)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    tail = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + text + ("\n" + tail if tail else ""))


def stop_process(proc, grace: float = 30.0) -> None:
    """SIGTERM to a server this benchmark started (by its pid), SIGKILL after `grace` s."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def add_output_arguments(parser) -> None:
    """--no-write and --json, as every benchmark takes them (for `publish`)."""
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")


def measured(measure: Callable[[], dict]) -> dict:
    """measure()'s results with the load average before and after: this machine is shared."""
    load_before = os.getloadavg()[0]
    results = measure()
    results["load_average"] = (load_before, os.getloadavg()[0])
    return results


def publish(text: str, results: dict, json_path: Path | None, write: bool, heading: str,
            path: Path = DOC) -> None:
    """A benchmark's end: the section printed, its numbers to `json_path` when given, and the
    section rewritten in `path` unless `write` is false (--no-write)."""
    import json  # here: nothing but the affinity is read on import (see above)

    print(text)
    if json_path:
        json_path.write_text(json.dumps(results, indent=2, default=float))
    if write:
        write_section(text, heading, path)
        print(f"written to {path.relative_to(ROOT)}")
