"""The fluctuation metrics of benchmarks/polarizability_convergence.py on analytic cases."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from polarizability_convergence import compare, parts  # noqa: E402


def _tensors(n=6, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 3, 3))
    return 70.0 * np.eye(3) + a + a.transpose(0, 2, 1)


def test_parts_split_trace_and_traceless():
    x = _tensors(1)[0]
    iso, an = parts(x)
    assert iso == pytest.approx(np.trace(x) / 3)
    assert np.trace(an) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(an + iso * np.eye(3), x)


def test_a_constant_offset_is_no_fluctuation_error_and_a_scale_is_recovered():
    ref = _tensors()
    shifted = ref + np.diag([3.0, -1.0, 5.0])  # the same offset in every snapshot
    r = compare(shifted, ref)
    assert r["fluct_rel_err_iso"] == pytest.approx(0.0, abs=1e-12)
    assert r["fluct_rel_err_aniso"] == pytest.approx(0.0, abs=1e-12)
    assert r["mean_iso_ratio"] == pytest.approx((70 + 7 / 3) / 70, rel=0.05)
    # test = ref / 1.6 (fluctuations 1.6× too small): error 1 − 1/1.6, scale 1.6, nothing left after scaling
    scaled = ref / 1.6
    r = compare(scaled, ref)
    assert r["scale_iso"] == pytest.approx(1.6) and r["scale_aniso"] == pytest.approx(1.6)
    assert r["fluct_rel_err_iso"] == pytest.approx(1 - 1 / 1.6)
    assert r["fluct_rel_err_after_scale_aniso"] == pytest.approx(0.0, abs=1e-12)


def test_uncorrelated_fluctuations_leave_the_full_error_after_scaling():
    ref, other = _tensors(seed=1), _tensors(seed=2)
    r = compare(other, ref)
    # the best scale of uncorrelated data is small and cannot remove the error
    assert r["fluct_rel_err_after_scale_aniso"] > 0.8
    assert abs(r["scale_aniso"]) < 0.6
