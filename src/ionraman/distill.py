"""Distil a fast system-specific force field from a teacher (``ionraman distill``).

Workflow (docs/physics/distillation.md), every stage a file in the output folder, so an
interrupted run resumes where it stopped:

1. **sample** (``sample/*.h5``): the teacher's own MD at each temperature in the
   candidate's cell and in isotropically strained copies of it — the configurations a
   screening run will visit (optionally also a copy with one mobile ion removed; it is not
   charge-compensated, see ``DistillConfig.vacancy``). Doped structures with compensating
   vacancies are distilled by passing them as inputs. The
   chemical-integrity monitor watches every run; a teacher whose framework breaks is
   refused (distil from a model that passed that check, issue #10), unless the caller
   allows it, which is recorded.
2. **label** (``data/train.xyz``, ``data/valid.xyz``): frames every ``frame_every_fs``
   of each production run, labelled with the teacher's energies and forces — or, for
   extxyz inputs that carry DFT energies/forces (``info['energy_eV']``,
   ``arrays['forces_dft']``), those first-principles labels instead.
3. **train** (``train/``): a MACE model (Batatia et al., NeurIPS 2022) trained with
   mace-torch's own trainer (``mace.cli.run_train``: E0s by least squares, EMA,
   ReduceLROnPlateau, checkpoints; ``--restart_latest`` resumes). The architecture
   (layers, channels, ℓ_max, correlation order, cutoff) was chosen by measured speed and
   accuracy (docs/physics/distillation.md).
4. **validate** (``distilled.json``): force RMSE/MAE per element and energy error on
   the held-out frames, and the domain of the training data (elements, compositions,
   temperatures, volumes per atom) that :class:`DistilledDomain` checks at run time.

The result is a folder that ``--forcefield distilled:FOLDER`` loads anywhere.
Units: eV, Å, K, fs/ps as named.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from .errors import InputError
from .ffvalidation import _write_json

__all__ = ["DistillConfig", "DistillResult", "DistilledCalculator", "DistilledDomain", "distill", "load_distilled", "MANIFEST"]

MANIFEST = "distilled.json"
MODEL_FILE = "model.model"
# keys of the training files; mace-torch reads them with --energy_key/--forces_key
_E, _F = "REF_energy", "REF_forces"


@dataclass(frozen=True)
class DistillConfig:
    """Settings of one distillation. Temperatures K, times ps/fs, lengths Å."""

    teacher: str = "auto"
    temperatures_K: tuple[float, ...] = (300.0, 500.0, 700.0, 900.0)
    md_time_ps: float = 1.0
    equilibrate_ps: float = 0.2
    timestep_fs: float = 2.0
    frame_every_fs: float = 40.0
    strains: tuple[float, ...] = (-0.015, 0.015)  # linear strains of the extra cells
    # one extra cell with one mobile ion removed, uncompensated: it carries a hole, and in
    # Na3SbS4 the teacher answers with S–S bonds (docs/physics/distillation.md); for
    # charge-compensated vacancies distil a doped structure (e.g. --substitute Sb:W) instead
    vacancy: bool = False
    supercell: str | None = None  # None: the structure's own cell
    # teacher MD of each structure also in its near-isotropic supercell with at least this many
    # atoms (e.g. 120: cubic Na3SbS4 16 → 2×2×2 = 128): a model trained on small cells only saw
    # their few, periodic neighbour arrangements and let two Na collapse in 128-atom MD at 800 K
    # (docs/physics/distillation.md)
    large_min_atoms: int | None = None
    large_md_time_ps: float = 0.4
    val_fraction: float = 0.1
    seed: int = 0
    allow_broken_teacher: bool = False
    # MACE architecture and training
    # two layers of 8 channels: 47 meV/Å on held-out 128-atom Na3SbS4 frames at 28× the teacher's
    # speed (torch.compile), where no one-layer variant met both 50 meV/Å and 20× (measured:
    # docs/physics/distillation.md, issue #7)
    r_max_A: float = 5.0
    num_channels: int = 8
    num_interactions: int = 2
    # invariant messages (max_L 0) with body order 4 (correlation 3): more accurate than
    # max_L 1 / correlation 2 at a lower cost (measured: docs/physics/distillation.md)
    max_L: int = 0
    max_ell: int = 2
    correlation: int = 3
    radial_mlp: tuple[int, ...] = (32, 32)
    # mace-torch gives a one-layer model a linear readout (the site energy is linear in the
    # layer's invariant features); nonlinear_readout gives it mace's MLP readout of width
    # readout_mlp (MLP_irreps) instead, at no measurable MD cost (ionraman._mace_train); a
    # deeper model has that readout on its last layer anyway
    nonlinear_readout: bool = False
    readout_mlp: int = 64
    epochs: int = 300
    batch_size: int = 4
    lr: float = 0.01
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    dtype: str = "float32"  # of the model in MD (and of its validation)
    train_dtype: str | None = None  # of the training (None: dtype); the model is cast to dtype afterwards
    # ZBL screened-nuclear repulsion added to the learned energy (mace --pair_repulsion): a short-range
    # wall where training data has no frames, so rare close approaches repel instead of collapsing
    pair_repulsion: bool = True

    def validate(self) -> None:
        if not self.temperatures_K or min(self.temperatures_K) <= 0:
            raise InputError(f"--temperatures {self.temperatures_K}: give positive temperatures in K, e.g. 300,500,700,900.")
        if not 0.0 < self.val_fraction < 0.5:
            raise InputError(f"--val-fraction {self.val_fraction}: give a fraction between 0 and 0.5, e.g. 0.1.")
        if self.frame_every_fs < self.timestep_fs:
            raise InputError(f"--frame-every {self.frame_every_fs} fs is shorter than the time step {self.timestep_fs} fs.")
        if any(abs(s) >= 0.1 for s in self.strains):
            raise InputError(f"--strains {self.strains}: linear strains above 10 % leave the physical range; use e.g. -0.015,0.015.")
        if self.large_min_atoms is not None:
            if self.large_min_atoms < 2:
                raise InputError(f"--large-cell {self.large_min_atoms}: give the smallest number of atoms of the larger cell, e.g. 120.")
            if not self.large_md_time_ps > 0:
                raise InputError(f"--large-md-time {self.large_md_time_ps}: give a positive time in ps, e.g. 0.4.")
        for name, v in (("--dtype", self.dtype), ("--train-dtype", self.train_dtype or self.dtype)):
            if v not in ("float32", "float64"):
                raise InputError(f"{name} {v}: give float32 or float64.")
        if self.max_ell < 1:
            raise InputError(f"--max-ell {self.max_ell}: the edge spherical harmonics need degree ≥ 1 to carry angles; give 1 or 2.")
        if self.num_interactions < 1:
            raise InputError(f"--num-interactions {self.num_interactions}: give the number of message-passing layers, 1 or 2.")
        if self.readout_mlp < 1:
            raise InputError(f"--readout {self.readout_mlp}: give the positive width of the readout MLP, e.g. 16.")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError("--epochs and --batch-size must be positive integers.")

    def sampling_dict(self) -> dict[str, Any]:
        """The settings that define the labelled frames (the rest only changes training)."""
        d = asdict(self)
        return {k: d[k] for k in _SAMPLING_FIELDS}

    def mace_args(self) -> list[str]:
        hidden = f"{self.num_channels}x0e" + "".join(f"+{self.num_channels}x{l}{'o' if l % 2 else 'e'}" for l in range(1, self.max_L + 1))  # noqa: E741 (l: angular momentum)
        return [
            "--model", "MACE", "--r_max", str(self.r_max_A), "--hidden_irreps", hidden,
            "--max_ell", str(self.max_ell), "--correlation", str(self.correlation),
            "--num_interactions", str(self.num_interactions), "--MLP_irreps", f"{self.readout_mlp}x0e",
            "--num_radial_basis", "8", "--num_cutoff_basis", "5", "--radial_MLP", str(list(self.radial_mlp)),
            "--E0s", "average", "--scaling", "rms_forces_scaling",
            "--loss", "weighted", "--energy_weight", str(self.energy_weight), "--forces_weight", str(self.forces_weight),
            "--max_num_epochs", str(self.epochs), "--batch_size", str(self.batch_size), "--valid_batch_size", "16",
            "--lr", str(self.lr), "--scheduler_patience", "5", "--patience", "30", "--ema", "--ema_decay", "0.99",
            "--amsgrad", "--default_dtype", self.train_dtype or self.dtype, "--seed", str(self.seed), "--device", "cpu",
            "--eval_interval", "1", "--error_table", "PerAtomRMSE", "--energy_key", _E, "--forces_key", _F,
        ] + (["--pair_repulsion"] if self.pair_repulsion else [])


_SAMPLING_FIELDS = ("teacher", "temperatures_K", "md_time_ps", "equilibrate_ps", "timestep_fs", "frame_every_fs", "strains",
                    "vacancy", "supercell", "large_min_atoms", "large_md_time_ps", "val_fraction", "seed", "allow_broken_teacher")


@dataclass
class DistilledDomain:
    """Where a distilled model was trained: outside it, its forces are extrapolations.

    ``check`` raises for unknown elements (the model has no embedding for them) and
    warns, in one sentence, for temperatures above the hottest training run by more than
    10 %, compositions (atom fractions) more than 0.05 away from every training cell, and
    volumes per atom outside the sampled range by more than 3 %.
    """

    elements: list[str]
    temperatures_K: list[float]
    compositions: list[dict[str, float]]
    volume_per_atom_A3: list[float]  # [min, max]

    def check(self, atoms: Atoms, temperature_K: float | None = None, label: str = "structure", name: str = "distilled") -> list[str]:
        missing = sorted(set(atoms.get_chemical_symbols()) - set(self.elements))
        if missing:
            raise InputError(
                f"{label}: the distilled force field '{name}' was trained on {', '.join(self.elements)} only and "
                f"cannot describe {', '.join(missing)}; distil a model that includes them (ionraman distill)."
            )
        notes = []
        if temperature_K is not None and temperature_K > 1.1 * max(self.temperatures_K):
            notes.append(f"{temperature_K:g} K is above the hottest training run ({max(self.temperatures_K):g} K)")
        if temperature_K is not None and temperature_K < 0.5 * min(self.temperatures_K):
            notes.append(f"{temperature_K:g} K is far below the coldest training run ({min(self.temperatures_K):g} K)")
        comp = _composition(atoms)
        dist = min(max(abs(comp.get(e, 0.0) - c.get(e, 0.0)) for e in set(comp) | set(c)) for c in self.compositions)
        if dist > 0.05:
            notes.append(f"its composition differs from every training cell by up to {dist:.2f} in atom fraction")
        v = atoms.get_volume() / len(atoms)
        lo, hi = self.volume_per_atom_A3
        if not 0.97 * lo <= v <= 1.03 * hi:
            notes.append(f"its volume {v:.2f} Å³/atom is outside the training range {lo:.2f}–{hi:.2f} Å³/atom")
        for n in notes:
            warnings.warn(f"{label}: distilled force field '{name}' runs outside its training data: {n}; "
                          "its forces there are extrapolations — distil again with this range included.", stacklevel=2)
        return notes


@dataclass
class DistillResult:
    """What ``distill`` produced: the model folder and its held-out errors."""

    path: Path
    n_train: int
    n_valid: int
    errors: dict[str, Any]
    domain: DistilledDomain
    teacher: dict[str, Any]
    train_wall_time_s: float
    flagged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _composition(atoms: Atoms) -> dict[str, float]:
    s = atoms.get_chemical_symbols()
    return {e: s.count(e) / len(s) for e in sorted(set(s))}


def _write_xyz(path: Path, frames: Sequence[Atoms]) -> None:
    import ase.io

    tmp = path.with_name(path.name + ".tmp")
    ase.io.write(tmp, list(frames), format="extxyz")
    os.replace(tmp, path)


def _strained(atoms: Atoms, eps: float) -> Atoms:
    a = atoms.copy()
    a.set_cell(atoms.cell.array * (1.0 + eps), scale_atoms=True)
    return a


def _remove_mobile(atoms: Atoms, mobile: str | None, seed: int) -> Atoms | None:
    if not mobile or mobile not in atoms.get_chemical_symbols():
        return None
    idx = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == mobile]
    a = atoms.copy()
    del a[int(np.random.default_rng(seed).choice(idx))]
    return a


def _dft_labelled(path: Path) -> list[Atoms] | None:
    """Frames of an extxyz that carry DFT energies and forces, else None (a structure file)."""
    if path.suffix.lower() not in (".xyz", ".extxyz"):
        return None
    import ase.io

    from .ffvalidation import ENERGY_KEY, FORCES_KEY

    frames = ase.io.read(path, ":")
    if not all(ENERGY_KEY in a.info and FORCES_KEY in a.arrays for a in frames):
        return None
    out = []
    for a in frames:
        b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=True)
        b.info[_E] = float(a.info[ENERGY_KEY])
        b.arrays[_F] = np.asarray(a.arrays[FORCES_KEY], float)
        b.info["label_source"] = str(a.info.get("dft_source", "dft"))
        T = a.info.get("temperature_K")  # MD temperature of a sampled snapshot, when recorded
        if T is not None and np.isfinite(float(T)):
            b.info["temperature_K"] = float(T)
        out.append(b)
    return out


def _sample(structures: Sequence[Any], cfg: DistillConfig, out: Path, log: Callable[[str], None]) -> tuple[list[Atoms], dict[str, Any], list[str]]:
    """Stages 1–2 for structures (specs or :class:`~ionraman.structures.LoadedStructure`): teacher MD and labels."""
    from .forcefields import get_forcefield, resolve_forcefield
    from .integrity import production_failure
    from .md import MDConfig, checkpoint_path, run_md
    from .structures import load_structure
    from .trajectory import read_h5md

    frames: list[Atoms] = []
    flagged: list[str] = []
    teacher_info: dict[str, Any] = {}
    sample_dir = out / "sample"
    sample_dir.mkdir(parents=True, exist_ok=True)
    ff_cache: dict[str, Any] = {}
    from .structures import formula

    for spec in structures:
        loaded = spec if hasattr(spec, "atoms") else load_structure(spec, supercell=cfg.supercell, seed=cfg.seed)
        tspec = resolve_forcefield(cfg.teacher, loaded.name)
        if tspec not in ff_cache:
            ff_cache[tspec] = get_forcefield(tspec)
        teacher = ff_cache[tspec]
        teacher_info = teacher.describe() | {"spec": tspec}
        base = loaded.atoms
        # (tag, atoms, production ps, relax first): a strained cell starts from relaxed positions — its
        # affinely scaled bonds would otherwise be the integrity monitor's reference, and thermal
        # stretching of the relaxed bonds past 1.2 × the compressed length would count as a broken
        # framework (measured: r3 at 900 K, −1.5 %)
        cells = [("", base, cfg.md_time_ps, False)]
        cells += [(f"strain{e:+.3f}", _strained(base, e), cfg.md_time_ps, True) for e in cfg.strains]
        vac = _remove_mobile(base, loaded.mobile_ion, cfg.seed) if cfg.vacancy else None
        if vac is not None:
            cells.append((f"vac{loaded.mobile_ion}", vac, cfg.md_time_ps, False))
        if cfg.large_min_atoms and cfg.large_min_atoms > len(base):
            from .structures import supercell_repeats

            reps = supercell_repeats(base.cell.array, len(base), min_atoms=cfg.large_min_atoms)
            cells.append(("x" + "x".join(map(str, reps)), base.repeat(reps), cfg.large_md_time_ps, False))
        stem = f"{_slug(loaded.name)}_{formula(base)}"  # a doped copy of a built-in keeps its name
        for tag, atoms, time_ps, relax in cells:
            for T in cfg.temperatures_K:
                name = f"{stem}{'_' + tag if tag else ''}_{T:g}K"
                path = sample_dir / f"{name}.h5"
                mdc = MDConfig(temperature_K=float(T), time_ps=time_ps, timestep_fs=cfg.timestep_fs,
                               equilibrate_ps=cfg.equilibrate_ps, sample_every=max(1, int(round(cfg.frame_every_fs / cfg.timestep_fs))),
                               seed=cfg.seed, relax=relax)
                if not path.exists() or checkpoint_path(path).exists():
                    log(f"teacher MD {name} ({len(atoms)} atoms, {mdc.time_ps:g} ps)")
                    run_md(atoms, teacher, mdc, path, resume=True, metadata=loaded.describe() | {"distill_cell": tag or "base"},
                           integrity="flag")
                traj = read_h5md(path)
                integ = traj.metadata.get("integrity", {})
                broken = production_failure(traj)
                if integ and not integ.get("ok", True) and broken is None:
                    log(f"{name}: the monitor flagged the thermalisation ({integ.get('reason')}); the production frames are intact")
                if broken is not None:
                    msg = f"{name}: teacher '{tspec}' broke the framework ({broken.reason})"
                    if not cfg.allow_broken_teacher:
                        raise InputError(
                            f"{msg}; distil from a force field that keeps it intact (fine-tune it: ionraman finetune) "
                            "or pass --allow-broken-teacher to distil the broken dynamics on purpose."
                        )
                    flagged.append(msg)
                calc = teacher.calculator
                for k in range(1, traj.n_frames):  # frame 0 is the start of production, kept out as correlated with equilibration
                    a = traj.atoms(k, wrap=True)
                    a.calc = calc
                    b = Atoms(a.numbers, a.positions, cell=a.cell, pbc=True)
                    b.info[_E] = float(a.get_potential_energy())
                    b.arrays[_F] = np.asarray(a.get_forces(), float)
                    b.info.update(label_source=f"teacher:{tspec}", temperature_K=float(T), cell_tag=tag or "base", source=str(path.name))
                    frames.append(b)
    return frames, teacher_info, flagged


def _slug(name: str) -> str:
    """A file-name stem for a built-in name or a structure path."""
    p = Path(str(name))
    stem = p.stem if p.suffix.lower() in (".cif", ".xyz", ".extxyz", ".vasp", ".poscar", ".json") else p.name
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in stem)


def _split(frames: list[Atoms], val_fraction: float, seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """:func:`ionraman.finetune.split_frames`, with at least one held-out and two training frames."""
    from .finetune import split_frames

    train, valid = split_frames(frames, val_fraction, seed)
    if not valid:
        train, valid = train[1:], train[:1]  # the first frame of the permutation, as split_frames would hold out
    if len(train) < 2:
        raise InputError(f"only {len(frames)} labelled frames; run longer teacher MD (--md-time) or sample more often (--frame-every).")
    return train, valid


def _train(cfg: DistillConfig, out: Path, log: Callable[[str], None]) -> float:
    """Run mace-torch's trainer in a subprocess (it sets global torch state); resumable."""
    tdir = out / "train"
    tdir.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "ionraman._mace_train", *(["--nonlinear-readout"] if cfg.nonlinear_readout else []),
           "--name", "distilled",
           "--train_file", str(out / "data" / "train.xyz"), "--valid_file", str(out / "data" / "valid.xyz"),
           "--work_dir", str(tdir), "--model_dir", str(tdir), "--checkpoints_dir", str(tdir / "checkpoints"),
           "--results_dir", str(tdir / "results"), "--log_dir", str(tdir / "logs"), "--restart_latest", *cfg.mace_args()]
    log(f"training MACE ({cfg.epochs} epochs max); log in {tdir / 'logs'}")
    t0 = time.perf_counter()
    with open(tdir / "train.stdout", "a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        tail = (tdir / "train.stdout").read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"MACE training failed (exit {proc.returncode}); see {tdir / 'train.stdout'}: " + " | ".join(tail))
    produced = tdir / "distilled.model"
    if not produced.exists():
        raise RuntimeError(f"MACE training finished without {produced}; see {tdir / 'train.stdout'}.")
    shutil.copy(produced, out / (MODEL_FILE + ".tmp"))
    os.replace(out / (MODEL_FILE + ".tmp"), out / MODEL_FILE)
    return time.perf_counter() - t0


def distill(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    config: DistillConfig | None = None,
    progress: bool = True,
) -> DistillResult:
    """Distil a MACE force field from the teacher (or from DFT-labelled extxyz inputs) into ``output``.

    ``inputs``: built-in names or structure files (sampled with the teacher), and/or extxyz
    files with DFT energies/forces (used as labelled frames directly). Resumes from what is
    in ``output``; a finished folder (with ``distilled.json``) is returned as is.
    """
    cfg = config or DistillConfig()
    cfg.validate()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    log = (lambda m: print(f"[distill] {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    settings_file = out / "settings.json"
    settings = json.loads(json.dumps({"config": asdict(cfg), "inputs": [_input_name(p) for p in inputs]}))
    if settings_file.exists():
        old = json.loads(settings_file.read_text())
        defaults = json.loads(json.dumps(asdict(DistillConfig())))
        old_sampling = {k: old.get("config", {}).get(k, defaults[k]) for k in _SAMPLING_FIELDS}  # fields added later: defaults
        if old.get("inputs") != settings["inputs"] or old_sampling != json.loads(json.dumps(cfg.sampling_dict())):
            raise InputError(f"{out} holds a distillation with other settings ({settings_file}); use a new -o folder or delete it.")
        # fields added in later versions count as their defaults, so an older finished folder is reused
        if defaults | old.get("config", {}) != settings["config"]:
            # same labelled frames, other model or training settings: keep the data, train again
            log("model settings changed: keeping the labelled frames, training a new model")
            for f in (manifest, out / MODEL_FILE):
                f.unlink(missing_ok=True)
            shutil.rmtree(out / "train", ignore_errors=True)
    if manifest.exists():
        return _result_from_manifest(out, json.loads(manifest.read_text()))
    _write_json(settings_file, settings)

    data = out / "data"
    data.mkdir(exist_ok=True)
    teacher_info: dict[str, Any] = {}
    flagged: list[str] = []
    if not (data / "valid.xyz").exists():
        labelled: list[Atoms] = []
        structures = []
        for p in inputs:
            dft = _dft_labelled(Path(p)) if isinstance(p, (str, os.PathLike)) and Path(p).exists() else None
            if dft is not None:
                labelled += dft
                teacher_info.setdefault("dft_files", []).append(str(p))
            else:
                structures.append(p if hasattr(p, "atoms") else str(p))
        if structures:
            frames, tinfo, flagged = _sample(structures, cfg, out, log)
            labelled += frames
            teacher_info |= tinfo
        if not labelled:
            raise InputError("distill got no structures and no DFT-labelled extxyz; give a built-in name, a structure file or labelled frames.")
        train, valid = _split(labelled, cfg.val_fraction, cfg.seed)
        _write_json(data / "teacher.json", {"teacher": teacher_info, "flagged": flagged})
        _write_xyz(data / "train.xyz", train)
        _write_xyz(data / "valid.xyz", valid)  # written last: its presence marks the stage done
    else:
        t = json.loads((data / "teacher.json").read_text())
        teacher_info, flagged = t["teacher"], t["flagged"]

    import ase.io

    train = ase.io.read(data / "train.xyz", ":")
    valid = ase.io.read(data / "valid.xyz", ":")
    wall = _train(cfg, out, log) if not (out / MODEL_FILE).exists() else 0.0
    log("validating on held-out frames")
    errors = _validate(out / MODEL_FILE, valid, cfg.dtype)
    temps = sorted({float(a.info["temperature_K"]) for a in train if "temperature_K" in a.info}) or [float(t) for t in cfg.temperatures_K]
    comps = []
    for a in train:
        c = _composition(a)
        if c not in comps:
            comps.append(c)
    vols = [float(a.get_volume() / len(a)) for a in train]
    domain = DistilledDomain(sorted({s for a in train for s in a.get_chemical_symbols()}), temps, comps, [min(vols), max(vols)])
    import mace

    res = DistillResult(out, len(train), len(valid), errors, domain, teacher_info, round(wall, 1), flagged)
    _write_json(manifest, {**res.to_dict(), "model_file": MODEL_FILE, "mace_version": getattr(mace, "__version__", "?"),
                           "config": asdict(cfg), "architecture": "MACE", "dtype": cfg.dtype})
    return res


def _input_name(p: Any) -> Any:
    """What identifies an input in settings.json: its spec, or a loaded structure's provenance."""
    if hasattr(p, "describe"):
        return p.describe()
    return str(p)


def _validate(model_path: Path, frames: Sequence[Atoms], dtype: str) -> dict[str, Any]:
    from .ffvalidation import force_errors

    # (TorchScript: the compiled model's forces agree to ~1e-6 eV/Å, and a few hundred frames do not repay a compilation)
    calc = DistilledCalculator(model_path, dtype, backend="script")
    err, _ = force_errors(frames, calc, energy_key=_E, forces_key=_F)
    return err.to_dict()


BACKEND_ENV = "IONRAMAN_DISTILLED_BACKEND"
BACKENDS = ("inductor", "script", "eager")


def _compilable_copy(model: Any) -> Any:
    """The same mace model rebuilt without e3nn's TorchScript code generation, which
    torch.compile cannot trace (what ``mace.tools.compile.prepare`` does for mace's own
    calculator); the weights are copied and checked key by key."""
    from mace.modules import blocks
    from mace.tools.compile import disable_e3nn_codegen, simplify
    from mace.tools.scripts_utils import extract_config_mace_model

    cfg = extract_config_mace_model(model)
    with disable_e3nn_codegen(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (mace's constructor copies a tensor with torch.tensor: a UserWarning)
        copy = model.__class__(**cfg)
        r0 = model.readouts[0]
        if len(model.interactions) == 1 and isinstance(r0, blocks.NonLinearReadoutBlock) \
                and not isinstance(copy.readouts[0], blocks.NonLinearReadoutBlock):
            # the MLP readout ionraman._mace_train gives a one-layer model (mace's config does not record it)
            from ._mace_train import mlp_readout

            copy.readouts[0] = mlp_readout(copy.readouts[0], cfg["MLP_irreps"], cfg["gate"], cfg.get("heads"))
    copy.load_state_dict(model.state_dict(), strict=True)
    copy = simplify(copy).to(dtype=next(model.parameters()).dtype).eval()
    for p in copy.parameters():
        p.requires_grad_(False)
    return copy


class DistilledCalculator(Calculator):
    """ASE calculator that calls a MACE model directly.

    mace-torch's own MACECalculator rebuilds a torch_geometric batch (configuration →
    AtomicData → DataLoader) on every call, which is ~40 % of a step for a one-layer
    model of 128 atoms on a CPU (measured: docs/physics/distillation.md). Here the
    one-hot species and batch vectors are built once per composition, and the neighbour
    list is a Verlet list (``_neighbours``) over mace's own ``get_neighborhood``. Energies eV,
    forces eV/Å, stress eV/Å³ (ASE's sign convention, as MACECalculator).

    ``backend``: "inductor" (default; torch.compile, compiled on the first call), "script"
    (TorchScript) or "eager"; None reads ``$IONRAMAN_DISTILLED_BACKEND``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model_path: Path, dtype: str = "float32", device: str = "cpu", backend: str | None = None,
                 skin_A: float = 1.0) -> None:
        super().__init__()
        if not (np.isfinite(skin_A) and skin_A >= 0):
            raise InputError(f"DistilledCalculator: skin_A = {skin_A!r}; give the Verlet-list skin in Å as a number ≥ 0 (0: a new search every call).")
        backend = backend or os.environ.get(BACKEND_ENV) or "inductor"
        if backend not in BACKENDS:
            raise InputError(f"distilled model backend {backend!r} (argument backend or ${BACKEND_ENV}): give one of {', '.join(BACKENDS)}.")
        self.skin_A = float(skin_A)
        self._nl: dict[str, Any] | None = None
        self.neighbour_builds = 0
        import contextlib
        import io

        import torch

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import mace  # noqa: F401  (sets up e3nn before the model is unpickled)

            model = torch.load(str(model_path), map_location=device, weights_only=False)
        self.model_path = Path(model_path)
        self.torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        model = model.to(device=device, dtype=self.torch_dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.r_max = float(model.r_max)
        self.z_table = [int(z) for z in model.atomic_numbers]
        # the inductor backend compiles on the first call (_compiled_forces); until then, for
        # stress, and if compilation fails, the TorchScript model (e3nn's jit.compile, what mace
        # uses for its "_compiled" models) runs: the eager forces to float32 round-off, 5–14 %
        # less time per call (docs/physics/distillation.md); the eager model if scripting fails
        self.backend = backend
        self._to_compile: Any = None
        self._compiled: Any = None
        self.compile_s: float | None = None  # wall time of the first (compiling) call, s
        self.scripted = False
        if backend == "inductor":
            try:  # (built before scripting: e3nn's jit.compile replaces the model's submodules in place)
                self._to_compile = _compilable_copy(model)
            except Exception as exc:  # noqa: BLE001 - a model mace cannot rebuild from its config still runs scripted
                self.backend = "script"
                warnings.warn(f"{model_path} cannot be prepared for torch.compile ({type(exc).__name__}: {str(exc)[:200]}); "
                              "running the TorchScript model (about half the speed).", stacklevel=2)
        if backend in ("script", "inductor"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from e3nn.util import jit

                    model = jit.compile(model)
                self.scripted = True
            except Exception as exc:  # noqa: BLE001 - any scripting failure leaves the eager model, which is correct
                warnings.warn(f"TorchScript compilation of {model_path} failed ({type(exc).__name__}); running the eager model.",
                              stacklevel=2)
        self.model = model
        self.device = device
        self._static: tuple[Any, ...] | None = None

    def _compiled_forces(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """Energy and forces from the torch.compile'd model (inductor); None where it is not used.

        Inductor fuses the ~150 small per-edge operations of a MACE call into a few C++ loops:
        2.2× less time per 126-atom force call than TorchScript on one CPU thread, the same
        forces to 4e-6 eV/Å (docs/physics/distillation.md). Dynamic shapes, so a changing
        number of edges does not recompile. Compiling takes ~0.5–2 min the first time on this
        CPU and seconds after that (inductor's on-disk cache).
        """
        if self.backend != "inductor":
            return None
        import torch

        first = self._compiled is None
        if first:
            print(f"[distilled] compiling {self.model_path} with torch.compile (inductor): about a minute the first time, "
                  "seconds once cached", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if first:
                    import torch._inductor.config as inductor_config
                    from mace.tools.compile import configure_autograd_for_compile

                    configure_autograd_for_compile(allow_autograd=True)  # forces: torch.autograd.grad inside the graph

                    # serial generated kernels: with OpenMP threads, inductor's CPU code for this model
                    # corrupts the heap ("double free or corruption", torch 2.13, measured here); the
                    # other torch ops still use every thread
                    inductor_config.cpp.threads = 1
                    self._compiled = torch.compile(self._to_compile, fullgraph=True, dynamic=True)
                out = self._call_compiled(data)
        except Exception as exc:  # noqa: BLE001 - no C++ compiler, an untraceable model, a failed recompile …: the scripted model is correct
            self._fall_back(f"torch.compile of {self.model_path} failed ({type(exc).__name__}: {str(exc)[:200]})")
            return None
        if first:
            self.compile_s = time.perf_counter() - t0
        return out

    def _fall_back(self, why: str) -> None:
        warnings.warn(f"{why}; running the {'TorchScript' if self.scripted else 'eager'} model (about half the speed).", stacklevel=4)
        self.backend = "script" if self.scripted else "eager"
        self._compiled = self._to_compile = None

    def _call_compiled(self, data: dict[str, Any]) -> dict[str, Any]:
        # as mace's calculator does for compiled models: the inputs that forces (and mace's
        # training-mode graph) differentiate need requires_grad before the traced region
        data["positions"].requires_grad_(True)
        data["node_attrs"] = data["node_attrs"].clone().requires_grad_(True)
        return self._compiled(data, compute_force=True, compute_stress=False, training=True)

    def _static_inputs(self, numbers: np.ndarray) -> dict[str, Any]:
        import torch

        if self._static is None or not np.array_equal(self._static[0], numbers):
            unknown = sorted(set(numbers.tolist()) - set(self.z_table))
            if unknown:
                from ase.data import chemical_symbols

                raise InputError(f"the distilled model knows {self.z_table} only, not {[chemical_symbols[z] for z in unknown]}; "
                                 "distil a model with those elements.")
            idx = torch.tensor([self.z_table.index(int(z)) for z in numbers], device=self.device)
            n = len(numbers)
            static = {
                "node_attrs": torch.nn.functional.one_hot(idx, len(self.z_table)).to(self.torch_dtype),
                "batch": torch.zeros(n, dtype=torch.long, device=self.device),
                "ptr": torch.tensor([0, n], dtype=torch.long, device=self.device),
                "head": torch.zeros(1, dtype=torch.long, device=self.device),
            }
            self._static = (numbers.copy(), static)
        return dict(self._static[1])

    def _neighbours(self, a: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Edges within r_max: (edge_index (2, E), shifts (E, 3) Å, unit_shifts (E, 3), cell (3, 3) Å).

        Verlet list: mace's ``get_neighborhood`` runs with r_max + skin only when an atom has
        moved more than skin/2 since the last build (or the cell, atoms or pbc changed); in
        between, the stored candidate pairs are filtered by their current distance. Every pair
        within r_max is then among the candidates, so the edges are exactly those of a fresh
        search (in another order: forces agree to float32 round-off).
        """
        from mace.data.neighborhood import get_neighborhood

        pos = np.asarray(a.positions, dtype=float)
        cell = np.array(a.cell.array, dtype=float)
        pbc = tuple(bool(x) for x in a.pbc)
        nl = self._nl
        stale = nl is None or nl["pos"].shape != pos.shape or nl["pbc"] != pbc or not np.array_equal(nl["cell"], cell)
        if not stale:
            moved = pos - nl["pos"]
            stale = np.einsum("ij,ij->i", moved, moved).max(initial=0.0) > (0.5 * self.skin_A) ** 2
        if stale:
            # (mace replaces the rows of non-periodic directions by a large box: that cell goes to the model)
            edge_index, _, unit_shifts, model_cell = get_neighborhood(pos, cutoff=self.r_max + self.skin_A, pbc=pbc, cell=cell.copy())
            nl = self._nl = {"pos": pos.copy(), "cell": cell, "pbc": pbc, "edge_index": edge_index, "unit_shifts": unit_shifts,
                             "model_cell": model_cell}
            self.neighbour_builds += 1
        edge_index, unit_shifts, model_cell = nl["edge_index"], nl["unit_shifts"], nl["model_cell"]
        shifts = unit_shifts @ model_cell
        if self.skin_A > 0:  # (a fresh search at r_max needs no filtering)
            d = pos[edge_index[1]] - pos[edge_index[0]] + shifts
            keep = np.einsum("ij,ij->i", d, d) < self.r_max**2
            edge_index, unit_shifts, shifts = edge_index[:, keep], unit_shifts[keep], shifts[keep]
        return edge_index, shifts, unit_shifts, model_cell

    def calculate(self, atoms: Atoms | None = None, properties: Any = ("energy",), system_changes: Any = all_changes) -> None:
        import torch

        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        edge_index, shifts, unit_shifts, cell = self._neighbours(a)
        t = lambda x, dt=None: torch.as_tensor(np.asarray(x), dtype=dt or self.torch_dtype, device=self.device)  # noqa: E731
        data = self._static_inputs(a.numbers) | {
            "positions": t(a.positions), "cell": t(cell), "shifts": t(shifts), "unit_shifts": t(unit_shifts),
            "edge_index": t(edge_index, torch.long),
        }
        want_stress = "stress" in properties
        out = None if want_stress else self._compiled_forces(data)
        if out is None:
            out = self.model(data, compute_force=True, compute_stress=want_stress, training=False)
        e = float(out["energy"].detach().cpu().numpy()[0])
        self.results = {"energy": e, "free_energy": e, "forces": out["forces"].detach().cpu().numpy().astype(float)}
        if want_stress and out.get("stress") is not None:
            from ase.stress import full_3x3_to_voigt_6_stress

            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"].detach().cpu().numpy()[0].astype(float))


def _result_from_manifest(out: Path, m: dict[str, Any]) -> DistillResult:
    return DistillResult(out, m["n_train"], m["n_valid"], m["errors"], DistilledDomain(**m["domain"]), m["teacher"],
                         m["train_wall_time_s"], m.get("flagged", []))


def load_distilled(path: str | os.PathLike, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The MACE calculator of a distilled folder and its manifest."""
    p = Path(path)
    if p.is_file() and p.name == MANIFEST:
        p = p.parent
    manifest = p / MANIFEST
    if not manifest.exists():
        raise InputError(f"--forcefield distilled:{path}: no {MANIFEST} in that folder; give the -o folder of a finished `ionraman distill`.")
    m = json.loads(manifest.read_text())
    return DistilledCalculator(p / m.get("model_file", MODEL_FILE), m.get("dtype", "float32"), device), m
