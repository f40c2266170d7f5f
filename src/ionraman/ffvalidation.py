"""Validation of a force field against DFT energies and forces (``ionraman validate-ff``).

Workflow (docs/physics/ff-validation.md):

1. the force field's own MD at each temperature (:func:`ionraman.md.run_md`, resumable),
   with the chemical-integrity monitor;
2. ``n`` snapshots per temperature, evenly spaced over the production run;
3. CP2K energies and forces (PBE, GTH, DZVP-MOLOPT on the MD cell itself with a
   Monkhorst–Pack mesh chosen by cell size; the same electronic-structure settings as the
   polarizability labels, without linear response) through :func:`ionraman.polarizability.reference_cp2k.label_frames` —
   Dask, resumable, every finished label kept;
4. errors of the force field on those frames: force RMSE/MAE per element (meV/Å) and
   energy MAE per atom (meV/atom) after aligning the energy zero per element.

Energy zero: CP2K total energies (pseudopotential reference) and a universal model's
energies (fitted to VASP/PAW data) differ by a constant per element. The offsets
δ_e are fitted by least squares, E_DFT − E_FF ≈ Σ_e n_e δ_e, and the error is that of
the residual — the error in relative energies, which is what MD feels. With one
composition this is the mean offset per atom.

Units at the boundary: energies eV, forces eV/Å in files; errors reported in meV/Å
and meV/atom.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .errors import InputError

__all__ = [
    "ForceErrors",
    "ValidationReport",
    "label_energy_forces",
    "force_errors",
    "align_energies",
    "sample_frames",
    "validate_forcefield",
    "auto_kpoints",
    "parse_kpoints",
]

#: Monkhorst–Pack density of the automatic mesh: n_i = ceil(K / w_i) for perpendicular
#: cell widths w_i (Å). Measured on a 500 K snapshot of cubic Na3SbS4 (16 atoms,
#: a = 7.17 Å): MP 2×2×2 agrees with 3×3×3 to 7 meV/Å in the forces, Γ alone is off by
#: 270 meV/Å (docs/physics/ff-validation.md).
AUTO_KPOINT_LENGTH_A = 14.0

FORCES_KEY = "forces_dft"
ENERGY_KEY = "energy_eV"


# --------------------------------------------------------------------------- DFT labels


def _cp2k_energy_forces(atoms: Atoms, settings: Any, workdir: Path) -> Atoms:
    """Labeller for :func:`label_frames`: CP2K energy and forces, no polarizability."""
    from .polarizability.reference_cp2k import run_cp2k

    res = run_cp2k(atoms, settings, workdir, polarizability=False)
    if res.forces is None or res.energy_eV is None:
        raise InputError(f"CP2K in {workdir} gave no energy or forces; the settings must have forces=True.")
    out = atoms.copy()
    out.calc = None
    out.info[ENERGY_KEY] = float(res.energy_eV)
    out.arrays[FORCES_KEY] = np.asarray(res.forces, dtype=float)
    out.info["dft_source"] = "cp2k"
    out.info["dft_settings"] = json.dumps(
        {"engine": "cp2k", "task": "energy_forces", "cp2k_version": res.cp2k_version,
         "settings": settings.physics_dict(), "kinds": {k: list(v) for k, v in res.kinds.items()}},
        sort_keys=True,
    )
    out.info["label_wall_time_s"] = round(res.wall_time_s, 2)
    return out


def label_energy_forces(
    frames: Sequence[Atoms],
    output_xyz: str | os.PathLike,
    settings: Any = None,
    workdir: str | os.PathLike = "cp2k_ef_runs",
    executor: Any = None,
    progress: bool = True,
    kpoints: str | None = "auto",
) -> Any:
    """CP2K energies (``info["energy_eV"]``) and forces (``arrays["forces_dft"]``, eV/Å) for ``frames``.

    ``kpoints``: ``auto`` picks :func:`auto_kpoints` per frame (cells of different size get
    their own mesh), ``gamma`` or ``N1xN2xN3`` one mesh for all; ``None`` keeps
    ``settings.kpoints``. Parallel (Dask) and resumable exactly like polarizability
    labelling (:func:`ionraman.polarizability.reference_cp2k.label_frames`): each finished
    frame is written to ``output_xyz`` at once and a rerun skips it. Returns one
    :class:`~ionraman.polarizability.reference_cp2k.LabelResult` over all frames (one
    ``label_frames`` call per mesh).
    """
    from .polarizability.reference_cp2k import LabelResult, label_frames

    groups: dict[Any, list[int]] = {}
    for i, a in enumerate(frames):
        groups.setdefault(_frame_settings(settings, a, kpoints), []).append(i)
    total = LabelResult(output=Path(output_xyz))
    for s, idx in groups.items():
        res = label_frames([frames[i] for i in idx], s, output_xyz, workdir=workdir, executor=executor,
                           progress=progress, labeller=_cp2k_energy_forces, reuse_settings=False)
        total.labelled += [idx[j] for j in res.labelled]
        total.skipped += [idx[j] for j in res.skipped]
        total.failed.update({idx[j]: why for j, why in res.failed.items()})
        total.wall_time_s += res.wall_time_s
    return total


def _frame_settings(settings: Any, atoms: Atoms, kpoints: str | None) -> Any:
    """The energy/force settings of one frame: ``settings`` with forces on and the frame's mesh."""
    from .polarizability.reference_cp2k import CP2KSettings

    base = (settings or CP2KSettings()).replace(forces=True)
    return base if kpoints is None else base.replace(kpoints=parse_kpoints(kpoints, atoms))


def frame_hashes(frames: Sequence[Atoms], settings: Any = None, kpoints: str | None = "auto") -> set[str]:
    """The label hashes :func:`label_energy_forces` gives these frames (to pick their labels from a file)."""
    from .polarizability.reference_cp2k import label_hash

    return {label_hash(a, _frame_settings(settings, a, kpoints)) for a in frames}


def auto_kpoints(atoms: Atoms, length_A: float = AUTO_KPOINT_LENGTH_A) -> tuple[int, int, int] | None:
    """Monkhorst–Pack mesh with n_i·w_i ≥ ``length_A`` (w_i: perpendicular widths, Å); None for Γ only."""
    from .structures import perpendicular_widths

    k = tuple(max(1, math.ceil(length_A / w - 1e-9)) for w in perpendicular_widths(np.asarray(atoms.cell[:], dtype=float)))
    return None if k == (1, 1, 1) else k  # type: ignore[return-value]


def parse_kpoints(text: str | None, atoms: Atoms) -> tuple[int, int, int] | None:
    """``auto`` (default), ``gamma`` or ``N1xN2xN3`` → a mesh (None = Γ)."""
    t = (text or "auto").strip().lower()
    if t == "auto":
        return auto_kpoints(atoms)
    if t in ("gamma", "γ", "1x1x1"):
        return None
    try:
        k = tuple(int(v) for v in t.split("x"))
    except ValueError:
        k = ()
    if len(k) != 3 or min(k) < 1:
        raise InputError(f"--kpoints '{text}': give auto, gamma or a Monkhorst–Pack mesh like 2x2x2.")
    return k  # type: ignore[return-value]


# --------------------------------------------------------------------------- errors


def align_energies(frames: Sequence[Atoms], e_model_eV: np.ndarray, energy_key: str = ENERGY_KEY) -> tuple[np.ndarray, dict[str, float]]:
    """Residual energy errors (eV per frame) after fitting one energy offset per element.

    Solves min_δ Σ_f (E_DFT,f − E_model,f − Σ_e n_{f,e} δ_e)² (minimum-norm solution, so
    elements that always occur in the same ratio share their offset). Returns the
    residuals and δ (eV per atom of each element).
    """
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
    A = np.array([[a.get_chemical_symbols().count(e) for e in elements] for a in frames], dtype=float)
    b = np.array([float(a.info[energy_key]) for a in frames]) - np.asarray(e_model_eV, dtype=float)
    delta, *_ = np.linalg.lstsq(A, b, rcond=None)
    return b - A @ delta, dict(zip(elements, map(float, delta)))


@dataclass(frozen=True)
class ForceErrors:
    """Errors of a model against DFT on labelled frames (meV/Å, meV/atom)."""

    n_frames: int
    n_atoms: int
    force_rmse_meV_A: float
    force_mae_meV_A: float
    force_rms_dft_meV_A: float
    per_element: dict[str, dict[str, float]]
    energy_mae_meV_atom: float | None  # None: no more frames than fitted offsets, so no test of energies
    energy_rmse_meV_atom: float | None
    energy_offsets_eV: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def force_errors(
    frames: Sequence[Atoms], calculator: Any, energy_key: str = ENERGY_KEY, forces_key: str = FORCES_KEY
) -> tuple[ForceErrors, dict[str, np.ndarray]]:
    """Compare ``calculator`` with the reference labels of ``frames`` (DFT by default; the keys
    name other references, e.g. a teacher model's); returns the errors and the raw arrays (per
    atom: ``f_dft``, ``f_model`` in eV/Å, ``symbols``, ``frame`` index; per frame: ``e_dft``,
    ``e_model`` in eV; ``dft`` means the reference) for plots and subsets."""
    frames = [a for a in frames if forces_key in a.arrays and energy_key in a.info]
    if not frames:
        raise InputError(f"no frame carries reference energies and forces (info['{energy_key}'], arrays['{forces_key}']); label them first.")
    fd, fm, syms, em, n_at = [], [], [], [], []
    for a in frames:
        b = a.copy()
        b.calc = calculator
        fm.append(np.asarray(b.get_forces(), dtype=float))
        em.append(float(b.get_potential_energy()))
        fd.append(np.asarray(a.arrays[forces_key], dtype=float))
        syms.extend(a.get_chemical_symbols())
        n_at.append(len(a))
    f_dft, f_mod = np.concatenate(fd), np.concatenate(fm)
    symbols = np.array(syms)
    diff = f_mod - f_dft
    per: dict[str, dict[str, float]] = {}
    for el in sorted(set(syms)):
        m = symbols == el
        per[el] = {"force_rmse_meV_A": 1e3 * float(np.sqrt((diff[m] ** 2).mean())),
                   "force_mae_meV_A": 1e3 * float(np.abs(diff[m]).mean()),
                   "force_rms_dft_meV_A": 1e3 * float(np.sqrt((f_dft[m] ** 2).mean())),
                   "n_atoms": int(m.sum())}
    e_mod = np.array(em)
    resid, offsets = align_energies(frames, e_mod, energy_key)
    per_atom = resid / np.array(n_at)
    n_comp = np.linalg.matrix_rank(np.array([[a.get_chemical_symbols().count(e) for e in offsets] for a in frames], float))
    tested = len(frames) > n_comp  # the offset fit leaves degrees of freedom to test energies with
    err = ForceErrors(
        n_frames=len(frames),
        n_atoms=int(len(symbols)),
        force_rmse_meV_A=1e3 * float(np.sqrt((diff**2).mean())),
        force_mae_meV_A=1e3 * float(np.abs(diff).mean()),
        force_rms_dft_meV_A=1e3 * float(np.sqrt((f_dft**2).mean())),
        per_element=per,
        energy_mae_meV_atom=1e3 * float(np.abs(per_atom).mean()) if tested else None,
        energy_rmse_meV_atom=1e3 * float(np.sqrt((per_atom**2).mean())) if tested else None,
        energy_offsets_eV=offsets,
    )
    raw = {"f_dft": f_dft, "f_model": f_mod, "symbols": symbols, "frame": np.repeat(np.arange(len(frames)), n_at),
           "e_dft": np.array([float(a.info[energy_key]) for a in frames]), "e_model": e_mod}
    return err, raw


# --------------------------------------------------------------------------- sampling


def sample_frames(traj: Any, n: int, skip_fraction: float = 0.1, temperature_K: float | None = None) -> list[Atoms]:
    """``n`` frames evenly spaced in time over a trajectory, leaving out the first ``skip_fraction``
    (each tagged with ``info["time_ps"]`` and ``info["temperature_K"]``, the given one or the run's)."""
    if n < 1:
        raise InputError(f"--frames {n}: give at least one snapshot per temperature.")
    first = int(skip_fraction * traj.n_frames)
    if traj.n_frames - first < n:
        raise InputError(f"{traj.metadata.get('path', 'trajectory')}: {traj.n_frames} frames, fewer than the {n} snapshots asked for; "
                         "run longer (--time) or ask for fewer (--frames).")
    idx = np.unique(np.linspace(first, traj.n_frames - 1, n).round().astype(int))
    out = []
    for k in idx:
        a = traj.atoms(int(k))
        a.calc = None
        T = float(traj.temperature_K) if temperature_K is None else float(temperature_K)
        a.info.update({"time_ps": float(traj.time_fs[k]) / 1000.0, "temperature_K": T,
                       "source_frame": int(k)})
        out.append(a)
    return out


# --------------------------------------------------------------------------- the whole validation


@dataclass
class ValidationReport:
    """Result of :func:`validate_forcefield` (``to_dict`` is the ``--json`` output)."""

    forcefield: str
    structure: str
    n_frames: int
    errors: ForceErrors | None
    integrity: dict[str, dict[str, Any]]
    dft: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    errors_by_temperature: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        e = self.errors
        return {
            "forcefield": self.forcefield,
            "structure": self.structure,
            "n_frames": self.n_frames,
            "force_rmse_meV_A": e.force_rmse_meV_A if e else None,
            "force_mae_meV_A": e.force_mae_meV_A if e else None,
            "energy_mae_meV_atom": e.energy_mae_meV_atom if e else None,
            "per_element": e.per_element if e else {},
            "errors_by_temperature": self.errors_by_temperature,
            "integrity": self.integrity,
            "dft": self.dft,
            "files": self.files,
        }


def _integrity_summary(traj: Any) -> dict[str, Any]:
    from .integrity import check_trajectory

    rep = check_trajectory(traj)
    return {"anion_anion_bonds_max": int(rep.anion_anion_bonds_max),
            "framework_coordination_min": rep.framework_coordination_min,
            "framework_msd_max_A2": float(rep.framework_msd_max_A2),
            "first_failure_ps": rep.first_failure_ps,
            "ok": bool(rep.ok),
            "reason": rep.reason}


def _write_json(path: Path, obj: Any) -> None:
    from ._io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=2, default=float).encode())


def validate_forcefield(
    structure: Any,
    forcefield: Any,
    temperatures_K: Sequence[float],
    output_dir: str | os.PathLike,
    md_config: Any,
    frames_per_temperature: int = 4,
    dft_settings: Any = None,
    executor: Any = None,
    progress: bool = False,
    label: str = "structure",
    kpoints: str | None = "auto",
) -> ValidationReport:
    """MD at each temperature, DFT on sampled frames, errors and integrity; files in ``output_dir``.

    structure: a :class:`ionraman.structures.LoadedStructure`; forcefield: a
    :class:`ionraman.forcefields.ForceField`; md_config: an :class:`ionraman.md.MDConfig`
    whose ``temperature_K`` is replaced per temperature. Every stage resumes: MD from its
    checkpoint, DFT labels from ``dft_labels.xyz``. ``kpoints``: ``auto`` (a Monkhorst–Pack
    mesh with n_i·w_i ≥ 14 Å, :func:`auto_kpoints`), ``gamma`` or ``N1xN2xN3``.
    """
    import dataclasses

    from .md import checkpoint_path, run_md
    from .polarizability.dataset import read_labelled
    from .polarizability.reference_cp2k import CP2KSettings
    from .trajectory import read_h5md, read_metadata

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    kmesh = parse_kpoints(kpoints, structure.atoms)  # a bad mesh fails now, not after the MD
    dft_settings = (dft_settings or CP2KSettings()).replace(kpoints=kmesh, forces=True)
    meta = structure.describe() if hasattr(structure, "describe") else {}
    integrity: dict[str, dict[str, Any]] = {}
    frames: list[Atoms] = []
    for T in temperatures_K:
        cfg = dataclasses.replace(md_config, temperature_K=float(T))
        traj_path = out / f"md_{T:g}K.h5"
        if traj_path.exists():
            prev = read_metadata(traj_path).get("forcefield")
            if prev is not None and prev != forcefield.name:
                raise InputError(f"{traj_path}: was run with force field '{prev}', not '{forcefield.name}'; "
                                 "use another -o directory for another force field.")
        # resumes from the checkpoint; a finished run returns at once
        run_md(structure.atoms, forcefield, cfg, traj_path, resume=traj_path.exists() and checkpoint_path(traj_path).exists(),
               metadata=meta, progress=progress, integrity="flag")
        traj = read_h5md(traj_path)
        integrity[f"{T:g}"] = _integrity_summary(traj)
        frames += sample_frames(traj, frames_per_temperature, temperature_K=T)
    labels_path = out / "dft_labels.xyz"
    res = label_energy_forces(frames, labels_path, dft_settings, workdir=out / "cp2k_runs", executor=executor,
                              progress=progress, kpoints=None)
    if res.failed:
        first = next(iter(res.failed.values()))
        raise InputError(f"{labels_path}: {len(res.failed)} DFT label(s) failed (first: {first}); see {labels_path}.failed.json, fix and rerun to resume.")
    wanted = frame_hashes(frames, dft_settings, kpoints=None)  # this run's frames only, not older labels in the file
    labelled = [a for a in read_labelled(labels_path, require=False) if str(a.info.get("label_hash")) in wanted]
    errs, raw = force_errors(labelled, forcefield.calculator)
    frame_T = np.array([float(a.info.get("temperature_K", -1)) for a in labelled])
    by_T: dict[str, dict[str, float]] = {}
    for T in temperatures_K:  # subsets of the forces already evaluated, not a second model run
        in_T = np.abs(frame_T - float(T)) < 1e-6
        if in_T.any():
            m = in_T[raw["frame"]]
            rmse = 1e3 * float(np.sqrt(((raw["f_model"][m] - raw["f_dft"][m]) ** 2).mean()))
            by_T[f"{T:g}"] = {"force_rmse_meV_A": rmse, "n_frames": int(in_T.sum())}
    dft = {"engine": "cp2k", "settings": dft_settings.physics_dict(),
           "kpoints": "Gamma" if kmesh is None else "Monkhorst-Pack " + "x".join(map(str, kmesh)),
           "cell_atoms": len(structure.atoms)}
    report = ValidationReport(
        forcefield=forcefield.name, structure=label, n_frames=errs.n_frames, errors=errs, integrity=integrity,
        dft=dft, errors_by_temperature=by_T,
        files={"labels": str(labels_path), "report": str(out / "report.json"), "parity": str(out / "parity.png")},
    )
    _write_json(out / "report.json", report.to_dict())
    plot_parity(raw, out / "parity.png", title=f"{forcefield.name} vs CP2K PBE: {label}")
    return report


def plot_parity(raw: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> Path:
    """Force parity plot (model vs DFT, eV/Å) coloured by element, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ._io import save_figure

    fig = Figure(figsize=(4.6, 4.4), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for el in sorted(set(raw["symbols"])):
        m = raw["symbols"] == el
        ax.scatter(raw["f_dft"][m].ravel(), raw["f_model"][m].ravel(), s=4, alpha=0.6, label=el)
    lim = float(np.abs(np.concatenate([raw["f_dft"].ravel(), raw["f_model"].ravel()])).max()) * 1.05
    ax.plot([-lim, lim], [-lim, lim], "k-", lw=0.8)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("DFT force component (eV/Å)")
    ax.set_ylabel("model force component (eV/Å)")
    ax.set_title(title, fontsize=9)
    ax.legend(markerscale=3, fontsize=8)
    return save_figure(fig, path, dpi=120)
