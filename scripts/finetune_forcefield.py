#!/usr/bin/env python
"""Active learning of a DFT-fine-tuned CHGNet for one family of built-in candidates (issue #10).

Loop, resumable at every stage (each stage's output is a file; a rerun skips what exists):

  round r:
    1. fine-tune CHGNet on every CP2K-labelled frame in TRAINING/*.xyz
       (80/20 split, seeded; ionraman.finetune.finetune_chgnet)    → WORK/round<r>.pt
    2. MD with that model at the highest temperature in every cell  → WORK/round<r>_<cell>.h5
       (integrity monitor on; the run that breaks shows where the model is wrong)
    3. if every run kept its framework intact: stop;
       else farthest-point-sample N new frames from those runs (ionraman select),
       label them with CP2K energies/forces and add them to TRAINING  → next round.

Usage:
  python scripts/finetune_forcefield.py --name Na3SbS4-cubic --rounds 3 --temperature 900 \
      [--time 3] [--new 16] [--ship]

--ship copies the final model to src/ionraman/data/forcefields/<name>.pt, where
`--forcefield finetuned:<name>` finds it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ionraman.ffvalidation import label_energy_forces
from ionraman.finetune import dft_frames, finetune_chgnet, split_frames
from ionraman.forcefields import get_forcefield
from ionraman.integrity import check_trajectory
from ionraman.md import MDConfig, checkpoint_path, run_md
from ionraman.polarizability.select import select_from_trajectories
from ionraman.structures import load_structure
from ionraman.trajectory import read_h5md

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "src" / "ionraman" / "data" / "forcefields" / "training"

# cells sampled in step 2: (label, structure, supercell, substitution)
CELLS = {
    "Na3SbS4-cubic": [("stoich", "Na3SbS4-cubic", "1x1x1", None), ("W0.25", "Na3SbS4-cubic", "1x2x1", "Sb:W:0.25")],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="Na3SbS4-cubic")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=900.0)
    ap.add_argument("--time", type=float, default=3.0, help="MD per cell and round, ps")
    ap.add_argument("--new", type=int, default=16, help="frames added per round")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--work", default="runs/finetune")
    ap.add_argument("--ship", action="store_true")
    args = ap.parse_args()
    work = Path(args.work) / args.name
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.json"
    history = json.loads(log.read_text()) if log.exists() else []
    model = None
    for r in range(args.rounds):
        files = sorted(TRAINING.glob(f"{args.name}*.xyz"))
        frames = dft_frames(files)
        model = work / f"round{r}.pt"
        if not model.exists():
            train, val = split_frames(frames)
            res = finetune_chgnet(train, model, val=val, epochs=args.epochs)
            entry = {"round": r, "n_frames": len(frames), **{k: res.to_dict()[k] for k in ("before", "after", "wall_time_s")}}
            history = [h for h in history if h.get("round") != r] + [entry]
            log.write_text(json.dumps(history, indent=2))
            print(json.dumps(entry), flush=True)
        ff = get_forcefield(f"finetuned:{model}")
        trajs, intact = [], True
        for label, struct, sc, sub in CELLS[args.name]:
            loaded = load_structure(struct, supercell=sc, substitutions=sub, seed=0)
            path = work / f"round{r}_{label}.h5"
            if not path.exists() or checkpoint_path(path).exists():
                cfg = MDConfig(temperature_K=args.temperature, time_ps=args.time, equilibrate_ps=0.5, sample_every=5, seed=r)
                run_md(loaded.atoms, ff, cfg, path, resume=True, metadata=loaded.describe(), integrity="flag")
            rep = check_trajectory(read_h5md(path))
            print(f"round {r} {label}: integrity ok={rep.ok} {rep.reason}", flush=True)
            intact &= rep.ok
            trajs.append((label, path, rep.ok))
        hist = next((h for h in history if h.get("round") == r), None)
        if hist is None:
            hist = {"round": r}
            history.append(hist)
        hist["integrity"] = {lab: ok for lab, _, ok in trajs}
        log.write_text(json.dumps(history, indent=2))
        if intact:
            print(f"round {r}: every framework intact at {args.temperature:g} K", flush=True)
            break
        for label, path, _ok in trajs:
            new = select_from_trajectories([str(path)], args.new // len(trajs), every=2, seed=r)
            out = TRAINING / f"{args.name}{'' if label == 'stoich' else '-' + label}.xyz"
            for a in new:
                a.info["ionraman_candidate"] = args.name
                a.info["active_learning_round"] = r
            # Monkhorst-Pack mesh per cell size (Γ alone is off by ~270 meV/Å in these cells)
            label_energy_forces(new, out, workdir=work / "cp2k_runs", executor="serial", progress=False, kpoints="auto")
    if args.ship and model is not None:
        if not intact:
            raise SystemExit(f"not shipping {model}: a framework still broke at {args.temperature:g} K; run more rounds")
        dest_dir = ROOT / "src" / "ionraman" / "data" / "forcefields"
        shutil.copy(model, dest_dir / f"{args.name}.pt")
        index = dest_dir / "index.json"
        entries = [e for e in (json.loads(index.read_text()) if index.exists() else []) if e["name"] != args.name]
        entries.append({"name": args.name, "file": f"{args.name}.pt",
                        "candidates": sorted({c[1] for c in CELLS[args.name]} | {args.name, f"{args.name}-W0.125"}),
                        "training": sorted(f"training/{f.name}" for f in TRAINING.glob(f"{args.name}*.xyz")),
                        "history": history})
        index.write_text(json.dumps(entries, indent=2))
        print(f"shipped {model} → {dest_dir / (args.name + '.pt')} (index.json updated)")


if __name__ == "__main__":
    main()
