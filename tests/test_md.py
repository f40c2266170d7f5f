from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes

from ionraman.errors import InputError, SimulationError
from ionraman.forcefields import ForceField
from ionraman.md import MDConfig, checkpoint_path, run_md
from ionraman.trajectory import read_h5md


@pytest.fixture
def cu():
    return bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)


def _cfg(**kw):
    base = dict(temperature_K=600, time_ps=0.2, timestep_fs=2.0, equilibrate_ps=0.04, sample_every=5, seed=7)
    base.update(kw)
    return MDConfig(**base)


def test_run_writes_h5md_with_metadata(cu, emt, tmp_path):
    r = run_md(cu, emt, _cfg(equilibrate_ps=0.2), tmp_path / "t.h5", metadata={"mobile_ion": "Cu"})
    t = read_h5md(r.path)
    assert r.n_frames == t.n_frames == 21
    assert t.dt_fs == pytest.approx(10.0)
    assert t.metadata["status"] == "finished"
    assert t.metadata["seed"] == 7 and t.metadata["timestep_fs"] == 2.0
    assert "Bussi" in t.metadata["thermostat"]
    assert t.metadata["forcefield"].startswith("python:ase.calculators.emt")
    # thermostat keeps the mean temperature near the target (32 atoms fluctuate ~±15 %)
    import h5py

    with h5py.File(r.path) as f:
        temps = f["observables/temperature/value"][()]
    assert 480 < temps.mean() < 720
    # positions are continuous (unwrapped): no jump larger than half a cell between frames
    assert np.abs(np.diff(t.positions, axis=0)).max() < 1.0


def test_extension_by_resume_equals_uninterrupted(cu, emt, tmp_path):
    full = run_md(cu, emt, _cfg(), tmp_path / "full.h5")
    run_md(cu, emt, _cfg(time_ps=0.1), tmp_path / "part.h5")
    res = run_md(cu, emt, _cfg(), tmp_path / "part.h5", resume=True)
    assert res.resumed
    a, b = read_h5md(full.path), read_h5md(res.path)
    assert a.n_frames == b.n_frames
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.velocities, b.velocities)


def test_interrupted_run_resumes_to_same_trajectory(cu, emt, tmp_path):
    ref = read_h5md(run_md(cu, emt, _cfg(), tmp_path / "ref.h5").path)

    def stop(i, atoms):
        if i == 9:
            raise KeyboardInterrupt

    p = tmp_path / "killed.h5"
    with pytest.raises(KeyboardInterrupt):
        run_md(cu, emt, _cfg(), p, on_frame=stop)
    kept = read_h5md(p)
    assert kept.n_frames == 10 and kept.metadata["status"] == "interrupted"
    np.testing.assert_array_equal(kept.positions, ref.positions[:10])
    run_md(cu, emt, _cfg(), p, resume=True)
    done = read_h5md(p)
    np.testing.assert_array_equal(done.positions, ref.positions)
    assert done.metadata["status"] == "finished"


def test_resume_with_other_settings_is_refused(cu, emt, tmp_path):
    p = tmp_path / "t.h5"
    run_md(cu, emt, _cfg(time_ps=0.05), p)
    with pytest.raises(InputError, match="different MD settings"):
        run_md(cu, emt, _cfg(temperature_K=900), p, resume=True)
    assert checkpoint_path(p).exists()


class _Exploding(Calculator):
    """EMT-like harmless forces until step N, then enormous ones."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, after: int):
        super().__init__()
        self.calls = 0
        self.after = after

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        f = np.zeros((len(atoms), 3))
        if self.calls > self.after:
            f[0, 0] = 1e4
        self.results = {"energy": 0.0, "forces": f}


def test_force_guard_stops_run_and_keeps_frames(cu, tmp_path):
    ff = ForceField(name="exploding", calculator=_Exploding(after=40), version="test", cutoff_A=5.0)
    p = tmp_path / "t.h5"
    with pytest.raises(SimulationError, match="largest force"):
        run_md(cu, ff, _cfg(equilibrate_ps=0.0), p)
    t = read_h5md(p)
    assert 0 < t.n_frames < 21
    assert t.metadata["status"] == "failed" and "largest force" in t.metadata["failure"]


def test_overlap_guard(tmp_path):
    from ase import Atoms

    # two free particles flying at each other: no forces, so they overlap
    a = Atoms("Cu2", positions=[[0, 0, 0], [3, 0, 0]], cell=[12, 12, 12], pbc=True)
    ff = ForceField(name="free", calculator=_Exploding(after=10**9), version="test", cutoff_A=5.0)
    a.set_velocities([[0.02, 0, 0], [-0.02, 0, 0]])  # Å per ASE time unit
    from ionraman.md import _Guards

    g = _Guards(a, _cfg(), "pair")
    a.positions[1, 0] = 0.5
    with pytest.raises(SimulationError, match="came within 0.50 Å"):
        g.per_frame(a, 0.1)
    del ff


@pytest.mark.parametrize(
    "kw,msg",
    [
        (dict(temperature_K=-5), "positive temperature"),
        (dict(time_ps=0), "positive production length"),
        (dict(timestep_fs=50), "--timestep"),
        (dict(time_ps=0.005), "shorter than one sampling interval"),
    ],
)
def test_bad_settings(kw, msg):
    with pytest.raises(InputError, match=msg):
        _cfg(**kw).validate()


def test_element_not_covered_is_refused_before_md(emt, tmp_path):
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    with pytest.raises(InputError, match="does not cover element"):
        run_md(nacl, emt, _cfg(), tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_real_chgnet_md_on_small_cell(chgnet, tmp_path):
    """A short real CHGNet run on the 8-atom NaCl cell: stable, thermostatted, sane forces."""
    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    r = run_md(nacl, chgnet, _cfg(temperature_K=300, time_ps=0.1, equilibrate_ps=0.02), tmp_path / "nacl.h5")
    t = read_h5md(r.path)
    assert t.n_frames == 11
    assert t.metadata["forcefield"] == "chgnet" and "chgnet" in t.metadata["forcefield_version"]
    # NaCl at 300 K: atoms vibrate by ~0.1–0.3 Å, nobody diffuses
    disp = np.linalg.norm(t.positions - t.positions[0], axis=2)
    assert 0.01 < disp.mean() < 0.5 and disp.max() < 1.0


class _PullTwoAnions(Calculator):
    """Zero forces except a spring (3 eV/Å², rest length 3 Å) between atoms i and j: a made-up
    'bad force field' that swings two S from 3.8 Å to ≈ 2.2 Å, an S–S bond."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, i: int, j: int):
        super().__init__()
        self.i, self.j = i, j

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        f = np.zeros((len(atoms), 3))
        d = atoms.get_distance(self.i, self.j, mic=True, vector=True)
        r = np.linalg.norm(d)
        f[self.i] += 3.0 * (r - 3.0) * d / r
        f[self.j] -= 3.0 * (r - 3.0) * d / r
        self.results = {"energy": 0.0, "forces": f}


@pytest.mark.parametrize("mode", ["stop", "flag"])
def test_integrity_monitor_in_md(tmp_path, mode):
    from ase.spacegroup import crystal

    a = crystal(["Na", "Sb", "S"], basis=[(0, 0.5, 0.5), (0, 0, 0), (0.1876, 0.1876, 0.1876)], spacegroup=217,
                cellpar=[7.17] * 3 + [90] * 3)
    s_idx = [k for k, s in enumerate(a.get_chemical_symbols()) if s == "S"]
    d = [a.get_distance(s_idx[0], k, mic=True) for k in s_idx[1:]]
    j = s_idx[1 + int(np.argmin(d))]
    ff = ForceField(name="bad", calculator=_PullTwoAnions(s_idx[0], j), version="test", cutoff_A=5.0)
    cfg = _cfg(temperature_K=50, time_ps=0.6, equilibrate_ps=0.0, max_temperature_factor=1000.0)
    p = tmp_path / "t.h5"
    if mode == "stop":
        with pytest.raises(SimulationError, match="the framework broke at t = "):
            run_md(a, ff, cfg, p, metadata={"mobile_ion": "Na"}, integrity="stop")
        t = read_h5md(p)
        assert t.metadata["status"] == "failed" and t.metadata["integrity_ok"] is False
        assert t.n_frames < cfg.n_frames
    else:
        r = run_md(a, ff, cfg, p, metadata={"mobile_ion": "Na"}, integrity="flag")
        t = read_h5md(p)
        assert t.n_frames == cfg.n_frames and t.metadata["integrity_ok"] is False
        assert t.metadata["integrity"]["anion_anion_bonds_max"] >= 1
        assert r.metadata["integrity_ok"] is False


class _SbSSprings(Calculator):
    """Harmonic Sb–S bonds of natural length r0 (Å) between the pairs given; nothing else."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, pairs, r0=2.40, k=20.0):
        super().__init__()
        self.pairs, self.r0, self.k = pairs, r0, k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        f, e = np.zeros((len(self.atoms), 3)), 0.0
        for i, j in self.pairs:
            d = self.atoms.get_distance(i, j, mic=True, vector=True)
            r = np.linalg.norm(d)
            e += 0.5 * self.k * (r - self.r0) ** 2
            f[i] += self.k * (r - self.r0) * d / r
            f[j] -= self.k * (r - self.r0) * d / r
        self.results = {"energy": e, "forces": f}


def test_integrity_reference_is_the_relaxed_start(tmp_path):
    """With relax, the monitor's bonds are the relaxed ones (2.40 Å), not the compressed input's (2.20 Å)."""
    from ase.spacegroup import crystal

    a = crystal(["Na", "Sb", "S"], basis=[(0, 0.5, 0.5), (0, 0, 0), (0.1772, 0.1772, 0.1772)], spacegroup=217,
                cellpar=[7.17] * 3 + [90] * 3)  # x chosen so that Sb–S = √3·x·a = 2.20 Å
    sym = np.array(a.get_chemical_symbols())
    pairs = [(int(i), int(j)) for i in np.flatnonzero(sym == "Sb") for j in np.flatnonzero(sym == "S")
             if a.get_distance(int(i), int(j), mic=True) < 2.5]
    assert len(pairs) == 8
    ff = ForceField(name="springs", calculator=_SbSSprings(pairs), version="test", cutoff_A=5.0)
    cfg = _cfg(temperature_K=50, time_ps=0.02, equilibrate_ps=0.0, relax=True)
    run_md(a, ff, cfg, tmp_path / "t.h5", metadata={"mobile_ion": "Na"}, integrity="flag")
    integ = read_h5md(tmp_path / "t.h5").metadata["integrity"]
    assert integ["coordination_cutoff_A"] == pytest.approx(1.2 * 2.40, abs=0.02)
    assert integ["ok"] is True
    # a resumed (extended) run keeps the relaxed reference, not the compressed input's
    run_md(a, ff, _cfg(temperature_K=50, time_ps=0.04, equilibrate_ps=0.0, relax=True), tmp_path / "t.h5",
           resume=True, metadata={"mobile_ion": "Na"}, integrity="flag")
    integ = read_h5md(tmp_path / "t.h5").metadata["integrity"]
    assert integ["coordination_cutoff_A"] == pytest.approx(1.2 * 2.40, abs=0.02)
    assert integ["ok"] is True


def test_a_killed_run_keeps_its_checkpointed_frames_and_resumes_exactly(cu, emt, tmp_path):
    # frames are written in blocks just before each checkpoint; a process that dies without
    # closing its file (here: an exception run_md does not handle) loses only unflushed frames
    cfg = _cfg(time_ps=0.3, checkpoint_every_frames=12)
    ref = read_h5md(run_md(cu, emt, cfg, tmp_path / "ref.h5").path)
    assert ref.n_frames == 31

    def die(i, atoms):
        if i == 27:
            raise RuntimeError("killed")

    p = tmp_path / "killed.h5"
    with pytest.raises(RuntimeError):
        run_md(cu, emt, cfg, p, on_frame=die)
    import gc

    gc.collect()  # the abandoned writer's file handle is released without a flush of its buffer
    kept = read_h5md(p)
    assert kept.n_frames == 24  # the frames counted by the last checkpoint (frame 24), not 28
    # the shared EMT calculator keeps its neighbour list between runs: sums in another order, 1e-15 Å
    np.testing.assert_allclose(kept.positions, ref.positions[:24], rtol=0, atol=1e-10)
    run_md(cu, emt, cfg, p, resume=True)
    done = read_h5md(p)
    assert done.n_frames == 31 and done.metadata["status"] == "finished"
    np.testing.assert_allclose(done.positions, ref.positions, rtol=0, atol=1e-10)
    np.testing.assert_allclose(done.velocities, ref.velocities, rtol=0, atol=1e-10)
