#!/usr/bin/env python
"""Convergence of CP2K polarizability labels, above all of their *fluctuations* (issue #8).

Raman intensities come from how α changes with the atoms' positions, not from its absolute
value, so for a few MD snapshots of one cell this script computes α with several settings
and compares, per setting, against a reference setting:

- cell size / Brillouin-zone sampling: each snapshot is tiled (e.g. 1x1x1, 1x1x2, 2x2x2).
  The tiled cell holds the same periodic configuration, so α(tiled)/n_tiles is the same
  label computed with a denser effective k-mesh (Γ of the supercell = the folded mesh of
  the snapshot cell). CP2K's linear response runs at Γ only, so tiling is how its labels
  are converged;
- basis family (DZVP-MOLOPT vs TZV2P-MOLOPT), plane-wave cutoff;
- Na semicore (GTH q9) against Na q1.

Per setting: the mean isotropic α per snapshot cell (Å³) and its ratio to the reference;
the relative error of the fluctuations δα_i = α_i − ⟨α⟩ (isotropic and traceless-anisotropic
parts separately); the best scale factor c between them and the relative error left after
scaling (a pure scale does not change a normalised spectrum); wall time per run.
Formulas: docs/physics/reference-labels.md, "Convergence".

Each CP2K result is cached in --work/results.json (resumable; a rerun only computes what is
missing); a failed run is recorded with its reason and not retried unless --retry-failed.

Usage: python benchmarks/polarizability_convergence.py SNAPSHOTS.xyz --work DIR
           [--tilings 1x1x1,2x2x2] [--basis DZVP-MOLOPT,TZV2P-MOLOPT] [--cutoffs 300,400]
           [--semicore] [--max-snapshots 4] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import ase.io
import numpy as np

from ionraman.polarizability.reference_cp2k import CP2KError, CP2KSettings, run_cp2k

BASE = {"tiling": "1x1x1", "basis": "DZVP-MOLOPT", "cutoff": 300.0, "semicore": False}


def _tiles(text: str) -> tuple[int, int, int]:
    t = tuple(int(x) for x in text.lower().split("x"))
    if len(t) != 3 or min(t) < 1:
        raise SystemExit(f"--tilings: '{text}' is not a repeat like 2x2x2.")
    return t  # type: ignore[return-value]


def setting_key(s: dict) -> str:
    return f"{s['tiling']}|{s['basis']}|{s['cutoff']:g}|{'q9' if s['semicore'] else 'q1'}"


def cp2k_settings(s: dict) -> CP2KSettings:
    kw: dict = {"basis_family": s["basis"], "cutoff_ry": s["cutoff"], "forces": False}
    if s["semicore"]:
        kw["valence"] = {"Na": 9}
    return CP2KSettings(**kw)


def parts(alpha: np.ndarray) -> tuple[float, np.ndarray]:
    """Isotropic part tr(α)/3 and traceless anisotropic part α − tr(α)/3·1 (Å³)."""
    iso = float(np.trace(alpha)) / 3.0
    return iso, alpha - iso * np.eye(3)


def compare(test: np.ndarray, ref: np.ndarray) -> dict:
    """Fluctuation errors of per-snapshot tensors ``test`` against ``ref`` (both (n, 3, 3), Å³)."""
    out: dict = {}
    for name, f in (("iso", lambda a: np.array([parts(x)[0] for x in a])), ("aniso", lambda a: np.array([parts(x)[1] for x in a]))):
        t, r = f(test), f(ref)
        dt, dr = t - t.mean(axis=0), r - r.mean(axis=0)
        norm = float(np.sqrt((dr**2).sum()))
        c = float((dt * dr).sum() / max((dt**2).sum(), 1e-300))
        out[f"fluct_rel_err_{name}"] = float(np.sqrt(((dt - dr) ** 2).sum())) / norm
        out[f"scale_{name}"] = c
        out[f"fluct_rel_err_after_scale_{name}"] = float(np.sqrt(((c * dt - dr) ** 2).sum())) / norm
        out[f"fluct_rms_{name}_A3"] = float(np.sqrt((dt**2).mean()))
    iso_t = np.mean([parts(x)[0] for x in test])
    iso_r = np.mean([parts(x)[0] for x in ref])
    out["mean_iso_ratio"] = float(iso_t / iso_r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("snapshots", type=Path, help="extxyz of MD snapshots of one cell")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--tilings", default="1x1x1,2x2x2")
    ap.add_argument("--basis", default="DZVP-MOLOPT")
    ap.add_argument("--cutoffs", default="300")
    ap.add_argument("--semicore", action="store_true", help="also Na GTH q9 at the base setting")
    ap.add_argument("--max-snapshots", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=3600.0, help="per CP2K run, s")
    ap.add_argument("--retry-failed", action="store_true")
    args = ap.parse_args()

    frames = ase.io.read(args.snapshots, index=":")[: args.max_snapshots]
    if len(frames) < 2:
        raise SystemExit(f"{args.snapshots}: {len(frames)} snapshot(s); fluctuations need at least 2 (3–5 recommended).")
    settings = [dict(BASE)]
    settings += [dict(BASE, tiling=t) for t in args.tilings.split(",") if t != BASE["tiling"]]
    settings += [dict(BASE, basis=b) for b in args.basis.split(",") if b != BASE["basis"]]
    settings += [dict(BASE, cutoff=float(c)) for c in args.cutoffs.split(",") if float(c) != BASE["cutoff"]]
    if args.semicore:
        settings.append(dict(BASE, semicore=True))

    args.work.mkdir(parents=True, exist_ok=True)
    cache_path = args.work / "results.json"
    cache: dict = json.loads(cache_path.read_text()) if cache_path.exists() else {}

    def save() -> None:
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, cache_path)

    # cheap settings first, so a cut-off run has the comparisons that matter most
    order = sorted(settings, key=lambda s: int(np.prod(_tiles(s["tiling"]))))
    for s in order:
        for i, atoms in enumerate(frames):
            key = f"{i}|{setting_key(s)}"
            if key in cache and ("alpha_A3" in cache[key] or not args.retry_failed):
                continue
            if not args.retry_failed and any("error" in cache.get(f"{j}|{setting_key(s)}", {}) for j in range(len(frames))):
                continue  # a setting that failed once (e.g. diverging linear response) is not repeated
            reps = _tiles(s["tiling"])
            big = atoms.repeat(reps)
            run_dir = args.work / "runs" / key.replace("|", "_")
            run_dir.mkdir(parents=True, exist_ok=True)
            print(f"[{time.strftime('%H:%M:%S')}] snapshot {i} {setting_key(s)} ({len(big)} atoms)", file=sys.stderr, flush=True)
            try:
                r = run_cp2k(big, cp2k_settings(s), run_dir, timeout_s=args.timeout)
                cache[key] = {"alpha_A3": (r.polarizability / np.prod(reps)).tolist(), "wall_time_s": r.wall_time_s,
                              "n_atoms": len(big), "cp2k_version": r.cp2k_version}
            except CP2KError as exc:
                cache[key] = {"error": str(exc)[:500], "n_atoms": len(big)}
            save()

    report: dict = {"snapshots": str(args.snapshots), "n_snapshots": len(frames), "n_atoms": len(frames[0]),
                    "formula": frames[0].get_chemical_formula(), "settings": {}}
    got: dict[str, np.ndarray] = {}
    for s in settings:
        k = setting_key(s)
        rows = [cache.get(f"{i}|{k}", {}) for i in range(len(frames))]
        entry: dict = {"n_atoms_per_run": rows[0].get("n_atoms"),
                       "wall_time_s": float(np.mean([r["wall_time_s"] for r in rows if "wall_time_s" in r])) if any("wall_time_s" in r for r in rows) else None}
        errs = [r["error"] for r in rows if "error" in r]
        if errs:
            entry["error"] = errs[0]
        if all("alpha_A3" in r for r in rows):
            a = np.array([r["alpha_A3"] for r in rows])
            got[k] = a
            entry["mean_iso_A3"] = float(np.mean([parts(x)[0] for x in a]))
        report["settings"][k] = entry

    def ref_of(axis: str, values: list) -> str | None:
        cands = [setting_key(dict(BASE, **{axis: v})) for v in values]
        cands = [c for c in cands if c in got]
        return cands[-1] if cands else None

    refs = {
        "tiling": ref_of("tiling", sorted({s["tiling"] for s in settings}, key=lambda t: np.prod(_tiles(t)))),
        "basis": ref_of("basis", [b for b in ["DZVP-MOLOPT", "TZVP-MOLOPT", "TZV2P-MOLOPT"] if any(s["basis"] == b for s in settings)]),
        "cutoff": ref_of("cutoff", sorted({s["cutoff"] for s in settings})),
    }
    report["references"] = refs
    for s in settings:
        k = setting_key(s)
        if k not in got:
            continue
        for axis, r in refs.items():
            if r and r != k and all(s[a] == BASE[a] for a in BASE if a != axis) and (axis != "tiling" or not s["semicore"]):
                report["settings"][k][f"vs_{axis}_reference"] = compare(got[k], got[r])
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
