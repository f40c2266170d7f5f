"""The symmetry-adapted (λ-SOAP) polarizability model: exact symmetries, real-data accuracy, I/O."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ase import Atoms

from ionraman.errors import InputError
from ionraman.polarizability.dataset import get_alpha, read_labelled
from ionraman.polarizability.descriptors import (
    SPHERICAL_BASIS_L2,
    LambdaSoap,
    SoapSettings,
    cartesian_to_spherical_l2,
    spherical_l2_to_cartesian,
)
from ionraman.polarizability.model import (
    CV_DESCRIPTOR_GRID,
    FORMAT_VERSION,
    PolarizabilityModel,
    learning_curve,
    polarizability_errors,
    predict_trajectory,
    read_alpha_sidecar,
)

SEED = 0
N_TRAIN = 120


def _wigner_l2(R: np.ndarray) -> np.ndarray:
    """Real Wigner matrix of λ = 2 in the basis E^μ: D_μν = tr(E^μ R E^ν Rᵀ)."""
    E = SPHERICAL_BASIS_L2
    return np.einsum("mab,ac,ncd,bd->mn", E, R, E, R)


def _random_rotation(seed: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=seed).as_matrix()


def _rotated(a: Atoms, R: np.ndarray) -> Atoms:
    b = a.copy()
    b.set_cell(a.cell.array @ R.T, scale_atoms=False)
    b.positions = a.positions @ R.T
    return b


@pytest.fixture(scope="module")
def sio2(shared_data):
    frames = read_labelled(shared_data / "polarizability" / "SiO2_qe_pbe_finite_field.xyz")
    assert len(frames) == 201 and len(frames[0]) == 72
    return frames


@pytest.fixture(scope="module")
def split(sio2):
    perm = np.random.default_rng(SEED).permutation(len(sio2))
    return perm[:N_TRAIN], perm[N_TRAIN:]


@pytest.fixture(scope="module")
def features(sio2):
    """λ-SOAP features of all 201 frames with the default settings, computed once."""
    return LambdaSoap(["O", "Si"], SoapSettings()).compute(sio2)


@pytest.fixture(scope="module")
def small_model(sio2, features):
    idx = np.arange(0, 200, 20)  # 10 frames
    return PolarizabilityModel().fit([sio2[i] for i in idx], features=features[idx])


@pytest.fixture(scope="module")
def full_model(sio2, split, features):
    tr, _ = split
    return PolarizabilityModel().fit([sio2[i] for i in tr], features=features[tr])


class SymmetryForbiddenOffset:
    """Δ-learning 'baseline' that removes a constant label artefact (see docs/physics/polarizability-model.md).

    α-quartz with c ∥ z is uniaxial, so a frame-averaged tensor may only have iso and the
    μ = 0 (2zz − xx − yy) component. The QE labels carry a constant xx − yy ≈ 1.2 Å³ that no
    rotation-equivariant function of these structures can produce. This object estimates the
    μ = ±1, ±2 means from the *training* labels and returns them as a constant tensor.
    """

    def fit(self, frames):
        s = cartesian_to_spherical_l2(np.array([get_alpha(a) for a in frames])).mean(axis=0)
        s[2] = 0.0
        self.C = spherical_l2_to_cartesian(s)
        return self

    def predict(self, frames):
        return np.repeat(self.C[None], len(frames), axis=0)


# ----------------------------------------------------------------- conventions


@pytest.mark.parametrize("r_A", [1.2, 2.6, 3.9])
def test_radial_scaling_weights_a_neighbour_by_willatt_factor(r_A):
    """Willatt et al. (2018): a neighbour at r enters the density with weight 1 / (1 + (r/r0)^m)."""
    import featomic

    r0, m = 2.5, 7.0
    plain = SoapSettings(cutoff_A=5.0, max_radial=2, max_angular=2)
    scaled = SoapSettings(cutoff_A=5.0, max_radial=2, max_angular=2, radial_scaling=[r0, m])
    assert scaled.radial_scaling == (r0, m) and scaled.to_dict()["radial_scaling"] == [r0, m]
    assert "radial_scaling" not in plain.to_dict()  # ids of models saved before the option are unchanged
    dimer = Atoms("HO", positions=[[0, 0, 0], [0.3, -0.5, r_A]])
    r = np.linalg.norm(dimer.positions[1])
    blocks = [featomic.SphericalExpansion(**st.hypers()).compute(dimer).block(o3_lambda=2, center_type=1, neighbor_type=8)
              for st in (plain, scaled)]
    np.testing.assert_allclose(blocks[1].values[0], blocks[0].values[0] / (1 + (r / r0) ** m), rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("bad", [(2.5, -1), (float("nan"), 5), 3.5, "2.5,7", (1.0, 2.0, 3.0)])
def test_radial_scaling_rejects_bad_values(bad):
    with pytest.raises(InputError, match="radial_scaling"):
        SoapSettings(radial_scaling=bad)


def test_plain_grid_entry_stays_plain_under_a_scaled_model():
    m = PolarizabilityModel(radial_scaling=(2.5, 7.0))
    assert m._settings(CV_DESCRIPTOR_GRID[0]).radial_scaling is None
    assert m._settings({"cutoff_A": 5.0}).radial_scaling == (2.5, 7.0)



def test_spherical_convention_matches_featomic():
    """featomic's l = 2 real harmonics are ∝ r̂ᵀE^μ r̂ with the same constant for every μ and direction."""
    import featomic

    se = featomic.SphericalExpansion(**SoapSettings(cutoff_A=3.0, max_radial=1, max_angular=2).hypers())
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(4):
        r = rng.normal(size=3)
        r /= np.linalg.norm(r)
        d = se.compute(Atoms("HO", positions=[[0, 0, 0], 1.4 * r]))
        v = d.block(o3_lambda=2, center_type=1, neighbor_type=8).values[0, :, 0]
        ratios.append(v / np.einsum("a,mab,b->m", r, SPHERICAL_BASIS_L2, r))
    ratios = np.array(ratios)
    np.testing.assert_allclose(ratios, ratios[0, 0], rtol=1e-10)
    # conversion: isometry, inverse, and covariance R T Rᵀ ↔ D(R) t
    T = rng.normal(size=(3, 3))
    T = T + T.T
    T -= np.trace(T) / 3 * np.eye(3)
    t = cartesian_to_spherical_l2(T)
    np.testing.assert_allclose(spherical_l2_to_cartesian(t), T, atol=1e-14)
    assert np.linalg.norm(t) == pytest.approx(np.linalg.norm(T), rel=1e-14)
    R = _random_rotation(5)
    np.testing.assert_allclose(cartesian_to_spherical_l2(R @ T @ R.T), _wigner_l2(R) @ t, atol=1e-13)


def test_features_transform_with_wigner_matrix(sio2):
    a = sio2[7]
    R = _random_rotation(2)
    f = LambdaSoap(["O", "Si"]).compute([a, _rotated(a, R)])
    D = _wigner_l2(R)
    np.testing.assert_allclose(f.x2[1], np.einsum("mn,snk->smk", D, f.x2[0]), atol=1e-12 * np.abs(f.x2).max())
    np.testing.assert_allclose(f.x0[1], f.x0[0], rtol=1e-12, atol=1e-12 * np.abs(f.x0).max())


# ----------------------------------------------------------------- exact symmetries


@pytest.mark.parametrize("improper", [False, True])
def test_rotation_equivariance(small_model, sio2, improper):
    a = sio2[33]
    R = _random_rotation(11)
    if improper:  # a proper rank-2 tensor also transforms as R α Rᵀ under reflections
        R = R @ np.diag([1.0, 1.0, -1.0])
    p, q = small_model.predict([a, _rotated(a, R)])
    expected = R @ p @ R.T
    aniso = p - np.trace(p) / 3 * np.eye(3)
    assert np.linalg.norm(q - expected) / np.linalg.norm(p) < 1e-8
    # also relative to the (much smaller) anisotropic part alone
    assert np.linalg.norm(q - expected) / np.linalg.norm(aniso) < 1e-8
    np.testing.assert_allclose(q, q.T, atol=1e-12 * np.abs(q).max())


def test_translation_and_permutation_invariance(small_model, sio2):
    a = sio2[50]
    b = a.copy()
    b.positions += np.array([1.234, -3.21, 7.7])
    b.wrap()
    perm = np.random.default_rng(3).permutation(len(a))
    c = a[perm]
    p, q, r = small_model.predict([a, b, c])
    assert np.linalg.norm(q - p) / np.linalg.norm(p) < 1e-10
    assert np.linalg.norm(r - p) / np.linalg.norm(p) < 1e-10


def test_extensive_supercell(small_model, sio2):
    a = sio2[99]
    p, q = small_model.predict([a, a.repeat((2, 1, 1))])
    assert np.linalg.norm(q - 2 * p) / np.linalg.norm(2 * p) < 1e-8
    ap = p - np.trace(p) / 3 * np.eye(3)
    aq = q - np.trace(q) / 3 * np.eye(3)
    assert np.linalg.norm(aq - 2 * ap) / np.linalg.norm(2 * ap) < 1e-8


# ----------------------------------------------------------------- real data


def test_sio2_held_out_accuracy(full_model, sio2, split, features):
    """Train on 120 frames (seeded permutation, seed 0), test on the other 81.

    Measured: iso 5.2 %, aniso 59 % on the raw labels (limited by a constant, symmetry-forbidden
    xx − yy offset in the labels, see the next test); the bars here are regression guards.
    """
    _, te = split
    s = full_model.score([sio2[i] for i in te], features=features[te])
    assert s["n_frames"] == 81
    assert s["rel_rmse_iso"] < 0.06
    assert s["rmse_iso_A3"] < 0.14
    assert s["rel_rmse_aniso"] < 0.65
    assert full_model.training_["n_train"] == N_TRAIN
    assert full_model.cv_results_["folds"] == 5


@pytest.fixture(scope="module")
def offset_model(sio2, split, features):
    tr, _ = split
    m = PolarizabilityModel(baseline=SymmetryForbiddenOffset(), fit_baseline=True)
    return m.fit([sio2[i] for i in tr], features=features[tr])


def test_sio2_labels_carry_symmetry_forbidden_offset(sio2, features, offset_model, split):
    """The summed λ = 2 features average to a uniaxial (μ = 0 only) tensor, the labels do not."""
    y = cartesian_to_spherical_l2(np.array([get_alpha(a) for a in sio2]))
    x = features.x2.sum(axis=1)  # (n, 5, p): sum over centre species
    x_mean = np.linalg.norm(x.mean(axis=0), axis=1)
    x_std = np.linalg.norm(x.std(axis=0), axis=1)
    assert x_mean[4] < 0.1 * x_mean[2] and x_mean[4] < 0.5 * x_std[4]  # structures: no xx − yy on average
    assert y[:, 4].mean() > 0.6 and y[:, 4].mean() > 1.2 * y[:, 4].std()  # labels: xx − yy ≈ 1.2 Å³
    _, te = split
    s = offset_model.score([sio2[i] for i in te], features=features[te])
    assert s["rel_rmse_aniso"] < 0.25  # measured 0.225
    assert s["rel_rmse_iso"] < 0.06


@pytest.fixture(scope="module")
def cv_grid_offset_model(sio2, split):
    """What `ionraman train` does: the descriptor chosen by 5-fold CV from CV_DESCRIPTOR_GRID (label offset removed)."""
    tr, _ = split
    m = PolarizabilityModel(descriptor_grid=list(CV_DESCRIPTOR_GRID), baseline=SymmetryForbiddenOffset(), fit_baseline=True)
    return m.fit([sio2[i] for i in tr])


def test_sio2_cv_chosen_descriptor_meets_the_iso_bar(cv_grid_offset_model, sio2, split):
    """CV picks a 6 Å expansion with Willatt radial scaling; iso reaches the issue's 5 % (measured 4.3 %)."""
    _, te = split
    m = cv_grid_offset_model
    assert m.settings_.cutoff_A == 6.0 and m.settings_.radial_scaling is not None
    s = m.score([sio2[i] for i in te])
    assert s["rel_rmse_iso"] <= 0.05
    assert s["rel_rmse_aniso"] < 0.215  # measured 0.2065 (0.225 with the plain 4 Å expansion)


@pytest.mark.xfail(strict=True, reason="issue bar aniso ≤ 15 % not reached: 20.7 % with the CV-chosen descriptor even after removing the label offset (iso 4.3 % meets its bar)")
def test_sio2_issue_acceptance_bar(cv_grid_offset_model, sio2, split):
    _, te = split
    s = cv_grid_offset_model.score([sio2[i] for i in te])
    assert s["rel_rmse_iso"] <= 0.05 and s["rel_rmse_aniso"] <= 0.15


def test_learning_curve_improves(sio2, split):
    tr, te = split
    res = learning_curve([sio2[i] for i in tr[:60]], [sio2[i] for i in te[:30]], [15, 60])
    assert [r["n_train"] for r in res] == [15, 60]
    assert res[1]["rel_rmse_iso"] < res[0]["rel_rmse_iso"]
    assert all(np.isfinite(r["rmse_aniso_A3"]) for r in res)


def test_error_definitions():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(50, 3, 3))
    t = t + t.transpose(0, 2, 1) + 100 * np.eye(3)
    p = t + 0.1 * np.eye(3)  # pure isotropic error of 0.1
    e = polarizability_errors(p, t)
    assert e["rmse_iso_A3"] == pytest.approx(0.1)
    assert e["rmse_aniso_A3"] == pytest.approx(0.0, abs=1e-12)
    iso = np.trace(t, axis1=1, axis2=2) / 3
    assert e["rel_rmse_iso"] == pytest.approx(0.1 / iso.std())
    # an anisotropic error δ·E^μ: Frobenius norm δ spread over 9 components
    q = t + 0.3 * SPHERICAL_BASIS_L2[0]
    e = polarizability_errors(q, t)
    assert e["rmse_aniso_A3"] == pytest.approx(0.3 / 3.0)
    assert e["rmse_iso_A3"] == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------- persistence and errors


def test_save_load_round_trip_with_radial_scaling(sio2, tmp_path):
    m = PolarizabilityModel(cutoff_A=5.0, radial_scaling=(3.5, 5.0), cv_folds=3).fit(sio2[:12])
    back = PolarizabilityModel.load(m.save(tmp_path / "scaled.npz"))
    assert back.settings_.radial_scaling == (3.5, 5.0) and back.radial_scaling == [3.5, 5.0]
    np.testing.assert_array_equal(back.predict(sio2[12:14]), m.predict(sio2[12:14]))
    assert back.model_id == m.model_id
    # a scaled descriptor needs the version-2 layout, so older readers refuse it by version
    with np.load(tmp_path / "scaled.npz", allow_pickle=False) as z:
        assert json.loads(str(z["header"][()]))["format_version"] == FORMAT_VERSION == 2


def test_save_load_round_trip(small_model, sio2, tmp_path):
    path = small_model.save(tmp_path / "model.npz")
    m = PolarizabilityModel.load(path)
    frames = sio2[:3]
    np.testing.assert_array_equal(m.predict(frames), small_model.predict(frames))
    assert m.model_id == small_model.model_id
    with np.load(path, allow_pickle=False) as z:
        h = json.loads(str(z["header"][()]))
    assert h["format_version"] == 1  # no radial scaling: still readable by version-1 releases
    assert h["species"] == ["O", "Si"]
    assert h["training"]["n_train"] == 10 and len(h["training"]["data_hash"]) == 16
    assert h["hyperparameters"]["cutoff_A"] == 4.0 and h["baseline"] is None
    assert h["ionraman_version"]


def test_wrong_format_version_and_foreign_files(small_model, tmp_path):
    path = small_model.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    h = json.loads(str(arrays.pop("header")[()]))
    h["format_version"] = 99
    bad = tmp_path / "future.npz"
    np.savez(bad, header=np.array(json.dumps(h)), **arrays)
    with pytest.raises(InputError, match="format_version 99"):
        PolarizabilityModel.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match="not an ionraman polarizability model"):
        PolarizabilityModel.load(other)
    with pytest.raises(InputError, match="no such file"):
        PolarizabilityModel.load(tmp_path / "missing.npz")


def test_unknown_species_and_bad_input(small_model, sio2):
    a = sio2[0].copy()
    a.numbers[5] = 11  # Na
    with pytest.raises(InputError, match="Na"):
        small_model.predict([a])
    with pytest.raises(InputError, match="not fitted"):
        PolarizabilityModel().predict(sio2[:1])
    unlabelled = sio2[0].copy()
    unlabelled.info.pop("polarizability")
    with pytest.raises(InputError, match="polarizability"):
        PolarizabilityModel().fit([unlabelled])
    with pytest.raises(InputError, match="no frames"):
        PolarizabilityModel().fit([])


# ----------------------------------------------------------------- Δ-learning


class PerAtomIsotropic:
    """Tiny test baseline: fixed isotropic polarizability per atom × identity."""

    def __init__(self, alpha_per_atom_A3=None):
        self.alpha_per_atom_A3 = dict(alpha_per_atom_A3 or {"Si": 0.8, "O": 1.8})

    def predict(self, frames):
        return np.array([sum(self.alpha_per_atom_A3[s] for s in a.get_chemical_symbols()) * np.eye(3) for a in frames])

    def to_dict(self):
        return {"alpha_per_atom_A3": self.alpha_per_atom_A3}

    @classmethod
    def from_dict(cls, d):
        return cls(d["alpha_per_atom_A3"])


class NoRebuild(PerAtomIsotropic):
    from_dict = None


def test_delta_learning_with_baseline(sio2, split, features, full_model, tmp_path):
    tr, te = split
    test = [sio2[i] for i in te]
    m = PolarizabilityModel(baseline=PerAtomIsotropic()).fit([sio2[i] for i in tr], features=features[tr])
    s_delta = m.score(test, features=features[te])
    s_plain = full_model.score(test, features=features[te])
    assert s_delta["rel_rmse_iso"] <= s_plain["rel_rmse_iso"] * 1.001 + 1e-9
    assert s_delta["rel_rmse_aniso"] <= s_plain["rel_rmse_aniso"] * 1.001 + 1e-9
    # the learned part is the residual: predict = baseline + correction
    iso, _ = m.predict_parts(test[:2], features=features[te[:2]])
    base = PerAtomIsotropic().predict(test[:2])
    np.testing.assert_allclose(np.trace(m.predict(test[:2]), axis1=1, axis2=2) / 3, iso + base[:, 0, 0], rtol=1e-12)
    # saved with its description and rebuilt from to_dict/from_dict
    path = m.save(tmp_path / "delta.npz")
    m2 = PolarizabilityModel.load(path)
    assert isinstance(m2.baseline, PerAtomIsotropic)
    assert m2.baseline_description_["params"] == {"alpha_per_atom_A3": {"Si": 0.8, "O": 1.8}}
    np.testing.assert_array_equal(m2.predict(test[:2]), m.predict(test[:2]))


def test_baseline_that_cannot_be_rebuilt_must_be_passed(sio2, features, tmp_path):
    idx = np.arange(0, 200, 25)
    m = PolarizabilityModel(baseline=NoRebuild()).fit([sio2[i] for i in idx], features=features[idx])
    path = m.save(tmp_path / "m.npz")
    m2 = PolarizabilityModel.load(path)
    with pytest.raises(InputError, match="baseline"):
        m2.predict(sio2[:1])
    m3 = PolarizabilityModel.load(path, baseline=NoRebuild())
    np.testing.assert_array_equal(m3.predict(sio2[:1]), m.predict(sio2[:1]))


# ----------------------------------------------------------------- trajectories


def _write_h5md(path, frames, dt_fs=2.0, temperature_K=300.0):
    from ionraman.trajectory import H5MDWriter

    with H5MDWriter(path, numbers=frames[0].numbers, metadata={"temperature_K": temperature_K}) as w:
        for i, a in enumerate(frames):
            w.append(i, i * dt_fs, a.positions + 0.0, a.cell.array)


def test_predict_trajectory_matches_direct_prediction(small_model, sio2, tmp_path):
    frames = sio2[:7]
    traj = tmp_path / "run.h5"
    _write_h5md(traj, frames)
    res = predict_trajectory(small_model, traj, batch_size=3, progress=False)
    assert res.path == tmp_path / "run.alpha.h5" and res.path.exists()
    assert not (tmp_path / "run.alpha.h5.partial").exists()
    direct = small_model.predict([a.copy() for a in frames])
    np.testing.assert_allclose(res.alpha_A3, direct, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(res.time_fs, np.arange(7) * 2.0)
    assert res.model_id == small_model.model_id
    back = read_alpha_sidecar(res.path)
    np.testing.assert_array_equal(back.alpha_A3, res.alpha_A3)
    assert back.metadata["ionraman_version"] and back.metadata["every"] == 1
    assert back.temperature_K == 300.0
    series = res.to_series()
    assert series.n_frames == 7 and series.dt_fs == pytest.approx(2.0)
    # every = 2 to its own file
    res2 = predict_trajectory(small_model, traj, every=2, progress=True, out_path=tmp_path / "every2.h5")
    np.testing.assert_allclose(res2.alpha_A3, direct[::2], rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(res2.frame_index, [0, 2, 4, 6])


def test_predict_trajectory_resumes(small_model, sio2, tmp_path, monkeypatch):
    frames = sio2[10:16]
    traj = tmp_path / "t.h5"
    _write_h5md(traj, frames)
    full = predict_trajectory(small_model, traj, batch_size=2, progress=False)
    # simulate a run killed after 2 frames: the partial file holds 2 predictions
    side = full.path
    partial = side.with_name(side.name + ".partial")
    side.rename(partial)
    with h5py.File(partial, "a") as f:
        for k in ("alpha_A3", "time_fs", "frame_index"):
            f[k].resize(2, axis=0)
        f.attrs["complete"] = False
    calls = []
    orig = PolarizabilityModel.predict

    def counting(self, fr, features=None):
        calls.append(len(fr))
        return orig(self, fr, features)

    monkeypatch.setattr(PolarizabilityModel, "predict", counting)
    res = predict_trajectory(small_model, traj, batch_size=2, progress=False)
    assert sum(calls) == 4  # only the missing frames were predicted
    np.testing.assert_allclose(res.alpha_A3, full.alpha_A3, rtol=1e-12)
    # a complete sidecar for the same model is reused without predicting
    calls.clear()
    predict_trajectory(small_model, traj, progress=False)
    assert calls == []


def test_species_in_one_training_frame_stays_finite():
    """A species seen in one training frame only (its λ=0 block lies in the span of the counts)
    must not have its features rescaled by the round-off left after the count projection
    (that once gave a learning-curve point with relative iso RMSE 6e12)."""
    from pathlib import Path

    datasets = Path(__file__).resolve().parents[1] / "src" / "ionraman" / "data" / "datasets"
    cubic = read_labelled(datasets / "Na3SbS4-cubic.xyz")
    doped = read_labelled(datasets / "Na3SbS4-cubic-W0.5.xyz")
    m = PolarizabilityModel(cutoff_A=4.0, max_radial=3, max_angular=2, cv_folds=5).fit(cubic[:4] + doped[:1])
    test = cubic[4:8] + doped[1:5]
    pred = m.predict(test)
    true = np.array([get_alpha(a) for a in test])
    iso_err = np.abs(np.trace(pred - true, axis1=1, axis2=2) / 3)
    # 5 labels fix little beyond the per-species intercepts; the doped labels alone spread over
    # 68–86 Å³ (std 5 Å³), so the errors are of that size (measured: at most 14.7 Å³), not 10¹²
    assert np.all(np.isfinite(pred))
    assert iso_err.max() < 20.0
