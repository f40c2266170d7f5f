"""Distillation of a fast force field (issue #7): end to end on a tiny system, save/load, domain."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from ionraman.distill import MANIFEST, DistillConfig, DistilledDomain, distill, load_distilled
from ionraman.errors import InputError
from ionraman.forcefields import get_forcefield

pytest.importorskip("mace")

SHARED_TRAINING = Path(__file__).resolve().parents[1] / "src" / "ionraman" / "data" / "forcefields" / "training"

TINY = DistillConfig(teacher="python:ase.calculators.emt:EMT", temperatures_K=(300.0, 900.0), md_time_ps=0.2,
                     equilibrate_ps=0.02, frame_every_fs=10.0, strains=(0.01,), vacancy=False, num_channels=8,
                     epochs=3, batch_size=4, r_max_A=4.0, large_min_atoms=16, large_md_time_ps=0.2)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    d = tmp_path_factory.mktemp("distill")
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    ase.io.write(d / "cu.extxyz", cu)
    res = distill([str(d / "cu.extxyz")], d / "ff", TINY, progress=False)
    return d, res


def test_distill_end_to_end_learns_the_teacher(distilled):
    d, res = distilled
    # 2 temperatures × 3 cells (base, strained, ≥ 16-atom larger) × 20 production frames (frame 0 left out)
    assert res.n_train + res.n_valid == 6 * 20
    assert res.n_valid == 12
    frames = ase.io.read(d / "ff" / "data" / "train.xyz", ":") + ase.io.read(d / "ff" / "data" / "valid.xyz", ":")
    sizes = {len(a) for a in frames}
    assert sizes == {8, 16}  # the larger cell's frames are in the training data
    assert sum(len(a) == 16 for a in frames) == 2 * 20
    err = res.errors
    # three epochs already take the force error far below the force scale itself
    assert err["force_rmse_meV_A"] < 0.3 * err["force_rms_dft_meV_A"]
    assert res.domain.elements == ["Cu"]
    assert res.domain.temperatures_K == [300.0, 900.0]
    lo, hi = res.domain.volume_per_atom_A3
    assert lo == pytest.approx(3.6**3 / 4, rel=1e-6) and hi == pytest.approx(3.6**3 / 4 * 1.01**3, rel=1e-6)
    m = json.loads((d / "ff" / MANIFEST).read_text())
    assert m["architecture"] == "MACE" and m["teacher"]["spec"] == "python:ase.calculators.emt:EMT"
    assert m["config"]["pair_repulsion"] is True  # the ZBL wall is on by default


def test_pair_repulsion_is_a_short_range_wall(distilled):
    """With the ZBL term the distilled model repels two atoms pushed far closer than any training frame."""
    d, _ = distilled
    ff = get_forcefield(f"distilled:{d / 'ff'}")
    energies = []
    for r in (1.0, 0.6):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
        a.positions[1] = a.positions[0] + np.array([r, 0.0, 0.0])
        a.calc = ff.calculator
        energies.append(a.get_potential_energy())
    assert energies[1] - energies[0] > 20.0  # eV: the Cu–Cu ZBL energy rises by hundreds of eV from 1.0 to 0.6 Å


def test_saved_and_loaded_model_gives_identical_forces(distilled):
    d, _ = distilled
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
    atoms.rattle(0.05, seed=3)
    f = []
    for _ in range(2):  # two independent loads from disk
        ff = get_forcefield(f"distilled:{d / 'ff'}")
        a = atoms.copy()
        a.calc = ff.calculator
        f.append(a.get_forces())
    np.testing.assert_array_equal(f[0], f[1])
    assert np.abs(f[0]).max() > 0.01  # a rattled crystal feels forces
    assert ff.cutoff_A == 4.0 and ff.elements == frozenset({"Cu"})


def test_resume_returns_the_finished_model_without_retraining(distilled):
    d, res = distilled
    model = d / "ff" / "model.model"
    mtime = model.stat().st_mtime_ns
    again = distill([str(d / "cu.extxyz")], d / "ff", TINY, progress=False)
    assert model.stat().st_mtime_ns == mtime
    assert again.errors == res.errors


def test_other_settings_in_the_same_folder_are_refused(distilled, tmp_path):
    d, _ = distilled
    out = tmp_path / "ff"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"config": {}, "inputs": []}))
    with pytest.raises(InputError, match="other settings"):
        distill([str(d / "cu.extxyz")], out, TINY, progress=False)


def test_running_outside_the_training_domain_warns_and_unknown_elements_fail(distilled):
    d, _ = distilled
    ff = get_forcefield(f"distilled:{d / 'ff'}")
    inside = bulk("Cu", "fcc", a=3.6, cubic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ff.check_domain(inside, 600.0) == []
    with pytest.warns(UserWarning, match="above the hottest training run"):
        notes = ff.check_domain(inside, 1500.0)
    assert len(notes) == 1
    with pytest.warns(UserWarning, match="volume"):
        ff.check_domain(bulk("Cu", "fcc", a=3.9, cubic=True), 600.0)
    with pytest.raises(InputError, match="cannot describe Ag"):
        ff.check_domain(bulk("Ag", "fcc", a=4.1), 300.0)


def test_domain_flags_a_different_composition():
    dom = DistilledDomain(["Na", "S", "Sb"], [300.0, 900.0], [{"Na": 0.375, "S": 0.5, "Sb": 0.125}], [20.0, 22.0])
    from ase import Atoms

    na2s = Atoms("Na8S4", positions=np.random.default_rng(0).random((12, 3)) * 7, cell=[7, 7, 7], pbc=True)
    na2s.set_cell(na2s.cell * (21.0 * 12 / na2s.get_volume()) ** (1 / 3), scale_atoms=True)
    with pytest.warns(UserWarning, match="composition differs"):
        dom.check(na2s, 600.0)


def test_distill_from_dft_labelled_extxyz_uses_the_dft_labels(tmp_path):
    xyz = SHARED_TRAINING / "Na3SbS4-cubic.xyz"
    cfg = DistillConfig(teacher="none-needed", num_channels=8, epochs=1, batch_size=4, val_fraction=0.2)
    res = distill([str(xyz)], tmp_path / "ff", cfg, progress=False)
    n = len(ase.io.read(xyz, ":"))
    assert res.n_train + res.n_valid == n and res.n_valid == round(0.2 * n)
    assert res.teacher["dft_files"] == [str(xyz)]
    assert not (tmp_path / "ff" / "sample").exists()  # no teacher MD
    train = ase.io.read(tmp_path / "ff" / "data" / "train.xyz", ":")
    assert {a.info["label_source"] for a in train} == {"cp2k"}


def test_bad_settings_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(InputError, match="--val-fraction"):
        distill(["x"], tmp_path / "a", DistillConfig(val_fraction=0.7), progress=False)
    with pytest.raises(InputError, match="--strains"):
        distill(["x"], tmp_path / "b", DistillConfig(strains=(0.2,)), progress=False)
    with pytest.raises(InputError, match="--train-dtype"):
        distill(["x"], tmp_path / "c", DistillConfig(train_dtype="float16"), progress=False)
    with pytest.raises(InputError, match="--max-ell 0"):
        distill(["x"], tmp_path / "d", DistillConfig(max_ell=0), progress=False)
    with pytest.raises(InputError, match="--num-interactions 0"):
        distill(["x"], tmp_path / "e", DistillConfig(num_interactions=0), progress=False)


def test_a_campaign_distils_once_per_candidate_with_one_setting(tmp_path):
    from ionraman.screening import tasks as T
    from ionraman.screening.spec import load_campaign

    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    ase.io.write(tmp_path / "cu.extxyz", cu)
    toml = tmp_path / "c.toml"
    toml.write_text(
        f'name = "d"\ntemperatures_K = [300, 600]\noutput_dir = "{tmp_path / "run"}"\ncandidates = ["{tmp_path / "cu.extxyz"}"]\n'
        '[md]\nforcefield = "distilled"\ndistill_teacher = "python:ase.calculators.emt:EMT"\n'
        "distill_md_time_ps = 0.1\ndistill_epochs = 1\ndistill_channels = 8\ntime_ps = 1.0\n"
    )
    tasks = [t for t in load_campaign(toml).tasks() if t.kind == "md"]
    assert len(tasks) == 2
    spec0 = T._distilled_forcefield(tasks[0])
    model = Path(spec0.split(":", 1)[1]) / "model.model"
    mtime = model.stat().st_mtime_ns
    assert T._distilled_forcefield(tasks[1]) == spec0  # both temperatures share one model
    assert model.stat().st_mtime_ns == mtime
    ff = get_forcefield(spec0)
    assert ff.info["distilled_teacher"] == "python:ase.calculators.emt:EMT"


def test_distillation_settings_enter_task_keys_only_for_distilled_campaigns():
    from dataclasses import replace

    from ionraman.screening.spec import preset

    t = preset("demo").tasks()[0]
    other = replace(t, md=replace(t.md, distill_epochs=5))
    assert other.key == t.key  # demo results stay valid
    d = replace(t, md=replace(t.md, forcefield="distilled"))
    assert replace(d, md=replace(d.md, distill_epochs=5)).key != d.key


def test_cli_distill_json(tmp_path):
    from typer.testing import CliRunner

    from ionraman.cli import app

    ase.io.write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1)))
    r = CliRunner().invoke(app, ["distill", str(tmp_path / "cu.extxyz"), "-o", str(tmp_path / "ff"),
                                 "--teacher", "python:ase.calculators.emt:EMT", "--temperatures", "300,600",
                                 "--md-time", "0.1", "--frame-every", "10", "--strains", "", "--no-vacancy",
                                 "--epochs", "1", "--channels", "8", "--r-max", "4", "--max-ell", "1", "--num-interactions", "2", "--json"])
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "ff" / "settings.json").read_text())["config"]
    assert (config["max_ell"], config["num_interactions"]) == (1, 2)
    import torch

    model = torch.load(tmp_path / "ff" / "model.model", weights_only=False)
    assert len(model.interactions) == 2 and model.spherical_harmonics.irreps_out.lmax == 1
    d = json.loads(r.stdout[r.stdout.index("{"):])
    assert d["n_train"] + d["n_valid"] == 2 * 10
    assert d["domain"]["temperatures_K"] == [300.0, 600.0]
    assert d["errors"]["force_rmse_meV_A"] > 0
    bad = CliRunner().invoke(app, ["distill", "x", "-o", str(tmp_path / "b"), "--temperatures", "-5"])
    assert bad.exit_code == 2 and "positive temperatures" in bad.output
    bad = CliRunner().invoke(app, ["distill", "x", "-o", str(tmp_path / "c"), "--max-ell", "0"])
    assert bad.exit_code == 2 and "--max-ell 0" in bad.output


def test_auto_task_keys_follow_the_shipped_model(monkeypatch):
    """A result cached under forcefield = "auto" must not survive a newly shipped fine-tuned model."""
    from ionraman import forcefields
    from ionraman.screening.spec import preset

    task = next(t for t in preset("demo").tasks() if t.candidate.structure == "Na3SbS4-cubic")
    before = task.key
    monkeypatch.setattr(forcefields, "resolve_forcefield", lambda spec, *c: "finetuned:/x/model.pt" if spec == "auto" else spec)
    assert task.key != before


def test_distilled_calculator_matches_mace_calculator(distilled):
    """The lean calculator calls the same model as mace-torch's MACECalculator: same numbers."""
    from mace.calculators import MACECalculator

    d, _ = distilled
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.08, seed=5)
    ours = get_forcefield(f"distilled:{d / 'ff'}").calculator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = MACECalculator(model_paths=str(d / "ff" / "model.model"), device="cpu", default_dtype="float32")
    res = []
    for c in (ours, ref):
        a = atoms.copy()
        a.calc = c
        res.append((a.get_potential_energy(), a.get_forces(), a.get_stress()))
    assert res[0][0] == pytest.approx(res[1][0], abs=1e-5)
    np.testing.assert_allclose(res[0][1], res[1][1], atol=1e-5)
    np.testing.assert_allclose(res[0][2], res[1][2], atol=1e-6)


def test_verlet_list_gives_the_forces_of_a_fresh_search(distilled):
    """Along an MD run the Verlet list (skin 0.5 Å) gives the forces of a new neighbour search at every step,
    rebuilds only when an atom has moved by more than half the skin, and rebuilds after a jump."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from ionraman.distill import MODEL_FILE, DistilledCalculator

    d, _ = distilled
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    MaxwellBoltzmannDistribution(atoms, temperature_K=1500, rng=np.random.default_rng(0))
    verlet = DistilledCalculator(d / "ff" / MODEL_FILE, skin_A=0.5)
    fresh = DistilledCalculator(d / "ff" / MODEL_FILE, skin_A=0.0)
    atoms.calc = verlet
    dyn = VelocityVerlet(atoms, timestep=5 * units.fs)
    moved = []
    start = atoms.positions.copy()
    for _ in range(40):
        dyn.run(1)
        b = atoms.copy()
        b.calc = fresh
        np.testing.assert_allclose(atoms.get_forces(), b.get_forces(), rtol=0, atol=1e-5)
        moved.append(np.linalg.norm(atoms.positions - start, axis=1).max())
    assert max(moved) > 0.5  # the run went past one skin, so the list was rebuilt on the way …
    assert 2 <= verlet.neighbour_builds < fresh.neighbour_builds == 40  # … but not at every step
    before = verlet.neighbour_builds
    atoms.positions[0] += atoms.cell[0]  # a jump by a lattice vector (as after wrapping)
    atoms.get_forces()
    assert verlet.neighbour_builds == before + 1


def test_scripted_calculator_gives_the_eager_numbers(distilled):
    """The TorchScript-compiled model gives the eager model's energy, forces and stress to float32 round-off."""
    from ionraman.distill import MODEL_FILE, DistilledCalculator

    d, _ = distilled
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.08, seed=6)
    res = []
    for backend in ("script", "eager"):
        c = DistilledCalculator(d / "ff" / MODEL_FILE, backend=backend)
        assert c.scripted is (backend == "script")
        a = atoms.copy()
        a.calc = c
        res.append((a.get_potential_energy(), a.get_forces(), a.get_stress()))
    # float32 round-off only (TorchScript may fuse operations in another order)
    assert res[0][0] == pytest.approx(res[1][0], abs=1e-5)
    np.testing.assert_allclose(res[0][1], res[1][1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(res[0][2], res[1][2], rtol=0, atol=1e-7)  # eV/Å³, |σ| ≈ 0.02
    assert np.abs(res[0][1]).max() > 0.01


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's inductor backend needs a C++ compiler on the CPU")
def test_inductor_compiled_calculator_gives_the_eager_numbers(distilled):
    """torch.compile (inductor, dynamic shapes) gives the eager energy and forces along an MD run, in a
    strained cell with other edges and in a cell with other atoms, without falling back; a stress request is served by the scripted model."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from ionraman.distill import MODEL_FILE, DistilledCalculator

    d, _ = distilled
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    MaxwellBoltzmannDistribution(atoms, temperature_K=1500, rng=np.random.default_rng(1))
    fast = DistilledCalculator(d / "ff" / MODEL_FILE, backend="inductor")
    eager = DistilledCalculator(d / "ff" / MODEL_FILE, backend="eager")
    atoms.calc = fast
    dyn = VelocityVerlet(atoms, timestep=5 * units.fs)
    strained = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    strained.set_cell(strained.cell * 1.06, scale_atoms=True)  # second shell 3.82 Å: some pairs leave the 4 Å cutoff
    strained.rattle(0.15, seed=3)
    other = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 2, 2))
    other.rattle(0.05, seed=4)
    shapes = set()
    for k in range(5):
        a = atoms if k < 3 else (strained, other)[k - 3]
        if k < 3:
            dyn.run(1)
        else:
            a.calc = fast
        b = a.copy()
        b.calc = eager
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-4)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-5)
        shapes.add((len(a), fast._neighbours(a)[0].shape[1]))
    assert fast.backend == "inductor" and fast._compiled is not None  # compiled, not fallen back
    assert len(shapes) == 3  # three (atoms, edges) shapes went through the one compiled model
    c = atoms.copy()
    c.calc = eager
    np.testing.assert_allclose(atoms.get_stress(), c.get_stress(), rtol=0, atol=1e-6)


def test_a_failed_compilation_falls_back_to_the_scripted_model(distilled, monkeypatch):
    import torch

    from ionraman.distill import MODEL_FILE, DistilledCalculator

    d, _ = distilled

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken)
    c = DistilledCalculator(d / "ff" / MODEL_FILE, backend="inductor")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=2)
    atoms.calc = c
    with pytest.warns(UserWarning, match="torch.compile of .* failed .*no C\\+\\+ compiler.*TorchScript"):
        f = atoms.get_forces()
    assert c.backend == "script"
    b = atoms.copy()
    b.calc = DistilledCalculator(d / "ff" / MODEL_FILE, backend="script")
    np.testing.assert_allclose(f, b.get_forces(), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="backend 'cuda-graph'.*give one of inductor, script, eager"):
        DistilledCalculator(d / "ff" / MODEL_FILE, backend="cuda-graph")


def test_a_folder_from_before_new_settings_existed_is_reused(distilled, tmp_path):
    # settings.json of an older version lacks the fields added since: they count as defaults
    import shutil

    d, res = distilled
    work = tmp_path / "ff"
    shutil.copytree(d / "ff", work)
    st = json.loads((work / "settings.json").read_text())
    for k in ("nonlinear_readout", "readout_mlp", "train_dtype"):
        st["config"].pop(k)
    (work / "settings.json").write_text(json.dumps(st))
    before = (work / "model.model").stat().st_mtime_ns
    again = distill([str(d / "cu.extxyz")], work, TINY, progress=False)
    assert (work / "model.model").stat().st_mtime_ns == before and again.errors == res.errors


def test_changed_model_settings_retrain_on_the_same_frames(distilled, tmp_path):
    import shutil
    from dataclasses import replace

    d, res = distilled
    work = tmp_path / "ff"
    shutil.copytree(d / "ff", work)
    # a one-layer model with a nonlinear readout, trained in float64 and run in float32 (the MD precision)
    again = distill([str(d / "cu.extxyz")], work, replace(TINY, num_channels=4, num_interactions=1, epochs=1, nonlinear_readout=True, readout_mlp=24,
                                                          train_dtype="float64"),
                    progress=False)
    assert again.n_train == res.n_train and again.n_valid == res.n_valid  # the same labelled frames
    assert json.loads((work / MANIFEST).read_text())["config"]["num_channels"] == 4
    import torch

    trained = torch.load(work / "train" / "distilled.model", map_location="cpu", weights_only=False)
    assert next(trained.parameters()).dtype == torch.float64
    calc, _ = load_distilled(work)
    assert next(calc.model.parameters()).dtype == torch.float32
    from e3nn import o3

    # mace's MLP readout, 24 wide (the scripted module keeps irreps as plain tuples)
    assert str(o3.Irreps(calc.model.readouts[0].linear_1.irreps_out)) == "24x0e"
    with pytest.raises(InputError, match="other settings"):
        distill([str(d / "cu.extxyz")], work, replace(TINY, temperatures_K=(300.0,)), progress=False)
