"""Calibration: computed low-frequency fingerprints against measured transport.

Joins the fingerprints of a screening results store with measured room-temperature
conductivities (the shipped table ``data/calibration/ionic_conductors.csv``, seeded
from the literature, or a user CSV) and fits

1. log₁₀ σ = a + b·F_LF by least squares, with a bootstrap (resampling materials)
   confidence interval of the slope b;
2. a logistic classifier P(fast | F_LF) = 1/(1 + exp(−(β₀ + β₁ F_LF))) for
   "fast conductor" (σ_RT ≥ 10⁻⁴ S/cm by default; scikit-learn), its
   leave-one-out ROC AUC with a bootstrap interval, and the decision threshold
   F_LF* = −β₀/β₁ where P = ½.

The calibration file (JSON) is read by ``ionraman screen --calibration`` to print
verdicts with the probability of being a fast conductor. Equations and choices:
docs/physics/calibration.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._io import save_figure
from .errors import InputError

__all__ = ["Calibration", "MeasuredValue", "read_measured", "calibrate", "join_fingerprints", "MIN_POINTS"]

#: fewest materials for which a fit is attempted (and both classes need ≥ 2)
MIN_POINTS = 4


@dataclass(frozen=True)
class MeasuredValue:
    """A measured conductivity (S/cm) at a temperature (K) with its source."""

    candidate: str
    sigma_S_cm: float
    temperature_K: float
    source: str
    mechanism: str = ""


def read_measured(path: str | Path | None = None, include_unlinked: bool = False) -> dict[str, MeasuredValue]:
    """Measured σ by ionraman candidate name, from a CSV with columns ``candidate``,
    ``sigma_S_per_cm`` (``sigma_T_K``, ``source`` and ``mechanism_in_literature`` optional).
    Default: the shipped literature table. Rows without σ are skipped, and so are rows
    without a candidate unless ``include_unlinked`` (then keyed ``material (phase)``)."""
    if path is None:
        text = (resources.files("ionraman") / "data" / "calibration" / "ionic_conductors.csv").read_text()
        label = "shipped calibration table"
    else:
        p = Path(path)
        if not p.exists():
            raise InputError(f"--measured {p}: no such file; give a CSV with columns candidate,sigma_S_per_cm[,sigma_T_K,source].")
        text, label = p.read_text(), str(p)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if reader.fieldnames is None or "candidate" not in reader.fieldnames or "sigma_S_per_cm" not in reader.fieldnames:
        raise InputError(f"{label}: needs the columns 'candidate' and 'sigma_S_per_cm' (S/cm); found {reader.fieldnames}.")
    out: dict[str, MeasuredValue] = {}
    for n, row in enumerate(reader, start=2):
        name = (row.get("candidate") or "").strip()
        if not name and include_unlinked and row.get("material"):
            name = f"{row['material']} ({row.get('phase', '')})"
        s = (row.get("sigma_S_per_cm") or "").strip()
        if not name or not s:
            continue
        try:
            sigma = float(s)
            T = float(row.get("sigma_T_K") or 298.0)
        except ValueError:
            raise InputError(f"{label} line {n}: sigma_S_per_cm '{s}' or sigma_T_K is not a number.") from None
        if not sigma > 0:
            raise InputError(f"{label} line {n}: sigma_S_per_cm = {sigma} must be positive (S/cm).")
        out[name] = MeasuredValue(name, sigma, T, row.get("source", ""), row.get("mechanism_in_literature", ""))
    return out


def join_fingerprints(records: list[dict[str, Any]], measured: dict[str, MeasuredValue], temperature_K: float | None = None) -> list[dict[str, Any]]:
    """One point per candidate with a measured σ: F_LF at ``temperature_K`` (default: its lowest
    simulated temperature), skipping runs whose framework broke."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("integrity_ok", True) and r.get("fingerprint", {}).get("F_LF") is not None:
            by.setdefault(r["candidate"], []).append(r)
    pts = []
    for name, rs in by.items():
        if name not in measured:
            continue
        if temperature_K is not None:
            rs = [r for r in rs if abs(r["temperature_K"] - temperature_K) < 1e-6]
            if not rs:
                continue
        r = min(rs, key=lambda r: r["temperature_K"])
        m = measured[name]
        pts.append({"candidate": name, "F_LF": float(r["fingerprint"]["F_LF"]), "F_LF_err": r["fingerprint"].get("F_LF_err"),
                    "temperature_K": r["temperature_K"], "sigma_S_cm": m.sigma_S_cm, "sigma_T_K": m.temperature_K,
                    "source": m.source})
    return pts


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration: thresholds and fits with their uncertainties."""

    n: int
    fast_sigma_S_cm: float
    threshold_F_LF: float
    auc_loo: float
    auc_ci: tuple[float, float]
    slope: float
    slope_ci: tuple[float, float]
    intercept: float
    logistic_coef: float
    logistic_intercept: float
    points: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1

    def probability_fast(self, F_LF: float) -> float:
        """P(σ_RT ≥ fast_sigma_S_cm | F_LF) from the logistic fit."""
        z = self.logistic_intercept + self.logistic_coef * float(F_LF)
        return 1.0 / (1.0 + math.exp(-z))

    def predicted_log10_sigma(self, F_LF: float) -> float:
        return self.intercept + self.slope * float(F_LF)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["auc_ci"] = list(self.auc_ci)
        d["slope_ci"] = list(self.slope_ci)
        return d

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        p = Path(path)
        if not p.exists():
            raise InputError(f"--calibration {p}: no such file; make one with `ionraman calibrate RESULTS -o {p.name}`.")
        try:
            d = json.loads(p.read_text())
            if d.get("version") != 1:
                raise InputError(f"{p}: calibration format version {d.get('version')} is not supported (expected 1).")
            d["auc_ci"] = tuple(d["auc_ci"])
            d["slope_ci"] = tuple(d["slope_ci"])
            return cls(**d)
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise InputError(f"{p}: not a calibration file from `ionraman calibrate` ({exc}).") from None


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def _loo_scores(x: np.ndarray, y: np.ndarray, C: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    s = np.empty(len(x))
    for i in range(len(x)):
        m = np.ones(len(x), bool)
        m[i] = False
        if len(set(y[m])) < 2:  # this fold has one class: its prediction is that class's rate
            s[i] = float(y[m].mean())
            continue
        clf = LogisticRegression(C=C, class_weight="balanced").fit(x[m, None], y[m])
        s[i] = clf.predict_proba(x[i : i + 1, None])[0, 1]
    return s


def calibrate(
    points: list[dict[str, Any]],
    fast_sigma_S_cm: float = 1e-4,
    n_bootstrap: int = 2000,
    seed: int = 0,
    C: float = 1000.0,
) -> Calibration:
    """Fit the calibration from joined points (``F_LF``, ``sigma_S_cm`` per material).

    ``C`` is scikit-learn's inverse L2 regularisation of the logistic fit (large:
    nearly unregularised, so the threshold is the data's). Classes are weighted
    inversely to their size (``class_weight="balanced"``): literature tables hold
    far more fast than slow conductors, and an unweighted fit would push the
    threshold towards the slow ones. The bootstrap resamples materials with
    replacement (seeded).
    """
    n = len(points)
    x = np.array([p["F_LF"] for p in points], dtype=float)
    logs = np.log10([p["sigma_S_cm"] for p in points])
    y = (np.array([p["sigma_S_cm"] for p in points]) >= fast_sigma_S_cm).astype(int)
    if n < MIN_POINTS or y.sum() < 2 or (n - y.sum()) < 2:
        raise InputError(
            f"calibration needs at least {MIN_POINTS} materials with both fingerprints and measured σ, including ≥ 2 fast "
            f"(σ ≥ {fast_sigma_S_cm:g} S/cm) and ≥ 2 slow ones; found {n} ({int(y.sum())} fast). Screen more of the "
            "candidates in the calibration table (or pass --measured with your own values)."
        )
    if np.ptp(x) == 0:
        raise InputError("calibration: every material has the same F_LF, so nothing can be fitted; check the spectra.")
    from sklearn.linear_model import LogisticRegression

    slope, intercept = np.polyfit(x, logs, 1)
    clf = LogisticRegression(C=C, class_weight="balanced").fit(x[:, None], y)
    b1, b0 = float(clf.coef_[0, 0]), float(clf.intercept_[0])
    threshold = -b0 / b1 if b1 != 0 else float("nan")
    auc = _auc(y, _loo_scores(x, y, C))
    rng = np.random.default_rng(seed)
    slopes, aucs = [], []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        if np.ptp(x[idx]) > 0:
            slopes.append(np.polyfit(x[idx], logs[idx], 1)[0])
        if 0 < y[idx].sum() < n:
            aucs.append(_auc(y[idx], x[idx]))  # rank AUC of F_LF itself in the resample
    slope_ci = tuple(float(v) for v in np.percentile(slopes, [2.5, 97.5]))
    auc_ci = tuple(float(v) for v in np.percentile(aucs, [2.5, 97.5])) if aucs else (float("nan"), float("nan"))
    return Calibration(
        n=n,
        fast_sigma_S_cm=fast_sigma_S_cm,
        threshold_F_LF=float(threshold),
        auc_loo=auc,
        auc_ci=auc_ci,  # type: ignore[arg-type]
        slope=float(slope),
        slope_ci=slope_ci,  # type: ignore[arg-type]
        intercept=float(intercept),
        logistic_coef=b1,
        logistic_intercept=b0,
        points=points,
    )


def plot_calibration(cal: Calibration, path: str | Path) -> Path:
    """log₁₀ σ versus F_LF with the fit, the fast threshold and the logistic curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    x = np.array([p["F_LF"] for p in cal.points])
    s = np.array([p["sigma_S_cm"] for p in cal.points])
    fast = s >= cal.fast_sigma_S_cm
    ax.scatter(x[fast], s[fast], color="tab:red", label="fast (measured)")
    ax.scatter(x[~fast], s[~fast], color="tab:blue", label="slow (measured)")
    for p in cal.points:
        ax.annotate(p["candidate"], (p["F_LF"], p["sigma_S_cm"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    xx = np.linspace(0, max(1e-3, x.max() * 1.1), 100)
    ax.plot(xx, 10 ** (cal.intercept + cal.slope * xx), "k-", lw=1, label=f"fit: slope {cal.slope:.2f}")
    ax.axhline(cal.fast_sigma_S_cm, color="0.5", ls=":")
    if math.isfinite(cal.threshold_F_LF):
        ax.axvline(cal.threshold_F_LF, color="tab:red", ls="--", lw=1, label=f"threshold F_LF = {cal.threshold_F_LF:.3f}")
    ax.set_yscale("log")
    ax.set_xlabel("F_LF")
    ax.set_ylabel("measured σ_RT (S/cm)")
    ax.set_title(f"LOO ROC AUC = {cal.auc_loo:.2f} [{cal.auc_ci[0]:.2f}, {cal.auc_ci[1]:.2f}]")
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=110, bbox_inches="tight")
