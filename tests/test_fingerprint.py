"""Tests of ionraman.fingerprint: F_LF, the central-peak fit and the MD/harmonic ratio."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.signal import lfilter
from scipy.special import erf

from ionraman.errors import InputError
from ionraman.fingerprint import (
    fingerprint,
    fit_central_peak,
    hwhm_to_relaxation_time_ps,
    low_frequency_fraction,
    md_to_harmonic_ratio,
)
from ionraman.raman import PolarizabilitySeries, RamanSpectrum, compute_spectrum, lorentzian_broadened_lines
from ionraman.units import C_CM_PER_S

# synthetic band shapes --------------------------------------------------------

A_L, G_L = 2.0, 20.0  # Lorentzian central peak: height, HWHM (cm⁻¹)
A_G, NU_G, S_G = 1.0, 300.0, 30.0  # Gaussian band: height, centre, σ (cm⁻¹)


def _lorentz_int(a: float, b: float) -> float:
    return A_L * G_L * (math.atan(b / G_L) - math.atan(a / G_L))


def _gauss_int(a: float, b: float) -> float:
    k = S_G * math.sqrt(2.0)
    return A_G * S_G * math.sqrt(math.pi / 2) * (erf((b - NU_G) / k) - erf((a - NU_G) / k))


def _synthetic(representation: str = "reduced", step: float = 0.25) -> RamanSpectrum:
    f = np.arange(0.0, 1000.0 + step / 2, step)
    y = A_L * G_L**2 / (f**2 + G_L**2) + A_G * np.exp(-((f - NU_G) ** 2) / (2 * S_G**2))
    return RamanSpectrum(f, {"unpolarized": y}, representation=representation, temperature_K=300.0)


def _ou(n: int, dt: float, tau: float, rng: np.random.Generator) -> np.ndarray:
    """Exact discrete Ornstein–Uhlenbeck (AR(1)) with unit variance and correlation time τ."""
    phi = math.exp(-dt / tau)
    return lfilter([1.0], [1.0, -phi], rng.normal(size=n) * math.sqrt(1 - phi**2), zi=[phi * rng.normal()])[0]


# F_LF ------------------------------------------------------------------------


def test_flf_of_lorentzian_plus_gaussian_matches_the_analytic_integrals():
    sp = _synthetic()
    r = low_frequency_fraction(sp, cutoff_cm1=100, omega_min_cm1=5, omega_max_cm1=800)
    exact = (_lorentz_int(5, 100) + _gauss_int(5, 100)) / (_lorentz_int(5, 800) + _gauss_int(5, 800))
    assert r.value == pytest.approx(exact, rel=1e-3)
    assert (r.cutoff_cm1, r.omega_min_cm1, r.omega_max_cm1) == (100, 5, 800)
    assert math.isnan(r.error) and r.error_method == "none"
    # cut-offs between grid points are integrated exactly (no jump at bin edges)
    r2 = low_frequency_fraction(_synthetic(step=1.0), cutoff_cm1=100.37, omega_min_cm1=5.21, omega_max_cm1=799.6)
    exact2 = (_lorentz_int(5.21, 100.37) + _gauss_int(5.21, 100.37)) / (
        _lorentz_int(5.21, 799.6) + _gauss_int(5.21, 799.6)
    )
    assert r2.value == pytest.approx(exact2, rel=1e-3)


def test_flf_reduced_removes_the_bose_enhancement():
    """A Stokes spectrum is converted to reduced before integrating: F_LF(reduced) < F_LF(stokes)."""
    st = _synthetic("stokes")
    red = low_frequency_fraction(st)  # default representation="reduced"
    raw = low_frequency_fraction(st, representation=None)
    assert red.representation == "reduced" and raw.representation == "stokes"
    assert red.value < raw.value
    direct = low_frequency_fraction(st.as_representation("reduced"), representation=None)
    assert red.value == pytest.approx(direct.value, rel=1e-12)


def test_flf_error_propagated_from_per_frequency_errors():
    sp = _synthetic()
    y = sp.channel("unpolarized")
    with_err = RamanSpectrum(sp.frequency_cm1, sp.channels, {"unpolarized": 0.01 * y}, 300.0, "reduced")
    r = low_frequency_fraction(with_err)
    assert r.error_method.startswith("propagated")
    assert 0 < r.error < 0.01 * r.value


def test_flf_input_errors():
    sp = _synthetic()
    with pytest.raises(InputError, match="cutoff_cm1 = 2000"):
        low_frequency_fraction(sp, cutoff_cm1=2000)
    with pytest.raises(InputError, match="no channel 'VV'"):
        low_frequency_fraction(sp, channel="VV")


def _realisation(seed: int, n: int = 2**14, dt: float = 2.0) -> PolarizabilitySeries:
    """Relaxational ᾱ (OU, τ = 0.3 ps) plus an anisotropic damped oscillator at 300 cm⁻¹."""
    rng = np.random.default_rng(seed)
    ou = _ou(n, dt, 300.0, rng)
    th = 2 * math.pi * C_CM_PER_S * 300.0 * dt * 1e-15
    r = math.exp(-dt / 1000.0)
    osc = lfilter([1.0], [1.0, -2 * r * math.cos(th), r * r], rng.normal(size=n))
    osc /= math.sqrt((1 + r * r) / ((1 - r * r) * ((1 + r * r) ** 2 - 4 * r * r * math.cos(th) ** 2)))  # unit variance
    a = np.tile(10.0 * np.eye(3), (n, 1, 1)) + ou[:, None, None] * np.eye(3)
    a[:, 0, 1] += osc
    a[:, 1, 0] += osc
    return PolarizabilitySeries.from_array(a, dt, 300.0)


def test_flf_segment_error_matches_the_scatter_over_independent_realisations():
    values, errors = [], []
    for seed in range(40):
        sp = compute_spectrum(_realisation(seed), segment_ps=4.0)
        r = low_frequency_fraction(sp)
        values.append(r.value)
        errors.append(r.error)
    assert r.error_method == "jackknife over 15 Welch segments"
    scatter = np.std(values, ddof=1)
    ratio = np.mean(errors) / scatter
    assert 0.5 < ratio < 2.0, (np.mean(errors), scatter)
    assert 0.05 < np.mean(values) < 0.2


# central peak ----------------------------------------------------------------


def test_central_peak_fit_recovers_the_width_of_a_synthetic_lorentzian():
    f = np.arange(0, 400, 1.0)
    y = 5.0 * 15.0**2 / (f**2 + 15.0**2) + 0.3
    sp = RamanSpectrum(f, {"unpolarized": y}, representation="classical")
    r = fit_central_peak(sp, max_frequency_cm1=150)
    assert r.hwhm_cm1 == pytest.approx(15.0, rel=1e-6)
    assert r.fwhm_cm1 == pytest.approx(30.0, rel=1e-6)
    assert r.amplitude == pytest.approx(5.0, rel=1e-6)
    assert r.background[0] == pytest.approx(0.3, rel=1e-5)
    assert r.relaxation_time_ps == pytest.approx(1e12 / (2 * math.pi * C_CM_PER_S * 15.0), rel=1e-6)
    np.testing.assert_allclose(r.model(f), y, rtol=1e-6)
    # noisy version (5 % multiplicative noise, with error bars)
    rng = np.random.default_rng(0)
    yn = y * (1 + 0.05 * rng.normal(size=f.size))
    spn = RamanSpectrum(f, {"unpolarized": yn}, {"unpolarized": 0.05 * np.abs(yn)}, representation="classical")
    rn = fit_central_peak(spn, max_frequency_cm1=150, background="linear")
    assert rn.hwhm_cm1 == pytest.approx(15.0, rel=0.05)
    assert 0 < rn.hwhm_err_cm1 < 1.5


def test_central_peak_fit_in_reduced_representation_uses_the_debye_form():
    f = np.arange(0, 400, 0.5)
    cl = RamanSpectrum(f, {"unpolarized": 4.0 * 25.0**2 / (f**2 + 25.0**2)}, temperature_K=300.0, representation="classical")
    red = cl.as_representation("stokes").as_representation("reduced")
    r = fit_central_peak(red, representation="reduced", background="none")
    assert r.hwhm_cm1 == pytest.approx(25.0, rel=1e-6)
    assert r.amplitude == pytest.approx(4.0, rel=1e-6)
    # the default fit converts to the classical representation (ν̃ = 0 is dropped: 0/0)
    r2 = fit_central_peak(red)
    assert r2.hwhm_cm1 == pytest.approx(25.0, rel=1e-5) and r2.representation == "classical"


def test_ornstein_uhlenbeck_gives_a_lorentzian_of_hwhm_one_over_two_pi_c_tau():
    dt, tau = 2.0, 100.0  # fs
    x = _ou(2**18, dt, tau, np.random.default_rng(42))
    s = PolarizabilitySeries.from_array(x[:, None, None] * np.diag([1.0, 1.2, 0.8]) + 20 * np.eye(3), dt, 300.0)
    sp = compute_spectrum(s, "isotropic", segment_ps=10.0, representation="classical")
    gamma = 1.0 / (2 * math.pi * C_CM_PER_S * tau * 1e-15)  # 53.1 cm⁻¹
    r = fit_central_peak(sp, "isotropic", max_frequency_cm1=6 * gamma)
    assert r.hwhm_cm1 == pytest.approx(gamma, rel=0.10)
    assert r.relaxation_time_ps == pytest.approx(tau / 1000.0, rel=0.10)
    assert abs(r.hwhm_cm1 - gamma) < 4 * r.hwhm_err_cm1
    assert r.warning is None
    # the same process through the Stokes representation: the fit converts back to classical
    st = compute_spectrum(s, "isotropic", segment_ps=10.0)
    assert fit_central_peak(st, "isotropic", max_frequency_cm1=6 * gamma).hwhm_cm1 == pytest.approx(r.hwhm_cm1, rel=1e-6)


def test_central_peak_fit_failure_is_a_clear_input_error():
    f = np.arange(0, 20, 5.0)
    sp = RamanSpectrum(f, {"unpolarized": np.ones_like(f)}, representation="classical")
    with pytest.raises(InputError, match="too few to fit a central peak"):
        fit_central_peak(sp)


def test_hwhm_to_tau():
    assert hwhm_to_relaxation_time_ps(5.3088) == pytest.approx(1.0, rel=1e-4)


# MD / harmonic and the bundle ------------------------------------------------------


def test_md_to_harmonic_ratio_and_fingerprint_dict():
    md = compute_spectrum(_realisation(1), segment_ps=4.0)
    grid = np.linspace(0, 1000, 4001)
    harm = RamanSpectrum(
        grid,
        {"unpolarized": lorentzian_broadened_lines([60.0, 300.0, 450.0], [0.2, 1.0, 0.5], grid, 8.0)},
        temperature_K=300.0,
        representation="stokes",
        metadata={"method": "harmonic"},
    )
    rr = md_to_harmonic_ratio(md, harm, cutoff_cm1=100)
    f_md = low_frequency_fraction(md).value
    f_h = low_frequency_fraction(harm).value
    assert rr.value == pytest.approx(f_md / f_h, rel=1e-12)
    assert rr.error == pytest.approx(rr.value * rr.md.error / rr.md.value, rel=1e-9)
    fp = fingerprint(md, harmonic=harm, cutoff_cm1=100)
    d = fp.to_dict()
    json.dumps(d, allow_nan=False)
    for key in (
        "F_LF", "F_LF_err", "cutoff_cm1", "central_peak_width_cm1", "central_peak_width_err_cm1",
        "central_peak_amplitude", "relaxation_time_ps", "channel", "representation", "md_to_harmonic_ratio",
    ):
        assert key in d, key
    assert d["representation"] == "reduced" and d["channel"] == "unpolarized"
    assert d["F_LF"] == pytest.approx(f_md)
    assert d["md_to_harmonic_ratio"] == pytest.approx(rr.value)
    # the OU part of _realisation has τ = 0.3 ps → Γ = 17.7 cm⁻¹ in ᾱ
    assert 10 < d["central_peak_width_cm1"] < 30
    assert "md_to_harmonic_ratio" not in fingerprint(md).to_dict()


def test_fingerprint_survives_a_failed_fit():
    f = np.arange(0, 1000, 1.0)
    y = np.exp(-((f - 500) ** 2) / 200.0) + 1e-3
    fp = fingerprint(RamanSpectrum(f, {"intensity": y}, representation="reduced", temperature_K=300), fit_max_frequency_cm1=3)
    d = fp.to_dict()
    assert d["channel"] == "intensity" and d["central_peak_width_cm1"] is None
    assert "too few" in d["central_peak_message"]
    assert d["F_LF"] == pytest.approx(0.001 * 95 / (0.001 * 795 + math.sqrt(200 * math.pi)), rel=1e-3)
