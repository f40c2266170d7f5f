#!/usr/bin/env python
"""Na tracer diffusion in W-doped against stoichiometric cubic Na3SbS4 (issue #9 "done when").

Runs NVT MD of the same length at the same temperature for
  - Na3SbS4-cubic, 2x2x2 (Na48Sb16S64), and
  - Na3SbS4-cubic --substitute Sb:W:0.125 --seed 1 (Na46Sb14W2S64: 2 W on Sb, 2 Na vacancies),
then prints one JSON object with D(Na) ± its kinisi uncertainty (cm²/s), their ratio with a
propagated error, the number of Na site-to-site hops, and the integrity result of each run
(a run whose framework broke is reported, and its D is not trustworthy).

Each run resumes from its checkpoint; results are kept in --work.

Usage: python benchmarks/doping_diffusion.py [--forcefield finetuned:Na3SbS4-cubic]
           [--temperature 700] [--time 10] [--equilibrate 1] [--work runs/doping]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ionraman import transport
from ionraman.forcefields import get_forcefield, resolve_forcefield
from ionraman.integrity import check_trajectory
from ionraman.md import MDConfig, checkpoint_path, run_md
from ionraman.structures import load_structure
from ionraman.trajectory import read_h5md


def one(label: str, loaded, ff, cfg: MDConfig, work: Path) -> dict:
    path = work / f"{label}_{cfg.temperature_K:g}K.h5"
    if not path.exists() or checkpoint_path(path).exists():
        run_md(loaded.atoms, ff, cfg, path, resume=True, metadata=loaded.describe(), integrity="flag")
    traj = read_h5md(path)
    na = transport.analyse(traj, species="Na").to_dict()["species"]["Na"]
    rep = check_trajectory(traj)
    return {"formula": loaded.describe().get("formula") or str(loaded.atoms.symbols), "n_atoms": len(loaded.atoms),
            "D_cm2_s": na["D_cm2_s"], "D_err_cm2_s": na["D_err_cm2_s"], "n_hops": na["n_hops"],
            "away_from_site_fraction": na["away_from_site_fraction"],
            "integrity_ok": rep.ok, "integrity": rep.reason, "anion_anion_bonds_max": rep.anion_anion_bonds_max,
            "framework_coordination_min": rep.framework_coordination_min, "trajectory": str(path)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forcefield", default="auto")
    ap.add_argument("--temperature", type=float, default=700.0)
    ap.add_argument("--time", type=float, default=10.0, help="production per run, ps (5 ps gave a 1.9 sigma difference, 10 ps 3.8 sigma: docs/physics/defects.md)")
    ap.add_argument("--equilibrate", type=float, default=1.0)
    ap.add_argument("--work", default="runs/doping")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ff = get_forcefield(resolve_forcefield(args.forcefield, "Na3SbS4-cubic"))
    cfg = MDConfig(temperature_K=args.temperature, time_ps=args.time, equilibrate_ps=args.equilibrate, sample_every=5, seed=1)
    stoich = load_structure("Na3SbS4-cubic", supercell="2x2x2", seed=1)
    doped = load_structure("Na3SbS4-cubic", supercell="2x2x2", substitutions="Sb:W:0.125", seed=1)
    tag = args.forcefield.replace(":", "_").replace("/", "_")
    res = {"forcefield": ff.name, "temperature_K": args.temperature, "time_ps": args.time,
           "stoichiometric": one(f"stoich_{tag}", stoich, ff, cfg, work),
           "doped": one(f"doped_{tag}", doped, ff, cfg, work)}
    d, s = res["doped"], res["stoichiometric"]
    Dd, Ds = d["D_cm2_s"] or 0.0, s["D_cm2_s"] or 0.0
    ed, es = d["D_err_cm2_s"] or 0.0, s["D_err_cm2_s"] or 0.0
    if Dd > 0 and Ds > 0:
        res["D_ratio"] = Dd / Ds
        res["D_ratio_err"] = Dd / Ds * math.hypot(ed / Dd, es / Ds)
    # "measurably faster": the difference exceeds twice its combined standard uncertainty,
    # and only counts when both frameworks stayed intact (a broken framework's D is not Na transport)
    res["difference_sigma"] = (Dd - Ds) / math.hypot(ed, es) if (ed or es) else None
    res["both_frameworks_intact"] = bool(d["integrity_ok"] and s["integrity_ok"])
    res["doped_faster"] = bool(res["both_frameworks_intact"] and res["difference_sigma"] is not None and res["difference_sigma"] > 2)
    print(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
