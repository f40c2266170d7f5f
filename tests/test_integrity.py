from __future__ import annotations

import numpy as np
import pytest
from ase.spacegroup import crystal

from ionraman.errors import SimulationError
from ionraman.integrity import IntegrityMonitor, check_trajectory
from ionraman.trajectory import trajectory_from_atoms_list


@pytest.fixture(scope="module")
def cell():
    # cubic Na3SbS4 (I-43m), S on 8c with x = 0.1876 → Sb–S = √3·x·a ≈ 2.33 Å
    a = crystal(["Na", "Sb", "S"], basis=[(0, 0.5, 0.5), (0, 0, 0), (0.1876, 0.1876, 0.1876)], spacegroup=217,
                cellpar=[7.17] * 3 + [90] * 3)
    return a * (2, 2, 2)


def _sb_and_bonded_s(atoms):
    """The first Sb and one S bonded to it (indices)."""
    sb = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "Sb"][0]
    s_near = [j for j in range(len(atoms)) if atoms[j].symbol == "S" and atoms.get_distance(sb, j, mic=True) < 2.5][0]
    return sb, s_near


def test_reference_bonding_is_found(cell):
    m = IntegrityMonitor(cell, {"Na"})
    assert m.framework_cations == ["Sb"] and m.anions == ["S"]
    assert len(m.centres) == 16
    assert (m.initial_coord == 4).all()
    assert m.coord_cut == pytest.approx(1.2 * 2.33, abs=0.02)


def test_thermal_vibrations_stay_quiet(cell):
    rng = np.random.default_rng(0)
    m = IntegrityMonitor(cell, {"Na"})
    # each SbS4 unit moves as a whole (σ = 0.12 Å, ~700 K amplitudes) plus stiff
    # Sb–S bond vibrations (σ ≈ 0.05 Å: 400 cm⁻¹ stretch, k ≈ 15 eV/Å², kT at 800 K)
    unit = np.array([int(np.argmin([cell.get_distance(i, j, mic=True) if cell[j].symbol == "Sb" else 1e9
                                    for j in range(len(cell))])) if s == "S" else i
                     for i, s in enumerate(cell.get_chemical_symbols())])
    for k in range(20):
        a = cell.copy()
        rigid = rng.normal(scale=0.12, size=a.positions.shape)
        a.positions += rigid[unit] + rng.normal(scale=0.05, size=a.positions.shape)
        c = m.check(a, 0.1 * k)
        assert c.ok, m.failure(c)
    rep = m.report()
    assert rep.ok and rep.anion_anion_bonds_max == 0 and rep.framework_coordination_min == 4
    assert rep.framework_msd_max_A2 < 0.1


def test_s_s_dimer_is_flagged(cell):
    m = IntegrityMonitor(cell, {"Na"})
    a = cell.copy()
    s_idx = [i for i, s in enumerate(a.get_chemical_symbols()) if s == "S"]
    i, j = s_idx[0], s_idx[5]
    # put S j 2.1 Å from S i, pointing away from i's Sb (a persulfide-like dimer)
    d = a.get_distance(i, j, mic=True, vector=True)
    a.positions[j] = a.positions[i] + 2.1 * d / np.linalg.norm(d)
    c = m.check(a, 1.2)
    assert c.new_anion_bonds >= 1 and c.shortest_anion_pair_A == pytest.approx(2.1, abs=1e-6)
    with pytest.raises(SimulationError, match=r"t = 1.20 ps: 1 new S–S bond"):
        m.raise_if_broken(c, "t.h5")
    rep = m.report()
    assert not rep.ok and rep.first_failure_ps == 1.2


def test_broken_tetrahedron_is_flagged(cell):
    m = IntegrityMonitor(cell, {"Na"})
    a = cell.copy()
    sb, s_near = _sb_and_bonded_s(a)
    # pull one S 1.2 Å further out along the bond: Sb–S ≈ 3.5 Å > the 2.7 Å shell
    v = a.get_distance(sb, s_near, mic=True, vector=True)
    a.positions[s_near] += 1.2 * v / np.linalg.norm(v)
    c = m.check(a, 0.5)
    # one frame past the shell is a thermal stretch until it lasts a vibrational period
    assert c.coordination_min == 3 and c.coordination_changed == 0 and m.failure(c) is None
    c = m.check(a, 0.56)
    assert c.coordination_changed == 0
    c = m.check(a, 0.6)
    assert c.coordination_changed >= 1
    assert "changed coordination for ≥ 0.1 ps (minimum 3)" in m.failure(c)
    assert m.report().first_failure_ps == pytest.approx(0.5)  # dated from when it began


def test_a_stretch_that_returns_within_a_vibrational_period_is_not_a_break(cell):
    m = IntegrityMonitor(cell, {"Na"})
    a = cell.copy()
    sb, s_near = _sb_and_bonded_s(a)
    v = a.get_distance(sb, s_near, mic=True, vector=True)
    stretched = a.copy()
    stretched.positions[s_near] += 0.6 * v / np.linalg.norm(v)  # Sb–S 2.93 Å > the 2.80 Å shell
    for t, frame in ((0.0, a), (0.03, stretched), (0.06, stretched), (0.09, a), (0.12, stretched), (0.15, a)):
        m.check(frame, t)
    rep = m.report()
    assert rep.ok and rep.framework_coordination_min == 3  # the transient minimum is still recorded


def test_framework_diffusion_is_flagged(cell):
    m = IntegrityMonitor(cell, {"Na"})
    a = cell.copy()
    rng = np.random.default_rng(1)
    fw = [i for i, s in enumerate(a.get_chemical_symbols()) if s != "Na"]
    # large uncorrelated displacements of the framework (MSD ≈ 3·1.2² ≈ 4.3 Å²)
    a.positions[fw] += rng.normal(scale=1.2, size=(len(fw), 3))
    c = m.check(a, 3.0)
    assert c.framework_msd_A2 > 3.0
    assert "framework atoms diffuse" in m.failure(c)


def test_mobile_ions_moving_is_fine_and_trajectory_check(cell):
    frames = []
    rng = np.random.default_rng(2)
    na = [i for i, s in enumerate(cell.get_chemical_symbols()) if s == "Na"]
    a = cell.copy()
    for _ in range(10):
        a = a.copy()
        a.positions[na] += rng.normal(scale=0.8, size=(len(na), 3))  # Na diffuse, framework still
        frames.append(a)
    traj = trajectory_from_atoms_list(frames, dt_fs=100.0, unwrap=False)
    traj = traj.__class__(**{**traj.__dict__, "metadata": {"mobile_ion": "Na"}})
    rep = check_trajectory(traj)
    assert rep.n_frames_checked == 10
    assert rep.framework_msd_max_A2 < 1e-12


def test_a_broken_framework_stays_recorded_after_resume(tmp_path):
    """Resuming (or extending) a run must not forget that its framework broke earlier."""
    from ase.calculators.calculator import Calculator, all_changes

    from ionraman.forcefields import ForceField
    from ionraman.md import MDConfig, run_md
    from ionraman.structures import load_structure
    from ionraman.trajectory import read_metadata

    class Free(Calculator):  # no forces: the tetrahedra fly apart at once
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}

    ff = ForceField("free", Free(), "test", 5.0)
    loaded = load_structure("Na3SbS4-cubic")
    out = tmp_path / "t.h5"
    cfg = MDConfig(temperature_K=600.0, time_ps=0.1, equilibrate_ps=0.0, sample_every=5, seed=1, min_distance_factor=0.1)
    run_md(loaded.atoms, ff, cfg, out, metadata=loaded.describe(), integrity="flag")
    first = read_metadata(out)["integrity"]
    assert first["ok"] is False and first["first_failure_ps"] is not None
    run_md(loaded.atoms, ff, MDConfig(**{**cfg.__dict__, "time_ps": 0.12}), out, resume=True, metadata=loaded.describe(),
           integrity="flag")
    again = read_metadata(out)["integrity"]
    assert again["ok"] is False
    assert again["first_failure_ps"] == first["first_failure_ps"]
    assert again["n_frames_checked"] > first["n_frames_checked"]


def test_thermal_reference_with_a_stretched_bond(cell):
    """A thermalised first frame as the reference (check_trajectory): one Sb–S bond stretched to
    2.65 Å must not widen the coordination shell, so a second-shell S at 3.0 Å is not a fifth
    neighbour, and the stretched bond still counts as one of the four."""
    sym = np.array(cell.get_chemical_symbols())
    sb = int(np.flatnonzero(sym == "Sb")[0])
    d = cell.get_distances(sb, np.arange(len(cell)), mic=True, vector=True)
    s_idx = np.flatnonzero(sym == "S")
    r = np.linalg.norm(d[s_idx], axis=1)
    bonded, second = s_idx[np.argsort(r)[0]], s_idx[np.argsort(r)[4]]
    ref = cell.copy()
    ref.positions[bonded] += d[bonded] / np.linalg.norm(d[bonded]) * (2.65 - np.linalg.norm(d[bonded]))
    m = IntegrityMonitor(ref, {"Na"})
    assert (m.initial_coord == 4).all()
    assert m.coord_cut == pytest.approx(1.2 * 2.33, abs=0.02)  # the median bond, not the stretched one
    # move the neighbouring SbS4 unit that owns that S rigidly, so its own bonds stay intact
    owner = min(np.flatnonzero(sym == "Sb"), key=lambda j: cell.get_distance(int(second), int(j), mic=True))
    dist_owner = cell.get_distances(int(owner), s_idx, mic=True)
    unit = np.concatenate([[owner], s_idx[np.argsort(dist_owner)[:4]]])
    a = cell.copy()
    a.positions[unit] -= d[second] / np.linalg.norm(d[second]) * (np.linalg.norm(d[second]) - 3.0)
    assert a.get_distance(sb, int(second), mic=True) == pytest.approx(3.0, abs=1e-6)
    c = m.check(a, 0.1)
    assert c.ok, m.failure(c)
    assert c.coordination_min == 4


def test_production_failure_time_rechecks_a_thermalisation_flag(cell):
    """A flag recorded while heating (negative time) only counts if the stored frames are broken."""
    from ionraman.integrity import production_failure

    rng = np.random.default_rng(4)
    intact = [cell.copy() for _ in range(6)]
    for a in intact:
        a.positions += rng.normal(scale=0.03, size=a.positions.shape)
    traj = trajectory_from_atoms_list(intact, dt_fs=10.0)
    traj.metadata["integrity"] = {"ok": True}
    assert production_failure(traj) is None
    traj.metadata["integrity"] = {"ok": False, "first_failure_ps": -0.02}
    assert production_failure(traj) is None  # heating flagged a moment, production is intact
    traj.metadata["integrity"] = {"ok": False, "first_failure_ps": 0.03, "reason": "recorded"}
    assert production_failure(traj).time_ps == 0.03  # recorded in production: taken as recorded
    assert production_failure(traj).reason == "recorded"
    broken = [a.copy() for a in intact] + [intact[-1].copy() for _ in range(10)]
    sb, s_near = _sb_and_bonded_s(cell)
    v = cell.get_distance(sb, s_near, mic=True, vector=True)
    for a in broken[4:]:  # from 40 fs on, for 120 fs: a broken bond
        a.positions[s_near] += 1.2 * v / np.linalg.norm(v)
    traj = trajectory_from_atoms_list(broken, dt_fs=10.0)
    traj.metadata["integrity"] = {"ok": False, "first_failure_ps": -0.02}
    fail = production_failure(traj)
    assert fail.time_ps == pytest.approx(0.04)
    # the rechecked reason, not the thermalisation record (the moved S also joins a second Sb's shell)
    assert fail.reason == "the framework broke at t = 0.04 ps: 2 Sb site(s) changed coordination for ≥ 0.1 ps (minimum 3)"
