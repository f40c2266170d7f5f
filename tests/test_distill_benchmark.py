"""The pieces of benchmarks/distill_vs_teacher.py that combine runs (issue #7): D over seeds, file names."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pytest.importorskip("mace")
import distill_vs_teacher as bench  # noqa: E402


def _run(seed, d, err, hops, speed=100.0, ok=True):
    return {"seed": seed, "atom_steps_per_s": speed, "D_cm2_s": d, "D_err_cm2_s": err, "n_hops": hops,
            "integrity_ok": ok, "integrity": "framework intact", "vdos": f"vdos{seed}"}


def test_d_from_several_seeds_is_the_mean_with_the_propagated_error():
    runs = [_run(3, 3e-6, 1e-6, 14), _run(4, 2e-6, 0.5e-6, 7, speed=None), _run(5, 4e-6, 2e-6, 17, ok=False)]
    c = bench.combine_seeds(runs)
    assert c["D_cm2_s"] == pytest.approx(3e-6)
    assert c["D_err_cm2_s"] == pytest.approx(math.sqrt(1 + 0.25 + 4) * 1e-6 / 3)  # sqrt(Σσ²)/N
    assert c["n_hops"] == 38 and c["integrity_ok"] is False  # one broken run marks the model
    assert c["vdos"] == "vdos3" and len(c["runs"]) == 3 and "vdos" not in c["runs"][0]
    assert c["atom_steps_per_s"] == pytest.approx(100.0)  # runs without a recorded speed are left out
    one = bench.combine_seeds(runs[:1])
    assert (one["D_cm2_s"], one["D_err_cm2_s"], "runs" in one) == (3e-6, 1e-6, False)
    assert bench.combine_seeds([_run(3, None, None, 0), _run(4, 2e-6, 1e-6, 3)])["D_cm2_s"] is None


def test_a_seed_whose_framework_broke_is_left_out_for_both_models():
    runs = {"teacher": [_run(3, 3e-6, 1e-6, 14), _run(7, 6e-6, 1e-6, 22, ok=False)],
            "distilled": [_run(3, 4e-6, 1e-6, 10), _run(7, 8e-6, 1e-6, 12)]}
    kept, broken = bench.drop_broken_seeds(runs)
    assert [r["seed"] for r in kept["teacher"]] == [3] and [r["seed"] for r in kept["distilled"]] == [3]
    assert list(broken) == ["teacher seed 7"]
    all_bad = {"teacher": [_run(3, 3e-6, 1e-6, 14, ok=False)], "distilled": [_run(3, 4e-6, 1e-6, 10)]}
    kept, broken = bench.drop_broken_seeds(all_bad)
    assert kept == all_bad and list(broken) == ["teacher seed 3"]  # nothing left to compare: kept, and named


def test_the_first_seed_keeps_the_file_names_of_earlier_benchmarks(tmp_path):
    assert bench.d_run_path(tmp_path, "doped", "teacher", 700.0, 3).name == "doped_teacher_700K.h5"
    assert bench.d_run_path(tmp_path, "doped", "teacher", 700.0, 5).name == "doped_teacher_700K_seed5.h5"
    cfg = bench.d_run_config(argparse.Namespace(temperature=700.0, time=10.0, equilibrate=1.0), 4)
    assert (cfg.temperature_K, cfg.time_ps, cfg.equilibrate_ps, cfg.seed, cfg.sample_every) == (700.0, 10.0, 1.0, 4, 5)
