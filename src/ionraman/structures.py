"""Structures: built-in candidates, loading and validation, ordering, supercells.

A *structure* argument anywhere in ionraman is either the name of a built-in
candidate (``ionraman structures`` lists them; CIF files with provenance ship in
``ionraman/data/structures``) or a path to a CIF, POSCAR/CONTCAR or extended-XYZ
file. Partially occupied sites are ordered reproducibly with a seeded random
assignment that keeps the composition, after the supercell is built so that the
occupancies give integer counts.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .errors import InputError

__all__ = [
    "BuiltinStructure",
    "LoadedStructure",
    "builtin_structures",
    "get_builtin",
    "load_structure",
    "parse_supercell",
    "supercell_repeats",
    "perpendicular_widths",
    "check_atoms",
    "formula",
]


@dataclass(frozen=True)
class BuiltinStructure:
    """One shipped candidate (an entry of ``data/structures/catalog.json``)."""

    name: str
    file: str
    formula: str
    phase: str
    spacegroup_symbol: str
    spacegroup_number: int
    mobile_ion: str
    source: str
    icsd: str | None
    disordered: bool
    description: str
    default_supercell: tuple[int, int, int]

    @property
    def path(self) -> Path:
        """Absolute path of the shipped CIF file."""
        return Path(str(resources.files("ionraman") / "data" / "structures" / self.file))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "formula": self.formula,
            "phase": self.phase,
            "spacegroup_symbol": self.spacegroup_symbol,
            "spacegroup_number": self.spacegroup_number,
            "mobile_ion": self.mobile_ion,
            "path": str(self.path),
            "source": self.source,
            "icsd": self.icsd,
            "disordered": self.disordered,
            "description": self.description,
            "default_supercell": list(self.default_supercell),
        }


@cache
def builtin_structures() -> tuple[BuiltinStructure, ...]:
    """All built-in candidates, in catalog order."""
    text = (resources.files("ionraman") / "data" / "structures" / "catalog.json").read_text()
    out = []
    for e in json.loads(text):
        out.append(
            BuiltinStructure(
                name=e["name"],
                file=e["file"],
                formula=e["formula"],
                phase=e.get("phase", ""),
                spacegroup_symbol=e.get("spacegroup_symbol", ""),
                spacegroup_number=int(e["spacegroup_number"]),
                mobile_ion=e["mobile_ion"],
                source=e["source"],
                icsd=e.get("icsd"),
                disordered=bool(e.get("disordered", False)),
                description=e.get("description", ""),
                default_supercell=tuple(e.get("default_supercell", (1, 1, 1))),
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class BuiltinVariant:
    """A defective variant of a built-in candidate (``data/structures/variants.json``)."""

    name: str
    base: str
    supercell: tuple[int, int, int]
    substitutions: tuple[str, ...]
    vacancies: str | None
    description: str
    source: str


@cache
def builtin_variants() -> tuple[BuiltinVariant, ...]:
    """Doped/defective variants such as ``Na3SbS4-cubic-W0.125``."""
    text = (resources.files("ionraman") / "data" / "structures" / "variants.json").read_text()
    return tuple(
        BuiltinVariant(
            name=e["name"],
            base=e["base"],
            supercell=tuple(e["supercell"]),
            substitutions=tuple(e.get("substitutions", ())),
            vacancies=e.get("vacancies"),
            description=e.get("description", ""),
            source=e.get("source", ""),
        )
        for e in json.loads(text)
    )


def _find_variant(name: str) -> BuiltinVariant | None:
    for v in builtin_variants():
        if v.name.lower() == name.lower():
            return v
    return None


def get_builtin(name: str) -> BuiltinStructure:
    """The built-in candidate called ``name`` (case-insensitive)."""
    for b in builtin_structures():
        if b.name.lower() == name.lower():
            return b
    names = ", ".join([b.name for b in builtin_structures()] + [v.name for v in builtin_variants()])
    raise InputError(f"'{name}' is neither a file nor a built-in structure; use a CIF/POSCAR/extxyz path or one of: {names}.")


@dataclass(frozen=True)
class LoadedStructure:
    """A structure ready for simulation, with where it came from and what was done to it."""

    atoms: Atoms
    name: str
    source: str
    mobile_ion: str | None
    repeats: tuple[int, int, int]
    ordering: dict[str, Any] = field(default_factory=dict)
    defects: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable provenance, stored as trajectory metadata."""
        return {
            "structure": self.name,
            "structure_source": self.source,
            "formula": formula(self.atoms),
            "n_atoms": len(self.atoms),
            "supercell": list(self.repeats),
            "mobile_ion": self.mobile_ion,
            "ordering": self.ordering,
            "defects": self.defects,
        }


def formula(atoms: Atoms) -> str:
    """Chemical formula with elements by increasing electronegativity (pymatgen's order), e.g. Na46Sb14W2S64."""
    from pymatgen.core import Composition

    return Composition(atoms.get_chemical_formula()).formula.replace(" ", "")


def parse_supercell(text: str) -> tuple[int, int, int]:
    """Parse '2x2x2' (or '2,2,2', or '2' for 2x2x2) into repeats."""
    parts = text.lower().replace(",", "x").replace("×", "x").split("x")
    try:
        reps = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--supercell '{text}' is not of the form AxBxC with integers, e.g. 2x2x2.") from None
    if len(reps) == 1:
        reps = reps * 3
    if len(reps) != 3 or min(reps) < 1:
        raise InputError(f"--supercell '{text}' must be three positive integers like 2x2x2.")
    return (reps[0], reps[1], reps[2])


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell (Å): V / |b×c| etc.

    A periodic image is at least this far away along each direction, so this —
    not the length of a lattice vector — is what must exceed a cutoff.
    """
    cell = np.asarray(cell, dtype=float)
    vol = abs(np.linalg.det(cell))
    return np.array([vol / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])


def supercell_repeats(
    cell: np.ndarray, n_atoms_unit: int, min_atoms: int | None = None, min_width_A: float | None = None
) -> tuple[int, int, int]:
    """Smallest diagonal repeats with every width ≥ ``min_width_A`` and at least ``min_atoms`` atoms.

    Widths are perpendicular widths (:func:`perpendicular_widths`). Extra atoms
    are added by growing the currently narrowest direction, which keeps the cell
    as isotropic as possible.
    """
    widths = perpendicular_widths(cell)
    reps = np.ones(3, dtype=int)
    if min_width_A:
        reps = np.maximum(1, np.ceil(min_width_A / widths - 1e-9).astype(int))
    if min_atoms:
        while n_atoms_unit * int(np.prod(reps)) < min_atoms:
            reps[int(np.argmin(widths * reps))] += 1
    return (int(reps[0]), int(reps[1]), int(reps[2]))


def _read_file(path: Path) -> tuple[Any, str]:
    """Read a file into a pymatgen Structure (CIF, keeps partial occupancy) or ASE Atoms."""
    suffix = path.suffix.lower()
    if suffix == ".cif" or path.name.lower().endswith(".mcif"):
        from pymatgen.core import Structure

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = Structure.from_file(str(path))
        except Exception as exc:  # pymatgen raises many kinds of errors for bad CIFs
            raise InputError(
                f"{path}: could not be read as a CIF ({str(exc).strip() or type(exc).__name__}); "
                "check the _cell_length_*, _atom_site_* and symmetry loops, or convert it with another tool."
            ) from None
        return s, "cif"
    import ase.io

    try:
        fmt = "vasp" if path.name.upper().startswith(("POSCAR", "CONTCAR")) or suffix == ".vasp" else None
        atoms = ase.io.read(str(path), format=fmt)
    except Exception as exc:
        raise InputError(
            f"{path}: could not be read as a structure ({str(exc).strip() or type(exc).__name__}); "
            "give a CIF, POSCAR/CONTCAR or extended-XYZ file."
        ) from None
    if isinstance(atoms, list):
        atoms = atoms[-1]
    return atoms, "ase"


def _order(structure: Any, rng: np.random.Generator, label: str) -> tuple[Atoms, dict[str, Any]]:
    """Order a (super)cell with partial occupancies, keeping the composition.

    Sites sharing the same occupancy dictionary (the images of one
    crystallographic site) form a group; each species gets round(n_sites·occ)
    of them, chosen by the seeded generator, and the rest stay vacant. Written
    by hand because pymatgen's OrderDisorderedStructureTransformation enumerates
    Ewald energies, which is far too slow for MD-sized cells and needs charges.
    """
    from pymatgen.io.ase import AseAtomsAdaptor

    groups: dict[tuple, list[int]] = {}
    for i, site in enumerate(structure):
        key = tuple(sorted((str(sp.symbol), round(float(occ), 4)) for sp, occ in site.species.items()))
        groups.setdefault(key, []).append(i)
    symbols: list[str | None] = [None] * len(structure)
    report: dict[str, Any] = {}
    occupied_partial: list[int] = []
    excl_used: dict[str, float] = {}
    for key, idx in groups.items():
        total_occ = sum(o for _, o in key)
        if len(key) == 1 and abs(total_occ - 1.0) < 1e-3:
            for i in idx:
                symbols[i] = key[0][0]
            continue
        n = len(idx)
        expected = {sp: n * occ for sp, occ in key}
        counts = {sp: int(math.floor(x + 1e-6)) for sp, x in expected.items()}
        # largest remainder, never more atoms than sites
        rest = sorted(expected, key=lambda sp: expected[sp] - counts[sp], reverse=True)
        target = min(n, round(sum(expected.values())))
        for sp in rest:
            if sum(counts.values()) >= target:
                break
            counts[sp] += 1
        n_occ = sum(counts.values())
        if n_occ < n:
            chosen, factor = _spread_sites(structure, idx, n_occ, occupied_partial, rng)
            excl_used[str(key)] = factor
        else:
            chosen = list(rng.permutation(idx))
        chosen = list(rng.permutation(chosen))  # which species goes where, for mixed sites
        pos = 0
        for sp, c in counts.items():
            for i in chosen[pos : pos + c]:
                symbols[i] = sp
            pos += c
        occupied_partial += [int(i) for i in chosen]
        name = "+".join(f"{sp}:{occ:g}" for sp, occ in key)
        report[name] = {
            "n_sites": n,
            "assigned": counts,
            "expected": {sp: round(x, 4) for sp, x in expected.items()},
            "vacant": n - sum(counts.values()),
        }
        if str(key) in excl_used:
            report[name]["min_distance_factor"] = excl_used[str(key)]
        if any(abs(expected[sp] - counts[sp]) > 0.05 for sp in counts):
            report[name]["note"] = "occupancy × sites is not an integer here; rounded (use a larger supercell to reduce the error)"
    keep = [i for i, s in enumerate(symbols) if s is not None]
    atoms = AseAtomsAdaptor.get_atoms(_ordered_copy(structure, symbols, keep))
    return atoms, {"method": "seeded random assignment per site group", "groups": report, "source": label}


def _spread_sites(
    structure: Any, idx: list[int], n_occ: int, taken: list[int], rng: np.random.Generator
) -> tuple[list[int], float]:
    """Pick ``n_occ`` of the partially occupied sites ``idx`` at random, never two too close.

    Partially occupied sites are often closer than two atoms can be (12d sites
    of α-AgI are 1.79 Å apart): random sequential addition keeps every pair of
    occupied partial sites at least ``f`` × the sum of covalent radii apart,
    starting at f = 0.75 and relaxing f only when no arrangement is found.
    """
    from ase.data import atomic_numbers, covalent_radii

    lat = structure.lattice
    frac = np.array([structure[i].frac_coords for i in range(len(structure))])
    rad = np.array([covalent_radii[atomic_numbers[structure[i].species.elements[0].symbol]] for i in range(len(structure))])

    def dist(i: int, others: list[int]) -> np.ndarray:
        d = frac[others] - frac[i]
        d -= np.round(d)
        return np.linalg.norm(d @ lat.matrix, axis=1)

    for f in (0.75, 0.65, 0.55, 0.0):
        for _attempt in range(20):
            chosen: list[int] = []
            for i in rng.permutation(idx):
                others = taken + chosen
                if not others or f == 0.0 or (dist(int(i), others) >= f * (rad[i] + rad[others])).all():
                    chosen.append(int(i))
                    if len(chosen) == n_occ:
                        return chosen, f
    raise AssertionError("unreachable: f = 0 accepts every site")


def _ordered_copy(structure: Any, symbols: list[str | None], keep: list[int]) -> Any:
    from pymatgen.core import Structure

    return Structure(
        structure.lattice,
        [symbols[i] for i in keep],
        [structure[i].frac_coords for i in keep],
    )


def check_atoms(atoms: Atoms, label: str) -> None:
    """Validate a structure: finite coordinates, a 3D periodic cell, no overlapping atoms."""
    pos = atoms.get_positions()
    if not np.isfinite(pos).all():
        raise InputError(f"{label}: atomic positions contain NaN or infinite values; fix the coordinates in the file.")
    cell = atoms.cell.array
    if not np.isfinite(cell).all() or abs(np.linalg.det(cell)) < 1e-6:
        raise InputError(f"{label}: the cell is missing or degenerate; give a periodic structure with three lattice vectors.")
    if len(atoms) > 1:
        from ase.neighborlist import neighbor_list

        i, j, d = neighbor_list("ijd", atoms, 0.5)
        if len(d):
            raise InputError(
                f"{label}: atoms {i[0]} ({atoms[i[0]].symbol}) and {j[0]} ({atoms[j[0]].symbol}) are only "
                f"{d[0]:.2f} Å apart; the file has overlapping or duplicated sites (check occupancies and symmetry)."
            )


def load_structure(
    spec: str | Path,
    supercell: tuple[int, int, int] | str | None = None,
    min_atoms: int | None = None,
    min_width_A: float | None = None,
    seed: int = 0,
    vacancies: dict[str, float] | str | None = None,
    substitutions: list[Any] | str | None = None,
    mobile_ion: str | None = None,
    defect_trials: int = 1,
    forcefield: Any = None,
) -> LoadedStructure:
    """Load a built-in candidate or a structure file, build the supercell and order it.

    Parameters
    ----------
    spec : built-in name (e.g. ``"Na3SbS4-cubic"``) or a CIF/POSCAR/extxyz path.
    supercell : explicit repeats, ``(2, 2, 2)`` or ``"2x2x2"``.
    min_atoms, min_width_A : alternatively the smallest supercell with at least
        this many atoms and every perpendicular width ≥ ``min_width_A`` (Å;
        use twice the force field's cutoff).
    seed : seed of the ordering of partially occupied sites and of defect placement.
    vacancies, substitutions : point defects (see :mod:`ionraman.defects`),
        e.g. ``"Na:2"`` and ``"Sb:W:0.125"``; charged substitutions are
        compensated by vacancies/interstitials of the mobile ion.
    mobile_ion : overrides the catalog's mobile ion (needed for files).
    defect_trials, forcefield : keep the lowest-energy of this many placements.
    """
    path = Path(spec)
    mobile: str | None = None
    variant = None if path.exists() else _find_variant(str(spec))
    if variant is not None:
        if supercell is None and not (min_atoms or min_width_A):
            supercell = variant.supercell
        substitutions = list(variant.substitutions) + _as_list(substitutions)
        vacancies = vacancies or variant.vacancies
        spec = variant.base
        path = Path(spec)
    if path.exists():
        label, source = str(path), f"file {path}"
    else:
        b = get_builtin(str(spec))
        path, label, source, mobile = b.path, b.name, b.source, b.mobile_ion
    obj, kind = _read_file(path)
    if kind == "cif":
        n_unit = len(obj)
        cell = obj.lattice.matrix
    else:
        n_unit = len(obj)
        cell = obj.cell.array
        if not obj.pbc.all():
            raise InputError(f"{path}: the structure is not periodic in all three directions; ionraman simulates bulk crystals.")
    if isinstance(supercell, str):
        supercell = parse_supercell(supercell)
    if supercell is not None and (min_atoms or min_width_A):
        raise InputError("Give either --supercell or --min-atoms/--min-width, not both.")
    if supercell is None:
        supercell = supercell_repeats(cell, n_unit, min_atoms, min_width_A) if (min_atoms or min_width_A) else (1, 1, 1)
    ordering: dict[str, Any] = {}
    if kind == "cif":
        s = obj.copy()
        s.make_supercell(list(supercell))
        if s.is_ordered:
            from pymatgen.io.ase import AseAtomsAdaptor

            atoms = AseAtomsAdaptor.get_atoms(s)
        else:
            atoms, ordering = _order(s, np.random.default_rng(seed), label)
            ordering["seed"] = seed
    else:
        atoms = obj.repeat(supercell)
    atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    mobile = mobile_ion or mobile
    defects: dict[str, Any] = {}
    if vacancies or substitutions:
        from .defects import apply_defects, parse_substitution, parse_vacancies

        vac = parse_vacancies(vacancies) if isinstance(vacancies, str) else vacancies
        subs = [parse_substitution(x) if isinstance(x, str) else x for x in _as_list(substitutions)]
        res = apply_defects(
            atoms, vac, subs, mobile_ion=mobile, seed=seed, n_trials=defect_trials, forcefield=forcefield, label=label
        )
        atoms, defects = res.atoms, res.describe()
    if variant is not None:
        label, source = variant.name, f"{source}; {variant.source}"
    check_atoms(atoms, label)
    return LoadedStructure(
        atoms=atoms, name=label, source=source, mobile_ion=mobile, repeats=tuple(supercell), ordering=ordering, defects=defects
    )


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, (str, bytes)) or not isinstance(x, (list, tuple)):
        return [x]
    return list(x)
