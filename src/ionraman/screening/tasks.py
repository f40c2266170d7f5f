"""What a worker does for one task: MD → transport → α(t) → Raman → fingerprint (or the harmonic reference).

Workers write artifacts (trajectory, spectra, plots) into the task's own
directory and return a small JSON-able record; only the client writes the
results store. An interrupted MD resumes from its checkpoint when the task runs
again; a task that fails returns nothing and the client records the reason.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .spec import TaskSpec

__all__ = ["run_task", "file_hash"]


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file's content (artifacts are referenced by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@cache
def _forcefield(spec: str) -> Any:
    """One force-field instance per worker process (model loading takes seconds)."""
    from ..forcefields import get_forcefield

    return get_forcefield(spec)


def _structure(task: TaskSpec, cutoff_A: float) -> Any:
    from ..structures import load_structure

    c = task.candidate
    return load_structure(
        c.structure,
        supercell=c.supercell,
        min_atoms=c.min_atoms,
        min_width_A=2 * cutoff_A if c.min_atoms else None,
        seed=c.seed,
        vacancies=c.vacancies,
        substitutions=list(c.substitute) or None,
        mobile_ion=c.mobile_ion,
    )


def _distilled_forcefield(task: TaskSpec) -> str:
    """``forcefield = "distilled"``: distil the candidate's teacher (``auto``) once, in the
    candidate's own cell, cached under ``<output_dir>/forcefields/`` and shared by every
    temperature and rerun; a lock keeps parallel workers from distilling it twice."""
    import fcntl
    from dataclasses import asdict

    from ..distill import DistillConfig, distill
    from .spec import _slug

    md = task.md
    cfg = DistillConfig(teacher=md.distill_teacher, md_time_ps=md.distill_md_time_ps, epochs=md.distill_epochs,
                        num_channels=md.distill_channels, seed=md.seed)
    key = hashlib.sha256(json.dumps({"candidate": asdict(task.candidate), "distill": asdict(cfg)}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:12]
    folder = Path(task.output_dir) / "forcefields" / f"{_slug(task.candidate.name)}_{key}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        distill([_structure(task, cfg.r_max_A)], folder, cfg, progress=False)
    return f"distilled:{folder}"


def _artifact(path: Path, root: Path) -> dict[str, str]:
    return {"path": str(path.relative_to(root)), "sha256": file_hash(path)}


def run_task(task: TaskSpec) -> dict[str, Any]:
    """Run one task; returns its record (small, JSON-serialisable)."""
    return _run_harmonic(task) if task.kind == "harmonic" else _run_md_task(task)


def _prepare(task: TaskSpec) -> tuple[Path, Path, Any, Any, Any, dict[str, Any]]:
    """Task directory, force field, structure and polarizability model (resolved before any MD,
    so a task with an unusable model fails at once)."""
    from ..forcefields import resolve_forcefield
    from ..polarizability.registry import resolve_model

    root = Path(task.output_dir)
    wd = task.workdir
    wd.mkdir(parents=True, exist_ok=True)
    spec = task.md.forcefield
    if spec in ("distilled", "distilled:auto"):
        spec = _distilled_forcefield(task)
    ff = _forcefield(resolve_forcefield(spec, task.candidate.name, task.candidate.structure))
    loaded = _structure(task, ff.cutoff_A)
    model, model_info = resolve_model(task.spectrum.polarizability_model, loaded.name, loaded.atoms)
    return root, wd, ff, loaded, model, model_info


def _run_md_task(task: TaskSpec) -> dict[str, Any]:
    from .. import transport
    from ..fingerprint import fingerprint
    from ..md import MDConfig, checkpoint_path, run_md
    from ..raman import PolarizabilitySeries, compute_spectrum
    from ..structures import formula
    from ..trajectory import read_h5md, read_metadata

    t0 = time.perf_counter()
    root, wd, ff, loaded, model, model_info = _prepare(task)
    cfg = MDConfig(
        temperature_K=task.temperature_K,
        time_ps=task.md.time_ps,
        timestep_fs=task.md.timestep_fs,
        equilibrate_ps=task.md.equilibrate_ps,
        sample_every=task.md.sample_every,
        thermostat_tau_fs=task.md.thermostat_tau_fs,
        seed=task.md.seed,
    )
    traj_path = wd / "trajectory.h5"
    done = traj_path.exists() and read_metadata(traj_path).get("status") == "finished"
    if not done:
        resume = checkpoint_path(traj_path).exists() and traj_path.exists()
        run_md(loaded.atoms, ff, cfg, traj_path, resume=resume, metadata=loaded.describe(), integrity=task.md.integrity)
    traj = read_h5md(traj_path)
    tr = transport.analyse(traj)
    transport.plot_msd([s.diffusion for s in tr.species.values()], wd / "msd.png")

    frames = [traj.atoms(k, wrap=True) for k in range(traj.n_frames)]
    alpha = np.concatenate([model.predict(frames[i : i + 64]) for i in range(0, len(frames), 64)])
    series = PolarizabilitySeries(time_fs=traj.time_fs, alpha_A3=alpha, temperature_K=task.temperature_K,
                                  metadata={"model": model_info})
    spec = compute_spectrum(series, "powder", temperature_K=task.temperature_K, n_segments=task.spectrum.segments,
                            max_frequency_cm1=min(task.spectrum.max_frequency_cm1, series.nyquist_cm1))
    spec.to_csv(wd / "spectrum.csv")
    fp_spec = task.fingerprint
    fp = fingerprint(spec, None, fp_spec.cutoff_cm1, channel=fp_spec.channel, representation=fp_spec.representation,
                     omega_min_cm1=fp_spec.omega_min_cm1,
                     omega_max_cm1=min(fp_spec.omega_max_cm1, float(spec.frequency_cm1[-1])))
    integrity = traj.metadata.get("integrity") or {}
    reduced = spec.as_representation("reduced")
    return {
        "kind": "md",
        "key": task.key,
        "candidate": task.candidate.name,
        "structure": loaded.name,
        "formula": formula(loaded.atoms),
        "n_atoms": len(loaded.atoms),
        "supercell": list(loaded.repeats),
        "mobile_ion": loaded.mobile_ion,
        "defects": loaded.defects,
        "temperature_K": task.temperature_K,
        "transport": tr.to_dict(),
        "fingerprint": fp.to_dict(),
        "integrity": integrity,
        "integrity_ok": bool(traj.metadata.get("integrity_ok", True)),
        "md_status": traj.metadata.get("status"),
        "ns_per_day": traj.metadata.get("ns_per_day"),
        "forcefield": ff.version,
        "polarizability_model": model_info,
        "spectrum": {
            "frequency_cm1": reduced.frequency_cm1.tolist(),
            "unpolarized_reduced": reduced.channel("unpolarized").tolist(),
            "unpolarized_reduced_err": reduced.error("unpolarized").tolist(),
        },
        "artifacts": {
            "trajectory": _artifact(traj_path, root),
            "spectrum": _artifact(wd / "spectrum.csv", root),
            "msd_plot": _artifact(wd / "msd.png", root),
        },
        "atoms": _atoms_dict(loaded.atoms),
        "wall_s": time.perf_counter() - t0,
    }


def _atoms_dict(atoms: Any) -> dict[str, Any]:
    """The starting structure, so the client can store it without loading structures itself."""
    return {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(), "cell": atoms.cell.array.tolist()}


def _run_harmonic(task: TaskSpec) -> dict[str, Any]:
    from ..harmonic import harmonic_spectrum

    t0 = time.perf_counter()
    root, wd, ff, loaded, model, model_info = _prepare(task)
    h = harmonic_spectrum(loaded.atoms, ff.calculator, model, task.temperature_K, fwhm_cm1=task.spectrum.harmonic_fwhm_cm1,
                          max_frequency_cm1=task.spectrum.max_frequency_cm1, resolution_cm1=1.0)
    h.spectrum.to_csv(wd / "harmonic.csv")
    (wd / "modes.json").write_text(json.dumps(h.line_table, default=float, indent=1))
    red = h.spectrum.as_representation("reduced")
    return {
        "kind": "harmonic",
        "key": task.key,
        "candidate": task.candidate.name,
        "temperature_K": task.temperature_K,
        "n_imaginary": h.spectrum.metadata.get("n_imaginary", 0),
        "polarizability_model": model_info,
        "spectrum": {
            "frequency_cm1": red.frequency_cm1.tolist(),
            "unpolarized_reduced": red.channel("unpolarized").tolist(),
        },
        "artifacts": {"spectrum": _artifact(wd / "harmonic.csv", root)},
        "atoms": _atoms_dict(loaded.atoms),
        "wall_s": time.perf_counter() - t0,
    }
