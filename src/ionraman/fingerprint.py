"""Low-frequency Raman fingerprints of liquid-like ion conduction.

Three numbers summarise how much of a Raman spectrum sits in the quasi-elastic
(central-peak) region below ~100 cm⁻¹, where relaxational (diffusive) motion
of the mobile ions scatters light once it breaks the crystal's selection rules:

* :func:`low_frequency_fraction` — F_LF = ∫_{ω_min}^{ω_c} I dν̃ / ∫_{ω_min}^{ω_max} I dν̃
  of the *reduced* spectrum by default (the Bose factor, which enhances every
  material's low-frequency intensity, divided out);
* :func:`fit_central_peak` — a Lorentzian centred at ν̃ = 0 (Debye relaxation)
  fitted to the classical spectrum: amplitude, HWHM Γ, relaxation time
  τ = 1/(2π c Γ);
* :func:`md_to_harmonic_ratio` — F_LF of the MD spectrum over F_LF of a
  harmonic (phonon) spectrum: how much low-frequency weight anharmonic,
  diffusive dynamics add over the harmonic crystal.

:func:`fingerprint` bundles them. Definitions and references:
``docs/physics/raman.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .raman import REPRESENTATIONS, RamanSpectrum, representation_factor, trapezoid_weights
from .units import C_CM_PER_S

__all__ = [
    "FLFResult",
    "CentralPeakResult",
    "HarmonicRatioResult",
    "Fingerprint",
    "low_frequency_fraction",
    "fit_central_peak",
    "md_to_harmonic_ratio",
    "fingerprint",
    "hwhm_to_relaxation_time_ps",
]

DEFAULT_CUTOFF_CM1 = 100.0
DEFAULT_OMEGA_MIN_CM1 = 5.0
DEFAULT_OMEGA_MAX_CM1 = 800.0
DEFAULT_FIT_MAX_CM1 = 150.0


def hwhm_to_relaxation_time_ps(hwhm_cm1: float) -> float:
    """τ = 1/(2π c Γ) in ps for a Lorentzian of half width Γ (cm⁻¹) — the Fourier pair of e^{−|t|/τ}."""
    return 1e12 / (2.0 * math.pi * C_CM_PER_S * hwhm_cm1)


def _nan_to_none(d: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, (float, np.floating)):
            v = float(v)
            out[k] = v if math.isfinite(v) else None
        elif isinstance(v, (np.integer,)):
            out[k] = int(v)
        elif isinstance(v, tuple):
            out[k] = [None if isinstance(x, float) and not math.isfinite(x) else x for x in v]
        else:
            out[k] = v
    return out


# =========================================================================== F_LF


@dataclass(frozen=True)
class FLFResult:
    """Low-frequency fraction F_LF and its standard error.

    ``error_method`` says how the error was obtained: ``"jackknife over K Welch
    segments"`` (preferred), ``"propagated per-frequency errors"`` (bins treated
    as independent; an underestimate for windowed spectra), or ``"none"`` (NaN).
    """

    value: float
    error: float
    cutoff_cm1: float
    omega_min_cm1: float
    omega_max_cm1: float
    channel: str
    representation: str
    error_method: str
    n_segments: int = 0
    low_integral: float = float("nan")
    total_integral: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return _nan_to_none(asdict(self))


def _converted(spectrum: RamanSpectrum, representation: str | None) -> RamanSpectrum:
    if representation is None or representation == spectrum.representation:
        return spectrum
    return spectrum.as_representation(representation)


def _band_limits(
    spectrum: RamanSpectrum, cutoff: float, omega_min: float, omega_max: float | None
) -> tuple[float, float, float]:
    f = spectrum.frequency_cm1
    fmax = float(f[-1])
    fmin_pos = float(f[f >= 0][0]) if np.any(f >= 0) else float("nan")
    if not math.isfinite(fmin_pos) or fmax <= 0:
        raise InputError("The spectrum has no positive (Stokes) frequencies; give a spectrum on a ν̃ ≥ 0 grid.")
    lo = max(float(omega_min), fmin_pos)
    hi = fmax if omega_max is None else min(float(omega_max), fmax)
    if not (math.isfinite(cutoff) and lo < cutoff < hi):
        raise InputError(
            f"cutoff_cm1 = {cutoff:g} must lie between omega_min_cm1 = {lo:g} and omega_max_cm1 = {hi:g} "
            f"(the spectrum reaches {fmax:g} cm⁻¹); choose a cut-off inside the spectrum."
        )
    return lo, cutoff, hi


def low_frequency_fraction(
    spectrum: RamanSpectrum,
    channel: str = "unpolarized",
    representation: str | None = "reduced",
    cutoff_cm1: float = DEFAULT_CUTOFF_CM1,
    omega_min_cm1: float = DEFAULT_OMEGA_MIN_CM1,
    omega_max_cm1: float | None = DEFAULT_OMEGA_MAX_CM1,
) -> FLFResult:
    """F_LF = ∫_{ω_min}^{ω_c} I dν̃ / ∫_{ω_min}^{ω_max} I dν̃ of one channel.

    Parameters
    ----------
    spectrum : a :class:`RamanSpectrum` (converted to ``representation`` first; None = as is).
    channel : channel to use (default ``"unpolarized"``; ``"intensity"`` for two-column files).
    representation : ``"reduced"`` (default), ``"stokes"``, ``"classical"`` or None.
    cutoff_cm1 : ω_c, the upper end of the low-frequency band (default 100 cm⁻¹).
    omega_min_cm1 : lower end of both integrals (default 5 cm⁻¹): skips ν̃ → 0, where
        the reduced spectrum vanishes by construction and the lowest Welch bins
        carry window leakage and the subtracted Rayleigh line.
    omega_max_cm1 : upper end of the total (default 800 cm⁻¹, clipped to the spectrum's
        maximum; None = the spectrum's maximum). The value used is in the result.

    Integrals are trapezoid sums with partial bins at the limits integrated
    exactly. Error: jackknife over the Welch segments when the spectrum carries
    per-segment spectra (times Welch's overlap variance factor stored in the
    metadata), else first-order propagation of the per-frequency errors.
    """
    if cutoff_cm1 is None or omega_min_cm1 is None:
        raise InputError("cutoff_cm1 and omega_min_cm1 must be numbers in cm⁻¹.")
    s = _converted(spectrum, representation)
    y = s.channel(channel)
    lo, cut, hi = _band_limits(s, float(cutoff_cm1), float(omega_min_cm1), omega_max_cm1)
    f = s.frequency_cm1
    w_low = trapezoid_weights(f, lo, cut)
    w_all = trapezoid_weights(f, lo, hi)
    idx = np.flatnonzero(w_all != 0)
    wl, wa = w_low[idx], w_all[idx]
    yi = y[idx]
    if not np.isfinite(yi).all():
        raise InputError(
            f"Channel '{channel}' has NaN values between {lo:g} and {hi:g} cm⁻¹; raise omega_min_cm1 "
            "(ν̃ = 0 of a reduced spectrum cannot be converted) or check the spectrum."
        )
    A = float(wl @ yi)
    B = float(wa @ yi)
    if not B > 0:
        raise InputError(
            f"The integral of channel '{channel}' from {lo:g} to {hi:g} cm⁻¹ is {B:.3g}, not positive; "
            "F_LF needs a positive spectrum — check the channel and the representation."
        )
    F = A / B
    err = float("nan")
    method = "none"
    K = 0
    segs = None if s.segment_spectra is None else s.segment_spectra.get(channel)
    if segs is not None and segs.shape[0] >= 2:
        K = int(segs.shape[0])
        sy = segs[:, idx]
        a_k = sy @ wl
        b_k = sy @ wa
        a_sum, b_sum = a_k.sum(), b_k.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            jk = (a_sum - a_k) / (b_sum - b_k)
        vfac = float(s.metadata.get("overlap_variance_factor", 1.0) or 1.0)
        if not math.isfinite(vfac):
            vfac = 1.0
        var = (K - 1) / K * float(np.sum((jk - jk.mean()) ** 2)) * vfac
        err = math.sqrt(var) if math.isfinite(var) else float("nan")
        method = f"jackknife over {K} Welch segments"
    else:
        e = s.errors.get(channel)
        if e is not None and np.isfinite(e[idx]).all():
            ei = e[idx]
            wc = wa - wl  # weights of the high band (cut, hi]
            C = B - A
            var_a = float(np.sum((wl * ei) ** 2))
            var_c = float(np.sum((wc * ei) ** 2))
            err = math.sqrt(C * C * var_a + A * A * var_c) / (B * B)
            method = "propagated per-frequency errors"
    return FLFResult(F, err, float(cut), float(lo), float(hi), channel, s.representation, method, K, A, B)


# =========================================================================== central peak


@dataclass(frozen=True)
class CentralPeakResult:
    """Lorentzian central peak I(ν̃) = F(ν̃)·A Γ²/(ν̃² + Γ²) + background.

    ``amplitude`` A is the classical-spectrum height at ν̃ = 0 (units of the
    classical spectrum); F(ν̃) is the factor of the fitted representation
    (1 for ``"classical"``). ``hwhm_cm1`` = Γ, ``fwhm_cm1`` = 2Γ,
    ``relaxation_time_ps`` = 1/(2π c Γ). ``background`` holds (c0,) or (c0, c1)
    (I_bg = c0 + c1 ν̃). ``warning`` is set when the result is suspect (width at
    a bound, wider than the fit window, undefined covariance).
    """

    amplitude: float
    amplitude_err: float
    hwhm_cm1: float
    hwhm_err_cm1: float
    fwhm_cm1: float
    fwhm_err_cm1: float
    relaxation_time_ps: float
    relaxation_time_err_ps: float
    background: tuple[float, ...]
    background_err: tuple[float, ...]
    background_model: str
    chi2_reduced: float
    n_points: int
    min_frequency_cm1: float
    max_frequency_cm1: float
    channel: str
    representation: str
    temperature_K: float = float("nan")
    quantum_correction: str = "harmonic"
    laser_wavelength_nm: float | None = None
    warning: str | None = None

    def model(self, frequency_cm1: Any, include_background: bool = True) -> np.ndarray:
        """Evaluate the fitted model (in the fitted representation) at ``frequency_cm1``."""
        nu = np.asarray(frequency_cm1, dtype=float)
        fac = representation_factor(
            nu, self.representation, self.temperature_K, self.quantum_correction, self.laser_wavelength_nm
        )
        y = fac * self.amplitude * self.hwhm_cm1**2 / (nu**2 + self.hwhm_cm1**2)
        if include_background:
            for k, c in enumerate(self.background):
                y = y + c * nu**k
        return y

    def to_dict(self) -> dict[str, Any]:
        return _nan_to_none(asdict(self))


def fit_central_peak(
    spectrum: RamanSpectrum,
    channel: str = "unpolarized",
    max_frequency_cm1: float = DEFAULT_FIT_MAX_CM1,
    min_frequency_cm1: float = 0.0,
    background: str = "constant",
    representation: str = "classical",
    initial_hwhm_cm1: float | None = None,
) -> CentralPeakResult:
    """Fit a Lorentzian centred at ν̃ = 0 plus a background to one channel.

    Model, in the chosen representation R (default ``"classical"``, where a
    Debye relaxation ⟨x(0)x(t)⟩ ∝ e^{−|t|/τ} is exactly a Lorentzian)::

        I_R(ν̃) = F_R(ν̃) · A Γ²/(ν̃² + Γ²) + c0 [+ c1 ν̃]

    with F_R the classical→R factor (for R = ``"reduced"`` and the harmonic
    correction F = ħω/k_BT, i.e. the Debye form χ'' ∝ ν̃Γ/(ν̃² + Γ²)).
    ``background``: ``"constant"`` (default), ``"linear"`` or ``"none"``.

    scipy.optimize.curve_fit (trust-region reflective, A ≥ 0, Γ > 0) on
    [min_frequency_cm1, max_frequency_cm1]. With error bars on the spectrum the
    fit is done twice: first weighted by the data errors, then by model-based
    errors σ_k = r·|model_k| (r = median relative error), which removes the
    downward bias of weighting by noisy data. Parameter errors are √diag of
    the covariance scaled by χ²_red (``absolute_sigma=False``).
    Raises InputError when the fit does not converge.
    """
    from scipy.optimize import curve_fit

    if background not in ("constant", "linear", "none"):
        raise InputError(f"background = {background!r} is unknown; use 'constant', 'linear' or 'none'.")
    if representation not in REPRESENTATIONS:
        raise InputError(f"representation = {representation!r} is unknown; use one of {', '.join(REPRESENTATIONS)}.")
    s = _converted(spectrum, representation)
    y_all = s.channel(channel)
    e_all = s.error(channel)
    f = s.frequency_cm1
    lo, hi = float(min_frequency_cm1), float(max_frequency_cm1)
    if not hi > lo:
        raise InputError(f"max_frequency_cm1 = {hi:g} must exceed min_frequency_cm1 = {lo:g}; widen the fit window.")
    sel = (f >= max(lo, 0.0)) & (f <= hi) & np.isfinite(y_all)
    nu, y, e = f[sel], y_all[sel], e_all[sel]
    n_bg = {"none": 0, "constant": 1, "linear": 2}[background]
    n_par = 2 + n_bg
    if nu.size < n_par + 3:
        raise InputError(
            f"Only {nu.size} points of channel '{channel}' lie between {lo:g} and {hi:g} cm⁻¹, too few to fit a central "
            f"peak with {n_par} parameters; widen max_frequency_cm1 or use a finer resolution."
        )
    T = s.temperature_K
    qc = s.quantum_correction
    fac = representation_factor(nu, representation, T, qc, s.laser_wavelength_nm) if representation != "classical" else np.ones_like(nu)
    scale = float(np.max(np.abs(y))) or 1.0
    ys, es = y / scale, e / scale
    dnu = float(np.min(np.diff(nu))) if nu.size > 1 else 1.0

    def model(x: np.ndarray, *p: float) -> np.ndarray:
        fx = np.interp(x, nu, fac)
        out = fx * p[0] * p[1] ** 2 / (x**2 + p[1] ** 2)
        for k in range(n_bg):
            out = out + p[2 + k] * x**k
        return out

    # initial guess from the classical-equivalent curve
    with np.errstate(divide="ignore", invalid="ignore"):
        ycl = np.where(fac > 1e-12, ys / fac, np.nan)
    tail = ys[-max(3, nu.size // 10):]
    bg0 = float(np.median(tail)) if n_bg else 0.0
    good = np.isfinite(ycl)
    if not good.any():
        raise InputError(f"Channel '{channel}' has no usable points for the central-peak fit; check the spectrum.")
    a0 = max(float(np.nanmax(ycl[good][:5])) - bg0, 1e-6)
    if initial_hwhm_cm1 is not None:
        g0 = float(initial_hwhm_cm1)
    else:
        above = np.flatnonzero(good & (ycl - bg0 < 0.5 * a0))
        g0 = float(nu[above[0]]) if above.size else 0.3 * hi
        g0 = min(max(g0, 2 * dnu), hi)
    p0 = [a0, g0] + ([bg0] if n_bg >= 1 else []) + ([0.0] if n_bg == 2 else [])
    lower = [0.0, 0.25 * dnu] + [-np.inf] * n_bg
    upper = [np.inf, 100.0 * hi] + [np.inf] * n_bg
    use_sigma = np.isfinite(es).all() and np.all(es > 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, pcov = curve_fit(
                model, nu, ys, p0=p0, sigma=es if use_sigma else None, absolute_sigma=False,
                bounds=(lower, upper), method="trf", maxfev=20000,
            )
            if use_sigma:
                rel = float(np.median(es / np.maximum(np.abs(ys), 1e-300)))
                m = np.abs(model(nu, *popt))
                sig2 = rel * np.maximum(m, 1e-3 * np.max(m))
                popt, pcov = curve_fit(
                    model, nu, ys, p0=popt, sigma=sig2, absolute_sigma=False,
                    bounds=(lower, upper), method="trf", maxfev=20000,
                )
                sig_used = sig2
            else:
                sig_used = np.ones_like(ys)
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"The central-peak fit of channel '{channel}' ({lo:g}–{hi:g} cm⁻¹) did not converge ({exc}); "
            "widen max_frequency_cm1, try background='linear', or check that the spectrum has a central peak."
        ) from None
    resid = (ys - model(nu, *popt)) / sig_used
    dof = max(1, nu.size - n_par)
    chi2 = float(np.sum(resid**2) / dof)
    perr = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(n_par, np.nan)
    A, G = float(popt[0]) * scale, float(popt[1])
    A_err, G_err = float(perr[0]) * scale, float(perr[1])
    bgp = tuple(float(v) * scale for v in popt[2:])
    bge = tuple(float(v) * scale for v in perr[2:])
    warn = None
    if not np.all(np.isfinite(pcov)):
        warn = "the covariance of the fit is undefined, so the errors are NaN; the data do not constrain all parameters"
    if G <= lower[1] * 1.001:
        warn = f"the fitted HWHM sits at its lower bound ({lower[1]:.3g} cm⁻¹): the peak is narrower than the resolution"
    elif G > hi:
        warn = f"the fitted HWHM {G:.3g} cm⁻¹ exceeds the fit window ({hi:g} cm⁻¹); widen max_frequency_cm1"
    tau = hwhm_to_relaxation_time_ps(G)
    tau_err = tau * G_err / G if G > 0 else float("nan")
    return CentralPeakResult(
        A, A_err, G, G_err, 2 * G, 2 * G_err, tau, tau_err, bgp, bge, background, chi2, int(nu.size),
        float(max(lo, 0.0)), hi, channel, representation, T, qc, s.laser_wavelength_nm, warn,
    )


# =========================================================================== MD / harmonic


@dataclass(frozen=True)
class HarmonicRatioResult:
    """R = F_LF(MD) / F_LF(harmonic) with its standard error (first-order propagation)."""

    value: float
    error: float
    md: FLFResult
    harmonic: FLFResult

    def to_dict(self) -> dict[str, Any]:
        return {"value": _nan_to_none({"v": self.value})["v"], "error": _nan_to_none({"v": self.error})["v"],
                "md": self.md.to_dict(), "harmonic": self.harmonic.to_dict()}


def md_to_harmonic_ratio(
    md_spectrum: RamanSpectrum,
    harmonic_spectrum: RamanSpectrum,
    cutoff_cm1: float = DEFAULT_CUTOFF_CM1,
    channel: str = "unpolarized",
    harmonic_channel: str | None = None,
    representation: str | None = "reduced",
    omega_min_cm1: float = DEFAULT_OMEGA_MIN_CM1,
    omega_max_cm1: float | None = DEFAULT_OMEGA_MAX_CM1,
) -> HarmonicRatioResult:
    """Ratio of the low-frequency fractions of an MD and a harmonic spectrum.

    Each spectrum is normalised by its own total (that is what F_LF does), so
    the ratio does not depend on their absolute scales or grids:
    R = F_LF(MD)/F_LF(harm), σ_R = R·√((σ_MD/F_MD)² + (σ_h/F_h)²), with σ_h = 0
    when the harmonic spectrum has no error bars. Both use the same band limits
    (the smaller of the two spectra's maxima bounds ω_max). ``harmonic_channel``
    defaults to ``channel``, or the only channel of a single-channel spectrum.
    """
    hc = harmonic_channel or channel
    if hc not in harmonic_spectrum.channels and len(harmonic_spectrum.channels) == 1:
        hc = harmonic_spectrum.channel_names[0]
    top = min(float(md_spectrum.frequency_cm1[-1]), float(harmonic_spectrum.frequency_cm1[-1]))
    wmax = top if omega_max_cm1 is None else min(float(omega_max_cm1), top)
    md = low_frequency_fraction(md_spectrum, channel, representation, cutoff_cm1, omega_min_cm1, wmax)
    lo = max(md.omega_min_cm1, float(omega_min_cm1))
    harm = low_frequency_fraction(harmonic_spectrum, hc, representation, cutoff_cm1, lo, wmax)
    if harm.value <= 0:
        return HarmonicRatioResult(float("inf"), float("nan"), md, harm)
    r = md.value / harm.value
    rel_h = harm.error / harm.value if math.isfinite(harm.error) else 0.0
    rel_m = md.error / md.value if md.value > 0 else float("nan")
    err = abs(r) * math.sqrt(rel_m**2 + rel_h**2)
    return HarmonicRatioResult(r, err, md, harm)


# =========================================================================== bundle


@dataclass(frozen=True)
class Fingerprint:
    """All low-frequency fingerprint numbers of one spectrum (see :func:`fingerprint`)."""

    F_LF: float
    F_LF_err: float
    cutoff_cm1: float
    omega_min_cm1: float
    omega_max_cm1: float
    channel: str
    representation: str
    temperature_K: float
    F_LF_error_method: str
    central_peak_amplitude: float
    central_peak_amplitude_err: float
    central_peak_width_cm1: float
    central_peak_width_err_cm1: float
    central_peak_fwhm_cm1: float
    relaxation_time_ps: float
    relaxation_time_err_ps: float
    central_peak_fit_max_cm1: float
    central_peak_message: str | None = None
    md_to_harmonic_ratio: float | None = None
    md_to_harmonic_ratio_err: float | None = None
    harmonic_F_LF: float | None = None
    central_peak: CentralPeakResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN → None); the harmonic keys only when a harmonic spectrum was given."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "central_peak"}
        if self.md_to_harmonic_ratio is None:
            for k in ("md_to_harmonic_ratio", "md_to_harmonic_ratio_err", "harmonic_F_LF"):
                d.pop(k)
        return _nan_to_none(d)


def fingerprint(
    spectrum: RamanSpectrum,
    harmonic: RamanSpectrum | None = None,
    cutoff_cm1: float = DEFAULT_CUTOFF_CM1,
    *,
    channel: str = "unpolarized",
    representation: str | None = "reduced",
    omega_min_cm1: float = DEFAULT_OMEGA_MIN_CM1,
    omega_max_cm1: float | None = DEFAULT_OMEGA_MAX_CM1,
    fit_max_frequency_cm1: float = DEFAULT_FIT_MAX_CM1,
    background: str = "constant",
    fit_representation: str = "classical",
) -> Fingerprint:
    """F_LF (reduced spectrum by default), the central-peak fit and, given a harmonic spectrum, R = F_LF(MD)/F_LF(harm).

    A failed central-peak fit does not abort: its numbers are NaN and
    ``central_peak_message`` says why (likewise its ``warning`` when suspect).
    ``channel`` falls back to the only channel of a single-channel spectrum.
    """
    if channel not in spectrum.channels and len(spectrum.channels) == 1:
        channel = spectrum.channel_names[0]
    flf = low_frequency_fraction(spectrum, channel, representation, cutoff_cm1, omega_min_cm1, omega_max_cm1)
    nan = float("nan")
    cp: CentralPeakResult | None = None
    msg = None
    try:
        cp = fit_central_peak(spectrum, channel, fit_max_frequency_cm1, background=background, representation=fit_representation)
        msg = cp.warning
    except InputError as exc:
        msg = str(exc)
    ratio = ratio_err = harm_f = None
    if harmonic is not None:
        rr = md_to_harmonic_ratio(spectrum, harmonic, cutoff_cm1, channel, None, representation, omega_min_cm1, omega_max_cm1)
        ratio, ratio_err, harm_f = rr.value, rr.error, rr.harmonic.value
    return Fingerprint(
        F_LF=flf.value,
        F_LF_err=flf.error,
        cutoff_cm1=flf.cutoff_cm1,
        omega_min_cm1=flf.omega_min_cm1,
        omega_max_cm1=flf.omega_max_cm1,
        channel=channel,
        representation=flf.representation,
        temperature_K=spectrum.temperature_K,
        F_LF_error_method=flf.error_method,
        central_peak_amplitude=cp.amplitude if cp else nan,
        central_peak_amplitude_err=cp.amplitude_err if cp else nan,
        central_peak_width_cm1=cp.hwhm_cm1 if cp else nan,
        central_peak_width_err_cm1=cp.hwhm_err_cm1 if cp else nan,
        central_peak_fwhm_cm1=cp.fwhm_cm1 if cp else nan,
        relaxation_time_ps=cp.relaxation_time_ps if cp else nan,
        relaxation_time_err_ps=cp.relaxation_time_err_ps if cp else nan,
        central_peak_fit_max_cm1=float(fit_max_frequency_cm1),
        central_peak_message=msg,
        md_to_harmonic_ratio=ratio,
        md_to_harmonic_ratio_err=ratio_err,
        harmonic_F_LF=harm_f,
        central_peak=cp,
    )
