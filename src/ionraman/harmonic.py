"""Harmonic (phonon) Raman spectrum from the same force field and polarizability model.

Γ-point phonons come from phonopy with forces from the force field; Raman
tensors ∂α/∂Q_ν are central finite differences of the polarizability model
along each mode; the lines are broadened and put on the same scale, in the same
channels and representations as the MD spectra of :mod:`ionraman.raman`, so the
two can be compared directly (docs/physics/harmonic.md).

Line intensities are those of a *classical* harmonic crystal, the counterpart of
the classical MD correlation function: for mode ν with Raman tensor A_ν and
classical mean-square normal coordinate ⟨Q_ν²⟩ = k_B T/ω_ν², a channel with
quadratic form c(A) has a line of area c(A_ν)·k_B T/ω_ν² in the one-sided
classical PSD (Å⁶·cm per cm⁻¹). Multiplying by the harmonic quantum-correction
factor Q(ω) = βħω(n+1) turns k_B T/ω² into ħ(n+1)/ω, Placzek's Stokes intensity
∝ (n+1)/ω·|A|², so the same factor chain as for MD applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from .errors import InputError
from .raman import POWDER_CHANNELS, RamanSpectrum, lorentzian_broadened_lines, parse_geometry, representation_factor
from .units import KB_EV_PER_K, THZ_TO_CM1

__all__ = ["PhononModes", "HarmonicRaman", "gamma_phonons", "raman_tensors", "harmonic_spectrum", "channel_intensities"]

# ASE's time unit in s: Å·sqrt(amu/eV)
_ASE_TIME_S = 1e-10 * math.sqrt(1.66053906660e-27 / 1.602176634e-19)


@dataclass(frozen=True)
class PhononModes:
    """Γ-point normal modes of a structure.

    frequencies_cm1 : (3N,) wavenumbers (negative = imaginary).
    eigenvectors : (3N, N, 3) mass-weighted, orthonormal eigenvectors e_ν.
    masses_amu : (N,) atomic masses.
    labels : irreducible-representation label per mode ("" when phonopy gives none).
    """

    atoms: Atoms
    frequencies_cm1: np.ndarray
    eigenvectors: np.ndarray
    masses_amu: np.ndarray
    labels: list[str]
    spacegroup: str = ""


@dataclass(frozen=True)
class HarmonicRaman:
    """Modes, Raman tensors (Å³ per amu^½·Å) and the broadened spectrum."""

    modes: PhononModes
    raman_tensors: np.ndarray  # (3N, 3, 3)
    spectrum: RamanSpectrum
    line_table: list[dict[str, Any]] = field(default_factory=list)


def gamma_phonons(
    atoms: Atoms, calculator: Any, displacement_A: float = 0.01, symprec: float = 1e-3, labels: bool = True
) -> PhononModes:
    """Γ-point phonons of ``atoms`` (taken as its own supercell) with forces from ``calculator``.

    The dynamical matrix at q = 0 of a periodic cell sums the force constants over
    all periodic images, so the Γ frequencies of the cell are exact whatever the
    range of the interactions. Relax the structure first (:func:`relax_for_phonons`).
    """
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell.array, scaled_positions=atoms.get_scaled_positions())
    ph = Phonopy(unit, supercell_matrix=np.eye(3, dtype=int), primitive_matrix="P", symprec=symprec)
    ph.generate_displacements(distance=displacement_A)
    forces = []
    for sc in ph.supercells_with_displacements:
        a = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        a.calc = calculator
        forces.append(a.get_forces().copy())
    ph.forces = np.array(forces)
    ph.produce_force_constants()
    ph.symmetrize_force_constants()
    freqs_thz, eigv = ph.get_frequencies_with_eigenvectors([0, 0, 0])
    n = len(atoms)
    # phonopy: eigv[:, k] is mode k, components ordered (atom, xyz)
    vecs = eigv.T.reshape(3 * n, n, 3).real
    mode_labels = [""] * (3 * n)
    if labels:
        try:
            ph.set_irreps([0, 0, 0], degeneracy_tolerance=1e-3)
            ir = ph.irreps
            # phonopy keeps the Mulliken labels in a private attribute (no public getter in 4.x)
            ir_labels = getattr(ir, "ir_labels", None) or getattr(ir, "_ir_labels", None) or []
            for band_indices, lab in zip(ir.band_indices, ir_labels):
                for b in band_indices:
                    mode_labels[b] = str(lab) if lab is not None else ""
        except Exception:  # labels are a convenience; phonopy cannot label every cell
            pass
    return PhononModes(
        atoms=atoms.copy(),
        frequencies_cm1=np.asarray(freqs_thz) * THZ_TO_CM1,
        eigenvectors=vecs,
        masses_amu=atoms.get_masses(),
        labels=mode_labels,
        spacegroup=str(ph.symmetry.get_international_table()),
    )


def relax_for_phonons(atoms: Atoms, calculator: Any, fmax_eV_A: float = 1e-3, steps: int = 2000) -> Atoms:
    """Relax positions at fixed cell (phonons need zero forces; the cell stays the experimental one)."""
    from ase.optimize import BFGS

    a = atoms.copy()
    a.calc = calculator
    BFGS(a, logfile=None).run(fmax=fmax_eV_A, steps=steps)
    return a


def raman_tensors(modes: PhononModes, model: Any, step_A: float = 0.01) -> np.ndarray:
    """∂α/∂Q_ν (Å³ per amu^½·Å) by central differences along each mode.

    The displacement along mode ν is u = Q e_ν/√m; Q is chosen so the largest
    atomic displacement is ``step_A``.
    """
    a0 = modes.atoms
    sq = np.sqrt(modes.masses_amu)[:, None]
    frames: list[Atoms] = []
    qs = []
    for e in modes.eigenvectors:
        u = e / sq
        q = step_A / np.abs(u).max()
        qs.append(q)
        for sign in (1.0, -1.0):
            a = a0.copy()
            a.calc = None
            a.positions = a0.positions + sign * q * u
            frames.append(a)
    alpha = np.asarray(model.predict(frames), dtype=float).reshape(len(modes.eigenvectors), 2, 3, 3)
    return (alpha[:, 0] - alpha[:, 1]) / (2.0 * np.array(qs)[:, None, None])


def channel_intensities(tensor: np.ndarray, geometry: Any = "powder") -> dict[str, float]:
    """The channels' quadratic forms of a Raman tensor, as :func:`ionraman.raman.compute_spectrum` defines them.

    isotropic ā², anisotropic γ² = (3/2) β:β, VV = ā² + 4γ²/45, VH = γ²/15,
    unpolarized = VV + VH, and (e_in·A·e_out)² for polarisation vectors.
    """
    A = 0.5 * (tensor + tensor.T)
    abar = np.trace(A) / 3.0
    beta = A - abar * np.eye(3)
    g2 = 1.5 * float((beta * beta).sum())
    table = {
        "isotropic": abar**2,
        "anisotropic": g2,
        "VV": abar**2 + 4.0 * g2 / 45.0,
        "VH": g2 / 15.0,
        "unpolarized": abar**2 + 7.0 * g2 / 45.0,
    }
    out: dict[str, float] = {}
    for name, e_in, e_out in parse_geometry(geometry):
        if e_in is None:
            key = name if name in POWDER_CHANNELS else name.split(":")[-1]
            out[name] = float(table[key])
        else:
            out[name] = float(e_in @ A @ e_out) ** 2
    return out


def harmonic_spectrum(
    atoms: Atoms,
    calculator: Any,
    model: Any,
    temperature_K: float,
    geometry: Any = "powder",
    fwhm_cm1: float = 5.0,
    max_frequency_cm1: float = 1000.0,
    resolution_cm1: float = 0.5,
    representation: str = "stokes",
    quantum_correction: str = "harmonic",
    relax: bool = True,
    min_frequency_cm1: float = 5.0,
) -> HarmonicRaman:
    """Harmonic Raman spectrum of a crystal in the units and channels of the MD spectra.

    Parameters
    ----------
    atoms : the structure (the cell is kept; positions are relaxed with ``relax``).
    calculator : ASE calculator of the force field.
    model : polarizability model with ``predict(list[Atoms]) -> (n,3,3)`` Å³.
    temperature_K : temperature of the classical amplitudes and factors, K.
    fwhm_cm1 : Lorentzian FWHM of each line, cm⁻¹ (the harmonic picture has no
        intrinsic width; this is a display/instrument width).
    min_frequency_cm1 : modes below this (the three acoustic modes at Γ,
        imaginary modes) are left out, with a note in the line table.
    """
    if not temperature_K > 0:
        raise InputError(f"--temperature {temperature_K} K: the harmonic spectrum needs a positive temperature.")
    a = relax_for_phonons(atoms, calculator) if relax else atoms.copy()
    modes = gamma_phonons(a, calculator)
    tensors = raman_tensors(modes, model)
    kT = KB_EV_PER_K * temperature_K
    grid = np.arange(0.0, max_frequency_cm1 + resolution_cm1 / 2, resolution_cm1)
    names = [n for n, _, _ in parse_geometry(geometry)]
    lines: dict[str, list[float]] = {n: [] for n in names}
    freqs: list[float] = []
    table = []
    for k, (f, A) in enumerate(zip(modes.frequencies_cm1, tensors)):
        row = {"mode": k, "frequency_cm1": float(f), "label": modes.labels[k]}
        if f < min_frequency_cm1:
            row["note"] = "imaginary" if f < -min_frequency_cm1 else "acoustic/zero"
            table.append(row)
            continue
        omega = 2 * math.pi * f / THZ_TO_CM1 * 1e12 * _ASE_TIME_S  # rad per ASE time unit
        q2 = kT / omega**2  # classical ⟨Q²⟩ in amu·Å²
        ci = channel_intensities(A, geometry)
        for n in names:
            lines[n].append(ci[n] * q2)
        freqs.append(float(f))
        row.update({f"{n}_A6": ci[n] * q2 for n in names})
        table.append(row)
    factor = representation_factor(grid, representation, temperature_K, quantum_correction, None)
    channels = {
        n: lorentzian_broadened_lines(np.array(freqs), np.array(lines[n]), grid, fwhm_cm1) * factor for n in names
    } if freqs else {n: np.zeros_like(grid) for n in names}
    n_imag = sum(1 for r in table if r.get("note") == "imaginary")
    spec = RamanSpectrum(
        frequency_cm1=grid,
        channels=channels,
        errors={n: np.zeros_like(grid) for n in names},
        temperature_K=float(temperature_K),
        representation=representation,
        metadata={
            "method": "harmonic",
            "quantum_correction": quantum_correction,
            "fwhm_cm1": fwhm_cm1,
            "n_modes": len(modes.frequencies_cm1),
            "n_imaginary": n_imag,
            "spacegroup": modes.spacegroup,
            "units": "classical harmonic lines (A^6 per line, one-sided) broadened per cm^-1 times the representation factor",
        },
    )
    return HarmonicRaman(modes=modes, raman_tensors=tensors, spectrum=spec, line_table=table)
