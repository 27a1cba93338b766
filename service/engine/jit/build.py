"""Tier-1 kernels on disk: one generated module per architecture in the kernel directory, compiled
into numba's cache by a process of its own, loaded from that cache without compiling.

    <kernel_dir>/t1_<key>.py     the generated source (template.py), written once and never
                                 rewritten: numba's cache index is keyed on its mtime and size
    <kernel_dir>/t1_<key>.lock   held (flock) by the process compiling it
    numba's cache files          __pycache__ beside the source, or under NUMBA_CACHE_DIR

The key hashes the architecture, kernels.py and the template (template.source_digest), numba's
and Python's versions: a change to any of them is a new file, compiled afresh. numba's own index
adds the CPU, so one directory may serve machines of different kinds.

`compile_kernels(key_path)` runs in the compile process (`python -m jitnet.service.engine.jit`); it
takes the lock, so that two servers (or workers) asking for one architecture compile it once: the
second waits, then finds it in the cache. `load(arch, directory)` runs in the server and never
compiles: a signature missing from the cache returns None instead of a compile that would hold
the GIL for seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numba
from numba import types

from . import template

# The argument types every tier-1 function is compiled for, and called with: tiers.Tier1 calls
# the compiled entry points directly (no dispatcher typing per call), so the arrays it passes
# must be exactly these kinds: float64 (int64 orders), C-contiguous (but one sample's inputs),
# of this many dimensions.
# Arrays the kernels only read are typed read-only; a writable array passed there is the same
# in memory, and one compile serves both.
_F8_1 = types.float64[::1]
_F8_2 = types.float64[:, ::1]
# One sample's inputs: any 1-D float64 array, strided or not (Network.predict need not check).
_SAMPLE = types.Array(types.float64, 1, "A", readonly=True)
_IN_1 = types.Array(types.float64, 1, "C", readonly=True)
_IN_2 = types.Array(types.float64, 2, "C", readonly=True)
_ORDERS = types.Array(types.int64, 2, "C", readonly=True)
SIGNATURES = {
    # params, velocity, work, inputs, targets, orders, learning_rate, momentum, target_loss,
    # epoch_losses
    "sample_epochs": (_F8_1, _F8_1, _F8_2, _IN_2, _IN_2, _ORDERS, types.float64, types.float64,
                      types.float64, _F8_1),
    # params, velocity, work, inputs, targets, learning_rate
    "sample_step": (_F8_1, _F8_1, _F8_2, _IN_2, _IN_2, types.float64),
    # outputs [1, n_out], inputs [n_in], params, work
    "predict_sample": (_F8_2, _SAMPLE, _IN_1, _F8_2),
}

_MODULE_PREFIX = "t1_"


def key_of(arch) -> str:
    """The architecture's key: also names its files and its module."""
    digest = hashlib.sha256()
    for part in (repr(arch.layer_sizes), int(arch.hidden_activation),
                 int(arch.output_activation), int(arch.loss), bool(arch.bias),
                 int(arch.gradient_mode), template.source_digest(), numba.__version__,
                 platform.python_version()):
        digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def source_path(directory: Path, key: str) -> Path:
    return Path(directory) / f"{_MODULE_PREFIX}{key}.py"


def write_source(arch, directory: Path) -> Path:
    """The architecture's generated module in `directory`, written unless it is already there
    (atomically: a temp file renamed into place, so a reader never sees half of it)."""
    key = key_of(arch)
    path = source_path(directory, key)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".py")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(template.generate(arch, key))
        try:
            os.link(temp, path)  # not os.replace: a file already there keeps its mtime
        except FileExistsError:
            pass
    finally:
        os.unlink(temp)
    return path


def import_source(path: Path) -> ModuleType:
    """The generated module at `path`: executing it defines its dispatchers and compiles
    nothing. It goes into sys.modules because numba's cached code finds its globals by importing
    its module by name; the name (t1_<key>_<directory hash>) is the same in the compile process
    and the server, and differs for one key in two directories."""
    path = Path(path).resolve()
    place = hashlib.sha256(str(path.parent).encode()).hexdigest()[:8]
    name = f"{path.stem}_{place}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def compile_kernels(path: Path) -> bool:
    """Compiles every function of the generated module at `path` into numba's cache, under the
    file's lock. Returns False when another process had already filled the cache (nothing was
    compiled here), True when this call compiled."""
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        module = import_source(path)
        if all(_load_only(getattr(module, name), signature) is not None
               for name, signature in SIGNATURES.items()):
            return False
        for name, signature in SIGNATURES.items():
            getattr(module, name).compile(signature)
        return True


def load(path: Path) -> dict | None:
    """The compiled entry points of the generated module at `path`, by function name, loaded
    from numba's cache; None when any of them is not in the cache. Never compiles."""
    if not path.exists():
        return None
    module = import_source(path)
    entries = {}
    for name, signature in SIGNATURES.items():
        entry = _load_only(getattr(module, name), signature)
        if entry is None:
            return None
        entries[name] = entry
    return entries


def compile_function(module: ModuleType, name: str):
    """One function of a generated module compiled (or loaded) in this process, as its entry
    point: for tests, which may hold the GIL as long as they like; a server never calls this.
    With NUMBA_DISABLE_JIT the function is plain Python and is returned as it is."""
    function = getattr(module, name)
    return function.compile(SIGNATURES[name]) if hasattr(function, "compile") else function


# -- numba internals (numba 0.68) --------------------------------------------------------------
# Dispatcher.compile(sig) loads a signature from the cache when it is there and compiles it when
# it is not; a server must never do the second. _load_only is the first half of compile():
# under numba's global compiler lock, the dispatcher's FunctionCache.load_overload (a
# CompileResult, or None), then add_overload, so that the dispatcher knows the signature too.
# The entry point is what compile() would return. tests/jit/test_build.py checks that this
# still loads what compile() saved, and returns None for what it did not.
from numba.core.compiler_lock import global_compiler_lock  # noqa: E402 - beside the notes above


def _load_only(dispatcher, signature):
    if not hasattr(dispatcher, "_cache"):  # NUMBA_DISABLE_JIT: a plain function
        return dispatcher
    with global_compiler_lock:
        existing = dispatcher.overloads.get(tuple(signature))
        if existing is not None:
            return existing.entry_point
        try:
            result = dispatcher._cache.load_overload(signature, dispatcher.targetctx)
        except Exception:  # noqa: BLE001 - an entry numba cannot rebuild (e.g. written under
            return None  # another module name, before its directory moved): not in the cache
        if result is None:
            return None
        dispatcher.add_overload(result)
        return result.entry_point
# ---------------------------------------------------------------------------------------------


def default_directory() -> Path:
    """$XDG_CACHE_HOME/jitnet/kernels, else ~/.cache/jitnet/kernels, else a temp directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if base.startswith("~"):  # no home directory
        base = tempfile.gettempdir()
    return Path(base) / "jitnet" / "kernels"
