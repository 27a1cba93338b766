"""The compiler room: triggers, compiling in a process of its own, swapping in, one tier per Train
call, the bound on loaded specialisations, failures, and start-up from the cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jitnet.service.engine import jit, training
from jitnet.service.engine.jit import GenericKernels, SpecialisedKernels, build
from jitnet.service.engine.model import Activation, Architecture, Init, Loss, Network

NOJIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
pytestmark = pytest.mark.skipif(NOJIT, reason="NUMBA_DISABLE_JIT: nothing to compile")

XOR = Architecture((2, 4, 1))
XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_T = np.array([[0.0], [1.0], [1.0], [0.0]])
# A second architecture: softmax and cross-entropy, no relation to XOR's code.
SMALL = Architecture((3, 5, 2), Activation.TANH, Activation.SOFTMAX, Loss.CROSS_ENTROPY)


def train(net, x, t, epochs=3, **options):
    options = training.TrainOptions(epochs=epochs, learning_rate=0.5, **options)
    return list(training.train(net, x, t, options))


def test_off_means_tier_0_and_nothing_on_disk(tmp_path):
    jit.room.configure(jit.Mode.OFF, directory=tmp_path)
    try:
        assert isinstance(jit.kernels_for(XOR, training=True), GenericKernels)
        train(Network.initialise(XOR, seed=1), XOR_X, XOR_T)
        assert jit.room.wait_idle(0) and not list(tmp_path.iterdir())
    finally:
        jit.room.configure(jit.Mode.OFF)


def test_a_train_gets_the_architecture_specialised_beside_the_call(room):
    net = Network.initialise(XOR, Init.UNIFORM, seed=1)
    generation = room.generation
    first = train(net, XOR_X, XOR_T)  # answered at tier 0; asks for tier 1
    assert isinstance(jit.kernels_for(XOR), (GenericKernels, SpecialisedKernels))
    assert room.wait_idle(600), "the compile did not finish"
    assert room.failures() == {}
    assert room.is_specialised(XOR) and jit.kernels_for(XOR).tier == 1
    assert room.generation > generation and room.loads == 1
    # The same training on the specialised kernels: the same result, to rounding.
    second = train(net, XOR_X, XOR_T)
    np.testing.assert_allclose(second[-1].params, first[-1].params, rtol=1e-12, atol=1e-15)
    assert second[-1].loss == pytest.approx(first[-1].loss, rel=1e-12)
    # ... and the module's functions were compiled by another process: here they were only
    # loaded from the cache.
    module = build.import_source(build.source_path(room.directory, build.key_of(XOR)))
    assert not module.sample_epochs._cache_misses


def test_predicts_ask_for_tier_1_after_the_setting(room, compiled):
    compiled(SMALL)  # in the cache already: this test is about the trigger
    net = Network.initialise(SMALL, seed=2)
    x = np.array([0.5, -0.25, 1.0])
    before = net.predict(x)
    for _ in range(room.after_predicts - 2):
        net.predict(x)
    assert not room.is_specialised(SMALL) and room.wait_idle(0)  # not asked yet
    net.predict(x)  # the after_predicts-th
    assert room.wait_idle(600) and room.is_specialised(SMALL)
    # This Network rebinds to tier 1 on its next call (the generation moved) and answers the
    # same, to rounding.
    np.testing.assert_allclose(net.predict(x), before, rtol=1e-13)
    assert net._scratch.sample[1] is jit.kernels_for(SMALL).predict_sample


def test_a_train_call_keeps_its_tier_when_another_is_swapped_in(tier1_dir, monkeypatch):
    tiers = []
    for cls in (GenericKernels, SpecialisedKernels):
        original = cls.sample_epochs

        def recording(self, *args, _original=original):
            tiers.append(self.tier)
            return _original(self, *args)
        monkeypatch.setattr(cls, "sample_epochs", recording)
    net = Network.initialise(XOR, Init.UNIFORM, seed=4)
    jit.room.configure(jit.Mode.OFF)
    try:
        call = training.train(net, XOR_X, XOR_T, training.TrainOptions(
            epochs=6, learning_rate=0.5, report_every=1))
        next(call)
        next(call)
        # Tier 1 becomes available in the middle of the call: the call goes on at tier 0.
        jit.room.configure(jit.Mode.HERE, directory=tier1_dir, max_loaded=4)
        assert jit.kernels_for(XOR).tier == 1
        rest = list(call)
        assert len(rest) == 4 and rest[-1].done
        assert tiers == [0] * 6
        train(net, XOR_X, XOR_T, epochs=2)  # the next call starts at tier 1
        assert tiers[6:] == [1, 1]
    finally:
        jit.room.configure(jit.Mode.OFF)


@pytest.fixture
def tier1_dir(tmp_path):
    return tmp_path / "kernels"


def test_the_least_recently_used_goes_out_first(tier1_dir):
    archs = [Architecture((2, n, 1)) for n in (3, 4, 5)]
    jit.room.configure(jit.Mode.HERE, directory=tier1_dir, max_loaded=2)
    try:
        first, second, third = archs
        jit.kernels_for(first)
        jit.kernels_for(second)
        generation = jit.room.generation
        jit.kernels_for(first)  # used again: now the most recent
        jit.kernels_for(third)  # one too many: `second` goes out
        assert jit.room.served() == [first, third]
        assert jit.room.generation > generation  # holders of `second`'s kernels ask again
        assert jit.kernels_for(second).tier == 1  # and it comes back when asked for
        assert jit.room.served() == [third, second]
    finally:
        jit.room.configure(jit.Mode.OFF)


def test_an_evicted_specialisation_comes_back_without_a_load(room, compiled):
    compiled(XOR)
    compiled(SMALL)
    room.configure(jit.Mode.BACKGROUND, directory=room.directory, max_loaded=1)
    assert room.prefetch([XOR], 4) == (1, 0) and room.loads == 1
    assert room.prefetch([SMALL], 4) == (1, 0) and room.served() == [SMALL]
    assert room.request(XOR) is False  # loaded before in this process: served at once
    assert room.served() == [XOR] and room.loads == 2 and room.wait_idle(0)


def test_prefetch_loads_what_the_cache_has_and_queues_the_rest(room, compiled, monkeypatch):
    compiled(XOR)
    fresh = Architecture((4, 3, 3), Activation.RELU, Activation.LINEAR)
    asked = []
    monkeypatch.setattr(jit.Room, "_compile", lambda self, arch: asked.append(arch))
    assert room.prefetch([XOR, XOR, fresh, SMALL], 2) == (1, 1)  # two distinct, XOR cached
    assert room.wait_idle(60)
    assert asked == [fresh] and room.is_specialised(XOR)
    assert fresh in room.failures()  # "compiled" (not really), yet not in the cache
    assert not room.is_specialised(SMALL)  # past the limit


def test_a_failed_compile_leaves_the_architecture_on_tier_0(room, monkeypatch):
    arch = Architecture((5, 1), output_activation=Activation.LINEAR)
    monkeypatch.setattr(build.template, "generate",
                        lambda arch, key: "raise RuntimeError('a broken template')\n")
    net = Network.initialise(arch, seed=0)
    x, t = np.ones((2, 5)), np.ones((2, 1))
    train(net, x, t)
    assert room.wait_idle(300)
    assert "a broken template" in room.failures()[arch]
    assert jit.kernels_for(arch).tier == 0
    assert room.request(arch) is False  # not retried: the failure is in the log once
    assert train(net, x, t)[-1].done  # and training goes on, at tier 0
