#!/usr/bin/env python
"""Add CP2K-labelled MD snapshots to a shipped dataset (issue #8), idempotently.

``ionraman label`` writes runs/…/NAME.xyz as labels finish; this copies every labelled frame
not yet in ``src/ionraman/data/datasets/DATASET.xyz`` (same ``label_hash``) into it, adding
``ionraman_candidate`` and ``snapshot_method`` to each frame's info, and writes the exact CP2K
input of the dataset's first MD frame to ``datasets/cp2k_inputs/DATASET.inp`` (kept for
reproduction; ``ionraman label`` on any shipped frame reuses the frame's recorded settings).
Writes are atomic (write_labelled), so it can run while the labeller is still adding frames.

Usage: python scripts/ship_labels.py runs/pol8/Na3SbS4-cubic.xyz --dataset Na3SbS4-cubic
           --candidate Na3SbS4-cubic --forcefield finetuned:Na3SbS4-cubic
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ionraman.polarizability.dataset import read_labelled, write_labelled
from ionraman.polarizability.reference_cp2k import settings_of_frame, write_input

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "src" / "ionraman" / "data" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("labels", type=Path, help="extxyz written by `ionraman label --engine cp2k`")
    ap.add_argument("--dataset", required=True, help="shipped dataset name (file stem)")
    ap.add_argument("--candidate", required=True, help="built-in candidate the frames belong to")
    ap.add_argument("--forcefield", required=True, help="force field of the MD the snapshots came from")
    args = ap.parse_args()

    new = read_labelled(args.labels)
    target = DATASETS / f"{args.dataset}.xyz"
    have = read_labelled(target) if target.exists() else []
    known = {a.info.get("label_hash") for a in have}
    added = []
    for a in new:
        if a.info.get("polarizability_source") != "cp2k" or a.info.get("label_hash") in known:
            continue
        a.info["ionraman_candidate"] = args.candidate
        a.info["snapshot_method"] = f"ML-MD ({args.forcefield}) + farthest-point sampling (ionraman select)"
        added.append(a)
    if added:
        write_labelled(target, have + added)
        inputs = DATASETS / "cp2k_inputs"
        inp = inputs / f"{args.dataset}.inp"
        if not inp.exists():
            first = added[0]
            s = settings_of_frame(first)
            tmp = inputs / f".{args.dataset}"
            p = write_input(first, s, tmp, project=args.dataset)
            inp.write_text(f"! exact CP2K input of the frame with label_hash {first.info['label_hash']}\n" + p.read_text())
            for f in tmp.iterdir():
                f.unlink()
            tmp.rmdir()
    print(f"{target.name}: {len(have)} + {len(added)} = {len(have) + len(added)} labels")


if __name__ == "__main__":
    main()
