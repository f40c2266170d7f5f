"""Point defects: vacancies and aliovalent substitutions with charge compensation.

Fast Na⁺ conduction in Na₃SbS₄ and its relatives relies on Na vacancies, which
W⁶⁺ on Sb⁵⁺ creates (Hayashi et al., Nat. Commun. 10, 5266 (2019)); a perfect
stoichiometric cell may show no diffusion on MD time scales. This module builds
such cells explicitly:

- ``vacancies={"Na": 2}`` (a count) or ``{"Na": 0.04}`` (a fraction of the Na sites);
- ``substitutions=[Substitution("Sb", "W", 0.125)]`` (a fraction or a count of
  the host sites), with the formal-charge difference compensated by vacancies
  (or, for a lower-valent dopant, interstitials) of the mobile ion.

Formal oxidation states come from pymatgen (``Composition.oxi_state_guesses``
for the host, ``Element.common_oxidation_states`` for the dopant unless given as
``W6+``). Placement is random with a seed; optionally the lowest-energy of k
placements after a short relaxation with a force field.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from .errors import InputError

__all__ = ["Substitution", "DefectResult", "parse_vacancies", "parse_substitution", "apply_defects", "formal_charges"]


@dataclass(frozen=True)
class Substitution:
    """Replace ``amount`` of the ``host`` sites by ``dopant``.

    ``amount`` < 1 is a fraction of the host sites in the cell, ≥ 1 a count.
    ``dopant_oxidation`` overrides the dopant's formal charge.
    """

    host: str
    dopant: str
    amount: float
    dopant_oxidation: int | None = None

    @property
    def key(self) -> str:
        return f"{self.host}->{self.dopant}"


@dataclass(frozen=True)
class DefectResult:
    """The defective cell and what was done to build it."""

    atoms: Atoms
    vacancies: dict[str, int]
    interstitials: dict[str, int]
    substitutions: dict[str, int]
    oxidation_states: dict[str, int]
    seed: int
    net_charge: float
    trials: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        from .structures import formula

        return {
            "formula": formula(self.atoms),
            "n_atoms": len(self.atoms),
            "vacancies": self.vacancies,
            "interstitials": self.interstitials,
            "substitutions": self.substitutions,
            "oxidation_states": self.oxidation_states,
            "net_formal_charge": self.net_charge,
            "seed": self.seed,
            "placement_trials": self.trials,
        }


def _element(symbol: str, option: str) -> str:
    if symbol not in atomic_numbers or symbol == "X":
        raise InputError(f"{option}: '{symbol}' is not an element symbol; write e.g. Na or Sb (case matters).")
    return symbol


def parse_vacancies(text: str) -> dict[str, float]:
    """Parse ``'Na:2'`` or ``'Na:0.04,K:1'`` into {element: amount}."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        el, sep, amount = part.partition(":")
        if not sep:
            raise InputError(f"--vacancies '{text}' must be ELEMENT:AMOUNT, e.g. Na:2 (a count) or Na:0.04 (a fraction).")
        try:
            val = float(amount)
        except ValueError:
            raise InputError(f"--vacancies '{part}': '{amount}' is not a number; write e.g. Na:2 or Na:0.04.") from None
        out[_element(el.strip(), "--vacancies")] = val
    return out


_DOPANT = re.compile(r"^([A-Z][a-z]?)(?:([+-]?\d+)([+-])?)?$")


def parse_substitution(text: str) -> Substitution:
    """Parse ``'Sb:W:0.125'`` (or ``'Sb:W6+:2'`` with an explicit dopant charge)."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) != 3:
        raise InputError(f"--substitute '{text}' must be HOST:DOPANT:AMOUNT, e.g. Sb:W:0.125 (fraction) or Sb:W:2 (count).")
    host, dopant, amount = parts
    m = _DOPANT.match(dopant)
    if not m:
        raise InputError(f"--substitute '{text}': dopant '{dopant}' should look like W or W6+.")
    ox = None
    if m.group(2):
        ox = int(m.group(2)) * (-1 if m.group(3) == "-" else 1)
    try:
        val = float(amount)
    except ValueError:
        raise InputError(f"--substitute '{text}': '{amount}' is not a number.") from None
    return Substitution(_element(host, "--substitute"), _element(m.group(1), "--substitute"), val, ox)


def formal_charges(atoms: Atoms, label: str = "structure") -> dict[str, int]:
    """Formal oxidation states of the elements of a (neutral) structure, from pymatgen."""
    import warnings

    from pymatgen.core import Composition

    comp = Composition(atoms.get_chemical_formula())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guesses = comp.oxi_state_guesses(max_sites=-1)
    if not guesses:
        raise InputError(
            f"{label}: pymatgen finds no charge-balanced oxidation states for {comp.reduced_formula}; "
            "give explicit counts with --vacancies instead of charge-compensated substitution."
        )
    return {el: int(round(q)) for el, q in guesses[0].items()}


def _dopant_charge(sub: Substitution, host_q: int) -> int:
    if sub.dopant_oxidation is not None:
        return sub.dopant_oxidation
    from pymatgen.core import Element

    states = Element(sub.dopant).common_oxidation_states
    if not states:
        raise InputError(
            f"--substitute {sub.host}:{sub.dopant}: {sub.dopant} has no known common oxidation state; "
            f"give it explicitly, e.g. {sub.host}:{sub.dopant}3+:{sub.amount:g}."
        )
    # closest to the host's charge; ties go to the higher charge (aliovalent
    # dopants are normally chosen to create vacancies of the mobile cation)
    return int(min(states, key=lambda q: (abs(q - host_q), -q)))


def _count(amount: float, n_sites: int, what: str) -> int:
    if amount < 0:
        raise InputError(f"{what}: a negative amount ({amount:g}) makes no sense; give a count or a fraction ≥ 0.")
    if amount >= 1:
        if abs(amount - round(amount)) > 1e-9:
            raise InputError(f"{what}: {amount:g} is neither a fraction below 1 nor a whole count.")
        n = int(round(amount))
    else:
        x = amount * n_sites
        n = int(round(x))
        if abs(x - n) > 1e-6:
            raise InputError(
                f"{what}: a fraction {amount:g} of the {n_sites} sites in this cell is {x:.3g}, not a whole number; "
                "choose a fraction that gives an integer for this supercell, a count, or another --supercell."
            )
    if n > n_sites:
        raise InputError(f"{what}: {n} requested but the cell has only {n_sites} such sites; use a larger supercell or fewer.")
    return n


def _largest_void(atoms: Atoms, n_grid: int = 16) -> np.ndarray:
    """Cartesian position (Å) of the grid point farthest from every atom (for an interstitial)."""
    g = (np.stack(np.meshgrid(*[np.arange(n_grid) / n_grid] * 3, indexing="ij"), -1).reshape(-1, 3)) + 0.5 / n_grid
    frac_atoms = atoms.get_scaled_positions()
    best_d, best = -1.0, g[0]
    cell = atoms.cell.array
    for chunk in np.array_split(g, max(1, len(g) // 512)):
        d = chunk[:, None, :] - frac_atoms[None, :, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ cell, axis=2).min(axis=1)
        k = int(np.argmax(dist))
        if dist[k] > best_d:
            best_d, best = float(dist[k]), chunk[k]
    return best @ cell


def _place(
    atoms: Atoms,
    rng: np.random.Generator,
    subs: list[tuple[Substitution, int]],
    vac: dict[str, int],
    inter: dict[str, int],
) -> Atoms:
    a = atoms.copy()
    symbols = a.get_chemical_symbols()
    for sub, n in subs:
        hosts = [i for i, s in enumerate(symbols) if s == sub.host]
        for i in rng.choice(hosts, size=n, replace=False):
            symbols[i] = sub.dopant
    a.set_chemical_symbols(symbols)
    remove: list[int] = []
    for el, n in vac.items():
        sites = [i for i, s in enumerate(symbols) if s == el]
        remove += [int(i) for i in rng.choice(sites, size=n, replace=False)]
    del a[sorted(remove)]
    for el, n in inter.items():
        for _ in range(n):
            a.append(el)
            a.positions[-1] = _largest_void(a[:-1])
    return a


def apply_defects(
    atoms: Atoms,
    vacancies: dict[str, float] | None = None,
    substitutions: list[Substitution] | None = None,
    mobile_ion: str | None = None,
    seed: int = 0,
    compensate: bool = True,
    n_trials: int = 1,
    forcefield: Any = None,
    relax_steps: int = 50,
    label: str = "structure",
) -> DefectResult:
    """Build a defective cell from ``atoms`` (already the supercell).

    Parameters
    ----------
    vacancies : {element: count or fraction of that element's sites}.
    substitutions : host → dopant replacements (fraction or count of host sites).
    mobile_ion : the ion whose vacancies/interstitials compensate charge
        (required when ``compensate`` and a substitution changes the charge).
    seed : placement seed; the same seed gives the same cell.
    compensate : keep the cell neutral with formal charges.
    n_trials, forcefield, relax_steps : with a force field and ``n_trials`` > 1,
        try that many placements, relax each for ``relax_steps`` FIRE steps at
        fixed cell and keep the lowest energy (eV).
    """
    vacancies = dict(vacancies or {})
    substitutions = list(substitutions or [])
    symbols = atoms.get_chemical_symbols()
    present = set(symbols)
    oxi: dict[str, int] = {}
    if substitutions and compensate:
        oxi = formal_charges(atoms, label)
    sub_counts: list[tuple[Substitution, int]] = []
    delta_q = 0
    for sub in substitutions:
        what = f"--substitute {sub.host}:{sub.dopant}:{sub.amount:g}"
        if sub.host not in present:
            raise InputError(f"{what}: the cell has no {sub.host} to replace (it has {', '.join(sorted(present))}).")
        n = _count(sub.amount, symbols.count(sub.host), what)
        sub_counts.append((sub, n))
        if compensate:
            q_dop = _dopant_charge(sub, oxi[sub.host])
            oxi[sub.dopant] = q_dop
            delta_q += n * (q_dop - oxi[sub.host])
    vac_counts: dict[str, int] = {}
    for el, amount in vacancies.items():
        if el not in present:
            raise InputError(f"--vacancies {el}:{amount:g}: the cell has no {el} atoms (it has {', '.join(sorted(present))}).")
        vac_counts[el] = _count(amount, symbols.count(el), f"--vacancies {el}:{amount:g}")
    inter_counts: dict[str, int] = {}
    if delta_q and compensate:
        if mobile_ion is None:
            raise InputError(f"{label}: a charged substitution needs the mobile ion for compensation; pass --mobile-ion, e.g. Na.")
        if mobile_ion not in present:
            raise InputError(f"{label}: the mobile ion {mobile_ion} is not in the cell; pass the right --mobile-ion.")
        q_m = oxi.get(mobile_ion) or formal_charges(atoms, label)[mobile_ion]
        n_comp = delta_q / q_m
        if abs(n_comp - round(n_comp)) > 1e-9:
            raise InputError(
                f"{label}: a charge change of {delta_q:+d} e cannot be compensated by whole {mobile_ion}{q_m:+d} ions; "
                "change the number of dopants."
            )
        n_comp = int(round(n_comp))
        if n_comp > 0:
            vac_counts[mobile_ion] = vac_counts.get(mobile_ion, 0) + n_comp
            if vac_counts[mobile_ion] > symbols.count(mobile_ion):
                raise InputError(f"{label}: compensation needs {vac_counts[mobile_ion]} {mobile_ion} vacancies but the cell has only {symbols.count(mobile_ion)} {mobile_ion}.")
        else:
            inter_counts[mobile_ion] = -n_comp
    trials = []
    best: Atoms | None = None
    best_e = math.inf
    for k in range(max(1, n_trials)):
        rng = np.random.default_rng([seed, k])
        cand = _place(atoms, rng, sub_counts, vac_counts, inter_counts)
        if forcefield is not None and n_trials > 1:
            from ase.optimize import FIRE

            cand.calc = forcefield.calculator
            FIRE(cand, logfile=None).run(fmax=0.1, steps=relax_steps)
            e = float(cand.get_potential_energy())
            trials.append({"trial": k, "energy_eV": e})
            cand.calc = None
        else:
            e = 0.0
        if best is None or e < best_e:
            best, best_e = cand, e
    assert best is not None
    net = 0.0
    if oxi:
        for s in best.get_chemical_symbols():
            net += oxi.get(s, 0)
    return DefectResult(
        atoms=best,
        vacancies=vac_counts,
        interstitials=inter_counts,
        substitutions={sub.key: n for sub, n in sub_counts},
        oxidation_states=oxi,
        seed=seed,
        net_charge=net,
        trials=trials,
    )
