"""kernels.vexp, the vectorisable e^x behind sigmoid and softmax, against np.exp: within 1 ulp
over the whole range, and the same inf, 0 and nan."""

import numpy as np
import pytest
from numba import njit

from jitnet.service.engine import kernels


@njit
def exp_all(xs, out):
    for i in range(xs.size):
        out[i] = kernels.vexp(xs[i])


def ulps(got, want):
    return np.abs(got - want) / np.spacing(np.abs(want))


# The ulp bounds are of the compiled code, whose Horner steps are fused multiply-adds (the
# `contract` flag); plain Python rounds each step, and loops over 700,000 values there crawl.
@pytest.mark.jit_only
def test_exp_within_one_ulp_of_numpy_over_its_range():
    rng = np.random.default_rng(7)
    xs = np.concatenate([np.linspace(-708.0, 709.7, 400_001), rng.uniform(-40, 40, 200_000),
                         rng.standard_normal(100_000) * 1e-3, np.arange(-30, 31) * np.log(2)])
    got = np.empty_like(xs)
    exp_all(xs, got)
    assert ulps(got, np.exp(xs)).max() <= 1.0


@pytest.mark.jit_only
def test_exp_subnormal_and_near_overflow_results():
    xs = np.concatenate([np.linspace(-745.1, -708.0, 20_001), np.linspace(709.0, 709.78, 2_001)])
    got = np.empty_like(xs)
    exp_all(xs, got)
    want = np.exp(xs)
    normal = want >= np.finfo(np.float64).tiny
    assert ulps(got[normal], want[normal]).max() <= 1.0
    # below 2.2e-308 the spacing is the smallest subnormal: off by at most one of those
    assert np.abs(got[~normal] - want[~normal]).max() <= np.finfo(np.float64).smallest_subnormal


@pytest.mark.parametrize("x, want", [
    (0.0, 1.0), (-0.0, 1.0), (709.79, np.inf), (710.0, np.inf), (1e300, np.inf),
    (np.inf, np.inf), (-745.2, 0.0), (-746.0, 0.0), (-1e300, 0.0), (-np.inf, 0.0),
])
def test_exp_special_values(x, want):
    got = np.empty(1)
    exp_all(np.array([x]), got)
    assert got[0] == want


def test_exp_keeps_nan():
    got = np.empty(1)
    exp_all(np.array([np.nan]), got)
    assert np.isnan(got[0])


def test_batch_sigmoid_layer_saturates_and_matches_numpy():
    """activation_forward's sigmoid loop, the one that uses vexp."""
    z = np.array([-800.0, -40.0, -1.0, 0.0, 0.5, 40.0, 800.0, np.nan])
    a = np.empty_like(z)

    @njit
    def layer(a, z):
        kernels.activation_forward(a, z, 0, 1, z.size, kernels.SIGMOID)

    layer(a, z)
    assert a[0] == 0.0 and a[6] == 1.0 and np.isnan(a[7])
    np.testing.assert_allclose(a[1:6], 1 / (1 + np.exp(-z[1:6])), rtol=4e-16, atol=0)
