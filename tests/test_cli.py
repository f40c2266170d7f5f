"""The command line as a user meets it: JSON keys, files written, one-sentence errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ionraman.cli import app
from ionraman.polarizability.model import CV_DESCRIPTOR_GRID

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_structures_json_lists_candidates_confirmed_by_spglib():
    import spglib
    from pymatgen.core import Structure

    r = _run("structures", "--json")
    assert r.exit_code == 0, r.output
    items = json.loads(r.stdout)
    names = {i["name"] for i in items}
    assert {"Na3SbS4-cubic", "Na3SbS4-tetragonal", "NaCl", "AgI-alpha", "Li10GeP2S12"} <= names
    for i in items:
        assert {"name", "formula", "spacegroup_number", "mobile_ion", "path", "source"} <= set(i)
        s = Structure.from_file(i["path"])
        if s.is_ordered:
            cell = (s.lattice.matrix, s.frac_coords, [site.specie.Z for site in s])
            assert spglib.get_symmetry_dataset(cell, symprec=1e-3).number == i["spacegroup_number"], i["name"]


def test_build_json_w_doped(tmp_path):
    out = tmp_path / "x.extxyz"
    r = _run("build", "Na3SbS4-cubic", "--supercell", "2x2x2", "--substitute", "Sb:W:0.125", "--seed", "1", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["formula"] == "Na46Sb14W2S64" and d["n_atoms"] == 126
    assert d["vacancies"] == {"Na": 2} and d["substitutions"] == {"Sb->W": 2} and d["seed"] == 1
    import ase.io

    a = ase.io.read(out)
    assert len(a) == 126 and a.get_chemical_symbols().count("W") == 2


def test_md_diffusion_export_end_to_end(tmp_path):
    """A real (tiny) CHGNet run through the CLI, then the analysis commands on its file."""
    traj = tmp_path / "t.h5"
    r = _run("md", "NaCl", "-T", "300", "--time", "0.2", "--equilibrate", "0.02", "--no-progress", "-o", traj)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and traj.exists()
    r = _run("diffusion", traj, "--json", "--fit-start", "0.05", "--plot", tmp_path / "p")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    na = d["species"]["Na"]
    assert d["temperature_K"] == 300 and na["D_cm2_s"] >= 0 and na["D_err_cm2_s"] > 0
    assert na["n_hops"] == 0  # NaCl at 300 K does not conduct
    assert d["integrity"]["ok"] is True
    assert (tmp_path / "p_msd.png").stat().st_size > 1000
    r = _run("export", traj, "-o", tmp_path / "last.xyz", "--last")
    assert r.exit_code == 0, r.output
    import ase.io

    assert len(ase.io.read(tmp_path / "last.xyz", index=":")) == 1


@pytest.mark.parametrize(
    "args,msg",
    [
        (("md", "NoSuchCrystal", "-T", "300", "-o", "x.h5"), "neither a file nor a built-in structure"),
        (("md", "NaCl", "-T", "-20", "-o", "x.h5"), "positive temperature"),
        (("md", "NaCl", "-T", "300", "--supercell", "2x2", "-o", "x.h5"), "--supercell"),
        (("diffusion", "missing.h5"), "no such file"),
        (("build", "NaCl", "--vacancies", "Na:100", "-o", "x.xyz"), "only 4 such sites"),
        (("fingerprint", "missing.csv"), "missing.csv"),
    ],
)
def test_bad_input_is_one_sentence(tmp_path, monkeypatch, args, msg):
    monkeypatch.chdir(tmp_path)
    r = _run(*args)
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.stderr
    assert "Traceback" not in r.output


def test_bad_cif_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("data_broken\n_cell_length_a 5.0\n")
    r = _run("build", bad, "-o", tmp_path / "o.xyz")
    assert r.exit_code == 2 and "bad.cif: could not be read as a CIF" in r.stderr


def test_too_short_trajectory_for_diffusion(tmp_path):
    from ionraman.trajectory import H5MDWriter

    p = tmp_path / "short.h5"
    with H5MDWriter(p, numbers=np.array([11, 17]), metadata={"temperature_K": 300.0, "mobile_ion": "Na"}) as w:
        for i in range(3):
            w.append(i, i * 10.0, np.array([[0, 0, 0], [2.8, 0, 0]]) + 0.01 * i, np.eye(3) * 5.64)
    r = _run("diffusion", p, "--fit-start", "1.0")
    assert r.exit_code == 2 and "short.h5" in r.stderr, r.stderr


def test_raman_and_fingerprint_on_synthetic_series(tmp_path):
    """ionraman raman/fingerprint on an α(t) with a known 300 cm⁻¹ line and a Debye central peak."""
    rng = np.random.default_rng(0)
    dt_fs, n = 4.0, 2**15
    t = np.arange(n) * dt_fs
    c = 2.99792458e-5  # cm/fs
    tau_fs = 200.0
    ou = np.zeros(n)
    a = np.exp(-dt_fs / tau_fs)
    for k in range(1, n):
        ou[k] = a * ou[k - 1] + np.sqrt(1 - a * a) * rng.normal()
    alpha = np.zeros((n, 3, 3))
    alpha[:, 0, 0] = 100 + 0.5 * np.cos(2 * np.pi * 300 * c * t)
    alpha[:, 1, 1] = 100 - 0.5 * np.cos(2 * np.pi * 300 * c * t)
    alpha[:, 0, 1] = alpha[:, 1, 0] = 0.3 * ou
    np.save(tmp_path / "a.npy", alpha)
    r = _run("raman", tmp_path / "a.npy", "--dt-fs", dt_fs, "-T", "300", "-o", tmp_path / "s.csv", "--segments", "16",
             "--max-frequency", "800", "--plot", tmp_path / "s.png", "--json")
    assert r.exit_code == 0, r.output

    from ionraman.raman import RamanSpectrum

    s = RamanSpectrum.from_csv(tmp_path / "s.csv")
    vh = s.channel("VH")
    band = (s.frequency_cm1 > 150) & (s.frequency_cm1 < 800)
    assert abs(s.frequency_cm1[band][np.argmax(vh[band])] - 300) <= 2 * (s.frequency_cm1[1] - s.frequency_cm1[0])
    r = _run("fingerprint", tmp_path / "s.csv", "--json", "--channel", "VH")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert 0 < d["F_LF"] < 1 and d["F_LF_err"] > 0 and d["cutoff_cm1"] == 100
    # Debye relaxation of the off-diagonal part: HWHM = 1/(2π c τ) = 26.5 cm⁻¹
    assert d["central_peak_width_cm1"] == pytest.approx(1 / (2 * np.pi * c * tau_fs), rel=0.2)


def test_diffusion_json_agrees_with_independent_msd_from_file(tmp_path):
    """D from `ionraman diffusion --json` vs a plain-numpy MSD read straight from the H5MD datasets."""
    import h5py

    from ionraman.trajectory import H5MDWriter

    rng = np.random.default_rng(11)
    n_na, n_cl, n_frames, dt_fs = 40, 40, 1500, 10.0
    D_true_A2_fs = 1e-4  # 1e-5 cm²/s
    cell = np.eye(3) * 12.0
    step = rng.normal(scale=np.sqrt(2 * D_true_A2_fs * dt_fs), size=(n_frames, n_na, 3))
    na = rng.uniform(0, 12, size=(n_na, 3)) + np.cumsum(step, axis=0)
    cl = rng.uniform(0, 12, size=(n_cl, 3)) + rng.normal(scale=0.05, size=(n_frames, n_cl, 3))
    p = tmp_path / "rw.h5"
    with H5MDWriter(p, numbers=np.array([11] * n_na + [17] * n_cl), metadata={"temperature_K": 600.0, "mobile_ion": "Na"}) as w:
        for k in range(n_frames):
            w.append(k, k * dt_fs, np.vstack([na[k], cl[k]]), cell)
    r = _run("diffusion", p, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["species"]["Na"]
    # independent: unwrap from the raw datasets, MSD over all origins at the same fit window
    with h5py.File(p) as f:
        x = f["particles/all/position/value"][()] + f["particles/all/image/value"][()] @ cell
    x = x[:, :n_na] - x[:, :].mean(axis=1, keepdims=True)  # COM of all atoms removed (equal masses not needed: drift ≈ 0)
    lags = np.arange(int(d["fit_start_ps"] * 100), int(d["fit_stop_ps"] * 100) + 1, 10)
    msd = np.array([((x[k:] - x[:-k]) ** 2).sum(axis=2).mean() for k in lags])
    slope = np.polyfit(lags * dt_fs, msd, 1)[0]
    D_indep = slope / 6 * 1e-16 / 1e-15  # Å²/fs → cm²/s
    assert abs(d["D_cm2_s"] - D_indep) < 3 * d["D_err_cm2_s"] + 0.05 * D_indep
    assert abs(d["D_cm2_s"] - 1e-5) < 3 * d["D_err_cm2_s"]


def test_compare_json_same_pipeline_for_both(tmp_path):
    from pathlib import Path

    exp = Path(__file__).parent / "data" / "experiment" / "comma_header.csv"
    r = _run("compare", exp, exp, "--temperature", "300", "--json", "--plot", tmp_path / "cmp.png")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["cutoff_cm1"] == 100
    for side in ("experiment", "simulation"):
        assert 0 < d[side]["F_LF"] < 1
    assert d["experiment"]["F_LF_err"] > 0  # noise estimated from the measured spectrum
    assert d["simulation"]["F_LF_err"] is None  # a plain two-column file carries no error information
    # the same data through the same pipeline: the fingerprints agree
    assert abs(d["experiment"]["F_LF"] - d["simulation"]["F_LF"]) < 0.02
    assert (tmp_path / "cmp.png").stat().st_size > 2000
    r = _run("compare", tmp_path / "nope.csv", exp, "-T", "300")
    assert r.exit_code == 2 and "nope.csv" in r.stderr


def test_models_json_lists_shipped_models_with_test_errors():
    r = _run("models", "--json")
    assert r.exit_code == 0, r.output
    items = json.loads(r.stdout)
    names = {i["name"] for i in items}
    assert {"lsoap-cp2k", "bond-default"} <= names
    for i in items:
        assert {"name", "candidates", "engine", "settings", "n_labels", "dataset", "test"} <= set(i)
        assert i["engine"] == "cp2k" and i["n_labels"] >= 20  # a family model needs 20 labels of its main dataset
        if i["dataset"]:
            assert Path(i["dataset"]).exists() and all(Path(p).exists() for p in i["datasets"])
        assert i["test"]["iso_rel_rmse"] > 0 and i["test"]["aniso_rel_rmse"] > 0
    from ionraman.polarizability.registry import resolve_model
    from ionraman.structures import load_structure

    s = load_structure("Na3SbS4-cubic")
    model, info = resolve_model("auto", "Na3SbS4-cubic", s.atoms)
    assert info["name"] == "lsoap-Na3SbS4"  # the family model trained on its own CP2K labels
    alpha = model.predict([s.atoms])[0]
    # the ideal cubic cell: isotropic tensor close to the CP2K label of the ideal-like frames (≈ 62 Å³)
    assert abs(alpha[0, 0] - alpha[1, 1]) < 1e-6 and 55 < np.trace(alpha) / 3 < 70


def test_train_json_and_parity_plot(tmp_path, shared_data):
    import ase.io

    frames = ase.io.read(shared_data / "polarizability" / "SiO2_qe_pbe_finite_field.xyz", index=":30")
    data = tmp_path / "sio2.xyz"
    ase.io.write(data, frames, format="extxyz")
    r = _run("train", data, "-o", tmp_path / "m.npz", "--parity", tmp_path / "parity.png", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert d["n_train"] == 24 and d["n_test"] == 6
    assert [c["n_train"] for c in d["learning_curve"]] == [6, 12, 24]
    assert d["descriptor"]["cutoff_A"] in {g["cutoff_A"] for g in CV_DESCRIPTOR_GRID}  # chosen by CV
    assert 0 < d["test"]["rel_rmse_iso"] < 1 and np.isfinite(d["test"]["rmse_aniso_A3"])
    assert (tmp_path / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
