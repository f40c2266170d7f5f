"""Physical constants and unit conversions used at ionraman's boundaries.

Inside the package we use ASE's units (Å, eV, amu, ASE time unit). Every public
function names its units; the conversions live here so that no module invents
its own constant.
"""

from __future__ import annotations

from ase import units as _ase

#: femtosecond in ASE time units
FS: float = _ase.fs
#: picosecond in ASE time units
PS: float = 1000.0 * _ase.fs
#: Boltzmann constant in eV/K
KB_EV_PER_K: float = _ase.kB
#: Speed of light in cm/s (exact, CODATA)
C_CM_PER_S: float = 2.99792458e10
#: Planck constant over 2π in eV·s (CODATA 2018)
HBAR_EV_S: float = 6.582119569e-16
#: Planck constant times speed of light in eV·cm (h c), to convert cm⁻¹ → eV
HC_EV_CM: float = 2.0 * 3.141592653589793 * HBAR_EV_S * C_CM_PER_S
#: elementary charge in C
E_CHARGE_C: float = 1.602176634e-19
#: Boltzmann constant in J/K
KB_J_PER_K: float = 1.380649e-23
#: Bohr radius in Å (CODATA 2018)
BOHR_A: float = 0.529177210903
#: bohr³ → Å³
BOHR3_TO_A3: float = BOHR_A**3
#: Å²/fs → cm²/s  (1 Å² = 1e-16 cm², 1 fs = 1e-15 s)
A2_PER_FS_TO_CM2_PER_S: float = 1e-16 / 1e-15
#: Å²/ps → cm²/s
A2_PER_PS_TO_CM2_PER_S: float = 1e-16 / 1e-12
#: THz → cm⁻¹
THZ_TO_CM1: float = 1e12 / C_CM_PER_S


def fs_to_ase(t_fs: float) -> float:
    """Convert a time in fs to ASE time units."""
    return t_fs * FS


def ps_to_fs(t_ps: float) -> float:
    """Convert a time in ps to fs."""
    return t_ps * 1000.0


def cm1_to_thz(w_cm1: float) -> float:
    """Convert a wavenumber in cm⁻¹ to an ordinary frequency in THz."""
    return w_cm1 / THZ_TO_CM1


def cm1_to_ev(w_cm1: float) -> float:
    """Convert a wavenumber in cm⁻¹ to a photon/phonon energy in eV (E = h c ν̃)."""
    return w_cm1 * HC_EV_CM
