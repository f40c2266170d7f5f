"""Tests of ionraman.raman: spectra of synthetic polarizability series with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from ionraman.errors import InputError
from ionraman.raman import (
    PolarizabilitySeries,
    RamanSpectrum,
    bose_einstein,
    compute_spectrum,
    lorentzian_broadened_lines,
    parse_geometry,
    polarizability_invariants,
    quantum_correction_factor,
    representation_factor,
    trapezoid_weights,
    welch_psd,
)
from ionraman.units import C_CM_PER_S, HC_EV_CM, KB_EV_PER_K

POWDER = ("VV", "VH", "unpolarized", "isotropic", "anisotropic")


def _sym(rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(3, 3))
    return a + a.T


def _random_series(n: int = 4096, dt: float = 1.0, seed: int = 0, T: float = 300.0) -> PolarizabilitySeries:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 3, 3))
    a = a + np.swapaxes(a, 1, 2) + 50.0 * np.eye(3)
    return PolarizabilitySeries.from_array(a, dt, T)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


# --------------------------------------------------------------------------- input


def test_voigt_and_flat_layouts_give_the_same_tensors(tmp_path):
    rng = np.random.default_rng(1)
    full = np.array([_sym(rng) for _ in range(10)])
    voigt = np.stack([full[:, 0, 0], full[:, 1, 1], full[:, 2, 2], full[:, 1, 2], full[:, 0, 2], full[:, 0, 1]], axis=1)
    np.save(tmp_path / "v.npy", voigt)
    np.save(tmp_path / "f.npy", full.reshape(10, 9))
    a = PolarizabilitySeries.from_npy(tmp_path / "v.npy", dt_fs=2.0)
    b = PolarizabilitySeries.from_npy(tmp_path / "f.npy", dt_fs=2.0)
    np.testing.assert_allclose(a.alpha_A3, full)
    np.testing.assert_allclose(b.alpha_A3, full)
    assert a.dt_fs == 2.0 and a.time_fs[-1] == 18.0


def test_extxyz_loader_reads_polarizability_and_names_missing_frame(tmp_path):
    from ase import Atoms
    from ase.io import write

    rng = np.random.default_rng(2)
    frames = []
    tensors = []
    for _ in range(4):
        at = Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]], cell=[5.6] * 3, pbc=True)
        t = _sym(rng) + 30 * np.eye(3)
        at.info["polarizability"] = t.ravel()
        tensors.append(t)
        frames.append(at)
    write(tmp_path / "a.xyz", frames, format="extxyz")
    s = PolarizabilitySeries.from_extxyz(tmp_path / "a.xyz", dt_fs=1.0)
    np.testing.assert_allclose(s.alpha_A3, np.array(tensors), rtol=1e-6)
    del frames[2].info["polarizability"]
    write(tmp_path / "b.xyz", frames, format="extxyz")
    with pytest.raises(InputError, match=r"b\.xyz: frame 2 has no 'polarizability'"):
        PolarizabilitySeries.from_extxyz(tmp_path / "b.xyz", dt_fs=1.0)


def test_nan_in_alpha_is_rejected_naming_the_frame():
    a = np.tile(np.eye(3), (20, 1, 1))
    a[7, 0, 1] = np.nan
    with pytest.raises(InputError, match=r"frame 7 .*NaN"):
        PolarizabilitySeries.from_array(a, 1.0)


def test_unequal_times_and_asymmetric_tensors_are_rejected_small_asymmetry_symmetrised():
    a = np.tile(np.eye(3) * 10, (5, 1, 1))
    with pytest.raises(InputError, match="not equally spaced"):
        PolarizabilitySeries(np.array([0.0, 1.0, 2.0, 3.5, 4.5]), a)
    b = a.copy()
    b[3, 0, 1] = 5.0
    with pytest.raises(InputError, match="frame 3 is not symmetric"):
        PolarizabilitySeries(np.arange(5.0), b)
    c = a.copy()
    c[2, 0, 1] = 0.02
    s = PolarizabilitySeries(np.arange(5.0), c)
    assert s.alpha_A3[2, 0, 1] == pytest.approx(0.01) and s.alpha_A3[2, 1, 0] == pytest.approx(0.01)


def test_invariants_match_the_textbook_formula():
    a = np.array([[1.0, 0.2, 0.3], [0.2, 2.0, -0.4], [0.3, -0.4, 4.0]])
    mean, g2 = polarizability_invariants(a)
    xx, yy, zz, xy, yz, zx = 1.0, 2.0, 4.0, 0.2, -0.4, 0.3
    ref = 0.5 * ((xx - yy) ** 2 + (yy - zz) ** 2 + (zz - xx) ** 2) + 3 * (xy**2 + yz**2 + zx**2)
    assert mean == pytest.approx(7.0 / 3.0)
    assert g2 == pytest.approx(ref, rel=1e-14)


# --------------------------------------------------------------------------- geometry


def test_porto_parsing():
    (name, ei, eo), = parse_geometry("x(zz)x̄")
    assert name == "x(zz)-x" and np.allclose(ei, [0, 0, 1]) and np.allclose(eo, [0, 0, 1])
    (name, ei, eo), = parse_geometry("z(xy)-z")
    assert name == "z(xy)-z" and np.allclose(ei, [1, 0, 0]) and np.allclose(eo, [0, 1, 0])
    assert parse_geometry("zbar(yx)z")[0][0] == "-z(yx)z"
    assert [g[0] for g in parse_geometry("powder")] == list(POWDER)
    assert parse_geometry("HV")[0][0] == "VH"
    (name, ei, eo), = parse_geometry(([1, 1, 0], [0, 0, 2]))
    assert np.allclose(ei, [2**-0.5, 2**-0.5, 0]) and np.allclose(eo, [0, 0, 1])
    with pytest.raises(InputError, match="transverse"):
        parse_geometry("x(xz)y")
    with pytest.raises(InputError, match="not understood"):
        parse_geometry("x(zq)x")


# --------------------------------------------------------------------------- spectra


def test_parseval_unwindowed_single_segment():
    s = _random_series(n=4096, dt=1.0, seed=3)
    sp = compute_spectrum(s, "powder", n_segments=1, window=None, representation="classical")
    f = sp.frequency_cm1
    assert f[-1] == pytest.approx(s.nyquist_cm1, rel=1e-12)
    assert f[1] - f[0] == pytest.approx(1.0 / (C_CM_PER_S * s.duration_ps * 1e-12), rel=1e-12)
    a = s.alpha_A3
    abar = np.trace(a, axis1=1, axis2=2) / 3
    _, g2 = polarizability_invariants(a - a.mean(axis=0))
    var_iso, mean_g2 = abar.var(), g2.mean()
    assert np.trapezoid(sp.channel("isotropic"), f) == pytest.approx(var_iso, rel=1e-6)
    assert np.trapezoid(sp.channel("anisotropic"), f) == pytest.approx(mean_g2, rel=1e-6)
    assert np.trapezoid(sp.channel("VV"), f) == pytest.approx(var_iso + 4 / 45 * mean_g2, rel=1e-6)
    assert np.trapezoid(sp.channel("VH"), f) == pytest.approx(mean_g2 / 15, rel=1e-6)
    assert np.all(np.isnan(sp.errors["VV"]))  # one segment: no standard error
    # the scalar helper obeys the same convention
    x = abar - abar.mean()
    fr, p = welch_psd(x, 1.0, window=None)
    assert np.trapezoid(p[0], fr) == pytest.approx(np.mean(x**2), rel=1e-10)


def test_cosine_modulation_peaks_at_omega0_isotropic_tensor_has_no_vh():
    rng = np.random.default_rng(4)
    dt, n, w0 = 1.0, 2**15, 300.0
    t = dt * np.arange(n)
    s_t = np.cos(2 * np.pi * C_CM_PER_S * w0 * t * 1e-15)
    noise = 0.05 * rng.normal(size=(n, 3, 3))
    noise = noise + np.swapaxes(noise, 1, 2)
    iso = PolarizabilitySeries.from_array(40 * np.eye(3) + 2.0 * s_t[:, None, None] * np.eye(3) + noise, dt, 300)
    sp = compute_spectrum(iso, "powder", segment_ps=4.0, max_frequency_cm1=1000)
    res = sp.metadata["frequency_resolution_cm1"]
    f = sp.frequency_cm1
    assert f[-1] <= 1000
    for ch in ("VV", "isotropic", "unpolarized"):
        assert abs(f[np.argmax(sp.channel(ch))] - w0) <= res
    k = np.argmin(abs(f - w0))
    assert sp.channel("VH")[k] < 1e-3 * sp.channel("VV")[k]
    assert sp.channel("isotropic")[k] > 0.99 * sp.channel("VV")[k]
    # a traceless modulation: the line moves entirely into the anisotropic channels
    m = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    an = PolarizabilitySeries.from_array(40 * np.eye(3) + 2.0 * s_t[:, None, None] * m + noise, dt, 300)
    sa = compute_spectrum(an, ["VV", "VH", "isotropic", "anisotropic", "z(xy)-z", "x(zz)-x"], segment_ps=4.0)
    fa = sa.frequency_cm1
    k = np.argmin(abs(fa - w0))
    assert abs(fa[np.argmax(sa.channel("VH"))] - w0) <= res
    assert sa.channel("isotropic")[k] < 1e-3 * sa.channel("anisotropic")[k]
    assert sa.channel("VH")[k] / sa.channel("VV")[k] == pytest.approx(0.75, rel=1e-3)  # (1/15)/(4/45)
    assert abs(fa[np.argmax(sa.channel("z(xy)-z"))] - w0) <= res
    assert sa.channel("x(zz)-x")[k] < 1e-3 * sa.channel("z(xy)-z")[k]


def test_error_bars_are_the_standard_error_of_the_segment_mean():
    sp = compute_spectrum(_random_series(n=2**14, seed=5), "isotropic", n_segments=16, representation="classical")
    seg = sp.segment_spectra["isotropic"]
    K = seg.shape[0]
    assert K == 16
    fac = sp.metadata["overlap_variance_factor"]
    assert 1.0 < fac < 1.1  # Hann, 50 % overlap: ρ(1) = 1/6 (Welch 1967)
    np.testing.assert_allclose(sp.errors["isotropic"], seg.std(axis=0, ddof=1) / np.sqrt(K) * np.sqrt(fac))
    np.testing.assert_allclose(sp.channel("isotropic"), seg.mean(axis=0))
    # white noise: relative error ≈ 1/√K_eff
    rel = np.median(sp.errors["isotropic"][5:-5] / sp.channel("isotropic")[5:-5])
    assert 0.15 < rel < 0.35


def test_static_limit_prefactors_vh_over_vv():
    rng = np.random.default_rng(6)
    A = _sym(rng)
    abar, g2 = polarizability_invariants(A)
    n = 2**12
    s_t = lfilter([1.0], [1.0, -0.9], rng.normal(size=n))
    alpha = 30 * np.eye(3) + _sym(rng) + s_t[:, None, None] * A
    sp = compute_spectrum(PolarizabilitySeries.from_array(alpha, 1.0, 300), "powder", representation="classical")
    f = sp.frequency_cm1
    vv, vh = np.trapezoid(sp.channel("VV"), f), np.trapezoid(sp.channel("VH"), f)
    assert vh / vv == pytest.approx(3 * g2 / (45 * abar**2 + 4 * g2), rel=1e-10)
    np.testing.assert_allclose(sp.channel("isotropic"), sp.channel("VV") - 4 / 3 * sp.channel("VH"), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(sp.channel("unpolarized"), sp.channel("VV") + sp.channel("VH"), rtol=1e-12)
    np.testing.assert_allclose(sp.channel("VH"), sp.channel("anisotropic") / 15, rtol=1e-12)


def test_rotation_leaves_powder_channels_invariant_but_not_single_crystal():
    rng = np.random.default_rng(7)
    s = _random_series(n=2**12, seed=8)
    R = _random_rotation(rng)
    rot = PolarizabilitySeries.from_array(np.einsum("ij,tjk,lk->til", R, s.alpha_A3, R), 1.0, 300)
    geo = list(POWDER) + ["x(zz)-x", "z(xy)-z"]
    a = compute_spectrum(s, geo)
    b = compute_spectrum(rot, geo)
    for ch in POWDER:
        scale = np.max(np.abs(a.channel(ch)))
        assert np.max(np.abs(a.channel(ch) - b.channel(ch))) / scale < 1e-10, ch
    for ch in ("x(zz)-x", "z(xy)-z"):
        rel = np.max(np.abs(a.channel(ch) - b.channel(ch))) / np.max(np.abs(a.channel(ch)))
        assert rel > 1e-2, ch


def test_powder_vv_is_the_orientational_average_of_single_crystal_zz():
    """Average e·α·e over many random orientations ≈ VV (Monte Carlo, 2 % level)."""
    rng = np.random.default_rng(9)
    s = _random_series(n=2**11, seed=10)
    sp = compute_spectrum(s, "powder", n_segments=4, representation="classical")
    geos = []
    for _ in range(400):
        R = _random_rotation(rng)
        geos.append((R[:, 2], R[:, 2]))
    names = {f"g{i}": g for i, g in enumerate(geos)}
    sc = compute_spectrum(s, names, n_segments=4, representation="classical")
    f = sp.frequency_cm1
    avg = np.mean([np.trapezoid(sc.channel(k), f) for k in names])
    assert avg == pytest.approx(np.trapezoid(sp.channel("VV"), f), rel=0.03)


# --------------------------------------------------------------------------- temperature factors


def test_detailed_balance_and_reduced_spectrum():
    T = 300.0
    s = _random_series(n=2**12, seed=11, T=T)
    st = compute_spectrum(s, "powder", include_antistokes=True, representation="stokes", max_frequency_cm1=2000)
    f = st.frequency_cm1
    assert f[0] == pytest.approx(-f[-1]) and np.count_nonzero(f == 0) == 1
    pos = f > 0
    nu = f[pos]
    x = HC_EV_CM * nu / (KB_EV_PER_K * T)
    for ch in POWDER:
        i_s = st.channel(ch)[pos]
        i_as = st.channel(ch)[::-1][pos]  # value at −ν̃
        np.testing.assert_allclose(i_as / i_s, np.exp(-x), rtol=1e-10)
    red = st.as_representation("reduced")
    n = bose_einstein(nu, T)
    np.testing.assert_allclose(red.channel("VV")[pos] * (n + 1), st.channel("VV")[pos], rtol=1e-10)
    # harmonic correction: the reduced spectrum is βħω times the classical one
    cl = compute_spectrum(s, "powder", representation="classical", max_frequency_cm1=2000)
    rd = compute_spectrum(s, "powder", representation="reduced", max_frequency_cm1=2000)
    np.testing.assert_allclose(rd.channel("VV")[1:], x[: rd.frequency_cm1.size - 1] * cl.channel("VV")[1:], rtol=1e-12)
    # Stokes ↔ classical round trip, and Q(0) = 1
    back = st.as_representation("classical")
    np.testing.assert_allclose(back.channel("VV")[pos], cl.channel("VV")[1:], rtol=1e-12)
    assert quantum_correction_factor(0.0, T) == 1.0


@pytest.mark.parametrize("kind", ["harmonic", "standard", "schofield"])
def test_every_quantum_correction_obeys_detailed_balance(kind):
    nu = np.linspace(1, 3000, 50)
    T = 250.0
    q = quantum_correction_factor(nu, T, kind)
    qm = quantum_correction_factor(-nu, T, kind)
    np.testing.assert_allclose(qm / q, np.exp(-HC_EV_CM * nu / (KB_EV_PER_K * T)), rtol=1e-12)


def test_harmonic_correction_equals_bose_times_betahbaromega():
    nu = np.linspace(0.5, 1500, 40)
    T = 500.0
    x = HC_EV_CM * nu / (KB_EV_PER_K * T)
    np.testing.assert_allclose(quantum_correction_factor(nu, T), x * (bose_einstein(nu, T) + 1), rtol=1e-12)
    np.testing.assert_allclose(representation_factor(nu, "reduced", T, "none"), 1 / (bose_einstein(nu, T) + 1), rtol=1e-12)


def test_laser_factor_multiplies_stokes():
    s = _random_series(n=2**11, seed=12)
    a = compute_spectrum(s, "VV", max_frequency_cm1=3000)
    b = compute_spectrum(s, "VV", max_frequency_cm1=3000, laser_wavelength_nm=532.0)
    nuL = 1e7 / 532.0
    np.testing.assert_allclose(b.channel("VV"), a.channel("VV") * ((nuL - a.frequency_cm1) / nuL) ** 4, rtol=1e-12)
    np.testing.assert_allclose(b.as_representation("reduced").channel("VV"), a.as_representation("reduced").channel("VV"), rtol=1e-12)


def test_temperature_required_for_quantum_representations():
    s = _random_series(n=256, T=float("nan"))
    with pytest.raises(InputError, match="temperature"):
        compute_spectrum(s)
    assert compute_spectrum(s, representation="classical").representation == "classical"


# --------------------------------------------------------------------------- resolution checks


def test_too_short_series_for_requested_resolution():
    s = _random_series(n=1000, dt=1.0)  # 1 ps
    with pytest.raises(InputError, match=r"too short for resolution_cm1 = 0\.5.*66\.7\d* ps.*lasts only 1 ps"):
        compute_spectrum(s, resolution_cm1=0.5)
    with pytest.raises(InputError, match="too short"):
        compute_spectrum(s, n_segments=8, resolution_cm1=40.0)
    sp = compute_spectrum(s, resolution_cm1=40.0)
    assert sp.metadata["frequency_resolution_cm1"] <= 40.0


def test_too_coarse_dt_for_requested_max_frequency():
    s = _random_series(n=1000, dt=20.0)
    with pytest.raises(InputError, match=r"too coarsely.*Nyquist wavenumber .*833\.9"):
        compute_spectrum(s, max_frequency_cm1=1000)


# --------------------------------------------------------------------------- spectrum object


def test_csv_round_trip_and_channel_errors(tmp_path):
    sp = compute_spectrum(_random_series(n=2**11, seed=13), ["powder", "x(zz)-x"], max_frequency_cm1=500)
    p = sp.to_csv(tmp_path / "out" / "s.csv")
    lines = p.read_text().splitlines()
    assert lines[0].startswith("# ionraman RamanSpectrum")
    assert lines[1].split(",")[:2] == ["frequency_cm1", "VV"] and "VV_err" in lines[1]
    back = RamanSpectrum.from_csv(p)
    assert back.channel_names == sp.channel_names
    assert back.representation == "stokes" and back.temperature_K == 300.0
    for ch in sp.channel_names:
        np.testing.assert_allclose(back.channel(ch), sp.channel(ch), rtol=1e-11)
        np.testing.assert_allclose(back.errors[ch], sp.errors[ch], rtol=1e-11)
    np.testing.assert_allclose(
        back.as_representation("reduced").channel("VV"), sp.as_representation("reduced").channel("VV"), rtol=1e-10
    )
    with pytest.raises(InputError, match="no channel 'HH'.*VV, VH"):
        sp.channel("HH")
    assert not list(tmp_path.joinpath("out").glob("*.tmp"))


def test_two_column_file_and_malformed_csv(tmp_path):
    p = tmp_path / "exp.txt"
    p.write_text("# measured\n10 1.0\n20 2.0\n30 1.5\n")
    s = RamanSpectrum.from_csv(p)
    assert s.channel_names == ["intensity"] and s.representation == "unknown"
    with pytest.raises(InputError, match="unknown"):
        s.as_representation("reduced")
    assert RamanSpectrum.from_csv(p, representation="stokes", temperature_K=300).as_representation("reduced")
    bad = tmp_path / "bad.csv"
    bad.write_text("frequency_cm1,VV\n1,2\n2,abc\n")
    with pytest.raises(InputError, match=r"bad\.csv: line 3 is malformed"):
        RamanSpectrum.from_csv(bad)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3\n2,3\n")
    with pytest.raises(InputError, match="malformed"):
        RamanSpectrum.from_csv(ragged)
    one = tmp_path / "one.csv"
    one.write_text("1\n2\n3\n")
    with pytest.raises(InputError, match="malformed"):
        RamanSpectrum.from_csv(one)


def test_plot_draws_several_spectra(tmp_path):
    sp = compute_spectrum(_random_series(n=2**11, seed=14), "powder", max_frequency_cm1=800)
    grid = sp.frequency_cm1
    harm = RamanSpectrum(
        grid,
        {"unpolarized": lorentzian_broadened_lines([100, 300], [1.0, 2.0], grid, 10.0)},
        representation="stokes",
        temperature_K=300,
        metadata={"method": "harmonic"},
    )
    assert harm.is_harmonic
    out = sp.plot(tmp_path / "fig.png", others=[harm], labels=["MD", "harmonic"], normalize="max")
    assert out.stat().st_size > 5000
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_lorentzian_lines_are_area_normalised():
    grid = np.linspace(-5000, 5000, 200001)
    y = lorentzian_broadened_lines([200.0, 450.0], [3.0, 0.5], grid, [8.0, 20.0])
    assert np.trapezoid(y, grid) == pytest.approx(3.5, rel=2e-3)
    assert y[np.argmin(abs(grid - 200))] == pytest.approx(3.0 / (np.pi * 4.0) + 0.5 * 10 / np.pi / (250**2 + 100), rel=1e-9)
    with pytest.raises(InputError, match="fwhm"):
        lorentzian_broadened_lines([1.0], [1.0], grid, 0.0)


def test_trapezoid_weights_exact_for_linear_functions():
    x = np.linspace(0, 10, 11)
    y = 3 * x + 1
    w = trapezoid_weights(x, 2.3, 7.9)
    assert w @ y == pytest.approx(1.5 * (7.9**2 - 2.3**2) + (7.9 - 2.3), rel=1e-13)
