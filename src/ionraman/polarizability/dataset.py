"""Labelled polarizability data: extended XYZ with the cell's tensor in ``info["polarizability"]``.

Convention (shared with MACE, NEP and metatrain): each frame carries the whole
cell's electronic polarizability α as a 3×3 tensor in Å³ (Gaussian/CGS volume
units, α/(4πε₀)), stored row-major under ``atoms.info["polarizability"]``.
Frames may also carry ``info["polarizability_source"]`` (e.g. ``"cp2k"``,
``"bond-model"``) and ``info["polarizability_settings"]`` (JSON).

Conversions (docs/physics/polarizability.md):

- dielectric tensor ↔ polarizability of a cell of volume V (Clausius–Mossotti is
  *not* used; this is the macroscopic relation for a periodic solid):
  α = V (ε∞ − 1) / 4π,  ε∞ = 1 + 4π α / V;
- atomic units: α[Å³] = α[bohr³] × a₀³ with a₀ = 0.529177210903 Å.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

from ..errors import InputError
from ..units import BOHR3_TO_A3

__all__ = [
    "KEY",
    "alpha_from_epsilon",
    "epsilon_from_alpha",
    "bohr3_to_A3",
    "A3_to_bohr3",
    "get_alpha",
    "set_alpha",
    "read_labelled",
    "write_labelled",
]

#: the ``atoms.info`` key of the cell's polarizability tensor (Å³)
KEY = "polarizability"


def alpha_from_epsilon(epsilon: np.ndarray, volume_A3: float) -> np.ndarray:
    """Cell polarizability (Å³) from the high-frequency dielectric tensor: α = V(ε∞ − 1)/4π."""
    return volume_A3 * (np.asarray(epsilon, dtype=float) - np.eye(3)) / (4.0 * math.pi)


def epsilon_from_alpha(alpha_A3: np.ndarray, volume_A3: float) -> np.ndarray:
    """High-frequency dielectric tensor from the cell polarizability (Å³): ε∞ = 1 + 4πα/V."""
    return np.eye(3) + 4.0 * math.pi * np.asarray(alpha_A3, dtype=float) / volume_A3


def bohr3_to_A3(alpha_bohr3: np.ndarray | float) -> np.ndarray | float:
    """Atomic units of polarizability (bohr³) → Å³."""
    return np.asarray(alpha_bohr3, dtype=float) * BOHR3_TO_A3


def A3_to_bohr3(alpha_A3: np.ndarray | float) -> np.ndarray | float:
    """Å³ → atomic units (bohr³)."""
    return np.asarray(alpha_A3, dtype=float) / BOHR3_TO_A3


def get_alpha(atoms: Atoms, label: str = "frame") -> np.ndarray:
    """The 3×3 polarizability (Å³) of a frame; accepts 9 values or a 3×3 array in ``info``."""
    if KEY not in atoms.info:
        raise InputError(
            f"{label}: no info['{KEY}'] (3×3 tensor in Å³); label the frames first (`ionraman label`) "
            "or convert a dielectric tensor with alpha = V(eps - 1)/4pi."
        )
    a = np.asarray(atoms.info[KEY], dtype=float)
    if a.size != 9:
        raise InputError(f"{label}: info['{KEY}'] has {a.size} values; it must hold the 9 components of a 3×3 tensor (Å³).")
    a = a.reshape(3, 3)
    if not np.isfinite(a).all():
        raise InputError(f"{label}: info['{KEY}'] contains NaN or infinite values; relabel this frame or drop it.")
    return a


def set_alpha(atoms: Atoms, alpha_A3: np.ndarray, source: str | None = None) -> None:
    """Store a 3×3 polarizability (Å³) on a frame."""
    atoms.info[KEY] = np.asarray(alpha_A3, dtype=float).reshape(3, 3)
    if source is not None:
        atoms.info["polarizability_source"] = source


def read_extxyz_frames(path: str | os.PathLike, carrying: str) -> list[Atoms]:
    """All frames of an extxyz file, with one-sentence errors; ``carrying`` names what each frame should hold."""
    import ase.io

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; give an extended-XYZ file with {carrying} per frame.")
    try:
        frames = ase.io.read(p, index=":", format="extxyz")
    except Exception as exc:
        raise InputError(f"{p}: could not be read as extended XYZ ({str(exc).strip() or type(exc).__name__}).") from None
    if not frames:
        raise InputError(f"{p}: holds no frames.")
    return frames


def read_labelled(path: str | os.PathLike, require: bool = True) -> list[Atoms]:
    """Read all frames of an extxyz file; with ``require`` every frame must carry a valid tensor."""
    p = Path(path)
    frames = read_extxyz_frames(p, f"info['{KEY}']")
    if require:
        for k, a in enumerate(frames):
            get_alpha(a, f"{p} frame {k}")
    return frames


def write_labelled(path: str | os.PathLike, frames: Sequence[Atoms], append: bool = False) -> None:
    """Write frames as extxyz, atomically (temporary file + rename); ``append`` rewrites old + new."""
    import ase.io

    p = Path(path)
    frames = list(frames)
    if append and p.exists():
        frames = read_labelled(p, require=False) + frames
    out = []
    for a in frames:
        b = a.copy()
        b.calc = None
        if KEY in b.info:
            b.info[KEY] = np.asarray(b.info[KEY], dtype=float).reshape(9)  # extxyz stores a flat list
        out.append(b)
    tmp = p.with_name(p.name + ".tmp")
    ase.io.write(tmp, out, format="extxyz")
    os.replace(tmp, p)
