"""Chemical-integrity monitor: is the crystal's framework still the one we started from?

A universal force field can keep energies and temperatures healthy while it
breaks the chemistry: CHGNet forms S–S bonds in Na₃SbS₄ at 600–900 K and the
SbS₄³⁻ tetrahedra fall apart (../shared/notes). Every number computed from
such a run is wrong, so MD watches for it. From the starting structure we find

- *framework bonds*: pairs of a non-mobile cation (Sb, P, Ge, W, …) and an
  anion (S, Se, O, halogens, …) closer than ``bond_factor`` × the sum of their
  covalent radii;
- each framework cation's *coordination* by anions within
  ``coordination_factor`` × the median initial bond (Sb–S 2.33 Å → 2.8 Å);

and during the run flag

- new anion–anion bonds: pairs closer than ``anion_bond_factor`` × the sum of
  covalent radii that were not bonded at the start (S–S: 2.4 Å; the closest
  S–S distance in Na₃SbS₄ is ≈ 3.8 Å);
- framework cations whose coordination differs from the start;
- framework atoms diffusing: mean-squared displacement of the non-mobile atoms
  from their starting positions above ``framework_msd_A2``.

Covalent radii: Cordero et al., Dalton Trans. 2832 (2008) (as in ASE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
# matscipy's C neighbour list has ASE's interface and is ~25× faster for 100-atom cells; the
# per-frame guards and integrity checks would otherwise cost more than a distilled force call
from matscipy.neighbours import neighbour_list as neighbor_list

from .errors import SimulationError

__all__ = ["IntegrityMonitor", "IntegrityReport", "FrameCheck", "check_trajectory", "ANIONS", "MOBILE_IONS"]

#: elements treated as anions (formal negative charge in the materials we simulate)
ANIONS = frozenset({"O", "S", "Se", "Te", "N", "F", "Cl", "Br", "I"})
#: default mobile ions when a structure does not say
MOBILE_IONS = frozenset({"Li", "Na", "K", "Rb", "Cs", "Ag", "Cu", "Mg", "Zn"})


@dataclass(frozen=True)
class FrameCheck:
    """What the monitor found in one frame."""

    time_ps: float
    new_anion_bonds: int
    shortest_anion_pair_A: float
    coordination_min: int
    coordination_changed: int
    framework_msd_A2: float
    # start (ps) of the longest-lasting coordination change counted in ``coordination_changed``
    coordination_changed_since_ps: float | None = None

    @property
    def ok(self) -> bool:
        return self.new_anion_bonds == 0 and self.coordination_changed == 0 and np.isfinite(self.framework_msd_A2)


@dataclass(frozen=True)
class IntegrityReport:
    """Summary over a run. ``ok`` is False once the framework broke."""

    ok: bool
    framework_cations: list[str]
    anions: list[str]
    anion_bond_cutoff_A: dict[str, float]
    coordination_cutoff_A: float | None
    initial_coordination: dict[str, float]
    anion_anion_bonds_max: int
    framework_coordination_min: int | None
    framework_msd_max_A2: float
    first_failure_ps: float | None
    reason: str
    n_frames_checked: int
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "framework_cations": self.framework_cations,
            "anions": self.anions,
            "anion_bond_cutoff_A": self.anion_bond_cutoff_A,
            "coordination_cutoff_A": self.coordination_cutoff_A,
            "initial_coordination": self.initial_coordination,
            "anion_anion_bonds_max": self.anion_anion_bonds_max,
            "framework_coordination_min": self.framework_coordination_min,
            "framework_msd_max_A2": self.framework_msd_max_A2,
            "first_failure_ps": self.first_failure_ps,
            "reason": self.reason,
            "n_frames_checked": self.n_frames_checked,
        }


class IntegrityMonitor:
    """Watches frames against the bonding of a reference structure.

    Parameters
    ----------
    reference : the starting structure (positions in Å).
    mobile_ions : elements allowed to move freely; default: those of
        :data:`MOBILE_IONS` present.
    bond_factor : framework cation–anion bonds are pairs closer than this ×
        the sum of covalent radii in the reference.
    coordination_factor : coordination shell = this × the median initial
        framework bond; the initial coordination is each cation's number of
        bonded anions.
    coordination_persist_ps : a site counts as changed only when its
        coordination has differed from the initial one in every check for at
        least this long. A bond that breaks stays broken; a thermal stretch past
        the shell returns within a vibrational period (Sb–S ≈ 90 fs: the
        DFT-fine-tuned Na3SbS4 model at 900 K stretched one Sb–S to 2.92 Å for
        one 30 fs frame and was back at 2.67 Å 60 fs later, while no S–S pair
        came closer than 2.58 Å). New anion–anion bonds count at once.
    anion_bond_factor : an anion–anion pair closer than this × the sum of
        covalent radii is a bond (S–S: 1.15 × 2.10 Å = 2.4 Å).
    framework_msd_A2 : mean-squared displacement of framework atoms (Å²)
        above which the framework counts as diffusing.
    """

    def __init__(
        self,
        reference: Atoms,
        mobile_ions: set[str] | frozenset[str] | None = None,
        bond_factor: float = 1.25,
        coordination_factor: float = 1.2,
        anion_bond_factor: float = 1.15,
        framework_msd_A2: float = 3.0,
        coordination_persist_ps: float = 0.1,
    ) -> None:
        self.ref = reference.copy()
        self.coordination_persist_ps = float(coordination_persist_ps)
        syms = np.array(reference.get_chemical_symbols())
        present = set(syms)
        self.mobile = set(mobile_ions) if mobile_ions else (MOBILE_IONS & present)
        self.anion_mask = np.isin(syms, list(ANIONS))
        self.framework_mask = ~np.isin(syms, list(self.mobile))
        self.anion_bond_factor = anion_bond_factor
        self.framework_msd_A2 = framework_msd_A2
        r = covalent_radii[reference.numbers]
        self._anion_idx = np.flatnonzero(self.anion_mask)
        self._anion_cut = anion_bond_factor * (r[:, None] + r[None, :])
        # initial anion–anion bonds (e.g. S–S in a persulfide) are allowed to stay
        self._initial_anion_pairs = self._anion_pairs(reference)
        cation_mask = self.framework_mask & ~self.anion_mask
        i, j, d = neighbor_list("ijd", reference, float(bond_factor * 2 * r.max()))
        bonded = cation_mask[i] & self.anion_mask[j] & (d < bond_factor * (r[i] + r[j]))
        self.centres = np.unique(i[bonded])
        self.coord_cut: float | None = None
        self.initial_coord = np.zeros(0, dtype=int)
        if self.centres.size:
            # The median bond and the bonded count (not the longest bond and the count within the
            # cut) so that a thermal snapshot works as the reference: one bond stretched at 700 K
            # would otherwise widen the shell to 3.2 Å and let a second-shell S count as a fifth
            # neighbour (measured on a stored 2x2x2 Na3SbS4 trajectory).
            self.coord_cut = float(coordination_factor * np.median(d[bonded]))
            self.initial_coord = np.bincount(i[bonded], minlength=len(reference))[self.centres]
        self.framework_cations = sorted(set(syms[self.centres]))
        self.anions = sorted(set(syms[self.anion_mask]))
        self.checks: list[FrameCheck] = []
        # per framework site: time (ps) since when its coordination has differed, NaN while as initial
        self._changed_since = np.full(self.centres.size, np.nan)

    def _anion_pairs(self, atoms: Atoms) -> set[tuple[int, int]]:
        if self._anion_idx.size < 2:
            return set()
        cut = float(self._anion_cut[np.ix_(self._anion_idx, self._anion_idx)].max())
        i, j, d = neighbor_list("ijd", atoms, cut)
        sel = self.anion_mask[i] & self.anion_mask[j] & (i < j) & (d < self._anion_cut[i, j])
        return set(zip(i[sel].tolist(), j[sel].tolist()))

    def _coordination(self, atoms: Atoms) -> np.ndarray:
        assert self.coord_cut is not None
        i, j = neighbor_list("ij", atoms, self.coord_cut)
        sel = np.isin(i, self.centres) & self.anion_mask[j]
        counts = np.bincount(i[sel], minlength=len(atoms))
        return counts[self.centres]

    def check(self, atoms: Atoms, time_ps: float) -> FrameCheck:
        """Check one frame (unwrapped positions, Å) and remember the result."""
        pairs = self._anion_pairs(atoms) - self._initial_anion_pairs
        shortest = float("inf")
        if self._anion_idx.size >= 2:
            i, j, d = neighbor_list("ijd", atoms, max(3.0, float(self._anion_cut.max())))
            sel = self.anion_mask[i] & self.anion_mask[j]
            if sel.any():
                shortest = float(d[sel].min())
        if self.centres.size:
            coord = self._coordination(atoms)
            cmin = int(coord.min())
            differs = coord != self.initial_coord
            self._changed_since[~differs] = np.nan
            self._changed_since[differs & np.isnan(self._changed_since)] = time_ps
            lasted = time_ps - self._changed_since[differs]
            persisting = lasted >= self.coordination_persist_ps - 1e-9
            changed = int(persisting.sum())
            since = float(self._changed_since[differs][persisting].min()) if changed else None
        else:
            cmin, changed, since = -1, 0, None
        msd = 0.0
        if self.framework_mask.any():
            disp = atoms.positions[self.framework_mask] - self.ref.positions[self.framework_mask]
            disp -= disp.mean(axis=0)  # a rigid drift of the framework is not a breakdown
            msd = float((disp**2).sum(axis=1).mean())
        c = FrameCheck(time_ps, len(pairs), shortest, cmin, changed, msd, since)
        self.checks.append(c)
        return c

    def failure(self, c: FrameCheck) -> str | None:
        """A one-sentence description of what broke in this frame, or None."""
        what = []
        if c.new_anion_bonds:
            el = "–".join(self.anions[:1] * 2) if len(self.anions) == 1 else "anion–anion"
            what.append(f"{c.new_anion_bonds} new {el} bond(s) (shortest {c.shortest_anion_pair_A:.2f} Å)")
        if c.coordination_changed:
            cat = "/".join(self.framework_cations)
            what.append(f"{c.coordination_changed} {cat} site(s) changed coordination for ≥ {self.coordination_persist_ps:g} ps "
                        f"(minimum {c.coordination_min})")
        if c.framework_msd_A2 > self.framework_msd_A2:
            what.append(f"framework atoms diffuse (MSD {c.framework_msd_A2:.1f} Å² > {self.framework_msd_A2:g} Å²)")
        if not what:
            return None
        return f"the framework broke at t = {self.failure_time_ps(c):.2f} ps: " + "; ".join(what)

    @staticmethod
    def failure_time_ps(c: FrameCheck) -> float:
        """When what failed in ``c`` began: a persisting coordination change dates from its start."""
        t = c.time_ps
        if c.coordination_changed and c.coordination_changed_since_ps is not None and not c.new_anion_bonds:
            t = min(t, c.coordination_changed_since_ps)
        return t

    def report(self) -> IntegrityReport:
        first, reason = None, "framework intact"
        for c in self.checks:
            msg = self.failure(c)
            if msg:
                first, reason = self.failure_time_ps(c), msg
                break
        cs = self.checks
        return IntegrityReport(
            ok=first is None,
            framework_cations=self.framework_cations,
            anions=self.anions,
            anion_bond_cutoff_A={
                el: round(float(self.anion_bond_factor * 2 * covalent_radii[atomic_numbers[el]]), 3) for el in self.anions
            },
            coordination_cutoff_A=self.coord_cut,
            initial_coordination={
                el: float(self.initial_coord[np.array(self.ref.get_chemical_symbols())[self.centres] == el].mean())
                for el in self.framework_cations
            },
            anion_anion_bonds_max=max((c.new_anion_bonds for c in cs), default=0),
            framework_coordination_min=(min(c.coordination_min for c in cs) if cs and self.centres.size else None),
            framework_msd_max_A2=max((c.framework_msd_A2 for c in cs), default=0.0),
            first_failure_ps=first,
            reason=reason,
            n_frames_checked=len(cs),
        )

    def raise_if_broken(self, c: FrameCheck, label: str) -> None:
        msg = self.failure(c)
        if msg:
            raise SimulationError(
                f"{label}: {msg}. The force field does not keep this material's chemistry at this temperature; "
                "use a validated/fine-tuned force field or a lower temperature (or --integrity flag to keep going, flagged)."
            )


def check_trajectory(traj: Any, mobile_ions: set[str] | None = None, every: int = 1) -> IntegrityReport:
    """Run the monitor over a stored :class:`~ionraman.trajectory.Trajectory` (frame 0 is the reference)."""
    mobile = mobile_ions
    if mobile is None and traj.metadata.get("mobile_ion"):
        mobile = {traj.metadata["mobile_ion"]}
    mon = IntegrityMonitor(traj.atoms(0), mobile)
    for k in range(0, traj.n_frames, every):
        mon.check(traj.atoms(k), traj.time_fs[k] / 1000.0)
    return mon.report()


@dataclass(frozen=True)
class ProductionFailure:
    """When (ps, production time) and why the stored production frames of a run broke."""

    time_ps: float
    reason: str


def production_failure(traj: Any) -> ProductionFailure | None:
    """When and why the framework broke within the stored production frames, None if they are intact.

    A failure the run's own monitor recorded during production is taken as recorded. One recorded
    during thermalisation (negative time: a 20 fs Langevin heating can stretch a bond past the
    shell for a moment) is checked again on the stored frames, since it need not persist; the
    reason is then that check's.
    """
    integ = traj.metadata.get("integrity") or {}
    if integ.get("ok", True):
        return None
    t = integ.get("first_failure_ps")
    if t is not None and float(t) >= 0:
        return ProductionFailure(float(t), str(integ.get("reason", "")))
    rep = check_trajectory(traj)
    return None if rep.ok or rep.first_failure_ps is None else ProductionFailure(float(rep.first_failure_ps), rep.reason)
