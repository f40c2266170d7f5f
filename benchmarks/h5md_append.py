#!/usr/bin/env python
"""Cost of writing MD frames to H5MD: one frame at a time against blocks of 50.

`run_md` buffers frames and writes each block just before the checkpoint that counts it
(docs/physics/md.md, "Checkpoints and resume"). This measures both ways of writing the
same frames of a 128-atom cell in one process and prints one JSON object: ms per frame
for each, and their ratio (timings on a shared machine are noisy; the ratio is the result).

Usage: python benchmarks/h5md_append.py [--atoms 128] [--frames 500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ionraman.trajectory import H5MDWriter, read_h5md


def write(path: Path, frames: np.ndarray, cell: np.ndarray, buffer_frames: int) -> float:
    """Seconds to append ``frames`` (Å) one by one with the given buffer, closing included."""
    numbers = np.full(frames.shape[1], 11)
    t0 = time.perf_counter()
    with H5MDWriter(path, numbers=numbers, mode="w", buffer_frames=buffer_frames) as w:
        for i, pos in enumerate(frames):
            w.append(step=5 * i, time_fs=10.0 * i, unwrapped_positions=pos, cell=cell,
                     velocities_A_per_fs=np.zeros_like(pos), temperature_K=700.0, potential_energy_eV=-1.0)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atoms", type=int, default=128)
    ap.add_argument("--frames", type=int, default=500)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cell = np.eye(3) * 14.4
    frames = np.cumsum(rng.normal(0, 0.05, (args.frames, args.atoms, 3)), axis=0) + rng.uniform(0, 14.4, (args.atoms, 3))
    with tempfile.TemporaryDirectory() as d:
        t1 = write(Path(d) / "single.h5", frames, cell, 1)
        t50 = write(Path(d) / "block.h5", frames, cell, 50)
        a, b = read_h5md(Path(d) / "single.h5"), read_h5md(Path(d) / "block.h5")
        same = bool(np.array_equal(a.positions, b.positions))
    print(json.dumps({"n_atoms": args.atoms, "n_frames": args.frames, "ms_per_frame_single": 1e3 * t1 / args.frames,
                      "ms_per_frame_block50": 1e3 * t50 / args.frames, "ratio": t1 / t50, "identical_files": same}, indent=1))


if __name__ == "__main__":
    main()
