#!/usr/bin/env python
"""Raman spectrum from model-predicted α(t) against direct CP2K α(t) on one trajectory (issue #8).

1. NVT MD of cubic Na3SbS4 (16-atom cell) with the shipped force field (``auto``), frames every
   ``--every`` steps — a trajectory none of the polarizability training frames came from;
2. α(t) on every frame from CP2K (the shipped datasets' settings; resumable: labels are kept
   in --work/alpha_cp2k.xyz as they finish) and from the shipped tensor model (``auto``);
3. the powder Raman spectra of both series with identical settings, and how they compare:
   the time-domain error of the fluctuations δα(t) (iso/aniso relative RMSE), the spectral
   overlap ⟨I_model, I_DFT⟩/(‖I_model‖‖I_DFT‖) per channel on 100–600 cm⁻¹, the ratio of
   integrated intensities, and the strongest peaks of both in the SbS₄ stretching region
   next to the measured bands (≈ 360, 380, 410 cm⁻¹; Hayashi et al., Nat. Commun. 10, 5266 (2019)).

With ``--partial`` the comparison uses the labelled prefix of the trajectory (e.g. while the
CP2K labels are still running). Prints one JSON object; writes --work/spectra.png.

Usage: python benchmarks/raman_model_vs_dft.py [--temperature 300] [--time 2] [--every 8]
           [--work runs/raman_dft] [--label/--no-label] [--partial]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ionraman.forcefields import get_forcefield, resolve_forcefield
from ionraman.md import MDConfig, checkpoint_path, run_md
from ionraman.polarizability.dataset import get_alpha, read_labelled
from ionraman.polarizability.model import polarizability_errors
from ionraman.polarizability.reference_cp2k import CP2KSettings, label_frames, label_hash
from ionraman.polarizability.registry import resolve_model
from ionraman.raman import PolarizabilitySeries, compute_spectrum
from ionraman.structures import load_structure
from ionraman.trajectory import read_h5md

MEASURED_CM1 = (360.0, 380.0, 410.0)  # Na3SbS4 SbS4 stretching bands, Hayashi et al. 2019
CHANNELS = ("unpolarized", "isotropic", "anisotropic")


def peaks(nu: np.ndarray, y: np.ndarray, lo: float, hi: float, n: int = 3) -> list[float]:
    """Positions (cm⁻¹) of the ``n`` highest local maxima of ``y`` in [lo, hi], by height."""
    from scipy.signal import find_peaks

    m = (nu >= lo) & (nu <= hi)
    idx, _ = find_peaks(y[m])
    best = idx[np.argsort(y[m][idx])[::-1][:n]]
    return sorted(float(nu[m][i]) for i in best)


def spectrum_agreement(dft, model, channel: str, lo: float = 100.0, hi: float = 600.0) -> dict:
    """Overlap ⟨I_model, I_DFT⟩/(‖I_model‖‖I_DFT‖) and integrated-intensity ratio model/DFT of one
    channel of two spectra on the same grid, over [lo, hi] cm⁻¹."""
    nu = dft.frequency_cm1
    band = (nu >= lo) & (nu <= hi)
    yd, ym = dft.channel(channel)[band], model.channel(channel)[band]
    return {"overlap": float(yd @ ym / (np.linalg.norm(yd) * np.linalg.norm(ym))),
            "intensity_ratio": float(model.integrate(channel, lo, hi) / dft.integrate(channel, lo, hi))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--time", type=float, default=2.0, help="production, ps")
    ap.add_argument("--every", type=int, default=8, help="MD steps (2 fs) between frames")
    ap.add_argument("--work", type=Path, default=Path("runs/raman_dft"))
    ap.add_argument("--label", action=argparse.BooleanOptionalAction, default=True, help="run the missing CP2K labels")
    ap.add_argument("--partial", action="store_true", help="compare on the labelled prefix of the trajectory")
    ap.add_argument("--segments", type=int, default=1)
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    cand = "Na3SbS4-cubic"
    loaded = load_structure(cand)
    traj_path = work / f"{cand}_{args.temperature:g}K.h5"
    if not traj_path.exists() or checkpoint_path(traj_path).exists():
        ff = get_forcefield(resolve_forcefield("auto", cand))
        cfg = MDConfig(temperature_K=args.temperature, time_ps=args.time, equilibrate_ps=1.0,
                       sample_every=args.every, seed=11)
        run_md(loaded.atoms, ff, cfg, traj_path, resume=True, metadata=loaded.describe(), integrity="flag")
    traj = read_h5md(traj_path)
    frames = [traj.atoms(k, wrap=True) for k in range(traj.n_frames)]
    out_xyz = work / "alpha_cp2k.xyz"
    settings = CP2KSettings()
    if args.label:
        label_frames(frames, settings, out_xyz, workdir=work / "cp2k", executor="serial", progress=False, chain_guess=True)
    done = {a.info["label_hash"]: a for a in (read_labelled(out_xyz, require=False) if out_xyz.exists() else [])}
    hashes = [label_hash(a, settings) for a in frames]
    n = 0
    while n < len(frames) and hashes[n] in done:
        n += 1
    res: dict = {"trajectory": str(traj_path), "n_frames": len(frames), "n_labelled_prefix": n,
                 "dt_fs": traj.dt_fs, "temperature_K": args.temperature}
    if n < len(frames) and not (args.partial and n >= 32):
        res["status"] = "CP2K labels incomplete; rerun (resumes) or pass --partial"
        print(json.dumps(res, indent=1))
        return
    a_dft = np.array([get_alpha(done[h]) for h in hashes[:n]])
    model, info = resolve_model("auto", cand, frames[0])
    a_ml = np.asarray(model.predict(frames[:n]))
    res["model"] = info
    err = polarizability_errors(a_ml - a_ml.mean(axis=0) + a_dft.mean(axis=0), a_dft)
    res["fluctuation_errors"] = {k: round(float(err[k]), 4) for k in ("rel_rmse_iso", "rel_rmse_aniso", "rmse_iso_A3", "rmse_aniso_A3")}
    res["mean_iso_A3"] = {"dft": float(np.trace(a_dft.mean(0)) / 3), "model": float(np.trace(a_ml.mean(0)) / 3)}
    spec = {}
    for name, a in (("dft", a_dft), ("model", a_ml)):
        s = PolarizabilitySeries.from_array(a, traj.dt_fs, args.temperature, metadata={"source": f"{name} α(t)"})
        spec[name] = compute_spectrum(s, "powder", n_segments=args.segments, max_frequency_cm1=600.0)
    nu = spec["dft"].frequency_cm1
    res["channels"] = {}
    for ch in CHANNELS:
        agree = spectrum_agreement(spec["dft"], spec["model"], ch)
        res["channels"][ch] = {"overlap_100_600": round(agree["overlap"], 4),
                               "intensity_ratio_model_dft": round(agree["intensity_ratio"], 4),
                               "peaks_dft_cm1": peaks(nu, spec["dft"].channel(ch), 250, 450),
                               "peaks_model_cm1": peaks(nu, spec["model"].channel(ch), 250, 450)}
    res["measured_cm1"] = list(MEASURED_CM1)
    res["resolution_cm1"] = float(nu[1] - nu[0])
    try:
        spec["dft"].plot(work / "spectra.png", others=[spec["model"]], labels=["CP2K α(t)", "model α(t)"])
        res["figure"] = str(work / "spectra.png")
    except Exception as exc:  # the numbers matter more than the figure
        res["figure_error"] = str(exc)
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
