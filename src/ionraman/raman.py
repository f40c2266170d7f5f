"""Raman spectra from the time series of the cell polarizability α(t).

The input is the electronic polarizability tensor of the whole cell, α(t)
(3×3, Å³), sampled every ``dt`` fs along an MD trajectory
(:class:`PolarizabilitySeries`). :func:`compute_spectrum` turns it into a
:class:`RamanSpectrum`: the Fourier transform of polarizability
autocorrelation functions (Wiener–Khinchin theorem) estimated with Welch's
method (windowed, overlapping segments averaged; error bar = standard error
of the mean over segments), contracted either to the powder (orientational
average) channels or to single-crystal Porto geometries, and optionally
multiplied by the temperature/quantum factors that turn a classical spectrum
into a measured-like Stokes spectrum or a reduced (Bose-corrected) spectrum.

Every equation and its reference is in ``docs/physics/raman.md``. Conventions
in one place:

* frequencies are wavenumbers ν̃ in cm⁻¹ (ν̃ = f / c), non-negative (Stokes
  side) unless ``include_antistokes``; then negative ν̃ is the anti-Stokes side;
* spectra are one-sided power spectral densities per cm⁻¹ (twice the
  two-sided density at every grid point, ν̃ = 0 included): the classical
  spectrum of a scalar x(t) obeys Parseval as ∫_0^{ν̃_Nyq} S dν̃ = var(x)
  (trapezoid rule; exact for the unwindowed single-segment periodogram of an
  even number of samples — segments are made even), units Å⁶·cm (= Å⁶ per cm⁻¹);
* the mean polarizability (the elastic Rayleigh line) is removed before
  correlating (``remove_mean=True``);
* representations: ``"classical"`` I_cl(ν̃) (symmetric, from MD),
  ``"stokes"`` I_S = Q(ν̃)·I_cl(ν̃) [× laser factor], ``"reduced"``
  χ''(ν̃) = I_S(ν̃)/(n(ν̃)+1) (= βħω·I_cl for the harmonic correction).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._io import atomic_write_bytes, save_figure
from .errors import InputError
from .units import C_CM_PER_S, HC_EV_CM, KB_EV_PER_K

__all__ = [
    "PolarizabilitySeries",
    "RamanSpectrum",
    "compute_spectrum",
    "welch_psd",
    "polarizability_invariants",
    "parse_geometry",
    "bose_einstein",
    "quantum_correction_factor",
    "laser_factor",
    "representation_factor",
    "lorentzian_broadened_lines",
    "trapezoid_weights",
    "POWDER_CHANNELS",
    "REPRESENTATIONS",
    "QUANTUM_CORRECTIONS",
]

#: Channels produced by ``geometry="powder"`` (orientational averages).
POWDER_CHANNELS: tuple[str, ...] = ("VV", "VH", "unpolarized", "isotropic", "anisotropic")
#: Spectrum representations (see module docstring and docs/physics/raman.md).
REPRESENTATIONS: tuple[str, ...] = ("classical", "stokes", "reduced")
#: Quantum-correction factors Q(ω) for classical correlation functions (Ramírez et al. 2004).
QUANTUM_CORRECTIONS: tuple[str, ...] = ("harmonic", "standard", "schofield", "none")

_FS_TO_S = 1e-15
_MIN_SEGMENT_SAMPLES = 8
_DEFAULT_N_SEGMENTS = 8
_CSV_MAGIC = "# ionraman RamanSpectrum"


# =========================================================================== input


def _as_tensor_array(arr: Any, source: str) -> np.ndarray:
    """(n,3,3), (n,9) row-major or (n,6) Voigt (xx,yy,zz,yz,xz,xy) → (n,3,3) float."""
    a = np.asarray(arr, dtype=float)
    if a.ndim == 3 and a.shape[1:] == (3, 3):
        return a.copy()
    if a.ndim == 2 and a.shape[1] == 9:
        return a.reshape(-1, 3, 3).copy()
    if a.ndim == 2 and a.shape[1] == 6:
        out = np.empty((a.shape[0], 3, 3))
        xx, yy, zz, yz, xz, xy = a.T
        out[:, 0, 0], out[:, 1, 1], out[:, 2, 2] = xx, yy, zz
        out[:, 1, 2] = out[:, 2, 1] = yz
        out[:, 0, 2] = out[:, 2, 0] = xz
        out[:, 0, 1] = out[:, 1, 0] = xy
        return out
    raise InputError(
        f"{source}: the polarizability array has shape {a.shape}; give (n_frames, 3, 3), "
        "(n_frames, 9) row-major or (n_frames, 6) Voigt xx, yy, zz, yz, xz, xy values in Å³."
    )


def _check_dt(dt_fs: Any, source: str) -> float:
    try:
        dt = float(dt_fs)
    except (TypeError, ValueError):
        dt = float("nan")
    if not math.isfinite(dt) or dt <= 0:
        raise InputError(f"{source}: dt_fs = {dt_fs!r} is not a positive time step; give the spacing of the frames in fs.")
    return dt


@dataclass(frozen=True, eq=False)
class PolarizabilitySeries:
    """The cell polarizability tensor along a trajectory.

    Attributes
    ----------
    time_fs : (n,) equally spaced times in fs.
    alpha_A3 : (n, 3, 3) polarizability tensors in Å³ (symmetrised on construction).
    temperature_K : nominal temperature of the run in K (NaN if unknown).
    metadata : free-form information; ``metadata["source"]`` names the input in error messages.

    Validation: every value must be finite (the first bad frame is named), the
    times equally spaced and increasing, and each tensor symmetric to within
    ``SYMMETRY_TOLERANCE`` (‖α − αᵀ‖_F ≤ tol·‖α‖_F); tensors that pass are
    replaced by (α + αᵀ)/2, larger asymmetry raises :class:`InputError`.
    """

    time_fs: np.ndarray
    alpha_A3: np.ndarray
    temperature_K: float = float("nan")
    metadata: Mapping[str, Any] = field(default_factory=dict)

    SYMMETRY_TOLERANCE: ClassVar[float] = 0.05

    def __post_init__(self) -> None:
        meta = dict(self.metadata or {})
        source = str(meta.get("source", "The polarizability series"))
        a = np.asarray(self.alpha_A3, dtype=float)
        if a.ndim != 3 or a.shape[1:] != (3, 3):
            raise InputError(
                f"{source}: alpha_A3 has shape {a.shape}; give an (n_frames, 3, 3) array of tensors in Å³ "
                "(PolarizabilitySeries.from_array also accepts 9 or 6 Voigt values per frame)."
            )
        n = a.shape[0]
        t = np.asarray(self.time_fs, dtype=float)
        if t.shape != (n,):
            raise InputError(f"{source}: time_fs has shape {t.shape} but alpha_A3 has {n} frames; give one time per frame.")
        if n < 2:
            raise InputError(f"{source}: the series has {n} frame(s); a spectrum needs many frames, so run the MD longer.")
        bad = ~np.isfinite(a).all(axis=(1, 2))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"{source}: frame {i} of alpha_A3 contains NaN or infinite values; "
                "recompute the polarizability of that frame or cut the series before it."
            )
        if not np.isfinite(t).all():
            i = int(np.argmax(~np.isfinite(t)))
            raise InputError(f"{source}: time_fs of frame {i} is NaN or infinite; give finite times in fs.")
        steps = np.diff(t)
        dt = steps[0]
        if dt <= 0:
            raise InputError(f"{source}: time_fs does not increase (frame 0 → 1 step is {dt} fs); sort the frames by time.")
        off = np.abs(steps - dt) > 1e-6 * dt + 1e-9
        if off.any():
            i = int(np.argmax(off))
            raise InputError(
                f"{source}: time_fs is not equally spaced: the step from frame {i} to {i + 1} is "
                f"{steps[i]:g} fs instead of {dt:g} fs; resample the series on a uniform time grid."
            )
        asym = np.linalg.norm(a - np.swapaxes(a, 1, 2), axis=(1, 2))
        norm = np.linalg.norm(a, axis=(1, 2))
        too = asym > self.SYMMETRY_TOLERANCE * np.maximum(norm, 1e-300)
        if too.any():
            i = int(np.argmax(too))
            raise InputError(
                f"{source}: the tensor of frame {i} is not symmetric (‖α−αᵀ‖/‖α‖ = {asym[i] / max(norm[i], 1e-300):.3g} "
                f"> {self.SYMMETRY_TOLERANCE}); check the component order of alpha_A3 (xx xy xz / yx yy yz / zx zy zz)."
            )
        a = 0.5 * (a + np.swapaxes(a, 1, 2))
        object.__setattr__(self, "alpha_A3", a)
        object.__setattr__(self, "time_fs", t.copy())
        object.__setattr__(self, "temperature_K", float(self.temperature_K) if self.temperature_K is not None else float("nan"))
        object.__setattr__(self, "metadata", meta)

    # ------------------------------------------------------------------ properties
    @property
    def n_frames(self) -> int:
        return int(self.alpha_A3.shape[0])

    @property
    def dt_fs(self) -> float:
        """Time step between frames in fs."""
        return float(self.time_fs[1] - self.time_fs[0])

    @property
    def duration_ps(self) -> float:
        """n_frames·dt in ps (the span covered by a single-segment periodogram)."""
        return self.n_frames * self.dt_fs / 1000.0

    @property
    def nyquist_cm1(self) -> float:
        """Highest resolvable wavenumber 1/(2 c dt) in cm⁻¹."""
        return 1.0 / (2.0 * C_CM_PER_S * self.dt_fs * _FS_TO_S)

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_array(
        cls,
        alpha_A3: Any,
        dt_fs: float,
        temperature_K: float = float("nan"),
        t0_fs: float = 0.0,
        metadata: Mapping[str, Any] | None = None,
    ) -> PolarizabilitySeries:
        """Build from an array of shape (n,3,3), (n,9) (row-major) or (n,6) (Voigt xx,yy,zz,yz,xz,xy), Å³."""
        meta = dict(metadata or {})
        source = str(meta.get("source", "The polarizability array"))
        dt = _check_dt(dt_fs, source)
        a = _as_tensor_array(alpha_A3, source)
        return cls(t0_fs + dt * np.arange(a.shape[0]), a, temperature_K, meta)

    @classmethod
    def from_npy(
        cls, path: str | os.PathLike, dt_fs: float, temperature_K: float = float("nan")
    ) -> PolarizabilitySeries:
        """Load a ``.npy`` array of polarizabilities in Å³ spaced ``dt_fs`` fs apart.

        Accepted shapes: (n, 3, 3); (n, 9) row-major xx xy xz yx yy yz zx zy zz;
        (n, 6) Voigt order xx, yy, zz, yz, xz, xy.
        """
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such file; give the path of a .npy array of polarizabilities in Å³.")
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise InputError(f"{p}: not a readable .npy file ({exc}); save the array with numpy.save.") from None
        return cls.from_array(arr, dt_fs, temperature_K, metadata={"source": str(p)})

    @classmethod
    def from_extxyz(
        cls,
        path: str | os.PathLike,
        dt_fs: float,
        temperature_K: float = float("nan"),
        key: str = "polarizability",
    ) -> PolarizabilitySeries:
        """Load every frame of an extended-XYZ file; α is read from ``atoms.info[key]``.

        The entry holds 9 values (row-major 3×3) or 6 Voigt values
        (xx, yy, zz, yz, xz, xy) in Å³, e.g. ``polarizability="xx xy xz yx yy yz zx zy zz"``.
        """
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such file; give the path of an extended-XYZ trajectory with a '{key}' entry per frame.")
        import ase.io

        try:
            frames = ase.io.read(p, index=":", format="extxyz")
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{p}: not a readable extended-XYZ file ({exc}); write it with ase.io.write(..., format='extxyz').") from None
        if not frames:
            raise InputError(f"{p}: the file holds no frames; write the trajectory first.")
        tensors = []
        for i, atoms in enumerate(frames):
            if key not in atoms.info:
                raise InputError(
                    f"{p}: frame {i} has no '{key}' entry in its comment line; "
                    f"write the polarizability (Å³) as {key}=\"xx xy xz yx yy yz zx zy zz\" on every frame."
                )
            v = np.asarray(atoms.info[key], dtype=float).ravel()
            if v.size == 9:
                tensors.append(v.reshape(3, 3))
            elif v.size == 6:
                tensors.append(_as_tensor_array(v[None, :], f"{p} frame {i}")[0])
            else:
                raise InputError(
                    f"{p}: frame {i} has {v.size} values in '{key}'; give 9 (3×3 row-major) or 6 (Voigt) values in Å³."
                )
        meta = {"source": str(p), "n_atoms": len(frames[0]), "formula": frames[0].get_chemical_formula()}
        return cls.from_array(np.array(tensors), dt_fs, temperature_K, metadata=meta)


def polarizability_invariants(alpha_A3: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean polarizability ā = tr(α)/3 and anisotropy γ² of one or many tensors.

    γ² = ½[(α_xx−α_yy)² + (α_yy−α_zz)² + (α_zz−α_xx)²] + 3(α_xy² + α_yz² + α_zx²)
       = (3/2) Σ_ij β_ij²  with β = α − ā·1 (Long 2002).
    """
    a = np.asarray(alpha_A3, dtype=float)
    a = 0.5 * (a + np.swapaxes(a, -1, -2))
    mean = np.trace(a, axis1=-2, axis2=-1) / 3.0
    beta = a - mean[..., None, None] * np.eye(3)
    gamma2 = 1.5 * np.sum(beta * beta, axis=(-2, -1))
    return mean, gamma2


# =========================================================================== geometry


@dataclass(frozen=True)
class _Geometry:
    name: str
    kind: str  # "powder" (name is the channel) or "vectors"
    e_in: np.ndarray | None = None
    e_out: np.ndarray | None = None


_AXIS = {"x": np.array([1.0, 0.0, 0.0]), "y": np.array([0.0, 1.0, 0.0]), "z": np.array([0.0, 0.0, 1.0])}
_BAR = "(?:\u0304|\u0305|bar)"
_DIR = rf"[-+]?[xyz]{_BAR}?"
_PORTO_RE = re.compile(rf"^\s*(?P<ki>{_DIR})?\s*\(\s*(?P<ei>[xyz])\s*,?\s*(?P<eo>[xyz])\s*\)\s*(?P<ks>{_DIR})?\s*$")
_POWDER_ALIASES = {
    "vv": "VV",
    "vh": "VH",
    "hv": "VH",
    "unpolarized": "unpolarized",
    "unpolarised": "unpolarized",
    "isotropic": "isotropic",
    "anisotropic": "anisotropic",
}


def _parse_direction(tok: str) -> tuple[np.ndarray, str]:
    neg = tok.startswith("-") or tok.endswith(("\u0304", "\u0305", "bar"))
    letter = [c for c in tok if c in "xyz"][0]
    return (-1.0 if neg else 1.0) * _AXIS[letter], ("-" if neg else "") + letter


def _parse_geometry_string(text: str) -> list[_Geometry]:
    key = text.strip()
    low = key.lower()
    if low == "powder":
        return [_Geometry(c, "powder") for c in POWDER_CHANNELS]
    if low in _POWDER_ALIASES:
        return [_Geometry(_POWDER_ALIASES[low], "powder")]
    m = _PORTO_RE.match(low)
    if not m:
        raise InputError(
            f"Scattering geometry '{text}' is not understood; use 'powder', 'VV', 'VH', 'unpolarized', 'isotropic', "
            "'anisotropic', a Porto string such as 'x(zz)x̄' or 'z(xy)-z', or a pair of polarisation vectors."
        )
    ei, eo = _AXIS[m["ei"]], _AXIS[m["eo"]]
    name = f"({m['ei']}{m['eo']})"
    if m["ki"]:
        ki, ki_name = _parse_direction(m["ki"])
        if abs(ki @ ei) > 1e-12:
            raise InputError(
                f"Scattering geometry '{text}': the incident polarisation {m['ei']} is parallel to the incident "
                f"direction {ki_name}; light is transverse, so choose a polarisation perpendicular to it (e.g. x(zz)x̄)."
            )
        name = ki_name + name
    if m["ks"]:
        ks, ks_name = _parse_direction(m["ks"])
        if abs(ks @ eo) > 1e-12:
            raise InputError(
                f"Scattering geometry '{text}': the scattered polarisation {m['eo']} is parallel to the scattered "
                f"direction {ks_name}; light is transverse, so choose a polarisation perpendicular to it (e.g. x(zz)x̄)."
            )
        name = name + ks_name
    return [_Geometry(name, "vectors", ei, eo)]


def _as_vector(v: Any) -> np.ndarray | None:
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        return None
    return a if a.shape == (3,) else None


def _vector_pair(g: Any, name: str | None = None) -> _Geometry | None:
    if isinstance(g, str) or not isinstance(g, Sequence | np.ndarray) or len(g) != 2:
        return None
    ei, eo = _as_vector(g[0]), _as_vector(g[1])
    if ei is None or eo is None:
        return None
    ni, no = np.linalg.norm(ei), np.linalg.norm(eo)
    if not (np.isfinite(ni) and np.isfinite(no)) or ni == 0 or no == 0:
        raise InputError("Scattering geometry: a polarisation vector is zero or not finite; give two non-zero 3-vectors (e_in, e_out).")
    ei, eo = ei / ni, eo / no
    if name is None:
        fmt = lambda v: " ".join(f"{x:.4g}" for x in v)  # noqa: E731
        name = f"e_in[{fmt(ei)}]e_out[{fmt(eo)}]"
    return _Geometry(name, "vectors", ei, eo)


def parse_geometry(geometry: Any) -> list[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """Resolve a geometry specification into channels.

    Returns a list of ``(channel_name, e_in, e_out)``; e_in/e_out are ``None``
    for the powder channels. Accepted: ``"powder"`` (all five powder channels),
    ``"VV"``, ``"VH"`` (or ``"HV"``), ``"unpolarized"``, ``"isotropic"``,
    ``"anisotropic"``; Porto strings ``k_i(e_i e_o)k_s`` such as ``"x(zz)x̄"``,
    ``"x(zz)-x"``, ``"z(xy)zbar"`` or just ``"(zz)"`` (the two letters in the
    parentheses are the incident and scattered polarisations; the directions
    outside are checked for transversality and otherwise only name the
    channel); a pair of 3-vectors ``(e_in, e_out)``; a list of any of these; or
    a mapping ``{name: geometry}`` to name the channels yourself.
    """
    return [(g.name, g.e_in, g.e_out) for g in _parse_geometries(geometry)]


def _parse_geometries(geometry: Any) -> list[_Geometry]:
    out: list[_Geometry] = []
    if isinstance(geometry, str):
        out = _parse_geometry_string(geometry)
    elif isinstance(geometry, Mapping):
        for name, g in geometry.items():
            vp = _vector_pair(g, str(name))
            if vp is not None:
                out.append(vp)
                continue
            if not isinstance(g, str):
                raise InputError(f"Scattering geometry '{name}': give a Porto string or a pair of 3-vectors (e_in, e_out).")
            parsed = _parse_geometry_string(g)
            if len(parsed) != 1:
                raise InputError(f"Scattering geometry '{name}': '{g}' expands to several channels; name single channels only.")
            out.append(_Geometry(str(name), parsed[0].kind if parsed[0].kind == "vectors" else "powder:" + parsed[0].name,
                                 parsed[0].e_in, parsed[0].e_out))
    else:
        vp = _vector_pair(geometry)
        if vp is not None:
            out = [vp]
        elif isinstance(geometry, Sequence) and len(geometry) > 0:
            for g in geometry:
                out.extend(_parse_geometries(g))
        else:
            raise InputError(
                f"Scattering geometry {geometry!r} is not understood; use 'powder', 'VV', 'VH', a Porto string "
                "such as 'x(zz)x̄', or a pair of polarisation vectors (e_in, e_out)."
            )
    seen: dict[str, _Geometry] = {}
    for g in out:
        seen.setdefault(g.name, g)
    return list(seen.values())


# =========================================================================== spectral core


def _get_window(window: Any, n: int) -> tuple[np.ndarray, str]:
    if window is None or (isinstance(window, str) and window.lower() in ("none", "boxcar", "rectangular", "rect")):
        return np.ones(n), "boxcar"
    from scipy.signal import get_window

    try:
        w = get_window(window, n, fftbins=True)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"window = {window!r} is not a window scipy.signal.get_window knows ({exc}); use 'hann' or None.") from None
    return np.asarray(w, dtype=float), str(window)


def _overlap_variance_factor(win: np.ndarray, step: int, n_seg: int) -> float:
    """Welch (1967) variance factor 1 + 2 Σ_m (1 − m/K) ρ²(m) of overlapping windowed segments."""
    L = win.size
    s2 = float(np.sum(win * win))
    tot = 1.0
    for m in range(1, n_seg):
        shift = m * step
        if shift >= L:
            break
        rho = float(np.sum(win[: L - shift] * win[shift:])) / s2
        tot += 2.0 * (1.0 - m / n_seg) * rho * rho
    return tot


def _segments_psd(x: np.ndarray, dt_fs: float, L: int, step: int, n_seg: int, win: np.ndarray) -> np.ndarray:
    """One-sided PSD (units of x² per cm⁻¹) of each windowed segment, shape (..., K, L//2+1).

    x has time on its last axis. S_k = 2·c·dt·|X_k|²/Σw² at *every* bin, 0 and
    Nyquist included: S is the one-sided density 2·S_two-sided(ν̃), continuous
    at ν̃ = 0 (no half-height DC point to bias a central-peak fit). For even L the
    trapezoid rule over the grid 0 … ν̃_Nyq, which gives the end points half
    weight, reproduces Σ_n w_n² x_n² / Σ_n w_n² exactly (discrete Parseval).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    segs = sliding_window_view(x, L, axis=-1)[..., ::step, :][..., :n_seg, :]
    spec = np.fft.rfft(segs * win, axis=-1)
    return (spec.real**2 + spec.imag**2) * (2.0 * C_CM_PER_S * dt_fs * _FS_TO_S / float(np.sum(win * win)))


def welch_psd(
    x: Any,
    dt_fs: float,
    segment_length: int | None = None,
    overlap: float = 0.5,
    window: Any = "hann",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment one-sided power spectral densities of a real scalar series.

    Returns ``(frequency_cm1, psd)`` with ``psd`` of shape (K, L//2+1) in units
    of x² per cm⁻¹ (one-sided density, doubled at every bin including 0 and
    Nyquist); their mean over segments is Welch's estimate. With
    ``segment_length=None`` the whole series is one segment; with
    ``window=None`` that is the plain periodogram, which for an even number of
    samples satisfies Parseval exactly with the trapezoid rule:
    ``numpy.trapezoid(psd[0], frequency_cm1) == mean(x**2)``.
    The mean is *not* removed here.
    """
    xs = np.asarray(x, dtype=float)
    if xs.ndim != 1 or xs.size < 2:
        raise InputError("welch_psd: x must be a one-dimensional series with at least two samples.")
    dt = _check_dt(dt_fs, "welch_psd")
    L = xs.size if segment_length is None else int(segment_length)
    if not 2 <= L <= xs.size:
        raise InputError(f"welch_psd: segment_length = {segment_length} must lie between 2 and the series length {xs.size}.")
    win, _ = _get_window(window, L)
    step = max(1, L - int(round(overlap * L)))
    K = 1 + (xs.size - L) // step
    freq = np.fft.rfftfreq(L, d=dt * _FS_TO_S) / C_CM_PER_S
    return freq, _segments_psd(xs, dt, L, step, K, win)


def _segment_plan(
    n: int,
    dt_fs: float,
    segment_ps: float | None,
    n_segments: int | None,
    overlap: float,
    resolution_cm1: float | None,
    source: str,
) -> tuple[int, int, int]:
    """Segment length L, step D and count K (all in samples)."""
    dt_s = dt_fs * _FS_TO_S
    total_ps = n * dt_fs / 1000.0
    if segment_ps is not None and n_segments is not None:
        raise InputError("Give either segment_ps or n_segments, not both; they both fix the Welch segment length.")
    if resolution_cm1 is not None:
        if not (math.isfinite(resolution_cm1) and resolution_cm1 > 0):
            raise InputError(f"resolution_cm1 = {resolution_cm1} is not a positive wavenumber; give e.g. resolution_cm1=1.0.")
        need_ps = 1e12 / (C_CM_PER_S * resolution_cm1)
        if need_ps > total_ps * (1 + 1e-9):
            best = 1.0 / (C_CM_PER_S * n * dt_s)
            raise InputError(
                f"{source} is too short for resolution_cm1 = {resolution_cm1:g}: a resolution Δν̃ = 1/(c·T_segment) needs "
                f"segments of at least {need_ps:.4g} ps but the series lasts only {total_ps:.4g} ps "
                f"({n} frames × {dt_fs:g} fs); run the MD longer or ask for resolution_cm1 ≥ {best:.3g}."
            )
    if segment_ps is not None:
        if not (math.isfinite(segment_ps) and segment_ps > 0):
            raise InputError(f"segment_ps = {segment_ps} is not a positive duration; give the Welch segment length in ps.")
        L = int(round(segment_ps * 1000.0 / dt_fs))
        if L > n:
            raise InputError(
                f"{source} is too short for segment_ps = {segment_ps:g}: it lasts only {total_ps:.4g} ps; "
                f"run the MD longer or choose segment_ps ≤ {total_ps:.4g}."
            )
    elif n_segments is not None:
        if int(n_segments) != n_segments or n_segments < 1:
            raise InputError(f"n_segments = {n_segments} is not a positive integer; give e.g. n_segments=8.")
        n_segments = int(n_segments)
        L = int(n / (1.0 + (n_segments - 1) * (1.0 - overlap)))
        while L >= _MIN_SEGMENT_SAMPLES and 1 + (n - L) // max(1, L - int(round(overlap * L))) < n_segments:
            L -= 1
    elif resolution_cm1 is not None:
        L = int(math.ceil(1.0 / (C_CM_PER_S * resolution_cm1 * dt_s) - 1e-9))
    else:
        L = int(n / (1.0 + (_DEFAULT_N_SEGMENTS - 1) * (1.0 - overlap)))
        L = min(n, max(L, _MIN_SEGMENT_SAMPLES))
    if L < _MIN_SEGMENT_SAMPLES:
        raise InputError(
            f"{source} gives Welch segments of only {L} frames (at least {_MIN_SEGMENT_SAMPLES} are needed); "
            "use fewer n_segments, a longer segment_ps, or a longer series."
        )
    L -= L % 2  # even segments: the grid ends exactly at Nyquist, so the trapezoid Parseval sum is exact
    step = max(1, L - int(round(overlap * L)))
    K = 1 + (n - L) // step
    if n_segments is not None:
        K = min(K, n_segments)
    if resolution_cm1 is not None:
        got = 1.0 / (C_CM_PER_S * L * dt_s)
        if got > resolution_cm1 * (1 + 1e-9):
            raise InputError(
                f"The Welch segments ({L * dt_fs / 1000:.4g} ps) are too short for resolution_cm1 = {resolution_cm1:g}: "
                f"they resolve Δν̃ = 1/(c·T_segment) = {got:.4g} cm⁻¹; use fewer n_segments or segment_ps ≥ "
                f"{1e12 / (C_CM_PER_S * resolution_cm1):.4g}."
            )
    return L, step, K


# =========================================================================== temperature factors


def _reduced_energy(frequency_cm1: Any, temperature_K: float) -> np.ndarray:
    """x = ħω/(k_B T) = h c ν̃/(k_B T)."""
    return HC_EV_CM * np.asarray(frequency_cm1, dtype=float) / (KB_EV_PER_K * float(temperature_K))


def _positive_temperature(temperature_K: Any, error: str) -> float:
    """``temperature_K`` as a finite positive float (K), else InputError(``error``)."""
    try:
        T = float(temperature_K)
    except (TypeError, ValueError):
        T = float("nan")
    if not (math.isfinite(T) and T > 0):
        raise InputError(error)
    return T


def _require_temperature(temperature_K: Any, what: str) -> float:
    return _positive_temperature(
        temperature_K,
        f"The {what} representation needs a temperature, but temperature_K = {temperature_K!r}; "
        "pass temperature_K (K) or use representation='classical'.",
    )


def bose_einstein(frequency_cm1: Any, temperature_K: float) -> np.ndarray:
    """Bose–Einstein occupation n(ν̃) = 1/(exp(hcν̃/k_BT) − 1); +inf at ν̃ = 0, negative for ν̃ < 0."""
    x = _reduced_energy(frequency_cm1, _require_temperature(temperature_K, "Bose–Einstein"))
    with np.errstate(divide="ignore", over="ignore"):
        return 1.0 / np.expm1(x)


def quantum_correction_factor(frequency_cm1: Any, temperature_K: float, kind: str = "harmonic") -> np.ndarray:
    """Factor Q(ν̃) that turns a classical spectrum into a quantum (detailed-balance) one.

    With x = ħω/k_BT (Ramírez et al., J. Chem. Phys. 121, 3973 (2004)):
    ``"harmonic"`` Q = x/(1 − e^{−x}) (exact for harmonic systems; Q(0) = 1),
    ``"standard"`` Q = 2/(1 + e^{−x}), ``"schofield"`` Q = e^{x/2}, ``"none"`` Q = 1.
    All but ``"none"`` satisfy Q(−ν̃) = e^{−x} Q(ν̃).
    """
    if kind not in QUANTUM_CORRECTIONS:
        raise InputError(f"quantum_correction = {kind!r} is unknown; use one of {', '.join(QUANTUM_CORRECTIONS)}.")
    nu = np.asarray(frequency_cm1, dtype=float)
    if kind == "none":
        return np.ones_like(nu)
    x = _reduced_energy(nu, _require_temperature(temperature_K, "quantum-corrected"))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if kind == "harmonic":
            xs = np.where(x == 0.0, 1.0, x)
            return np.where(x == 0.0, 1.0, xs / -np.expm1(-xs))
        if kind == "standard":
            return 2.0 / (1.0 + np.exp(-x))
        return np.exp(0.5 * x)


def laser_factor(frequency_cm1: Any, laser_wavelength_nm: float | None) -> np.ndarray:
    """Dimensionless scattering factor ((ν̃_L − ν̃)/ν̃_L)⁴ with ν̃_L = 10⁷/λ_nm (1 without a laser)."""
    nu = np.asarray(frequency_cm1, dtype=float)
    if laser_wavelength_nm is None:
        return np.ones_like(nu)
    lam = float(laser_wavelength_nm)
    if not (math.isfinite(lam) and lam > 0):
        raise InputError(f"laser_wavelength_nm = {laser_wavelength_nm!r} is not a positive wavelength; give e.g. 532.")
    nu_l = 1e7 / lam
    if nu.size and np.max(nu) >= nu_l:
        raise InputError(
            f"The Raman shift reaches {np.max(nu):.4g} cm⁻¹, beyond the laser wavenumber {nu_l:.4g} cm⁻¹ "
            f"(λ = {lam:g} nm); lower max_frequency_cm1 or use a shorter laser wavelength."
        )
    return ((nu_l - nu) / nu_l) ** 4


def representation_factor(
    frequency_cm1: Any,
    representation: str,
    temperature_K: float | None = None,
    quantum_correction: str = "harmonic",
    laser_wavelength_nm: float | None = None,
) -> np.ndarray:
    """Multiplier that turns the classical spectrum I_cl(ν̃) into ``representation``.

    classical: 1; stokes: Q(ν̃)·((ν̃_L−ν̃)/ν̃_L)⁴; reduced: Q(ν̃)/(n(ν̃)+1) = Q(ν̃)(1 − e^{−x})
    (= x = ħω/k_BT exactly for the harmonic correction; 0 at ν̃ = 0). Signed ν̃:
    negative values give the anti-Stokes side (detailed balance built in).
    """
    nu = np.asarray(frequency_cm1, dtype=float)
    if representation == "classical":
        return np.ones_like(nu)
    if representation not in REPRESENTATIONS:
        raise InputError(f"representation = {representation!r} is unknown; use one of {', '.join(REPRESENTATIONS)}.")
    T = _require_temperature(temperature_K, representation)
    if representation == "stokes":
        return quantum_correction_factor(nu, T, quantum_correction) * laser_factor(nu, laser_wavelength_nm)
    x = _reduced_energy(nu, T)
    if quantum_correction == "harmonic":
        return x.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        return quantum_correction_factor(nu, T, quantum_correction) * -np.expm1(-x)


# =========================================================================== helpers


def trapezoid_weights(x: Any, lo: float, hi: float) -> np.ndarray:
    """Weights w with Σ_k w_k y_k = ∫_lo^hi of the piecewise-linear interpolant of (x, y).

    x must increase. Partial intervals at lo and hi are integrated exactly
    (linear interpolation), so band integrals do not jump when a bin edge
    crosses a cut-off. Parts of [lo, hi] outside [x₀, x_end] contribute nothing.
    """
    x = np.asarray(x, dtype=float)
    w = np.zeros_like(x)
    if x.size < 2 or hi <= lo:
        return w
    x0, x1 = x[:-1], x[1:]
    h = x1 - x0
    a = np.clip(lo, x0, x1)
    b = np.clip(hi, x0, x1)
    valid = b > a
    with np.errstate(invalid="ignore", divide="ignore"):
        wl = np.where(valid, ((x1 - a) ** 2 - (x1 - b) ** 2) / (2 * h), 0.0)
        wr = np.where(valid, ((b - x0) ** 2 - (a - x0) ** 2) / (2 * h), 0.0)
    w[:-1] += wl
    w[1:] += wr
    return w


def lorentzian_broadened_lines(
    freqs_cm1: Any, intensities: Any, grid_cm1: Any, fwhm_cm1: Any
) -> np.ndarray:
    """Sum of area-normalised Lorentzians: I(ν̃) = Σ_k I_k (Γ_k/π)/((ν̃ − ν̃_k)² + Γ_k²), Γ_k = FWHM_k/2.

    Each line's integral over all ν̃ equals its intensity I_k, so the result is
    an intensity per cm⁻¹ on ``grid_cm1``. ``fwhm_cm1`` is a scalar or one
    value per line (cm⁻¹, > 0).
    """
    f = np.atleast_1d(np.asarray(freqs_cm1, dtype=float))
    inten = np.atleast_1d(np.asarray(intensities, dtype=float))
    grid = np.asarray(grid_cm1, dtype=float)
    if f.ndim != 1 or inten.shape != f.shape:
        raise InputError(f"lorentzian_broadened_lines: {f.size} frequencies but intensities of shape {inten.shape}; give one intensity per line.")
    fw = np.broadcast_to(np.asarray(fwhm_cm1, dtype=float), f.shape) if np.ndim(fwhm_cm1) else np.full(f.shape, float(fwhm_cm1))
    if fw.shape != f.shape:
        raise InputError("lorentzian_broadened_lines: fwhm_cm1 must be a scalar or one value per line.")
    if not (np.all(np.isfinite(fw)) and np.all(fw > 0)):
        raise InputError(f"lorentzian_broadened_lines: fwhm_cm1 = {fwhm_cm1!r} must be positive; give e.g. 5 cm⁻¹.")
    if not (np.isfinite(f).all() and np.isfinite(inten).all()):
        raise InputError("lorentzian_broadened_lines: the line frequencies and intensities must be finite.")
    g = 0.5 * fw
    out = np.zeros(grid.shape)
    flat = grid.ravel()
    acc = out.ravel()
    for k in range(f.size):
        acc += inten[k] * (g[k] / np.pi) / ((flat - f[k]) ** 2 + g[k] ** 2)
    return acc.reshape(grid.shape)


_SKIP = object()


def _json_safe(value: Any) -> Any:
    """JSON-compatible copy: NaN/inf → None, numpy scalars → Python, other objects dropped (_SKIP)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            j = _json_safe(v)
            if j is not _SKIP:
                out[str(k)] = j
        return out
    if isinstance(value, (list, tuple)):
        return [j for j in (_json_safe(v) for v in value) if j is not _SKIP]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, np.ndarray) and value.size <= 16:
        return _json_safe(value.tolist())
    return _SKIP


# =========================================================================== spectrum


@dataclass(frozen=True, eq=False)
class RamanSpectrum:
    """A Raman spectrum on a wavenumber grid.

    Attributes
    ----------
    frequency_cm1 : (m,) increasing Raman shifts in cm⁻¹ (negative = anti-Stokes).
    channels : channel name → (m,) intensity (per cm⁻¹; units depend on ``representation``:
        Å⁶·cm for spectra from :func:`compute_spectrum`).
    errors : channel name → (m,) standard error of the mean over Welch segments (NaN if unknown).
    temperature_K : temperature used for the factors (NaN if none).
    representation : ``"classical"``, ``"stokes"``, ``"reduced"`` or ``"unknown"`` (a foreign file).
    metadata : how it was made (``quantum_correction``, ``laser_wavelength_nm``, ``n_segments``,
        ``overlap_variance_factor``, ``method`` — ``"harmonic"`` marks harmonic spectra, drawn dashed …).
    segment_spectra : channel name → (K, m) per-segment spectra (same representation) or None;
        used for segment-based error bars of derived quantities (e.g. F_LF). Not written to CSV.
    """

    frequency_cm1: np.ndarray
    channels: Mapping[str, np.ndarray]
    errors: Mapping[str, np.ndarray] = field(default_factory=dict)
    temperature_K: float = float("nan")
    representation: str = "classical"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    segment_spectra: Mapping[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        f = np.asarray(self.frequency_cm1, dtype=float)
        if f.ndim != 1 or f.size < 2:
            raise InputError("RamanSpectrum: frequency_cm1 must be a one-dimensional grid with at least two points.")
        if not np.isfinite(f).all() or np.any(np.diff(f) <= 0):
            raise InputError("RamanSpectrum: frequency_cm1 must be finite and strictly increasing; sort the spectrum by frequency.")
        if not self.channels:
            raise InputError("RamanSpectrum: no channels were given; give at least one intensity column.")
        chans = {}
        for k, v in self.channels.items():
            a = np.asarray(v, dtype=float)
            if a.shape != f.shape:
                raise InputError(f"RamanSpectrum: channel '{k}' has shape {a.shape}, the grid has {f.shape}; give one value per frequency.")
            chans[str(k)] = a
        errs = {}
        for k, v in (self.errors or {}).items():
            if str(k) not in chans:
                raise InputError(f"RamanSpectrum: error column '{k}' has no matching channel; name it after one of {', '.join(chans)}.")
            a = np.asarray(v, dtype=float)
            if a.shape != f.shape:
                raise InputError(f"RamanSpectrum: errors of '{k}' have shape {a.shape}, the grid has {f.shape}.")
            errs[str(k)] = a
        rep = str(self.representation)
        if rep not in REPRESENTATIONS + ("unknown",):
            raise InputError(f"RamanSpectrum: representation = {rep!r} is unknown; use one of {', '.join(REPRESENTATIONS)} or 'unknown'.")
        segs = None
        if self.segment_spectra is not None:
            segs = {}
            for k, v in self.segment_spectra.items():
                a = np.asarray(v, dtype=float)
                if a.ndim != 2 or a.shape[1] != f.size:
                    raise InputError(f"RamanSpectrum: segment spectra of '{k}' must have shape (K, {f.size}).")
                segs[str(k)] = a
        object.__setattr__(self, "frequency_cm1", f)
        object.__setattr__(self, "channels", chans)
        object.__setattr__(self, "errors", errs)
        object.__setattr__(self, "representation", rep)
        T = self.temperature_K
        object.__setattr__(self, "temperature_K", float("nan") if T is None else float(T))
        object.__setattr__(self, "metadata", dict(self.metadata or {}))
        object.__setattr__(self, "segment_spectra", segs)

    # ------------------------------------------------------------------ access
    @property
    def channel_names(self) -> list[str]:
        return list(self.channels)

    @property
    def quantum_correction(self) -> str:
        return str(self.metadata.get("quantum_correction", "harmonic"))

    @property
    def laser_wavelength_nm(self) -> float | None:
        v = self.metadata.get("laser_wavelength_nm")
        return None if v is None else float(v)

    @property
    def is_harmonic(self) -> bool:
        """True for spectra made from harmonic phonons (``metadata["method"] == "harmonic"``)."""
        return str(self.metadata.get("method", "")).lower() == "harmonic"

    def channel(self, name: str) -> np.ndarray:
        """Intensity of channel ``name``; InputError lists the available channels."""
        if name not in self.channels:
            raise InputError(f"The spectrum has no channel '{name}'; choose one of: {', '.join(self.channels)}.")
        return self.channels[name]

    def error(self, name: str) -> np.ndarray:
        """Error bars of channel ``name`` (NaN where unknown)."""
        self.channel(name)
        return self.errors.get(name, np.full(self.frequency_cm1.shape, np.nan))

    def integrate(self, name: str, lo_cm1: float | None = None, hi_cm1: float | None = None) -> float:
        """∫ I dν̃ of channel ``name`` over [lo, hi] (trapezoid rule, exact partial bins)."""
        f = self.frequency_cm1
        lo = f[0] if lo_cm1 is None else lo_cm1
        hi = f[-1] if hi_cm1 is None else hi_cm1
        w = trapezoid_weights(f, lo, hi)
        y = self.channel(name)
        m = w != 0
        return float(np.sum(w[m] * y[m]))

    # ------------------------------------------------------------------ representations
    def _factor(self, rep: str, T: float, qc: str) -> np.ndarray:
        return representation_factor(self.frequency_cm1, rep, T, qc, self.laser_wavelength_nm)

    def as_representation(
        self, representation: str, temperature_K: float | None = None, quantum_correction: str | None = None
    ) -> RamanSpectrum:
        """The same spectrum in another representation (classical, stokes, reduced).

        The conversion multiplies by representation_factor(new)/representation_factor(old)
        at every frequency; points where the old factor vanishes (ν̃ = 0 of a
        reduced spectrum) become NaN. ``temperature_K``/``quantum_correction``
        override the stored ones (needed for spectra read from foreign files).
        """
        if representation not in REPRESENTATIONS:
            raise InputError(f"representation = {representation!r} is unknown; use one of {', '.join(REPRESENTATIONS)}.")
        T = self.temperature_K if temperature_K is None else float(temperature_K)
        # the stored factors were made at the stored temperature; an override only fills a missing one
        T_old = self.temperature_K if math.isfinite(self.temperature_K) else T
        qc = self.quantum_correction if quantum_correction is None else quantum_correction
        if qc not in QUANTUM_CORRECTIONS:
            raise InputError(f"quantum_correction = {qc!r} is unknown; use one of {', '.join(QUANTUM_CORRECTIONS)}.")
        if representation == self.representation and qc == self.quantum_correction and (
            T == self.temperature_K or (math.isnan(T) and math.isnan(self.temperature_K))
        ):
            return self
        if self.representation == "unknown":
            src = self.metadata.get("source", "this spectrum")
            raise InputError(
                f"{src}: the representation of the spectrum is unknown, so it cannot be converted to '{representation}'; "
                "pass representation= (classical, stokes or reduced) and temperature_K= to RamanSpectrum.from_csv."
            )
        old = self._factor(self.representation, T_old, self.quantum_correction)
        new = self._factor(representation, T, qc)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(old != 0, new / np.where(old != 0, old, 1.0), np.nan)
        meta = dict(self.metadata)
        meta["quantum_correction"] = qc
        return RamanSpectrum(
            self.frequency_cm1,
            {k: v * ratio for k, v in self.channels.items()},
            {k: v * np.abs(ratio) for k, v in self.errors.items()},
            T,
            representation,
            meta,
            None if self.segment_spectra is None else {k: v * ratio for k, v in self.segment_spectra.items()},
        )

    # ------------------------------------------------------------------ CSV
    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write ``frequency_cm1, <channels…>, <channel>_err…`` atomically (temp file + os.replace).

        The first line is a comment ``# ionraman RamanSpectrum {json}`` with the
        representation, temperature and the JSON-serialisable metadata, so that
        :meth:`from_csv` restores them; ``numpy.loadtxt(..., delimiter=",",
        skiprows=2)`` or ``pandas.read_csv(comment="#")`` read the numbers.
        Per-segment spectra are not written.
        """
        p = Path(path)
        names = list(self.channels)
        header = {
            "representation": self.representation,
            "temperature_K": self.temperature_K,
            "metadata": self.metadata,
        }
        buf = io.StringIO()
        buf.write(f"{_CSV_MAGIC} {json.dumps(_json_safe(header), ensure_ascii=False)}\n")
        cols = ["frequency_cm1"] + names + [f"{n}_err" for n in names]
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        data = np.column_stack(
            [self.frequency_cm1] + [self.channels[n] for n in names] + [self.error(n) for n in names]
        )
        for row in data:
            buf.write(",".join(repr(float(v)) if not math.isfinite(v) else f"{v:.12g}" for v in row) + "\n")
        atomic_write_bytes(p, buf.getvalue().encode("utf-8"))
        return p

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike,
        representation: str | None = None,
        temperature_K: float | None = None,
        quantum_correction: str | None = None,
    ) -> RamanSpectrum:
        """Read a spectrum written by :meth:`to_csv`, or any two-column file (frequency, intensity).

        Delimiters: comma, semicolon, tab or whitespace; lines starting with ``#``
        are comments. A header row is optional. A two-column file that is not an
        ionraman file gives the channel ``"intensity"``; other multi-column
        files take their channel names from the header (``<name>_err`` columns
        become error bars). Foreign files have representation ``"unknown"``
        unless ``representation``/``temperature_K`` are given (e.g. a measured
        spectrum: ``representation="stokes"``).
        """
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such file; give the path of a spectrum CSV (frequency_cm1 then intensity columns).")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{p}: cannot be read as text ({exc}); give a CSV file of frequency and intensity columns.") from None
        header_meta: dict[str, Any] = {}
        header: list[str] | None = None
        rows: list[list[float]] = []
        ncol = None
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                if line.startswith(_CSV_MAGIC):
                    try:
                        header_meta = json.loads(line[len(_CSV_MAGIC):].strip())
                    except json.JSONDecodeError:
                        raise InputError(f"{p}: line {lineno} is a malformed ionraman header; rewrite the file with RamanSpectrum.to_csv.") from None
                continue
            if "," in line:
                toks = [t.strip() for t in line.split(",")]
            elif ";" in line:
                toks = [t.strip() for t in line.split(";")]
            else:
                toks = line.split()
            try:
                vals = [float(t) for t in toks]
            except ValueError:
                if header is None and not rows:
                    header = toks
                    ncol = len(toks)
                    continue
                raise InputError(
                    f"{p}: line {lineno} is malformed (a value is not a number: {line[:60]!r}); "
                    "give numbers only below the header row."
                ) from None
            if ncol is None:
                ncol = len(vals)
            if len(vals) != ncol:
                raise InputError(f"{p}: line {lineno} is malformed: it has {len(vals)} columns instead of {ncol}; give the same number of columns on every row.")
            rows.append(vals)
        if ncol is None or ncol < 2:
            raise InputError(f"{p}: malformed spectrum file: fewer than two columns; give a frequency column and at least one intensity column.")
        if len(rows) < 2:
            raise InputError(f"{p}: malformed spectrum file: fewer than two data rows; give the spectrum on a frequency grid.")
        data = np.array(rows, dtype=float)
        freq = data[:, 0]
        if not np.isfinite(freq).all() or np.any(np.diff(freq) == 0):
            raise InputError(f"{p}: malformed spectrum file: the frequency column has NaN or repeated values; give distinct frequencies.")
        order = np.argsort(freq)
        if np.any(np.diff(freq) < 0):
            data = data[order]
            freq = data[:, 0]
        ionraman = bool(header_meta) or (header is not None and header[0] == "frequency_cm1")
        if header is not None and len(header) != ncol:
            raise InputError(f"{p}: malformed spectrum file: the header has {len(header)} names but the rows {ncol} columns.")
        if ncol == 2 and not ionraman:
            names = ["frequency", "intensity"]
        elif header is not None:
            names = header
        else:
            names = ["frequency"] + ([f"intensity_{i}" for i in range(1, ncol)] if ncol > 2 else ["intensity"])
        chans: dict[str, np.ndarray] = {}
        errs: dict[str, np.ndarray] = {}
        for j, n in enumerate(names[1:], start=1):
            if n.endswith("_err") and n[:-4] in names[1:]:
                continue
            chans[n] = data[:, j]
        for j, n in enumerate(names[1:], start=1):
            if n.endswith("_err") and n[:-4] in chans:
                errs[n[:-4]] = data[:, j]
        meta = dict(header_meta.get("metadata") or {})
        meta.setdefault("source", str(p))
        meta["source_file"] = str(p)
        rep = representation or header_meta.get("representation") or "unknown"
        T = temperature_K if temperature_K is not None else header_meta.get("temperature_K")
        if quantum_correction is not None:
            meta["quantum_correction"] = quantum_correction
        return cls(freq, chans, errs, float("nan") if T is None else T, rep, meta)

    # ------------------------------------------------------------------ plot
    def plot(
        self,
        path: str | os.PathLike,
        others: Sequence[RamanSpectrum] = (),
        labels: Sequence[str] | None = None,
        channel: str | None = None,
        normalize: bool | str = False,
        max_frequency_cm1: float | None = None,
        title: str | None = None,
        show_errors: bool = True,
    ) -> Path:
        """Draw this spectrum and ``others`` on one figure and save it to ``path`` (format from the suffix).

        ``channel`` defaults to ``"unpolarized"`` (else the first channel) and is
        looked up in every spectrum, falling back to the only channel of a
        single-channel spectrum. Harmonic spectra (``is_harmonic``) are dashed.
        ``normalize``: False, ``"max"`` (or True) scales each curve to a
        maximum of 1, ``"area"`` to unit area. Error bars are drawn as a band.
        Uses the Agg canvas directly, so no global matplotlib state is touched.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        specs = [self, *others]
        if labels is not None and len(labels) != len(specs):
            raise InputError(f"plot: {len(labels)} labels for {len(specs)} spectra; give one label per spectrum.")
        if channel is None:
            channel = "unpolarized" if "unpolarized" in self.channels else self.channel_names[0]
        fig = Figure(figsize=(6.4, 4.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        for i, s in enumerate(specs):
            name = channel if channel in s.channels or len(s.channels) != 1 else s.channel_names[0]
            y = np.array(s.channel(name), dtype=float)
            e = np.array(s.error(name), dtype=float)
            f = s.frequency_cm1
            sel = np.ones(f.shape, bool) if max_frequency_cm1 is None else (f <= max_frequency_cm1)
            f, y, e = f[sel], y[sel], e[sel]
            if normalize:
                if normalize == "area":
                    scale = float(np.trapezoid(np.nan_to_num(y), f)) if hasattr(np, "trapezoid") else float(np.trapz(np.nan_to_num(y), f))
                else:
                    scale = float(np.nanmax(np.abs(y))) if y.size else 1.0
                if scale and math.isfinite(scale):
                    y, e = y / scale, e / abs(scale)
            label = labels[i] if labels is not None else (s.metadata.get("label") or f"{name} ({s.representation})")
            (line,) = ax.plot(f, y, ls="--" if s.is_harmonic else "-", lw=1.2, label=label)
            if show_errors and np.isfinite(e).any():
                ax.fill_between(f, y - e, y + e, color=line.get_color(), alpha=0.25, lw=0)
        ax.set_xlabel("Raman shift (cm$^{-1}$)")
        reps = {s.representation for s in specs}
        names = {"classical": "Classical intensity", "stokes": "Stokes intensity", "reduced": "Reduced intensity χ''"}
        ylab = names.get(reps.pop(), "Intensity") if len(reps) == 1 else "Intensity"
        if normalize:
            ylab += " (normalised)"
        elif all(s.metadata.get("method") == "md" for s in specs):
            ylab += " (Å$^6$ cm)"
        else:
            ylab += " (arb. units)"
        ax.set_ylabel(ylab)
        if title:
            ax.set_title(title)
        ax.axhline(0.0, color="0.7", lw=0.6)
        ax.legend(frameon=False)
        fig.tight_layout()
        return save_figure(fig, path)


# =========================================================================== driver


def compute_spectrum(
    series: PolarizabilitySeries,
    geometry: Any = "powder",
    *,
    temperature_K: float | None = None,
    segment_ps: float | None = None,
    n_segments: int | None = None,
    window: Any = "hann",
    overlap: float = 0.5,
    max_frequency_cm1: float | None = None,
    resolution_cm1: float | None = None,
    representation: str = "stokes",
    quantum_correction: str = "harmonic",
    remove_mean: bool = True,
    laser_wavelength_nm: float | None = None,
    include_antistokes: bool = False,
    keep_segments: bool = True,
) -> RamanSpectrum:
    """Raman spectrum of a polarizability series (Wiener–Khinchin + Welch).

    Parameters
    ----------
    series : the α(t) series (Å³, equally spaced).
    geometry : ``"powder"`` (channels VV, VH, unpolarized, isotropic, anisotropic),
        a single powder channel name, a Porto string (``"x(zz)x̄"``, ``"z(xy)-z"``),
        a pair of polarisation vectors, or a list/mapping of these (:func:`parse_geometry`).
    temperature_K : temperature for the factors (default: ``series.temperature_K``);
        required unless ``representation="classical"``.
    segment_ps, n_segments : Welch segment length in ps, or the number of segments
        (at most one; default 8 segments, or the length implied by ``resolution_cm1``).
        ``n_segments=1, window=None`` is the plain periodogram of the whole series.
    window : any scipy.signal.get_window name (default ``"hann"``); None = rectangular.
    overlap : fraction of a segment shared by neighbours (0 ≤ overlap < 1).
    max_frequency_cm1 : keep ν̃ ≤ this; must not exceed the Nyquist wavenumber 1/(2 c dt).
    resolution_cm1 : requested grid spacing Δν̃ = 1/(c·T_segment); too short a series → InputError.
    representation : ``"stokes"`` (default; Q(ν̃)·I_cl [× laser factor]), ``"reduced"``
        (I_S/(n+1)), or ``"classical"`` (I_cl, no factors).
    quantum_correction : Q(ν̃): ``"harmonic"`` (default), ``"standard"``, ``"schofield"`` or ``"none"``.
    remove_mean : subtract the time-averaged α first (the elastic Rayleigh line is not Raman).
    laser_wavelength_nm : multiply the Stokes spectrum by ((ν̃_L − ν̃)/ν̃_L)⁴.
    include_antistokes : also return ν̃ < 0 (anti-Stokes side: I(−ν̃) = e^{−ħω/k_BT} I_S(ν̃)).
    keep_segments : keep per-segment spectra (``RamanSpectrum.segment_spectra``).

    Returns
    -------
    RamanSpectrum with one-sided PSDs per cm⁻¹ (Å⁶·cm) times the factors, error
    bars = standard error of the Welch mean (with Welch's overlap correction; NaN
    for a single segment).
    """
    if not isinstance(series, PolarizabilitySeries):
        raise InputError("compute_spectrum: series must be a PolarizabilitySeries; build one with PolarizabilitySeries.from_npy/from_extxyz/from_array.")
    source = str(series.metadata.get("source", "The polarizability series"))
    if representation not in REPRESENTATIONS:
        raise InputError(f"representation = {representation!r} is unknown; use one of {', '.join(REPRESENTATIONS)}.")
    if quantum_correction not in QUANTUM_CORRECTIONS:
        raise InputError(f"quantum_correction = {quantum_correction!r} is unknown; use one of {', '.join(QUANTUM_CORRECTIONS)}.")
    if not (0.0 <= float(overlap) < 1.0):
        raise InputError(f"overlap = {overlap} must lie in [0, 1); use e.g. overlap=0.5.")
    geoms = _parse_geometries(geometry)
    T = series.temperature_K if temperature_K is None else float(temperature_K)
    if representation != "classical":
        T = _require_temperature(T, representation)
    dt = series.dt_fs
    nyq = series.nyquist_cm1
    if max_frequency_cm1 is not None:
        if not (math.isfinite(max_frequency_cm1) and max_frequency_cm1 > 0):
            raise InputError(f"max_frequency_cm1 = {max_frequency_cm1} is not a positive wavenumber; give e.g. 1000.")
        if max_frequency_cm1 > nyq * (1 + 1e-12):
            raise InputError(
                f"{source} is sampled too coarsely for max_frequency_cm1 = {max_frequency_cm1:g}: dt = {dt:g} fs resolves "
                f"only up to the Nyquist wavenumber 1/(2·c·dt) = {nyq:.4g} cm⁻¹; save α every ≤ "
                f"{1e15 / (2 * C_CM_PER_S * max_frequency_cm1):.3g} fs or lower max_frequency_cm1."
            )
    n = series.n_frames
    L, step, K = _segment_plan(n, dt, segment_ps, n_segments, float(overlap), resolution_cm1, source)
    win, win_name = _get_window(window, L)

    alpha = series.alpha_A3
    if remove_mean:
        alpha = alpha - alpha.mean(axis=0)
    freq = np.fft.rfftfreq(L, d=dt * _FS_TO_S) / C_CM_PER_S
    keep = slice(None)
    if max_frequency_cm1 is not None:
        keep = slice(0, int(np.searchsorted(freq, max_frequency_cm1 * (1 + 1e-12), side="right")))
    freq = freq[keep]

    def psd(x: np.ndarray) -> np.ndarray:
        return _segments_psd(np.ascontiguousarray(x), dt, L, step, K, win)[..., keep]

    seg: dict[str, np.ndarray] = {}
    powder = [g for g in geoms if g.kind != "vectors"]
    if powder:
        abar = np.trace(alpha, axis1=1, axis2=2) / 3.0
        beta = alpha - abar[:, None, None] * np.eye(3)
        s_iso = psd(abar)
        comps = np.stack([beta[:, 0, 0], beta[:, 1, 1], beta[:, 2, 2], beta[:, 0, 1], beta[:, 0, 2], beta[:, 1, 2]])
        s_c = psd(comps)  # (6, K, m)
        weights = np.array([1.5, 1.5, 1.5, 3.0, 3.0, 3.0])  # (3/2) Σ_ij with off-diagonals counted twice
        s_aniso = np.tensordot(weights, s_c, axes=1)
        table = {
            "isotropic": s_iso,
            "anisotropic": s_aniso,
            "VV": s_iso + (4.0 / 45.0) * s_aniso,
            "VH": s_aniso / 15.0,
            "unpolarized": s_iso + (7.0 / 45.0) * s_aniso,
        }
        for g in powder:
            base = g.kind.split(":", 1)[1] if ":" in g.kind else g.name
            seg[g.name] = table[base]
    for g in geoms:
        if g.kind == "vectors":
            proj = np.einsum("i,tij,j->t", g.e_in, alpha, g.e_out)
            seg[g.name] = psd(proj)

    if include_antistokes:
        freq = np.concatenate([-freq[:0:-1], freq])
        seg = {k: np.concatenate([v[:, :0:-1], v], axis=1) for k, v in seg.items()}
    factor = representation_factor(freq, representation, T, quantum_correction, laser_wavelength_nm)
    seg = {k: v * factor for k, v in seg.items()}

    vfac = _overlap_variance_factor(win, step, K) if K > 1 else float("nan")
    chans = {k: v.mean(axis=0) for k, v in seg.items()}
    if K > 1:
        errs = {k: v.std(axis=0, ddof=1) / math.sqrt(K) * math.sqrt(vfac) for k, v in seg.items()}
    else:
        errs = {k: np.full(freq.shape, np.nan) for k in seg}
    meta = {
        "method": "md",
        "source": source,
        "dt_fs": dt,
        "n_frames": n,
        "duration_ps": series.duration_ps,
        "segment_frames": L,
        "segment_ps": L * dt / 1000.0,
        "segment_step_frames": step,
        "n_segments": K,
        "overlap": float(overlap),
        "window": win_name,
        "overlap_variance_factor": vfac,
        "frequency_resolution_cm1": 1.0 / (C_CM_PER_S * L * dt * _FS_TO_S),
        "nyquist_cm1": nyq,
        "quantum_correction": quantum_correction,
        "laser_wavelength_nm": laser_wavelength_nm,
        "remove_mean": bool(remove_mean),
        "geometry": [g.name for g in geoms],
        "units": "intensity per cm^-1 in A^6 cm (one-sided PSD of alpha in A^3) times the representation factor",
        "series_metadata": {k: v for k, v in series.metadata.items() if k != "source"},
    }
    return RamanSpectrum(freq, chans, errs, T, representation, meta, seg if keep_segments else None)
