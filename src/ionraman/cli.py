"""Command-line interface: a thin layer that parses options, calls the API and prints.

Every command turns :class:`~ionraman.errors.InputError` (bad input) and
:class:`~ionraman.errors.SimulationError` (a guard stopped a run) into one line
on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from . import __version__
from .errors import InputError, SimulationError
from .structures import formula

app = typer.Typer(
    name="ionraman",
    help="Low-frequency Raman fingerprints of fast ion conduction from ML molecular dynamics.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(fn: F) -> F:
    """Print InputError/SimulationError as one sentence and exit non-zero."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except SimulationError as exc:
            typer.echo(f"simulation stopped: {exc}", err=True)
            raise typer.Exit(3) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: progress was checkpointed; rerun the same command with --resume to continue.", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        typer.echo(f"ionraman {__version__}")
        raise typer.Exit()


# --------------------------------------------------------------------------- structures


@app.command()
@_friendly
def structures(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False) -> None:
    """List the built-in candidate structures (shipped CIF files with provenance)."""
    from .structures import builtin_structures

    items = [b.to_dict() for b in builtin_structures()]
    if as_json:
        _print_json(items)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Built-in candidates")
    for col in ("name", "formula", "space group", "mobile ion", "source"):
        t.add_column(col)
    for b in builtin_structures():
        t.add_row(b.name, b.formula, f"{b.spacegroup_symbol} ({b.spacegroup_number})", b.mobile_ion, b.source)
    Console().print(t)


# --------------------------------------------------------------------------- md


def _load(
    structure: str,
    supercell: str | None,
    min_atoms: int | None,
    cutoff_A: float,
    seed: int,
    vacancies: str | None = None,
    substitute: list[str] | None = None,
    mobile_ion: str | None = None,
    trials: int = 1,
    forcefield: Any = None,
):
    from .structures import load_structure

    loaded = load_structure(
        structure,
        supercell=supercell,
        min_atoms=min_atoms,
        min_width_A=2.0 * cutoff_A if min_atoms else None,
        seed=seed,
        vacancies=vacancies,
        substitutions=substitute or None,
        mobile_ion=mobile_ion,
        defect_trials=trials,
        forcefield=forcefield,
    )
    if loaded.ordering:
        typer.echo(f"partial occupancies ordered with seed {seed}: {json.dumps(loaded.ordering['groups'])}", err=True)
    if loaded.defects:
        d = loaded.defects
        typer.echo(
            f"defects (seed {seed}): substitutions {d['substitutions']}, vacancies {d['vacancies']}, "
            f"interstitials {d['interstitials']} → {d['formula']}, net formal charge {d['net_formal_charge']:+g}",
            err=True,
        )
    return loaded


_VAC_HELP = "Vacancies, ELEMENT:COUNT or ELEMENT:FRACTION, e.g. Na:2."
_SUB_HELP = "Substitution HOST:DOPANT:AMOUNT (fraction or count), e.g. Sb:W:0.125; charge compensated by the mobile ion."


@app.command()
@_friendly
def md(
    structure: Annotated[str, typer.Argument(help="Built-in name (see `ionraman structures`) or CIF/POSCAR/extxyz path.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="H5MD trajectory to write.")],
    temperature: Annotated[float, typer.Option("-T", "--temperature", help="Temperature in K.")],
    time: Annotated[float, typer.Option("--time", help="Production length in ps.")] = 10.0,
    timestep: Annotated[float, typer.Option("--timestep", help="Time step in fs.")] = 2.0,
    forcefield: Annotated[str, typer.Option("--forcefield", help="auto (the DFT-fine-tuned model shipped for the candidate, else chgnet), chgnet, sevennet[:MODEL], finetuned:PATH, mace:FILE, python:MOD:FACTORY.")] = "auto",
    supercell: Annotated[str | None, typer.Option("--supercell", help="Repeats, e.g. 2x2x2.")] = None,
    min_atoms: Annotated[int | None, typer.Option("--min-atoms", help="Smallest supercell with ≥ N atoms and widths ≥ 2× the cutoff.")] = None,
    equilibrate: Annotated[float, typer.Option("--equilibrate", help="Thermalisation before production, ps.")] = 1.0,
    npt: Annotated[float, typer.Option("--npt", help="NPT cell equilibration at T before thermalisation, ps (0: fixed cell).")] = 0.0,
    relax: Annotated[bool, typer.Option("--relax/--no-relax", help="Relax positions (FIRE) before MD.")] = False,
    sample_every: Annotated[int, typer.Option("--sample-every", help="Steps between stored frames.")] = 5,
    thermostat_tau: Annotated[float, typer.Option("--thermostat-tau", help="Bussi coupling time in production, fs.")] = 100.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed for velocities, thermostat, site ordering and defects.")] = 0,
    vacancies: Annotated[str | None, typer.Option("--vacancies", help=_VAC_HELP)] = None,
    substitute: Annotated[list[str] | None, typer.Option("--substitute", help=_SUB_HELP)] = None,
    mobile_ion: Annotated[str | None, typer.Option("--mobile-ion", help="Mobile ion (default: the catalog's).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint of OUTPUT.")] = False,
    integrity: Annotated[str, typer.Option("--integrity", help="When the framework breaks: stop (fail the run), flag (warn, record, go on), off.")] = "flag",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Finite-temperature ML-force-field MD: equilibrate, then NVT production written to H5MD.

    A chemical-integrity monitor watches the framework (new anion–anion bonds,
    changed cation coordination, framework diffusion); --integrity stop ends the
    run as failed when it breaks, the default (flag) records it in the file and
    warns.
    """
    from .forcefields import get_forcefield
    from .md import MDConfig, run_md

    cfg = MDConfig(
        temperature_K=temperature,
        time_ps=time,
        timestep_fs=timestep,
        equilibrate_ps=equilibrate,
        npt_ps=npt,
        relax=relax,
        sample_every=sample_every,
        thermostat_tau_fs=thermostat_tau,
        seed=seed,
    )
    cfg.validate()  # before the (slow) model load
    from .forcefields import resolve_forcefield

    ff = get_forcefield(resolve_forcefield(forcefield, structure))
    loaded = _load(structure, supercell, min_atoms, ff.cutoff_A, seed, vacancies, substitute, mobile_ion)
    ff.check_elements(loaded.atoms, loaded.name)
    typer.echo(
        f"{loaded.name}: {formula(loaded.atoms)}, {len(loaded.atoms)} atoms, "
        f"supercell {'x'.join(map(str, loaded.repeats))}; force field {ff.version}"
    )
    res = run_md(
        loaded.atoms, ff, cfg, output, resume=resume, metadata=loaded.describe(), progress=progress,
        integrity=integrity,
    )
    if not res.metadata.get("integrity_ok", True):
        typer.echo(
            f"WARNING: {res.metadata['integrity']['reason']} — the force field does not hold this material's chemistry "
            "here; transport and spectra from this run are not trustworthy (use --integrity stop to fail such runs).",
            err=True,
        )
    typer.echo(
        f"wrote {res.path}: {res.n_frames} frames, {res.time_ps:.2f} ps at {temperature:g} K "
        f"({res.ns_per_day:.3g} ns/day, {res.atom_steps_per_s:.3g} atom-steps/s)"
    )


@app.command()
@_friendly
def build(
    structure: Annotated[str, typer.Argument(help="Built-in name or CIF/POSCAR/extxyz path.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Structure file to write (extxyz, cif, vasp … by extension).")],
    supercell: Annotated[str | None, typer.Option("--supercell", help="Repeats, e.g. 2x2x2.")] = None,
    min_atoms: Annotated[int | None, typer.Option("--min-atoms", help="Smallest supercell with ≥ N atoms (widths ≥ 12 Å).")] = None,
    vacancies: Annotated[str | None, typer.Option("--vacancies", help=_VAC_HELP)] = None,
    substitute: Annotated[list[str] | None, typer.Option("--substitute", help=_SUB_HELP)] = None,
    mobile_ion: Annotated[str | None, typer.Option("--mobile-ion", help="Mobile ion (default: the catalog's).")] = None,
    trials: Annotated[int, typer.Option("--trials", help="Keep the lowest-energy of N placements (relaxed with --forcefield).")] = 1,
    forcefield: Annotated[str, typer.Option("--forcefield", help="Force field for --trials > 1.")] = "chgnet",
    seed: Annotated[int, typer.Option("--seed", help="Seed of site ordering and defect placement.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Build a (super)cell with ordered occupancies and point defects, and write it for inspection."""
    import ase.io

    from .forcefields import get_forcefield

    ff = get_forcefield(forcefield) if trials > 1 else None
    loaded = _load(structure, supercell, min_atoms, 6.0, seed, vacancies, substitute, mobile_ion, trials, ff)
    atoms = loaded.atoms.copy()
    atoms.info.update({"ionraman_structure": loaded.name, "ionraman_seed": seed})
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    fmt = "extxyz" if output.suffix.lower() in (".xyz", ".extxyz") else None
    ase.io.write(tmp, atoms, format=fmt or ase.io.formats.filetype(output, read=False))
    tmp.replace(output)
    d = loaded.defects or {}
    summary = {
        "formula": formula(atoms),
        "n_atoms": len(atoms),
        "supercell": list(loaded.repeats),
        "vacancies": d.get("vacancies", {}),
        "interstitials": d.get("interstitials", {}),
        "substitutions": d.get("substitutions", {}),
        "oxidation_states": d.get("oxidation_states", {}),
        "net_formal_charge": d.get("net_formal_charge", 0.0),
        "seed": seed,
        "ordering": loaded.ordering.get("groups", {}),
        "output": str(output),
    }
    if as_json:
        _print_json(summary)
    else:
        typer.echo(f"wrote {output}: {summary['formula']} ({summary['n_atoms']} atoms)")


# --------------------------------------------------------------------------- transport


@app.command()
@_friendly
def diffusion(
    trajectory: Annotated[Path, typer.Argument(help="H5MD trajectory from `ionraman md`.")],
    species: Annotated[list[str] | None, typer.Option("--species", help="Element(s) to analyse (default: the mobile ion).")] = None,
    fit_start: Annotated[float | None, typer.Option("--fit-start", help="Start of the MSD fit window, ps.")] = None,
    fit_stop: Annotated[float | None, typer.Option("--fit-stop", help="End of the MSD fit window, ps.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write MSD / van Hove / VDOS plots with this PNG prefix.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output with units.")] = False,
) -> None:
    """Tracer diffusion, Nernst–Einstein conductivity and the hopping/liquid-like indicator."""
    from . import transport
    from .trajectory import read_h5md

    traj = read_h5md(trajectory)
    res = transport.analyse(traj, species=species, fit_start_ps=fit_start, fit_stop_ps=fit_stop)
    if plot is not None:
        transport.plot_report(traj, res, plot)
    d = res.to_dict()
    d["trajectory"] = str(trajectory)
    d["integrity"] = _integrity_of(traj)
    if as_json:
        _print_json(d)
        return
    typer.echo(f"{trajectory}: {d['duration_ps']:.2f} ps, {d['n_frames']} frames, T = {d['temperature_K']:g} K")
    for sp, r in d["species"].items():
        typer.echo(
            f"  {sp}: D = {r['D_cm2_s']:.3e} ± {r['D_err_cm2_s']:.1e} cm²/s, "
            f"σ(NE, H_R=1) = {r['sigma_S_cm']:.3e} S/cm, away-from-site fraction {r.get('away_from_site_fraction', float('nan')):.3f}, "
            f"hops {r.get('n_hops', 'n/a')}"
        )
    if not d["integrity"]["ok"]:
        typer.echo(f"  WARNING: {d['integrity']['reason']} — transport numbers from this run are not trustworthy", err=True)


def _integrity_of(traj) -> dict[str, Any]:
    """The integrity report stored by `ionraman md`, or one computed now from the frames."""
    if isinstance(traj.metadata.get("integrity"), dict):
        return traj.metadata["integrity"]
    from .integrity import check_trajectory

    return check_trajectory(traj, every=max(1, traj.n_frames // 200)).to_dict()


@app.command()
@_friendly
def arrhenius(
    trajectories: Annotated[list[Path], typer.Argument(help="H5MD trajectories at different temperatures.")],
    species: Annotated[str | None, typer.Option("--species", help="Element (default: the mobile ion).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Arrhenius plot PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output with units.")] = False,
) -> None:
    """Arrhenius fit of D(T) across trajectories: activation energy ± error and D at 300 K."""
    from . import transport
    from .trajectory import read_h5md

    temps, ds, errs = [], [], []
    sp = species
    for p in trajectories:
        traj = read_h5md(p)
        sp = sp or traj.metadata.get("mobile_ion") or None
        if sp is None:
            raise InputError(f"{p}: the trajectory does not say which ion is mobile; pass --species, e.g. --species Na.")
        r = transport.diffusion_coefficient(traj, sp)
        temps.append(traj.temperature_K)
        ds.append(r.D_cm2_s)
        errs.append(r.D_err_cm2_s)
    fit = transport.arrhenius_fit(temps, ds, errs)
    if plot is not None:
        transport.plot_arrhenius(fit, plot)
    out = {"species": sp, **fit.to_dict()}
    if as_json:
        _print_json(out)
        return
    typer.echo(f"{sp}: Ea = {fit.Ea_eV:.3f} ± {fit.Ea_err_eV:.3f} eV from {len(temps)} temperatures")


@app.command()
@_friendly
def export(
    trajectory: Annotated[Path, typer.Argument(help="H5MD trajectory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Extended-XYZ file to write.")],
    every: Annotated[int, typer.Option("--every", help="Write every N-th frame.")] = 1,
    last: Annotated[bool, typer.Option("--last", help="Only the last frame.")] = False,
    wrap: Annotated[bool, typer.Option("--wrap/--no-wrap", help="Wrap atoms into the cell.")] = True,
) -> None:
    """Write frames as extended XYZ (time in fs, velocities in Å/fs) for ASE, OVITO and others."""
    import ase.io
    import numpy as np

    from .trajectory import read_h5md

    if every < 1:
        raise InputError(f"--every {every}: give a positive frame stride.")
    traj = read_h5md(trajectory)
    idx = [traj.n_frames - 1] if last else list(range(0, traj.n_frames, every))
    frames = []
    for k in idx:
        a = traj.atoms(k, wrap=wrap)
        a.info["time_fs"] = float(traj.time_fs[k])
        if traj.velocities is not None and np.isfinite(traj.velocities[k]).all():
            a.arrays["velocities_A_fs"] = traj.velocities[k]
        frames.append(a)
    tmp = output.with_name(output.name + ".tmp")
    ase.io.write(tmp, frames, format="extxyz")
    tmp.replace(output)
    typer.echo(f"wrote {len(frames)} frame(s) to {output}")


# --------------------------------------------------------------------------- Raman


def _load_series(source: Path, model: Path | None, dt_fs: float | None, temperature: float | None):
    """α(t) from an H5MD trajectory (+ model, or its stored sidecar), an extxyz or a .npy series."""
    from .raman import PolarizabilitySeries

    suffix = source.suffix.lower()
    if not source.exists():
        raise InputError(f"{source}: no such file; give an H5MD trajectory, an extxyz with info['polarizability'] or a .npy α(t).")
    if suffix == ".npy":
        if dt_fs is None:
            raise InputError(f"{source}: a .npy series has no time axis; pass --dt-fs (time between samples in fs).")
        return PolarizabilitySeries.from_npy(source, dt_fs, temperature_K=temperature if temperature else float("nan"))
    if suffix in (".xyz", ".extxyz"):
        if dt_fs is None:
            raise InputError(f"{source}: an extxyz series has no time axis; pass --dt-fs (time between frames in fs).")
        return PolarizabilitySeries.from_extxyz(source, dt_fs, temperature_K=temperature if temperature else float("nan"))
    from .polarizability.series import load_alpha_series

    return load_alpha_series(source, model=model, temperature_K=temperature)


@app.command()
@_friendly
def raman(
    source: Annotated[Path, typer.Argument(help="H5MD trajectory, stored α(t) (.alpha.h5), extxyz or .npy series.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="spectrum.csv to write.")],
    model: Annotated[Path | None, typer.Option("--model", help="Polarizability model file (for a trajectory without stored α(t)).")] = None,
    geometry: Annotated[list[str] | None, typer.Option("--geometry", help="powder (default), VV, VH, unpolarized, isotropic, anisotropic or a Porto string like 'x(zz)-x'; repeatable.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-T", help="Temperature for the Bose/quantum factors, K (default: the trajectory's).")] = None,
    representation: Annotated[str, typer.Option("--representation", help="stokes, reduced or classical.")] = "stokes",
    segment: Annotated[float | None, typer.Option("--segment-ps", help="Welch segment length, ps (sets the resolution 1/(c·T)).")] = None,
    n_segments: Annotated[int | None, typer.Option("--segments", help="Number of Welch segments (default 8).")] = None,
    max_frequency: Annotated[float | None, typer.Option("--max-frequency", help="Highest wavenumber kept, cm⁻¹.")] = 1000.0,
    dt_fs: Annotated[float | None, typer.Option("--dt-fs", help="Time between samples of an extxyz/.npy series, fs.")] = None,
    harmonic: Annotated[Path | None, typer.Option("--harmonic", help="A harmonic spectrum.csv to draw in the same plot.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG of the spectrum.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Raman spectrum from the autocorrelation of α(t): powder VV/VH/unpolarized or single-crystal geometries."""
    from .raman import RamanSpectrum, compute_spectrum

    series = _load_series(source, model, dt_fs, temperature)
    geo: Any = "powder" if not geometry else (geometry[0] if len(geometry) == 1 else list(geometry))
    spec = compute_spectrum(
        series,
        geo,
        temperature_K=temperature,
        segment_ps=segment,
        n_segments=n_segments,
        max_frequency_cm1=max_frequency,
        representation=representation,
    )
    spec.to_csv(output)
    if plot is not None:
        others = [RamanSpectrum.from_csv(harmonic)] if harmonic else []
        spec.plot(plot, others=others, labels=["MD", "harmonic"][: 1 + len(others)])
    summary = {
        "output": str(output),
        "channels": spec.channel_names,
        "temperature_K": spec.temperature_K,
        "representation": spec.representation,
        "resolution_cm1": float(spec.frequency_cm1[1] - spec.frequency_cm1[0]),
        "max_frequency_cm1": float(spec.frequency_cm1[-1]),
        "n_frames": series.n_frames,
        "dt_fs": series.dt_fs,
        "n_segments": spec.metadata.get("n_segments"),
    }
    if as_json:
        _print_json(summary)
    else:
        typer.echo(f"wrote {output}: channels {', '.join(spec.channel_names)}, Δν̃ = {summary['resolution_cm1']:.2f} cm⁻¹")


@app.command()
@_friendly
def fingerprint(
    spectrum: Annotated[Path, typer.Argument(help="spectrum.csv from `ionraman raman` (or any two-column file).")],
    cutoff: Annotated[float, typer.Option("--cutoff", help="ω_c of F_LF, cm⁻¹.")] = 100.0,
    channel: Annotated[str, typer.Option("--channel", help="Channel of the spectrum.")] = "unpolarized",
    representation: Annotated[str, typer.Option("--representation", help="Representation F_LF is computed in (reduced, stokes, classical).")] = "reduced",
    omega_min: Annotated[float, typer.Option("--omega-min", help="Lower integration limit, cm⁻¹.")] = 5.0,
    omega_max: Annotated[float, typer.Option("--omega-max", help="Upper integration limit, cm⁻¹.")] = 800.0,
    harmonic: Annotated[Path | None, typer.Option("--harmonic", help="Harmonic spectrum.csv for the MD/harmonic ratio.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", "-T", help="Temperature, K, if the file does not record it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Low-frequency fingerprint: F_LF ± error, central-peak width and relaxation time."""
    from . import fingerprint as fp
    from .raman import RamanSpectrum

    spec = RamanSpectrum.from_csv(spectrum, temperature_K=temperature)
    harm = RamanSpectrum.from_csv(harmonic, temperature_K=temperature) if harmonic else None
    res = fp.fingerprint(spec, harm, cutoff, channel=channel, representation=representation,
                         omega_min_cm1=omega_min, omega_max_cm1=omega_max)
    d = res.to_dict() | {"spectrum": str(spectrum)}
    if as_json:
        _print_json(d)
        return
    typer.echo(
        f"F_LF(ω < {cutoff:g} cm⁻¹) = {d['F_LF']:.4f} ± {d['F_LF_err'] if d['F_LF_err'] is not None else float('nan'):.4f}; "
        f"central peak HWHM = {d['central_peak_width_cm1'] if d['central_peak_width_cm1'] is not None else float('nan'):.1f} cm⁻¹"
    )


@app.command()
@_friendly
def harmonic(
    structure: Annotated[str, typer.Argument(help="Built-in name or structure file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="harmonic.csv to write.")],
    model: Annotated[str, typer.Option("--model", help="Polarizability model: auto, bond, bond:FILE.json, a model file, python:MOD:FN.")] = "auto",
    forcefield: Annotated[str, typer.Option("--forcefield", help="Force field for the phonons.")] = "chgnet",
    supercell: Annotated[str | None, typer.Option("--supercell", help="Repeats (use the MD cell for absolute comparison).")] = None,
    temperature: Annotated[float, typer.Option("--temperature", "-T", help="Temperature of amplitudes and factors, K.")] = 300.0,
    geometry: Annotated[list[str] | None, typer.Option("--geometry", help="powder (default), VV, VH, … or a Porto string; repeatable.")] = None,
    representation: Annotated[str, typer.Option("--representation", help="stokes, reduced or classical.")] = "stokes",
    fwhm: Annotated[float, typer.Option("--fwhm", help="Lorentzian line FWHM, cm⁻¹.")] = 5.0,
    max_frequency: Annotated[float, typer.Option("--max-frequency", help="Highest wavenumber, cm⁻¹.")] = 1000.0,
    md_spectrum: Annotated[Path | None, typer.Option("--md", help="An MD spectrum.csv to draw in the same plot.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="PNG of the spectrum (with the MD one if given).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of site ordering.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Modes and intensities as JSON.")] = False,
) -> None:
    """Harmonic Raman spectrum: Γ phonons (phonopy) + finite-difference Raman tensors of the polarizability model."""
    from .forcefields import get_forcefield
    from .harmonic import harmonic_spectrum
    from .polarizability.registry import resolve_model
    from .raman import RamanSpectrum

    ff = get_forcefield(forcefield)
    loaded = _load(structure, supercell, None, ff.cutoff_A, seed)
    pol, info = resolve_model(model, loaded.name, loaded.atoms)
    geo: Any = "powder" if not geometry else (geometry[0] if len(geometry) == 1 else list(geometry))
    h = harmonic_spectrum(loaded.atoms, ff.calculator, pol, temperature, geometry=geo, fwhm_cm1=fwhm,
                          max_frequency_cm1=max_frequency, representation=representation)
    h.spectrum.to_csv(output)
    if plot is not None:
        if md_spectrum is not None:
            md_spec = RamanSpectrum.from_csv(md_spectrum)
            md_spec.plot(plot, others=[h.spectrum], labels=["MD", "harmonic"])
        else:
            h.spectrum.plot(plot, labels=["harmonic"])
    d = {"output": str(output), "structure": loaded.name, "n_atoms": len(loaded.atoms), "model": info,
         "spacegroup": h.modes.spacegroup, "n_imaginary": h.spectrum.metadata.get("n_imaginary"), "modes": h.line_table}
    if as_json:
        _print_json(d)
        return
    active = [r for r in h.line_table if r.get("unpolarized_A6", 0) > 0 or r.get(f"{h.spectrum.channel_names[0]}_A6", 0) > 0]
    typer.echo(f"wrote {output}: {len(h.line_table)} modes ({d['n_imaginary']} imaginary), space group {d['spacegroup']}")
    for r in sorted(active, key=lambda r: -max(v for k, v in r.items() if k.endswith("_A6")))[:8]:
        typer.echo(f"  {r['frequency_cm1']:8.1f} cm⁻¹ {r['label']:>5}")


@app.command()
@_friendly
def select(
    trajectories: Annotated[list[Path], typer.Argument(help="H5MD trajectories (e.g. at several temperatures).")],
    n: Annotated[int, typer.Option("-n", help="Number of snapshots to pick.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="extxyz of the selected snapshots.")],
    every: Annotated[int, typer.Option("--every", help="Consider every N-th frame.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first pick.")] = 0,
    include_broken: Annotated[bool, typer.Option("--include-broken", help="Also pick frames after a run's framework broke.")] = False,
    labelled: Annotated[list[Path] | None, typer.Option("--labelled", help="extxyz of structures already labelled (repeatable): "
                                                       "the N new picks extend that set, farthest from it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Farthest-point sampling in descriptor space across trajectories: N snapshots worth labelling.

    Frames after a run's framework broke (the integrity monitor) are left out unless --include-broken.
    With --labelled, the picks extend an existing labelled set instead of starting anew.
    """
    from .polarizability.dataset import read_extxyz_frames, write_labelled
    from .polarizability.select import select_from_trajectories

    existing = [a for p in labelled or [] for a in read_extxyz_frames(p, "a structure already labelled")]
    frames = select_from_trajectories([str(p) for p in trajectories], n, every=every, seed=seed, intact_only=not include_broken,
                                      existing=existing or None)
    write_labelled(output, frames)
    summary = {"n": len(frames), "output": str(output), "n_labelled_before": len(existing),
               "sources": sorted({str(a.info.get("source", "")) for a in frames})}
    if as_json:
        _print_json(summary)
    else:
        typer.echo(f"wrote {len(frames)} snapshots to {output}")


@app.command()
@_friendly
def train(
    data: Annotated[list[Path], typer.Argument(help="Labelled extxyz file(s) (info['polarizability'] in Å³).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model file to write.")],
    baseline: Annotated[str, typer.Option("--baseline", help="Δ-learning baseline: none or bond (fitted on the training set).")] = "none",
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Held-out fraction for the reported errors.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/test split.")] = 0,
    cutoff: Annotated[float | None, typer.Option("--cutoff", help="λ-SOAP cutoff radius, Å (default: chosen by CV among 4 Å and 5–6 Å with radial scaling).")] = None,
    parity: Annotated[Path | None, typer.Option("--parity", help="Parity plot PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Errors and learning curve as JSON.")] = False,
) -> None:
    """Train the exactly equivariant λ-SOAP tensor model of the cell polarizability (λ = 0 and λ = 2)."""
    import numpy as np

    from .polarizability.dataset import read_labelled
    from .polarizability.model import CV_DESCRIPTOR_GRID, PolarizabilityModel, learning_curve

    frames = [a for p in data for a in read_labelled(p)]
    if not 0 < test_fraction < 1:
        raise InputError(f"--test-fraction {test_fraction}: give a fraction between 0 and 1, e.g. 0.2.")
    if len(frames) < 5:
        raise InputError(f"{', '.join(map(str, data))}: only {len(frames)} labelled frames; label at least 5 (better 50+).")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(frames))
    n_test = max(1, int(round(test_fraction * len(frames))))
    test = [frames[i] for i in idx[:n_test]]
    train_set = [frames[i] for i in idx[n_test:]]
    base = None
    if baseline == "bond":
        from .polarizability.bond_model import BondPolarizabilityModel

        # every heteroatomic pair within 1.3 × the sum of covalent radii is a bond type
        types = sorted({tuple(sorted((x, y))) for a in train_set for x in set(a.get_chemical_symbols())
                        for y in set(a.get_chemical_symbols()) if x != y})
        base = BondPolarizabilityModel().fit(train_set, bond_types=[f"{a}-{b}" for a, b in types])
    elif baseline != "none":
        raise InputError(f"--baseline '{baseline}' is unknown; use none or bond.")
    kw = {"cutoff_A": cutoff} if cutoff else {"descriptor_grid": list(CV_DESCRIPTOR_GRID)}
    model = PolarizabilityModel(baseline=base, **kw).fit(train_set)
    model.save(output)
    score = model.score(test)
    sizes = sorted({max(2, int(f * len(train_set))) for f in (0.25, 0.5, 1.0)})
    # the learning curve keeps the descriptor CV chose on the full training set
    template = PolarizabilityModel(baseline=base, **model.settings_.to_dict())
    curve = learning_curve(train_set, test, sizes, model=template) if len(train_set) >= 8 else []
    if parity is not None:
        from .polarizability.model import plot_parity

        plot_parity(model, test, parity)
    chosen = {**model.settings_.to_dict(), "radial_scaling": model.settings_.radial_scaling}
    d = {"n_train": len(train_set), "n_test": len(test), "test": score, "learning_curve": curve, "output": str(output),
         "baseline": baseline, "descriptor": chosen}
    if as_json:
        _print_json(d)
        return
    typer.echo(f"trained on {len(train_set)} frames, tested on {len(test)}: iso rel. RMSE {score['iso_rel_rmse']:.3f}, "
               f"aniso rel. RMSE {score['aniso_rel_rmse']:.3f}; descriptor cutoff {chosen['cutoff_A']:g} Å, radial scaling "
               f"{chosen['radial_scaling'] or 'none'}; wrote {output}")


@app.command()
@_friendly
def predict(
    source: Annotated[Path, typer.Argument(help="H5MD trajectory or extxyz frames.")],
    model: Annotated[Path, typer.Option("--model", help="Model file from `ionraman train` (or bond-model JSON).")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="extxyz with predicted info['polarizability'] (for extxyz input, or to export a trajectory's).")] = None,
    every: Annotated[int, typer.Option("--every", help="Predict every N-th frame of a trajectory.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Predict α (Å³) along a trajectory (stored beside it as <traj>.alpha.h5) or for extxyz frames."""
    import ase.io

    from .polarizability.dataset import set_alpha, write_labelled
    from .polarizability.registry import resolve_model

    if source.suffix.lower() in (".h5", ".h5md"):
        from .polarizability.model import predict_trajectory
        from .trajectory import read_h5md

        pol, info = resolve_model(str(model), str(source), read_h5md(source, stop=1).atoms(0))
        res = predict_trajectory(pol, source, every=every, progress=sys.stderr.isatty())
        summary = {"n_frames": len(res.time_fs), "sidecar": str(res.path), "model": info}
        if output is not None:
            traj = read_h5md(source)
            frames = []
            for k, t in enumerate(res.time_fs):
                j = int(round((t - traj.time_fs[0]) / traj.dt_fs))
                a = traj.atoms(j, wrap=True)
                set_alpha(a, res.alpha_A3[k], source="model")
                a.info["time_fs"] = float(t)
                frames.append(a)
            write_labelled(output, frames)
            summary["output"] = str(output)
    else:
        if not source.exists():
            raise InputError(f"{source}: no such file; give an H5MD trajectory or an extxyz file.")
        try:
            frames = ase.io.read(source, index=":")
        except Exception as exc:
            raise InputError(f"{source}: could not be read ({str(exc).strip() or type(exc).__name__}).") from None
        pol, info = resolve_model(str(model), str(source), frames[0])
        alpha = pol.predict(frames)
        for a, al in zip(frames, alpha):
            set_alpha(a, al, source="model")
        out = output or source.with_name(source.stem + ".predicted.xyz")
        write_labelled(out, frames)
        summary = {"n_frames": len(frames), "output": str(out), "model": info}
    if as_json:
        _print_json(summary)
    else:
        typer.echo(json.dumps(summary, default=str))


@app.command()
@_friendly
def models(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False) -> None:
    """Shipped polarizability models: what they serve, how they were trained, their held-out errors."""
    from .polarizability.registry import _models_dir, shipped_models

    items = []
    for e in shipped_models():
        d = dict(e)
        if d.get("dataset"):
            d["dataset"] = str(_models_dir().parent / "datasets" / d["dataset"])
        if d.get("datasets"):
            d["datasets"] = [str(_models_dir().parent / "datasets" / f) for f in d["datasets"]]
        items.append(d)
    if as_json:
        _print_json(items)
        return
    if not items:
        typer.echo("no shipped polarizability models; `ionraman label` + `ionraman train` make one")
    for d in items:
        t = d.get("test", {})
        typer.echo(f"{d['name']}: {d.get('kind')} for {', '.join(d.get('candidates', []))}; engine {d.get('engine')}, "
                   f"{d.get('n_labels')} labels; held-out rel. RMSE iso {t.get('iso_rel_rmse')}, aniso {t.get('aniso_rel_rmse')}")


def _dft_executor(workers: int | None, scheduler: str | None) -> Any:
    """Where DFT labels run: a Dask scheduler's client, else ``workers`` local processes (None: automatic)."""
    if scheduler is None:
        return workers
    from distributed import Client

    return Client(scheduler)


@app.command()
@_friendly
def label(
    source: Annotated[Path, typer.Argument(help="Structures to label: extxyz/CIF/POSCAR, or an H5MD trajectory.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Labelled extxyz (info['polarizability'] in Å³).")],
    engine: Annotated[str, typer.Option("--engine", help="cp2k (ab initio) or bond (the bond-polarizability model).")] = "cp2k",
    every: Annotated[int, typer.Option("--every", help="Take every N-th frame of a trajectory.")] = 1,
    workers: Annotated[int | None, typer.Option("--workers", help="Parallel CP2K runs (default: cores // ranks per run).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address for labelling on a cluster.")] = None,
    cutoff: Annotated[float | None, typer.Option("--cutoff-ry", help="CP2K plane-wave cutoff, Ry (default 300).")] = None,
    basis: Annotated[str | None, typer.Option("--basis", help="CP2K basis family (default DZVP-MOLOPT).")] = None,
    workdir: Annotated[Path, typer.Option("--workdir", help="Scratch directory for CP2K runs.")] = Path("cp2k_runs"),
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    chain_guess: Annotated[bool | None, typer.Option(
        "--chain-guess/--no-chain-guess",
        help="Start each SCF from the previous frame's wavefunction (serial runs; default: on for an H5MD trajectory).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Reference polarizability labels: CP2K linear response (PBE, Berry-phase dipole), resumable and parallel."""
    import ase.io

    from .polarizability.dataset import write_labelled

    if source.suffix.lower() in (".h5", ".h5md"):
        from .trajectory import read_h5md

        traj = read_h5md(source)
        frames = [traj.atoms(k, wrap=True) for k in range(0, traj.n_frames, max(1, every))]
        for k, a in zip(range(0, traj.n_frames, max(1, every)), frames):
            a.info.update({"source": str(source), "frame": k, "time_fs": float(traj.time_fs[k]), "temperature_K": traj.temperature_K})
    else:
        if not source.exists():
            raise InputError(f"{source}: no such file; give structures (extxyz/CIF/POSCAR) or an H5MD trajectory.")
        try:
            frames = ase.io.read(source, index=f"::{max(1, every)}")
        except Exception as exc:
            raise InputError(f"{source}: could not be read ({str(exc).strip() or type(exc).__name__}).") from None
    if engine == "bond":
        from .polarizability.registry import load_bond_model

        m = load_bond_model()
        out = []
        for a, alpha in zip(frames, m.predict(frames)):
            b = a.copy()
            b.info["polarizability"] = alpha
            b.info["polarizability_source"] = "bond-model"
            out.append(b)
        write_labelled(output, out)
        summary = {"engine": "bond", "labelled": len(out), "failed": 0, "output": str(output)}
    elif engine == "cp2k":
        from .polarizability.reference_cp2k import CP2KSettings, label_frames

        kw: dict[str, Any] = {}
        if cutoff is not None:
            kw["cutoff_ry"] = cutoff
        if basis is not None:
            kw["basis_family"] = basis
        settings = CP2KSettings(**kw) if kw else None
        is_traj = source.suffix.lower() in (".h5", ".h5md")
        res = label_frames(frames, settings, output, workdir=workdir, executor=_dft_executor(workers, scheduler),
                           progress=progress and sys.stderr.isatty(),
                           chain_guess=is_traj if chain_guess is None else chain_guess)
        summary = {"engine": "cp2k", "labelled": len(res.labelled), "skipped": len(res.skipped),
                   "failed": {str(k): v for k, v in res.failed.items()}, "wall_time_s": res.wall_time_s, "output": str(output)}
    else:
        raise InputError(f"--engine '{engine}' is unknown; use cp2k or bond.")
    if as_json:
        _print_json(summary)
    else:
        typer.echo(json.dumps(summary, default=str))


def _floats(text: str, option: str, unit: str, example: str, allow_zero: bool = False) -> list[float]:
    """Comma-separated numbers of one option, checked, with one sentence on error."""
    try:
        vals = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"{option} '{text}': give comma-separated numbers in {unit}, e.g. {example}.") from None
    if option == "--temperatures" and (not vals or min(vals) <= 0):
        raise InputError(f"{option} '{text}': give positive temperatures in K, e.g. {example}.")
    return vals


@app.command("validate-ff")
@_friendly
def validate_ff(
    structure: Annotated[str, typer.Argument(help="Built-in name (see `ionraman structures`) or CIF/POSCAR/extxyz path.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Report directory (MD, DFT labels, report.json, parity.png).")],
    forcefield: Annotated[str, typer.Option("--forcefield", help="Force field to validate (as for `ionraman md`).")] = "auto",
    temperatures: Annotated[str, typer.Option("--temperatures", help="Comma-separated temperatures in K.")] = "600,800",
    supercell: Annotated[str | None, typer.Option("--supercell", help="Repeats, e.g. 2x2x2 (DFT runs on this cell, k-points by --kpoints).")] = None,
    time: Annotated[float, typer.Option("--time", help="MD production per temperature, ps.")] = 2.0,
    equilibrate: Annotated[float, typer.Option("--equilibrate", help="Thermalisation before production, ps.")] = 0.5,
    frames: Annotated[int, typer.Option("--frames", help="DFT snapshots per temperature.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="Seed for velocities, thermostat, ordering and defects.")] = 0,
    vacancies: Annotated[str | None, typer.Option("--vacancies", help=_VAC_HELP)] = None,
    substitute: Annotated[list[str] | None, typer.Option("--substitute", help=_SUB_HELP)] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Parallel CP2K runs (default: cores // ranks per run).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address for the DFT runs.")] = None,
    cutoff: Annotated[float | None, typer.Option("--cutoff-ry", help="CP2K plane-wave cutoff, Ry (default 300).")] = None,
    kpoints: Annotated[str, typer.Option("--kpoints", help="auto (Monkhorst-Pack, n·width ≥ 14 Å), gamma, or N1xN2xN3.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Validate a force field against DFT: its own MD at each temperature, CP2K energies and forces
    on sampled snapshots, force/energy errors per element and the framework-integrity result.

    Resumable: rerun the same command after an interruption; finished MD and DFT labels are kept.
    """
    from .ffvalidation import validate_forcefield
    from .forcefields import get_forcefield, resolve_forcefield
    from .md import MDConfig
    from .polarizability.reference_cp2k import CP2KSettings, find_cp2k

    temps = _floats(temperatures, "--temperatures", "K", "600,800")
    cfg = MDConfig(temperature_K=temps[0], time_ps=time, equilibrate_ps=equilibrate, sample_every=5, seed=seed)
    cfg.validate()
    settings = CP2KSettings(cutoff_ry=cutoff) if cutoff is not None else CP2KSettings()
    find_cp2k(settings)  # fail now, not after the MD, when CP2K is missing
    ff = get_forcefield(resolve_forcefield(forcefield, structure))
    loaded = _load(structure, supercell, None, ff.cutoff_A, seed, vacancies, substitute)
    ff.check_elements(loaded.atoms, loaded.name)
    rep = validate_forcefield(loaded, ff, temps, output, cfg, frames_per_temperature=frames, dft_settings=settings,
                              executor=_dft_executor(workers, scheduler), progress=progress and sys.stderr.isatty(),
                              label=loaded.name, kpoints=kpoints)
    d = rep.to_dict()
    if as_json:
        _print_json(d)
        return
    typer.echo(f"{ff.name} on {loaded.name} ({len(loaded.atoms)} atoms), {rep.n_frames} DFT frames:")
    e_mae = d["energy_mae_meV_atom"]
    e_txt = f"{e_mae:.1f} meV/atom" if e_mae is not None else "not tested (too few frames for the energy-zero fit)"
    typer.echo(f"  force RMSE {d['force_rmse_meV_A']:.0f} meV/Å (MAE {d['force_mae_meV_A']:.0f}), energy MAE {e_txt}")
    for el, e in d["per_element"].items():
        typer.echo(f"  {el:>2}: force RMSE {e['force_rmse_meV_A']:.0f} meV/Å over {e['n_atoms']} atoms")
    for T, i in d["integrity"].items():
        typer.echo(f"  {T} K: framework {'intact' if i['ok'] else 'BROKEN — ' + i['reason']}")
    typer.echo(f"  report: {d['files']['report']}")


@app.command()
@_friendly
def finetune(
    data: Annotated[list[Path], typer.Argument(help="extxyz files with DFT energies (info['energy_eV']) and forces (arrays['forces_dft']).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Fine-tuned model file (use as --forcefield finetuned:PATH).")],
    base: Annotated[str, typer.Option("--base", help="CHGNet version to start from, or a fine-tuned model file.")] = "0.3.0",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 30,
    learning_rate: Annotated[float, typer.Option("--learning-rate", help="Adam learning rate.")] = 3e-4,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Fraction of frames held out for validation.")] = 0.2,
    freeze_early: Annotated[bool, typer.Option("--freeze-early/--train-all", help="Train only the last block and readout (default) or every layer.")] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and of training.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Fine-tune CHGNet on DFT energies and forces (e.g. the labels `ionraman validate-ff` wrote)."""
    from .finetune import dft_frames, finetune_chgnet, split_frames

    train, val = split_frames(dft_frames(data), val_fraction, seed)
    res = finetune_chgnet(train, output, val=val, base=base, epochs=epochs, learning_rate=learning_rate, seed=seed,
                          freeze_early=freeze_early)
    d = res.to_dict()
    if as_json:
        _print_json(d)
        return
    b, a = d["before"], d["after"]
    typer.echo(f"fine-tuned {base} on {res.n_train} frames ({res.n_val} held out) in {res.wall_time_s:.0f} s → {res.path}")
    typer.echo(f"  force RMSE {b['force_rmse_meV_A']:.0f} → {a['force_rmse_meV_A']:.0f} meV/Å on the "
               f"{'held-out' if res.n_val else 'training'} frames")


@app.command()
@_friendly
def distill(
    inputs: Annotated[list[str], typer.Argument(help="Built-in names or structure files (sampled with the teacher), "
                                                     "and/or extxyz files with DFT energies/forces (used as labels).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Model folder (use as --forcefield distilled:FOLDER).")],
    teacher: Annotated[str, typer.Option("--teacher", help="Force field that is distilled (auto: the candidate's DFT-fine-tuned model, else chgnet).")] = "auto",
    temperatures: Annotated[str, typer.Option("--temperatures", help="Teacher MD temperatures, K.")] = "300,500,700,900",
    md_time: Annotated[float, typer.Option("--md-time", help="Teacher MD production per cell and temperature, ps.")] = 1.0,
    frame_every: Annotated[float, typer.Option("--frame-every", help="Spacing of training frames, fs.")] = 40.0,
    strains: Annotated[str, typer.Option("--strains", help="Linear strains of extra sampled cells, e.g. -0.015,0.015 ('' for none).")] = "-0.015,0.015",
    vacancy: Annotated[bool, typer.Option("--vacancy/--no-vacancy", help="Also sample a cell with one mobile ion removed (uncompensated: it carries a hole).")] = False,
    supercell: Annotated[str | None, typer.Option("--supercell", help="Repeats of the sampled cells (default: the structure's own cell).")] = None,
    large_cell: Annotated[int | None, typer.Option("--large-cell", help="Also sample each structure in its near-isotropic supercell of at least N atoms, e.g. 120.")] = None,
    large_md_time: Annotated[float, typer.Option("--large-md-time", help="Teacher MD production of the larger cell per temperature, ps.")] = 0.4,
    pair_repulsion: Annotated[bool, typer.Option("--pair-repulsion/--no-pair-repulsion", help="Add a ZBL short-range repulsion to the learned energy.")] = True,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum training epochs (early stopping on the held-out loss).")] = 300,
    channels: Annotated[int, typer.Option("--channels", help="MACE channels per irrep.")] = 8,
    r_max: Annotated[float, typer.Option("--r-max", help="MACE cutoff radius, Å.")] = 5.0,
    max_l: Annotated[int, typer.Option("--max-L", help="Largest symmetry order of the MACE messages (0: invariant).")] = 0,
    correlation: Annotated[int, typer.Option("--correlation", help="MACE body order minus one per interaction.")] = 3,
    max_ell: Annotated[int, typer.Option("--max-ell", help="Largest degree of the edge spherical harmonics (1 is ~1.5x cheaper per call than 2).")] = 2,
    num_interactions: Annotated[int, typer.Option("--num-interactions", help="MACE message-passing layers (1 is ~1.3x cheaper per call but misses the force bar of issue #7).")] = 2,
    nonlinear_readout: Annotated[bool, typer.Option("--nonlinear-readout/--linear-readout", help="Give a one-layer model an MLP readout (mace-torch's default for it is linear).")] = False,
    readout: Annotated[int, typer.Option("--readout", help="Hidden width of the readout MLP.")] = 64,
    train_dtype: Annotated[str | None, typer.Option("--train-dtype", help="Training precision, float32 or float64 (default: float32, the MD precision).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Fraction of frames held out for validation.")] = 0.1,
    allow_broken_teacher: Annotated[bool, typer.Option("--allow-broken-teacher", help="Distil even if the teacher's framework breaks (recorded).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of MD, split and training.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Distil a fast MACE force field from a teacher: teacher MD at several temperatures, strained
    cells and a vacancy; teacher (or DFT) labels; training; held-out errors.

    Resumable: rerun the same command after an interruption.
    """
    from .distill import DistillConfig, distill as do_distill

    cfg = DistillConfig(teacher=teacher, temperatures_K=tuple(_floats(temperatures, "--temperatures", "K", "300,500,700,900")),
                        md_time_ps=md_time, frame_every_fs=frame_every, strains=tuple(_floats(strains, "--strains", "fractions", "-0.015,0.015")),
                        vacancy=vacancy, supercell=supercell, large_min_atoms=large_cell, large_md_time_ps=large_md_time,
                        pair_repulsion=pair_repulsion, epochs=epochs, num_channels=channels, r_max_A=r_max,
                        max_L=max_l, max_ell=max_ell, num_interactions=num_interactions, correlation=correlation, nonlinear_readout=nonlinear_readout, readout_mlp=readout, train_dtype=train_dtype,
                        val_fraction=val_fraction, allow_broken_teacher=allow_broken_teacher, seed=seed)
    res = do_distill(inputs, output, cfg, progress=True)
    d = res.to_dict()
    if as_json:
        _print_json(d)
        return
    e = d["errors"]
    typer.echo(f"distilled {res.path} from {res.teacher.get('spec') or 'DFT labels'}: {res.n_train} training frames, "
               f"{res.n_valid} held out")
    typer.echo(f"  force RMSE {e['force_rmse_meV_A']:.0f} meV/Å (reference RMS {e['force_rms_dft_meV_A']:.0f}); "
               + ", ".join(f"{el} {v['force_rmse_meV_A']:.0f}" for el, v in e["per_element"].items()))
    for f in res.flagged:
        typer.echo(f"  FLAGGED: {f}")
    typer.echo(f"  use: --forcefield distilled:{res.path}")


@app.command()
@_friendly
def compare(
    experiment: Annotated[Path, typer.Argument(help="Measured spectrum: two-column text/CSV (shift or wavelength), .spc, .wdf.")],
    simulated: Annotated[Path, typer.Argument(help="spectrum.csv from `ionraman raman` or another two-column file.")],
    temperature: Annotated[float, typer.Option("--temperature", "-T", help="Measurement/simulation temperature, K.")],
    cutoff: Annotated[float, typer.Option("--cutoff", help="ω_c of F_LF, cm⁻¹.")] = 100.0,
    x_unit: Annotated[str, typer.Option("--x-unit", help="auto, cm-1 or nm (absolute wavelength; needs --laser).")] = "auto",
    laser: Annotated[float | None, typer.Option("--laser", help="Laser wavelength, nm.")] = None,
    column: Annotated[str | None, typer.Option("--column", help="Intensity column of a multi-column file.")] = None,
    channel: Annotated[str, typer.Option("--channel", help="Channel of the simulated spectrum.")] = "unpolarized",
    notch: Annotated[float | None, typer.Option("--notch", help="Instrument low-frequency cutoff, cm⁻¹.")] = None,
    omega_min: Annotated[float | None, typer.Option("--omega-min", help="Lower limit, cm⁻¹.")] = None,
    omega_max: Annotated[float | None, typer.Option("--omega-max", help="Upper limit, cm⁻¹.")] = None,
    step: Annotated[float, typer.Option("--step", help="Common grid spacing, cm⁻¹.")] = 1.0,
    baseline: Annotated[str | None, typer.Option("--baseline", help="pybaselines method, e.g. arpls, asls, snip.")] = None,
    fwhm: Annotated[float | None, typer.Option("--fwhm", help="Instrument broadening of the simulation, FWHM cm⁻¹.")] = None,
    pipeline: Annotated[Path | None, typer.Option("--pipeline", help="Preprocessing settings as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Overlay PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Measured vs simulated spectrum through one preprocessing pipeline: overlay and both fingerprints."""
    from .experiment import Preprocessing, compare as do_compare, read_spectrum

    cfg: dict[str, Any] = {}
    if pipeline is not None:
        if not pipeline.exists():
            raise InputError(f"--pipeline {pipeline}: no such file; give a JSON file of Preprocessing settings.")
        try:
            cfg = json.loads(pipeline.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"--pipeline {pipeline}: not valid JSON ({exc}).") from None
    for key, val in (("notch_cm1", notch), ("omega_min_cm1", omega_min), ("omega_max_cm1", omega_max),
                     ("step_cm1", step), ("baseline", baseline), ("broadening_fwhm_cm1", fwhm)):
        if val is not None:
            cfg[key] = val
    if fwhm is not None:
        cfg.setdefault("broadening", "gaussian")
    pipe = Preprocessing.from_dict(cfg)
    exp = read_spectrum(experiment, x_unit=x_unit, laser_wavelength_nm=laser, column=column, temperature_K=temperature)
    sim = read_spectrum(simulated, temperature_K=temperature)
    res = do_compare(exp, sim, pipe, cutoff_cm1=cutoff, channel=channel, temperature_K=temperature)
    if plot is not None:
        res.plot(plot)
    d = res.to_dict()
    if as_json:
        _print_json(d)
        return
    def pm(side: dict[str, Any]) -> str:
        err = side.get("F_LF_err")
        return f"{side['F_LF']:.4f}" + (f" ± {err:.4f}" if err is not None else " (no error estimate)")

    typer.echo(f"F_LF(< {cutoff:g} cm⁻¹): experiment {pm(d['experiment'])}, simulation {pm(d['simulation'])}")
    for w in d.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)


@app.command()
@_friendly
def calibrate(
    results: Annotated[Path, typer.Argument(help="Screening output directory or its results.db.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Calibration file to write (JSON).")] = Path("calibration.json"),
    measured: Annotated[Path | None, typer.Option("--measured", help="CSV of measured σ (candidate, sigma_S_per_cm[, sigma_T_K, source]); default: the shipped literature table.")] = None,
    fast: Annotated[float, typer.Option("--fast-sigma", help="σ_RT (S/cm) from which a material counts as a fast conductor.")] = 1e-4,
    temperature: Annotated[float | None, typer.Option("--temperature", "-T", help="Use fingerprints at this simulated T (default: each candidate's lowest).")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Calibration plot PNG.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Calibrate F_LF against measured conductivities: log σ fit, fast-conductor classifier, threshold with LOO AUC."""
    from .calibration import calibrate as do_calibrate
    from .calibration import join_fingerprints, plot_calibration, read_measured
    from .screening.store import ResultsStore

    db = results / "results.db" if results.is_dir() else results
    if not db.exists():
        raise InputError(f"{db}: no results database; run `ionraman screen` first or give its output directory.")
    pts = join_fingerprints(ResultsStore(db).records("md"), read_measured(measured), temperature)
    cal = do_calibrate(pts, fast_sigma_S_cm=fast)
    cal.save(output)
    if plot is not None:
        plot_calibration(cal, plot)
    d = {k: v for k, v in cal.to_dict().items() if k != "points"} | {"output": str(output), "candidates": [p["candidate"] for p in pts]}
    if as_json:
        _print_json(d)
        return
    typer.echo(f"{cal.n} materials: threshold F_LF = {cal.threshold_F_LF:.3f}, LOO AUC = {cal.auc_loo:.2f} "
               f"[{cal.auc_ci[0]:.2f}, {cal.auc_ci[1]:.2f}], slope d log10σ/dF_LF = {cal.slope:.2f} "
               f"[{cal.slope_ci[0]:.2f}, {cal.slope_ci[1]:.2f}]; wrote {output}")


# --------------------------------------------------------------------------- screening


@app.command()
@_friendly
def screen(
    campaign: Annotated[Path | None, typer.Argument(help="Campaign TOML file (default: the demo preset).")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Built-in campaign: demo, calibration or production.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output directory (overrides the campaign's).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Local worker processes (default: all cores).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Address of a running Dask scheduler, tcp://host:8786.")] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", help="Batch system through dask-jobqueue: slurm, pbs, sge, lsf.")] = None,
    cluster_config: Annotated[str | None, typer.Option("--cluster-config", help="JSON/YAML file of the jobqueue cluster's arguments.")] = None,
    database: Annotated[str | None, typer.Option("--database", help="Results store: SQLite path or postgresql:// URL (default OUTPUT/results.db).")] = None,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="calibration.json from `ionraman calibrate` for verdict thresholds.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show campaign progress.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Screen candidates × temperatures on Dask: MD → transport → α(t) → Raman → fingerprint; store, rank, report."""
    from .screening.campaign import run_campaign
    from .screening.report import summary_json
    from .screening.spec import load_campaign
    from .screening.spec import preset as get_preset
    from .screening.store import ResultsStore

    if campaign is not None and preset is not None:
        raise InputError("Give either a campaign file or --preset, not both.")
    spec = load_campaign(campaign) if campaign is not None else get_preset(preset or "demo")
    if output is not None:
        spec = spec.with_output(output)
    cal = None
    if calibration is not None:
        from .calibration import Calibration

        cal = Calibration.load(calibration)
    res = run_campaign(spec, workers=workers, scheduler=scheduler, cluster=cluster, cluster_config=cluster_config,
                       database=database, progress=progress and sys.stderr.isatty(), calibration=cal)
    records = ResultsStore(res.database).records("md")
    summary = {
        "campaign": spec.name,
        "output_dir": str(res.output_dir),
        "database": res.database,
        "report": str(res.report) if res.report else None,
        "ranking": str(res.ranking) if res.ranking else None,
        "tasks": {"done": res.done, "failed": res.failed, "skipped": res.skipped},
        "failures": res.failures,
        "results": summary_json(records),
    }
    if as_json:
        _print_json(summary)
        return
    typer.echo(f"campaign {spec.name}: {res.done} done, {res.failed} failed, {res.skipped} skipped (already finished)")
    for r in summary["results"]:
        typer.echo(f"  {r['candidate']:<24} {r['temperature_K']:>6g} K  F_LF = {r['F_LF'] if r['F_LF'] is not None else float('nan'):.3f}  {r['verdict']}")
    for label, reason in res.failures.items():
        typer.echo(f"  FAILED {label}: {reason}", err=True)
    typer.echo(f"report: {res.report}  ranking: {res.ranking}  database: {res.database} (browse with `ase db`)")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
