from __future__ import annotations

import json

import numpy as np
import pytest

from ionraman.calibration import Calibration, calibrate, join_fingerprints, read_measured
from ionraman.errors import InputError


def _synthetic_records(measured, threshold=0.15, seed=0):
    """Fingerprints that rise with measured log σ and cross `threshold` at σ = 1e-4 S/cm."""
    rng = np.random.default_rng(seed)
    recs = []
    for name, m in measured.items():
        f = threshold + 0.04 * (np.log10(m.sigma_S_cm) + 4) + rng.normal(scale=0.005)
        for T in (500.0, 800.0):
            recs.append({"candidate": name, "temperature_K": T, "integrity_ok": True,
                         "fingerprint": {"F_LF": float(f + (0.02 if T == 800 else 0)), "F_LF_err": 0.01}})
    return recs


def test_shipped_table_links_builtin_candidates():
    m = read_measured()
    assert m["Na3SbS4-tetragonal"].sigma_S_cm == pytest.approx(2.1e-3)
    assert m["Na3PS4-tetragonal"].sigma_S_cm == pytest.approx(1e-6)
    assert m["AgI-alpha"].temperature_K == 420
    assert "10.1038" in m["Na3SbS4-cubic-W0.125"].source
    from ionraman.structures import builtin_structures, builtin_variants

    names = {b.name for b in builtin_structures()} | {v.name for v in builtin_variants()}
    assert set(m) <= names


def test_calibration_recovers_known_threshold():
    measured = read_measured(include_unlinked=True)  # every material of the literature table with a σ
    assert len(measured) >= 15
    pts = join_fingerprints(_synthetic_records(measured), measured)
    assert len(pts) == len(measured) and all(p["temperature_K"] == 500.0 for p in pts)
    cal = calibrate(pts, n_bootstrap=300)
    fast = [p["F_LF"] for p in pts if p["sigma_S_cm"] >= 1e-4]
    slow = [p["F_LF"] for p in pts if p["sigma_S_cm"] < 1e-4]
    # separable data: the threshold falls in the gap between the classes, near the true 0.15
    assert max(slow) <= cal.threshold_F_LF <= min(fast)
    assert cal.threshold_F_LF == pytest.approx(0.15, abs=0.04)
    assert cal.auc_loo > 0.9 and cal.auc_ci[0] <= cal.auc_loo + 1e-9
    # log σ = (F − 0.15)/0.04 − 4 → slope 25 per unit F_LF
    assert cal.slope == pytest.approx(25, rel=0.2) and cal.slope_ci[0] < cal.slope < cal.slope_ci[1]
    assert cal.probability_fast(cal.threshold_F_LF) == pytest.approx(0.5, abs=1e-9)


def test_save_load_and_verdict_use(tmp_path):
    measured = read_measured(include_unlinked=True)
    cal = calibrate(join_fingerprints(_synthetic_records(measured), measured), n_bootstrap=100)
    p = cal.save(tmp_path / "cal.json")
    back = Calibration.load(p)
    assert back.threshold_F_LF == cal.threshold_F_LF and back.auc_ci == cal.auc_ci
    from ionraman.screening.store import verdict

    rec = {"integrity_ok": True, "mobile_ion": "Na", "fingerprint": {"F_LF": cal.threshold_F_LF + 0.01},
           "transport": {"species": {"Na": {"D_cm2_s": 1e-5, "D_err_cm2_s": 1e-6, "n_hops": 10}}}}
    assert verdict(rec, calibration=back) == "liquid-like"
    rec["fingerprint"]["F_LF"] = back.threshold_F_LF - 0.01
    assert verdict(rec, calibration=back) == "hopping"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 7}))
    with pytest.raises(InputError, match="version 7"):
        Calibration.load(bad)


def test_too_few_points_is_a_clear_message():
    measured = read_measured(include_unlinked=True)
    pts = join_fingerprints(_synthetic_records(measured), measured)[:3]
    with pytest.raises(InputError, match="at least 4 materials"):
        calibrate(pts)
    # one class with a single member cannot be fitted either
    linked = read_measured()
    one_slow = {k: v for k, v in linked.items() if v.sigma_S_cm >= 1e-4 or k == "LiF"}
    with pytest.raises(InputError, match="\\(8 fast\\)"):
        calibrate(join_fingerprints(_synthetic_records(one_slow), one_slow))


def test_builtin_candidates_alone_can_be_calibrated():
    """The shipped table links built-ins on both sides of the line (slow: tetragonal Na3PS4, LiI, LiF)."""
    linked = read_measured()
    slow = sorted(k for k, v in linked.items() if v.sigma_S_cm < 1e-4)
    assert slow == ["LiF", "LiI", "Na3PS4-tetragonal"]
    cal = calibrate(join_fingerprints(_synthetic_records(linked), linked), n_bootstrap=200)
    assert cal.n == len(linked) and cal.auc_loo > 0.9


def test_measured_csv_errors(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("name,sigma\nx,1\n")
    with pytest.raises(InputError, match="candidate"):
        read_measured(f)
    f.write_text("candidate,sigma_S_per_cm\nNaCl,-1\n")
    with pytest.raises(InputError, match="line 2"):
        read_measured(f)
