"""Importers of reference labels: VASP (OUTCAR, vasprun.xml), Quantum ESPRESSO ph.x, extxyz."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from ionraman.errors import InputError
from ionraman.polarizability.dataset import A3_to_bohr3, epsilon_from_alpha, get_alpha, read_labelled, write_labelled
from ionraman.polarizability.importers import (
    import_labels,
    read_extxyz_labels,
    read_qe_dielectric,
    read_vasp_dielectric,
    tensor_from_components,
)

DATA = Path(__file__).parent / "data"
# fixtures: NaCl rocksalt primitive cell, a = 5.69 Å (V = a³/4)
V_NACL = 5.69**3 / 4
EPS_VASP = np.array([[2.431872, 0.000012, -0.000008], [0.000012, 2.431872, 0.000005], [-0.000008, 0.000005, 2.431872]])


def test_vasp_outcar_electronic_dielectric_tensor():
    a = read_vasp_dielectric(DATA / "vasp_nacl" / "OUTCAR")
    assert a.get_chemical_symbols() == ["Na", "Cl"]
    assert math.isclose(a.get_volume(), V_NACL, rel_tol=1e-6)
    # the 'including local field effects in DFT' block — not the independent-particle
    # (2.612) nor the ionic (3.452) block
    assert np.allclose(a.info["epsilon_inf"].reshape(3, 3), EPS_VASP)
    alpha = get_alpha(a)
    assert np.allclose(alpha, V_NACL * (EPS_VASP - np.eye(3)) / (4 * np.pi))
    assert math.isclose(alpha[0, 0], 5.2477, rel_tol=1e-4)
    assert np.allclose(epsilon_from_alpha(alpha, a.get_volume()), EPS_VASP)
    assert a.info["polarizability_source"] == "vasp"
    # the directory works too, and auto-detection
    assert np.allclose(get_alpha(import_labels(DATA / "vasp_nacl")[0]), alpha)
    assert np.allclose(get_alpha(import_labels(DATA / "vasp_nacl" / "OUTCAR")[0]), alpha)


def test_vasp_vasprun_uses_electronic_epsilon(tmp_path):
    a = read_vasp_dielectric(DATA / "vasp_nacl_xml" / "vasprun.xml")
    assert type(a) is Atoms and a.get_chemical_symbols() == ["Na", "Cl"]
    assert np.allclose(a.info["epsilon_inf"].reshape(3, 3), EPS_VASP)  # not epsilon_rpa / epsilon_ion
    assert np.allclose(get_alpha(a), get_alpha(read_vasp_dielectric(DATA / "vasp_nacl" / "OUTCAR")), atol=1e-9)
    assert import_labels(DATA / "vasp_nacl_xml")[0].info["polarizability_source"] == "vasp"


def test_vasp_errors(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "OUTCAR").write_text((DATA / "vasp_nacl" / "OUTCAR").read_text())
    with pytest.raises(InputError, match="POSCAR"):
        read_vasp_dielectric(d / "OUTCAR")  # no structure beside it
    assert read_vasp_dielectric(d / "OUTCAR", structure=DATA / "vasp_nacl" / "POSCAR").info["polarizability_source"] == "vasp"
    plain = tmp_path / "OUTCAR"
    plain.write_text("\n".join(line for line in (DATA / "vasp_nacl" / "OUTCAR").read_text().splitlines() if "DIELECTRIC" not in line))
    shutil.copy(DATA / "vasp_nacl" / "POSCAR", tmp_path / "POSCAR")
    with pytest.raises(InputError, match="LEPSILON"):
        read_vasp_dielectric(plain)


def test_qe_ph_output_with_and_without_pw_input():
    eps = 2.417391522
    a = read_qe_dielectric(DATA / "qe_nacl" / "ph.out")  # structure from the ph.x header
    b = read_qe_dielectric(DATA / "qe_nacl" / "ph.out", DATA / "qe_nacl" / "pw.in")
    for x in (a, b):
        assert x.get_chemical_symbols() == ["Na", "Cl"]
        assert math.isclose(x.get_volume(), 10.7525**3 / 4 * 0.529177210903**3, rel_tol=1e-6)
        assert np.allclose(x.info["epsilon_inf"].reshape(3, 3), eps * np.eye(3))
        assert np.allclose(get_alpha(x), x.get_volume() * (eps - 1) / (4 * np.pi) * np.eye(3))
        assert x.info["polarizability_source"] == "qe"
    assert np.allclose(a.get_scaled_positions() % 1.0, b.get_scaled_positions() % 1.0, atol=1e-6)
    assert np.allclose(get_alpha(import_labels(DATA / "qe_nacl" / "ph.out")[0]), get_alpha(a))


def test_qe_missing_block(tmp_path):
    p = tmp_path / "ph.out"
    p.write_text((DATA / "qe_nacl" / "ph.out").read_text().replace("Dielectric constant in cartesian axis", "Something else"))
    with pytest.raises(InputError, match="epsil"):
        read_qe_dielectric(p)


def test_extxyz_polarizability_forms_and_units(tmp_path):
    base = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    full = np.array([[10.0, 0.5, 0.2], [0.5, 11.0, -0.3], [0.2, -0.3, 12.0]])
    frames = []
    for key, value in [
        ("polarizability", full.reshape(9)),
        ("alpha", np.array([10.0, 11.0, 12.0, -0.3, 0.2, 0.5])),  # Voigt xx yy zz yz xz xy
        ("polarizability", np.array([7.0])),
    ]:
        a = base.copy()
        a.info[key] = value
        frames.append(a)
    import ase.io

    p = tmp_path / "mixed.xyz"
    ase.io.write(p, frames, format="extxyz")
    got = read_extxyz_labels(p)
    assert np.allclose(get_alpha(got[0]), full)
    assert np.allclose(get_alpha(got[1]), full)
    assert np.allclose(get_alpha(got[2]), 7.0 * np.eye(3))
    # atomic units
    q = tmp_path / "bohr.xyz"
    a = base.copy()
    a.info["polarizability"] = A3_to_bohr3(full).reshape(9)
    ase.io.write(q, a, format="extxyz")
    assert np.allclose(get_alpha(read_extxyz_labels(q, units="bohr3")[0]), full)
    with pytest.raises(InputError, match="units"):
        read_extxyz_labels(q, units="nm3")


def test_extxyz_dielectric_is_converted(tmp_path):
    import ase.io

    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    eps = np.diag([2.4, 2.5, 2.6])
    a.info["epsilon"] = eps.reshape(9)
    p = tmp_path / "eps.xyz"
    ase.io.write(p, a, format="extxyz")
    got = import_labels(p)[0]
    assert np.allclose(get_alpha(got), a.get_volume() * (eps - np.eye(3)) / (4 * np.pi))
    # round trip through the dataset writer
    write_labelled(tmp_path / "out.xyz", [got])
    assert np.allclose(get_alpha(read_labelled(tmp_path / "out.xyz")[0]), get_alpha(got))


def test_dispatch_errors(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("nothing here\n")
    with pytest.raises(InputError, match="unknown format"):
        import_labels(p)
    with pytest.raises(InputError, match="fmt="):
        import_labels(DATA / "qe_nacl" / "ph.out", fmt="castep")
    with pytest.raises(InputError, match="no such file"):
        import_labels(tmp_path / "missing.out")
    import ase.io

    q = tmp_path / "plain.xyz"
    ase.io.write(q, bulk("NaCl", "rocksalt", a=5.64), format="extxyz")
    with pytest.raises(InputError, match="no polarizability"):
        import_labels(q)
    with pytest.raises(InputError):
        tensor_from_components([1.0, 2.0])
