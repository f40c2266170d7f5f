#!/usr/bin/env python
"""MD throughput of the default force field at 128 and 432 atoms.

Prints one JSON object: for each cell size the atom-steps per second and ns/day
of the full driver (Bussi NVT, guards, H5MD output), after a warm-up. Timings on
shared machines are noisy; compare figures from the same run.

Usage: python benchmarks/md_throughput.py [--forcefield chgnet] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from ionraman.forcefields import get_forcefield
from ionraman.md import MDConfig, run_md
from ionraman.structures import load_structure


def measure(ff, structure: str, supercell: str, steps: int, tmp: Path) -> dict:
    loaded = load_structure(structure, supercell=supercell)
    atoms = loaded.atoms
    # warm-up: graph construction, allocator, first force call
    cfg_w = MDConfig(temperature_K=600, time_ps=2 * 2.0 / 1000, equilibrate_ps=0, sample_every=1)
    run_md(atoms, ff, cfg_w, tmp / f"warm{len(atoms)}.h5")
    cfg = MDConfig(temperature_K=600, time_ps=steps * 2.0 / 1000, equilibrate_ps=0, sample_every=5)
    t0 = time.perf_counter()
    r = run_md(atoms, ff, cfg, tmp / f"b{len(atoms)}.h5")
    wall = time.perf_counter() - t0
    return {
        "structure": structure,
        "supercell": supercell,
        "n_atoms": len(atoms),
        "steps": cfg.production_steps,
        "wall_s": round(wall, 3),
        "s_per_step": round(wall / cfg.production_steps, 4),
        "atom_steps_per_s": round(cfg.production_steps * len(atoms) / wall, 1),
        "ns_per_day": round(cfg.production_steps * cfg.timestep_fs * 1e-6 / (wall / 86400), 4),
        "driver_ns_per_day": round(r.ns_per_day, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--forcefield", default="chgnet")
    ap.add_argument("--structure", default="Na3SbS4-cubic")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    ff = get_forcefield(args.forcefield)
    with tempfile.TemporaryDirectory() as d:
        results = [measure(ff, args.structure, sc, args.steps, Path(d)) for sc in ("2x2x2", "3x3x3")]
    print(json.dumps({"forcefield": ff.version, "device": ff.info.get("device", "cpu"),
                      "machine": platform.processor() or platform.machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
