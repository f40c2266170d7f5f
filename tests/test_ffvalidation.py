"""Force-field validation against DFT: energy alignment, error statistics, real CP2K forces, the CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from ionraman.ffvalidation import ENERGY_KEY, FORCES_KEY, align_energies, force_errors, sample_frames

HAVE_CP2K = any(shutil.which(b) for b in ("cp2k.psmp", "cp2k.popt", "cp2k"))


def _labelled(frames: list[Atoms], calc, e_shift_per_el: dict[str, float], f_noise: float = 0.0, seed: int = 0) -> list[Atoms]:
    """'DFT' labels from ``calc`` with a per-element energy shift and optional force noise (eV/Å)."""
    rng = np.random.default_rng(seed)
    out = []
    for a in frames:
        b = a.copy()
        b.calc = calc
        e = b.get_potential_energy() + sum(e_shift_per_el[s] for s in b.get_chemical_symbols())
        f = b.get_forces() + rng.normal(scale=f_noise, size=(len(b), 3))
        b.calc = None
        b.info[ENERGY_KEY] = float(e)
        b.arrays[FORCES_KEY] = f
        out.append(b)
    return out


def _alloys(n: int) -> list[Atoms]:
    frames = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        a.symbols[: 1 + k % 3] = "Au"  # three compositions, so per-element offsets are identifiable
        a.rattle(0.05, seed=k)
        frames.append(a)
    return frames


def test_align_energies_recovers_per_element_offsets_exactly():
    frames = _labelled(_alloys(6), EMT(), {"Cu": -1234.5, "Au": 77.25})
    e_model = []
    for a in frames:
        b = a.copy()
        b.calc = EMT()
        e_model.append(b.get_potential_energy())
    resid, delta = align_energies(frames, np.array(e_model))
    assert math.isclose(delta["Cu"], -1234.5, abs_tol=1e-8) and math.isclose(delta["Au"], 77.25, abs_tol=1e-8)
    assert np.abs(resid).max() < 1e-8


def test_force_errors_are_the_added_noise_and_energy_error_vanishes_after_alignment():
    noise = 0.05  # eV/Å per component
    frames = _labelled(_alloys(9), EMT(), {"Cu": -100.0, "Au": 3.0}, f_noise=noise)
    err, raw = force_errors(frames, EMT())
    assert err.n_frames == 9 and err.n_atoms == 9 * 8
    # RMSE of N(0, σ) samples: σ within sampling error (216 atoms × 3 components)
    assert err.force_rmse_meV_A == pytest.approx(1e3 * noise, rel=0.12)
    assert err.force_mae_meV_A == pytest.approx(1e3 * noise * math.sqrt(2 / math.pi), rel=0.12)
    assert err.energy_mae_meV_atom < 1e-6
    assert set(err.per_element) == {"Cu", "Au"} and raw["f_dft"].shape == raw["f_model"].shape == (72, 3)


def test_force_errors_without_labels_is_one_clear_sentence():
    from ionraman.errors import InputError

    with pytest.raises(InputError, match="label them first"):
        force_errors([bulk("Cu")], EMT())


def test_sample_frames_spaces_snapshots_evenly_and_refuses_too_many(tmp_path, emt):
    from ionraman.errors import InputError
    from ionraman.md import MDConfig, run_md
    from ionraman.trajectory import read_h5md

    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    run_md(a, emt, MDConfig(temperature_K=300, time_ps=0.2, equilibrate_ps=0.02, sample_every=5, timestep_fs=2), tmp_path / "t.h5")
    traj = read_h5md(tmp_path / "t.h5")
    got = sample_frames(traj, 4)
    times = [g.info["time_ps"] for g in got]
    assert len(got) == 4 and np.all(np.diff(times) > 0) and times[-1] == pytest.approx(traj.time_fs[-1] / 1000)
    assert np.ptp(np.diff(times)) < 0.011  # evenly spaced to within one frame (10 fs)
    with pytest.raises(InputError, match="fewer than the"):
        sample_frames(traj, traj.n_frames + 5)


def test_automatic_kpoint_mesh_follows_cell_widths():
    from ionraman.errors import InputError
    from ionraman.ffvalidation import auto_kpoints, parse_kpoints
    from ionraman.structures import load_structure

    small = load_structure("Na3SbS4-cubic", supercell="1x1x1").atoms  # a = 7.17 Å
    assert auto_kpoints(small) == (2, 2, 2)
    assert auto_kpoints(load_structure("Na3SbS4-cubic", supercell="1x2x1").atoms) == (2, 1, 2)
    assert auto_kpoints(load_structure("Na3SbS4-cubic", supercell="2x2x2").atoms) is None  # Γ
    assert parse_kpoints("gamma", small) is None and parse_kpoints("3x3x1", small) == (3, 3, 1)
    with pytest.raises(InputError, match="--kpoints"):
        parse_kpoints("2x2", small)


# --------------------------------------------------------------------------- real CP2K

FAST = dict(cutoff_ry=200, rel_cutoff_ry=30, eps_default=1e-10, eps_scf=1e-7)


@pytest.mark.cp2k
@pytest.mark.skipif(not HAVE_CP2K, reason="cp2k binary not found; install it with `make setup`")
def test_cp2k_forces_are_minus_the_energy_gradient(tmp_path):
    """F_x = −∂E/∂x by central differences of two more CP2K energies (h = 0.01 Å)."""
    from ionraman.polarizability.reference_cp2k import CP2KSettings, run_cp2k

    s = CP2KSettings(**FAST)
    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    a.positions[0] += [0.12, -0.05, 0.03]
    r0 = run_cp2k(a, s, tmp_path / "0", polarizability=False)
    assert r0.polarizability is None and r0.forces.shape == (8, 3)
    h = 0.01
    e = []
    for sign in (+1, -1):
        b = a.copy()
        b.positions[0, 0] += sign * h
        e.append(run_cp2k(b, s, tmp_path / f"d{sign}", polarizability=False).energy_eV)
    fd = -(e[0] - e[1]) / (2 * h)
    print(f"\nCP2K NaCl: F_x analytic {r0.forces[0, 0]:.5f} eV/Å, finite difference {fd:.5f} eV/Å")
    assert abs(r0.forces[0, 0]) > 0.1  # displaced atom feels a real restoring force
    assert r0.forces[0, 0] == pytest.approx(fd, rel=0.02, abs=2e-3)
    assert np.abs(r0.forces.sum(axis=0)).max() < 0.02  # Newton's third law (eV/Å)


@pytest.mark.cp2k
@pytest.mark.skipif(not HAVE_CP2K, reason="cp2k binary not found; install it with `make setup`")
def test_validate_ff_cli_end_to_end_on_nacl(tmp_path):
    from typer.testing import CliRunner

    from ionraman.cli import app

    out = tmp_path / "val"
    args = ["validate-ff", "NaCl", "--supercell", "1x1x1", "--temperatures", "300,600", "--time", "0.1",
            "--equilibrate", "0.02", "--frames", "1", "--cutoff-ry", "200", "--kpoints", "2x2x2", "-o", str(out), "--json",
            "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout[r.stdout.index("{"):])
    assert d["forcefield"] == "chgnet" and d["n_frames"] == 2 and d["dft"]["kpoints"] == "Monkhorst-Pack 2x2x2"
    assert set(d["integrity"]) == {"300", "600"} and all(v["ok"] for v in d["integrity"].values())
    # CHGNet on thermal NaCl against PBE: a real, nonzero and not absurd error
    assert 2 < d["force_rmse_meV_A"] < 300 and set(d["per_element"]) == {"Na", "Cl"}
    assert (out / "parity.png").stat().st_size > 1000 and (out / "dft_labels.xyz").exists()
    # resumable: a rerun finds the MD and the labels and does no new DFT
    mtime = (out / "dft_labels.xyz").stat().st_mtime
    r2 = CliRunner().invoke(app, args)
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout[r2.stdout.index("{"):])["force_rmse_meV_A"] == pytest.approx(d["force_rmse_meV_A"], rel=1e-6)
    assert (out / "dft_labels.xyz").stat().st_mtime == mtime
