"""Reference polarizability labels from CP2K (PBE, GTH pseudopotentials, MOLOPT basis, Γ point).

CP2K's linear-response module (``&PROPERTIES &LINRES &POLAR``) with the Berry-phase
(periodic) dipole operator gives the electronic polarizability of the whole periodic
cell, clamped ions, in atomic units (bohr³) — exactly the quantity a Raman
calculation needs. See docs/physics/reference-labels.md for the settings and why.

Public API:

- :class:`CP2KSettings` — every setting that decides a label (frozen, JSON round-trip);
- :func:`write_input`, :func:`run_cp2k`, :func:`parse_polarizability`,
  :func:`parse_energy`, :func:`parse_forces` — one CP2K calculation;
- :func:`label_frame` — a labelled copy of one frame;
- :func:`label_frames` — many frames in parallel (Dask, :mod:`ionraman.executor`),
  resumable: each finished label is written to the output extxyz at once, and a rerun
  skips frames whose ``info["label_hash"]`` is already there.

Units at the boundary: α in Å³ (``info["polarizability"]``), energy in eV
(``info["energy_eV"]``), forces in eV/Å (``arrays["forces_dft"]``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase import units as ase_units

from ..errors import InputError, SimulationError
from ..units import BOHR_A
from .dataset import KEY, bohr3_to_A3, read_labelled, write_labelled

__all__ = [
    "CP2KSettings",
    "CP2KResult",
    "CP2KError",
    "CP2KNotFoundError",
    "LabelResult",
    "DEFAULT_VALENCE",
    "find_cp2k",
    "find_data_dir",
    "resolve_kinds",
    "write_input",
    "run_cp2k",
    "parse_polarizability",
    "parse_energy",
    "parse_forces",
    "parse_version",
    "label_frame",
    "label_frames",
    "label_hash",
    "settings_of_frame",
]

#: Hartree → eV and Hartree/bohr → eV/Å
HARTREE_EV: float = ase_units.Hartree
HARTREE_PER_BOHR_TO_EV_PER_A: float = ase_units.Hartree / BOHR_A

#: Valence (number of electrons treated explicitly) per element. Chosen as the
#: smallest GTH valence for which a DZVP-MOLOPT basis exists, except where noted.
#: Na: q1, NOT q9 — with the 2s2p semicore the LINRES solver diverges to NaN
#: (measured, notes/ab-initio-polarizability.md); Na+ has almost no polarizability.
DEFAULT_VALENCE: dict[str, int] = {
    "H": 1, "Li": 3, "Be": 4, "B": 3, "C": 4, "N": 5, "O": 6, "F": 7,
    "Na": 1, "Mg": 10, "Al": 3, "Si": 4, "P": 5, "S": 6, "Cl": 7,
    "K": 9, "Ca": 10, "Zn": 12, "Ga": 13, "Ge": 4, "As": 5, "Se": 6, "Br": 7,
    "Ag": 11, "Sn": 4, "Sb": 5, "Te": 6, "I": 7, "W": 14,
}  # fmt: skip

#: binaries tried in order
CP2K_BINARIES = ("cp2k.psmp", "cp2k.popt", "cp2k", "cp2k.ssmp", "cp2k.sopt")
_MPI_BINARIES = ("cp2k.psmp", "cp2k.popt")
#: fields of CP2KSettings that change how a run is executed but not its result
EXECUTION_FIELDS = ("mpi_ranks", "omp_threads", "executable", "data_dir")


#: name of the starting wavefunction inside a run directory (see ``run_cp2k(wfn_guess=...)``)
GUESS_WFN = "guess.wfn"


class CP2KError(SimulationError):
    """A CP2K run failed (aborted, not converged, NaN, timed out)."""


class CP2KNotFoundError(InputError):
    """No CP2K binary (or no basis/potential data) on this machine."""


# --------------------------------------------------------------------------- settings


def _as_pairs(value: Any, cast: Callable[[Any], Any]) -> tuple:
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), cast(v)) for k, v in items))


@dataclass(frozen=True)
class CP2KSettings:
    """Everything that decides a CP2K polarizability label.

    Per-element choices (``valence``, ``kinds``) are stored as sorted tuples of pairs so
    the settings stay hashable and picklable; pass plain dicts, they are converted.

    functional: XC functional name as in the basis/potential names (``PBE``).
    basis_family: basis prefix; the name used is ``{basis_family}-{functional}-GTH-q{valence}``.
    basis_file / potential_file: CP2K data files searched for those names.
    valence: per-element overrides of :data:`DEFAULT_VALENCE`.
    kinds: per-element explicit ``(basis name, potential name)``; wins over everything.
    cutoff_ry / rel_cutoff_ry: multigrid cutoffs (Ry).
    eps_scf, max_scf, max_outer_scf, eps_default: ground-state SCF (OT/DIIS) settings.
    linres_eps, linres_max_iter, linres_preconditioner: linear-response solver.
    periodic_dipole: Berry-phase dipole operator (``PERIODIC_DIPOLE_OPERATOR T``) — required
        for a periodic cell.
    forces: ENERGY_FORCE run, so DFT forces (eV/Å) come for free.
    kpoints: Monkhorst–Pack mesh (n1, n2, n3) for energy/force runs (None: Γ point only).
        Uses diagonalisation with Broyden mixing (OT does not support k-points); the
        polarizability (LINRES) needs the Γ point, so it refuses a mesh.
    charge: total charge of the cell.
    mpi_ranks / omp_threads: execution (default: all available cores as MPI ranks,
        1 OpenMP thread each — 2 ranks × 1 thread measured as fast as 1 × 2).
    executable / data_dir: override the CP2K binary / data directory search.
    """

    functional: str = "PBE"
    basis_family: str = "DZVP-MOLOPT"
    basis_file: str = "BASIS_MOLOPT_UZH"
    potential_file: str = "POTENTIAL_UZH"
    valence: tuple[tuple[str, int], ...] = ()
    kinds: tuple[tuple[str, tuple[str, str]], ...] = ()
    cutoff_ry: float = 300.0
    rel_cutoff_ry: float = 40.0
    eps_scf: float = 1e-6
    max_scf: int = 30
    max_outer_scf: int = 10
    eps_default: float = 1e-10
    linres_eps: float = 1e-6
    linres_max_iter: int = 200
    linres_preconditioner: str = "FULL_ALL"
    periodic_dipole: bool = True
    forces: bool = True
    kpoints: tuple[int, int, int] | None = None
    charge: int = 0
    mpi_ranks: int | None = None
    omp_threads: int = 1
    executable: str | None = None
    data_dir: str | None = None

    def __post_init__(self) -> None:
        # normalise types so that equal settings give equal JSON (and equal label hashes)
        for name in ("cutoff_ry", "rel_cutoff_ry", "eps_scf", "eps_default", "linres_eps"):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("max_scf", "max_outer_scf", "linres_max_iter", "charge", "omp_threads"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("periodic_dipole", "forces"):
            object.__setattr__(self, name, bool(getattr(self, name)))
        object.__setattr__(self, "functional", str(self.functional).upper())
        object.__setattr__(self, "valence", _as_pairs(self.valence, int))
        object.__setattr__(self, "kinds", _as_pairs(self.kinds, lambda v: (str(v[0]), str(v[1]))))
        if self.kpoints is not None:
            k = tuple(int(n) for n in self.kpoints)
            if len(k) != 3 or min(k) < 1:
                raise InputError(f"CP2KSettings: kpoints={self.kpoints}; give three positive integers, e.g. (2, 2, 2), or None for Γ.")
            object.__setattr__(self, "kpoints", None if k == (1, 1, 1) else k)
        if self.cutoff_ry <= 0 or self.rel_cutoff_ry <= 0:
            raise InputError(f"CP2KSettings: cutoff_ry={self.cutoff_ry}, rel_cutoff_ry={self.rel_cutoff_ry}; give positive cutoffs in Ry.")
        if self.mpi_ranks is not None and self.mpi_ranks < 1:
            raise InputError(f"CP2KSettings: mpi_ranks={self.mpi_ranks}; give a positive number of MPI ranks (or None for all cores).")
        if self.omp_threads < 1:
            raise InputError(f"CP2KSettings: omp_threads={self.omp_threads}; give a positive number of OpenMP threads.")

    # -- per-element choices
    @property
    def valence_map(self) -> dict[str, int]:
        return {**DEFAULT_VALENCE, **dict(self.valence)}

    @property
    def kinds_map(self) -> dict[str, tuple[str, str]]:
        return dict(self.kinds)

    @property
    def ranks(self) -> int:
        """MPI ranks actually used."""
        from ..executor import available_cores

        if self.mpi_ranks is not None:
            return self.mpi_ranks
        return max(1, available_cores() // self.omp_threads)

    @property
    def cores_per_run(self) -> int:
        return self.ranks * self.omp_threads

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["valence"] = dict(self.valence)
        d["kinds"] = {k: list(v) for k, v in self.kinds}
        return d

    def physics_dict(self) -> dict[str, Any]:
        """The settings that decide the label (no execution details): used for hashes and provenance."""
        d = self.to_dict()
        for k in EXECUTION_FIELDS:
            d.pop(k, None)
        if d.get("kpoints") is None:  # added later: Γ-point settings keep the hashes of earlier labels
            d.pop("kpoints", None)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CP2KSettings:
        d = dict(d)
        if d.get("kpoints") is not None:
            d["kpoints"] = tuple(d["kpoints"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"CP2K settings: unknown field(s) {unknown}; known fields are {sorted(known)}.")
        return cls(**dict(d))

    def replace(self, **changes: Any) -> CP2KSettings:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- data files and binaries


def find_data_dir(settings: CP2KSettings | None = None) -> Path | None:
    """The CP2K data directory (basis sets, potentials), or None."""
    cands: list[str | None] = [settings.data_dir if settings else None, os.environ.get("CP2K_DATA_DIR")]
    cands += ["/usr/share/cp2k", "/usr/local/share/cp2k", "/usr/share/cp2k/data"]
    if os.environ.get("CONDA_PREFIX"):
        cands.append(os.path.join(os.environ["CONDA_PREFIX"], "share", "cp2k", "data"))
    for c in cands:
        if c and any((Path(c) / f).exists() for f in ("BASIS_MOLOPT_UZH", "BASIS_MOLOPT")):
            return Path(c)
    return None


@lru_cache(maxsize=16)
def _names_in_file(path: str) -> dict[str, frozenset[str]]:
    """Element symbol → set of basis/potential names (with aliases) declared in a CP2K data file.

    Header lines look like ``Na DZVP-MOLOPT-PBE-GTH-q1 DZVP-MOLOPT-GGA-GTH-q1``; the element
    symbol is matched case-insensitively (the Debian file writes ``NA``), as CP2K does.
    """
    out: dict[str, set[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            tok = line.split()
            if len(tok) < 2 or tok[0].startswith("#") or not tok[0].isalpha() or len(tok[0]) > 3:
                continue
            if not any(c.isalpha() for c in tok[1]):
                continue
            sym = tok[0].capitalize()
            out.setdefault(sym, set()).update(t for t in tok[1:] if not t.startswith("#"))
    return {k: frozenset(v) for k, v in out.items()}


def _available(data_dir: Path, filename: str) -> dict[str, frozenset[str]]:
    p = Path(filename)
    p = p if p.is_absolute() else data_dir / p
    if not p.exists():
        raise CP2KNotFoundError(f"{p}: CP2K data file not found; install CP2K's data with `make setup` (Debian package cp2k-data) or set CP2KSettings.data_dir.")
    return _names_in_file(str(p))


def resolve_kinds(symbols: Iterable[str], settings: CP2KSettings) -> dict[str, tuple[str, str]]:
    """Element → (basis set name, potential name) for the elements present, checked against the data files.

    Raises InputError naming the element, the missing name and the fix when an element
    has no basis or potential of the requested family/valence.
    """
    elements = sorted(set(symbols))
    data_dir = find_data_dir(settings)
    if data_dir is None:
        raise CP2KNotFoundError(
            "CP2K data directory (BASIS_MOLOPT_UZH, POTENTIAL_UZH) not found; install it with `make setup` "
            "(Debian packages cp2k, cp2k-data) or set CP2KSettings.data_dir / $CP2K_DATA_DIR."
        )
    basis = _available(data_dir, settings.basis_file)
    pots = _available(data_dir, settings.potential_file)
    explicit = settings.kinds_map
    valence = settings.valence_map
    xc = settings.functional.upper()
    out: dict[str, tuple[str, str]] = {}
    for el in elements:
        if el in explicit:
            b, p = explicit[el]
        else:
            q = valence.get(el)
            if q is None:  # smallest valence with both a basis and a potential
                qs = sorted(
                    int(m.group(1))
                    for n in pots.get(el, ())
                    if (m := re.fullmatch(rf"GTH-{re.escape(xc)}-q(\d+)", n))
                    and f"{settings.basis_family}-{xc}-GTH-q{m.group(1)}" in basis.get(el, ())
                )
                if not qs:
                    raise InputError(
                        f"element {el}: no {settings.basis_family}-{xc}-GTH-q* basis in {settings.basis_file} with a matching "
                        f"GTH-{xc}-q* potential in {settings.potential_file}; give CP2KSettings(kinds={{'{el}': (basis, potential)}})."
                    )
                q = qs[0]
            b, p = f"{settings.basis_family}-{xc}-GTH-q{q}", f"GTH-{xc}-q{q}"
        if b not in basis.get(el, ()):
            have = sorted(n for n in basis.get(el, ()) if settings.basis_family.split("-")[0] in n) or sorted(basis.get(el, ()))
            raise InputError(
                f"element {el}: basis set {b} is not in {data_dir / settings.basis_file} (available: {', '.join(have[:8]) or 'none'}); "
                f"choose another valence (CP2KSettings(valence={{'{el}': q}})) or set kinds={{'{el}': (basis, potential)}}."
            )
        if p not in pots.get(el, ()):
            have = sorted(n for n in pots.get(el, ()) if xc in n) or sorted(pots.get(el, ()))
            raise InputError(
                f"element {el}: potential {p} is not in {data_dir / settings.potential_file} (available: {', '.join(have[:8]) or 'none'}); "
                f"choose another valence (CP2KSettings(valence={{'{el}': q}})) or set kinds={{'{el}': (basis, potential)}}."
            )
        out[el] = (b, p)
    return out


def find_cp2k(settings: CP2KSettings | None = None) -> tuple[list[str], str]:
    """The command prefix to run CP2K (``[mpirun, …, cp2k.psmp]``) and the binary's name.

    Raises :class:`CP2KNotFoundError` ("install it with `make setup`") when there is none.
    """
    settings = settings or CP2KSettings()
    if settings.executable:
        exe = shutil.which(settings.executable)
        if exe is None:
            raise CP2KNotFoundError(f"CP2KSettings.executable={settings.executable!r}: not found on PATH; install CP2K with `make setup` or fix the path.")
    else:
        exe = next((p for b in CP2K_BINARIES if (p := shutil.which(b))), None)
        if exe is None:
            raise CP2KNotFoundError(
                f"CP2K not found (looked for {', '.join(CP2K_BINARIES)} on PATH); install it with `make setup` (Debian packages cp2k, cp2k-data)."
            )
    name = Path(exe).name
    ranks = settings.ranks
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if name in _MPI_BINARIES and ranks > 1 and mpirun:
        cmd = [mpirun]
        if _is_openmpi(mpirun):
            if os.geteuid() == 0:
                cmd.append("--allow-run-as-root")
            # several CP2K runs may share a machine (Dask workers): don't pin them all to cores 0..n
            cmd += ["--bind-to", "none", "--oversubscribe"]
        cmd += ["-np", str(ranks), exe]
        return cmd, name
    return [exe], name


@lru_cache(maxsize=4)
def _is_openmpi(mpirun: str) -> bool:
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Open MPI" in out or "OpenRTE" in out


# --------------------------------------------------------------------------- input


def _fmt(x: float) -> str:
    return f"{x:.10f}"


def write_input(
    atoms: Atoms,
    settings: CP2KSettings,
    workdir: str | os.PathLike,
    project: str = "cp2k",
    *,
    polarizability: bool = True,
    wfn_guess: str | None = None,
) -> Path:
    """Write a complete CP2K input for the polarizability (and energy, forces) of ``atoms``; returns its path.

    The cell must be periodic in all three directions (the Berry-phase dipole operator
    needs it). Coordinates are written in Å (Cartesian). ``polarizability=False`` leaves
    out the linear-response section: an energy/forces run for force-field validation
    and training (same electronic-structure settings, a fraction of the cost).
    ``wfn_guess``: a wavefunction file (name relative to ``workdir``) to start the SCF
    from (``SCF_GUESS RESTART``) instead of the atomic guess: a neighbouring frame of the
    same trajectory converges in fewer steps to the same ground state.
    """
    if len(atoms) == 0:
        raise InputError("write_input: the frame has no atoms; give a structure with atoms and a cell.")
    if not np.all(atoms.pbc):
        raise InputError(f"write_input: pbc={list(map(bool, atoms.pbc))}; the periodic polarizability needs a 3D-periodic cell (set atoms.pbc = True).")
    cell = np.asarray(atoms.cell[:], dtype=float)
    if abs(np.linalg.det(cell)) < 1e-6:
        raise InputError("write_input: the frame's cell has zero volume; give the 3 lattice vectors (Å) in atoms.cell.")
    kinds = resolve_kinds(atoms.get_chemical_symbols(), settings)
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    s = settings
    L: list[str] = []
    a = L.append
    a("&GLOBAL")
    a(f"  PROJECT {project}")
    a(f"  RUN_TYPE {'ENERGY_FORCE' if s.forces else 'ENERGY'}")
    a("  PRINT_LEVEL MEDIUM")
    a("&END GLOBAL")
    a("&FORCE_EVAL")
    a("  METHOD QS")
    a("  &DFT")
    a(f"    BASIS_SET_FILE_NAME {s.basis_file}")
    a(f"    POTENTIAL_FILE_NAME {s.potential_file}")
    if wfn_guess:
        a(f"    WFN_RESTART_FILE_NAME {wfn_guess}")
    if s.charge:
        a(f"    CHARGE {int(s.charge)}")
    a("    &MGRID")
    a(f"      CUTOFF {s.cutoff_ry:g}")
    a(f"      REL_CUTOFF {s.rel_cutoff_ry:g}")
    a("    &END MGRID")
    a("    &QS")
    a(f"      EPS_DEFAULT {s.eps_default:.1E}")
    a("    &END QS")
    if s.kpoints is not None:
        if polarizability:
            raise InputError(f"CP2KSettings.kpoints={s.kpoints}: CP2K's linear-response polarizability needs the Γ point; "
                             "use a larger cell instead of k-points for polarizability labels.")
        a("    &KPOINTS")
        a(f"      SCHEME MONKHORST-PACK {s.kpoints[0]} {s.kpoints[1]} {s.kpoints[2]}")
        a("    &END KPOINTS")
    a("    &SCF")
    a(f"      SCF_GUESS {'RESTART' if wfn_guess else 'ATOMIC'}")
    a(f"      EPS_SCF {s.eps_scf:.1E}")
    if s.kpoints is None:
        a(f"      MAX_SCF {int(s.max_scf)}")
        a("      &OT")
        a("        MINIMIZER DIIS")
        a("        PRECONDITIONER FULL_SINGLE_INVERSE")
        a("      &END OT")
        a("      &OUTER_SCF")
        a(f"        MAX_SCF {int(s.max_outer_scf)}")
        a(f"        EPS_SCF {s.eps_scf:.1E}")
        a("      &END OUTER_SCF")
    else:  # k-points: diagonalisation + Broyden density mixing (OT is Γ-only)
        a(f"      MAX_SCF {int(s.max_scf) * int(s.max_outer_scf)}")
        a("      &DIAGONALIZATION")
        a("        ALGORITHM STANDARD")
        a("      &END DIAGONALIZATION")
        a("      &MIXING")
        a("        METHOD BROYDEN_MIXING")
        a("        ALPHA 0.3")
        a("        NBROYDEN 8")
        a("      &END MIXING")
    a("    &END SCF")
    a("    &XC")
    a(f"      &XC_FUNCTIONAL {s.functional.upper()}")
    a("      &END XC_FUNCTIONAL")
    a("    &END XC")
    a("  &END DFT")
    if polarizability:
        _linres_section(a, s)
    if s.forces:
        a("  &PRINT")
        a("    &FORCES ON")
        a("    &END FORCES")
        a("  &END PRINT")
    _subsys_section(a, atoms, cell, kinds)
    a("&END FORCE_EVAL")
    path = work / f"{project}.inp"
    path.write_text("\n".join(L) + "\n")
    return path


def _linres_section(a: Callable[[str], None], s: CP2KSettings) -> None:
    a("  &PROPERTIES")
    a("    &LINRES")
    a(f"      PRECONDITIONER {s.linres_preconditioner}")
    a(f"      EPS {s.linres_eps:.1E}")
    a(f"      MAX_ITER {int(s.linres_max_iter)}")
    a("      &POLAR")
    a("        DO_RAMAN T")
    a(f"        PERIODIC_DIPOLE_OPERATOR {'T' if s.periodic_dipole else 'F'}")
    a("        &PRINT")
    a("          &POLAR_MATRIX")
    a("          &END POLAR_MATRIX")
    a("        &END PRINT")
    a("      &END POLAR")
    a("    &END LINRES")
    a("  &END PROPERTIES")


def _subsys_section(a: Callable[[str], None], atoms: Atoms, cell: np.ndarray, kinds: Mapping[str, tuple[str, str]]) -> None:
    a("  &SUBSYS")
    a("    &CELL")
    for name, v in zip("ABC", cell):
        a(f"      {name} {_fmt(v[0])} {_fmt(v[1])} {_fmt(v[2])}")
    a("      PERIODIC XYZ")
    a("    &END CELL")
    a("    &COORD")
    for sym, p in zip(atoms.get_chemical_symbols(), atoms.positions):
        a(f"      {sym} {_fmt(p[0])} {_fmt(p[1])} {_fmt(p[2])}")
    a("    &END COORD")
    for el, (b, p) in kinds.items():
        a(f"    &KIND {el}")
        a(f"      BASIS_SET {b}")
        a(f"      POTENTIAL {p}")
        a("    &END KIND")
    a("  &END SUBSYS")


# --------------------------------------------------------------------------- parsing

_NUM = r"([-+]?(?:\d+\.?\d*(?:[EeDd][-+]?\d+)?|NaN|nan|Infinity|-?Inf|\*+))"


def _tensor_after(text: str, header: str) -> np.ndarray | None:
    """3×3 tensor from the last ``POLAR| <header>`` block (rows xx,yy,zz / xy,xz,yz / yx,zx,zy)."""
    pat = re.compile(
        re.escape(header)
        + r"\s*\n\s*POLAR\|\s*xx,yy,zz\s+"
        + r"\s+".join([_NUM] * 3)
        + r"\s*\n\s*POLAR\|\s*xy,xz,yz\s+"
        + r"\s+".join([_NUM] * 3)
        + r"\s*\n\s*POLAR\|\s*yx,zx,zy\s+"
        + r"\s+".join([_NUM] * 3)
    )
    matches = list(pat.finditer(text))
    if not matches:
        return None
    g = matches[-1].groups()

    def num(s: str) -> float:
        if s.startswith("*"):
            return math.nan  # Fortran overflow
        return float(s.replace("D", "E").replace("d", "e"))

    xx, yy, zz, xy, xz, yz, yx, zx, zy = (num(x) for x in g)
    return np.array([[xx, xy, xz], [yx, yy, yz], [zx, zy, zz]])


def parse_polarizability(output_text: str, symmetrize: bool = False) -> np.ndarray:
    """The cell's polarizability tensor (Å³, 3×3) from a CP2K output.

    Reads the ``POLAR| Polarizability tensor [a.u.]`` block and converts bohr³ → Å³
    (:func:`bohr3_to_A3`); when CP2K also prints the ``[ang^3]`` block, both must agree
    (rtol 1e-5) — a mismatch means a parsing or units error and raises CP2KError.
    Raises CP2KError when the block is missing or holds NaN/overflow.
    """
    au = _tensor_after(output_text, "POLAR| Polarizability tensor [a.u.]")
    a3 = _tensor_after(output_text, "POLAR| Polarizability tensor [ang^3]")
    if au is None and a3 is None:
        raise CP2KError("CP2K output has no 'POLAR| Polarizability tensor' block; the LINRES/POLAR section did not run (check the input's &PROPERTIES).")
    alpha = bohr3_to_A3(au) if au is not None else a3
    alpha = np.asarray(alpha, dtype=float)
    if not np.isfinite(alpha).all():
        raise CP2KError("CP2K polarizability contains NaN/overflow: the linear-response solver diverged (with Na use the q1 potential, not q9).")
    if au is not None and a3 is not None:
        scale = max(1.0, float(np.abs(a3).max()))
        if not np.allclose(alpha, a3, rtol=1e-5, atol=1e-6 * scale):
            raise CP2KError(f"CP2K polarizability: the a.u. block × a0³ ({alpha.diagonal()}) disagrees with the Å³ block ({a3.diagonal()}).")
    if symmetrize:
        alpha = 0.5 * (alpha + alpha.T)
    return alpha


def parse_energy(output_text: str) -> float | None:
    """Total energy (eV) from the last ``ENERGY| Total FORCE_EVAL ( QS ) energy`` line, or None."""
    m = re.findall(r"ENERGY\|\s*Total FORCE_EVAL \( QS \) energy[^:]*:\s*" + _NUM, output_text)
    if not m:
        return None
    e = float(m[-1]) * HARTREE_EV
    if not math.isfinite(e):
        raise CP2KError("CP2K total energy is NaN; the SCF diverged.")
    return e


def parse_forces(output_text: str, n_atoms: int | None = None) -> np.ndarray | None:
    """Forces (eV/Å, shape (n, 3)) from the last ``ATOMIC FORCES in [a.u.]`` block, or None."""
    idx = output_text.rfind("ATOMIC FORCES in [a.u.]")
    if idx < 0:
        return None
    rows = []
    for line in output_text[idx:].splitlines()[1:]:
        if line.strip().startswith("SUM OF ATOMIC FORCES"):
            break
        tok = line.split()
        if len(tok) == 6 and tok[0].isdigit():
            rows.append([float(t) for t in tok[3:6]])
    if not rows:
        return None
    f = np.asarray(rows) * HARTREE_PER_BOHR_TO_EV_PER_A
    if n_atoms is not None and len(f) != n_atoms:
        raise CP2KError(f"CP2K output lists forces on {len(f)} atoms, the frame has {n_atoms}.")
    if not np.isfinite(f).all():
        raise CP2KError("CP2K forces contain NaN.")
    return f


def parse_version(output_text: str) -> str | None:
    m = re.search(r"CP2K\|\s*version string:\s*(.+)", output_text)
    return m.group(1).strip() if m else None


def _abort_message(text: str) -> str | None:
    i = text.rfind("[ABORT]")
    if i < 0:
        return None
    msg = []
    for line in text[i:].splitlines()[1:12]:
        if line.strip().startswith("*****"):
            break
        body = line.strip().strip("*").strip()
        body = re.sub(r"^[\\/|O_ ]+", "", body).strip()  # the ASCII-art figure
        if body and not re.fullmatch(r"[\w/.]+\.F:\d+", body):
            msg.append(body)
    return " ".join(msg) or "CP2K aborted"


def check_output(text: str) -> None:
    """Raise CP2KError when the output shows a failed run (abort, no SCF/LINRES convergence)."""
    msg = _abort_message(text)
    if msg:
        raise CP2KError(f"CP2K aborted: {msg}")
    if "SCF run NOT converged" in text or "outer SCF loop FAILED to converge" in text:
        raise CP2KError("CP2K SCF did not converge; raise max_scf/max_outer_scf or check the structure (atoms too close?).")
    if "linear solver didn't converge" in text or "linear solver did not converge" in text:
        raise CP2KError("CP2K LINRES (polarizability) did not converge; raise linres_max_iter, or check for semicore potentials (Na: use q1).")
    if "PROGRAM ENDED AT" not in text:
        raise CP2KError("CP2K output ends before 'PROGRAM ENDED'; the run crashed or was killed (see the .stdout file next to it).")


# --------------------------------------------------------------------------- one run


@dataclass
class CP2KResult:
    """What one CP2K run produced (Å³, eV, eV/Å)."""

    polarizability: np.ndarray | None
    energy_eV: float | None
    forces: np.ndarray | None
    wall_time_s: float
    cp2k_version: str | None
    output: Path
    kinds: dict[str, tuple[str, str]]
    command: list[str]


def run_cp2k(
    atoms: Atoms,
    settings: CP2KSettings | None = None,
    workdir: str | os.PathLike = ".",
    timeout_s: float = 6 * 3600.0,
    project: str = "cp2k",
    *,
    polarizability: bool = True,
    wfn_guess: str | os.PathLike | None = None,
) -> CP2KResult:
    """Run CP2K for the polarizability (and energy, forces) of ``atoms`` in ``workdir``.

    With ``polarizability=False`` only energy and forces are computed (``polarizability``
    of the result is then None). ``wfn_guess``: a CP2K wavefunction file of a similar
    structure with the same atoms (e.g. the previous frame of a trajectory) to start the
    SCF from; it is copied into ``workdir``.

    Command: ``mpirun [--allow-run-as-root] --bind-to none -np N cp2k.psmp -i cp2k.inp -o cp2k.out``
    (or the serial binary), ``OMP_NUM_THREADS`` set; stdout/stderr go to ``cp2k.stdout``.
    Raises CP2KNotFoundError when CP2K is missing and CP2KError when the run fails,
    times out, does not converge or yields NaN.
    """
    settings = settings or CP2KSettings()
    work = Path(workdir)
    cmd_prefix, _ = find_cp2k(settings)
    guess = None
    if wfn_guess is not None:
        work.mkdir(parents=True, exist_ok=True)
        src = Path(wfn_guess)
        if src.resolve() != (work / GUESS_WFN).resolve():
            shutil.copyfile(src, work / GUESS_WFN)
        guess = GUESS_WFN
    inp = write_input(atoms, settings, work, project=project, polarizability=polarizability, wfn_guess=guess)
    out = work / f"{project}.out"
    log = work / f"{project}.stdout"
    for stale in (out, log):
        stale.unlink(missing_ok=True)
    cmd = cmd_prefix + ["-i", inp.name, "-o", out.name]
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(settings.omp_threads)
    data_dir = find_data_dir(settings)
    if data_dir is not None:
        env["CP2K_DATA_DIR"] = str(data_dir)
    kinds = resolve_kinds(atoms.get_chemical_symbols(), settings)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=work, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise CP2KError(f"CP2K timed out after {timeout_s:.0f} s in {work}; raise timeout_s or use more cores.") from None
        except BaseException:
            _kill_group(proc)
            raise
    wall = time.perf_counter() - t0
    text = out.read_text(errors="replace") if out.exists() else ""
    if not text:
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        raise CP2KError(f"CP2K wrote no output (exit status {proc.returncode}) in {work}: {tail.strip()[-400:]}")
    check_output(text)
    if proc.returncode != 0:
        raise CP2KError(f"CP2K exited with status {proc.returncode} in {work}; see {log}.")
    alpha = parse_polarizability(text) if polarizability else None
    energy = parse_energy(text)
    forces = parse_forces(text, len(atoms)) if settings.forces else None
    return CP2KResult(
        polarizability=alpha,
        energy_eV=energy,
        forces=forces,
        wall_time_s=wall,
        cp2k_version=parse_version(text),
        output=out,
        kinds=kinds,
        command=cmd,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


# --------------------------------------------------------------------------- labels


def settings_of_frame(atoms: Atoms) -> CP2KSettings | None:
    """The CP2K settings a frame was labelled with (``info["polarizability_settings"]``), or None."""
    raw = atoms.info.get("polarizability_settings")
    if raw is None or atoms.info.get("polarizability_source", "cp2k") != "cp2k":
        return None
    try:
        d = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return None
    if d.get("engine") != "cp2k" or "settings" not in d:
        return None
    return CP2KSettings.from_dict(d["settings"])


def effective_settings(atoms: Atoms, settings: CP2KSettings | None, reuse_settings: bool = True) -> CP2KSettings:
    """Settings used for a frame: a previous CP2K label's physics settings win when ``reuse_settings``.

    Execution details (ranks, threads, binary) always come from ``settings``.
    """
    base = settings or CP2KSettings()
    if reuse_settings:
        prev = settings_of_frame(atoms)
        if prev is not None:
            return prev.replace(**{k: getattr(base, k) for k in EXECUTION_FIELDS})
    return base


def label_hash(atoms: Atoms, settings: CP2KSettings) -> str:
    """Identity of (structure, settings): sha256 of numbers, positions, cell (rounded to 1e-6 Å), pbc and physics settings."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update((np.round(np.asarray(atoms.positions, dtype=float), 6) + 0.0).tobytes())
    h.update((np.round(np.asarray(atoms.cell[:], dtype=float), 6) + 0.0).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    h.update(json.dumps(settings.physics_dict(), sort_keys=True).encode())
    return "lh-" + h.hexdigest()[:32]


def label_frame(
    atoms: Atoms,
    settings: CP2KSettings | None = None,
    workdir: str | os.PathLike = ".",
    *,
    reuse_settings: bool = True,
    timeout_s: float = 6 * 3600.0,
    wfn_guess: str | os.PathLike | None = None,
) -> Atoms:
    """A copy of ``atoms`` labelled by CP2K.

    Sets ``info["polarizability"]`` (3×3, Å³, symmetrised; the raw tensor's largest
    asymmetry is kept in ``info["polarizability_asymmetry_A3"]``), ``"polarizability_source"
    = "cp2k"``, ``"polarizability_settings"`` (JSON: settings, resolved basis/potential per
    element, CP2K version), ``"energy_eV"``, ``"label_wall_time_s"``, ``"label_hash"`` and,
    with forces, ``arrays["forces_dft"]`` (eV/Å).

    If the frame already carries CP2K settings from a previous label, those are reused
    (``reuse_settings=True``) so relabelling reproduces the label. ``wfn_guess`` starts
    the SCF from a neighbouring frame's wavefunction (see :func:`run_cp2k`); the label is
    the same to the SCF tolerance, and a failed run with a guess is repeated without it.
    """
    s = effective_settings(atoms, settings, reuse_settings)
    try:
        res = run_cp2k(atoms, s, workdir, timeout_s=timeout_s, wfn_guess=wfn_guess)
    except CP2KError:
        if wfn_guess is None:
            raise
        res = run_cp2k(atoms, s, workdir, timeout_s=timeout_s)
    out = atoms.copy()
    out.calc = None
    raw = res.polarizability
    out.info[KEY] = 0.5 * (raw + raw.T)
    out.info["polarizability_asymmetry_A3"] = float(np.abs(raw - raw.T).max() / 2)
    out.info["polarizability_source"] = "cp2k"
    out.info["polarizability_settings"] = json.dumps(
        {
            "engine": "cp2k",
            "cp2k_version": res.cp2k_version,
            "settings": s.physics_dict(),
            "kinds": {k: list(v) for k, v in res.kinds.items()},
        },
        sort_keys=True,
    )
    if res.energy_eV is not None:
        out.info["energy_eV"] = res.energy_eV
    if res.forces is not None:
        out.arrays["forces_dft"] = res.forces
    out.info["label_wall_time_s"] = round(res.wall_time_s, 2)
    out.info["label_hash"] = label_hash(atoms, s)
    return out


# --------------------------------------------------------------------------- many frames

#: signature of a per-frame labeller: (frame, settings, workdir) -> labelled copy
Labeller = Callable[[Atoms, CP2KSettings, Path], Atoms]


@dataclass
class LabelResult:
    """Outcome of :func:`label_frames` (indices refer to the input frame list)."""

    output: Path
    labelled: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    wall_time_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class _Job:
    index: int
    atoms: Atoms
    settings: CP2KSettings
    workdir: str
    labeller: Labeller
    keep_files: bool
    hash: str
    chain_file: str | None = None  # wavefunction handed from one frame to the next (serial runs)


def _run_job(job: _Job) -> Atoms:
    """Executed on a worker: label one frame in its own directory."""
    work = Path(job.workdir)
    work.mkdir(parents=True, exist_ok=True)
    chain = Path(job.chain_file) if job.chain_file else None
    if chain is not None and chain.exists():
        shutil.copyfile(chain, work / GUESS_WFN)
    out = job.labeller(job.atoms, job.settings, work)
    out.info["label_hash"] = job.hash
    if chain is not None:
        wfn = work / "cp2k-RESTART.wfn"
        if wfn.exists():  # the next frame starts from this one's ground state
            tmp = chain.with_name(chain.name + ".tmp")
            shutil.copyfile(wfn, tmp)
            os.replace(tmp, chain)
    if not job.keep_files:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _cp2k_labeller(atoms: Atoms, settings: CP2KSettings, workdir: Path) -> Atoms:
    guess = workdir / GUESS_WFN
    return label_frame(atoms, settings, workdir, reuse_settings=False, wfn_guess=guess if guess.exists() else None)


def label_frames(
    frames: Sequence[Atoms],
    settings: CP2KSettings | None = None,
    output_xyz: str | os.PathLike = "labels.xyz",
    workdir: str | os.PathLike = "cp2k_runs",
    executor: Any = None,
    progress: bool = True,
    *,
    labeller: Labeller | None = None,
    workers: int | None = None,
    reuse_settings: bool = True,
    keep_files: bool = False,
    chain_guess: bool = False,
) -> LabelResult:
    """Label many frames, in parallel and resumably; returns what happened.

    frames: structures to label (their existing CP2K settings are reused, see :func:`label_frame`).
    output_xyz: extxyz that collects the labelled frames. Each finished label is added
        at once (atomic rewrite), so an interruption loses at most the runs in flight.
        On a rerun, frames whose ``label_hash`` (structure + settings) is already in the
        file are skipped. When every frame is labelled the file is rewritten in input order.
    workdir: scratch root; each frame runs in ``workdir/<label_hash>`` (kept on failure,
        removed after success unless ``keep_files``).
    executor: a ``distributed.Client``; ``"serial"`` runs in this process; None (or an int,
        the number of workers) starts a local cluster with ``workers`` processes (default:
        cores // cores per CP2K run), or runs serially when that is 1. With several local
        workers and ``mpi_ranks=None`` each CP2K run gets cores // workers ranks.
    labeller: the per-frame labelling function ``(atoms, settings, workdir) -> Atoms``
        (default: CP2K via :func:`label_frame`); swap it for tests or another engine.
    chain_guess: for consecutive frames of one trajectory labelled serially: each SCF
        starts from the previous frame's converged wavefunction (kept in
        ``workdir/chain-guess.wfn``), which saves SCF steps, not linear-response ones.
        Ignored (with every frame from the atomic guess) for parallel runs or frames of
        different composition.

    A frame that fails is recorded in ``LabelResult.failed`` (index → reason) and in
    ``<output>.failed.json``; it does not stop the others. Only this (client) process
    writes ``output_xyz``.
    """
    t0 = time.perf_counter()
    frames = list(frames)
    base = settings or CP2KSettings()
    from ..executor import available_cores

    mode: Any = executor
    if mode is None or isinstance(mode, int):
        n = int(mode or workers or max(1, available_cores() // base.cores_per_run))
        if n > 1 and base.mpi_ranks is None:  # share the cores between the parallel CP2K runs
            base = base.replace(mpi_ranks=max(1, available_cores() // (n * base.omp_threads)))
        mode = "serial" if n == 1 else n
    out_path = Path(output_xyz)
    work_root = Path(workdir)
    labeller = labeller or _cp2k_labeller
    result = LabelResult(output=out_path)

    # what is already done
    done: list[Atoms] = read_labelled(out_path, require=False) if out_path.exists() and out_path.stat().st_size > 0 else []
    done_hashes = {str(a.info.get("label_hash")) for a in done if "label_hash" in a.info}

    chain_file = None
    if chain_guess and mode == "serial" and len({tuple(a.numbers) for a in frames}) == 1:
        work_root.mkdir(parents=True, exist_ok=True)
        chain_file = str(work_root / "chain-guess.wfn")
    jobs: list[_Job] = []
    seen: dict[str, int] = {}
    hashes: list[str] = []
    for i, atoms in enumerate(frames):
        s = effective_settings(atoms, base, reuse_settings)
        h = label_hash(atoms, s)
        hashes.append(h)
        if h in done_hashes:
            result.skipped.append(i)
            continue
        if h in seen:  # duplicate frame in the input: label once
            result.skipped.append(i)
            continue
        seen[h] = i
        jobs.append(_Job(i, atoms, s, str(work_root / h), labeller, keep_files, h, chain_file))

    if chain_file is not None:
        jobs.sort(key=_chain_order)
    failures: dict[str, Any] = {}
    failed_path = out_path.with_name(out_path.name + ".failed.json")

    def on_result(key: str, value: Any) -> None:
        i = int(key)
        if isinstance(value, BaseException):
            reason = f"{type(value).__name__}: {value}"
            result.failed[i] = reason
            failures[str(i)] = {"index": i, "label_hash": hashes[i], "reason": reason}
            _write_json_atomic(failed_path, failures)
            return
        done.append(value)
        write_labelled(out_path, done)  # atomic: temporary file + rename
        result.labelled.append(i)

    if jobs:
        if mode == "serial":
            _run_serial(jobs, on_result, progress)
        elif isinstance(mode, int):
            from ..executor import get_client, map_tasks

            with get_client(mode) as client:
                for _ in map_tasks(_run_job, jobs, [str(j.index) for j in jobs], client, on_result, progress, description="CP2K labels"):
                    pass
        else:
            from ..executor import map_tasks

            for _ in map_tasks(_run_job, jobs, [str(j.index) for j in jobs], mode, on_result, progress, description="CP2K labels"):
                pass

    # all frames labelled: rewrite in input order (labels of other frames kept after them)
    if not result.failed and done:
        by_hash = {str(a.info.get("label_hash")): a for a in done}
        ordered = [by_hash[h] for h in dict.fromkeys(hashes) if h in by_hash]
        rest = [a for a in done if str(a.info.get("label_hash")) not in set(hashes)]
        if len(ordered) + len(rest) == len(done) and [id(a) for a in ordered + rest] != [id(a) for a in done]:
            write_labelled(out_path, ordered + rest)  # only when the order changes: a finished file stays untouched
        if failed_path.exists():
            failed_path.unlink()
    result.wall_time_s = time.perf_counter() - t0
    return result


def _chain_order(job: _Job) -> tuple:
    """Chained SCF guesses: label frames of one MD run in time order, runs one after another.

    Farthest-point picks come in the order that makes neighbours most *unlike*; in time order
    each frame starts from the wavefunction of a configuration of the same run and temperature.
    Frames without ``source``/``frame`` keep their input order. The output is rewritten in
    input order at the end, so only the cost changes.
    """
    info = job.atoms.info
    if "source" in info and "frame" in info:
        return (0, str(info["source"]), int(info["frame"]), job.index)
    return (1, "", 0, job.index)


def _run_serial(jobs: list[_Job], on_result: Callable[[str, Any], None], progress: bool) -> None:
    from ..executor import _Progress

    bar = _Progress(len(jobs), 1, "CP2K labels", progress)
    try:
        for job in jobs:
            try:
                value: Any = _run_job(job)
            except Exception as exc:  # recorded, the others go on
                value = exc
            bar.update(not isinstance(value, BaseException))
            on_result(str(job.index), value)
    finally:
        bar.close()


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)
