"""Diffusion, conductivity and related transport analysis of an MD trajectory.

Everything here reads a :class:`~ionraman.trajectory.Trajectory` (unwrapped
positions in Å, time in fs, velocities in Å/fs) and returns small frozen
dataclasses whose field names carry their units. The physics, every equation
and the references are in ``docs/physics/transport.md``.

Public API
----------
- :func:`msd` — tracer mean-squared displacement (FFT, centre-of-mass drift removed)
- :func:`diffusion_coefficient` — tracer D in cm²/s with an uncertainty
  (kinisi Bayesian regression by default, block averaging as an alternative)
- :func:`nernst_einstein_conductivity`, :func:`formal_charge` — σ in S/cm
- :func:`arrhenius_fit` — Eₐ, D₀ and extrapolation with errors
- :func:`van_hove_self`, :func:`non_gaussian_parameter` — G_s(r, t), α₂(t)
- :func:`vdos` — vibrational density of states from the velocity autocorrelation
- :func:`site_occupancy_analysis` — hopping versus liquid-like motion
- :func:`analyse` — D, σ and the site indicator for each mobile species (JSON-able)
- :func:`plot_msd`, :func:`plot_arrhenius`, :func:`plot_van_hove`, :func:`plot_vdos`
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tidynamics
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers

from ._io import save_figure
from .errors import InputError
from .trajectory import Trajectory
from .units import A2_PER_FS_TO_CM2_PER_S, E_CHARGE_C, KB_EV_PER_K, KB_J_PER_K, THZ_TO_CM1

__all__ = [
    "FORMAL_CHARGES",
    "MSDResult",
    "DiffusionResult",
    "ConductivityResult",
    "ArrheniusResult",
    "ArrheniusExtrapolation",
    "VanHoveResult",
    "NonGaussianResult",
    "VDOSResult",
    "vdos_overlap",
    "SiteAnalysisResult",
    "SpeciesTransport",
    "TransportResult",
    "msd",
    "diffusion_coefficient",
    "formal_charge",
    "nernst_einstein_conductivity",
    "arrhenius_fit",
    "van_hove_self",
    "non_gaussian_parameter",
    "vdos",
    "site_occupancy_analysis",
    "analyse",
    "plot_msd",
    "plot_arrhenius",
    "plot_van_hove",
    "plot_vdos",
]

# Private conversion factors (exact by definition of the units).
_A3_TO_CM3 = 1e-24  # 1 Å = 1e-8 cm, so 1 Å³ = 1e-24 cm³
_PER_FS_TO_THZ = 1000.0  # 1 fs⁻¹ = 1e15 Hz = 1000 THz

#: Formal charges (units of e) of the common mobile ions in solid electrolytes.
FORMAL_CHARGES: dict[str, int] = {
    "H": 1,
    "Li": 1,
    "Na": 1,
    "K": 1,
    "Rb": 1,
    "Cs": 1,
    "Ag": 1,
    "Cu": 1,  # Cu⁺ is the mobile ion in the copper superionics (Cu₂Se, CuI, …)
    "Mg": 2,
    "Ca": 2,
    "Zn": 2,
    "F": -1,
    "Cl": -1,
    "O": -2,  # oxide-ion conductors (YSZ, …)
}

_DEFAULT_FIT_START_FS = 1000.0  # skip at least the first 1 ps (ballistic + cage regime) …
_FIT_START_FRACTION = 0.1  # … or 10 % of the run, whichever is larger, …
_FIT_START_MAX_FRACTION = 0.2  # … but never beyond 20 % of the run
_FIT_STOP_FRACTION = 0.5  # fit up to half the run: longer lags have few independent windows

# --------------------------------------------------------------------------- helpers


def _source(traj: Trajectory) -> str:
    """How messages name the trajectory: its file if the metadata knows it."""
    for key in ("source", "path", "file"):
        v = traj.metadata.get(key) if traj.metadata else None
        if isinstance(v, str) and v:
            return v
    return "The trajectory"


def _check_times(traj: Trajectory) -> float:
    """The frame spacing in fs, after checking the frames are equally spaced."""
    if traj.n_frames < 2:
        raise InputError(f"{_source(traj)} has {traj.n_frames} frame(s); transport analysis needs a run of many frames.")
    dt = traj.dt_fs
    steps = np.diff(np.asarray(traj.time_fs, dtype=float))
    if not dt > 0 or not np.allclose(steps, dt, rtol=1e-6, atol=1e-9):
        raise InputError(
            f"{_source(traj)} time_fs is not equally spaced (steps from {steps.min():g} to {steps.max():g} fs); "
            "analyse each run separately or resample the frames."
        )
    if not np.isfinite(traj.positions).all():
        raise InputError(f"{_source(traj)} positions contain NaN or infinite values; the run is corrupt, rerun it.")
    return float(dt)


def _com_drift_A(traj: Trajectory) -> np.ndarray:
    """Displacement of the mass-weighted centre of mass of *all* atoms since frame 0, (n_frames, 3) Å."""
    m = atomic_masses[traj.numbers]
    com = np.einsum("a,fak->fk", m, traj.positions) / m.sum()
    return com - com[0]


def _selected_positions(traj: Trajectory, idx: np.ndarray, remove_com_drift: bool) -> np.ndarray:
    """Unwrapped positions (Å) of atoms ``idx``, in the centre-of-mass frame when asked.

    Why remove the drift: the tracer MSD must be measured in the frame in which
    the whole system is at rest. Thermostats, round-off and in particular ML
    force fields (whose forces do not sum exactly to zero) make the total
    momentum wander, and a uniform translation of the whole cell adds
    |ΔR_com(t)|² to every atom's MSD — a spurious, often ballistic, term that is
    not ionic transport. The mass-weighted COM of all atoms is the quantity that
    Newton's laws conserve, so it is the right reference (Allen & Tildesley).
    """
    pos = np.array(traj.positions[:, idx, :], dtype=float)
    if remove_com_drift:
        pos -= _com_drift_A(traj)[:, None, :]
    return pos


def _fft_msd_components(pos: np.ndarray) -> np.ndarray:
    """Per-component MSD averaged over atoms, (n_frames, 3) Å², by tidynamics' FFT algorithm."""
    n_f, n_a, _ = pos.shape
    out = np.zeros((n_f, 3))
    # Subtracting each coordinate's mean leaves the MSD unchanged and avoids
    # cancellation in Σr² − 2Σr(t)r(t+τ) when positions are far from the origin.
    centred = pos - pos.mean(axis=0, keepdims=True)
    for i in range(n_a):
        for k in range(3):
            out[:, k] += tidynamics.msd(centred[:, i, k])
    out /= n_a
    out[0] = 0.0  # zero by definition; the FFT gives ±1e-16
    return out


def _origins(n_frames: int, lag: int, max_origins: int) -> np.ndarray:
    """Time origins for a lag: all of them, or ``max_origins`` evenly strided ones."""
    n_avail = n_frames - lag
    if n_avail <= max_origins:
        return np.arange(n_avail)
    return np.unique(np.round(np.linspace(0, n_avail - 1, max_origins)).astype(int))


def _squared_displacements(pos: np.ndarray, lag: int, max_origins: int) -> np.ndarray:
    """|r_i(t0+lag) − r_i(t0)|² over strided origins t0 and atoms i, flattened (Å²)."""
    o = _origins(pos.shape[0], lag, max_origins)
    d = pos[o + lag] - pos[o]
    return np.einsum("oak,oak->oa", d, d).ravel()


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# --------------------------------------------------------------------------- MSD


@dataclass(frozen=True)
class MSDResult:
    """Tracer mean-squared displacement of one species.

    Attributes
    ----------
    symbol : element symbol.
    lag_fs : (n_lags,) lag times in fs (0, dt, 2 dt, …).
    msd_A2 : (n_lags,) MSD in Å², averaged over atoms and all time origins.
    msd_components_A2 : (n_lags, 3) the x, y, z contributions in Å² (they sum to ``msd_A2``).
    n_atoms : number of atoms averaged.
    com_removed : whether the system's centre-of-mass drift was removed.
    """

    symbol: str
    lag_fs: np.ndarray
    msd_A2: np.ndarray
    msd_components_A2: np.ndarray
    n_atoms: int
    com_removed: bool

    @property
    def lag_ps(self) -> np.ndarray:
        """Lag times in ps."""
        return self.lag_fs / 1000.0


def msd(traj: Trajectory, symbol: str, remove_com_drift: bool = True) -> MSDResult:
    """Tracer MSD(τ) = ⟨|r_i(t0+τ) − r_i(t0)|²⟩ of element ``symbol`` for every lag τ (fs → Å²).

    Uses the O(N log N) FFT algorithm of tidynamics for each atom and Cartesian
    component, averaged over atoms; all time origins are used. With
    ``remove_com_drift`` the positions are first referred to the mass-weighted
    centre of mass of the whole system (see ``docs/physics/transport.md``).
    """
    _check_times(traj)
    idx = traj.indices_of(symbol)
    pos = _selected_positions(traj, idx, remove_com_drift)
    comps = _fft_msd_components(pos)
    lag = np.asarray(traj.time_fs, dtype=float) - float(traj.time_fs[0])
    return MSDResult(
        symbol=symbol,
        lag_fs=lag,
        msd_A2=comps.sum(axis=1),
        msd_components_A2=comps,
        n_atoms=int(idx.size),
        com_removed=bool(remove_com_drift),
    )


# --------------------------------------------------------------------------- diffusion


@dataclass(frozen=True)
class DiffusionResult:
    """Tracer diffusion coefficient of one species.

    Attributes
    ----------
    symbol : element symbol.
    D_cm2_s, D_err_cm2_s : D and its one-standard-deviation uncertainty in cm²/s.
    fit_start_fs, fit_stop_fs : the lag-time window of the fit in fs (the lags actually used).
    method : ``"kinisi"`` (Bayesian regression with the MSD covariance) or ``"block"``.
    n_atoms : number of atoms of the species.
    temperature_K : the trajectory's nominal temperature in K.
    duration_fs : length of the analysed trajectory in fs.
    intercept_A2 : fitted MSD offset in Å² (the vibrational "cage" contribution).
    n_blocks : number of blocks (block method) or None.
    block_D_cm2_s : the per-block D values in cm²/s (block method), else empty.
    msd : the whole-trajectory MSD (for plotting); not part of the comparison.
    """

    symbol: str
    D_cm2_s: float
    D_err_cm2_s: float
    fit_start_fs: float
    fit_stop_fs: float
    method: str
    n_atoms: int
    temperature_K: float
    duration_fs: float
    intercept_A2: float = 0.0
    n_blocks: int | None = None
    block_D_cm2_s: tuple[float, ...] = ()
    msd: MSDResult | None = field(default=None, repr=False, compare=False)

    @property
    def fit_start_ps(self) -> float:
        return self.fit_start_fs / 1000.0

    @property
    def fit_stop_ps(self) -> float:
        return self.fit_stop_fs / 1000.0

    @property
    def D_A2_per_fs(self) -> float:
        """D in Å²/fs (the unit of the MSD slope / 6)."""
        return self.D_cm2_s / A2_PER_FS_TO_CM2_PER_S


def _fit_window_fs(
    duration_fs: float,
    dt_fs: float,
    fit_start_ps: float | None,
    fit_stop_ps: float | None,
    what: str,
) -> tuple[float, float]:
    """The [start, stop] lag window in fs, with the documented defaults and checks.

    Default start: 10 % of the run but at least 1 ps (past the ballistic and
    rattling regime of ions in a solid), capped at 20 % of the run so that short
    runs keep a usable window. Default stop: 50 % of the run (or the end of the
    run when an explicit start lies beyond 50 %).
    """
    if fit_start_ps is None:
        start = min(max(_DEFAULT_FIT_START_FS, _FIT_START_FRACTION * duration_fs), _FIT_START_MAX_FRACTION * duration_fs)
    else:
        start = 1000.0 * float(fit_start_ps)
    if fit_stop_ps is None:
        stop = _FIT_STOP_FRACTION * duration_fs
        if start >= stop:
            stop = duration_fs
    else:
        stop = 1000.0 * float(fit_stop_ps)
    dur_ps = duration_fs / 1000.0
    if not (math.isfinite(start) and start >= 0):
        raise InputError(f"fit_start_ps={fit_start_ps} is not a non-negative time; pass e.g. --fit-start 1.")
    if start >= duration_fs:
        raise InputError(
            f"{what} holds {dur_ps:.3g} ps of trajectory but the fit window starts at {start / 1000:.3g} ps; "
            "run longer or pass a smaller --fit-start (fit_start_ps)."
        )
    if not math.isfinite(stop) or stop > duration_fs * (1 + 1e-9):
        raise InputError(
            f"{what} holds {dur_ps:.3g} ps of trajectory but the fit window stops at {stop / 1000:.3g} ps; "
            "run longer or pass a smaller --fit-stop (fit_stop_ps)."
        )
    if stop <= start:
        raise InputError(
            f"The fit window {start / 1000:.3g}–{stop / 1000:.3g} ps is empty; pass --fit-stop larger than --fit-start."
        )
    n_in = int(np.floor(stop / dt_fs + 1e-9) - np.ceil(start / dt_fs - 1e-9) + 1)
    if n_in < 3:
        raise InputError(
            f"{what} holds {dur_ps:.3g} ps of trajectory ({dt_fs:g} fs per frame) and the fit window "
            f"{start / 1000:.3g}–{stop / 1000:.3g} ps contains only {max(n_in, 0)} lag(s); run longer or widen the window."
        )
    return start, stop


def diffusion_coefficient(
    traj: Trajectory,
    symbol: str,
    fit_start_ps: float | None = None,
    fit_stop_ps: float | None = None,
    method: str = "kinisi",
    n_blocks: int = 5,
    remove_com_drift: bool = True,
    seed: int = 0,
    n_lags: int = 200,
) -> DiffusionResult:
    """Tracer diffusion coefficient D (cm²/s) of ``symbol`` with a one-σ uncertainty.

    D comes from the Einstein relation MSD(τ) ≈ 6 D τ + c fitted over the lag
    window [``fit_start_ps``, ``fit_stop_ps``] (defaults: start at 10 % of the run
    but ≥ 1 ps and ≤ 20 %; stop at 50 %). The intercept c absorbs the vibrational
    (cage) offset.

    ``method="kinisi"`` (default) — the approximate Bayesian regression of
    McCluskey et al. (kinisi 2.x; J. Chem. Theory Comput. 2025, 21, 79): the MSD
    of all overlapping time windows is modelled as a multivariate normal whose
    covariance between lags is derived for a random walk from the number of
    independent windows, and (D, c) are sampled with MCMC. Using the full
    covariance gives a statistically efficient D *and* an honest error; an
    ordinary least-squares fit to the MSD treats strongly correlated points as
    independent and underestimates the error by a large factor. D and its error
    are the mean and standard deviation of the posterior samples. MSD values
    are computed by kinisi on ≈``n_lags`` lag times; the MCMC is seeded with
    ``seed`` (the global NumPy random state is restored afterwards).

    ``method="block"`` — deterministic block averaging: the run is cut into
    ``n_blocks`` contiguous blocks, D is fitted (OLS, slope/6) in each block's
    own MSD, and D = mean ± std(ddof=1)/√n_blocks. Simple and assumption-free,
    but each block is short and the error of the error is large for few blocks;
    the default window is then relative to the block length.

    A trajectory with no net motion still returns a small D ≥ 0 (kinisi
    constrains D ≥ 0) or a D scattering around 0 (block), with its error.

    Raises InputError when the run is too short for the window.
    """
    dt = _check_times(traj)
    idx = traj.indices_of(symbol)
    if method not in ("kinisi", "block"):
        raise InputError(f"method={method!r} is not a diffusion-fit method; use 'kinisi' or 'block'.")
    pos = _selected_positions(traj, idx, remove_com_drift)
    comps = _fft_msd_components(pos)
    lag = np.arange(traj.n_frames) * dt
    msd_res = MSDResult(symbol, lag, comps.sum(axis=1), comps, int(idx.size), bool(remove_com_drift))
    duration = (traj.n_frames - 1) * dt
    T = float(traj.temperature_K)

    if method == "kinisi":
        start, stop = _fit_window_fs(duration, dt, fit_start_ps, fit_stop_ps, _source(traj))
        D, err, c, used_start, used_stop = _kinisi_fit(pos, np.asarray(traj.cells, dtype=float), dt, start, stop, seed, n_lags)
        return DiffusionResult(symbol, D, err, used_start, used_stop, "kinisi", int(idx.size), T, duration, c, None, (), msd_res)

    # ---- block averaging
    n_blocks = int(n_blocks)
    if n_blocks < 2:
        raise InputError(f"n_blocks={n_blocks} gives no spread to estimate an error from; pass n_blocks ≥ 2 (e.g. 5).")
    L = traj.n_frames // n_blocks
    block_dur = (L - 1) * dt
    what = f"Each of the {n_blocks} blocks ({L} frames; use fewer n_blocks if too short)"
    if L < 4:
        raise InputError(
            f"{_source(traj)} has {traj.n_frames} frames, too few for {n_blocks} blocks in the fit window; "
            "run longer or pass fewer n_blocks."
        )
    start, stop = _fit_window_fs(block_dur, dt, fit_start_ps, fit_stop_ps, what)
    blag = np.arange(L) * dt
    mask = (blag >= start - 1e-9) & (blag <= stop + 1e-9)
    Ds, cs = [], []
    for b in range(n_blocks):
        m = _fft_msd_components(pos[b * L : (b + 1) * L]).sum(axis=1)
        slope, intercept = np.polyfit(blag[mask], m[mask], 1)
        Ds.append(slope / 6.0 * A2_PER_FS_TO_CM2_PER_S)
        cs.append(intercept)
    Ds_arr = np.asarray(Ds)
    D = float(Ds_arr.mean())
    err = float(Ds_arr.std(ddof=1) / math.sqrt(n_blocks))
    return DiffusionResult(
        symbol,
        D,
        err,
        float(blag[mask][0]),
        float(blag[mask][-1]),
        "block",
        int(idx.size),
        T,
        duration,
        float(np.mean(cs)),
        n_blocks,
        tuple(float(x) for x in Ds_arr),
        msd_res,
    )


def _kinisi_fit(
    pos: np.ndarray, cells: np.ndarray, dt_fs: float, start_fs: float, stop_fs: float, seed: int, n_lags: int
) -> tuple[float, float, float, float, float]:
    """kinisi 2.x Bayesian regression on COM-corrected positions → (D, σ_D) cm²/s, intercept Å², window fs.

    We build kinisi's generic :class:`kinisi.parser.Parser` from fractional
    coordinates (the format its file parsers produce) so that no ASE/pymatgen
    objects are created per frame, and pass an empty drift-index set because the
    centre-of-mass drift has already been removed. kinisi's own ``dt_index`` is
    recomputed with ``astype(int)`` of a float ratio; we set it from the integer
    lags to be safe from truncation (3·dt/dt = 2.9999…).
    """
    import scipp as sc
    from kinisi.diffusion_analyzer import DiffusionAnalyzer
    from kinisi.displacement import calculate_msd
    from kinisi.parser import Parser

    n_f, n_a, _ = pos.shape
    frac = np.einsum("fak,fkl->fal", pos, np.linalg.inv(cells)) % 1.0
    i0 = int(math.ceil(start_fs / dt_fs - 1e-9))
    i1 = int(math.floor(stop_fs / dt_fs + 1e-9))
    # Lags 1 … n_f−1 (kinisi's count of independent windows uses the longest lag,
    # so the grid must reach the end of the run), dense enough inside the window.
    lags = np.unique(
        np.concatenate(
            [
                np.round(np.linspace(1, n_f - 1, min(n_lags, n_f - 1))),
                np.round(np.linspace(max(i0, 1), i1, min(40, i1 - max(i0, 1) + 1))),
            ]
        ).astype(np.int64)
    )
    lags = lags[(lags >= 1) & (lags <= n_f - 1)]
    parser = Parser(
        coords=sc.array(dims=["time", "particle", "dimension"], values=frac, unit=sc.units.dimensionless),
        latt=sc.array(dims=["time", "dimension1", "dimension2"], values=cells, unit=sc.units.angstrom),
        time_step=sc.scalar(float(dt_fs), unit="fs"),
        step_skip=sc.scalar(1, unit=sc.units.dimensionless),
        dt=sc.array(dims=["time interval"], values=lags * float(dt_fs), unit="fs"),
        specie_indices=sc.array(dims=["particle"], values=np.arange(n_a)),
        drift_indices=sc.array(dims=["particle"], values=np.zeros(0, dtype=np.int64)),
        dimension="xyz",
    )
    parser.dt_index = sc.array(dims=["time interval"], values=lags)
    analyzer = DiffusionAnalyzer(parser)
    dg = calculate_msd(parser, progress=False)
    da = dg["da"]
    t = da.coords["time interval"].values
    k = int(np.searchsorted(t, stop_fs + 1e-9 * max(1.0, stop_fs), side="right"))
    analyzer._dg = sc.DataGroup({"da": da["time interval", :k], "dimensionality": dg["dimensionality"]})
    first = int(np.searchsorted(t, start_fs - 1e-9 * max(1.0, start_fs), side="left"))
    state = np.random.get_state()
    try:
        analyzer.diffusion(
            start_dt=sc.scalar(float(t[first]), unit="fs"),
            progress=False,
            random_state=np.random.RandomState(seed),
        )
    finally:
        np.random.set_state(state)
    samples = np.asarray(analyzer.D.values, dtype=float)  # cm²/s (kinisi converts)
    intercept = analyzer.diff.intercept
    c = float(np.mean(intercept.values)) if intercept is not None else 0.0
    return float(samples.mean()), float(samples.std(ddof=1)), c, float(t[first]), float(t[k - 1])


# --------------------------------------------------------------------------- conductivity


@dataclass(frozen=True)
class ConductivityResult:
    """Nernst–Einstein ionic conductivity.

    Attributes
    ----------
    sigma_S_cm, sigma_err_S_cm : σ and its one-σ error in S/cm (error from D only).
    number_density_cm3 : n, carriers per cm³.
    charge : formal charge z (units of e).
    temperature_K : T in K.
    haven_ratio : H_R used (1 = uncorrelated ions).
    """

    sigma_S_cm: float
    sigma_err_S_cm: float
    number_density_cm3: float
    charge: float
    temperature_K: float
    haven_ratio: float


def formal_charge(symbol: str) -> int:
    """Formal charge (e) of a mobile ion from :data:`FORMAL_CHARGES`; InputError if unknown."""
    try:
        return FORMAL_CHARGES[symbol]
    except KeyError:
        raise InputError(
            f"No formal charge is known for species '{symbol}' (known: {', '.join(FORMAL_CHARGES)}); "
            "pass the charge explicitly, e.g. charges={'" + symbol + "': 1}."
        ) from None


def nernst_einstein_conductivity(
    D_cm2_s: float,
    n_ions: int,
    volume_A3: float,
    charge: float | str,
    temperature_K: float,
    haven_ratio: float = 1.0,
    D_err_cm2_s: float = 0.0,
) -> ConductivityResult:
    """σ = n (z e)² D / (H_R k_B T) in S/cm, with n = n_ions / V.

    ``charge`` is z in units of e, or an element symbol looked up in
    :data:`FORMAL_CHARGES`. ``haven_ratio`` H_R = D_tracer / D_σ: the default 1
    assumes the ions move without correlation, so that the tracer D equals the
    charge diffusion coefficient; correlated (concerted) hopping typically gives
    0.3 < H_R < 1 and a larger true σ. The error propagates D_err only:
    σ_err = σ · D_err / D (σ is linear in D).
    """
    z = float(formal_charge(charge)) if isinstance(charge, str) else float(charge)
    for name, val in (("volume_A3", volume_A3), ("temperature_K", temperature_K), ("haven_ratio", haven_ratio)):
        if not (math.isfinite(val) and val > 0):
            raise InputError(f"Nernst–Einstein needs a positive {name}, got {val}; pass the right value.")
    if n_ions <= 0:
        raise InputError(f"Nernst–Einstein needs n_ions > 0, got {n_ions}; pass the number of mobile ions.")
    n = n_ions / (volume_A3 * _A3_TO_CM3)  # cm⁻³
    pref = n * (z * E_CHARGE_C) ** 2 / (haven_ratio * KB_J_PER_K * temperature_K)  # S s cm⁻³ … × cm²/s → S/cm
    return ConductivityResult(
        sigma_S_cm=float(pref * D_cm2_s),
        sigma_err_S_cm=float(pref * abs(D_err_cm2_s)),
        number_density_cm3=float(n),
        charge=z,
        temperature_K=float(temperature_K),
        haven_ratio=float(haven_ratio),
    )


# --------------------------------------------------------------------------- Arrhenius


@dataclass(frozen=True)
class ArrheniusExtrapolation:
    """D(T) from an Arrhenius fit: value, first-order error, and the 1σ interval exp(ln D ± σ)."""

    temperature_K: float
    D_cm2_s: float
    D_err_cm2_s: float
    D_low_cm2_s: float
    D_high_cm2_s: float


@dataclass(frozen=True)
class ArrheniusResult:
    """Weighted fit of ln D = ln D₀ − Eₐ/(k_B T).

    Attributes
    ----------
    Ea_eV, Ea_err_eV : activation energy and its one-σ error in eV.
    D0_cm2_s, D0_err_cm2_s : prefactor and error in cm²/s (error = D₀ σ(ln D₀)).
    ln_D0 : ln(D₀ / (cm²/s)).
    covariance : 2×2 covariance of (ln D₀, slope in K) where slope = −Eₐ/k_B.
    chi2_reduced : χ²/(n − 2) of the weighted fit (NaN for 2 points).
    error_source : "propagated" (from D_err), "residuals" (scatter) or "propagated×residuals".
    temperatures_K, D_cm2_s, D_err_cm2_s : the data fitted.
    """

    Ea_eV: float
    Ea_err_eV: float
    D0_cm2_s: float
    D0_err_cm2_s: float
    ln_D0: float
    covariance: np.ndarray
    chi2_reduced: float
    error_source: str
    temperatures_K: np.ndarray
    D_cm2_s: np.ndarray
    D_err_cm2_s: np.ndarray | None

    def extrapolate(self, temperature_K: float) -> ArrheniusExtrapolation:
        """D at ``temperature_K`` with σ(ln D)² = Var(ln D₀) + Var(b)/T² + 2 Cov/T, D_err = D σ(ln D)."""
        T = float(temperature_K)
        if not T > 0:
            raise InputError(f"Cannot extrapolate to T = {T} K; pass a positive temperature.")
        slope = -self.Ea_eV / KB_EV_PER_K
        lnD = self.ln_D0 + slope / T
        g = np.array([1.0, 1.0 / T])
        s = float(np.sqrt(max(g @ self.covariance @ g, 0.0)))
        D = math.exp(lnD)
        return ArrheniusExtrapolation(T, D, D * s, math.exp(lnD - s), math.exp(lnD + s))


def arrhenius_fit(
    temperatures_K: Sequence[float],
    D_cm2_s: Sequence[float],
    D_err_cm2_s: Sequence[float] | None = None,
) -> ArrheniusResult:
    """Fit ln D against 1/T, weighted by σ(ln D) = D_err / D.

    Errors: with known D errors the parameter covariance (XᵀWX)⁻¹ is propagated
    from them; with ≥ 3 temperatures it is multiplied by the reduced χ² when
    that exceeds 1 (the points scatter more than their error bars allow —
    never shrink the propagated error). Without D errors the fit is unweighted
    and needs ≥ 3 temperatures for an error from the residuals (with exactly 2
    the errors are NaN).
    """
    T = np.asarray(temperatures_K, dtype=float).ravel()
    D = np.asarray(D_cm2_s, dtype=float).ravel()
    if T.size != D.size:
        raise InputError(f"arrhenius_fit got {T.size} temperatures but {D.size} D values; pass one D per temperature.")
    if np.unique(T).size < 2:
        raise InputError(f"arrhenius_fit needs D at ≥ 2 different temperatures, got {np.unique(T).size}; run more temperatures.")
    if not (np.all(np.isfinite(T)) and np.all(T > 0)):
        raise InputError("arrhenius_fit needs positive finite temperatures_K; check the temperatures.")
    if not (np.all(np.isfinite(D)) and np.all(D > 0)):
        raise InputError(
            f"arrhenius_fit needs positive D values (got min {np.nanmin(D):.3g} cm²/s); drop the non-diffusing temperatures."
        )
    err = None
    if D_err_cm2_s is not None:
        err = np.asarray(D_err_cm2_s, dtype=float).ravel()
        if err.size != D.size:
            raise InputError(f"arrhenius_fit got {err.size} D errors for {D.size} D values; pass one error per D.")
        if not (np.all(np.isfinite(err)) and np.all(err > 0)):
            raise InputError("arrhenius_fit needs positive finite D_err_cm2_s (or None for an unweighted fit); check the errors.")
    x = 1.0 / T
    y = np.log(D)
    sy = err / D if err is not None else np.ones_like(y)
    X = np.column_stack([np.ones_like(x), x])
    W = 1.0 / sy**2
    A = X.T @ (W[:, None] * X)
    cov = np.linalg.inv(A)
    beta = cov @ (X.T @ (W * y))
    resid = y - X @ beta
    dof = T.size - 2
    chi2_red = float(np.sum(W * resid**2) / dof) if dof > 0 else float("nan")
    if err is not None:
        source = "propagated"
        if dof > 0 and chi2_red > 1.0:
            cov = cov * chi2_red
            source = "propagated×residuals"
    else:
        source = "residuals"
        cov = cov * chi2_red if dof > 0 else np.full((2, 2), np.nan)
    lnD0, b = float(beta[0]), float(beta[1])
    Ea = -b * KB_EV_PER_K
    Ea_err = math.sqrt(cov[1, 1]) * KB_EV_PER_K if np.isfinite(cov[1, 1]) else float("nan")
    D0 = math.exp(lnD0)
    D0_err = D0 * math.sqrt(cov[0, 0]) if np.isfinite(cov[0, 0]) else float("nan")
    return ArrheniusResult(Ea, Ea_err, D0, D0_err, lnD0, cov, chi2_red, source, T, D, err)


# --------------------------------------------------------------------------- van Hove


@dataclass(frozen=True)
class VanHoveResult:
    """Self part of the van Hove function, G_s(r, t), for one species.

    Normalisation: ∫ 4π r² G_s(r, t) dr = 1 (over all r), so G_s is in Å⁻³ and
    4π r² G_s(r, t) (:attr:`radial_A1`, Å⁻¹) is the probability density of the
    displacement length r after time t. Histogram shells use their exact volume
    4π(r₂³ − r₁³)/3; the probability beyond ``r_max`` is ``fraction_beyond_r_max``.

    Attributes
    ----------
    symbol : element symbol.
    times_fs : (n_t,) the lag times actually used (multiples of the frame spacing), fs.
    r_A : (n_bins,) bin centres in Å; r_edges_A : (n_bins + 1,) bin edges in Å.
    G_s_A3 : (n_t, n_bins) G_s(r, t) in Å⁻³.
    fraction_beyond_r_max : (n_t,) fraction of displacements longer than r_max.
    mean_r2_A2 : (n_t,) ⟨r²⟩ from the raw displacements (Å²), i.e. the MSD at t.
    n_samples : (n_t,) number of (atom, origin) displacements histogrammed.
    """

    symbol: str
    times_fs: np.ndarray
    r_A: np.ndarray
    r_edges_A: np.ndarray
    G_s_A3: np.ndarray
    fraction_beyond_r_max: np.ndarray
    mean_r2_A2: np.ndarray
    n_samples: np.ndarray

    @property
    def radial_A1(self) -> np.ndarray:
        """4π r² G_s(r, t) in Å⁻¹ — the distribution of displacement lengths."""
        return 4.0 * np.pi * self.r_A**2 * self.G_s_A3


def _lags_from_times(traj: Trajectory, dt: float, times_fs: Sequence[float] | float) -> np.ndarray:
    t = np.atleast_1d(np.asarray(times_fs, dtype=float))
    if t.size == 0:
        raise InputError("times_fs is empty; pass the lag times in fs, e.g. times_fs=[100, 1000].")
    lags = np.round(t / dt).astype(int)
    bad = (lags < 1) | (lags > traj.n_frames - 1)
    if bad.any():
        raise InputError(
            f"{_source(traj)} spans {(traj.n_frames - 1) * dt:g} fs in steps of {dt:g} fs, so the lag time "
            f"{t[bad][0]:g} fs cannot be analysed; pass times_fs between {dt:g} and {(traj.n_frames - 1) * dt:g} fs."
        )
    return lags


def van_hove_self(
    traj: Trajectory,
    symbol: str,
    times_fs: Sequence[float] | float,
    r_max_A: float | None = None,
    n_bins: int = 100,
    max_origins: int = 1000,
    remove_com_drift: bool = True,
) -> VanHoveResult:
    """G_s(r, t) = (1/N) Σ_i ⟨δ(r − |r_i(t0+t) − r_i(t0)|)⟩ over origins t0, normalised as in :class:`VanHoveResult`.

    Each requested time is rounded to the nearest multiple of the frame spacing.
    Origins: all of them, or ``max_origins`` evenly strided ones for long runs.
    Default ``r_max_A``: 4 × the root-mean-square displacement at the longest
    time (at least 1 Å), which holds all but ~1e-5 of a Gaussian distribution.
    """
    dt = _check_times(traj)
    idx = traj.indices_of(symbol)
    lags = _lags_from_times(traj, dt, times_fs)
    if n_bins < 2:
        raise InputError(f"n_bins={n_bins} is too few for a histogram; pass n_bins ≥ 2 (e.g. 100).")
    pos = _selected_positions(traj, idx, remove_com_drift)
    r2s = [_squared_displacements(pos, int(lag), max_origins) for lag in lags]
    mean_r2 = np.array([float(r2.mean()) for r2 in r2s])
    if r_max_A is None:
        r_max_A = max(1.0, 4.0 * math.sqrt(float(mean_r2.max())))
    elif not (math.isfinite(r_max_A) and r_max_A > 0):
        raise InputError(f"r_max_A={r_max_A} is not a positive length; pass e.g. r_max_A=10.")
    edges = np.linspace(0.0, float(r_max_A), int(n_bins) + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    G = np.empty((lags.size, int(n_bins)))
    beyond = np.empty(lags.size)
    for j, r2 in enumerate(r2s):
        r = np.sqrt(r2)
        counts, _ = np.histogram(r, bins=edges)
        G[j] = counts / (r.size * shell)
        beyond[j] = float(np.mean(r > r_max_A))
    return VanHoveResult(
        symbol=symbol,
        times_fs=lags * dt,
        r_A=0.5 * (edges[1:] + edges[:-1]),
        r_edges_A=edges,
        G_s_A3=G,
        fraction_beyond_r_max=beyond,
        mean_r2_A2=mean_r2,
        n_samples=np.array([r2.size for r2 in r2s]),
    )


# --------------------------------------------------------------------------- α₂


@dataclass(frozen=True)
class NonGaussianResult:
    """Non-Gaussian parameter α₂(t) = 3⟨Δr⁴⟩ / (5⟨Δr²⟩²) − 1 of one species.

    Attributes
    ----------
    symbol : element symbol.
    lag_fs : (n_lags,) lag times in fs.
    alpha2 : (n_lags,) α₂ (dimensionless; 0 for Gaussian displacements, > 0 for
        heterogeneous / hopping dynamics).
    msd_A2 : (n_lags,) ⟨Δr²⟩ in Å²; mean_r4_A4 : (n_lags,) ⟨Δr⁴⟩ in Å⁴.
    n_origins : (n_lags,) number of time origins averaged per lag.
    """

    symbol: str
    lag_fs: np.ndarray
    alpha2: np.ndarray
    msd_A2: np.ndarray
    mean_r4_A4: np.ndarray
    n_origins: np.ndarray


def non_gaussian_parameter(
    traj: Trajectory,
    symbol: str,
    n_lags: int = 60,
    max_lag_fraction: float = 0.5,
    max_origins: int = 500,
    remove_com_drift: bool = True,
) -> NonGaussianResult:
    """α₂(t) on ≈``n_lags`` log-spaced lags up to ``max_lag_fraction`` of the run.

    Averages over all atoms of ``symbol`` and over at most ``max_origins``
    evenly strided time origins per lag, so the cost is
    O(n_lags · max_origins · n_atoms) — about 10⁷ operations for 10⁴ frames × 100
    atoms — independent of the run length.
    """
    dt = _check_times(traj)
    idx = traj.indices_of(symbol)
    if not 0 < max_lag_fraction <= 1:
        raise InputError(f"max_lag_fraction={max_lag_fraction} must lie in (0, 1]; pass e.g. 0.5.")
    pos = _selected_positions(traj, idx, remove_com_drift)
    max_lag = max(1, int(math.floor(max_lag_fraction * (traj.n_frames - 1))))
    lags = np.unique(np.round(np.geomspace(1, max_lag, max(int(n_lags), 1))).astype(int))
    m2 = np.empty(lags.size)
    m4 = np.empty(lags.size)
    n_o = np.empty(lags.size, dtype=int)
    for j, lag in enumerate(lags):
        r2 = _squared_displacements(pos, int(lag), max_origins)
        m2[j] = r2.mean()
        m4[j] = np.mean(r2 * r2)
        n_o[j] = _origins(traj.n_frames, int(lag), max_origins).size
    with np.errstate(divide="ignore", invalid="ignore"):
        a2 = np.where(m2 > 0, 3.0 * m4 / (5.0 * m2**2) - 1.0, np.nan)
    return NonGaussianResult(symbol, lags * dt, a2, m2, m4, n_o)


# --------------------------------------------------------------------------- VDOS


@dataclass(frozen=True)
class VDOSResult:
    """Vibrational density of states from the velocity autocorrelation function.

    Attributes
    ----------
    symbol : element symbol, or None for all atoms.
    frequency_cm1 : (n_freq,) wavenumbers in cm⁻¹; frequency_THz : the same in THz.
    dos_per_cm1 : (n_freq,) g(ν̃) normalised to ∫ g dν̃ = 1 over 0 … Nyquist (units cm).
    lag_fs : (n_lag,) lag times of the VACF in fs.
    vacf : (n_lag,) normalised VACF C(t)/C(0) (before windowing).
    window : the window applied to C(t) before the transform.
    mass_weighted : whether C(t) = Σ m_i⟨v_i(0)·v_i(t)⟩ (True) or Σ⟨v_i(0)·v_i(t)⟩.
    resolution_cm1 : 1/(2 t_max) in cm⁻¹, the natural frequency spacing for the
        longest lag t_max (the plotted grid is finer through zero padding).
    """

    symbol: str | None
    frequency_cm1: np.ndarray
    frequency_THz: np.ndarray
    dos_per_cm1: np.ndarray
    lag_fs: np.ndarray
    vacf: np.ndarray
    window: str | None
    mass_weighted: bool
    resolution_cm1: float

    @property
    def peak_cm1(self) -> float:
        """Wavenumber of the highest VDOS maximum (cm⁻¹)."""
        return float(self.frequency_cm1[int(np.argmax(self.dos_per_cm1))])


_WINDOWS = {"hann": np.hanning, "hanning": np.hanning, "blackman": np.blackman, "bartlett": np.bartlett, "hamming": np.hamming}


def vdos(
    traj: Trajectory,
    symbol: str | None = None,
    window: str | None = "hann",
    mass_weighted: bool = True,
    max_lag_fs: float | None = None,
    zero_pad: int = 4,
) -> VDOSResult:
    """VDOS g(ν̃) = FT of the (mass-weighted) VACF, in cm⁻¹ and THz, with unit area.

    C(t) = Σ_i m_i ⟨v_i(0)·v_i(t)⟩ / Σ_i m_i (tidynamics.acf, all origins) over
    the atoms of ``symbol`` (all atoms if None), truncated at ``max_lag_fs``
    (default: half the run), multiplied by the decaying half of ``window``
    ("hann", "blackman", "bartlett", "hamming" or None) and cosine transformed:
    g(ν) ∝ 2∫₀^t_max C(t) w(t) cos(2πνt) dt (Wiener–Khinchin). Mass weighting
    gives each normal mode the weight k_BT it has by equipartition.
    ``zero_pad`` multiplies the transform length (finer grid, same resolution).
    Requires velocities (InputError otherwise).
    """
    dt = _check_times(traj)
    if traj.velocities is None:
        raise InputError(
            f"{_source(traj)} has no velocities, which the VDOS needs; rerun the MD storing velocities "
            "(H5MD /particles/all/velocity)."
        )
    v_all = np.asarray(traj.velocities, dtype=float)
    idx = np.arange(traj.n_atoms) if symbol is None else traj.indices_of(symbol)
    v = v_all[:, idx, :]
    if not np.isfinite(v).all():
        raise InputError(f"{_source(traj)} velocities contain NaN or infinite values; rerun the MD storing velocities.")
    key = None if window is None else str(window).lower()
    if key not in (None, "none") and key not in _WINDOWS:
        raise InputError(f"window={window!r} is unknown; use one of {', '.join(_WINDOWS)} or None.")
    if key == "none":
        key = None
    n_f = traj.n_frames
    M = n_f // 2 + 1 if max_lag_fs is None else int(round(max_lag_fs / dt)) + 1
    if not 2 <= M <= n_f:
        raise InputError(f"max_lag_fs={max_lag_fs} must lie between {dt:g} and {(n_f - 1) * dt:g} fs; pass a value in range.")
    m = atomic_masses[traj.numbers[idx]] if mass_weighted else np.ones(idx.size)
    C = np.zeros(n_f)
    for j in range(idx.size):
        C += m[j] * tidynamics.acf(v[:, j, :])
    C /= m.sum()
    C = C[:M]
    w = np.ones(M) if key is None else _WINDOWS[key](2 * M - 1)[M - 1 :]
    Cw = C * w
    n_fft = 1 << int(math.ceil(math.log2(max(2, zero_pad) * 2 * M)))
    # one-sided cosine transform with the trapezoidal weight ½ at t = 0
    S = 2.0 * dt * (np.fft.rfft(Cw, n=n_fft).real - 0.5 * Cw[0])
    nu_thz = np.fft.rfftfreq(n_fft, d=dt) * _PER_FS_TO_THZ
    nu_cm1 = nu_thz * THZ_TO_CM1
    area = np.trapezoid(S, nu_cm1) if hasattr(np, "trapezoid") else np.trapz(S, nu_cm1)
    if not (math.isfinite(area) and area > 0):
        raise InputError(f"{_source(traj)} velocities are all zero, so there is no VDOS; check the stored velocities.")
    t_max = (M - 1) * dt
    return VDOSResult(
        symbol=symbol,
        frequency_cm1=nu_cm1,
        frequency_THz=nu_thz,
        dos_per_cm1=S / area,
        lag_fs=np.arange(M) * dt,
        vacf=C / C[0] if C[0] != 0 else C,
        window=key,
        mass_weighted=bool(mass_weighted),
        resolution_cm1=float(1.0 / (2.0 * t_max) * _PER_FS_TO_THZ * THZ_TO_CM1),
    )


def vdos_overlap(a: VDOSResult, b: VDOSResult, max_cm1: float | None = None) -> float:
    """Overlap O = ∫ min(g_a, g_b) dν̃ of two unit-area VDOS (docs/physics/transport.md).

    O = 1 − ½∫|g_a − g_b| dν̃: 1 for identical spectra, 0 for disjoint ones; for two
    Gaussians of width σ shifted by δ, O = erfc(δ / (2√2 σ)). Both are interpolated onto the
    finer of the two grids up to ``max_cm1`` (default: the lower Nyquist limit) and
    renormalised there, so runs with different frame intervals compare.
    """
    top = min(a.frequency_cm1[-1], b.frequency_cm1[-1]) if max_cm1 is None else float(max_cm1)
    step = min(np.diff(a.frequency_cm1[:2])[0], np.diff(b.frequency_cm1[:2])[0])
    nu = np.arange(0.0, top + 0.5 * step, step)
    ga = np.interp(nu, a.frequency_cm1, a.dos_per_cm1)
    gb = np.interp(nu, b.frequency_cm1, b.dos_per_cm1)
    trap = np.trapezoid if hasattr(np, "trapezoid") else np.trapz
    ga, gb = np.clip(ga, 0, None), np.clip(gb, 0, None)  # windowed transforms can dip slightly below zero
    ga, gb = ga / trap(ga, nu), gb / trap(gb, nu)
    return float(trap(np.minimum(ga, gb), nu))


# --------------------------------------------------------------------------- site analysis


@dataclass(frozen=True)
class SiteAnalysisResult:
    """Site-based indicator of hopping versus liquid-like motion for one species.

    Attributes
    ----------
    symbol : element symbol of the mobile ion.
    n_sites : number of crystallographic sites.
    r_site_A : radius (Å) of the sphere around a site inside which an ion counts as "on" it.
    site_spacing_A : median nearest site–site distance (Å).
    away_fraction : fraction of (ion, frame) pairs farther than ``r_site_A`` from every site.
    n_hops : number of site-to-site hops (all ions) that lasted ≥ ``min_residence_fs``.
    mean_residence_fs : n_ions × duration / n_hops (∞ without hops), fs.
    hop_rate_per_ion_ps : hops per ion per ps.
    site_occupancy : (n_sites,) time-averaged number of ions on each site.
    min_residence_fs : the residence time a new site must be held to count a hop.
    duration_fs : analysed time span in fs; n_ions : number of mobile ions.
    """

    symbol: str
    n_sites: int
    r_site_A: float
    site_spacing_A: float
    away_fraction: float
    n_hops: int
    mean_residence_fs: float
    hop_rate_per_ion_ps: float
    site_occupancy: np.ndarray
    min_residence_fs: float
    duration_fs: float
    n_ions: int

    @property
    def regime(self) -> str:
        """Heuristic label: "immobile" (no hop), "liquid-like" (away_fraction > 0.5) or "hopping"."""
        if self.n_hops == 0:
            return "immobile"
        return "liquid-like" if self.away_fraction > 0.5 else "hopping"


def _is_orthogonal(cells: np.ndarray) -> bool:
    c = np.asarray(cells).reshape(-1, 3, 3)
    off = c * (1 - np.eye(3))
    return bool(np.all(np.abs(off) <= 1e-8 * np.abs(c).max()))


_SHIFTS = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float)


def _min_image_r2(dfrac: np.ndarray, cells: np.ndarray, orthogonal: bool) -> np.ndarray:
    """Squared minimum-image distances for fractional differences (F, n, m, 3) in cells (F, 3, 3)."""
    dfrac = dfrac - np.round(dfrac)
    if orthogonal:
        cart = dfrac * np.einsum("fkk->fk", cells)[:, None, None, :]
        return np.einsum("fnmk,fnmk->fnm", cart, cart)
    best = None
    for s in _SHIFTS:  # rounding is exact only for orthogonal cells; check the 26 neighbours
        cart = np.einsum("fnmk,fkl->fnml", dfrac + s, cells)
        r2 = np.einsum("fnmk,fnmk->fnm", cart, cart)
        best = r2 if best is None else np.minimum(best, r2)
    return best


def site_occupancy_analysis(
    traj: Trajectory,
    symbol: str,
    reference_atoms: Atoms | None = None,
    r_site_A: float | None = None,
    min_residence_fs: float = 100.0,
    frame_stride: int = 1,
) -> SiteAnalysisResult:
    """Hopping versus liquid-like motion from the ions' distance to crystallographic sites.

    Sites: the positions of the ``symbol`` ions in frame 0 (default), or the
    ``symbol`` atoms of ``reference_atoms`` (an ideal structure in the same
    supercell as the MD, which may contain sites that are vacant; if it has no
    ``symbol`` atoms all its atoms are taken as sites, e.g. dummy "X" atoms).

    For every analysed frame and ion the minimum-image distance to the nearest
    site is computed. ``away_fraction`` is the fraction of (ion, frame) pairs
    farther than ``r_site_A`` from every site. Default ``r_site_A`` = ¼ of the
    median nearest site–site distance d: a sphere half as wide as the spacing,
    well inside each site's Voronoi cell (an ion at a saddle point d/2 between
    two sites is "away"), and 3–5 times the ≈0.1–0.2 Å thermal rms amplitude of
    an ion vibrating on its site. Pass ``r_site_A`` for split or very closely
    spaced sites.

    Hops: an ion is committed to a site from the moment it enters that site's
    r_site sphere until it enters another one (so rattling near a border is not
    counted); residences shorter than ``min_residence_fs`` (default 100 fs,
    about one vibrational period) are discarded as failed hops, and a hop is
    a change of committed site that remains. ``mean_residence_fs`` = total ion
    time / n_hops (the maximum-likelihood mean waiting time for Poisson hops).
    Large away_fraction with many hops → liquid-like; small with hops →
    hopping; no hops → not conducting on this time scale.
    """
    dt = _check_times(traj)
    idx = traj.indices_of(symbol)
    stride = int(frame_stride)
    if stride < 1:
        raise InputError(f"frame_stride={frame_stride} must be ≥ 1; pass e.g. 1 or 10.")
    pos = np.asarray(traj.positions[::stride, idx, :], dtype=float)
    cells = np.asarray(traj.cells[::stride], dtype=float)
    dt_eff = dt * stride
    F, n = pos.shape[:2]

    if reference_atoms is None:
        ref_cell = np.asarray(traj.cells[0], dtype=float)
        site_cart = np.asarray(traj.positions[0, idx, :], dtype=float)
    else:
        ref_cell = np.asarray(reference_atoms.cell.array, dtype=float)
        if abs(np.linalg.det(ref_cell)) < 1e-9:
            raise InputError("reference_atoms has no 3D cell; give the ideal structure with its periodic cell.")
        scale = np.abs(traj.cells[0]).max()
        if np.abs(ref_cell - traj.cells[0]).max() > 0.05 * scale:
            raise InputError(
                "reference_atoms has a different cell from the trajectory's first frame; "
                "pass the ideal structure in the same supercell as the MD."
            )
        sel = np.flatnonzero(reference_atoms.numbers == atomic_numbers[symbol])
        if sel.size == 0:
            sel = np.arange(len(reference_atoms))
        site_cart = reference_atoms.positions[sel]
    if site_cart.shape[0] == 0:
        raise InputError("reference_atoms holds no atoms to use as sites; give the ideal structure.")
    site_frac = (site_cart @ np.linalg.inv(ref_cell)) % 1.0
    m = site_frac.shape[0]

    # nearest site–site distance (periodic images included, self excluded)
    dss = site_frac[:, None, :] - site_frac[None, :, :]
    dss = dss - np.round(dss)
    best = np.full((m, m), np.inf)
    for s in _SHIFTS:
        cart = (dss + s) @ ref_cell
        r2 = np.einsum("ijk,ijk->ij", cart, cart)
        if not s.any():
            r2[np.arange(m), np.arange(m)] = np.inf
        best = np.minimum(best, r2)
    site_spacing = float(np.median(np.sqrt(best.min(axis=1))))
    if r_site_A is None:
        r_site = 0.25 * site_spacing
    else:
        r_site = float(r_site_A)
        if not (math.isfinite(r_site) and r_site > 0):
            raise InputError(f"r_site_A={r_site_A} is not a positive length; pass e.g. r_site_A=0.8.")

    inv_cells = np.linalg.inv(cells)
    if np.allclose(cells, cells[0], rtol=0.0, atol=1e-8):
        # Fixed cell (NVT): a k-d tree over the sites and their 26 periodic
        # images answers all (frame, ion) queries at once.
        from scipy.spatial import cKDTree

        cell = cells[0]
        tree = cKDTree(((site_frac[None, :, :] + _SHIFTS[:, None, :]).reshape(-1, 3)) @ cell)
        frac = np.einsum("fak,kl->fal", pos, inv_cells[0]) % 1.0
        d, j = tree.query((frac @ cell).reshape(-1, 3))
        dist = d.reshape(F, n)
        nearest = (j % m).reshape(F, n).astype(np.int64)
    else:
        # Variable cell (NPT): brute force over sites, in chunks of frames.
        ortho = _is_orthogonal(cells)
        nearest = np.empty((F, n), dtype=np.int64)
        dist = np.empty((F, n))
        chunk = max(1, int(2_000_000 // max(1, n * m)))
        for f0 in range(0, F, chunk):
            f1 = min(F, f0 + chunk)
            fr = np.einsum("fak,fkl->fal", pos[f0:f1], inv_cells[f0:f1])
            r2 = _min_image_r2(fr[:, :, None, :] - site_frac[None, None, :, :], cells[f0:f1], ortho)
            j = np.argmin(r2, axis=2)
            nearest[f0:f1] = j
            dist[f0:f1] = np.sqrt(np.take_along_axis(r2, j[..., None], axis=2)[..., 0])
    on_site = dist <= r_site
    away_fraction = float(1.0 - on_site.mean())

    labels = np.where(on_site, nearest, -1)
    occupancy = np.bincount(labels[on_site], minlength=m) / F
    labels[0] = nearest[0]  # every ion starts committed to its nearest site
    # forward-fill: the committed site is the last one whose sphere the ion entered
    last = np.where(labels >= 0, np.arange(F)[:, None], 0)
    last = np.maximum.accumulate(last, axis=0)
    committed = np.take_along_axis(labels, last, axis=0)

    min_frames = max(1, int(math.ceil(min_residence_fs / dt_eff - 1e-9)))
    n_hops = 0
    for a in range(n):
        c = committed[:, a]
        change = np.flatnonzero(np.diff(c)) + 1
        starts = np.concatenate([[0], change])
        lengths = np.diff(np.concatenate([starts, [F]]))
        sites = c[starts]
        keep = lengths >= min_frames
        keep[0] = True  # the first residence began before the run: always real
        kept = sites[keep]
        if kept.size > 1:
            n_hops += int(np.count_nonzero(np.diff(kept)))
    duration = (F - 1) * dt_eff
    mean_res = n * duration / n_hops if n_hops > 0 else float("inf")
    rate = n_hops / (n * duration / 1000.0) if duration > 0 else float("nan")
    return SiteAnalysisResult(
        symbol=symbol,
        n_sites=int(m),
        r_site_A=float(r_site),
        site_spacing_A=site_spacing,
        away_fraction=away_fraction,
        n_hops=int(n_hops),
        mean_residence_fs=float(mean_res),
        hop_rate_per_ion_ps=float(rate),
        site_occupancy=occupancy,
        min_residence_fs=float(min_residence_fs),
        duration_fs=float(duration),
        n_ions=int(n),
    )


# --------------------------------------------------------------------------- analyse


@dataclass(frozen=True)
class SpeciesTransport:
    """D, σ and the site indicator of one species (σ/sites None when not computed)."""

    diffusion: DiffusionResult
    conductivity: ConductivityResult | None
    sites: SiteAnalysisResult | None

    def to_dict(self) -> dict[str, Any]:
        d = self.diffusion
        out: dict[str, Any] = {
            "D_cm2_s": d.D_cm2_s,
            "D_err_cm2_s": d.D_err_cm2_s,
            "sigma_S_cm": None if self.conductivity is None else self.conductivity.sigma_S_cm,
            "sigma_err_S_cm": None if self.conductivity is None else self.conductivity.sigma_err_S_cm,
            "fit_start_ps": d.fit_start_ps,
            "fit_stop_ps": d.fit_stop_ps,
            "method": d.method,
            "away_from_site_fraction": None if self.sites is None else self.sites.away_fraction,
            "n_hops": None if self.sites is None else self.sites.n_hops,
            "n_atoms": d.n_atoms,
            "charge": None if self.conductivity is None else self.conductivity.charge,
            "haven_ratio": None if self.conductivity is None else self.conductivity.haven_ratio,
            "regime": None if self.sites is None else self.sites.regime,
        }
        return {k: _finite_or_none(v) for k, v in out.items()}


@dataclass(frozen=True)
class TransportResult:
    """Transport summary of one trajectory; :meth:`to_dict` gives the JSON form."""

    temperature_K: float
    duration_ps: float
    n_frames: int
    volume_A3: float
    species: dict[str, SpeciesTransport]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (NaN/∞ become null)."""
        return {
            "temperature_K": _finite_or_none(float(self.temperature_K)),
            "species": {s: r.to_dict() for s, r in self.species.items()},
            "duration_ps": _finite_or_none(float(self.duration_ps)),
            "n_frames": int(self.n_frames),
            "volume_A3": _finite_or_none(float(self.volume_A3)),
        }


def analyse(
    traj: Trajectory,
    species: str | Sequence[str] | None = None,
    fit_start_ps: float | None = None,
    fit_stop_ps: float | None = None,
    method: str = "kinisi",
    haven_ratio: float = 1.0,
    charges: Mapping[str, float] | None = None,
    sites: bool = True,
    temperature_K: float | None = None,
    seed: int = 0,
) -> TransportResult:
    """D (cm²/s), Nernst–Einstein σ (S/cm) and the site indicator for each mobile species.

    ``species``: a symbol or list; default ``traj.metadata["mobile_ion"]`` or, if
    absent, every species in the trajectory. Charges come from ``charges`` or
    :data:`FORMAL_CHARGES`; an explicitly requested species with no known charge
    raises InputError, while in the all-species default its σ is left None.
    σ uses the mean cell volume and ``temperature_K`` (default: the trajectory's).
    """
    explicit = species is not None
    if species is None:
        mob = traj.metadata.get("mobile_ion") if traj.metadata else None
        if mob:
            explicit = True
            species = mob
        else:
            species = traj.species
    names = [species] if isinstance(species, str) else list(species)
    if not names:
        raise InputError("No species to analyse were given; pass e.g. species=['Na'].")
    T = float(traj.temperature_K) if temperature_K is None else float(temperature_K)
    dt = _check_times(traj)
    volume = float(np.mean(np.abs(np.linalg.det(np.asarray(traj.cells, dtype=float)))))
    charges = dict(charges or {})
    out: dict[str, SpeciesTransport] = {}
    for s in names:
        traj.indices_of(s)  # unknown species → InputError before any work
        q: float | None
        if s in charges:
            q = float(charges[s])
        elif s in FORMAL_CHARGES:
            q = float(FORMAL_CHARGES[s])
        elif explicit:
            q = float(formal_charge(s))  # raises the InputError
        else:
            q = None
        if q is not None and not (math.isfinite(T) and T > 0):
            raise InputError(
                f"{_source(traj)} has no temperature (temperature_K = {T}), which σ needs; pass temperature_K."
            )
        d = diffusion_coefficient(traj, s, fit_start_ps, fit_stop_ps, method=method, seed=seed)
        cond = None
        if q is not None:
            cond = nernst_einstein_conductivity(
                d.D_cm2_s, d.n_atoms, volume, q, T, haven_ratio=haven_ratio, D_err_cm2_s=d.D_err_cm2_s
            )
        site = site_occupancy_analysis(traj, s) if sites else None
        out[s] = SpeciesTransport(d, cond, site)
    return TransportResult(
        temperature_K=T,
        duration_ps=(traj.n_frames - 1) * dt / 1000.0,
        n_frames=traj.n_frames,
        volume_A3=volume,
        species=out,
    )


# --------------------------------------------------------------------------- plots


def _figure(figsize: tuple[float, float] = (5.0, 3.8)):
    """A figure on the Agg canvas without touching pyplot's global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_msd(results: MSDResult | DiffusionResult | Sequence[MSDResult | DiffusionResult], path: str | Path) -> Path:
    """MSD (Å²) against lag time (ps) for one or more species, with the fitted line and window."""
    items = [results] if isinstance(results, (MSDResult, DiffusionResult)) else list(results)
    fig = _figure()
    ax = fig.add_subplot()
    for item in items:
        m = item.msd if isinstance(item, DiffusionResult) else item
        if m is None:
            continue
        (line,) = ax.plot(m.lag_ps, m.msd_A2, label=m.symbol)
        if isinstance(item, DiffusionResult):
            t = np.linspace(item.fit_start_fs, item.fit_stop_fs, 50)
            ax.plot(
                t / 1000.0,
                6.0 * item.D_A2_per_fs * t + item.intercept_A2,
                "--",
                color=line.get_color(),
                label=f"{item.symbol} fit: D = {item.D_cm2_s:.2e} ± {item.D_err_cm2_s:.1e} cm²/s",
            )
            ax.axvspan(item.fit_start_ps, item.fit_stop_ps, color=line.get_color(), alpha=0.08)
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("MSD (Å²)")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_arrhenius(result: ArrheniusResult, path: str | Path) -> Path:
    """D (cm²/s, log scale) against 1000/T (K⁻¹) with error bars and the fitted line."""
    fig = _figure()
    ax = fig.add_subplot()
    x = 1000.0 / result.temperatures_K
    yerr = None if result.D_err_cm2_s is None else result.D_err_cm2_s
    ax.errorbar(x, result.D_cm2_s, yerr=yerr, fmt="o", capsize=3, label="MD")
    xs = np.linspace(x.min() * 0.95, x.max() * 1.05, 100)
    ax.plot(
        xs,
        result.D0_cm2_s * np.exp(-result.Ea_eV / (KB_EV_PER_K * 1000.0 / xs)),
        "-",
        label=f"Eₐ = {result.Ea_eV:.3f} ± {result.Ea_err_eV:.3f} eV",
    )
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (K⁻¹)")
    ax.set_ylabel("D (cm²/s)")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_van_hove(result: VanHoveResult, path: str | Path) -> Path:
    """4πr²G_s(r, t) (Å⁻¹) against r (Å), one curve per time."""
    fig = _figure()
    ax = fig.add_subplot()
    for t, y in zip(result.times_fs, result.radial_A1):
        ax.plot(result.r_A, y, label=f"t = {t / 1000.0:g} ps")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("4πr² G_s(r, t) (Å⁻¹)")
    ax.set_title(f"self van Hove function, {result.symbol}")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_vdos(result: VDOSResult, path: str | Path, max_cm1: float | None = None) -> Path:
    """VDOS g(ν̃) (cm) against wavenumber (cm⁻¹), with a THz axis on top."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(result.frequency_cm1, result.dos_per_cm1, label=result.symbol or "all atoms")
    if max_cm1 is None:
        cum = np.cumsum(np.clip(result.dos_per_cm1, 0, None))
        max_cm1 = float(result.frequency_cm1[min(int(np.searchsorted(cum, 0.995 * cum[-1])) + 1, cum.size - 1)]) * 1.2
    ax.set_xlim(0, max_cm1)
    ax.set_xlabel("wavenumber (cm⁻¹)")
    ax.set_ylabel("VDOS g(ν̃) (1/cm⁻¹)")
    top = ax.secondary_xaxis("top", functions=(lambda w: w / THZ_TO_CM1, lambda f: f * THZ_TO_CM1))
    top.set_xlabel("frequency (THz)")
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_report(traj: Trajectory, result: TransportResult, prefix: str | Path) -> list[Path]:
    """The standard transport figures of one trajectory: ``<prefix>_msd.png``,
    ``<prefix>_van_hove.png`` (mobile species, lags of 10/25/50 % of the run) and
    ``<prefix>_vdos.png`` (all atoms, when velocities were stored)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [plot_msd([s.diffusion for s in result.species.values()], f"{prefix}_msd.png")]
    duration = float(traj.time_fs[-1] - traj.time_fs[0])
    for sym in result.species:
        times = [f * duration for f in (0.1, 0.25, 0.5) if f * duration >= traj.dt_fs]
        if times:
            paths.append(plot_van_hove(van_hove_self(traj, sym, times), f"{prefix}_van_hove_{sym}.png"))
    if traj.velocities is not None:
        paths.append(plot_vdos(vdos(traj), f"{prefix}_vdos.png", max_cm1=800.0))
    return paths
