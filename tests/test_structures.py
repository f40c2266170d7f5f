from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from ionraman.errors import InputError
from ionraman.structures import (
    builtin_structures,
    formula,
    get_builtin,
    load_structure,
    parse_supercell,
    perpendicular_widths,
    supercell_repeats,
)


def test_catalog_has_the_required_candidates():
    names = {b.name for b in builtin_structures()}
    for n in ["Na3SbS4-tetragonal", "Na3SbS4-cubic", "Na3PS4-tetragonal", "Na3PS4-cubic", "Na3PSe4-cubic",
              "AgI-alpha", "AgI-beta", "Li10GeP2S12", "Li6PS5Cl", "NaCl"]:
        assert n in names
    for b in builtin_structures():
        assert b.path.exists()
        assert b.source


def test_spglib_confirms_ordered_builtins():
    import spglib

    for b in builtin_structures():
        if b.disordered:
            continue
        a = load_structure(b.name).atoms
        sg = spglib.get_symmetry_dataset((a.cell.array, a.get_scaled_positions(), a.numbers), symprec=1e-3)
        assert sg.number == b.spacegroup_number, b.name


def test_supercell_parsing_and_min_size():
    assert parse_supercell("2x2x2") == (2, 2, 2)
    assert parse_supercell("3") == (3, 3, 3)
    assert parse_supercell("1,2,3") == (1, 2, 3)
    for bad in ["2x2", "axbxc", "0x1x1"]:
        with pytest.raises(InputError, match="--supercell"):
            parse_supercell(bad)
    # hexagonal cell: the perpendicular width is a·sin60°, not a
    cell = np.array([[4.0, 0, 0], [-2.0, 2 * np.sqrt(3), 0], [0, 0, 7.0]])
    np.testing.assert_allclose(perpendicular_widths(cell), [2 * np.sqrt(3), 2 * np.sqrt(3), 7.0])
    reps = supercell_repeats(cell, 4, min_atoms=None, min_width_A=12.0)
    assert reps == (4, 4, 2)
    assert supercell_repeats(np.eye(3) * 7.17, 16, min_atoms=100, min_width_A=12.0) == (2, 2, 2)
    assert supercell_repeats(np.eye(3) * 7.17, 16, min_atoms=150, min_width_A=12.0) == (3, 2, 2)


def test_min_atoms_respects_cutoff():
    s = load_structure("Na3SbS4-cubic", min_atoms=100, min_width_A=12.0)
    assert len(s.atoms) == 128 and s.repeats == (2, 2, 2)
    assert perpendicular_widths(s.atoms.cell.array).min() >= 12.0


def test_disordered_ordering_is_seeded_and_keeps_composition():
    a1 = load_structure("AgI-alpha", supercell="2x2x2", seed=1)
    a2 = load_structure("AgI-alpha", supercell="2x2x2", seed=1)
    a3 = load_structure("AgI-alpha", supercell="2x2x2", seed=2)
    assert Counter(a1.atoms.get_chemical_symbols()) == {"Ag": 16, "I": 16}
    np.testing.assert_array_equal(a1.atoms.positions, a2.atoms.positions)
    assert not np.array_equal(a1.atoms.positions, a3.atoms.positions)
    g = a1.ordering["groups"]
    assert list(g.values())[0]["n_sites"] == 96 and list(g.values())[0]["assigned"] == {"Ag": 16}
    # no two Ag on neighbouring 12d sites (1.79 Å apart)
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", a1.atoms, 2.2)
    assert len(d) == 0
    assert formula(load_structure("Li10GeP2S12", seed=0).atoms) == "Li20Ge2P4S24"
    assert formula(load_structure("Li6PS5Cl", seed=0).atoms) == "Li24P4S20Cl4"


def test_variant_builds_doped_cell():
    s = load_structure("Na3SbS4-cubic-W0.125", seed=1)
    assert formula(s.atoms) == "Na46Sb14W2S64"
    assert s.defects["vacancies"] == {"Na": 2} and s.defects["net_formal_charge"] == 0
    assert s.describe()["defects"]["substitutions"] == {"Sb->W": 2}


def test_files_load(tmp_path):
    import ase.io

    a = load_structure("NaCl").atoms
    ase.io.write(tmp_path / "POSCAR", a, format="vasp")
    ase.io.write(tmp_path / "x.extxyz", a, format="extxyz")
    for p in (tmp_path / "POSCAR", tmp_path / "x.extxyz", get_builtin("NaCl").path):
        s = load_structure(str(p), supercell="2x1x1")
        assert len(s.atoms) == 16
    assert load_structure(str(tmp_path / "POSCAR")).mobile_ion is None


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="neither a file nor a built-in structure.*Na3SbS4-cubic"):
        load_structure("Na3SbS4-hexagonal")
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 5\nloop_\n_atom_site_label\nNa1\n")
    with pytest.raises(InputError, match=r"broken.cif: could not be read as a CIF"):
        load_structure(str(bad))
    junk = tmp_path / "junk.xyz"
    junk.write_text("this is not\na structure\n")
    with pytest.raises(InputError, match="junk.xyz: could not be read"):
        load_structure(str(junk))
    with pytest.raises(InputError, match="either --supercell or --min-atoms"):
        load_structure("NaCl", supercell="2x2x2", min_atoms=100)
    from ase import Atoms
    import ase.io

    ase.io.write(tmp_path / "mol.xyz", Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
    with pytest.raises(InputError, match="not periodic"):
        load_structure(str(tmp_path / "mol.xyz"))
    ase.io.write(tmp_path / "overlap.extxyz", Atoms("Na2", positions=[[0, 0, 0], [0.1, 0, 0]], cell=[5, 5, 5], pbc=True))
    with pytest.raises(InputError, match="only 0.10 Å apart"):
        load_structure(str(tmp_path / "overlap.extxyz"))
