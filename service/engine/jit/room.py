"""The compiler room: which kernels an architecture gets now, and getting it better ones.

`Room.kernels(arch)` never waits: the specialised kernels (tier 1) when they are loaded, else the
generic ones (tier 0). Getting tier 1 happens beside the serving, in three steps:

  1. a trigger asks for it: a model's Train (`kernels(arch, training=True)`), the
     `after_predicts`-th tier-0 Predict of an architecture, or `prefetch` at start for the
     architectures of stored models;
  2. one background thread writes the generated module (build.write_source) and runs
     `python -m jitnet.service.engine.jit <module>` to compile it into numba's cache, one compile
     at a time, at the lowest priority (SCHED_IDLE, set before it imports anything:
     at_the_lowest_priority). numba's compiler holds the GIL for
     its whole run (seconds), so a compile in the server's own process would stop every call; in
     a process of its own it only takes a core's share. An architecture compiled before (by
     this server, another worker or an earlier run) is found in the cache and not compiled
     again;
  3. the same thread loads the compiled code from the cache (milliseconds; build.load never
     compiles) and swaps it in: one dict assignment under the lock, and `generation` goes up,
     which tells every holder of kernels (Network, the fast path) to ask again.

At most `max_loaded` specialised kernel sets are served at once, the least recently asked for
out first. numba never unloads compiled code (llvmlite's module removal is disabled), so the
entry points of an evicted set are kept and reused if it comes back: memory grows with the
distinct architectures a process has specialised, not with evictions (docs/kernels.md).

A Train call asks once and keeps what it got for all its chunks (training.py): one tier per
call. Modes: OFF (tier 0 only, the default in a library or test process), BACKGROUND (the
server's; a benchmark or a program may use it too), HERE (every architecture specialised at
once, compiled in this process as it is first needed: for tests, never a server).
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import build
from .tiers import GenericKernels, SpecialisedKernels

_LOGGER = logging.getLogger(__name__)

# Generic kernel sets kept per architecture (a few small arrays each); past this many the cache
# starts over.
MAX_GENERIC = 4096
COMPILE_TIMEOUT_SECONDS = 600


def at_the_lowest_priority(module: str) -> list[str]:
    """`python -m module`, with the priority lowered before anything is imported: the compile
    module's imports (numba's among them) take a second of CPU, which at normal priority on the
    server's core would delay its Predicts (__main__.py then finds the priority already at its
    lowest)."""
    return [sys.executable, "-c", _LOWEST_PRIORITY_THEN_RUN.format(module=module)]


_LOWEST_PRIORITY_THEN_RUN = """\
import os, runpy
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    os.nice(19)
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
"""


class Mode(enum.Enum):
    OFF = "off"
    BACKGROUND = "background"
    HERE = "here"


class Room:
    def __init__(self):
        self._lock = threading.Lock()
        self.generation = 0  # goes up whenever kernels_for's answer may have changed
        self._set(Mode.OFF, build.default_directory(), 0, 0)

    def _set(self, mode: Mode, directory: Path, max_loaded: int, after_predicts: int) -> None:
        self.mode = mode
        self.directory = Path(directory)
        self.max_loaded = max_loaded
        self.after_predicts = after_predicts
        self._generic: dict = {}
        self._served: collections.OrderedDict = collections.OrderedDict()  # arch -> tier 1
        self._entries: dict = {}  # arch -> entry points, kept (see the module notes)
        self._predicts: collections.Counter = collections.Counter()
        self._wanted: set = set()  # queued or compiling
        self._failed: dict = {}  # arch -> why its compile failed (not retried)
        self._queue: queue.Queue = queue.Queue()
        self._worker: threading.Thread | None = None
        self.compiles = 0  # compile processes that compiled (not found in the cache)
        self.loads = 0
        self.generation += 1

    def configure(self, mode: Mode | str, *, directory: str | Path | None = None,
                  max_loaded: int = 32, after_predicts: int = 1000) -> None:
        """Starts over in `mode` (served sets are dropped; compiles under way finish into the
        cache). `max_loaded` 0 means tier 0 only, whatever the mode."""
        mode = Mode(mode)
        if max_loaded <= 0:
            mode = Mode.OFF
        with self._lock:
            old_queue = self._queue
            self._set(mode, Path(directory) if directory else build.default_directory(),
                      max_loaded, after_predicts)
        old_queue.put(None)  # its thread, if any, ends

    # -- what the engine asks ----------------------------------------------------------------

    def kernels(self, arch, *, training: bool = False):
        """The kernels for `arch` now; a Train (`training`) also asks for tier 1 to be made."""
        mode = self.mode
        if mode is Mode.OFF:
            return self.generic(arch)
        with self._lock:
            specialised = self._served.get(arch)
            if specialised is not None:
                self._served.move_to_end(arch)
                return specialised
        if mode is Mode.HERE:
            return self._specialise_here(arch)
        if training:
            self.request(arch)
        return self.generic(arch)

    def generic(self, arch) -> GenericKernels:
        kernels = self._generic.get(arch)
        if kernels is None:
            if len(self._generic) >= MAX_GENERIC:
                self._generic.clear()
            counter = (lambda: self._predicted(arch)) if self.mode is Mode.BACKGROUND and \
                self.after_predicts > 0 else None
            kernels = self._generic[arch] = GenericKernels(arch, counter)
        return kernels

    def _predicted(self, arch) -> None:
        count = self._predicts[arch] = self._predicts[arch] + 1
        if count == self.after_predicts:
            self.request(arch)

    # -- getting tier 1 ----------------------------------------------------------------------

    def request(self, arch) -> bool:
        """Queues `arch` for specialisation unless it is served, queued or failed; returns
        whether it was queued."""
        with self._lock:
            if (self.mode is not Mode.BACKGROUND or arch in self._served or arch in self._wanted
                    or arch in self._failed):
                return False
            if arch in self._entries:  # specialised before in this process: no compile, no load
                self._serve(arch, self._entries[arch])
                return False
            self._wanted.add(arch)
            self._queue.put(arch)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, args=(self._queue,),
                                                name="jitnet-compiler", daemon=True)
                self._worker.start()
        return True

    def prefetch(self, archs, limit: int) -> tuple[int, int]:
        """At start: loads the first `limit` distinct architectures' kernels from the cache now,
        and queues those not compiled yet. Returns (loaded, queued)."""
        loaded = queued = 0
        if self.mode is not Mode.BACKGROUND:
            return 0, 0
        seen = []
        for arch in archs:
            if len(seen) >= limit:
                break
            if arch not in seen:
                seen.append(arch)
        for arch in seen:
            if self._load(arch):
                loaded += 1
            elif self.request(arch):
                queued += 1
        return loaded, queued

    def _work(self, work: queue.Queue) -> None:
        while True:
            arch = work.get()
            if arch is None or work is not self._queue:
                return
            try:
                if not self._load(arch):
                    self._compile(arch)
                    if work is not self._queue:
                        return  # configured anew meanwhile: the compile is in the cache
                    if not self._load(arch):
                        raise RuntimeError("compiled, yet not found in numba's cache")
            except Exception as exc:  # noqa: BLE001 - logged; that architecture stays tier 0
                with self._lock:
                    self._failed[arch] = str(exc)
                _LOGGER.error("specialising %s failed; it stays on the generic kernels: %s",
                              arch.describe(), exc)
            finally:
                with self._lock:
                    self._wanted.discard(arch)

    def _compile(self, arch) -> None:
        path = build.write_source(arch, self.directory)
        began = time.perf_counter()
        done = subprocess.run(
            [*at_the_lowest_priority("jitnet.service.engine.jit"), str(path)],
            capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"the compile process exited {done.returncode}: "
                               + " | ".join(tail))
        compiled = "compiled" in done.stdout
        with self._lock:
            self.compiles += compiled
        _LOGGER.info("%s %s in %.1f s (a process of its own)", arch.describe(),
                     "compiled" if compiled else "found compiled", time.perf_counter() - began)

    def _load(self, arch) -> bool:
        """Loads `arch`'s kernels from the cache and serves them; False when not compiled."""
        began = time.perf_counter()
        entries = build.load(build.source_path(self.directory, build.key_of(arch)))
        if entries is None:
            return False
        with self._lock:
            self.loads += 1
            self._entries[arch] = entries
            self._serve(arch, entries)
        _LOGGER.info("%s: specialised kernels loaded from the cache in %.1f ms",
                     arch.describe(), 1e3 * (time.perf_counter() - began))
        return True

    def _serve(self, arch, entries: dict) -> None:
        """Under the lock: `arch` served at tier 1, the least recently used out past the
        bound; every holder of kernels asks again."""
        self._served[arch] = SpecialisedKernels(arch, entries, GenericKernels(arch))
        self._served.move_to_end(arch)
        while len(self._served) > self.max_loaded:
            self._served.popitem(last=False)
        self.generation += 1

    def _specialise_here(self, arch) -> SpecialisedKernels:
        """Mode HERE: tier 1 at once, compiled in this process, one function as it is first
        called (tests would otherwise compile three functions per architecture they try)."""
        entries = _LazyEntries(build.write_source(arch, self.directory))
        with self._lock:
            if arch not in self._served:
                self._serve(arch, entries)
            return self._served[arch]

    # -- for tests, benchmarks and logs ------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """Whether nothing is queued or compiling, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._wanted:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def is_specialised(self, arch) -> bool:
        with self._lock:
            return arch in self._served

    def served(self) -> list:
        with self._lock:
            return list(self._served)

    def failures(self) -> dict:
        with self._lock:
            return dict(self._failed)


class _LazyEntries(dict):
    """Entry points compiled in this process on first use, one function at a time."""

    def __init__(self, path: Path):
        super().__init__()
        self._path = path
        self._module = None

    def __missing__(self, name):
        return _Deferred(self, name)

    def resolve(self, name):
        if name not in self:
            if self._module is None:
                self._module = build.import_source(self._path)
            self[name] = build.compile_function(self._module, name)
        return dict.__getitem__(self, name)


class _Deferred:
    """Stands in for an entry point until its first call, which compiles it."""

    __slots__ = ("_entries", "_name", "_entry")

    def __init__(self, entries: _LazyEntries, name: str):
        self._entries, self._name, self._entry = entries, name, None

    def __call__(self, *args):
        if self._entry is None:
            self._entry = self._entries.resolve(self._name)
        return self._entry(*args)
