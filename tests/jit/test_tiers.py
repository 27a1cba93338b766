"""The two kernel sets answer the same calls alike, including the inputs only the one-sample
path takes (a strided sample), and hand a one-row Predict to the one-sample kernel."""

from __future__ import annotations

import numpy as np
import pytest

from jitnet.service.engine import jit
from jitnet.service.engine.model import Activation, Architecture, Loss, Network

ARCH = Architecture((20, 7, 3), Activation.TANH, Activation.SOFTMAX, Loss.CROSS_ENTROPY)


@pytest.fixture(params=[0, 1], ids=["tier0", "tier1"])
def tier(request, tmp_path):
    jit.room.configure(jit.Mode.HERE if request.param else jit.Mode.OFF,
                       directory=tmp_path / "kernels", max_loaded=4)
    try:
        assert jit.kernels_for(ARCH).tier == request.param
        yield request.param
    finally:
        jit.room.configure(jit.Mode.OFF)


def test_a_strided_sample_is_predicted_like_a_contiguous_one(tier):
    net = Network.initialise(ARCH, seed=5)
    wide = np.random.default_rng(1).normal(size=(2 * 20,))
    strided = wide[::2]
    assert not strided.flags.c_contiguous
    expected = Network(ARCH, net.params.copy()).predict(np.ascontiguousarray(strided)[None])
    np.testing.assert_allclose(net.predict(strided), expected, rtol=1e-13)
    np.testing.assert_allclose(net.predict(strided).sum(), 1.0, rtol=1e-14)


def test_one_row_and_one_sample_agree_and_non_finite_inputs_are_refused(tier):
    net = Network.initialise(ARCH, seed=6)
    x = np.linspace(-1.0, 1.0, 20)
    np.testing.assert_array_equal(net.predict(x[None]), net.predict(x))
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(Exception, match=r"inputs\[3\]"):
        net.predict(bad)
