"""Throughput of the λ-SOAP polarizability model (prints JSON).

Trains a model on a few SiO2 QE frames (../shared/data/polarizability), then
predicts α for a 144-atom SiO2 cell (2×1×1 supercell of the 72-atom frames; the
nearest stoichiometric size to 128 atoms) and for the 72-atom cells, timing the
featomic features and the linear regression separately.

    .venv/bin/python benchmarks/polarizability_throughput.py [--frames 64] [--train 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from ionraman import __version__
from ionraman.polarizability.dataset import read_labelled
from ionraman.polarizability.model import PolarizabilityModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "polarizability" / "SiO2_qe_pbe_finite_field.xyz"


def _time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--train", type=int, default=20, help="training frames")
    ap.add_argument("--frames", type=int, default=64, help="structures predicted per timing")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    frames = read_labelled(args.data)
    t0 = time.perf_counter()
    model = PolarizabilityModel(batch_size=args.batch_size).fit(frames[: args.train])
    fit_s = time.perf_counter() - t0

    results = {}
    for name, reps in (("72_atoms", (1, 1, 1)), ("144_atoms", (2, 1, 1))):
        cells = [frames[args.train + k % (len(frames) - args.train)].repeat(reps) for k in range(args.frames)]
        model.predict(cells[:2])  # warm-up (CG coefficients, neighbour-list set-up)
        feats = model.featurize(cells)
        t_feat = _time(lambda c=cells: model.featurize(c))
        t_reg = _time(lambda c=cells, f=feats: model.predict_parts(c, features=f), repeat=5)
        t_one = _time(lambda c=cells: model.predict(c[:1]), repeat=5)
        t_all = _time(lambda c=cells: model.predict(c))
        n_atoms = len(cells[0])
        results[name] = {
            "n_atoms": n_atoms,
            "n_structures": len(cells),
            "frames_per_s": len(cells) / t_all,
            "atoms_per_s": len(cells) * n_atoms / t_all,
            "features_s_per_frame": t_feat / len(cells),
            "regression_s_per_frame": t_reg / len(cells),
            "single_frame_latency_s": t_one,
        }
    out = {
        "benchmark": "polarizability_throughput",
        "ionraman_version": __version__,
        "model": {
            "settings": model.settings_.to_dict(),
            "n_features_lambda0": int(model.w0_.size),
            "n_features_lambda2": int(model.w2_.size),
            "n_train": args.train,
            "fit_s": fit_s,
        },
        "results": results,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
    }
    import featomic

    out["model"]["featomic_version"] = featomic.__version__
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
