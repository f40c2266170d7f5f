"""Molecular dynamics driver: equilibration, production NVT, H5MD output, checkpoints, guards.

Protocol (see docs/physics/md.md for the why):

1. optional relaxation of the positions (FIRE) at fixed cell;
2. optional NPT equilibration of the cell at T (Berendsen barostat), after which
   the cell is fixed to the mean cell of the second half of that stage;
3. Maxwell–Boltzmann velocities at T (seeded) and thermalisation with a strongly
   coupled Bussi thermostat (τ = ``equilibration_tau_fs``);
4. production NVT with a weakly coupled Bussi stochastic velocity-rescaling
   thermostat (τ = ``thermostat_tau_fs``), frames every ``sample_every`` steps
   appended to an H5MD file.

A checkpoint (``<traj>.ckpt.npz``, written atomically) holds positions, momenta,
cell, step and the random generator's state, so that ``resume=True`` continues a
killed run and reproduces the uninterrupted one. Guards stop a run with a clear
message when forces explode, atoms come too close or the temperature runs away;
every frame written so far stays in the file.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.data import covalent_radii
from ase.md.bussi import Bussi
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
# matscipy's C neighbour list has ASE's interface and is ~25× faster for 100-atom cells; the
# per-frame guards and integrity checks would otherwise cost more than a distilled force call
from matscipy.neighbours import neighbour_list as neighbor_list

from . import __version__
from .errors import InputError, SimulationError
from .forcefields import ForceField
from .integrity import IntegrityMonitor
from .trajectory import H5MDWriter, read_metadata

__all__ = ["MDConfig", "MDResult", "run_md", "checkpoint_path"]


@dataclass(frozen=True)
class MDConfig:
    """Settings of one MD run. Times in ps or fs as named, temperature in K."""

    temperature_K: float
    time_ps: float
    timestep_fs: float = 2.0
    equilibrate_ps: float = 1.0
    sample_every: int = 5
    seed: int = 0
    thermostat_tau_fs: float = 100.0
    equilibration_tau_fs: float = 20.0
    relax: bool = False
    relax_fmax_eV_A: float = 0.05
    npt_ps: float = 0.0
    pressure_GPa: float = 0.0
    bulk_modulus_GPa: float = 30.0  # only sets the barostat's response time scale
    checkpoint_every_frames: int = 50
    max_force_eV_A: float = 50.0
    min_distance_factor: float = 0.5
    max_temperature_factor: float = 3.0

    def validate(self) -> None:
        """Raise InputError for settings that cannot give a meaningful run."""
        if not (self.temperature_K > 0 and math.isfinite(self.temperature_K)):
            raise InputError(f"-T/--temperature is {self.temperature_K} K; give a positive temperature in kelvin, e.g. -T 600.")
        if not self.time_ps > 0:
            raise InputError(f"--time is {self.time_ps} ps; give a positive production length in ps, e.g. --time 5.")
        if not 0 < self.timestep_fs <= 10:
            raise InputError(f"--timestep is {self.timestep_fs} fs; use 0.5–4 fs (2 fs is typical without hydrogen).")
        if self.sample_every < 1:
            raise InputError(f"--sample-every is {self.sample_every}; give a positive number of steps between frames.")
        if self.equilibrate_ps < 0 or self.npt_ps < 0:
            raise InputError("--equilibrate and --npt must not be negative; use 0 to skip a stage.")
        if self.production_steps < self.sample_every:
            raise InputError(
                f"--time {self.time_ps} ps is shorter than one sampling interval "
                f"({self.sample_every} × {self.timestep_fs} fs); run longer or sample more often."
            )

    @property
    def production_steps(self) -> int:
        return int(round(self.time_ps * 1000.0 / self.timestep_fs))

    @property
    def n_frames(self) -> int:
        """Frames written in production, including the one at t = 0."""
        return self.production_steps // self.sample_every + 1

    def dynamics_key(self) -> dict[str, Any]:
        """Settings that must match for a resumed run to continue the same trajectory."""
        d = asdict(self)
        d.pop("time_ps")
        d.pop("checkpoint_every_frames")
        return d


@dataclass(frozen=True)
class MDResult:
    """What a finished (or resumed) MD run produced."""

    path: Path
    n_frames: int
    time_ps: float
    n_atoms: int
    ns_per_day: float
    atom_steps_per_s: float
    resumed: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(traj_path: str | os.PathLike) -> Path:
    """Where the checkpoint of a trajectory lives."""
    p = Path(traj_path)
    return p.with_name(p.name + ".ckpt.npz")


@dataclass
class _Snapshot:
    """The dynamical state right after a frame was written (what a checkpoint stores)."""

    positions: np.ndarray
    momenta: np.ndarray
    cell: np.ndarray
    numbers: np.ndarray
    step: int
    frames: int
    rng_state: dict[str, Any]

    @classmethod
    def take(cls, atoms: Atoms, step: int, frames: int, rng: np.random.Generator) -> _Snapshot:
        return cls(
            atoms.get_positions(), atoms.get_momenta(), atoms.cell.array.copy(), atoms.numbers.copy(),
            step, frames, dict(rng.bit_generator.state),
        )

    def save(self, path: Path, cfg: MDConfig) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            positions=self.positions,
            momenta=self.momenta,
            cell=self.cell,
            numbers=self.numbers,
            step=np.array(self.step),
            frames=np.array(self.frames),
            rng_state=np.array(json.dumps(self.rng_state)),
            config=np.array(json.dumps(cfg.dynamics_key())),
        )
        os.replace(tmp, path)  # a checkpoint is complete or absent, never half-written


def _load_checkpoint(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class _Guards:
    """Checks that stop a run that has gone unphysical."""

    def __init__(self, atoms: Atoms, cfg: MDConfig, label: str) -> None:
        self.cfg = cfg
        self.label = label
        radii = covalent_radii[atoms.numbers]
        self.pair_min = cfg.min_distance_factor * (radii[:, None] + radii[None, :])
        self.cutoff = float(self.pair_min.max())
        self.t_max = cfg.max_temperature_factor * cfg.temperature_K

    def per_step(self, atoms: Atoms, forces: np.ndarray, t_ps: float) -> None:
        if not np.isfinite(forces).all():
            raise SimulationError(f"{self.label}: forces became NaN at t = {t_ps:.3f} ps; the force field failed on this geometry.")
        fmax = float(np.sqrt((forces**2).sum(axis=1)).max())
        if fmax > self.cfg.max_force_eV_A:
            raise SimulationError(
                f"{self.label}: the largest force reached {fmax:.0f} eV/Å at t = {t_ps:.3f} ps "
                f"(limit {self.cfg.max_force_eV_A:g} eV/Å) — the structure is blowing up; use a smaller --timestep "
                "or check the structure and force field."
            )
        temp = atoms.get_temperature()
        if temp > self.t_max:
            raise SimulationError(
                f"{self.label}: the temperature ran away to {temp:.0f} K at t = {t_ps:.3f} ps "
                f"(target {self.cfg.temperature_K:g} K); use a smaller --timestep or check the force field."
            )

    def per_frame(self, atoms: Atoms, t_ps: float) -> None:
        i, j, d = neighbor_list("ijd", atoms, self.cutoff)
        bad = d < self.pair_min[i, j]
        if bad.any():
            k = int(np.argmax(bad))
            a, b = int(i[k]), int(j[k])
            raise SimulationError(
                f"{self.label}: atoms {a} ({atoms[a].symbol}) and {b} ({atoms[b].symbol}) came within "
                f"{d[k]:.2f} Å at t = {t_ps:.3f} ps (less than {self.cfg.min_distance_factor:g}× their covalent "
                "radii) — unphysical overlap; use a smaller --timestep or check the force field."
            )


def _relax(atoms: Atoms, fmax: float, steps: int = 300) -> int:
    from ase.optimize import FIRE

    opt = FIRE(atoms, logfile=None)
    opt.run(fmax=fmax, steps=steps)
    return int(opt.nsteps)


def _npt(atoms: Atoms, cfg: MDConfig, rng: np.random.Generator) -> np.ndarray:
    """Berendsen NPT at T, P; returns the mean cell of the second half (Å)."""
    from ase.md.nptberendsen import Inhomogeneous_NPTBerendsen

    n = max(2, int(round(cfg.npt_ps * 1000 / cfg.timestep_fs)))
    dyn = Inhomogeneous_NPTBerendsen(
        atoms,
        timestep=cfg.timestep_fs * units.fs,
        temperature_K=cfg.temperature_K,
        pressure_au=cfg.pressure_GPa * units.GPa,
        taut=cfg.equilibration_tau_fs * 5 * units.fs,
        taup=1000 * units.fs,
        compressibility_au=1.0 / (cfg.bulk_modulus_GPa * units.GPa),
    )
    cells = []
    for k in range(n):
        dyn.run(1)
        if k >= n // 2:
            cells.append(atoms.cell.array.copy())
    return np.mean(cells, axis=0)


class _Progress:
    """Rich progress bar with a ns/day rate; silent when disabled."""

    def __init__(self, enabled: bool, total_steps: int, dt_fs: float, description: str) -> None:
        self.enabled = enabled
        self.dt_fs = dt_fs
        self.t0 = time.perf_counter()
        self.done = 0
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._p.start()
        self._task = self._p.add_task(description, total=total_steps, rate="")

    def advance(self, steps: int) -> None:
        self.done += steps
        if not self.enabled:
            return
        el = time.perf_counter() - self.t0
        nsday = self.done * self.dt_fs * 1e-6 / (el / 86400) if el > 0 else 0.0
        self._p.update(self._task, advance=steps, rate=f"{nsday:.2f} ns/day")

    def close(self) -> None:
        if self.enabled:
            self._p.stop()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def run_md(
    atoms: Atoms,
    forcefield: ForceField,
    config: MDConfig,
    output: str | os.PathLike,
    resume: bool = False,
    metadata: dict[str, Any] | None = None,
    progress: bool = False,
    on_frame: Callable[[int, Atoms], None] | None = None,
    integrity: str = "flag",
) -> MDResult:
    """Run equilibration + production MD and write an H5MD trajectory.

    Parameters
    ----------
    atoms : the starting structure (not modified).
    forcefield : from :func:`ionraman.forcefields.get_forcefield`.
    config : run settings (temperatures in K, times in ps/fs).
    output : H5MD path; its checkpoint is ``<output>.ckpt.npz``.
    resume : continue from the checkpoint if there is one (extending
        ``time_ps`` is allowed; other dynamics settings must match).
    metadata : extra attributes stored in ``/parameters/ionraman``.
    progress : show a progress bar with ns/day and ETA.
    on_frame : called as ``on_frame(frame_index, atoms)`` after each frame is
        written (a place for user monitors; raising KeyboardInterrupt there
        stops the run cleanly with a checkpoint).
    integrity : the chemical-integrity monitor (:mod:`ionraman.integrity`),
        referenced to the input structure (after the relaxation when ``relax``): ``"stop"`` ends the run as failed
        when the framework breaks, ``"flag"`` (default) records it in the
        metadata (``integrity``, ``integrity_ok``) and goes on, ``"off"``.
    """
    config.validate()
    if integrity not in ("stop", "flag", "off"):
        raise InputError(f"integrity='{integrity}' is not one of stop, flag, off.")
    out = Path(output)
    label = out.name
    ckpt = checkpoint_path(out)
    atoms = atoms.copy()
    forcefield.check_elements(atoms, label)
    domain_notes = forcefield.check_domain(atoms, config.temperature_K, label)
    mobile = (metadata or {}).get("mobile_ion")

    def start_monitor(start: Atoms) -> IntegrityMonitor | None:
        # referenced to the structure the run starts from: after the relaxation when ``relax``
        # is on, since an affinely strained input's bonds are compressed or stretched and
        # would make the coordination shell wrong
        return IntegrityMonitor(start, {mobile} if mobile else None) if integrity != "off" else None

    atoms.calc = forcefield.calculator
    dt = config.timestep_fs * units.fs
    rng = np.random.default_rng(config.seed)

    meta: dict[str, Any] = {
        **(metadata or {}),
        **forcefield.describe(),
        "temperature_K": config.temperature_K,
        "timestep_fs": config.timestep_fs,
        "sample_every": config.sample_every,
        "frame_interval_fs": config.timestep_fs * config.sample_every,
        "production_ps": config.time_ps,
        "equilibrate_ps": config.equilibrate_ps,
        "npt_ps": config.npt_ps,
        "relax": config.relax,
        "seed": config.seed,
        **({"forcefield_domain_warnings": domain_notes} if domain_notes else {}),
        "thermostat": f"Bussi stochastic velocity rescaling (NVT), tau = {config.thermostat_tau_fs:g} fs",
        "equilibration_thermostat": f"Bussi, tau = {config.equilibration_tau_fs:g} fs",
        "ionraman_version": __version__,
        "md_config": config.dynamics_key() | {"time_ps": config.time_ps},
    }

    resumed = False
    frames_done = 0
    prior_integrity: dict[str, Any] | None = None
    if resume and ckpt.exists() and out.exists():
        state = _load_checkpoint(ckpt)
        if json.loads(str(state["config"])) != config.dynamics_key():
            raise InputError(
                f"{ckpt}: the checkpoint was written with different MD settings; rerun with the original settings "
                "(only --time may change) or start afresh without --resume."
            )
        if len(state["numbers"]) != len(atoms) or (state["numbers"] != atoms.numbers).any():
            raise InputError(f"{ckpt}: the checkpoint holds a different structure; start afresh without --resume.")
        start = atoms.copy()
        if integrity != "off" and config.relax:  # the same (deterministic) relaxed start as the first session
            start.calc = forcefield.calculator
            _relax(start, config.relax_fmax_eV_A)
        monitor = start_monitor(start)
        atoms.set_cell(state["cell"], scale_atoms=False)
        atoms.set_positions(state["positions"])
        atoms.set_momenta(state["momenta"])
        rng.bit_generator.state = json.loads(str(state["rng_state"]))
        frames_done = int(state["frames"])
        step = int(state["step"])
        # what the monitor saw before the interruption (a fresh monitor only sees what follows)
        prior_integrity = read_metadata(out).get("integrity")
        writer = H5MDWriter(out, mode="a", buffer_frames=config.checkpoint_every_frames)
        if writer.n_frames < frames_done:
            raise InputError(f"{out}: holds {writer.n_frames} frames but its checkpoint {ckpt.name} was taken at frame "
                             f"{frames_done}; the file was cut short, so start afresh without --resume.")
        writer.truncate(frames_done)
        writer.update_metadata(meta | {"status": "running", "resumed": True})
        resumed = True
    else:
        if resume and not ckpt.exists() and out.exists():
            raise InputError(f"{out}: exists but has no checkpoint {ckpt.name} to resume from; delete it or choose another -o.")
        step = 0
        guards_eq = _Guards(atoms, config, label)
        if config.relax:
            meta["relax_steps"] = _relax(atoms, config.relax_fmax_eV_A)
        monitor = start_monitor(atoms)
        MaxwellBoltzmannDistribution(atoms, temperature_K=config.temperature_K, rng=rng)
        Stationary(atoms)
        if config.npt_ps > 0:
            mean_cell = _npt(atoms, config, rng)
            atoms.set_cell(mean_cell, scale_atoms=True)
            meta["npt_mean_cell_A"] = mean_cell.tolist()
        n_eq = int(round(config.equilibrate_ps * 1000 / config.timestep_fs))
        if n_eq:
            eq = Bussi(atoms, dt, config.temperature_K, config.equilibration_tau_fs * units.fs, rng=rng)
            bar = _Progress(progress, n_eq, config.timestep_fs, "equilibrating")
            try:
                forces = None
                for k in range(n_eq):
                    forces = eq.step(forces)
                    t_eq = -(n_eq - k - 1) * config.timestep_fs / 1000  # production starts at t = 0
                    guards_eq.per_step(atoms, forces, t_eq)
                    if monitor is not None and (k + 1) % config.sample_every == 0:
                        _integrity(monitor, atoms, t_eq, integrity, label)
                    bar.advance(1)
            finally:
                bar.close()
        # frames reach the disk in blocks, each written just before the checkpoint that counts them
        writer = H5MDWriter(out, numbers=atoms.numbers, metadata=meta | {"status": "running"}, mode="w",
                            buffer_frames=config.checkpoint_every_frames)
        _Snapshot.take(atoms, 0, 0, rng).save(ckpt, config)

    guards = _Guards(atoms, config, label)
    dyn = Bussi(atoms, dt, config.temperature_K, config.thermostat_tau_fs * units.fs, rng=rng)
    total_frames = config.n_frames
    bar = _Progress(progress, (total_frames - frames_done) * config.sample_every, config.timestep_fs, "production MD")
    steps_run = 0
    last = _Snapshot.take(atoms, step, frames_done, rng)
    try:
        forces = atoms.get_forces()
        if frames_done == 0:
            guards.per_frame(atoms, 0.0)
            if monitor is not None:
                _integrity(monitor, atoms, 0.0, integrity, label)
            _append(writer, atoms, 0, config)
            frames_done = 1
            last = _Snapshot.take(atoms, step, frames_done, rng)
            if on_frame:
                on_frame(0, atoms)
        while frames_done < total_frames:
            for _ in range(config.sample_every):
                forces = dyn.step(forces)
                step += 1
                steps_run += 1
                guards.per_step(atoms, forces, step * config.timestep_fs / 1000)
            bar.advance(config.sample_every)
            guards.per_frame(atoms, step * config.timestep_fs / 1000)
            if monitor is not None:
                _integrity(monitor, atoms, step * config.timestep_fs / 1000, integrity, label)
            _append(writer, atoms, step, config)
            frames_done += 1
            last = _Snapshot.take(atoms, step, frames_done, rng)
            if frames_done % config.checkpoint_every_frames == 0:
                writer.flush()
                last.save(ckpt, config)
            if on_frame:
                on_frame(frames_done - 1, atoms)
    except KeyboardInterrupt:
        # the state at the last written frame, not mid-interval, so that a resumed
        # run continues on the same frame grid
        writer.truncate(last.frames)
        last.save(ckpt, config)
        writer.update_metadata({"status": "interrupted", **_integrity_meta(monitor, prior_integrity)})
        writer.close()
        bar.close()
        raise
    except SimulationError as exc:
        writer.update_metadata({"status": "failed", "failure": str(exc), **_integrity_meta(monitor, prior_integrity)})
        writer.close()
        bar.close()
        raise
    bar.close()
    writer.flush()
    last.save(ckpt, config)
    elapsed = bar.elapsed
    rate = steps_run * len(atoms) / elapsed if elapsed > 0 and steps_run else float("nan")
    nsday = steps_run * config.timestep_fs * 1e-6 / (elapsed / 86400) if elapsed > 0 and steps_run else float("nan")
    writer.update_metadata({"status": "finished", "ns_per_day": nsday, **_integrity_meta(monitor, prior_integrity)})
    writer.close()
    meta.update(_integrity_meta(monitor, prior_integrity))
    return MDResult(
        path=out,
        n_frames=frames_done,
        time_ps=(frames_done - 1) * config.sample_every * config.timestep_fs / 1000,
        n_atoms=len(atoms),
        ns_per_day=nsday,
        atom_steps_per_s=rate,
        resumed=resumed,
        metadata=meta,
    )


def _integrity(monitor: IntegrityMonitor, atoms: Atoms, t_ps: float, mode: str, label: str) -> None:
    c = monitor.check(atoms, t_ps)
    if mode == "stop":
        monitor.raise_if_broken(c, label)


def _integrity_meta(monitor: IntegrityMonitor | None, prior: dict[str, Any] | None = None) -> dict[str, Any]:
    """The integrity record of the run: this session's monitor merged with the record of the
    sessions before a resume (a framework that broke before an interruption stays broken)."""
    if monitor is None:
        return {}
    rep = monitor.report().to_dict()
    if prior:
        rep["n_frames_checked"] = int(prior.get("n_frames_checked", 0)) + rep["n_frames_checked"]
        rep["anion_anion_bonds_max"] = max(int(prior.get("anion_anion_bonds_max", 0)), rep["anion_anion_bonds_max"])
        rep["framework_msd_max_A2"] = max(float(prior.get("framework_msd_max_A2", 0.0)), rep["framework_msd_max_A2"])
        mins = [c for c in (prior.get("framework_coordination_min"), rep["framework_coordination_min"]) if c is not None]
        rep["framework_coordination_min"] = min(mins) if mins else None
        if not prior.get("ok", True):
            rep.update(ok=False, first_failure_ps=prior.get("first_failure_ps"), reason=prior.get("reason", rep["reason"]))
    return {"integrity": rep, "integrity_ok": bool(rep["ok"])}


def _append(writer: H5MDWriter, atoms: Atoms, step: int, cfg: MDConfig) -> None:
    writer.append(
        step=step,
        time_fs=step * cfg.timestep_fs,
        unwrapped_positions=atoms.get_positions(),
        cell=atoms.cell.array,
        velocities_A_per_fs=atoms.get_velocities() * units.fs,
        temperature_K=atoms.get_temperature(),
        potential_energy_eV=float(atoms.get_potential_energy()),
    )
