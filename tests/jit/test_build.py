"""Tier-1 kernels on disk: the generated source, its key, the compile process, and loading from
numba's cache without ever compiling in the loading process (build.py's numba internals)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from jitnet.service.engine.jit import build, template
from jitnet.service.engine.jit.room import at_the_lowest_priority
from jitnet.service.engine.jit.tiers import GenericKernels, SpecialisedKernels
from jitnet.service.engine.model import Activation, Architecture, GradientMode, Loss, Network

XOR = Architecture((2, 4, 1))
NOJIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
jit_only = pytest.mark.skipif(NOJIT, reason="NUMBA_DISABLE_JIT: nothing is compiled or cached")


def compile_process(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jitnet.service.engine.jit", str(path)],
                          capture_output=True, text=True, timeout=600)


def test_the_compile_process_is_at_the_lowest_priority_before_it_imports_anything(tmp_path):
    """The server starts its compiles so (at_the_lowest_priority): importing the compile
    module alone is a second of CPU, which must not compete with the server's Predicts."""
    (tmp_path / "probe_priority.py").write_text(
        "import os, sys\n"
        "print(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0),\n"
        "      'numba' in sys.modules, __name__)\n")
    done = subprocess.run(at_the_lowest_priority("probe_priority"), capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    policy, nice, numba_imported, name = done.stdout.split()
    assert int(policy) == os.SCHED_IDLE or int(nice) == 19
    assert (numba_imported, name) == ("False", "__main__")


def test_the_source_is_the_architecture_written_out():
    arch = Architecture((3, 5, 2), Activation.TANH, Activation.SOFTMAX, Loss.CROSS_ENTROPY,
                        bias=False, gradient_mode=GradientMode.ARTICLE)
    source = template.generate(arch, "k")
    assert source == template.generate(Architecture((3, 5, 2), Activation.TANH,
                                                    Activation.SOFTMAX, Loss.CROSS_ENTROPY,
                                                    bias=False,
                                                    gradient_mode=GradientMode.ARTICLE), "k")
    compile(source, "t1_k.py", "exec")  # valid Python
    # Layers written out with their numbers: no loop over layers, no runtime layout lookups.
    assert "# layer 0: 3 -> 5 TANH" in source and "# layer 1: 5 -> 2 SOFTMAX" in source
    assert "activate(net, TANH)" in source and "for j in range(5):" in source
    assert "layout[" not in source and "kinds[" not in source
    assert "HIDDEN, OUTPUT, LOSS, MODE = TANH, SOFTMAX, CROSS_ENTROPY, ARTICLE" in source
    assert "params[" in source and "0.0" in source  # no bias: nets start at 0.0
    assert "NARROW_JIT" in source.split("def sample_epochs")[0]  # short dot products
    wide = template.generate(Architecture((20, 3, 1)), "k")
    assert "@njit(**JIT)\ndef sample_epochs" in wide  # 20 inputs: vectorised dot products


def test_each_field_of_the_architecture_gets_its_own_key():
    variants = [XOR, Architecture((2, 5, 1)), Architecture((2, 4, 4, 1)),
                Architecture((2, 4, 1), hidden_activation=Activation.TANH),
                Architecture((2, 4, 1), output_activation=Activation.LINEAR),
                Architecture((2, 4, 1), loss=Loss.CROSS_ENTROPY),
                Architecture((2, 4, 1), bias=False),
                Architecture((2, 4, 1), gradient_mode=GradientMode.ARTICLE)]
    keys = [build.key_of(arch) for arch in variants]
    assert len(set(keys)) == len(variants)
    assert build.key_of(Architecture((2, 4, 1))) == keys[0]  # equal architectures, one key
    assert all(k.isalnum() for k in keys)


def test_the_source_is_written_once(tmp_path):
    path = build.write_source(XOR, tmp_path)
    stamp = path.stat().st_mtime_ns
    time.sleep(0.02)
    assert build.write_source(XOR, tmp_path) == path
    # numba's cache index is keyed on the file's mtime: rewriting it would drop the cache.
    assert path.stat().st_mtime_ns == stamp
    assert path.read_text() == template.generate(XOR, build.key_of(XOR))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@jit_only
def test_loading_never_compiles_and_finds_what_the_compile_process_saved(tmp_path):
    arch = Architecture((3, 2, 2), Activation.RELU, Activation.SOFTMAX, Loss.CROSS_ENTROPY)
    path = build.write_source(arch, tmp_path)
    assert build.load(path) is None  # not compiled yet: nothing, rather than a compile
    module = build.import_source(path)
    assert not any(getattr(module, name).signatures for name in build.SIGNATURES)

    done = compile_process(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"compiled {path}")
    entries = build.load(path)
    assert entries is not None and set(entries) == set(build.SIGNATURES)

    # What was loaded computes what the generic kernels compute.
    net = Network.initialise(arch, seed=3)
    x = np.array([0.3, -1.2, 0.7])
    generic, specialised = GenericKernels(arch), SpecialisedKernels(arch, entries,
                                                                     GenericKernels(arch))
    outputs = [np.empty((1, 2)), np.empty((1, 2))]
    for kernels, out in zip((generic, specialised), outputs, strict=True):
        assert kernels.predict_sample(out, x, net.params, np.empty((2, arch.n_units))) == 0
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-13)

    # Compiled once per machine: asked again, the process finds the cache full.
    again = compile_process(path)
    assert again.returncode == 0 and again.stdout.startswith(f"cached {path}")


def test_the_compile_process_reports_a_broken_module(tmp_path):
    broken = tmp_path / "t1_broken.py"
    broken.write_text("raise RuntimeError('not a kernel module')\n")
    done = compile_process(broken)
    assert done.returncode == 1
    assert "not a kernel module" in done.stderr and str(broken) in done.stderr
