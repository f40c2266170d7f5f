"""A tiny real campaign on a 2-worker LocalCluster: store, resume, faults, spec errors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ionraman.errors import InputError
from ionraman.screening.campaign import run_campaign
from ionraman.screening.spec import load_campaign, preset
from ionraman.screening.store import ResultsStore

HERE = Path(__file__).resolve().parent

TINY = """
name = "tiny"
temperatures_K = [300, 600]
output_dir = "{out}"

[[candidates]]
structure = "NaCl"
supercell = "1x1x1"

[[candidates]]
structure = "AgI-alpha"
supercell = "1x1x1"

[md]
time_ps = 0.12
equilibrate_ps = 0.02
sample_every = 1
timestep_fs = 2.0

[spectrum]
polarizability_model = "{model}"
segments = 2
max_frequency_cm1 = 600.0
harmonic = {harmonic}

[fingerprint]
cutoff_cm1 = 100.0
omega_max_cm1 = 600.0
"""


@pytest.fixture
def worker_env(monkeypatch):
    # Dask worker processes import the test model factories from tests/helpers
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(HERE))


def _campaign(tmp_path, model="python:helpers.screening_models:bond_model", harmonic="true"):
    f = tmp_path / "tiny.toml"
    f.write_text(TINY.format(out=tmp_path / "out", model=model, harmonic=harmonic))
    return load_campaign(f)


def test_tiny_campaign_runs_stores_and_skips_on_rerun(tmp_path, worker_env):
    spec = _campaign(tmp_path)
    res = run_campaign(spec, workers=2, progress=False)
    assert res.failed == 0, res.failures
    assert res.done == 6 and res.skipped == 0  # 2 × 2 MD + 2 harmonic
    store = ResultsStore(res.database)
    recs = store.records("md")
    assert len(recs) == 4
    for r in recs:
        assert 0 <= r["fingerprint"]["F_LF"] <= 1
        assert r["verdict"] in {"liquid-like", "hopping", "immobile", "invalid"}
        assert (res.output_dir / r["artifacts"]["trajectory"]["path"]).exists()
        assert len(r["artifacts"]["spectrum"]["sha256"]) == 64
    nacl = [r for r in recs if r["candidate"] == "NaCl"]
    assert all(r["verdict"] == "immobile" for r in nacl)
    # ASE db key-value pairs are filterable
    assert store.count(candidate="NaCl", kind="md") == 2
    assert res.report.exists() and "Verdicts" in res.report.read_text()
    rows = res.ranking.read_text().splitlines()
    assert rows[0].startswith("candidate,") and len(rows) == 5
    # a second run does no work
    again = run_campaign(spec, workers=2, progress=False)
    assert again.done == 0 and again.skipped == 6 and again.failed == 0
    assert store.count() == 6


def test_killed_worker_is_retried_without_duplicates(tmp_path, worker_env, monkeypatch):
    monkeypatch.setenv("IONRAMAN_TEST_KILL_MARKER", str(tmp_path / "killed"))
    spec = _campaign(tmp_path, model="python:helpers.screening_models:killer_bond_model", harmonic="false")
    res = run_campaign(spec, workers=2, progress=False, report=False)
    assert (tmp_path / "killed").exists()  # a worker really died
    assert res.failed == 0, res.failures
    store = ResultsStore(res.database)
    keys = [r["key"] for r in store.records("md")]
    assert len(keys) == 4 and len(set(keys)) == 4


def test_failed_task_is_recorded_and_others_finish(tmp_path, worker_env):
    spec = _campaign(tmp_path, model="python:helpers.no_such_module:nothing", harmonic="false")
    res = run_campaign(spec, workers=2, progress=False)
    assert res.failed == 4 and res.done == 0
    assert all("cannot load" in reason for reason in res.failures.values())
    assert ResultsStore(res.database).count(status="failed") == 4


@pytest.mark.parametrize(
    "text,msg",
    [
        ('name = "x"\ncandidates = ["NaCl"]\n', "temperatures_K"),
        ('temperatures_K = [300]\ncandidates = ["Unobtainium"]\n', "neither a built-in name nor an existing file"),
        ('temperatures_K = [300]\ncandidates = ["NaCl"]\n[md]\ntime_ps = "long"\n', "[md].time_ps"),
        ('temperatures_K = [300]\ncandidates = ["NaCl"]\n[md]\nthermostat = "nose"\n', "unknown key(s) thermostat"),
        ('temperatures_K = [-5]\ncandidates = ["NaCl"]\n', "non-positive temperature"),
        ('temperatures_K = [300]\ncandidates = ["NaCl", "NaCl"]\n', "appear twice"),
        ("temperatures_K = [300\n", "not valid TOML"),
    ],
)
def test_invalid_spec_one_sentence(tmp_path, text, msg):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(InputError) as e:
        load_campaign(f)
    assert msg in str(e.value) and "bad.toml" in str(e.value)


def test_presets_are_valid_and_keys_stable():
    demo = preset("demo")
    names = {c.name for c in demo.candidates}
    assert "NaCl" in names and len(names) >= 4 and len(demo.temperatures_K) >= 2
    k1 = [t.key for t in demo.tasks()]
    k2 = [t.key for t in preset("demo").tasks()]
    assert k1 == k2 and len(set(k1)) == len(k1)
    assert preset("production").md.time_ps > demo.md.time_ps
    with pytest.raises(InputError, match="unknown"):
        preset("huge")


def test_calibration_preset_screens_linked_candidates_on_both_sides():
    from ionraman.calibration import read_measured

    cal = preset("calibration")
    measured = read_measured()
    names = [c.name for c in cal.candidates]
    assert all(n in measured for n in names)  # every candidate has a measured σ in the shipped table
    fast = [n for n in names if measured[n].sigma_S_cm >= 1e-4]
    assert len(fast) >= 2 and len(names) - len(fast) >= 2


def test_ranking_hides_flagged_central_peak_widths():
    from ionraman.screening.report import ranking_rows

    base = {"candidate": "X", "temperature_K": 500.0, "integrity_ok": True, "verdict": "immobile"}
    ok = dict(base, fingerprint={"F_LF": 0.3, "central_peak_width_cm1": 40.0, "central_peak_message": None})
    bad = dict(base, candidate="Y", fingerprint={"F_LF": 0.1, "central_peak_width_cm1": 1.0e4,
                                                 "central_peak_message": "the fitted HWHM 1e4 cm⁻¹ exceeds the fit window"})
    rows = {r["candidate"]: r for r in ranking_rows([ok, bad])}
    assert rows["X"]["central_peak_width_cm1"] == 40.0 and rows["Y"]["central_peak_width_cm1"] is None


@pytest.mark.slow
def test_external_scheduler_gives_same_rows(tmp_path, worker_env):
    """The campaign on `dask scheduler` + two `dask worker` processes equals the LocalCluster run."""
    import socket
    import subprocess
    import time

    (tmp_path / "a").mkdir()
    local = run_campaign(_campaign(tmp_path / "a", harmonic="false"), workers=2, progress=False, report=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bindir = Path(sys.executable).parent
    addr = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(3)
        for _ in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", addr, "--nthreads", "1", "--nworkers", "1",
                                           "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(addr, timeout=60) as c:
            c.wait_for_workers(2, timeout=120)
        (tmp_path / "b").mkdir()
        remote = run_campaign(_campaign(tmp_path / "b", harmonic="false"), scheduler=addr, progress=False, report=False)
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    assert remote.done == local.done == 4
    a = {(r["candidate"], r["temperature_K"]): r for r in ResultsStore(local.database).records("md")}
    b = {(r["candidate"], r["temperature_K"]): r for r in ResultsStore(remote.database).records("md")}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["key"] == b[k]["key"]
        assert a[k]["fingerprint"]["F_LF"] == pytest.approx(b[k]["fingerprint"]["F_LF"], rel=1e-9)
        sp = a[k]["mobile_ion"]
        assert a[k]["transport"]["species"][sp]["D_cm2_s"] == pytest.approx(b[k]["transport"]["species"][sp]["D_cm2_s"], rel=1e-9)


@pytest.mark.parametrize(
    "sp,integrity_ok,F,expected",
    [
        ({"D_cm2_s": 5e-5, "D_err_cm2_s": 1e-5, "n_hops": 0, "away_from_site_fraction": 0.8}, True, 0.5, "liquid-like"),
        ({"D_cm2_s": 5e-5, "D_err_cm2_s": 1e-5, "n_hops": 12, "away_from_site_fraction": 0.1}, True, 0.1, "hopping"),
        ({"D_cm2_s": 1e-5, "D_err_cm2_s": 1e-6, "n_hops": 0, "away_from_site_fraction": 0.02}, True, 0.5, "immobile"),
        ({"D_cm2_s": 2e-6, "D_err_cm2_s": 2e-6, "n_hops": 3, "away_from_site_fraction": 0.3}, True, 0.5, "immobile"),
        ({"D_cm2_s": 5e-5, "D_err_cm2_s": 1e-5, "n_hops": 9, "away_from_site_fraction": 0.8}, False, 0.5, "invalid"),
    ],
)
def test_verdict_rules(sp, integrity_ok, F, expected):
    from ionraman.screening.store import verdict

    rec = {"integrity_ok": integrity_ok, "mobile_ion": "Ag", "fingerprint": {"F_LF": F}, "transport": {"species": {"Ag": sp}}}
    assert verdict(rec) == expected


def test_store_accepts_task_keys_that_read_as_numbers(tmp_path):
    """A 16-hex-digit task key can consist of digits only ("6680909359854665"), or read as a
    float ("12e4…"); ase.db refuses such strings, so the store must still write and find them."""
    from ase import Atoms

    from ionraman.screening.store import ResultsStore

    store = ResultsStore(str(tmp_path / "r.db"))
    for key in ("6680909359854665", "12e4567890abcdef"):
        store.write_failed(key, "X", 300.0, "md", "test", Atoms("H"))
    assert {r["key"] for r in store.records(kind=None, status="failed")} == {"6680909359854665", "12e4567890abcdef"}
    store.write_failed("6680909359854665", "X", 300.0, "md", "again", Atoms("H"))  # replaces its row
    assert store.count(status="failed") == 2
