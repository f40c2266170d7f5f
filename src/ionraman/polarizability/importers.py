"""Import reference polarizability labels computed elsewhere (VASP, Quantum ESPRESSO, extxyz).

Every importer returns frames in the dataset convention (:mod:`.dataset`):
``info["polarizability"]`` = the cell's 3×3 electronic polarizability in Å³, plus
``info["polarizability_source"]`` naming the code and ``info["epsilon_inf"]`` (the
3×3 electronic dielectric tensor, flattened) when the source gave one.

Conversion for a periodic cell of volume V (Å³):  α = V (ε∞ − 1) / 4π.

The dielectric tensor must be the *electronic* (clamped-ion, high-frequency) ε∞:

- VASP (LEPSILON or LCALCEPS): the OUTCAR block "MACROSCOPIC STATIC DIELECTRIC TENSOR
  (including local field effects in DFT)" — NOT "... IONIC CONTRIBUTION" and not the
  independent-particle "HEAD OF MICROSCOPIC ..." block; in vasprun.xml the
  ``<varray name="epsilon">`` (pymatgen ``Vasprun.epsilon_static``), not ``epsilon_ion``.
- Quantum ESPRESSO ph.x (``epsil=.true.``): "Dielectric constant in cartesian axis".
"""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import InputError
from ..units import BOHR_A
from .dataset import KEY, alpha_from_epsilon, bohr3_to_A3, read_extxyz_frames

__all__ = [
    "read_vasp_dielectric",
    "read_qe_dielectric",
    "read_extxyz_labels",
    "import_labels",
    "tensor_from_components",
    "FORMATS",
]

FORMATS = ("vasp", "qe", "extxyz")

_FLOAT = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[EeDd][-+]?\d+)?"


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", errors="replace") as fh:
            return fh.read()
    return path.read_text(errors="replace")


def _label(atoms: Atoms, epsilon: np.ndarray, source: str, path: Path) -> Atoms:
    eps = np.asarray(epsilon, dtype=float).reshape(3, 3)
    if not np.isfinite(eps).all():
        raise InputError(f"{path}: the dielectric tensor contains NaN/overflow; rerun or drop this calculation.")
    if np.any(np.diag(eps) < 1.0 - 1e-6):
        raise InputError(f"{path}: dielectric tensor diagonal {np.diag(eps)} < 1 — this is not an electronic ε∞ (check the block).")
    out = atoms.copy()
    out.calc = None
    out.pbc = True
    out.info[KEY] = alpha_from_epsilon(eps, out.get_volume())
    out.info["epsilon_inf"] = eps.reshape(9)
    out.info["polarizability_source"] = source
    out.info["polarizability_file"] = str(path)
    return out


# --------------------------------------------------------------------------- VASP

_VASP_BLOCKS = (
    "MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)",
    "MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in RPA (Hartree))",
)


def _outcar_epsilon(text: str) -> tuple[np.ndarray, str] | None:
    """The last electronic ε∞ block of an OUTCAR (DFT local fields preferred over RPA)."""
    for header in _VASP_BLOCKS:
        i = text.rfind(header)
        if i < 0:
            continue
        rows = []
        for line in text[i + len(header) :].splitlines()[1:8]:
            if line.strip().startswith("---") or not line.strip():
                if rows:
                    break
                continue
            nums = re.findall(_FLOAT, line)
            if len(nums) == 3:
                rows.append([float(x) for x in nums])
            if len(rows) == 3:
                break
        if len(rows) == 3:
            return np.array(rows), header
    return None


def _structure_near(outcar: Path, structure: str | os.PathLike | None) -> Atoms:
    import ase.io

    cands = [Path(structure)] if structure is not None else [outcar.with_name(n) for n in ("POSCAR", "CONTCAR", "POSCAR.gz", "CONTCAR.gz")]
    for c in cands:
        if c.exists():
            try:
                if c.suffix == ".gz":
                    return ase.io.read(io.StringIO(_read_text(c)), format="vasp")
                return ase.io.read(c, format="vasp")
            except Exception as exc:
                raise InputError(f"{c}: could not be read as a VASP POSCAR ({exc}); give the structure of the dielectric run.") from None
    raise InputError(
        f"{outcar}: no POSCAR/CONTCAR next to it; pass structure=<POSCAR of this run> (the OUTCAR alone does not hold a usable structure)."
    )


def read_vasp_dielectric(path: str | os.PathLike, structure: str | os.PathLike | None = None) -> Atoms:
    """One labelled frame from a VASP LEPSILON/LCALCEPS run (OUTCAR or vasprun.xml, or their directory).

    OUTCAR: ε∞ from the last "MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field
    effects in DFT)" block (pymatgen ``Outcar.read_lepsilon`` is used as a cross-check and as
    a fallback); the structure from ``structure`` or the POSCAR/CONTCAR beside it.
    vasprun.xml: ``Vasprun.epsilon_static`` (electronic, with local fields) and the run's structure.
    """
    p = Path(path)
    if p.is_dir():
        for n in ("vasprun.xml", "vasprun.xml.gz", "OUTCAR", "OUTCAR.gz"):
            if (p / n).exists():
                p = p / n
                break
        else:
            raise InputError(f"{path}: directory has no vasprun.xml or OUTCAR; give the output of a LEPSILON/LCALCEPS run.")
    if not p.exists():
        raise InputError(f"{p}: no such file; give a VASP OUTCAR or vasprun.xml from a LEPSILON/LCALCEPS run.")
    if "vasprun" in p.name or p.suffix == ".xml":
        return _read_vasprun(p)
    text = _read_text(p)
    found = _outcar_epsilon(text)
    eps_pmg = None
    try:
        from pymatgen.io.vasp.outputs import Outcar

        out = Outcar(str(p))
        if not getattr(out, "lepsilon", False):
            out.read_lepsilon()  # LCALCEPS runs are not auto-detected
        t = np.asarray(getattr(out, "dielectric_tensor", np.zeros((3, 3))), dtype=float)
        eps_pmg = t if np.abs(t).sum() > 0 else None
    except Exception:
        eps_pmg = None
    if found is None and eps_pmg is None:
        raise InputError(
            f"{p}: no 'MACROSCOPIC STATIC DIELECTRIC TENSOR (including local field effects in DFT)' block; "
            "run VASP with LEPSILON = .TRUE. (or LCALCEPS = .TRUE.) to get the electronic dielectric tensor."
        )
    if found is not None:
        eps, header = found
        if eps_pmg is not None and "in DFT" in header and not np.allclose(eps, eps_pmg, atol=1e-5):
            raise InputError(f"{p}: the dielectric tensor read here {eps.tolist()} disagrees with pymatgen's {eps_pmg.tolist()}; check the OUTCAR.")
    else:
        eps = eps_pmg
    atoms = _structure_near(p, structure)
    return _label(atoms, eps, "vasp", p)


def _read_vasprun(p: Path) -> Atoms:
    from pymatgen.io.vasp.outputs import Vasprun

    try:
        vr = Vasprun(str(p), parse_dos=False, parse_eigen=False, parse_projected_eigen=False, parse_potcar_file=False)
    except Exception as exc:
        raise InputError(f"{p}: could not be read as vasprun.xml ({str(exc).strip() or type(exc).__name__}).") from None
    eps = np.asarray(vr.epsilon_static, dtype=float)
    if eps.size != 9:
        raise InputError(
            f"{p}: vasprun.xml has no <varray name=\"epsilon\"> (electronic dielectric tensor); "
            "run VASP with LEPSILON = .TRUE. (or LCALCEPS = .TRUE.)."
        )
    ibrion = int(vr.parameters.get("IBRION", -1) or -1)
    struct = vr.initial_structure if ibrion in (5, 6, 7, 8) else vr.ionic_steps[-1]["structure"]
    atoms = Atoms(
        numbers=[site.specie.Z for site in struct],
        positions=struct.cart_coords,
        cell=struct.lattice.matrix,
        pbc=True,
    )
    return _label(atoms, eps, "vasp", p)


# --------------------------------------------------------------------------- Quantum ESPRESSO

_QE_ROW = re.compile(r"^\s*\(\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s*\)")


def _qe_epsilon(text: str) -> np.ndarray | None:
    i = text.rfind("Dielectric constant in cartesian axis")
    if i < 0:
        return None
    rows = []
    for line in text[i:].splitlines()[1:8]:
        m = _QE_ROW.match(line)
        if m:
            rows.append([float(x.replace("D", "E").replace("d", "e")) for x in m.groups()])
        elif rows:
            break
        if len(rows) == 3:
            return np.array(rows)
    return None


def _ph_structure(text: str, path: Path) -> Atoms:
    """Structure from the header ph.x prints (alat, crystal axes, positions in alat units)."""
    m = re.search(r"lattice parameter \(alat\)\s*=\s*(" + _FLOAT + r")\s*a\.u\.", text)
    if m is None:
        m = re.search(r"celldm\(1\)=\s*(" + _FLOAT + r")", text)
    if m is None:
        raise InputError(f"{path}: no 'lattice parameter (alat)' or celldm(1) in the ph.x output; pass the pw.x input/output as pw_in_or_out.")
    alat = float(m.group(1)) * BOHR_A
    axes = re.findall(r"a\(([123])\)\s*=\s*\(\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")\s*\)", text)
    cell = {}
    for k, *v in axes:
        cell.setdefault(int(k), [float(x) for x in v])
    if set(cell) != {1, 2, 3}:
        raise InputError(f"{path}: no 'crystal axes' block in the ph.x output; pass the pw.x input/output as pw_in_or_out.")
    i = text.find("positions (alat units)")
    symbols, pos = [], []
    if i >= 0:
        for line in text[i:].splitlines()[1:]:
            mm = re.match(r"\s*\d+\s+([A-Z][a-z]?)\S*\s+" + _FLOAT + r"\s+tau\(\s*\d+\)\s*=\s*\(\s*(" + _FLOAT + r")\s+(" + _FLOAT + r")\s+(" + _FLOAT + r")", line)
            if not mm:
                break
            symbols.append(mm.group(1))
            pos.append([float(x) for x in mm.groups()[1:]])
    if not symbols:
        raise InputError(f"{path}: no atomic positions ('positions (alat units)') in the ph.x output; pass the pw.x input/output as pw_in_or_out.")
    return Atoms(symbols, positions=np.array(pos) * alat, cell=np.array([cell[1], cell[2], cell[3]]) * alat, pbc=True)


def read_qe_dielectric(ph_out: str | os.PathLike, pw_in_or_out: str | os.PathLike | None = None) -> Atoms:
    """One labelled frame from a Quantum ESPRESSO ph.x run with ``epsil=.true.``.

    ε∞ from the last "Dielectric constant in cartesian axis" block; the structure from
    ``pw_in_or_out`` (pw.x input or output, read with ASE's espresso-in/-out readers) or,
    without it, from the header ph.x prints (alat, crystal axes, positions).
    """
    import ase.io

    p = Path(ph_out)
    if not p.exists():
        raise InputError(f"{p}: no such file; give the output of ph.x run with epsil=.true.")
    text = _read_text(p)
    eps = _qe_epsilon(text)
    if eps is None:
        raise InputError(f"{p}: no 'Dielectric constant in cartesian axis' block; run ph.x with epsil = .true. at q = Γ.")
    if pw_in_or_out is not None:
        q = Path(pw_in_or_out)
        if not q.exists():
            raise InputError(f"{q}: no such file; give the pw.x input or output of the ground-state run.")
        qt = _read_text(q)
        fmt = "espresso-in" if re.search(r"&system", qt, re.IGNORECASE) and "Program PWSCF" not in qt else "espresso-out"
        try:
            atoms = ase.io.read(io.StringIO(qt), format=fmt, index=-1) if fmt == "espresso-out" else ase.io.read(io.StringIO(qt), format=fmt)
        except Exception as exc:
            raise InputError(
                f"{q}: could not be read as a pw.x {fmt.split('-')[1]}put ({str(exc).strip() or type(exc).__name__}); "
                "leave pw_in_or_out out to use the structure ph.x prints."
            ) from None
    else:
        atoms = _ph_structure(text, p)
    return _label(atoms, eps, "qe", p)


# --------------------------------------------------------------------------- extxyz

_POL_KEYS = ("polarizability", "alpha", "polarisability", "polarizability_tensor")
_EPS_KEYS = ("dielectric", "epsilon", "epsilon_inf", "dielectric_tensor", "eps_inf")


def tensor_from_components(values: np.ndarray | list | float, label: str = "tensor") -> np.ndarray:
    """3×3 symmetric-or-general tensor from 9 values (row-major), 6 Voigt values
    (xx, yy, zz, yz, xz, xy) or 1 value (isotropic)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    if v.size == 9:
        return v.reshape(3, 3)
    if v.size == 6:
        xx, yy, zz, yz, xz, xy = v
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if v.size == 1:
        return float(v[0]) * np.eye(3)
    raise InputError(f"{label}: {v.size} values; give 9 (3×3 row-major), 6 (Voigt xx yy zz yz xz xy) or 1 (isotropic).")


def read_extxyz_labels(
    path: str | os.PathLike,
    key: str | None = None,
    units: str = "A3",
    kind: str = "auto",
) -> list[Atoms]:
    """Frames of an extxyz file with their tensor converted to ``info["polarizability"]`` (Å³).

    key: the ``info`` key holding the tensor (default: the first of polarizability/alpha/…
        or dielectric/epsilon/epsilon_inf/… present).
    kind: ``"polarizability"``, ``"dielectric"`` (ε∞, converted with α = V(ε − 1)/4π) or
        ``"auto"`` (from the key's name).
    units: of a polarizability: ``"A3"`` (Å³) or ``"bohr3"`` (atomic units).
    Values may be 9 (3×3), 6 (Voigt) or 1 (isotropic) numbers.
    """
    p = Path(path)
    u = units.lower().replace("³", "3").replace("^", "").replace("**", "")
    if u in ("a3", "ang3", "angstrom3"):
        scale = 1.0
    elif u in ("bohr3", "au", "a.u.", "a0"):
        scale = float(bohr3_to_A3(1.0))
    else:
        raise InputError(f"units={units!r}: give 'A3' (Å³) or 'bohr3' (atomic units) for the polarizability.")
    if kind not in ("auto", "polarizability", "dielectric"):
        raise InputError(f"kind={kind!r}: give 'polarizability', 'dielectric' or 'auto'.")
    frames = read_extxyz_frames(p, "a polarizability or dielectric tensor")
    out = []
    for n, a in enumerate(frames):
        label = f"{p} frame {n}"
        k = key
        if k is None:
            k = next((c for c in _POL_KEYS + _EPS_KEYS if c in a.info), None)
            if k is None:
                raise InputError(
                    f"{label}: no polarizability ({'/'.join(_POL_KEYS)}) or dielectric ({'/'.join(_EPS_KEYS)}) key in the comment line; "
                    "name it with key=…"
                )
        if k not in a.info:
            raise InputError(f"{label}: no info['{k}']; available keys: {sorted(a.info)}.")
        kd = kind
        if kd == "auto":
            kd = "dielectric" if k.lower() in _EPS_KEYS or k.lower().startswith(("eps", "diel")) else "polarizability"
        t = tensor_from_components(a.info[k], f"{label} info['{k}']")
        if not np.isfinite(t).all():
            raise InputError(f"{label}: info['{k}'] contains NaN or infinite values; drop or relabel this frame.")
        b = a.copy()
        b.calc = a.calc
        if kd == "dielectric":
            if abs(b.get_volume()) < 1e-9 or not np.all(b.pbc):
                raise InputError(f"{label}: a dielectric tensor needs a periodic cell (Lattice=…) to convert to a polarizability.")
            b.info[KEY] = alpha_from_epsilon(t, b.get_volume())
            b.info["epsilon_inf"] = t.reshape(9)
        else:
            b.info[KEY] = t * scale
        if k != KEY and kd != "dielectric":
            b.info.pop(k, None)
        b.info.setdefault("polarizability_source", "extxyz")
        out.append(b)
    return out


# --------------------------------------------------------------------------- dispatch


def _sniff(p: Path) -> str:
    name = p.name.lower()
    if p.is_dir():
        if any((p / n).exists() for n in ("vasprun.xml", "vasprun.xml.gz", "OUTCAR", "OUTCAR.gz")):
            return "vasp"
        raise InputError(f"{p}: directory without vasprun.xml/OUTCAR; give a file (VASP OUTCAR/vasprun.xml, ph.x output, extxyz).")
    if name.endswith((".xyz", ".extxyz", ".xyz.gz")):
        return "extxyz"
    if "outcar" in name or "vasprun" in name:
        return "vasp"
    head = _read_text(p)[:200_000] if p.stat().st_size < 50_000_000 else ""
    if "vasp" in head[:2000].lower() and ("MACROSCOPIC STATIC DIELECTRIC" in head or "<modeling>" in head):
        return "vasp"
    if "MACROSCOPIC STATIC DIELECTRIC TENSOR" in head:
        return "vasp"
    if "Program PHONON" in head or "Dielectric constant in cartesian axis" in head:
        return "qe"
    if head.lstrip().split("\n", 1)[0].strip().isdigit() and "Lattice=" in head:
        return "extxyz"
    raise InputError(f"{p}: unknown format; pass fmt='vasp' (OUTCAR/vasprun.xml), 'qe' (ph.x output) or 'extxyz'.")


def import_labels(path: str | os.PathLike, fmt: str = "auto", **kwargs) -> list[Atoms]:
    """Labelled frames from ``path``: ``fmt`` is ``"auto"``, ``"vasp"``, ``"qe"`` or ``"extxyz"``.

    Extra keyword arguments go to the reader (``structure=`` for VASP, ``pw_in_or_out=``
    for QE, ``key=/units=/kind=`` for extxyz).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; give a VASP OUTCAR/vasprun.xml, a ph.x output or an extxyz file.")
    f = fmt.lower()
    if f == "auto":
        f = _sniff(p)
    if f == "vasp":
        return [read_vasp_dielectric(p, **kwargs)]
    if f in ("qe", "espresso", "ph", "phx"):
        return [read_qe_dielectric(p, **kwargs)]
    if f in ("extxyz", "xyz"):
        return read_extxyz_labels(p, **kwargs)
    raise InputError(f"fmt={fmt!r}: unknown format; give one of auto, {', '.join(FORMATS)}.")


