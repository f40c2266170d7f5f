"""CP2K reference labels: input, parsing a stored real output, resumable labelling, one real run."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ionraman.errors import InputError, SimulationError
from ionraman.polarizability import reference_cp2k as rc
from ionraman.polarizability.dataset import epsilon_from_alpha, get_alpha, read_labelled
from ionraman.polarizability.reference_cp2k import (
    CP2KError,
    CP2KNotFoundError,
    CP2KSettings,
    check_output,
    find_cp2k,
    find_data_dir,
    label_frame,
    label_frames,
    label_hash,
    parse_energy,
    parse_forces,
    parse_polarizability,
    parse_version,
    resolve_kinds,
    settings_of_frame,
    write_input,
)

DATA = Path(__file__).parent / "data"
PROJECT_ELEMENTS = ["Na", "Sb", "S", "P", "Se", "Ag", "I", "Li", "Ge", "Cl", "W", "Si", "O"]

needs_data = pytest.mark.skipif(find_data_dir() is None, reason="CP2K data files (Debian cp2k-data) not installed; run `make setup`")
HAVE_CP2K = any(shutil.which(b) for b in rc.CP2K_BINARIES)


def nacl(cubic: bool = True) -> Atoms:
    return bulk("NaCl", "rocksalt", a=5.64, cubic=cubic)


def _names_declared(path: Path, element: str) -> set[str]:
    """Basis/potential names declared for an element in a CP2K data file (independent scan)."""
    names: set[str] = set()
    for line in path.read_text(errors="replace").splitlines():
        tok = line.split()
        if len(tok) >= 2 and tok[0].lower() == element.lower():
            names.update(tok[1:])
    return names


# --------------------------------------------------------------------------- settings and input


def test_settings_round_trip_and_hashable():
    s = CP2KSettings(valence={"Li": 1}, kinds={"W": ("DZVP-MOLOPT-PBE-GTH-q14", "GTH-PBE-q14")}, cutoff_ry=250)
    d = json.loads(json.dumps(s.to_dict()))
    assert CP2KSettings.from_dict(d) == s
    assert hash(s) == hash(CP2KSettings.from_dict(d))
    assert s.valence_map["Li"] == 1 and s.valence_map["Na"] == 1  # Na q1 by default
    assert "mpi_ranks" not in s.physics_dict()
    with pytest.raises(InputError, match="unknown field"):
        CP2KSettings.from_dict({"cutof": 3})
    with pytest.raises(InputError):
        CP2KSettings(mpi_ranks=0)


@needs_data
def test_input_has_the_polarizability_sections(tmp_path):
    s = CP2KSettings()
    inp = write_input(nacl(), s, tmp_path).read_text()
    for line in [
        "RUN_TYPE ENERGY_FORCE",
        "BASIS_SET_FILE_NAME BASIS_MOLOPT_UZH",
        "POTENTIAL_FILE_NAME POTENTIAL_UZH",
        "CUTOFF 300",
        "REL_CUTOFF 40",
        "EPS_SCF 1.0E-06",
        "&XC_FUNCTIONAL PBE",
        "&PROPERTIES",
        "&LINRES",
        "EPS 1.0E-06",
        "&POLAR",
        "PERIODIC_DIPOLE_OPERATOR T",
        "&POLAR_MATRIX",
        "&FORCES ON",
        "PERIODIC XYZ",
        "&KIND Na",
        "BASIS_SET DZVP-MOLOPT-PBE-GTH-q1",
        "POTENTIAL GTH-PBE-q1",  # Na q1, not the semicore q9
        "BASIS_SET DZVP-MOLOPT-PBE-GTH-q7",
        "POTENTIAL GTH-PBE-q7",
    ]:
        assert re.search(rf"^\s*{re.escape(line)}\s*$", inp, re.M), line
    assert "q9" not in inp
    assert inp.count("&COORD") == 1 and len(re.findall(r"^\s+(Na|Cl) ", inp, re.M)) == 8
    # sections balanced
    opens = re.findall(r"^\s*&(?!END)(\w+)", inp, re.M)
    closes = re.findall(r"^\s*&END (\w+)", inp, re.M)
    assert sorted(opens) == sorted(closes)
    with pytest.raises(InputError, match="pbc"):
        write_input(Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]], cell=[10, 10, 10], pbc=False), s, tmp_path)



def test_energy_force_input_without_linres_and_with_kpoints(tmp_path):
    """Force-field validation runs: no linear response; a k-point mesh switches OT for diagonalisation."""
    inp = write_input(nacl(), CP2KSettings(), tmp_path / "g", polarizability=False).read_text()
    assert "&LINRES" not in inp and "&PROPERTIES" not in inp and "&FORCES ON" in inp and "&OT" in inp
    k = CP2KSettings(kpoints=(2, 2, 3))
    inp = write_input(nacl(), k, tmp_path / "k", polarizability=False).read_text()
    assert re.search(r"^\s*SCHEME MONKHORST-PACK 2 2 3\s*$", inp, re.M)
    assert "&OT" not in inp and "&DIAGONALIZATION" in inp and "BROYDEN_MIXING" in inp
    opens = re.findall(r"^\s*&(?!END)(\w+)", inp, re.M)
    assert sorted(opens) == sorted(re.findall(r"^\s*&END (\w+)", inp, re.M))
    with pytest.raises(InputError, match="needs the Γ point"):
        write_input(nacl(), k, tmp_path / "p")
    # Γ written as a mesh is Γ; the label hash of Γ settings does not depend on the new field
    assert CP2KSettings(kpoints=(1, 1, 1)) == CP2KSettings() and "kpoints" not in CP2KSettings().physics_dict()
    assert CP2KSettings.from_dict(k.to_dict()) == k
    with pytest.raises(InputError, match="three positive integers"):
        CP2KSettings(kpoints=(2, 0, 1))

@needs_data
def test_every_project_element_has_a_basis_and_potential():
    s = CP2KSettings()
    kinds = resolve_kinds(PROJECT_ELEMENTS, s)
    data = find_data_dir(s)
    assert kinds["Na"] == ("DZVP-MOLOPT-PBE-GTH-q1", "GTH-PBE-q1")
    for el, (basis, pot) in kinds.items():
        assert basis in _names_declared(data / s.basis_file, el), (el, basis)
        assert pot in _names_declared(data / s.potential_file, el), (el, pot)
        assert basis.startswith("DZVP-MOLOPT-PBE-GTH-") and basis.rsplit("-", 1)[1] == pot.rsplit("-", 1)[1]


@needs_data
def test_missing_basis_or_potential_is_a_clear_error():
    with pytest.raises(InputError, match=r"element Na: basis set DZVP-MOLOPT-PBE-GTH-q3 .*valence"):
        resolve_kinds(["Na", "Cl"], CP2KSettings(valence={"Na": 3}))
    with pytest.raises(InputError, match="element Og"):
        resolve_kinds(["Og"], CP2KSettings())


def test_missing_cp2k_says_how_to_install(monkeypatch):
    with pytest.raises(CP2KNotFoundError, match="make setup"):
        find_cp2k(CP2KSettings(executable="cp2k-that-does-not-exist"))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CP2KNotFoundError, match="make setup"):
        find_cp2k(CP2KSettings())


# --------------------------------------------------------------------------- parsing a stored real output
# tests/data/cp2k_nacl_rattled.out: excerpt of CP2K 2023.1 (Debian) run with the default
# CP2KSettings on 2 MPI ranks for the 8-atom NaCl cell in tests/data/cp2k_nacl_rattled.xyz
# (a = 5.64 Å, rattled by 0.05 Å).



def test_parse_stored_cp2k_output():
    text = (DATA / "cp2k_nacl_rattled.out").read_text()
    check_output(text)  # converged, ended
    alpha = parse_polarizability(text)
    assert alpha.shape == (3, 3)
    # a.u. block × a0³ equals the Å³ block CP2K prints
    au = re.search(r"Polarizability tensor \[a\.u\.\]\s*\n\s*POLAR\| xx,yy,zz\s+(\S+)\s+(\S+)\s+(\S+)", text).groups()
    a3 = re.search(r"Polarizability tensor \[ang\^3\]\s*\n\s*POLAR\| xx,yy,zz\s+(\S+)\s+(\S+)\s+(\S+)", text).groups()
    assert np.allclose(np.diag(alpha), np.array(au, float) * 0.529177210903**3, rtol=1e-12)
    assert np.allclose(np.diag(alpha), np.array(a3, float), rtol=1e-6)
    assert 9.8 < alpha[0, 0] < 9.9 and abs(alpha[0, 1]) < 0.02
    atoms = read_labelled(DATA / "cp2k_nacl_rattled.xyz", require=False)[0]
    eps = epsilon_from_alpha(alpha, atoms.get_volume())
    assert 1.6 < eps[0, 0] < 1.75  # DZVP, Γ point, 8 atoms: well below experiment (2.3–2.5)
    e = parse_energy(text)
    assert math.isclose(e, -61.240866576117085 * 27.211386245988, rel_tol=1e-6)
    f = parse_forces(text, len(atoms))
    assert f.shape == (8, 3)
    assert math.isclose(f[0, 0], -0.00149731 * 27.211386245988 / 0.529177210903, rel_tol=1e-5)
    assert np.abs(f.sum(0)).max() < 1e-3  # momentum conservation
    assert parse_version(text) == "CP2K version 2023.1"


def test_parse_failures_are_reported():
    text = (DATA / "cp2k_nacl_rattled.out").read_text()
    nan = re.sub(r"(POLAR\| xx,yy,zz\s+)\S+", r"\1NaN", text)
    with pytest.raises(CP2KError, match="NaN"):
        parse_polarizability(nan)
    with pytest.raises(CP2KError, match="LINRES"):
        check_output(text.replace("The linear solver converged in   10 iterations.", "The linear solver didn't converge! Maximum number of iterations reached."))
    with pytest.raises(CP2KError, match="SCF"):
        check_output(text.replace("*** SCF run converged in    29 steps ***", "*** WARNING in qs_scf.F:601 :: SCF run NOT converged ***"))
    with pytest.raises(CP2KError, match="PROGRAM ENDED"):
        check_output(text.split("ENDED LINRES")[0])
    aborted = text + (
        " *******************************************************************************\n"
        " *   ___                                                                       *\n"
        " *  /   \\                                                                      *\n"
        " * [ABORT]                                                                     *\n"
        " *  \\___/  The requested basis set <NOPE-q7> for element <Cl> was not found in *\n"
        " *    |                   the basis set files <BASIS_MOLOPT_UZH>               *\n"
        " *  O/|                                                                        *\n"
        " * /| |                                                                        *\n"
        " * / \\                                          aobasis/basis_set_types.F:1509 *\n"
        " *******************************************************************************\n"
    )
    with pytest.raises(CP2KError, match=r"basis set <NOPE-q7> for element <Cl> was not found"):
        check_output(aborted)
    a3_line = re.search(r"(Polarizability tensor \[ang\^3\]\s*\n\s*POLAR\| xx,yy,zz\s+)(\S+)", text)
    bad = text[: a3_line.start(2)] + "12.000000000000" + text[a3_line.end(2) :]
    with pytest.raises(CP2KError, match="disagrees"):
        parse_polarizability(bad)
    assert issubclass(CP2KError, SimulationError)


# --------------------------------------------------------------------------- settings reuse and hashes


def test_relabelling_reuses_the_frames_settings():
    old = CP2KSettings(cutoff_ry=400, valence={"Li": 1})
    a = nacl()
    a.info["polarizability_source"] = "cp2k"
    a.info["polarizability_settings"] = json.dumps({"engine": "cp2k", "cp2k_version": "x", "settings": old.physics_dict()})
    assert settings_of_frame(a) == old.replace(mpi_ranks=None)
    eff = rc.effective_settings(a, CP2KSettings(mpi_ranks=1))
    assert eff.cutoff_ry == 400 and eff.valence_map["Li"] == 1 and eff.mpi_ranks == 1
    assert rc.effective_settings(a, CP2KSettings(), reuse_settings=False).cutoff_ry == 300
    b = nacl()
    assert label_hash(a, old) != label_hash(b, CP2KSettings())
    assert label_hash(b, CP2KSettings()) == label_hash(b, CP2KSettings(mpi_ranks=7))  # execution does not matter
    c = b.copy()
    c.positions[0, 0] += 1e-4
    assert label_hash(c, CP2KSettings()) != label_hash(b, CP2KSettings())


# --------------------------------------------------------------------------- resumable labelling (fake labeller)


class Killed(BaseException):
    """Simulates the labelling process being killed (not an ordinary, recorded failure)."""


def fake_labeller(atoms: Atoms, settings: CP2KSettings, workdir: Path) -> Atoms:
    """Cheap deterministic stand-in for CP2K; logs each finished label, obeys control files."""
    root = workdir.parent
    calls = root / "calls.log"
    n_done = len(calls.read_text().splitlines()) if calls.exists() else 0
    kill_after = root / "kill_after"
    if kill_after.exists() and n_done >= int(kill_after.read_text()):
        raise Killed()
    fail = root / "fail_index"
    if fail.exists() and int(atoms.info["index"]) == int(fail.read_text()):
        raise ValueError("SCF did not converge (simulated)")
    out = atoms.copy()
    out.info["polarizability"] = np.diag([atoms.positions.sum(), 1.0, float(atoms.info["index"])])
    out.info["polarizability_source"] = "fake"
    with open(calls, "a") as fh:
        fh.write(f"{atoms.info['index']}\n")
    return out


def _frames(n: int = 6) -> list[Atoms]:
    frames = []
    for k in range(n):
        a = nacl()
        a.rattle(0.05, seed=k)
        a.info["index"] = k
        frames.append(a)
    return frames


def test_label_frames_is_resumable(tmp_path):
    frames = _frames(6)
    out = tmp_path / "labels.xyz"
    work = tmp_path / "runs"
    work.mkdir()
    (work / "kill_after").write_text("3")
    with pytest.raises(Killed):
        label_frames(frames, CP2KSettings(), out, work, executor="serial", progress=False, labeller=fake_labeller)
    saved = read_labelled(out)
    assert [int(a.info["index"]) for a in saved] == [0, 1, 2]  # each finished label is on disk
    (work / "kill_after").unlink()
    res = label_frames(frames, CP2KSettings(), out, work, executor="serial", progress=False, labeller=fake_labeller)
    assert res.skipped == [0, 1, 2] and res.labelled == [3, 4, 5] and not res.failed
    calls = [int(x) for x in (work / "calls.log").read_text().split()]
    assert sorted(calls) == list(range(6))  # nothing computed twice
    final = read_labelled(out)
    assert [int(a.info["index"]) for a in final] == list(range(6))  # input order, no duplicates
    for a, f in zip(final, frames):
        assert np.allclose(get_alpha(a), np.diag([f.positions.sum(), 1.0, f.info["index"]]), atol=1e-6)
        assert a.info["label_hash"] == label_hash(f, CP2KSettings())
    # a third run does nothing
    again = label_frames(frames, CP2KSettings(), out, work, executor="serial", progress=False, labeller=fake_labeller)
    assert again.labelled == [] and len(again.skipped) == 6
    assert len((work / "calls.log").read_text().split()) == 6


def test_failed_frame_is_recorded_and_the_rest_goes_on(tmp_path):
    frames = _frames(4)
    out = tmp_path / "labels.xyz"
    work = tmp_path / "runs"
    work.mkdir()
    (work / "fail_index").write_text("1")
    res = label_frames(frames, None, out, work, executor=2, progress=False, labeller=fake_labeller)  # Dask, 2 workers
    assert sorted(res.labelled) == [0, 2, 3] and list(res.failed) == [1]
    assert "SCF did not converge" in res.failed[1]
    failed = json.loads(out.with_name(out.name + ".failed.json").read_text())
    assert failed["1"]["reason"].startswith("ValueError")
    assert len(read_labelled(out)) == 3
    (work / "fail_index").unlink()
    res2 = label_frames(frames, None, out, work, executor="serial", progress=False, labeller=fake_labeller)
    assert res2.labelled == [1] and sorted(res2.skipped) == [0, 2, 3]
    assert [int(a.info["index"]) for a in read_labelled(out)] == [0, 1, 2, 3]
    assert not out.with_name(out.name + ".failed.json").exists()


def _chain_labeller(atoms: Atoms, settings: CP2KSettings, workdir: Path) -> Atoms:
    """Records which wavefunction each frame started from and leaves its own behind, like CP2K."""
    guess = workdir / rc.GUESS_WFN
    started = guess.read_text() if guess.exists() else "atomic"
    (workdir / "cp2k-RESTART.wfn").write_text(f"wfn of {atoms.info['index']}")
    out = atoms.copy()
    out.info["polarizability"] = np.eye(3)
    out.info["started_from"] = started
    return out


def test_chain_guess_hands_each_frame_the_previous_wavefunction(tmp_path):
    frames = _frames(3)
    out = tmp_path / "labels.xyz"
    res = label_frames(frames, None, out, tmp_path / "runs", executor="serial", progress=False,
                       labeller=_chain_labeller, chain_guess=True)
    assert res.labelled == [0, 1, 2]
    assert [a.info["started_from"] for a in read_labelled(out)] == ["atomic", "wfn of 0", "wfn of 1"]
    # frames of different composition never share a wavefunction
    mixed = _frames(2) + [bulk("Cu", cubic=True)]
    mixed[2].info["index"] = 2
    res = label_frames(mixed, None, tmp_path / "m.xyz", tmp_path / "runs2", executor="serial", progress=False,
                       labeller=_chain_labeller, chain_guess=True)
    assert [a.info["started_from"] for a in read_labelled(tmp_path / "m.xyz")] == ["atomic"] * 3


def test_chain_guess_labels_each_md_run_in_time_order(tmp_path):
    frames = _frames(4)
    # farthest-point order: runs and times interleaved
    for a, (src, k) in zip(frames, [("t900.h5", 50), ("t300.h5", 10), ("t900.h5", 20), ("t300.h5", 5)]):
        a.info.update(source=src, frame=k)
    out = tmp_path / "labels.xyz"
    label_frames(frames, None, out, tmp_path / "runs", executor="serial", progress=False,
                 labeller=_chain_labeller, chain_guess=True)
    got = {int(a.info["index"]): a.info["started_from"] for a in read_labelled(out)}
    # labelled 3 (t300 frame 5) → 1 (t300 frame 10) → 2 (t900 frame 20) → 0 (t900 frame 50)
    assert got == {3: "atomic", 1: "wfn of 3", 2: "wfn of 1", 0: "wfn of 2"}
    # the file is still in input order
    assert [int(a.info["index"]) for a in read_labelled(out)] == [0, 1, 2, 3]


def test_input_with_a_wavefunction_guess(tmp_path):
    text = rc.write_input(nacl(), CP2KSettings(), tmp_path, wfn_guess=rc.GUESS_WFN).read_text()
    assert "SCF_GUESS RESTART" in text and f"WFN_RESTART_FILE_NAME {rc.GUESS_WFN}" in text
    plain = rc.write_input(nacl(), CP2KSettings(), tmp_path / "b").read_text()
    assert "SCF_GUESS ATOMIC" in plain and "WFN_RESTART_FILE_NAME" not in plain


# --------------------------------------------------------------------------- one real CP2K run

#: measured once (CP2K 2023.1 Debian, 2 MPI ranks): ideal 8-atom NaCl, a = 5.64 Å, with
#: the fast settings below: α = 9.7506 Å³ (ε∞ = 1.683), ~45 s on 2 cores
MEASURED_ALPHA_A3 = 9.7506
FAST = dict(cutoff_ry=200, rel_cutoff_ry=30, eps_default=1e-8, linres_eps=1e-5)


@pytest.mark.cp2k
@pytest.mark.skipif(not HAVE_CP2K, reason="cp2k binary not found (cp2k.psmp/cp2k.popt/cp2k); install it with `make setup`")
def test_real_cp2k_run_on_nacl(tmp_path):
    atoms = nacl()
    t0 = time.perf_counter()
    lab = label_frame(atoms, CP2KSettings(**FAST), tmp_path)
    wall = time.perf_counter() - t0
    alpha = get_alpha(lab)
    eps = epsilon_from_alpha(alpha, atoms.get_volume())
    print(f"\nCP2K NaCl 8 atoms: alpha diag {np.diag(alpha)} A^3, eps_inf {np.diag(eps)}, wall {wall:.1f} s")
    d = np.diag(alpha)
    assert np.ptp(d) / d.mean() < 0.01  # cubic: xx = yy = zz
    assert np.abs(alpha - np.diag(d)).max() < 0.01 * d.mean()
    assert np.all((eps.diagonal() > 1.5) & (eps.diagonal() < 3.5))
    assert math.isclose(d.mean(), MEASURED_ALPHA_A3, rel_tol=0.01)
    assert lab.info["polarizability_source"] == "cp2k"
    meta = json.loads(lab.info["polarizability_settings"])
    assert meta["kinds"]["Na"] == ["DZVP-MOLOPT-PBE-GTH-q1", "GTH-PBE-q1"] and meta["cp2k_version"].startswith("CP2K version")
    assert CP2KSettings.from_dict(meta["settings"]).cutoff_ry == 200
    assert math.isclose(lab.info["energy_eV"], -1666.47, abs_tol=0.1)
    assert lab.arrays["forces_dft"].shape == (8, 3) and np.abs(lab.arrays["forces_dft"]).max() < 0.01  # ideal lattice
    assert lab.info["label_hash"] == label_hash(atoms, CP2KSettings(**FAST))


@pytest.mark.cp2k
@pytest.mark.slow
@pytest.mark.skipif(not HAVE_CP2K, reason="cp2k binary not found (cp2k.psmp/cp2k.popt/cp2k); install it with `make setup`")
def test_real_chain_guess_gives_the_same_label_in_fewer_scf_steps(tmp_path):
    """Two NaCl frames 0.02 Å apart: the second from the first's wavefunction matches its cold-start label."""
    a = nacl()
    a.rattle(0.05, seed=1)
    b = a.copy()
    b.rattle(0.02, seed=2)
    s = CP2KSettings(**FAST)
    cold = label_frame(b, s, tmp_path / "cold")
    steps = lambda d: sum(int(m) for m in re.findall(r"SCF run converged in\s+(\d+) steps", (d / "cp2k.out").read_text()))  # noqa: E731
    label_frame(a, s, tmp_path / "a")
    warm = label_frame(b, s, tmp_path / "warm", wfn_guess=tmp_path / "a" / "cp2k-RESTART.wfn")
    assert "SCF_GUESS RESTART" in (tmp_path / "warm" / "cp2k.inp").read_text()
    assert steps(tmp_path / "warm") < steps(tmp_path / "cold")
    assert np.abs(get_alpha(warm) - get_alpha(cold)).max() < 1e-3 * np.trace(get_alpha(cold)) / 3
    assert warm.info["label_hash"] == cold.info["label_hash"]
