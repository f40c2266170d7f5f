"""Measured Raman spectra, and the preprocessing shared with simulated ones.

A measured spectrum carries cosmic-ray spikes, a background (fluorescence,
stray light), a notch/edge-filter cut-off at low frequency and the Bose
population factor; an instrument also broadens every line. To compare the
low-frequency fingerprint of a measurement with that of a simulation, both
go through one :class:`Preprocessing` pipeline:

* :func:`read_spectrum` reads two- or multi-column text/CSV files (delimiter,
  header and decimal comma sniffed; x in Raman shift cm⁻¹ or absolute
  wavelength nm), Thermo/Galactic ``.spc`` files (through the ``spc-io``
  package), Renishaw ``.wdf`` files (through ``renishawWiRE``, optional) and
  the ``spectrum.csv`` files written by :meth:`RamanSpectrum.to_csv`;
* :class:`Preprocessing` applies, in a fixed order, despiking (Whitaker–Hayes;
  measured spectra only), instrument broadening (simulated spectra only), the
  crop to [ω_min, ω_max] and the notch cut-off, baseline removal
  (pybaselines), Bose reduction, Savitzky–Golay smoothing and resampling, and
  normalisation;
* :func:`compare` runs the pipeline on both and computes the low-frequency
  fraction F_LF of each on the same range and representation
  (:class:`ComparisonResult`).

Equations, the order of the steps and why, and references:
``docs/physics/experiment.md``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._io import save_figure
from .errors import InputError
from .fingerprint import (
    DEFAULT_CUTOFF_CM1,
    DEFAULT_OMEGA_MAX_CM1,
    DEFAULT_OMEGA_MIN_CM1,
    FLFResult,
    low_frequency_fraction,
)
from .raman import _CSV_MAGIC, RamanSpectrum, _json_safe, _positive_temperature, _reduced_energy, laser_factor, trapezoid_weights

__all__ = [
    "read_spectrum",
    "Preprocessing",
    "ComparisonResult",
    "compare",
    "modified_z_score",
    "whitaker_hayes_despike",
    "estimate_noise",
    "bose_reduce",
    "instrument_broadening",
    "broadening_kernel",
    "voigt_fwhm",
    "X_UNITS",
    "BROADENING_KERNELS",
    "NORMALIZATIONS",
]

#: x-axis units understood by :func:`read_spectrum`.
X_UNITS: tuple[str, ...] = ("auto", "cm-1", "nm")
#: Instrument-function shapes of :func:`instrument_broadening`.
BROADENING_KERNELS: tuple[str, ...] = ("gaussian", "lorentzian")
#: Normalisations of the last pipeline step.
NORMALIZATIONS: tuple[str, ...] = ("area", "max", "none")

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_LORENTZ_TRUNCATION_FWHM = 50.0  # Lorentzian kernel cut at ±50 FWHM, then renormalised
_GAUSS_TRUNCATION_SIGMA = 6.0
_EDGE_SPIKE_SPREAD = 10.0  # a spike on an end point must exceed 10× the spread of the neighbouring differences


# =========================================================================== readers

_COMMENT_PREFIXES = ("#", "%", "//")
_NUMERIC_START = re.compile(r"""^["']?\s*[+-]?(\d|\.\d|nan\b|inf)""", re.IGNORECASE)
_DECIMAL_COMMA_TOKEN = re.compile(r"^[+-]?\d+,\d+([eE][+-]?\d+)?$")
_CM1_PATTERN = re.compile(
    r"cm\s*\^?\s*[-\u2212\u207b]\s*\^?\s*1|cm\u207b\u00b9|1\s*/\s*cm|raman\s*shift|wave\s*number|\brcm\b|\bshift\b",
    re.IGNORECASE,
)
_NM_PATTERN = re.compile(r"\bnm\b|\(nm\)|\[nm\]|wavelength|nanomet", re.IGNORECASE)
_LASER_PATTERNS = (
    re.compile(r"(?:laser|excitation)[^0-9\n]{0,40}?(\d{3,4}(?:[.,]\d+)?)\s*nm", re.IGNORECASE),
    re.compile(r"(?:laser|excitation)[^0-9\n]{0,20}?\(\s*nm\s*\)[^0-9\n]{0,10}?(\d{3,4}(?:[.,]\d+)?)", re.IGNORECASE),
)
_LASER_WORD = re.compile(r"laser|excitation", re.IGNORECASE)
_ERR_NAME = re.compile(r"(_err$|\berr\b|error|sigma|\bstd\b|uncert|\bunc\b)", re.IGNORECASE)


def _check_x_unit(x_unit: str) -> str:
    u = str(x_unit).strip().lower().replace("^", "").replace("⁻¹", "-1").replace("cm1", "cm-1")
    u = {"cm-1": "cm-1", "1/cm": "cm-1", "rcm": "cm-1", "auto": "auto", "nm": "nm"}.get(u, u)
    if u not in X_UNITS:
        raise InputError(f"x_unit = {x_unit!r} is unknown; use 'auto', 'cm-1' (Raman shift) or 'nm' (absolute wavelength).")
    return u


def _check_laser(laser_wavelength_nm: Any, source: str) -> float | None:
    if laser_wavelength_nm is None:
        return None
    try:
        lam = float(laser_wavelength_nm)
    except (TypeError, ValueError):
        lam = float("nan")
    if not (math.isfinite(lam) and lam > 0):
        raise InputError(f"{source}: laser_wavelength_nm = {laser_wavelength_nm!r} is not a positive wavelength; give the excitation wavelength in nm, e.g. 532.")
    return lam


def read_spectrum(
    path: str | os.PathLike,
    *,
    x_unit: str = "auto",
    laser_wavelength_nm: float | None = None,
    column: int | str | None = None,
    temperature_K: float | None = None,
    error_column: int | str | None = None,
) -> RamanSpectrum:
    """Read a measured (or simulated) Raman spectrum into a :class:`RamanSpectrum`.

    Formats (chosen by content and suffix):

    * ``spectrum.csv`` written by :meth:`RamanSpectrum.to_csv` (first line
      ``# ionraman RamanSpectrum …``): read with :meth:`RamanSpectrum.from_csv`,
      representation, temperature and metadata as stored (``temperature_K``
      only fills a missing temperature; ``column`` keeps one channel);
    * ``.spc`` (Thermo/Galactic; needs the ``spc-io`` package) and ``.wdf``
      (Renishaw WiRE; needs ``renishawWiRE``): the x unit and laser wavelength
      stored in the file are used; a file with several spectra needs
      ``column=i`` (0-based) or ``column="mean"``;
    * any other text file: two or more columns separated by commas,
      semicolons, tabs or whitespace (sniffed), optional header rows (any
      non-numeric rows before the data), ``#``/``%``/``//`` comment lines,
      decimal commas when unambiguous (no ``.`` anywhere in the data and a
      delimiter other than ``,``).

    Parameters
    ----------
    x_unit : ``"cm-1"`` (Raman shift), ``"nm"`` (absolute scattered wavelength;
        Raman shift ν̃ = 10⁷/λ_L − 10⁷/λ) or ``"auto"``: from the file's unit
        field or the x-column header (``cm-1``, ``1/cm``, ``Raman shift``,
        ``wavenumber`` → cm⁻¹; ``nm``, ``wavelength`` → nm); cm⁻¹ assumed (and
        noted in ``metadata["warnings"]``) when nothing says.
    laser_wavelength_nm : excitation wavelength in nm; required for nm data
        (else taken from the file: ``.wdf`` header, or a text header line such as
        ``Laser wavelength: 532 nm``). Stored in ``metadata["laser_wavelength_nm"]``,
        where Bose reduction finds it for the optional laser (ν⁴) factor.
    column : intensity column of a multi-column text file: its 0-based index
        in the file (0 is x, so 1 is the first intensity column) or its header
        name; defaults to the only intensity column.
    temperature_K : sample temperature, stored on the spectrum (needed for Bose reduction).
    error_column : column (index or name) holding 1σ errors of the intensity;
        a third column named like ``*_err``, ``error``, ``sigma`` or ``std`` is
        used automatically.

    Returns
    -------
    A spectrum with the single channel ``"intensity"`` in representation
    ``"stokes"`` (measured counts), x sorted ascending, duplicate x dropped
    (first kept), ``metadata["origin"] = "measured"`` and the source file,
    format, units and laser wavelength in ``metadata``. Anti-Stokes points
    (ν̃ < 0) are kept and counted in ``metadata["n_antistokes_points"]``.
    Malformed files raise :class:`InputError` naming the file and the line.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; give the path of a spectrum file (text/CSV with Raman shift and intensity columns, .spc or .wdf).")
    unit = _check_x_unit(x_unit)
    laser = _check_laser(laser_wavelength_nm, str(p))
    if temperature_K is not None:
        try:
            T = float(temperature_K)
        except (TypeError, ValueError):
            T = float("nan")
        if not (math.isfinite(T) and T > 0):
            raise InputError(f"{p}: temperature_K = {temperature_K!r} is not a positive temperature; give the sample temperature in K.")
    suffix = p.suffix.lower()
    if suffix == ".wdf":
        return _read_wdf(p, unit, laser, column, temperature_K)
    if suffix == ".spc":
        return _read_spc(p, unit, laser, column, temperature_K)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot be read ({exc}); check the path and its permissions.") from None
    if b"\x00" in raw[:4096]:
        raise InputError(
            f"{p}: is a binary file, not a text spectrum; export it as text (Raman shift, intensity) "
            "or give a .spc or .wdf file with its proper suffix."
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if first.startswith(_CSV_MAGIC):
        return _read_ionraman(p, unit, column, temperature_K)
    return _read_text(p, text, unit, laser, column, temperature_K, error_column)


def _read_ionraman(p: Path, unit: str, column: Any, temperature_K: float | None) -> RamanSpectrum:
    if unit == "nm":
        raise InputError(f"{p}: is an ionraman spectrum.csv, whose x column is always the Raman shift in cm⁻¹; leave x_unit='auto'.")
    s = RamanSpectrum.from_csv(p)
    meta = dict(s.metadata)
    meta.setdefault("origin", "simulated")
    meta.setdefault("format", "ionraman-csv")
    T = s.temperature_K
    if not math.isfinite(T) and temperature_K is not None:
        T = float(temperature_K)
    chans, errs = dict(s.channels), dict(s.errors)
    if column is not None:
        names = list(chans)
        if isinstance(column, (int, np.integer)) and not isinstance(column, bool):
            if not 1 <= int(column) <= len(names):
                raise InputError(f"{p}: column = {column} is out of range; this file has intensity columns 1 … {len(names)} ({', '.join(names)}).")
            name = names[int(column) - 1]
        else:
            name = str(column)
            if name not in chans:
                raise InputError(f"{p}: has no channel '{name}'; choose column= one of: {', '.join(names)}.")
        chans = {name: chans[name]}
        errs = {name: errs[name]} if name in errs else {}
    return RamanSpectrum(s.frequency_cm1, chans, errs, T, s.representation, meta)


def _split_fields(line: str, delim: str) -> list[str]:
    if delim == "ws":
        toks = line.split()
    else:
        toks = next(csv.reader([line], delimiter=delim, skipinitialspace=True), [])
    toks = [t.strip().strip("\"'").strip() for t in toks]
    if delim == "\t":
        toks = [t for t in toks if t]  # runs of tabs pad columns (e.g. WiRE exports)
    while toks and toks[-1] == "":  # a trailing delimiter
        toks.pop()
    return toks


def _sniff_delimiter(lines: Sequence[str]) -> tuple[str, bool]:
    """(delimiter, decimal_comma) from data-looking lines: tab, ';', ',' or whitespace ('ws').

    A delimiter qualifies when most of the lines hold it and more than half
    split into the same number (≥ 2) of fields; tab, then semicolon, then comma, then whitespace
    are tried. Decimal commas are accepted only when no field has a '.', every
    field with a comma looks like ``123,45``, and the delimiter is not ','.
    """
    sample = list(lines[:400])
    if not sample:
        return "ws", False

    def modal(delim: str) -> list[str] | None:
        split = [_split_fields(s, delim) for s in sample]
        counts: dict[int, int] = {}
        for t in split:
            counts[len(t)] = counts.get(len(t), 0) + 1
        c = max(counts, key=lambda k: (counts[k], k))
        if c < 2 or counts[c] <= 0.5 * len(sample):
            return None
        return [tok for t in split if len(t) == c for tok in t]

    def decimal_comma(toks: list[str]) -> bool:
        with_comma = [t for t in toks if "," in t]
        return bool(with_comma) and not any("." in t for t in toks) and all(_DECIMAL_COMMA_TOKEN.match(t) for t in with_comma)

    for delim in ("\t", ";"):
        if sum(delim in s for s in sample) > 0.5 * len(sample):
            toks = modal(delim)
            if toks is not None:
                return delim, decimal_comma(toks)
    if sum("," in s for s in sample) > 0.5 * len(sample):
        ws = modal("ws")
        if ws is not None and decimal_comma(ws):
            return "ws", True  # "100,5 2345,7": whitespace columns with decimal commas
        if modal(",") is not None:
            return ",", False
    return "ws", False


def _detect_unit(texts: Sequence[str]) -> str | None:
    cm = any(_CM1_PATTERN.search(t) for t in texts)
    nm = any(_NM_PATTERN.search(t) for t in texts)
    if cm and not nm:
        return "cm-1"
    if nm and not cm:
        return "nm"
    return None


def _column_index(spec: Any, names: list[str] | None, ncol: int, p: Path, what: str) -> int:
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        j = int(spec)
        if not 1 <= j < ncol:
            raise InputError(f"{p}: {what} = {spec} is out of range; the file has columns 0 (x) … {ncol - 1}, so give 1 … {ncol - 1}.")
        return j
    name = str(spec)
    if names is not None:
        low = [n.lower() for n in names]
        if name.lower() in low[1:]:
            return 1 + low[1:].index(name.lower())
        raise InputError(f"{p}: has no column named '{name}'; choose {what}= one of: {', '.join(names[1:])} (or a 0-based index).")
    if name.isdigit():
        return _column_index(int(name), names, ncol, p, what)
    raise InputError(f"{p}: has no header row, so {what} = '{name}' cannot be found; give a 0-based column index instead.")


def _read_text(
    p: Path, text: str, unit: str, laser: float | None, column: Any, temperature_K: float | None, error_column: Any
) -> RamanSpectrum:
    entries: list[tuple[int, str]] = []
    comments: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip().lstrip("\ufeff")
        if not s:
            continue
        if s.startswith(_COMMENT_PREFIXES):
            comments.append(s)
            continue
        entries.append((lineno, s))
    if not entries:
        what = "only comment lines" if comments else "no data"
        raise InputError(f"{p}: the file is empty ({what}); give a spectrum with an x column (Raman shift or wavelength) and an intensity column.")
    candidates = [s for _, s in entries if _NUMERIC_START.match(s)]
    if not candidates:
        raise InputError(
            f"{p}: line {entries[0][0]}: no numeric rows were found (the file holds text only); "
            "give rows of numbers: Raman shift (or wavelength) and intensity."
        )
    delim, dec_comma = _sniff_delimiter(candidates)

    def to_float(tok: str) -> float:
        return float(tok.replace(",", ".") if dec_comma else tok)

    parsed: list[tuple[int, str, list[str], list[float] | None]] = []
    for lineno, s in entries:
        toks = _split_fields(s, delim)
        try:
            vals = [to_float(t) for t in toks]
        except ValueError:
            vals = None
        parsed.append((lineno, s, toks, vals))
    counts: dict[int, int] = {}
    for _, _, _, vals in parsed:
        if vals is not None:
            counts[len(vals)] = counts.get(len(vals), 0) + 1
    if not counts:
        ln, line = next((ln, s) for ln, s in entries if _NUMERIC_START.match(s))
        raise InputError(
            f"{p}: line {ln}: {line[:60]!r} cannot be split into numbers (delimiter {_delim_name(delim)}); "
            "give columns of plain numbers separated by commas, semicolons, tabs or spaces."
        )
    ncol = max(counts, key=lambda k: (counts[k], k))
    headers: list[tuple[int, list[str]]] = []
    rows: list[list[float]] = []
    lines_of_rows: list[int] = []
    for lineno, _line, toks, vals in parsed:
        if not rows and (vals is None or len(vals) != ncol):
            headers.append((lineno, toks))
            continue
        if vals is None:
            bad = next((j for j, t in enumerate(toks) if not _is_number(t, dec_comma)), 0)
            raise InputError(
                f"{p}: line {lineno}, field {bad + 1}: {toks[bad]!r} is not a number; "
                "give numbers only below the header rows (or start the line with # to make it a comment)."
            )
        if len(vals) != ncol:
            raise InputError(
                f"{p}: line {lineno} has {len(vals)} fields instead of {ncol} (delimiter "
                f"{_delim_name(delim)}); give the same number of columns on every row."
            )
        rows.append(vals)
        lines_of_rows.append(lineno)
    if ncol < 2:
        raise InputError(
            f"{p}: line {lines_of_rows[0] if lines_of_rows else entries[0][0]}: the data has one column only; "
            "give two columns at least: Raman shift (or wavelength) and intensity."
        )
    if len(rows) < 2:
        raise InputError(f"{p}: only {len(rows)} numeric row(s); give the spectrum on at least two x values.")
    data = np.array(rows, dtype=float)
    names = next((toks for _, toks in reversed(headers) if len(toks) == ncol), None)
    for i in range(data.shape[0]):
        bad = ~np.isfinite(data[i])
        if bad.any():
            j = int(np.argmax(bad))
            col = f" ({names[j]})" if names else ""
            raise InputError(
                f"{p}: line {lines_of_rows[i]}, field {j + 1}{col} is {rows[i][j]!r}, not a finite number; "
                "remove or fix that row (NaN/inf are not valid spectrum values)."
            )
    # x unit
    header_text = [" ".join(t) for _, t in headers] + comments
    unit_from = "argument"
    if unit == "auto":
        det = _detect_unit([names[0]]) if names else None
        if det is None:  # other header/comment lines, but not those about the laser ("Laser (nm) = 532")
            det = _detect_unit([t for t in header_text if not _LASER_WORD.search(t)])
        if det is not None:
            unit, unit_from = det, "header"
        else:
            unit, unit_from = "cm-1", "assumed"
    # laser from the header
    laser_from = "argument" if laser is not None else None
    if laser is None:
        for t in header_text:
            m = next((m for m in (pat.search(t) for pat in _LASER_PATTERNS) if m), None)
            if m:
                laser = float(m.group(1).replace(",", "."))
                laser_from = "header"
                break
    # columns
    err_j = None
    if error_column is not None:
        err_j = _column_index(error_column, names, ncol, p, "error_column")
    if column is not None:
        y_j = _column_index(column, names, ncol, p, "column")
    else:
        cand = list(range(1, ncol))
        if err_j is None and names is not None and ncol == 3 and _ERR_NAME.search(names[2]) and not _ERR_NAME.search(names[1]):
            err_j = 2
        cand = [j for j in cand if j != err_j]
        if len(cand) != 1:
            label = ", ".join(f"{j}: {names[j]}" if names else str(j) for j in range(1, ncol))
            raise InputError(
                f"{p}: has {ncol - 1} intensity columns ({label}); choose one with column= (0-based index or header name)."
            )
        y_j = cand[0]
    if err_j is not None and err_j == y_j:
        raise InputError(f"{p}: column and error_column both select column {y_j}; give different columns.")
    meta = {
        "format": "text",
        "delimiter": _delim_name(delim),
        "decimal_comma": bool(dec_comma),
        "column": names[y_j] if names else y_j,
        "header": [" ".join(t) for _, t in headers][:20],
    }
    if err_j is not None:
        meta["error_column"] = names[err_j] if names else err_j
    return _finish_measured(
        p, data[:, 0], data[:, y_j], None if err_j is None else data[:, err_j], unit, unit_from, laser, laser_from,
        temperature_K, meta, [f"line {ln}" for ln in lines_of_rows],
    )


def _is_number(tok: str, dec_comma: bool) -> bool:
    try:
        float(tok.replace(",", ".") if dec_comma else tok)
        return True
    except ValueError:
        return False


def _delim_name(delim: str) -> str:
    return {"\t": "tab", ";": "semicolon", ",": "comma", "ws": "whitespace"}[delim]


def _finish_measured(
    p: Path,
    x: np.ndarray,
    y: np.ndarray,
    err: np.ndarray | None,
    unit: str,
    unit_from: str,
    laser: float | None,
    laser_from: str | None,
    temperature_K: float | None,
    meta: dict[str, Any],
    labels: Sequence[str] | None = None,
) -> RamanSpectrum:
    """Validate, convert units, sort and de-duplicate; build the measured spectrum."""
    x = np.asarray(x, dtype=float).copy()
    y = np.asarray(y, dtype=float).copy()
    e = None if err is None else np.asarray(err, dtype=float).copy()

    def where(i: int) -> str:
        return labels[i] if labels is not None else f"point {i}"

    for arr, what in ((x, "x"), (y, "intensity"), (e, "error")):
        if arr is None:
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{p}: {where(i)}: the {what} value is {arr[i]!r}, not a finite number; fix or remove that point.")
    if x.size < 2:
        raise InputError(f"{p}: only {x.size} point(s); give the spectrum on at least two x values.")
    if e is not None and np.any(e < 0):
        i = int(np.argmax(e < 0))
        raise InputError(f"{p}: {where(i)}: the error {e[i]:g} is negative; give 1σ errors ≥ 0.")
    d = np.diff(x)
    sgn = np.sign(d)
    nz = np.flatnonzero(sgn)
    if nz.size:
        first = sgn[nz[0]]
        rev = nz[sgn[nz] != first]
        if rev.size:
            i = int(rev[0])
            raise InputError(
                f"{p}: {where(i + 1)}: the x values are not monotonic (x = {x[i + 1]:g} after {x[i]:g} while the rows before "
                f"{'increase' if first > 0 else 'decrease'}); give one spectrum with x sorted — this looks like several "
                "spectra in one file or a first column that is not x."
            )
    warnings: list[str] = []
    if unit_from == "assumed":
        warnings.append("the x unit was not stated in the file; assumed Raman shift in cm^-1 (pass x_unit='nm' for wavelengths)")
    if unit == "nm":
        if laser is None:
            raise InputError(
                f"{p}: the x column is an absolute wavelength in nm ({unit_from}); pass laser_wavelength_nm= "
                "(the excitation wavelength, e.g. 532) to convert it to Raman shift."
            )
        if np.any(x <= 0):
            i = int(np.argmax(x <= 0))
            raise InputError(f"{p}: {where(i)}: wavelength {x[i]:g} nm is not positive; give wavelengths in nm.")
        x = 1e7 / laser - 1e7 / x
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    e_arr = None if e is None else e[order]
    keep = np.ones(x.size, dtype=bool)
    keep[1:] = np.diff(x) != 0
    n_dup = int(np.count_nonzero(~keep))
    if n_dup:
        x, y = x[keep], y[keep]
        e_arr = None if e_arr is None else e_arr[keep]
        warnings.append(f"{n_dup} duplicate x value(s) dropped (first kept)")
    if x.size < 2:
        raise InputError(f"{p}: all x values are equal; give the spectrum on at least two distinct x values.")
    n_as = int(np.count_nonzero(x < 0))
    if n_as:
        warnings.append(f"{n_as} anti-Stokes point(s) (negative Raman shift) kept; the notch/crop step removes them")
    if laser is not None:
        nu_l = 1e7 / laser
        if x[-1] >= nu_l:
            raise InputError(
                f"{p}: the Raman shift reaches {x[-1]:.5g} cm⁻¹, beyond the laser wavenumber {nu_l:.5g} cm⁻¹ "
                f"(λ = {laser:g} nm); check laser_wavelength_nm and x_unit."
            )
    meta = dict(meta)
    meta.update(
        {
            "origin": "measured",
            "source": str(p),
            "source_file": str(p),
            "x_unit": unit,
            "x_unit_from": unit_from,
            "intensity_unit": meta.get("intensity_unit", "counts (arb. units)"),
            "laser_wavelength_nm": laser,
            "laser_wavelength_from": laser_from,
            "n_points": int(x.size),
            "n_duplicates_dropped": n_dup,
            "n_antistokes_points": n_as,
            "antistokes": bool(n_as),
            "warnings": warnings,
        }
    )
    T = float("nan") if temperature_K is None else float(temperature_K)
    errs = {} if e_arr is None else {"intensity": e_arr}
    return RamanSpectrum(x, {"intensity": y}, errs, T, "stokes", meta)


def _pick_spectrum(p: Path, spectra: np.ndarray, column: Any, what: str) -> tuple[np.ndarray, Any]:
    n = spectra.shape[0]
    if column is None:
        if n == 1:
            return spectra[0], 0
        raise InputError(f"{p}: holds {n} {what}; choose one with column= (0-based index) or average them with column='mean'.")
    if isinstance(column, str) and column.lower() == "mean":
        return spectra.mean(axis=0), "mean"
    try:
        j = int(column)
    except (TypeError, ValueError):
        j = -1
    if not 0 <= j < n:
        raise InputError(f"{p}: column = {column!r} is out of range; the file holds {n} {what} (0 … {n - 1}, or 'mean').")
    return spectra[j], j


def _unit_from_file(p: Path, unit: str, file_unit: str | None, names: Mapping[str, str]) -> tuple[str, str, list[str]]:
    notes: list[str] = []
    fu = names.get(file_unit or "")
    if unit != "auto":
        if fu is not None and fu != unit:
            notes.append(f"the file says the x unit is {fu}; x_unit='{unit}' given overrides it")
        return unit, "argument", notes
    if fu is not None:
        return fu, "file", notes
    return "cm-1", "assumed", notes


def _read_spc(p: Path, unit: str, laser: float | None, column: Any, temperature_K: float | None) -> RamanSpectrum:
    try:
        from spc_io import SPC
    except ImportError:
        raise InputError(
            f"{p}: reading Thermo/Galactic .spc files needs the package spc-io; install it with "
            "`pip install spc-io`, or export the spectrum as a two-column text file."
        ) from None
    try:
        with open(p, "rb") as fh:
            spc = SPC.from_bytes_io(io.BytesIO(fh.read()))
        subs = list(spc)
        if not subs:
            raise ValueError("no subfiles")
        xs = [np.asarray(s.xarray, dtype=float) for s in subs]
        ys = [np.asarray(s.yarray, dtype=float) for s in subs]
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a malformed file
        raise InputError(f"{p}: not a readable .spc file ({type(exc).__name__}: {exc}); re-export it from the instrument software.") from None
    if isinstance(column, str) and column.lower() == "mean" and any(
        x.shape != xs[0].shape or not np.array_equal(x, xs[0]) for x in xs
    ):
        raise InputError(f"{p}: holds {len(subs)} spectra on different x axes, which cannot be averaged; choose one with column= (0-based index).")
    if isinstance(column, str) and column.lower() == "mean":
        y, chosen = _pick_spectrum(p, np.array(ys), column, "spectra (subfiles)")
        x = xs[0]
    else:
        _, chosen = _pick_spectrum(p, np.zeros((len(ys), 1)), column, "spectra (subfiles)")
        x, y = xs[chosen], ys[chosen]
    xtype = str(spc.xtype)
    names = {"XRAMANS": "cm-1", "XWAVEN": "cm-1", "XNMETR": "nm", "XUMETR": "nm"}
    u, u_from, notes = _unit_from_file(p, unit, xtype, names)
    if xtype == "XUMETR" and u == "nm" and u_from == "file":
        x = x * 1000.0
    if xtype == "XWAVEN" and u_from == "file":
        notes.append("the .spc x axis is 'wavenumber (cm^-1)'; read as Raman shift")
    meta = {"format": "spc", "spc_xtype": xtype, "spc_ytype": str(spc.ytype), "column": chosen, "n_spectra_in_file": len(subs)}
    s = _finish_measured(p, x, y, None, u, u_from, laser, "argument" if laser is not None else None, temperature_K, meta)
    s.metadata["warnings"] = notes + list(s.metadata["warnings"])
    return s


def _read_wdf(p: Path, unit: str, laser: float | None, column: Any, temperature_K: float | None) -> RamanSpectrum:
    try:
        from renishawWiRE import WDFReader
    except ImportError:
        raise InputError(
            f"{p}: reading Renishaw .wdf files needs the package renishawWiRE; install it with "
            "`pip install renishawWiRE`, or export the spectrum from WiRE as a text file."
        ) from None
    reader = None
    try:
        reader = WDFReader(str(p))
        x = np.asarray(reader.xdata, dtype=float).ravel()
        spectra = np.asarray(reader.spectra, dtype=float).reshape(-1, x.size)
        xunit = getattr(reader.xlist_unit, "name", str(reader.xlist_unit))
        file_laser = getattr(reader, "laser_length", None)
        title = str(getattr(reader, "title", "") or "")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{p}: not a readable Renishaw .wdf file ({type(exc).__name__}: {exc}); re-export it from WiRE.") from None
    finally:
        if reader is not None and hasattr(reader, "close"):
            try:
                reader.close()
            except Exception:  # noqa: BLE001
                pass
    y, chosen = _pick_spectrum(p, spectra, column, "spectra (a map or series)")
    u, u_from, notes = _unit_from_file(p, unit, xunit, {"RamanShift": "cm-1", "Nanometre": "nm"})
    laser_from = "argument" if laser is not None else None
    if laser is None and file_laser is not None:
        try:
            fl = float(file_laser)
        except (TypeError, ValueError):
            fl = float("nan")
        if math.isfinite(fl) and fl > 0:
            laser, laser_from = fl, "file"
    meta = {"format": "wdf", "wdf_x_unit": xunit, "title": title, "column": chosen, "n_spectra_in_file": int(spectra.shape[0])}
    s = _finish_measured(p, x, y, None, u, u_from, laser, laser_from, temperature_K, meta)
    s.metadata["warnings"] = notes + list(s.metadata["warnings"])
    return s


# =========================================================================== step functions


def modified_z_score(x: Any) -> np.ndarray:
    """Iglewicz–Hoaglin modified Z-score z_i = 0.6745 (x_i − x̃)/MAD, MAD = median|x − x̃|.

    When MAD = 0 (more than half the values equal) the mean absolute deviation
    is used instead, z_i = (x_i − x̃)/(1.253314·MeanAD); all zeros if that is 0 too.
    """
    a = np.asarray(x, dtype=float)
    med = float(np.median(a))
    dev = a - med
    mad = float(np.median(np.abs(dev)))
    if mad > 0:
        return 0.6745 * dev / mad
    mean_ad = float(np.mean(np.abs(dev)))
    if mean_ad > 0:
        return dev / (1.253314 * mean_ad)
    return np.zeros_like(a)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs (stop exclusive) of the runs of True in a 1-D mask."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _replacement_weights(mask: np.ndarray, window: int) -> list[tuple[int, np.ndarray]]:
    """For every flagged point i, the indices of the non-flagged points within ±window (widened if none)."""
    n = mask.size
    out = []
    for i in np.flatnonzero(mask):
        m = window
        while True:
            lo, hi = max(0, i - m), min(n, i + m + 1)
            idx = np.arange(lo, hi)
            idx = idx[~mask[idx]]
            if idx.size or (lo == 0 and hi == n):
                break
            m *= 2
        out.append((int(i), idx))
    return out


def whitaker_hayes_despike(
    y: Any, threshold: float = 7.0, window: int = 3, max_width: int = 3
) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove cosmic-ray spikes (after Whitaker & Hayes, Chemometr. Intell. Lab. Syst. 179, 82 (2018)).

    1. Modified Z-score of the first difference, z(Δ) = 0.6745 (Δ − median Δ)/MAD(Δ)
       with Δ_i = y_{i+1} − y_i (Whitaker & Hayes); |z| > ``threshold`` marks a
       candidate jump.
    2. A candidate jump into y_k is a spike of width w ≤ ``max_width`` when the
       jump out of y_{k+w−1} returns to the level: with s̄ the median of the
       ``window`` differences on either side (the local slope), the excess jumps
       e_in = Δ_{k−1} − s̄ and e_out = Δ_{k+w−1} − s̄ have opposite signs, both
       |z(e)| > ``threshold``, the smaller is at least 30 % of the larger, and
       both exceed twice the largest deviation of those neighbouring
       differences from s̄. The last condition keeps the steep flanks and the
       top of an intense band (whose differences change smoothly) from being
       taken for spikes, which the plain threshold on |z(Δ)| does at high
       signal-to-noise ratio, while a spike on a band's flank is still found.
       A lone jump at either end marks the end point when it exceeds ten times
       that spread (one-sided, it is harder to tell from a steep edge).
    3. Every spike point is replaced by the mean of the non-spike points within
       ±``window`` points (doubled until one is found), as in Whitaker & Hayes.

    Returns ``(y_fixed, mask, n_spikes)``: the mask of replaced points and the
    number of spikes.
    """
    a = np.asarray(y, dtype=float)
    if a.ndim != 1:
        raise InputError("whitaker_hayes_despike: y must be one-dimensional.")
    if not (threshold > 0):
        raise InputError(f"despike threshold = {threshold!r} must be positive; use e.g. 7.")
    if int(window) != window or window < 1:
        raise InputError(f"despike window = {window!r} must be a positive integer number of points; use e.g. 3.")
    if int(max_width) != max_width or max_width < 1:
        raise InputError(f"despike max_width = {max_width!r} must be a positive integer number of points; use e.g. 3.")
    window, max_width = int(window), int(max_width)
    n = a.size
    mask = np.zeros(n, dtype=bool)
    if n < 4:
        return a.copy(), mask, 0
    d = np.diff(a)
    nd = d.size
    med = float(np.median(d))
    mad = float(np.median(np.abs(d - med)))
    if mad <= 0:
        mad = 1.253314 * 0.6745 * float(np.mean(np.abs(d - med)))
    if mad <= 0:
        return a.copy(), mask, 0
    zfac = 0.6745 / mad
    cand = np.abs(d - med) * zfac > threshold

    def flanks(lo: int, hi: int) -> np.ndarray:
        return np.concatenate([d[max(0, lo - window):lo], d[hi + 1:hi + 1 + window]])

    n_spikes = 0
    i = 0
    while i < nd:
        if not cand[i]:
            i += 1
            continue
        found = False
        for w in range(1, max_width + 1):
            j = i + w
            if j >= nd:
                break
            fl = flanks(i, j)
            sbar = float(np.median(fl)) if fl.size else med
            spread = float(np.max(np.abs(fl - sbar))) if fl.size else 0.0
            e_in, e_out = d[i] - sbar, d[j] - sbar
            if e_in * e_out >= 0:
                continue
            lo_e, hi_e = sorted((abs(e_in), abs(e_out)))
            if lo_e * zfac > threshold and lo_e >= 0.3 * hi_e and lo_e > 2.0 * spread:
                mask[i + 1:j + 1] = True
                n_spikes += 1
                i = j + 1
                found = True
                break
        if found:
            continue
        # a lone jump at an end of the spectrum: the end point is the spike
        for edge, k in ((0, 0), (nd - 1, n - 1)):
            if i == edge and not mask[k]:
                fl = d[1:1 + window] if edge == 0 else d[max(0, nd - 1 - window):nd - 1]
                sbar = float(np.median(fl)) if fl.size else med
                spread = float(np.max(np.abs(fl - sbar))) if fl.size else 0.0
                e = d[i] - sbar
                if abs(e) * zfac > threshold and abs(e) > _EDGE_SPIKE_SPREAD * spread:
                    mask[k] = True
                    n_spikes += 1
        i += 1
    out = a.copy()
    for k, nb in _replacement_weights(mask, window):
        if nb.size:
            out[k] = float(np.mean(a[nb]))
    return out, mask, n_spikes


def estimate_noise(y: Any, window: int = 9, polyorder: int = 3, local_points: int = 51) -> np.ndarray:
    """Per-point 1σ noise of a spectrum from the residual of a Savitzky–Golay fit.

    r = y − SG(y); for white noise of variance σ² the residual variance is
    σ²(1 − c₀) (c₀ the central filter coefficient; the SG smoother is a
    projection), so σ̂_k = 1.4826·median_{|j−k|≤L/2}|r_j| / √(1 − c₀) — a running
    median over ``local_points`` points, robust to peaks the fit misses and
    following intensity-dependent (shot) noise.
    """
    from scipy.ndimage import median_filter
    from scipy.signal import savgol_coeffs, savgol_filter

    a = np.asarray(y, dtype=float)
    w = int(window)
    if w % 2 == 0 or w <= polyorder or w < 3:
        raise InputError(f"noise window = {window!r} must be an odd number of points larger than the polynomial order {polyorder}; use e.g. 9.")
    if a.size < w:
        raise InputError(f"The spectrum has {a.size} points, fewer than the noise-estimate window {w}; give a longer spectrum.")
    r = a - savgol_filter(a, w, polyorder, mode="interp")
    c0 = float(savgol_coeffs(w, polyorder)[w // 2])
    L = min(int(local_points) | 1, a.size - (1 - a.size % 2))
    sig = 1.4826 * median_filter(np.abs(r), size=max(L, 1), mode="nearest") / math.sqrt(1.0 - c0)
    return sig


def _bose_factor(frequency_cm1: np.ndarray, temperature_K: float) -> np.ndarray:
    """1/(n(ν̃)+1) = 1 − exp(−hcν̃/k_BT) (0 at ν̃ = 0, negative on the anti-Stokes side)."""
    return -np.expm1(-_reduced_energy(frequency_cm1, temperature_K))


def _require_T(T: Any, what: str) -> float:
    return _positive_temperature(
        T,
        f"{what}: Bose reduction needs the measurement temperature, but none is known; pass temperature_K= to "
        "read_spectrum (or set Preprocessing(temperature_K=...)), e.g. --temperature 300.",
    )


def bose_reduce(spectrum: RamanSpectrum, temperature_K: float | None = None, laser_factor_correction: bool = True) -> RamanSpectrum:
    """Reduced spectrum χ''(ν̃) = I_S(ν̃)/[(n(ν̃)+1)·L(ν̃)] of a Stokes (or any) spectrum.

    n(ν̃) = 1/(exp(hcν̃/k_BT) − 1) at ``temperature_K`` (default: the spectrum's);
    L(ν̃) = ((ν̃_L − ν̃)/ν̃_L)⁴ when ``laser_factor_correction`` and the spectrum
    knows its laser wavelength (``metadata["laser_wavelength_nm"]``), else 1.
    A reduced spectrum is returned unchanged; a classical one is converted
    with :meth:`RamanSpectrum.as_representation` (the same result). Errors
    scale with the same factor.
    """
    if spectrum.representation == "reduced":
        return spectrum
    src = str(spectrum.metadata.get("source", "The spectrum"))
    T = _require_T(spectrum.temperature_K if temperature_K is None else temperature_K, src)
    if spectrum.representation == "classical":
        return spectrum.as_representation("reduced", temperature_K=T)
    if spectrum.representation != "stokes":
        raise InputError(f"{src}: representation '{spectrum.representation}' cannot be Bose-reduced; read the file with representation='stokes'.")
    fac = _bose_factor(spectrum.frequency_cm1, T)
    lam = spectrum.laser_wavelength_nm
    if laser_factor_correction and lam is not None:
        fac = fac / laser_factor(spectrum.frequency_cm1, lam)
    meta = dict(spectrum.metadata)
    return RamanSpectrum(
        spectrum.frequency_cm1,
        {k: v * fac for k, v in spectrum.channels.items()},
        {k: v * np.abs(fac) for k, v in spectrum.errors.items()},
        T,
        "reduced",
        meta,
        None if spectrum.segment_spectra is None else {k: v * fac for k, v in spectrum.segment_spectra.items()},
    )


def voigt_fwhm(fwhm_lorentzian: float, fwhm_gaussian: float) -> float:
    """Olivero–Longbothum (1977) FWHM of a Voigt profile: 0.5346 f_L + √(0.2166 f_L² + f_G²) (±0.02 %)."""
    fl, fg = float(fwhm_lorentzian), float(fwhm_gaussian)
    return 0.5346 * fl + math.sqrt(0.2166 * fl * fl + fg * fg)


def broadening_kernel(fwhm_cm1: float, step_cm1: float, kind: str = "gaussian", max_half_width: int | None = None) -> np.ndarray:
    """Normalised (Σ k_j = 1) instrument kernel on a grid of spacing ``step_cm1``, odd length.

    Each weight is the kernel's integral over its bin [(j−½)h, (j+½)h]
    (exact CDF differences: erf for the Gaussian, arctan for the Lorentzian),
    so narrow kernels keep their area. Gaussian: cut at ±6σ (σ = FWHM/2√(2 ln 2));
    Lorentzian: cut at ±50 FWHM (or ``max_half_width`` points), then renormalised.
    """
    from scipy.special import erf

    kind = str(kind).lower()
    if kind not in BROADENING_KERNELS:
        raise InputError(f"broadening = {kind!r} is unknown; use 'gaussian' or 'lorentzian'.")
    fw, h = float(fwhm_cm1), float(step_cm1)
    if not (math.isfinite(fw) and fw > 0):
        raise InputError(f"broadening_fwhm_cm1 = {fwhm_cm1!r} must be a positive width in cm⁻¹, e.g. 2.")
    if not (math.isfinite(h) and h > 0):
        raise InputError(f"grid step {step_cm1!r} must be positive.")
    if kind == "gaussian":
        sigma = fw / _FWHM_PER_SIGMA
        half = int(math.ceil(_GAUSS_TRUNCATION_SIGMA * sigma / h))
    else:
        gamma = 0.5 * fw
        half = int(math.ceil(_LORENTZ_TRUNCATION_FWHM * fw / h))
    if max_half_width is not None:
        half = min(half, int(max_half_width))
    half = max(half, 1)
    edges = (np.arange(-half, half + 2) - 0.5) * h
    if kind == "gaussian":
        cdf = 0.5 * erf(edges / (sigma * math.sqrt(2.0)))
    else:
        cdf = np.arctan(edges / gamma) / math.pi
    k = np.diff(cdf)
    return k / k.sum()


def _uniform_step(f: np.ndarray) -> float | None:
    d = np.diff(f)
    h = float(np.median(d))
    return h if np.all(np.abs(d - h) <= 1e-6 * h) else None


def _convolve_rows(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Convolve along the last axis with a symmetric kernel, the data mirrored about its end points."""
    from scipy.signal import fftconvolve

    half = k.size // 2
    pad = [(0, 0)] * (a.ndim - 1) + [(half, half)]
    padded = np.pad(a, pad, mode="reflect")
    kk = k.reshape((1,) * (a.ndim - 1) + (-1,))
    return fftconvolve(padded, kk, mode="valid", axes=-1)


def instrument_broadening(spectrum: RamanSpectrum, fwhm_cm1: float, kind: str = "gaussian") -> RamanSpectrum:
    """Convolve every channel with a Gaussian or Lorentzian instrument function of FWHM ``fwhm_cm1``.

    The spectrum is first interpolated (linearly) to a uniform grid of its
    finest spacing if it is not uniform (of its median spacing if the finest
    would more than quadruple the number of points). The kernel is normalised to unit sum,
    so Σ_i I_i Δν̃ (the area) is conserved away from the ends; beyond the ends
    the spectrum is continued by reflection about the end points (exact for the
    even central peak at ν̃ = 0). Errors: σ_out² = Σ_j k_j² σ²_{i−j} (independent
    points); per-segment spectra are convolved too.
    """
    w = _Work.from_spectrum(spectrum)
    _broaden(w, float(fwhm_cm1), kind)
    return w.to_spectrum()


# =========================================================================== working state


@dataclass
class _Work:
    f: np.ndarray
    y: dict[str, np.ndarray]
    var: dict[str, np.ndarray]
    segs: dict[str, np.ndarray] | None
    rep: str
    T: float
    meta: dict[str, Any]
    log: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spectrum(cls, s: RamanSpectrum) -> _Work:
        var = {}
        for k in s.channels:
            e = s.errors.get(k)
            var[k] = np.full(s.frequency_cm1.shape, np.nan) if e is None else np.asarray(e, float) ** 2
        segs = None if s.segment_spectra is None else {k: v.copy() for k, v in s.segment_spectra.items()}
        return cls(
            s.frequency_cm1.copy(), {k: v.copy() for k, v in s.channels.items()}, var, segs,
            s.representation, s.temperature_K, dict(s.metadata), {"steps": [], "notes": []},
        )

    def copy(self) -> _Work:
        return _Work(
            self.f.copy(), {k: v.copy() for k, v in self.y.items()}, {k: v.copy() for k, v in self.var.items()},
            None if self.segs is None else {k: v.copy() for k, v in self.segs.items()},
            self.rep, self.T, dict(self.meta),
            {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in self.log.items()},
        )

    def to_spectrum(self) -> RamanSpectrum:
        errs = {k: np.sqrt(v) for k, v in self.var.items() if np.isfinite(v).any()}
        return RamanSpectrum(self.f, self.y, errs, self.T, self.rep, self.meta, self.segs)

    @property
    def source(self) -> str:
        return str(self.meta.get("source", "The spectrum"))

    def select(self, keep: np.ndarray) -> None:
        self.f = self.f[keep]
        self.y = {k: v[keep] for k, v in self.y.items()}
        self.var = {k: v[keep] for k, v in self.var.items()}
        if self.segs is not None:
            self.segs = {k: v[:, keep] for k, v in self.segs.items()}

    def scale(self, factors: Mapping[str, np.ndarray | float]) -> None:
        for k, fac in factors.items():
            self.y[k] = self.y[k] * fac
            self.var[k] = self.var[k] * np.abs(fac) ** 2
            if self.segs is not None and k in self.segs:
                self.segs[k] = self.segs[k] * fac

    def interpolate(self, grid: np.ndarray) -> None:
        """Linear interpolation onto ``grid`` (inside the data range); variances with weights²."""
        f = self.f
        j = np.clip(np.searchsorted(f, grid, side="right") - 1, 0, f.size - 2)
        t = (grid - f[j]) / (f[j + 1] - f[j])
        a, b = 1.0 - t, t
        self.y = {k: a * v[j] + b * v[j + 1] for k, v in self.y.items()}
        self.var = {k: a * a * v[j] + b * b * v[j + 1] for k, v in self.var.items()}
        if self.segs is not None:
            self.segs = {k: a * v[:, j] + b * v[:, j + 1] for k, v in self.segs.items()}
        self.f = np.asarray(grid, dtype=float).copy()


def _make_uniform(w: _Work) -> float:
    """Interpolate to a uniform grid of the finest spacing (the median one if that would quadruple the points)."""
    h = _uniform_step(w.f)
    if h is not None:
        return h
    h = float(np.min(np.diff(w.f)))
    if (w.f[-1] - w.f[0]) / h + 1 > 4 * w.f.size:
        h = float(np.median(np.diff(w.f)))
    n = int(math.floor((w.f[-1] - w.f[0]) / h + 1e-9)) + 1
    grid = w.f[0] + h * np.arange(n)
    w.interpolate(grid)
    w.log["notes"].append(f"interpolated to a uniform grid of step {h:g} cm^-1 before broadening")
    return h


def _broaden(w: _Work, fwhm: float, kind: str) -> None:
    bad = [k for k, v in w.y.items() if not np.isfinite(v).all()]
    if bad:
        keep = np.ones(w.f.size, bool)
        for k in bad:
            keep &= np.isfinite(w.y[k])
        w.select(keep)
        w.log["notes"].append(f"dropped {int(np.count_nonzero(~keep))} non-finite point(s) before broadening")
    if w.f.size < 3:
        raise InputError(f"{w.source}: too few points to broaden; give a longer spectrum.")
    h = _make_uniform(w)
    k = broadening_kernel(fwhm, h, kind, max_half_width=4 * w.f.size)
    k2 = k * k
    for c in list(w.y):
        w.y[c] = _convolve_rows(w.y[c], k)
        v = w.var[c]
        w.var[c] = _convolve_rows(v, k2) if np.isfinite(v).all() else np.full(v.shape, np.nan)
    if w.segs is not None:
        w.segs = {c: _convolve_rows(v, k) for c, v in w.segs.items()}


# =========================================================================== pipeline


def _opt_float(v: Any, name: str, positive: bool = False, nonneg: bool = False) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if not math.isfinite(x) or (positive and x <= 0) or (nonneg and x < 0):
        need = "a positive number" if positive else ("a number ≥ 0" if nonneg else "a finite number")
        raise InputError(f"pipeline option {name} = {v!r} must be {need}.")
    return x


def _baseline_methods() -> list[str]:
    from pybaselines import Baseline

    skip = {"banded_solver", "pentapy_solver", "optimize_extended_range", "collab_pls", "custom_bc", "interp_pts"}
    return sorted(n for n in dir(Baseline) if not n.startswith("_") and n not in skip and callable(getattr(Baseline, n, None)))


@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing applied identically to measured and simulated spectra.

    Steps, in this fixed order (each optional; see ``docs/physics/experiment.md``):

    0. *alignment*: a classical (MD) spectrum is converted to the measured-like
       Stokes representation (:meth:`RamanSpectrum.as_representation`);
    1. *despiking* (measured spectra only): jumps whose Whitaker–Hayes modified
       Z-score of the first difference exceeds ``despike_threshold`` and that
       return to the level within ``despike_max_width`` points
       (:func:`whitaker_hayes_despike`); replaced by the mean of the non-spike
       neighbours within ±``despike_window`` points. Then, for a measured
       spectrum without error bars and ``estimate_noise``, the noise σ(ν̃) is
       estimated from the residual of a Savitzky–Golay fit (``noise_window`` points);
    2. *instrument broadening* (simulated spectra only): convolution with a
       ``broadening`` ("gaussian"/"lorentzian") kernel of FWHM
       ``broadening_fwhm_cm1`` on the whole (uniform) grid, before the crop,
       as the spectrometer does;
    3. *crop* to [max(``omega_min_cm1``, ``notch_cm1``), ``omega_max_cm1``] and
       linear *resampling* to ``grid_cm1`` or a uniform ``step_cm1`` grid, so
       that the point-based steps below see the same grid for both spectra;
    4. *baseline* removal with ``pybaselines.Baseline(x).<baseline>(y, **baseline_params)``;
    5. *Bose reduction* (``bose``): χ'' = I_S/(n(ν̃)+1) [/ L(ν̃) if ``laser_factor``] at
       the spectrum's temperature (or ``temperature_K`` when it has none);
       skipped for spectra that are already reduced;
    6. *smoothing* (Savitzky–Golay, ``smoothing_window`` points, order ``smoothing_order``);
    7. *normalisation*: ``"area"`` (unit area over the crop range), ``"max"`` or ``"none"``.
    """

    despike: bool = True
    despike_threshold: float = 7.0
    despike_window: int = 3
    despike_max_width: int = 3
    estimate_noise: bool = True
    noise_window: int = 9
    broadening: str | None = None
    broadening_fwhm_cm1: float | None = None
    omega_min_cm1: float | None = None
    omega_max_cm1: float | None = None
    notch_cm1: float | None = 10.0
    baseline: str | None = None
    baseline_params: Mapping[str, Any] = field(default_factory=dict)
    bose: bool = True
    laser_factor: bool = True
    temperature_K: float | None = None
    smoothing_window: int | None = None
    smoothing_order: int = 3
    step_cm1: float | None = None
    grid_cm1: tuple[float, ...] | None = None
    normalize: str = "area"

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for name in ("despike", "estimate_noise", "bose", "laser_factor"):
            v = getattr(self, name)
            if not isinstance(v, (bool, np.bool_)):
                raise InputError(f"pipeline option {name} = {v!r} must be true or false.")
            set_(name, bool(v))
        set_("despike_threshold", _opt_float(self.despike_threshold, "despike_threshold", positive=True))
        for name in ("despike_window", "despike_max_width", "noise_window", "smoothing_order"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer, float)) or int(v) != v or v < 0:
                raise InputError(f"pipeline option {name} = {v!r} must be a non-negative integer (points).")
            set_(name, int(v))
        if self.despike_window < 1 or self.despike_max_width < 1:
            raise InputError("pipeline options despike_window and despike_max_width must be at least 1 point.")
        if self.noise_window < 5 or self.noise_window % 2 == 0:
            raise InputError(f"pipeline option noise_window = {self.noise_window} must be an odd number ≥ 5 (points).")
        b = self.broadening
        if b is not None and str(b).lower() in ("none", ""):
            b = None
        if b is not None:
            b = str(b).lower()
            if b not in BROADENING_KERNELS:
                raise InputError(f"pipeline option broadening = {self.broadening!r} is unknown; use 'gaussian', 'lorentzian' or None.")
            if self.broadening_fwhm_cm1 is None:
                raise InputError("pipeline option broadening needs broadening_fwhm_cm1, the instrument FWHM in cm⁻¹ (e.g. 2).")
        set_("broadening", b)
        set_("broadening_fwhm_cm1", _opt_float(self.broadening_fwhm_cm1, "broadening_fwhm_cm1", positive=True))
        set_("omega_min_cm1", _opt_float(self.omega_min_cm1, "omega_min_cm1"))
        set_("omega_max_cm1", _opt_float(self.omega_max_cm1, "omega_max_cm1"))
        set_("notch_cm1", _opt_float(self.notch_cm1, "notch_cm1", nonneg=True))
        lo = self.lower_limit_cm1
        if lo is not None and self.omega_max_cm1 is not None and not lo < self.omega_max_cm1:
            raise InputError(
                f"pipeline: the crop range is empty (lower limit {lo:g} cm⁻¹ from omega_min_cm1/notch_cm1 ≥ omega_max_cm1 = "
                f"{self.omega_max_cm1:g}); raise omega_max_cm1."
            )
        bl = self.baseline
        if bl is not None and str(bl).lower() in ("none", ""):
            bl = None
        if bl is not None:
            bl = str(bl)
            try:
                methods = _baseline_methods()
            except ImportError:
                raise InputError(f"pipeline option baseline = '{bl}' needs the package pybaselines; install it with `pip install pybaselines`.") from None
            if bl not in methods:
                raise InputError(
                    f"pipeline option baseline = '{bl}' is not a pybaselines method; use e.g. asls, arpls, airpls, imodpoly or snip "
                    f"(all: {', '.join(methods)})."
                )
        set_("baseline", bl)
        if not isinstance(self.baseline_params, Mapping):
            raise InputError(f"pipeline option baseline_params = {self.baseline_params!r} must be a mapping of pybaselines keyword arguments.")
        set_("baseline_params", dict(self.baseline_params))
        set_("temperature_K", _opt_float(self.temperature_K, "temperature_K", positive=True))
        sw = self.smoothing_window
        if sw is not None:
            if isinstance(sw, bool) or int(sw) != sw or sw < 3 or int(sw) % 2 == 0 or int(sw) <= self.smoothing_order:
                raise InputError(
                    f"pipeline option smoothing_window = {sw!r} must be an odd number of points ≥ 3 and larger than "
                    f"smoothing_order = {self.smoothing_order}."
                )
            set_("smoothing_window", int(sw))
        set_("step_cm1", _opt_float(self.step_cm1, "step_cm1", positive=True))
        if self.grid_cm1 is not None:
            g = np.asarray(self.grid_cm1, dtype=float).ravel()
            if g.size < 3 or not np.isfinite(g).all() or np.any(np.diff(g) <= 0):
                raise InputError("pipeline option grid_cm1 must be at least 3 finite, strictly increasing wavenumbers in cm⁻¹.")
            if self.step_cm1 is not None:
                raise InputError("pipeline: give either grid_cm1 or step_cm1, not both; both fix the output grid.")
            set_("grid_cm1", tuple(float(v) for v in g))
        nz = "none" if self.normalize in (None, False) else str(self.normalize).lower()
        if nz not in NORMALIZATIONS:
            raise InputError(f"pipeline option normalize = {self.normalize!r} is unknown; use 'area', 'max' or 'none'.")
        set_("normalize", nz)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    # ------------------------------------------------------------------ config
    @property
    def lower_limit_cm1(self) -> float | None:
        """The crop's lower limit: max(omega_min_cm1, notch_cm1) (None if neither is set)."""
        vals = [v for v in (self.omega_min_cm1, self.notch_cm1) if v is not None]
        return max(vals) if vals else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every option (``from_dict`` inverts it)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "grid_cm1" and v is not None:
                v = list(v)
            elif f.name == "baseline_params":
                v = _json_safe(dict(v))
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Preprocessing:
        """Build from a mapping such as :meth:`to_dict` gives; unknown keys raise InputError."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise InputError(f"pipeline: expected a mapping of options, got {type(d).__name__}; give e.g. {{'baseline': 'arpls'}}.")
        names = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise InputError(f"pipeline: unknown option '{unknown[0]}'; known options are: {', '.join(sorted(names))}.")
        kw = dict(d)
        if kw.get("baseline_params") is None:
            kw.pop("baseline_params", None)
        return cls(**kw)

    # ------------------------------------------------------------------ apply
    def apply(self, spectrum: RamanSpectrum, origin: str = "auto") -> RamanSpectrum:
        """Run the pipeline on ``spectrum``; returns a new :class:`RamanSpectrum`.

        ``origin``: ``"measured"`` (despiked, noise estimated, not broadened),
        ``"simulated"`` (broadened, not despiked) or ``"auto"``:
        ``metadata["origin"] == "measured"`` (as set by :func:`read_spectrum`)
        means measured, anything else simulated. What was done is recorded in
        ``metadata["preprocessing"]`` (options, steps, spike counts, the
        baselines and their grid, normalisation factors, notes).
        """
        w = self._begin(spectrum, origin)
        self._rest(w)
        return self._finish(w)

    def _origin(self, spectrum: RamanSpectrum, origin: str) -> str:
        if origin not in ("auto", "measured", "simulated"):
            raise InputError(f"origin = {origin!r} is unknown; use 'measured', 'simulated' or 'auto'.")
        if origin == "auto":
            return "measured" if str(spectrum.metadata.get("origin", "")) == "measured" else "simulated"
        return origin

    def _begin(self, spectrum: RamanSpectrum, origin: str) -> _Work:
        if not isinstance(spectrum, RamanSpectrum):
            raise InputError(f"Preprocessing.apply: expected a RamanSpectrum, got {type(spectrum).__name__}; read files with read_spectrum.")
        org = self._origin(spectrum, origin)
        src = str(spectrum.metadata.get("source", "The spectrum"))
        if spectrum.representation == "unknown":
            raise InputError(
                f"{src}: the representation of the spectrum is unknown; read it with read_spectrum (measured counts are "
                "'stokes') or pass representation= to RamanSpectrum.from_csv."
            )
        s = spectrum
        # 0. alignment
        if s.representation == "classical":
            T = s.temperature_K if math.isfinite(s.temperature_K) else self.temperature_K
            T = _require_T(T, src)
            s = s.as_representation("stokes", temperature_K=T)
            aligned = "classical → stokes"
        else:
            aligned = None
        w = _Work.from_spectrum(s)
        w.log["origin"] = org
        w.log["input_representation"] = spectrum.representation
        if aligned:
            w.log["steps"].append(f"alignment ({aligned})")
        for k, v in w.y.items():
            if not np.isfinite(v).all() and org == "measured":
                raise InputError(f"{src}: channel '{k}' has NaN or infinite values; fix the file before preprocessing.")
        # 1. despiking and noise (measured only)
        if org == "measured":
            if self.despike:
                counts = {}
                for k in list(w.y):
                    fixed, mask, n = whitaker_hayes_despike(
                        w.y[k], self.despike_threshold, self.despike_window, self.despike_max_width
                    )
                    v = w.var[k]
                    if np.isfinite(v).all():
                        for i, idx in _replacement_weights(mask, self.despike_window):
                            if idx.size:
                                v[i] = float(np.sum(v[idx])) / idx.size**2
                    w.y[k] = fixed
                    counts[k] = n
                    w.log.setdefault("n_points_replaced", {})[k] = int(np.count_nonzero(mask))
                w.log["n_spikes"] = counts
                w.log["steps"].append("despike")
            if self.estimate_noise:
                for k in list(w.y):
                    if not np.isfinite(w.var[k]).any():
                        if w.f.size >= self.noise_window:
                            sig = estimate_noise(w.y[k], self.noise_window)
                            w.var[k] = sig**2
                            w.log.setdefault("noise_estimate", {})[k] = {
                                "method": f"Savitzky-Golay residual (window {self.noise_window}, order 3), running median",
                                "median_sigma": float(np.median(sig)),
                            }
                        else:
                            w.log["notes"].append(f"channel {k}: too few points to estimate the noise")
        return w

    def _rest(self, w: _Work) -> None:
        org = w.log["origin"]
        src = w.source
        # 2. instrument broadening (simulated only)
        if org == "simulated" and self.broadening is not None:
            _broaden(w, float(self.broadening_fwhm_cm1), self.broadening)
            w.log["steps"].append(f"broadening ({self.broadening}, FWHM {self.broadening_fwhm_cm1:g} cm^-1)")
        # 3. crop
        lo, hi = self.lower_limit_cm1, self.omega_max_cm1
        if lo is not None or hi is not None:
            keep = np.ones(w.f.size, bool)
            if lo is not None:
                keep &= w.f >= lo
            if hi is not None:
                keep &= w.f <= hi
            if np.count_nonzero(keep) < 3:
                raise InputError(
                    f"{src}: fewer than 3 points lie in the crop range [{lo if lo is not None else w.f[0]:g}, "
                    f"{hi if hi is not None else w.f[-1]:g}] cm⁻¹ (the spectrum spans {w.f[0]:g} … {w.f[-1]:g}); "
                    "widen omega_min_cm1/omega_max_cm1/notch_cm1."
                )
            w.select(keep)
            w.log["steps"].append("crop")
        for k, v in w.y.items():
            if not np.isfinite(v).all():
                i = int(np.argmax(~np.isfinite(v)))
                raise InputError(
                    f"{src}: channel '{k}' is NaN at {w.f[i]:g} cm⁻¹ after cropping (a reduced spectrum converted at ν̃ = 0?); "
                    "set notch_cm1 or omega_min_cm1 above it."
                )
        # 3b. resampling to the common grid (before the point-based baseline and smoothing)
        grid = None
        if self.grid_cm1 is not None:
            grid = np.asarray(self.grid_cm1, dtype=float)
        elif self.step_cm1 is not None:
            st = self.step_cm1
            g0 = math.ceil(w.f[0] / st - 1e-9) * st
            n = int(math.floor((w.f[-1] - g0) / st + 1e-9)) + 1
            grid = g0 + st * np.arange(max(n, 0))
        if grid is not None:
            inside = (grid >= w.f[0] - 1e-9) & (grid <= w.f[-1] + 1e-9)
            if np.count_nonzero(~inside):
                w.log["notes"].append(f"{int(np.count_nonzero(~inside))} grid point(s) outside the spectrum dropped")
            grid = np.clip(grid[inside], w.f[0], w.f[-1])
            if grid.size < 3:
                raise InputError(f"{src}: fewer than 3 points of the resampling grid lie inside the spectrum ({w.f[0]:g} … {w.f[-1]:g} cm⁻¹); change grid_cm1/step_cm1.")
            w.interpolate(grid)
            w.log["steps"].append("resample")
        # 4. baseline
        if self.baseline is not None:
            from pybaselines import Baseline

            fitter = Baseline(x_data=w.f)
            method = getattr(fitter, self.baseline)
            bls = {}
            for k in list(w.y):
                try:
                    bl, _ = method(w.y[k], **self.baseline_params)
                except TypeError as exc:
                    raise InputError(
                        f"pipeline: pybaselines '{self.baseline}' rejected baseline_params {self.baseline_params} ({exc}); "
                        "check the parameter names in the pybaselines documentation."
                    ) from None
                except (ValueError, np.linalg.LinAlgError) as exc:
                    raise InputError(f"{src}: baseline '{self.baseline}' failed on channel '{k}' ({exc}); change baseline_params or the method.") from None
                bl = np.asarray(bl, dtype=float)
                w.y[k] = w.y[k] - bl
                if w.segs is not None and k in w.segs:
                    w.segs[k] = w.segs[k] - bl
                bls[k] = bl
            w.log["baseline"] = {"method": self.baseline, "frequency_cm1": w.f.copy(), "baseline": bls}
            w.log["steps"].append(f"baseline ({self.baseline})")
        # 5. Bose reduction
        if self.bose:
            if w.rep == "reduced":
                w.log["notes"].append("already reduced: Bose reduction skipped")
            else:
                T = w.T if math.isfinite(w.T) else self.temperature_K
                T = _require_T(T, src)
                fac = _bose_factor(w.f, T)
                lam = w.meta.get("laser_wavelength_nm")
                if self.laser_factor and lam is not None:
                    fac = fac / laser_factor(w.f, float(lam))
                    w.log["laser_factor_divided"] = float(lam)
                elif self.laser_factor:
                    w.log["notes"].append("no laser wavelength known: the laser (nu^4) factor was not divided out")
                w.scale({k: fac for k in w.y})
                w.rep, w.T = "reduced", T
                w.log["steps"].append(f"bose reduction (T = {T:g} K)")
        # 6. smoothing
        if self.smoothing_window is not None:
            from scipy.ndimage import convolve1d
            from scipy.signal import savgol_coeffs, savgol_filter

            if w.f.size < self.smoothing_window:
                raise InputError(f"{src}: {w.f.size} points are fewer than smoothing_window = {self.smoothing_window}; use a smaller window.")
            c2 = savgol_coeffs(self.smoothing_window, self.smoothing_order) ** 2
            for k in list(w.y):
                w.y[k] = savgol_filter(w.y[k], self.smoothing_window, self.smoothing_order, mode="interp")
                v = w.var[k]
                w.var[k] = convolve1d(v, c2, mode="nearest") if np.isfinite(v).all() else v
            if w.segs is not None:
                w.segs = {k: savgol_filter(v, self.smoothing_window, self.smoothing_order, mode="interp", axis=-1) for k, v in w.segs.items()}
            w.log["steps"].append(f"savitzky-golay ({self.smoothing_window}, {self.smoothing_order})")
        # 7. normalisation
        if self.normalize != "none":
            scales = {}
            for k, v in w.y.items():
                if self.normalize == "area":
                    a = self.lower_limit_cm1 if self.lower_limit_cm1 is not None else w.f[0]
                    b = self.omega_max_cm1 if self.omega_max_cm1 is not None else w.f[-1]
                    sc = float(trapezoid_weights(w.f, a, b) @ v)
                else:
                    sc = float(np.max(v))
                if not (math.isfinite(sc) and sc > 0):
                    raise InputError(
                        f"{src}: channel '{k}' has a {'non-positive area' if self.normalize == 'area' else 'non-positive maximum'} "
                        f"({sc:.3g}) after preprocessing, so it cannot be normalised; check the baseline step or use normalize='none'."
                    )
                scales[k] = sc
            w.scale({k: 1.0 / sc for k, sc in scales.items()})
            w.log["normalization_scale"] = scales
            w.log["steps"].append(f"normalize ({self.normalize})")

    def _finish(self, w: _Work) -> RamanSpectrum:
        rec = dict(w.log)
        rec["pipeline"] = self.to_dict()
        w.meta["preprocessing"] = rec
        w.meta["quantum_correction"] = w.meta.get("quantum_correction", "harmonic")
        return w.to_spectrum()


# =========================================================================== comparison


def _select_channel(s: RamanSpectrum, name: str) -> RamanSpectrum:
    y = s.channel(name)
    errs = {name: s.errors[name]} if name in s.errors else {}
    segs = None
    if s.segment_spectra is not None and name in s.segment_spectra:
        segs = {name: s.segment_spectra[name]}
    return RamanSpectrum(s.frequency_cm1, {name: y}, errs, s.temperature_K, s.representation, s.metadata, segs)


def _default_channel(s: RamanSpectrum, preferred: str | None, role: str) -> str:
    if preferred is not None:
        if preferred in s.channels:
            return preferred
        if len(s.channels) == 1:
            return s.channel_names[0]
        raise InputError(f"The {role} spectrum has no channel '{preferred}'; choose one of: {', '.join(s.channels)}.")
    for c in ("unpolarized", "intensity"):
        if c in s.channels:
            return c
    if len(s.channels) == 1:
        return s.channel_names[0]
    raise InputError(f"The {role} spectrum has several channels ({', '.join(s.channels)}); choose one with channel=.")


def _nan_none(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    return v


@dataclass(frozen=True, eq=False)
class ComparisonResult:
    """Measured and simulated spectra after the same preprocessing, and their F_LF.

    ``experiment``/``simulation`` are the processed spectra (one channel each,
    the same representation); ``experiment_flf``/``simulation_flf`` the
    :class:`~ionraman.fingerprint.FLFResult` of each over the same
    [``omega_min_cm1``, ``omega_max_cm1``] with cut-off ``cutoff_cm1``.
    """

    experiment: RamanSpectrum
    simulation: RamanSpectrum
    experiment_flf: FLFResult
    simulation_flf: FLFResult
    cutoff_cm1: float
    omega_min_cm1: float
    omega_max_cm1: float
    pipeline: Preprocessing
    experiment_channel: str
    simulation_channel: str
    warnings: tuple[str, ...] = ()

    @property
    def delta_F_LF(self) -> tuple[float, float]:
        """F_LF(experiment) − F_LF(simulation) and its error.

        The errors are added in quadrature; a missing (NaN) error counts as 0,
        so the result is NaN only when neither side has one.
        """
        d = self.experiment_flf.value - self.simulation_flf.value
        errs = [e for e in (self.experiment_flf.error, self.simulation_flf.error) if math.isfinite(e)]
        return d, (math.hypot(*errs) if errs else float("nan"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN → None)."""

        def side(s: RamanSpectrum, r: FLFResult, ch: str) -> dict[str, Any]:
            pre = s.metadata.get("preprocessing", {})
            return {
                "F_LF": _nan_none(r.value),
                "F_LF_err": _nan_none(r.error),
                "error_method": r.error_method,
                "channel": ch,
                "source": s.metadata.get("source"),
                "temperature_K": _nan_none(s.temperature_K),
                "n_spikes_removed": sum(pre.get("n_spikes", {}).values()) if pre.get("n_spikes") else 0,
                "steps": list(pre.get("steps", [])),
                "notes": list(pre.get("notes", [])),
            }

        d, e = self.delta_F_LF
        return {
            "experiment": side(self.experiment, self.experiment_flf, self.experiment_channel),
            "simulation": side(self.simulation, self.simulation_flf, self.simulation_channel),
            "difference": {"F_LF": _nan_none(d), "F_LF_err": _nan_none(e)},
            "cutoff_cm1": float(self.cutoff_cm1),
            "omega_min_cm1": float(self.omega_min_cm1),
            "omega_max_cm1": float(self.omega_max_cm1),
            "representation": self.experiment.representation,
            "pipeline": self.pipeline.to_dict(),
            "warnings": list(self.warnings),
        }

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Overlay both processed spectra, each normalised to unit area over [ω_min, ω_max]; save to ``path``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        lo, hi, cut = self.omega_min_cm1, self.omega_max_cm1, self.cutoff_cm1
        fig = Figure(figsize=(6.4, 4.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        for s, ch, r, label, style in (
            (self.experiment, self.experiment_channel, self.experiment_flf, "experiment", "-"),
            (self.simulation, self.simulation_channel, self.simulation_flf, "simulation", "--"),
        ):
            f = s.frequency_cm1
            y = s.channel(ch)
            e = s.error(ch)
            area = float(trapezoid_weights(f, lo, hi) @ y)
            scale = area if math.isfinite(area) and area > 0 else 1.0
            sel = (f >= lo) & (f <= hi)
            err = f" ± {r.error:.2g}" if math.isfinite(r.error) else ""
            (line,) = ax.plot(f[sel], y[sel] / scale, style, lw=1.3, label=f"{label}: F_LF = {r.value:.3f}{err}")
            if np.isfinite(e[sel]).any():
                ax.fill_between(f[sel], (y[sel] - e[sel]) / scale, (y[sel] + e[sel]) / scale, color=line.get_color(), alpha=0.2, lw=0)
        ax.axvline(cut, color="0.4", lw=0.8, ls=":")
        ax.axvspan(lo, cut, color="0.85", alpha=0.4, lw=0)
        ax.axhline(0.0, color="0.7", lw=0.6)
        ax.set_xlim(lo, hi)
        ax.set_xlabel("Raman shift (cm$^{-1}$)")
        rep = self.experiment.representation
        name = {"reduced": "Reduced intensity χ''", "stokes": "Stokes intensity"}.get(rep, "Intensity")
        ax.set_ylabel(f"{name} (unit area, per cm$^{{-1}}$)")
        ax.set_title(title or f"F_LF: ∫{lo:g}–{cut:g} / ∫{lo:g}–{hi:g} cm$^{{-1}}$")
        ax.legend(frameon=False)
        fig.tight_layout()
        return save_figure(fig, path)


def compare(
    experiment: RamanSpectrum | str | os.PathLike,
    simulation: RamanSpectrum | str | os.PathLike,
    pipeline: Preprocessing | Mapping[str, Any] | None = None,
    cutoff_cm1: float = DEFAULT_CUTOFF_CM1,
    channel: str | None = None,
    *,
    experiment_channel: str | None = None,
    temperature_K: float | None = None,
    n_bootstrap: int = 64,
    seed: int = 0,
) -> ComparisonResult:
    """Preprocess a measured and a simulated spectrum identically and compare their F_LF.

    Parameters
    ----------
    experiment : measured spectrum (``origin="measured"``: despiked, noise estimated) or a path for :func:`read_spectrum`.
    simulation : simulated spectrum (any representation; broadened if the pipeline says so) or a path.
    pipeline : a :class:`Preprocessing` (or its ``to_dict`` form); default ``Preprocessing()``.
    cutoff_cm1 : ω_c of F_LF (default 100 cm⁻¹).
    channel : channel of the simulation (default ``"unpolarized"``, else the only one).
    experiment_channel : channel of the experiment (default: ``channel`` if present, else the only one).
    temperature_K : measurement temperature for a path ``experiment`` (or one without a temperature).
    n_bootstrap : replicas for the error of the experimental F_LF (0: first-order propagation only).
    seed : random seed of the bootstrap.

    Both F_LF are :func:`~ionraman.fingerprint.low_frequency_fraction` of the
    processed spectra over the same range: ω_min = max(pipeline lower limit or
    5 cm⁻¹, both spectra's first points), ω_max = min(pipeline ω_max or 800 cm⁻¹,
    both spectra's last points). Errors: simulation — jackknife over Welch
    segments (carried through the pipeline) or propagated per-point errors;
    experiment — a parametric bootstrap: ``n_bootstrap`` copies of the
    despiked spectrum with Gaussian noise of the estimated (or given) σ(ν̃)
    added go through the rest of the pipeline (baseline fit included), and the
    standard deviation of their F_LF is the error (first-order propagation of
    the per-point errors when ``n_bootstrap = 0``).
    """
    if isinstance(experiment, (str, os.PathLike)):
        experiment = read_spectrum(experiment, temperature_K=temperature_K)
    elif temperature_K is not None and not math.isfinite(experiment.temperature_K):
        experiment = replace(experiment, temperature_K=float(temperature_K))
    if isinstance(simulation, (str, os.PathLike)):
        simulation = read_spectrum(simulation)
    if not isinstance(experiment, RamanSpectrum) or not isinstance(simulation, RamanSpectrum):
        raise InputError("compare: experiment and simulation must be RamanSpectrum objects or spectrum file paths.")
    if pipeline is None:
        pipe = Preprocessing()
    elif isinstance(pipeline, Preprocessing):
        pipe = pipeline
    else:
        pipe = Preprocessing.from_dict(pipeline)
    try:
        cut = float(cutoff_cm1)
    except (TypeError, ValueError):
        cut = float("nan")
    if not (math.isfinite(cut) and cut > 0):
        raise InputError(f"cutoff_cm1 = {cutoff_cm1!r} must be a positive wavenumber in cm⁻¹, e.g. 100.")
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0 or n_bootstrap == 1:
        raise InputError(f"n_bootstrap = {n_bootstrap!r} must be 0 or an integer ≥ 2 (e.g. 64).")
    sim_ch = _default_channel(simulation, channel, "simulated")
    exp_ch = _default_channel(experiment, experiment_channel if experiment_channel is not None else channel, "measured")
    exp1 = _select_channel(experiment, exp_ch)
    sim1 = _select_channel(simulation, sim_ch)

    w_exp = pipe._begin(exp1, "measured")
    w_exp0 = w_exp.copy()
    pipe._rest(w_exp)
    exp_p = pipe._finish(w_exp)
    sim_p = pipe.apply(sim1, origin="simulated")
    if exp_p.representation != sim_p.representation:
        raise InputError(
            f"compare: after preprocessing the experiment is '{exp_p.representation}' but the simulation "
            f"'{sim_p.representation}'; give a simulation that is not already reduced, or set bose=True."
        )
    lo0 = pipe.lower_limit_cm1 if pipe.lower_limit_cm1 is not None else DEFAULT_OMEGA_MIN_CM1
    lo = max(lo0, float(exp_p.frequency_cm1[0]), float(sim_p.frequency_cm1[0]))
    hi = min([pipe.omega_max_cm1 if pipe.omega_max_cm1 is not None else DEFAULT_OMEGA_MAX_CM1,
              float(exp_p.frequency_cm1[-1]), float(sim_p.frequency_cm1[-1])])
    if not lo < cut < hi:
        raise InputError(
            f"compare: cutoff_cm1 = {cut:g} must lie inside the common range {lo:g} … {hi:g} cm⁻¹ of the two "
            "processed spectra; choose another cut-off or widen the spectra/crop."
        )
    flf_sim = low_frequency_fraction(sim_p, sim_ch, None, cut, lo, hi)
    flf_exp = low_frequency_fraction(exp_p, exp_ch, None, cut, lo, hi)
    if n_bootstrap:
        sig = np.sqrt(w_exp0.var[exp_ch])
        if np.isfinite(sig).all():
            rng = np.random.default_rng(seed)
            vals = []
            for _ in range(int(n_bootstrap)):
                wb = w_exp0.copy()
                wb.y[exp_ch] = wb.y[exp_ch] + rng.normal(0.0, 1.0, sig.size) * sig
                wb.segs = None
                try:
                    pipe._rest(wb)
                    sb = wb.to_spectrum()
                    vals.append(low_frequency_fraction(sb, exp_ch, None, cut, lo, hi).value)
                except InputError:
                    continue
            if len(vals) >= 2:
                src = exp_p.metadata.get("preprocessing", {}).get("noise_estimate") and "estimated" or "given"
                flf_exp = replace(
                    flf_exp,
                    error=float(np.std(vals, ddof=1)),
                    error_method=f"parametric bootstrap over {len(vals)} noise replicas ({src} per-point noise)",
                )
    warns = []
    Te, Ts = exp_p.temperature_K, sim_p.temperature_K
    if math.isfinite(Te) and math.isfinite(Ts) and abs(Te - Ts) > 1.0:
        warns.append(f"the experiment was measured at {Te:g} K but the simulation is at {Ts:g} K")
    if pipe.grid_cm1 is None and pipe.step_cm1 is None and (pipe.baseline is not None or pipe.smoothing_window is not None):
        he, hs = float(np.median(np.diff(exp_p.frequency_cm1))), float(np.median(np.diff(sim_p.frequency_cm1)))
        if abs(he - hs) > 0.01 * max(he, hs):
            warns.append(
                f"the experiment ({he:.3g} cm^-1) and the simulation ({hs:.3g} cm^-1) have different grid steps, and the "
                "baseline and smoothing parameters act on points; set step_cm1 for an identical treatment"
            )
    for side, s in (("experiment", exp_p), ("simulation", sim_p)):
        for wmsg in s.metadata.get("warnings", []) or []:
            warns.append(f"{side}: {wmsg}")
    return ComparisonResult(exp_p, sim_p, flf_exp, flf_sim, cut, lo, hi, pipe, exp_ch, sim_ch, tuple(warns))
