"""The shipped candidate structures (``ionraman/data/structures``) are valid and physical.

Every catalogue entry must parse with pymatgen and ASE, carry its provenance in the
CIF header, have the catalogued space group and formula, physical nearest-neighbour
distances, and a sensible default supercell. Expected numbers below are the real
crystal-chemical values (bond lengths, atoms per cell), not values read back from
the files.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import spglib
from pymatgen.core import Composition, Structure
from pymatgen.io.cif import CifParser

STRUCT_DIR = Path(str(resources.files("ionraman") / "data" / "structures"))
CATALOG = json.loads((STRUCT_DIR / "catalog.json").read_text())
BY_NAME = {e["name"]: e for e in CATALOG}

EXPECTED_NAMES = {
    "Na3SbS4-tetragonal",
    "Na3SbS4-cubic",
    "Na3PS4-tetragonal",
    "Na3PS4-cubic",
    "Na3PSe4-cubic",
    "AgI-alpha",
    "AgI-beta",
    "Li10GeP2S12",
    "Li6PS5Cl",
    "NaCl",
    "Li3N",
    "LiI",
    "LiF",
}
CATALOG_KEYS = {
    "name",
    "file",
    "formula",
    "phase",
    "spacegroup_symbol",
    "spacegroup_number",
    "mobile_ion",
    "source",
    "icsd",
    "disordered",
    "description",
    "default_supercell",
}

# Atoms per conventional cell once the partial occupancies are ordered (Z x formula).
ATOMS_PER_CELL = {
    "Na3SbS4-tetragonal": {"Na": 6, "Sb": 2, "S": 8},
    "Na3SbS4-cubic": {"Na": 6, "Sb": 2, "S": 8},
    "Na3PS4-tetragonal": {"Na": 6, "P": 2, "S": 8},
    "Na3PS4-cubic": {"Na": 6, "P": 2, "S": 8},
    "Na3PSe4-cubic": {"Na": 6, "P": 2, "Se": 8},
    "AgI-alpha": {"Ag": 2, "I": 2},
    "AgI-beta": {"Ag": 2, "I": 2},
    "Li10GeP2S12": {"Li": 20, "Ge": 2, "P": 4, "S": 24},  # Z = 2, 50 atoms
    "Li6PS5Cl": {"Li": 24, "P": 4, "S": 20, "Cl": 4},  # Z = 4, 52 atoms
    "NaCl": {"Na": 4, "Cl": 4},
    "Li3N": {"Li": 3, "N": 1},  # Z = 1
    "LiI": {"Li": 4, "I": 4},
    "LiF": {"Li": 4, "F": 4},
}

# Number of symmetry operations in the conventional cell: |point group| x centring.
N_OPS = {114: 8, 137: 16, 186: 12, 191: 24, 216: 24 * 4, 217: 24 * 2, 225: 48 * 4, 229: 48 * 2}

# (centre, ligand): (lower, upper) bound of the centre-ligand bond in Å, and the
# number of ligands expected within the upper bound + 0.3 Å.
BONDS = {
    "Na3SbS4-tetragonal": {("Sb", "S"): (2.30, 2.40, 4)},
    "Na3SbS4-cubic": {("Sb", "S"): (2.30, 2.40, 4)},
    "Na3PS4-tetragonal": {("P", "S"): (2.00, 2.10, 4)},
    "Na3PS4-cubic": {("P", "S"): (2.00, 2.10, 4)},
    "Na3PSe4-cubic": {("P", "Se"): (2.15, 2.30, 4)},
    "AgI-beta": {("Ag", "I"): (2.75, 2.90, 4)},
    "AgI-alpha": {("Ag", "I"): (2.80, 2.87, 4)},  # a*sqrt(5)/4 = 2.834 Å for a = 5.07 Å
    "Li10GeP2S12": {("P", "S"): (1.90, 2.20, 4), ("Ge", "S"): (2.05, 2.25, 4)},
    "Li6PS5Cl": {("P", "S"): (2.00, 2.10, 4)},
    "NaCl": {("Na", "Cl"): (2.81, 2.83, 6)},
    "LiI": {("Li", "I"): (2.99, 3.01, 6)},  # a/2
    "LiF": {("Li", "F"): (2.00, 2.02, 6)},  # a/2
    "Li3N": {("N", "Li"): (1.92, 2.12, 8)},  # 2 × c/2 = 1.94 Å (axial) and 6 × a/√3 = 2.11 Å (in-plane)
}


def _load(entry: dict) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "coordinates rounded to ideal values" for 1/3
        return Structure.from_file(STRUCT_DIR / entry["file"])


def _cif_block(entry: dict) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = CifParser(STRUCT_DIR / entry["file"])
    blocks = list(parser.as_dict().values())
    assert len(blocks) == 1
    return blocks[0]


def _spglib_number(structure: Structure, symprec: float = 1e-3) -> int:
    """Space-group number; disordered sites get one spglib type per distinct occupancy."""
    type_of: dict[str, int] = {}
    types = [type_of.setdefault(site.species_string, len(type_of) + 1) for site in structure]
    cell = (structure.lattice.matrix, structure.frac_coords, types)
    ds = spglib.get_symmetry_dataset(cell, symprec=symprec)
    assert ds is not None
    return int(ds.number if hasattr(ds, "number") else ds["number"])


def _element_counts(structure: Structure) -> dict[str, float]:
    counts: dict[str, float] = defaultdict(float)
    for site in structure:
        for sp, occ in site.species.items():
            counts[sp.symbol] += occ
    return dict(counts)


def _perpendicular_widths(matrix: np.ndarray) -> np.ndarray:
    vol = abs(np.linalg.det(matrix))
    return np.array([vol / np.linalg.norm(np.cross(matrix[(i + 1) % 3], matrix[(i + 2) % 3])) for i in range(3)])


# ---------------------------------------------------------------- catalogue


def test_catalog_lists_the_thirteen_candidates_with_all_fields():
    assert {e["name"] for e in CATALOG} == EXPECTED_NAMES
    assert len(CATALOG) == len(EXPECTED_NAMES)
    for e in CATALOG:
        assert set(e) == CATALOG_KEYS, e["name"]
        assert (STRUCT_DIR / e["file"]).is_file(), e["file"]
        assert e["icsd"] is None or (isinstance(e["icsd"], str) and e["icsd"].isdigit())
        assert isinstance(e["disordered"], bool)
        assert isinstance(e["spacegroup_number"], int) and 1 <= e["spacegroup_number"] <= 230
        assert len(e["default_supercell"]) == 3 and all(int(n) >= 1 for n in e["default_supercell"])
        assert e["mobile_ion"] in Composition(e["formula"]).as_dict()
        assert e["description"].strip() and e["source"].strip()
    # Every shipped CIF is catalogued.
    assert {p.name for p in STRUCT_DIR.glob("*.cif")} == {e["file"] for e in CATALOG}


def test_catalog_metadata_matches_known_crystallography():
    expected = {
        "Na3SbS4-tetragonal": (114, "Na", False),
        "Na3SbS4-cubic": (217, "Na", False),
        "Na3PS4-tetragonal": (114, "Na", False),
        "Na3PS4-cubic": (217, "Na", False),
        "Na3PSe4-cubic": (217, "Na", False),
        "AgI-alpha": (229, "Ag", True),
        "AgI-beta": (186, "Ag", False),
        "Li10GeP2S12": (137, "Li", True),
        "Li6PS5Cl": (216, "Li", True),
        "NaCl": (225, "Na", False),
        "Li3N": (191, "Li", False),
        "LiI": (225, "Li", False),
        "LiF": (225, "Li", False),
    }
    for name, (number, ion, disordered) in expected.items():
        e = BY_NAME[name]
        assert (e["spacegroup_number"], e["mobile_ion"], e["disordered"]) == (number, ion, disordered), name


# ---------------------------------------------------------------- per entry


@pytest.fixture(params=[e["name"] for e in CATALOG])
def entry(request) -> dict:
    return BY_NAME[request.param]


def test_cif_header_carries_provenance(entry):
    text = (STRUCT_DIR / entry["file"]).read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert text.startswith("#")
    joined = "\n".join(header)
    assert entry["name"] in header[0]
    assert "Phase:" in joined
    assert "ICSD" in joined
    assert "temperature" in joined.lower()
    assert "Simplification" in joined
    # A literature reference with its year, e.g. "... 142, 18422-18436 (2020), doi:...".
    assert re.search(r"\((19|20)\d\d\)", joined)
    if entry["icsd"]:
        assert f"ICSD {entry['icsd']}" in joined
    # Symmetry-based CIF: all operations and the asymmetric unit with occupancies.
    for tag in (
        "_symmetry_space_group_name_H-M",
        "_space_group_IT_number",
        "_symmetry_equiv_pos_as_xyz",
        "_atom_site_fract_x",
        "_atom_site_occupancy",
        "_atom_site_symmetry_multiplicity",
    ):
        assert tag in text, tag


def test_parses_with_pymatgen_and_ase(entry):
    import ase.io

    s = _load(entry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = ase.io.read(STRUCT_DIR / entry["file"])
    # Both readers expand the same asymmetric unit to the same sites and cell.
    assert len(atoms) == len(s)
    np.testing.assert_allclose(atoms.cell.cellpar(), list(s.lattice.abc) + list(s.lattice.angles), atol=1e-4)
    assert s.is_ordered is not entry["disordered"]


def test_space_group(entry):
    s = _load(entry)
    block = _cif_block(entry)
    assert int(block["_space_group_IT_number"]) == entry["spacegroup_number"]
    assert int(block["_symmetry_Int_Tables_number"]) == entry["spacegroup_number"]
    # All operations of the conventional cell are listed (point-group order x centring).
    assert len(block["_symmetry_equiv_pos_as_xyz"]) == N_OPS[entry["spacegroup_number"]]
    # Ordered: spglib on the expanded structure finds the catalogued group. Disordered:
    # the tag is checked above, and the disorder itself respects the symmetry (one spglib
    # type per distinct species/occupancy gives the same group).
    assert _spglib_number(s, symprec=1e-3) == entry["spacegroup_number"]


def test_composition_and_atoms_per_cell(entry):
    s = _load(entry)
    counts = _element_counts(s)
    expected = ATOMS_PER_CELL[entry["name"]]
    assert set(counts) == set(expected)
    for el, n in expected.items():
        assert counts[el] == pytest.approx(n, abs=1e-4), (el, counts[el])
    rounded = Composition({el: round(v, 3) for el, v in counts.items()})
    assert rounded.reduced_formula == Composition(entry["formula"]).reduced_formula
    if not entry["disordered"]:
        assert s.composition.reduced_formula == Composition(entry["formula"]).reduced_formula
        assert len(s) == sum(expected.values())


def test_multiplicity_times_occupancy_in_asymmetric_unit(entry):
    """Σ multiplicity × occupancy over the CIF's asymmetric unit = atoms per cell."""
    block = _cif_block(entry)
    totals: dict[str, float] = defaultdict(float)
    for el, mult, occ in zip(
        block["_atom_site_type_symbol"],
        block["_atom_site_symmetry_multiplicity"],
        block["_atom_site_occupancy"],
    ):
        totals[el] += int(mult) * float(occ)
    expected = ATOMS_PER_CELL[entry["name"]]
    assert set(totals) == set(expected)
    for el, n in expected.items():
        assert totals[el] == pytest.approx(n, abs=1e-4), (el, totals[el])
    # The written multiplicities are those of the symmetry expansion (a mixed site,
    # e.g. Ge/P in LGPS, is two rows at one position).
    s = _load(entry)
    positions = {
        (x, y, z): int(m)
        for x, y, z, m in zip(
            block["_atom_site_fract_x"],
            block["_atom_site_fract_y"],
            block["_atom_site_fract_z"],
            block["_atom_site_symmetry_multiplicity"],
        )
    }
    assert len(s) == sum(positions.values())


def test_nearest_neighbour_distances_are_physical(entry):
    s = _load(entry)
    full = [i for i, site in enumerate(s) if all(abs(o - 1.0) < 1e-9 for o in site.species.values())]
    dm = s.distance_matrix
    if not entry["disordered"]:
        d = dm + np.eye(len(s)) * 1e3
        assert d.min() > 1.8, d.min()
    else:
        # Fully occupied framework: no short contacts among themselves …
        sub = dm[np.ix_(full, full)] + np.eye(len(full)) * 1e3
        assert sub.min() > 1.8
        # … nor between any partially occupied site and the framework.
        part = [i for i in range(len(s)) if i not in set(full)]
        assert dm[np.ix_(part, full)].min() > 1.8


def test_characteristic_bond_lengths(entry):
    s = _load(entry)
    for (centre, ligand), (lo, hi, cn) in BONDS[entry["name"]].items():
        found = False
        for site in s:
            if centre not in {sp.symbol for sp in site.species}:
                continue
            if entry["name"] == "Li10GeP2S12" and centre == "P" and len(site.species) > 1:
                continue  # the mixed Ge/P 4d site is tested as the Ge entry
            neigh = [n for n in s.get_neighbors(site, hi + 0.3) if ligand in {sp.symbol for sp in n.species}]
            dists = sorted(n.nn_distance for n in neigh)
            assert len(dists) == cn, (centre, ligand, dists)
            assert lo <= dists[0] and dists[-1] <= hi, (centre, ligand, dists)
            found = True
        assert found, (centre, ligand)


def test_specific_reference_distances():
    # Rock salt: Na-Cl = a/2 = 2.820 Å.
    s = _load(BY_NAME["NaCl"])
    d = min(n.nn_distance for n in s.get_neighbors(s[0], 3.5))
    assert d == pytest.approx(2.82, abs=0.01)
    # Cubic Na3SbS4 (ICSD 44707): Sb-S = sqrt(3) * 0.187 * 7.17 Å = 2.322 Å.
    s = _load(BY_NAME["Na3SbS4-cubic"])
    sb = next(site for site in s if site.specie.symbol == "Sb")
    d = min(n.nn_distance for n in s.get_neighbors(sb, 3.0))
    assert d == pytest.approx(math.sqrt(3) * 0.187 * 7.17, abs=1e-3)
    assert s.lattice.a == pytest.approx(7.17, abs=1e-6)
    # alpha-AgI: Ag on 12d is tetrahedrally coordinated, Ag-I = a*sqrt(5)/4.
    s = _load(BY_NAME["AgI-alpha"])
    ag = next(site for site in s if "Ag" in {sp.symbol for sp in site.species})
    d = min(n.nn_distance for n in s.get_neighbors(ag, 3.5) if "I" in {sp.symbol for sp in n.species})
    assert d == pytest.approx(s.lattice.a * math.sqrt(5) / 4, abs=1e-4)


def test_default_supercell_is_large_enough(entry):
    s = _load(entry)
    reps = np.array(entry["default_supercell"], dtype=int)
    n_atoms = sum(ATOMS_PER_CELL[entry["name"]].values()) * int(np.prod(reps))
    widths = _perpendicular_widths(s.lattice.matrix) * reps
    assert n_atoms >= 100, n_atoms
    assert widths.min() >= 9.8, widths  # ~10 Å (Li6PS5Cl and LGPS are the tightest)
    assert n_atoms <= 450, n_atoms  # stays affordable for MLFF MD
