"""Ranking table and a self-contained HTML report (figures embedded as PNG).

The report opens with one line per candidate and its verdict, then the ranking
table, F_LF versus the mobile-ion D across all candidates with the Spearman rank
correlation, and per candidate the MD Raman spectra at each temperature with the
harmonic spectrum overlaid, the MSD and (with ≥ 2 temperatures) the Arrhenius
plot. Cell sizes and run lengths are printed so the reader knows what was run.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .spec import CampaignSpec
from .store import ResultsStore

__all__ = ["write_report", "ranking_rows", "summary_json"]


def _trusted_width(fp: dict[str, Any]) -> float | None:
    """The central-peak HWHM (cm⁻¹), or None when its fit failed or was flagged (e.g. a width beyond
    the fit window, which a Lorentzian fit returns for a spectrum without a central peak)."""
    return None if fp.get("central_peak_message") else fp.get("central_peak_width_cm1")


def _mobile(rec: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    sp = rec.get("transport", {}).get("species", {})
    mob = rec.get("mobile_ion")
    if mob in sp:
        return mob, sp[mob]
    if sp:
        k = next(iter(sp))
        return k, sp[k]
    return None, {}


def ranking_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (candidate, T), sorted by F_LF (highest first; invalid runs last)."""
    rows = []
    for r in records:
        mob, d = _mobile(r)
        fp = r.get("fingerprint", {})
        row = {
            "candidate": r["candidate"],
            "formula": r.get("formula"),
            "n_atoms": r.get("n_atoms"),
            "temperature_K": r["temperature_K"],
            "F_LF": fp.get("F_LF"),
            "F_LF_err": fp.get("F_LF_err"),
            "central_peak_width_cm1": _trusted_width(fp),
            "mobile_ion": mob,
            "D_cm2_s": d.get("D_cm2_s"),
            "D_err_cm2_s": d.get("D_err_cm2_s"),
            "sigma_S_cm": d.get("sigma_S_cm"),
            "regime": d.get("regime"),
            "integrity_ok": r.get("integrity_ok"),
            "verdict": r.get("verdict"),
        }
        rows.append(row)

    def key(row: dict[str, Any]) -> tuple:
        f = row["F_LF"] if isinstance(row["F_LF"], (int, float)) else -1.0
        return (row["verdict"] == "invalid", -f)

    return sorted(rows, key=key)


def summary_json(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``results`` list of ``ionraman screen --json``."""
    out = []
    for r in sorted(records, key=lambda r: (r["candidate"], r["temperature_K"])):
        fp = r.get("fingerprint", {})
        out.append(
            {
                "candidate": r["candidate"],
                "temperature_K": r["temperature_K"],
                "F_LF": fp.get("F_LF"),
                "F_LF_err": fp.get("F_LF_err"),
                "D_cm2_s": {sp: d.get("D_cm2_s") for sp, d in r.get("transport", {}).get("species", {}).items()},
                "D_err_cm2_s": {sp: d.get("D_err_cm2_s") for sp, d in r.get("transport", {}).get("species", {}).items()},
                "central_peak_width_cm1": _trusted_width(fp),
                "central_peak_message": fp.get("central_peak_message"),
                "integrity_ok": r.get("integrity_ok"),
                "verdict": r.get("verdict"),
            }
        )
    return out


def candidate_verdicts(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per candidate: the verdict at its highest valid temperature (all temperatures listed)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["candidate"], []).append(r)
    out = {}
    for name, rs in by.items():
        rs = sorted(rs, key=lambda r: r["temperature_K"])
        valid = [r for r in rs if r.get("verdict") != "invalid"]
        top = valid[-1] if valid else rs[-1]
        out[name] = {
            "verdict": top.get("verdict"),
            "at_K": top["temperature_K"],
            "F_LF": top.get("fingerprint", {}).get("F_LF"),
            "by_T": {f"{r['temperature_K']:g}": r.get("verdict") for r in rs},
        }
    return out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(w: float = 5.5, h: float = 3.6) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, float)):
        return format(x, spec)
    return html.escape(str(x))


def _flf_vs_d(rows: list[dict[str, Any]]) -> tuple[str | None, float | None, float | None]:
    pts = [(r["D_cm2_s"], r["F_LF"], r["candidate"], r["verdict"]) for r in rows
           if isinstance(r["D_cm2_s"], (int, float)) and isinstance(r["F_LF"], (int, float))]
    if len(pts) < 2:
        return None, None, None
    from scipy.stats import spearmanr

    D = np.array([max(p[0], 1e-9) for p in pts])
    F = np.array([p[1] for p in pts])
    rho, pval = spearmanr(D, F) if len(pts) >= 3 else (float("nan"), float("nan"))
    fig = _figure()
    ax = fig.add_subplot(111)
    colors = {"liquid-like": "tab:red", "hopping": "tab:orange", "immobile": "tab:blue", "invalid": "tab:gray"}
    for d, f, name, v in pts:
        ax.scatter(max(d, 1e-9), f, color=colors.get(v, "k"), s=30)
        ax.annotate(name, (max(d, 1e-9), f), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("tracer D of the mobile ion (cm²/s)")
    ax.set_ylabel("F_LF (reduced unpolarized, < cutoff)")
    ax.set_title(f"Spearman ρ = {rho:.2f} (n = {len(pts)})" if math.isfinite(rho) else f"n = {len(pts)}")
    return _png(fig), float(rho), float(pval)


def _spectra_figure(name: str, recs: list[dict[str, Any]], harmonic: dict[str, Any] | None, cutoff: float) -> str:
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot(111)
    for r in sorted(recs, key=lambda r: r["temperature_K"]):
        s = r["spectrum"]
        f = np.array(s["frequency_cm1"])
        y = np.array(s["unpolarized_reduced"], dtype=float)
        ax.plot(f, y, label=f"MD {r['temperature_K']:g} K")
    if harmonic:
        f = np.array(harmonic["spectrum"]["frequency_cm1"])
        y = np.array(harmonic["spectrum"]["unpolarized_reduced"], dtype=float)
        ax.plot(f, y, "k--", lw=1, label=f"harmonic ({harmonic['temperature_K']:g} K)")
    ax.axvline(cutoff, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("Raman shift (cm⁻¹)")
    ax.set_ylabel("reduced intensity χ'' (Å⁶·cm)")
    ax.set_title(f"{name}: unpolarized, reduced")
    ax.legend(fontsize=7)
    ax.set_xlim(left=0)
    return _png(fig)


def _arrhenius_figure(recs: list[dict[str, Any]]) -> str | None:
    pts = []
    for r in recs:
        _, d = _mobile(r)
        if isinstance(d.get("D_cm2_s"), (int, float)) and d["D_cm2_s"] > 0:
            pts.append((r["temperature_K"], d["D_cm2_s"], d.get("D_err_cm2_s") or 0.0))
    if len(pts) < 2:
        return None
    fig = _figure(4.5, 3.4)
    ax = fig.add_subplot(111)
    T = np.array([p[0] for p in pts])
    D = np.array([p[1] for p in pts])
    E = np.array([p[2] for p in pts])
    ax.errorbar(1000 / T, D, yerr=np.minimum(E, 0.99 * D), fmt="o")
    ax.set_yscale("log")
    ax.set_xlabel("1000/T (1/K)")
    ax.set_ylabel("D (cm²/s)")
    return _png(fig)


def _embed_file(path: Path) -> str | None:
    if path.exists():
        return base64.b64encode(path.read_bytes()).decode()
    return None


def write_report(store: ResultsStore, spec: CampaignSpec, out: Path, calibration: Any = None) -> tuple[Path, Path]:
    """Write ``ranking.csv`` and ``report.html`` into ``out`` (atomically); return their paths."""
    records = store.records("md")
    harmonics = {r["candidate"]: r for r in store.records("harmonic")}
    failed = store.records(kind=None, status="failed")
    rows = ranking_rows(records)
    rank_path = out / "ranking.csv"
    fields = ["candidate", "formula", "n_atoms", "temperature_K", "F_LF", "F_LF_err", "central_peak_width_cm1", "mobile_ion",
              "D_cm2_s", "D_err_cm2_s", "sigma_S_cm", "regime", "integrity_ok", "verdict"]
    tmp = rank_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow({k: row.get(k) for k in fields})
    os.replace(tmp, rank_path)

    verdicts = candidate_verdicts(records)
    scatter, rho, pval = _flf_vs_d(rows)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>ionraman campaign {html.escape(spec.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "th{background:#eee}.v-liquid-like{color:#b00;font-weight:bold}.v-hopping{color:#c60}.v-immobile{color:#036}"
        ".v-invalid{color:#777}img{max-width:100%}</style></head><body>",
        f"<h1>Campaign “{html.escape(spec.name)}”</h1>",
        "<h2>Verdicts</h2><ul>",
    ]
    for name, v in verdicts.items():
        parts.append(
            f"<li><b>{html.escape(name)}</b>: <span class='v-{v['verdict']}'>{v['verdict']}</span> at {v['at_K']:g} K "
            f"(F_LF = {_fmt(v['F_LF'])}; by temperature: {html.escape(str(v['by_T']))})</li>"
        )
    parts.append("</ul>")
    thr = f"calibrated threshold F_LF ≥ {calibration.threshold_F_LF:.3g}" if calibration is not None else "uncalibrated default threshold F_LF ≥ 0.2"
    parts.append(
        "<p>Verdicts: <i>invalid</i> = the framework broke (chemical-integrity monitor), <i>immobile</i> = no measurable "
        f"diffusion, otherwise <i>liquid-like</i> or <i>hopping</i> by the {thr} (docs/physics/raman.md).</p>"
    )
    parts.append("<h2>Ranking</h2><table><tr>" + "".join(f"<th>{h}</th>" for h in fields) + "</tr>")
    for row in rows:
        cells = []
        for k in fields:
            v = row.get(k)
            cls = f" class='v-{v}'" if k == "verdict" else ""
            cells.append(f"<td{cls}>{_fmt(v)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    if scatter:
        parts.append("<h2>F_LF versus diffusion</h2>")
        parts.append(f"<p>Spearman rank correlation ρ = {_fmt(rho, '.2f')} (p = {_fmt(pval, '.2g')}).</p>")
        parts.append(f"<img src='data:image/png;base64,{scatter}'>")
    parts.append("<h2>Candidates</h2>")
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["candidate"], []).append(r)
    for name, recs in by.items():
        r0 = recs[0]
        parts.append(f"<h3>{html.escape(name)} — {html.escape(str(r0.get('formula')))}, {r0.get('n_atoms')} atoms, "
                     f"supercell {html.escape(str(r0.get('supercell')))}</h3>")
        bad = [r for r in recs if not r.get("integrity_ok", True)]
        for r in bad:
            parts.append(f"<p class='v-invalid'>{r['temperature_K']:g} K: {html.escape(str(r.get('integrity', {}).get('reason', 'framework broke')))}</p>")
        parts.append(f"<img src='data:image/png;base64,{_spectra_figure(name, recs, harmonics.get(name), spec.fingerprint.cutoff_cm1)}'>")
        arr = _arrhenius_figure(recs)
        if arr:
            parts.append(f"<img src='data:image/png;base64,{arr}'>")
        for r in sorted(recs, key=lambda r: r["temperature_K"]):
            art = r.get("artifacts", {}).get("msd_plot")
            if art:
                b64 = _embed_file(out / art["path"])
                if b64:
                    parts.append(f"<figure style='display:inline-block;width:32%'><img src='data:image/png;base64,{b64}'>"
                                 f"<figcaption>MSD at {r['temperature_K']:g} K</figcaption></figure>")
    if failed:
        parts.append("<h2>Failed tasks</h2><ul>")
        for f in failed:
            parts.append(f"<li>{html.escape(f['candidate'])} {f['kind']} {f['temperature_K']:g} K: {html.escape(f['reason'])}</li>")
        parts.append("</ul>")
    md = spec.md
    parts.append(
        "<h2>What was run</h2>"
        f"<p>Force field {html.escape(md.forcefield)}; MD {md.time_ps:g} ps production after {md.equilibrate_ps:g} ps "
        f"equilibration, time step {md.timestep_fs:g} fs, a frame every {md.sample_every} steps, Bussi thermostat "
        f"τ = {md.thermostat_tau_fs:g} fs; temperatures {', '.join(f'{t:g}' for t in spec.temperatures_K)} K; "
        f"polarizability model '{html.escape(spec.spectrum.polarizability_model)}'; spectra from {spec.spectrum.segments} "
        f"Welch segments; F_LF cutoff {spec.fingerprint.cutoff_cm1:g} cm⁻¹ in the {spec.fingerprint.representation} "
        f"{spec.fingerprint.channel} spectrum over {spec.fingerprint.omega_min_cm1:g}–{spec.fingerprint.omega_max_cm1:g} cm⁻¹.</p>"
    )
    models = sorted({json.dumps(r.get("polarizability_model"), sort_keys=True, default=str) for r in records})
    parts.append("<p>Polarizability models used: " + "; ".join(html.escape(m) for m in models) + "</p>")
    parts.append("</body></html>")
    rep_path = out / "report.html"
    tmp = rep_path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, rep_path)
    return rep_path, rank_path

