"""Tests of ionraman.transport on synthetic trajectories with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ase import Atoms
from ase.data import atomic_masses

from ionraman import transport as tr
from ionraman.errors import InputError
from ionraman.trajectory import Trajectory
from ionraman.units import C_CM_PER_S, E_CHARGE_C, KB_EV_PER_K, KB_J_PER_K

A2_PER_FS_PER_CM2_PER_S = 10.0  # 1 cm²/s = 1e16 Å² / 1e15 fs


def _traj(pos, dt_fs, numbers=None, cell_A=20.0, velocities=None, temperature_K=600.0, metadata=None):
    n_f, n_a, _ = pos.shape
    return Trajectory(
        numbers=np.full(n_a, 11) if numbers is None else np.asarray(numbers),
        positions=pos,
        cells=np.tile(np.eye(3) * cell_A, (n_f, 1, 1)),
        time_fs=np.arange(n_f) * dt_fs,
        velocities=velocities,
        temperature_K=temperature_K,
        metadata=metadata or {},
    )


def _random_walk(D_cm2_s, n_frames, n_atoms, dt_fs, seed):
    """Gaussian 3D random walk: each Cartesian step ~ N(0, 2 D dt)."""
    rng = np.random.default_rng(seed)
    D = D_cm2_s * A2_PER_FS_PER_CM2_PER_S
    steps = rng.normal(0.0, math.sqrt(2 * D * dt_fs), (n_frames - 1, n_atoms, 3))
    start = rng.uniform(0, 20, (1, n_atoms, 3))
    return np.concatenate([start, start + np.cumsum(steps, axis=0)])


D_TRUE = 1e-5  # cm²/s
DT = 10.0  # fs


@pytest.fixture(scope="module")
def walk():
    return _traj(_random_walk(D_TRUE, 2000, 100, DT, seed=1), DT)


# --------------------------------------------------------------------------- MSD


def _direct_msd(pos):
    """O(N²) MSD: explicit average over every origin."""
    n = pos.shape[0]
    out = np.zeros(n)
    for lag in range(1, n):
        d = pos[lag:] - pos[:-lag]
        out[lag] = np.mean(np.sum(d**2, axis=-1))
    return out


def test_fft_msd_equals_direct_msd():
    rng = np.random.default_rng(3)
    pos = np.cumsum(rng.normal(0, 0.3, (60, 5, 3)), axis=0) + 7.0
    numbers = [11, 11, 11, 17, 17]
    traj = _traj(pos, 2.0, numbers=numbers)
    r = tr.msd(traj, "Na", remove_com_drift=False)
    np.testing.assert_allclose(r.msd_A2, _direct_msd(pos[:, :3]), rtol=0, atol=1e-10)
    np.testing.assert_allclose(r.msd_components_A2.sum(axis=1), r.msd_A2, atol=1e-12)
    np.testing.assert_allclose(r.lag_fs, np.arange(60) * 2.0)
    assert r.n_atoms == 3
    # with the drift removed: the same as a direct MSD of positions in the mass-weighted COM frame
    m = atomic_masses[numbers]
    com = (pos * m[None, :, None]).sum(axis=1) / m.sum()
    ref = _direct_msd(pos[:, :3] - (com - com[0])[:, None, :])
    np.testing.assert_allclose(tr.msd(traj, "Na").msd_A2, ref, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- diffusion


def test_random_walk_D_kinisi(walk):
    r = tr.diffusion_coefficient(walk, "Na")
    assert r.method == "kinisi"
    assert abs(r.D_cm2_s - D_TRUE) < 3 * r.D_err_cm2_s
    assert 0 < r.D_err_cm2_s < 0.2 * D_TRUE
    # default window: 10 % of the 19.99 ps run (≥ 1 ps) … 50 %
    assert r.fit_start_ps == pytest.approx(2.0, abs=0.05)
    assert r.fit_stop_ps == pytest.approx(10.0, abs=0.05)
    assert (r.symbol, r.n_atoms, r.temperature_K) == ("Na", 100, 600.0)
    # reproducible with the same seed, and the global random state is left alone
    state = np.random.get_state()[1][:5].copy()
    r2 = tr.diffusion_coefficient(walk, "Na")
    assert r2.D_cm2_s == r.D_cm2_s
    np.testing.assert_array_equal(np.random.get_state()[1][:5], state)


def test_random_walk_D_block(walk):
    r = tr.diffusion_coefficient(walk, "Na", method="block", n_blocks=5)
    assert r.method == "block" and r.n_blocks == 5 and len(r.block_D_cm2_s) == 5
    assert abs(r.D_cm2_s - D_TRUE) < 3 * r.D_err_cm2_s
    assert 0 < r.D_err_cm2_s < 0.2 * D_TRUE
    assert r.D_err_cm2_s == pytest.approx(np.std(r.block_D_cm2_s, ddof=1) / math.sqrt(5))


def test_com_drift_does_not_change_D(walk):
    t = walk.time_fs
    drift = np.array([0.01, -0.02, 0.005])  # Å/fs, i.e. 200 Å over the run
    moved = _traj(walk.positions + t[:, None, None] * drift, DT)
    a = tr.diffusion_coefficient(walk, "Na", method="block")
    b = tr.diffusion_coefficient(moved, "Na", method="block")
    assert b.D_cm2_s == pytest.approx(a.D_cm2_s, rel=1e-8)
    # without the correction the drift is (wrongly) counted as transport
    c = tr.diffusion_coefficient(moved, "Na", method="block", remove_com_drift=False)
    assert c.D_cm2_s > 10 * a.D_cm2_s


def test_not_diffusing_gives_small_D_with_error():
    rng = np.random.default_rng(5)
    pos = 5.0 + rng.normal(0, 0.1, (600, 30, 3))  # vibrating, never leaving
    traj = _traj(pos, DT)
    k = tr.diffusion_coefficient(traj, "Na")
    # kinisi: D ≥ 0 by its prior and its random-walk covariance model does not fit
    # a plateau, so it returns a small positive D — an upper bound, ≪ 1e-5 of an
    # ion conductor (see docs/physics/transport.md)
    assert 0 <= k.D_cm2_s < 0.03 * D_TRUE and 0 < k.D_err_cm2_s < 0.01 * D_TRUE
    b = tr.diffusion_coefficient(traj, "Na", method="block")
    assert abs(b.D_cm2_s) < 3 * b.D_err_cm2_s and 0 < b.D_err_cm2_s < 0.01 * D_TRUE


# --------------------------------------------------------------------------- conductivity


def test_nernst_einstein_hand_computed():
    # n = 10 / 1000 Å³ = 1e22 cm⁻³; σ = n e² D / (k_B T)
    expected = 1e22 * 1.602176634e-19**2 * 1e-5 / (1.380649e-23 * 300.0)
    assert expected == pytest.approx(0.61975, rel=1e-4)
    r = tr.nernst_einstein_conductivity(1e-5, 10, 1000.0, "Na", 300.0, D_err_cm2_s=2e-6)
    assert r.sigma_S_cm == pytest.approx(expected, rel=1e-12)
    assert r.sigma_err_S_cm == pytest.approx(0.2 * expected, rel=1e-12)
    assert r.number_density_cm3 == pytest.approx(1e22)
    assert r.charge == 1
    # z² scaling and the Haven ratio
    r2 = tr.nernst_einstein_conductivity(1e-5, 10, 1000.0, 2, 300.0, haven_ratio=0.5)
    assert r2.sigma_S_cm == pytest.approx(8 * expected, rel=1e-12)
    assert tr.formal_charge("Mg") == 2 and tr.formal_charge("Li") == 1
    assert E_CHARGE_C == 1.602176634e-19 and KB_J_PER_K == 1.380649e-23


# --------------------------------------------------------------------------- Arrhenius


def test_arrhenius_recovers_Ea():
    rng = np.random.default_rng(7)
    Ea, D0 = 0.25, 1e-3
    T = np.array([500.0, 600.0, 700.0, 800.0, 900.0, 1000.0])
    D = D0 * np.exp(-Ea / (KB_EV_PER_K * T)) * np.exp(rng.normal(0, 0.05, T.size))
    r = tr.arrhenius_fit(T, D, 0.05 * D)
    assert abs(r.Ea_eV - Ea) < 3 * r.Ea_err_eV
    assert 0 < r.Ea_err_eV < 0.03
    assert abs(math.log(r.D0_cm2_s / D0)) < 3 * r.D0_err_cm2_s / r.D0_cm2_s
    x = r.extrapolate(300.0)
    truth = D0 * math.exp(-Ea / (KB_EV_PER_K * 300.0))
    assert abs(x.D_cm2_s - truth) < 3 * x.D_err_cm2_s
    assert x.D_low_cm2_s < x.D_cm2_s < x.D_high_cm2_s


def test_arrhenius_two_points_propagates_errors():
    T = np.array([600.0, 900.0])
    D = 1e-3 * np.exp(-0.3 / (KB_EV_PER_K * T))
    r = tr.arrhenius_fit(T, D, [0.1 * D[0], 0.1 * D[1]])
    assert r.Ea_eV == pytest.approx(0.3, rel=1e-10)
    # σ(Eₐ) = k_B √(σ₁² + σ₂²) / |1/T₁ − 1/T₂| with σᵢ = σ(ln Dᵢ) = 0.1
    assert r.Ea_err_eV == pytest.approx(KB_EV_PER_K * math.sqrt(0.02) / (1 / 600 - 1 / 900), rel=1e-10)
    assert r.error_source == "propagated"


# --------------------------------------------------------------------------- van Hove and α₂


def test_van_hove_matches_gaussian(walk):
    D = D_TRUE * A2_PER_FS_PER_CM2_PER_S
    r = tr.van_hove_self(walk, "Na", [500.0, 2000.0], remove_com_drift=False)
    dr = np.diff(r.r_edges_A)
    for j, t in enumerate(r.times_fs):
        p = r.radial_A1[j]
        assert np.sum(p * dr) + r.fraction_beyond_r_max[j] == pytest.approx(1.0, abs=0.005)
        assert np.sum(r.r_A**2 * p * dr) == pytest.approx(6 * D * t, rel=0.05)  # ⟨r²⟩ = 6Dt
        assert np.sum(r.r_A * p * dr) == pytest.approx(math.sqrt(16 * D * t / math.pi), rel=0.03)  # ⟨r⟩
        gauss = 4 * np.pi * r.r_A**2 * (4 * np.pi * D * t) ** -1.5 * np.exp(-(r.r_A**2) / (4 * D * t))
        assert np.abs(p - gauss).max() < 0.1 * gauss.max()


def test_non_gaussian_parameter(walk):
    r = tr.non_gaussian_parameter(walk, "Na")
    short = r.lag_fs <= 2000.0
    assert np.abs(r.alpha2[short]).max() < 0.05
    assert abs(np.mean(r.alpha2)) < 0.05
    # half the particles frozen (small vibration): strongly non-Gaussian
    rng = np.random.default_rng(11)
    pos = walk.positions.copy()
    pos[:, :50] = 5.0 + rng.normal(0, 0.05, (walk.n_frames, 50, 3))
    mixed = tr.non_gaussian_parameter(_traj(pos, DT), "Na")
    assert mixed.alpha2[-1] > 0.5
    assert np.all(mixed.alpha2 > 0)


# --------------------------------------------------------------------------- VDOS


def test_vdos_harmonic_oscillator_peak():
    rng = np.random.default_rng(2)
    n_f, n_a, dt = 4000, 8, 2.0
    w = 2 * np.pi * 200.0 * C_CM_PER_S * 1e-15  # 200 cm⁻¹ as angular frequency in rad/fs
    t = np.arange(n_f) * dt
    phi = rng.uniform(0, 2 * np.pi, (n_a, 3))
    vel = 0.1 * w * np.cos(w * t[:, None, None] + phi)
    pos = 5.0 + 0.1 * np.sin(w * t[:, None, None] + phi)
    traj = _traj(pos, dt, numbers=[3] * 4 + [11] * 4, velocities=vel)
    for window in ("hann", None):
        r = tr.vdos(traj, window=window)
        assert abs(r.peak_cm1 - 200.0) <= r.resolution_cm1
        assert np.trapezoid(r.dos_per_cm1, r.frequency_cm1) == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(r.frequency_THz * 1e12 / C_CM_PER_S, r.frequency_cm1)
    assert tr.vdos(traj, "Li").peak_cm1 == pytest.approx(200.0, abs=5.0)


def test_vdos_overlap_of_shifted_gaussians_is_erfc():
    from math import erfc, sqrt

    nu = np.linspace(0, 1000, 20001)

    def g(center, sigma=20.0):
        y = np.exp(-0.5 * ((nu - center) / sigma) ** 2)
        return tr.VDOSResult(None, nu, nu / 33.356, y / np.trapezoid(y, nu), np.zeros(1), np.zeros(1), None, True, 1.0)

    assert tr.vdos_overlap(g(300), g(300)) == pytest.approx(1.0, abs=1e-9)
    for delta in (10.0, 40.0, 100.0):
        assert tr.vdos_overlap(g(300), g(300 + delta)) == pytest.approx(erfc(delta / (2 * sqrt(2) * 20.0)), abs=1e-4)
    assert tr.vdos_overlap(g(200), g(700)) < 1e-6


# --------------------------------------------------------------------------- sites


A_LAT, N_CELL = 3.0, 4
GRID = np.array([[i, j, k] for i in range(N_CELL) for j in range(N_CELL) for k in range(N_CELL)], float) * A_LAT


def test_vibrating_lattice_has_no_hops():
    rng = np.random.default_rng(4)
    pos = GRID[None] + rng.normal(0, 0.1, (300, len(GRID), 3))
    r = tr.site_occupancy_analysis(_traj(pos, DT, cell_A=A_LAT * N_CELL), "Na")
    assert r.away_fraction < 0.001
    assert r.n_hops == 0 and r.regime == "immobile"
    assert r.n_sites == 64
    assert 0.6 < r.r_site_A < 0.76  # ¼ of the ≈3 Å site spacing
    np.testing.assert_allclose(r.site_occupancy, 1.0, atol=0.01)


def test_hopping_ions_counted():
    rng = np.random.default_rng(6)
    occupied = np.flatnonzero(GRID[:, 0] / A_LAT % 2 == 0)  # 32 ions, the other 32 sites are vacant
    n_f = 300
    base = np.repeat(GRID[occupied][None], n_f, axis=0)
    step = np.array([A_LAT, 0, 0])

    def hop(ion, f0, f1, vec):  # move ion by vec from frame f0 on, via two transit frames
        base[f0:, ion] += vec
        base[f0 - 2, ion] += vec / 3
        base[f0 - 1, ion] += 2 * vec / 3

    for ion in range(10):  # 10 single hops to the vacant +x neighbour (one across the boundary)
        hop(ion, 100, None, step if ion else -step)
    for ion in range(10, 15):  # 5 ions hop there and back: 2 hops each
        hop(ion, 100, None, step)
        hop(ion, 200, None, -step)
    for ion in range(15, 20):  # failed hops: 1 frame (10 fs) on the neighbour site, then back
        base[150, ion] += step
    pos = base + rng.normal(0, 0.08, base.shape)
    ref = Atoms("Na64", positions=GRID, cell=np.eye(3) * A_LAT * N_CELL, pbc=True)
    r = tr.site_occupancy_analysis(_traj(pos, DT, cell_A=A_LAT * N_CELL), "Na", reference_atoms=ref)
    assert r.n_sites == 64 and r.n_ions == 32
    assert r.n_hops == 20
    assert r.regime == "hopping"
    assert 0 < r.away_fraction < 0.01  # only the transit frames are off-site
    assert r.mean_residence_fs == pytest.approx(32 * 299 * DT / 20)
    assert r.site_occupancy.sum() == pytest.approx(32, abs=0.5)


# --------------------------------------------------------------------------- analyse and plots


def test_analyse_to_json(walk):
    rng = np.random.default_rng(8)
    frame = 10.0 + rng.normal(0, 0.05, (walk.n_frames, 20, 3))  # a heavy, immobile "framework"
    pos = np.concatenate([walk.positions, frame], axis=1)
    numbers = [11] * 100 + [17] * 20
    traj = _traj(pos, DT, numbers=numbers, metadata={"mobile_ion": "Na"})
    res = tr.analyse(traj, method="block")
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert set(d) >= {"temperature_K", "species", "duration_ps", "n_frames"}
    assert list(d["species"]) == ["Na"]
    na = d["species"]["Na"]
    assert abs(na["D_cm2_s"] - D_TRUE) < 3 * na["D_err_cm2_s"]
    vol = 20.0**3
    ne = tr.nernst_einstein_conductivity(na["D_cm2_s"], 100, vol, 1, 600.0)
    assert na["sigma_S_cm"] == pytest.approx(ne.sigma_S_cm)
    assert na["sigma_err_S_cm"] == pytest.approx(ne.sigma_S_cm * na["D_err_cm2_s"] / na["D_cm2_s"])
    assert na["method"] == "block" and na["n_hops"] > 0 and 0 <= na["away_from_site_fraction"] <= 1
    assert d["n_frames"] == 2000 and d["duration_ps"] == pytest.approx(19.99)
    # all species by default, σ left out for a species without a known charge
    allsp = tr.analyse(_traj(pos, DT, numbers=[11] * 100 + [26] * 20), method="block", sites=False).to_dict()
    assert set(allsp["species"]) == {"Na", "Fe"} and allsp["species"]["Fe"]["sigma_S_cm"] is None


def test_plots_write_png(tmp_path, walk):
    d = tr.diffusion_coefficient(walk, "Na", method="block")
    T = np.array([500.0, 700.0, 900.0])
    D = 1e-3 * np.exp(-0.2 / (KB_EV_PER_K * T))
    rng = np.random.default_rng(0)
    v = rng.normal(size=(256, 4, 3))
    files = [
        tr.plot_msd([d, tr.msd(walk, "Na")], tmp_path / "msd.png"),
        tr.plot_arrhenius(tr.arrhenius_fit(T, D, 0.05 * D), tmp_path / "arr.png"),
        tr.plot_van_hove(tr.van_hove_self(walk, "Na", [100.0, 1000.0]), tmp_path / "vh.png"),
        tr.plot_vdos(tr.vdos(_traj(np.cumsum(v, 0), 1.0, velocities=v)), tmp_path / "vdos.png"),
    ]
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- bad input


def test_too_short_for_fit_window():
    traj = _traj(_random_walk(D_TRUE, 41, 4, DT, seed=0), DT)  # 0.4 ps
    with pytest.raises(InputError, match=r"0\.4 ps of trajectory but the fit window starts at 1 ps"):
        tr.diffusion_coefficient(traj, "Na", fit_start_ps=1.0)
    with pytest.raises(InputError, match="fit window stops"):
        tr.diffusion_coefficient(traj, "Na", fit_start_ps=0.1, fit_stop_ps=2.0)
    with pytest.raises(InputError, match="fit window"):
        tr.diffusion_coefficient(_traj(_random_walk(D_TRUE, 4, 4, DT, seed=0), DT), "Na")
    with pytest.raises(InputError, match="blocks"):
        tr.diffusion_coefficient(traj, "Na", method="block", n_blocks=20)


def test_missing_velocities_for_vdos(walk):
    with pytest.raises(InputError, match="velocities"):
        tr.vdos(walk)


def test_unknown_species_and_charge(walk):
    with pytest.raises(InputError, match="no K atoms"):
        tr.msd(walk, "K")
    with pytest.raises(InputError, match="not an element symbol"):
        tr.diffusion_coefficient(walk, "Xx")
    with pytest.raises(InputError, match="formal charge"):
        tr.nernst_einstein_conductivity(1e-5, 10, 1000.0, "Xe", 300.0)
    with pytest.raises(InputError, match="method"):
        tr.diffusion_coefficient(walk, "Na", method="ols")


def test_bad_arrhenius_input():
    with pytest.raises(InputError, match="2 different temperatures"):
        tr.arrhenius_fit([600.0], [1e-5], [1e-6])
    with pytest.raises(InputError, match="positive D"):
        tr.arrhenius_fit([600.0, 700.0], [1e-5, -1e-6], [1e-6, 1e-6])
