"""Bond-polarizability model (Wolkenstein / Placzek type) for the cell polarizability.

The electronic polarizability of the cell is a sum of cylindrically symmetric bond
contributions plus optional isotropic atomic terms:

    α = Σ_atoms c_{Z_i} I
      + Σ_bonds [ α∥(r) r̂r̂ + α⊥(r) (I − r̂r̂) ],

    α∥(r) = a∥ + b∥ (r − r0),   α⊥(r) = a⊥ + b⊥ (r − r0),

with r the bond length, r̂ the unit bond vector, and (a∥, b∥, a⊥, b⊥, r0) per bond
type (unordered element pair). Equivalently each bond adds an isotropic part
ᾱ = (α∥ + 2α⊥)/3 and an anisotropic part γ = α∥ − α⊥: ᾱ I + γ (r̂r̂ − I/3).
a∥, a⊥ are the bond's polarizabilities at r0 and b∥ = dα∥/dr, b⊥ = dα⊥/dr their
first derivatives — the quantities that control Raman intensities in the Placzek
approximation. The model is linear in (a∥, b∥, a⊥, b⊥, c), so :meth:`fit` is a linear
least-squares problem over all 9 tensor components of all labelled frames.

Bonds are the pairs closer than a per-pair cutoff (default 1.3 × the sum of ASE's
covalent radii), found with periodic images (ASE neighbour list; every directed pair
i→j is counted with weight ½, so small cells and self-images are handled correctly).

Everything the model writes is labelled ``polarizability_source = "bond-model"`` — it
is a model, never a reference.

References: M. V. Wolkenstein, C. R. Acad. Sci. URSS 30, 791 (1941); E. R. Lippincott
and J. M. Stutman, J. Phys. Chem. 68, 2926 (1964); D. W. Snoke and M. Cardona, Solid
State Commun. 87, 121 (1993); S. Guha et al., Phys. Rev. B 53, 13106 (1996); for SiO2
P. Umari, A. Pasquarello and A. Dal Corso, Phys. Rev. B 63, 094305 (2001).
Details and caveats: docs/physics/reference-labels.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

from ..errors import InputError
from .dataset import KEY, get_alpha

__all__ = ["BondParams", "BondPolarizabilityModel", "pair_key", "split_iso_aniso", "polarizability_errors"]

SOURCE = "bond-model"
_I3 = np.eye(3)


def pair_key(a: str | Sequence[str], b: str | None = None) -> tuple[str, str]:
    """Canonical bond-type key: the two element symbols sorted (``("O", "Si")``); accepts ``"Si-O"``."""
    if b is None:
        if isinstance(a, str):
            parts = a.replace(" ", "").split("-")
            if len(parts) != 2:
                raise InputError(f"bond type {a!r}: write it as 'El1-El2', e.g. 'Si-O'.")
            a, b = parts
        else:
            a, b = a
    for el in (a, b):
        if el not in atomic_numbers:
            raise InputError(f"bond type ({a}, {b}): {el!r} is not an element symbol.")
    return tuple(sorted((str(a), str(b))))  # type: ignore[return-value]


def _key_str(k: tuple[str, str]) -> str:
    return f"{k[0]}-{k[1]}"


@dataclass(frozen=True)
class BondParams:
    """Parameters of one bond type (Å³ and Å³/Å; r0 in Å)."""

    a_par: float
    b_par: float
    a_perp: float
    b_perp: float
    r0: float

    def alpha_par(self, r: np.ndarray | float) -> np.ndarray | float:
        return self.a_par + self.b_par * (np.asarray(r) - self.r0)

    def alpha_perp(self, r: np.ndarray | float) -> np.ndarray | float:
        return self.a_perp + self.b_perp * (np.asarray(r) - self.r0)


class BondPolarizabilityModel:
    """α = Σ_atoms c_Z I + Σ_bonds [α∥(r) r̂r̂ + α⊥(r)(I − r̂r̂)], linear α∥, α⊥ in r − r0 per bond type.

    parameters: bond type → :class:`BondParams` (keys ``("Si", "O")`` or ``"Si-O"``, any order).
    atomic: element → isotropic atomic polarizability c (Å³), default none.
    cutoffs: bond type → cutoff (Å); types without one use ``cutoff_scale`` × (sum of
        covalent radii). A type listed only here (no parameters yet) is fitted by :meth:`fit`.
    """

    def __init__(
        self,
        parameters: Mapping[Any, BondParams] | None = None,
        atomic: Mapping[str, float] | None = None,
        cutoffs: Mapping[Any, float] | None = None,
        cutoff_scale: float = 1.3,
    ) -> None:
        self.parameters: dict[tuple[str, str], BondParams] = {pair_key(k): v for k, v in (parameters or {}).items()}
        self.atomic: dict[str, float] = {str(k): float(v) for k, v in (atomic or {}).items()}
        self.cutoffs: dict[tuple[str, str], float] = {pair_key(k): float(v) for k, v in (cutoffs or {}).items()}
        self.cutoff_scale = float(cutoff_scale)
        for el in self.atomic:
            if el not in atomic_numbers:
                raise InputError(f"atomic polarizability for {el!r}: not an element symbol.")

    # ------------------------------------------------------------------ bonds
    @property
    def bond_types(self) -> list[tuple[str, str]]:
        return sorted(set(self.parameters) | set(self.cutoffs))

    def cutoff(self, key: tuple[str, str]) -> float:
        if key in self.cutoffs:
            return self.cutoffs[key]
        return self.cutoff_scale * (covalent_radii[atomic_numbers[key[0]]] + covalent_radii[atomic_numbers[key[1]]])

    def bonds(self, atoms: Atoms, types: Iterable[tuple[str, str]] | None = None) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """Bond type → (lengths r (Å), unit vectors r̂ (n, 3)) of the directed pairs i→j (each bond twice)."""
        from ase.neighborlist import neighbor_list

        types = list(self.bond_types if types is None else types)
        out: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        if not types:
            return out
        symbols = np.array(atoms.get_chemical_symbols())
        present = set(symbols)
        cut = {k: self.cutoff(k) for k in types if k[0] in present and k[1] in present}
        for k in types:
            out[k] = (np.zeros(0), np.zeros((0, 3)))
        if not cut:
            return out
        a = atoms
        i, j, d, D = neighbor_list("ijdD", a, {k: v for k, v in cut.items()}, self_interaction=False)
        si, sj = symbols[i], symbols[j]
        for k in cut:
            m = ((si == k[0]) & (sj == k[1])) | ((si == k[1]) & (sj == k[0]))
            r = d[m]
            out[k] = (r, D[m] / r[:, None])
        return out

    # ------------------------------------------------------------------ design
    def _features(self, atoms: Atoms, types: Sequence[tuple[str, str]], r0: Mapping[tuple[str, str], float], elements: Sequence[str]) -> np.ndarray:
        """(9, 4·n_types + n_elements) design block of one frame: α.flat = X @ θ."""
        bonds = self.bonds(atoms, types)
        cols = []
        for k in types:
            r, u = bonds[k]
            uu = np.einsum("ni,nj->nij", u, u)
            perp = _I3[None] - uu
            dr = r - r0[k]
            w = 0.5  # every bond appears as i→j and j→i
            cols += [
                w * uu.sum(0),
                w * (dr[:, None, None] * uu).sum(0),
                w * perp.sum(0),
                w * (dr[:, None, None] * perp).sum(0),
            ]
        syms = atoms.get_chemical_symbols()
        for el in elements:
            cols.append(syms.count(el) * _I3)
        return np.stack([c.reshape(9) for c in cols], axis=1) if cols else np.zeros((9, 0))

    # ------------------------------------------------------------------ predict
    def predict_frame(self, atoms: Atoms) -> np.ndarray:
        """α (3×3, Å³) of one frame."""
        alpha = np.zeros((3, 3))
        syms = atoms.get_chemical_symbols()
        for el, c in self.atomic.items():
            alpha += c * syms.count(el) * _I3
        if not self.parameters:
            return alpha
        bonds = self.bonds(atoms, list(self.parameters))
        for k, p in self.parameters.items():
            r, u = bonds[k]
            if r.size == 0:
                continue
            uu = np.einsum("ni,nj->nij", u, u)
            ap = np.asarray(p.alpha_par(r))[:, None, None]
            at = np.asarray(p.alpha_perp(r))[:, None, None]
            alpha += 0.5 * (ap * uu + at * (_I3[None] - uu)).sum(0)
        return alpha

    def predict(self, frames: Atoms | Sequence[Atoms]) -> np.ndarray:
        """α of every frame, shape (n, 3, 3), Å³."""
        if isinstance(frames, Atoms):
            frames = [frames]
        if not self.parameters and not self.atomic:
            raise InputError("bond model has no parameters; fit it to labelled frames first (model.fit(frames)).")
        return np.array([self.predict_frame(a) for a in frames]).reshape(-1, 3, 3)

    def label(self, frames: Sequence[Atoms]) -> list[Atoms]:
        """Copies of the frames with ``info["polarizability"]`` from the model (source ``"bond-model"``)."""
        alphas = self.predict(frames)
        out = []
        for a, al in zip(frames, alphas):
            b = a.copy()
            b.info[KEY] = al
            b.info["polarizability_source"] = SOURCE
            b.info["polarizability_settings"] = json.dumps({"engine": SOURCE, "model": self.to_dict()}, sort_keys=True)
            out.append(b)
        return out

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        frames: Sequence[Atoms],
        bond_types: Iterable[Any] | None = None,
        fit_atomic: bool | Iterable[str] = False,
        r0: Mapping[Any, float] | None = None,
        ridge: float = 0.0,
    ) -> BondPolarizabilityModel:
        """Least-squares fit of (a∥, b∥, a⊥, b⊥) per bond type (and atomic c) to labelled frames; returns self.

        bond_types: types to fit (default: all in ``parameters`` and ``cutoffs``).
        fit_atomic: also fit isotropic atomic terms (True: every element present, or a list).
            Off by default: when every frame has the same bond count per type, atomic terms
            are collinear with a∥/a⊥ (the minimum-norm solution is returned then).
        r0: reference length per type (default: the mean bond length in the frames).
        ridge: Tikhonov regularisation λ (adds λ‖θ‖² to the squared error).
        Atomic terms not fitted stay as they are and are subtracted from the targets.
        """
        frames = list(frames)
        if not frames:
            raise InputError("bond model fit: no frames; give labelled frames (info['polarizability'] in Å³).")
        types = sorted({pair_key(k) for k in bond_types}) if bond_types is not None else self.bond_types
        if not types:
            raise InputError("bond model fit: no bond types; give cutoffs={('Si', 'O'): 2.3} or bond_types=['Si-O'].")
        present = sorted({s for a in frames for s in a.get_chemical_symbols()})
        elements = present if fit_atomic is True else ([] if fit_atomic is False else sorted(fit_atomic))
        # reference lengths
        r0_map: dict[tuple[str, str], float] = {pair_key(k): float(v) for k, v in (r0 or {}).items()}
        all_bonds = [self.bonds(a, types) for a in frames]
        for k in types:
            if k in r0_map:
                continue
            rs = np.concatenate([b[k][0] for b in all_bonds])
            if rs.size == 0:
                raise InputError(f"bond model fit: no {_key_str(k)} bonds within {self.cutoff(k):.2f} Å in any frame; raise the cutoff or drop this type.")
            r0_map[k] = float(rs.mean())
        fixed = {el: c for el, c in self.atomic.items() if el not in elements}
        X_rows, y_rows = [], []
        for n, a in enumerate(frames):
            y = get_alpha(a, f"frame {n}").copy()
            syms = a.get_chemical_symbols()
            for el, c in fixed.items():
                y -= c * syms.count(el) * _I3
            X_rows.append(self._features(a, types, r0_map, elements))
            y_rows.append(y.reshape(9))
        X = np.concatenate(X_rows)
        y = np.concatenate(y_rows)
        if ridge > 0:
            X = np.vstack([X, np.sqrt(ridge) * np.eye(X.shape[1])])
            y = np.concatenate([y, np.zeros(X.shape[1])])
        theta, *_ = np.linalg.lstsq(X, y, rcond=None)
        for t, k in enumerate(types):
            a_par, b_par, a_perp, b_perp = theta[4 * t : 4 * t + 4]
            self.parameters[k] = BondParams(float(a_par), float(b_par), float(a_perp), float(b_perp), r0_map[k])
        for e, el in enumerate(elements):
            self.atomic[el] = float(theta[4 * len(types) + e])
        return self

    def score(self, frames: Sequence[Atoms]) -> dict[str, float]:
        """Errors of the model on labelled frames (see :func:`polarizability_errors`)."""
        true = np.array([get_alpha(a, f"frame {n}") for n, a in enumerate(frames)])
        return polarizability_errors(self.predict(frames), true)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": SOURCE,
            "parameters": {_key_str(k): asdict(v) for k, v in sorted(self.parameters.items())},
            "atomic": dict(sorted(self.atomic.items())),
            "cutoffs": {_key_str(k): self.cutoff(k) for k in self.bond_types},
            "cutoff_scale": self.cutoff_scale,
            "units": {"alpha": "A^3", "b": "A^3/A", "r0": "A", "cutoff": "A"},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BondPolarizabilityModel:
        try:
            params = {k: BondParams(**v) for k, v in d.get("parameters", {}).items()}
        except TypeError as exc:
            raise InputError(f"bond model: bad parameters ({exc}); each needs a_par, b_par, a_perp, b_perp, r0.") from None
        return cls(params, d.get("atomic", {}), d.get("cutoffs", {}), d.get("cutoff_scale", 1.3))

    def __repr__(self) -> str:
        return f"BondPolarizabilityModel(types={[_key_str(k) for k in self.bond_types]}, atomic={self.atomic})"


def split_iso_aniso(alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic part tr(α)/3 (n,) and anisotropic (traceless) part α − tr(α)/3 I (n, 3, 3)."""
    a = np.asarray(alpha, dtype=float).reshape(-1, 3, 3)
    iso = np.trace(a, axis1=1, axis2=2) / 3.0
    return iso, a - iso[:, None, None] * _I3


def polarizability_errors(alpha_pred: np.ndarray, alpha_true: np.ndarray) -> dict[str, float]:
    """Errors of predicted vs reference cell tensors (both (n, 3, 3) in Å³).

    - iso: a = tr(α)/3 per frame; ``rmse_iso_A3`` = sqrt(mean (a_pred − a_true)²);
      ``rel_rmse_iso`` = rmse / std(a_true) (population std over the frames given).
    - aniso: T = sym(α) − tr(α)/3·I, all 9 Cartesian components;
      ``rmse_aniso_A3`` = sqrt(mean over frames and the 9 components of (T_pred − T_true)²);
      ``rel_rmse_aniso`` = rmse / sqrt(mean over frames and components of (T_true − mean_frames T_true)²),
      i.e. divided by the pooled per-component std of the reference traceless tensors. (With the
      orthonormal spherical basis the ratio is identical when computed on the 5 spherical components.)
    Both tensors are symmetrised first.
    """
    p = np.asarray(alpha_pred, dtype=float).reshape(-1, 3, 3)
    t = np.asarray(alpha_true, dtype=float).reshape(-1, 3, 3)
    if p.shape != t.shape:
        raise InputError(f"predicted and reference tensors have shapes {p.shape} and {t.shape}; give one tensor per frame.")
    p = 0.5 * (p + p.transpose(0, 2, 1))
    t = 0.5 * (t + t.transpose(0, 2, 1))
    ip, tp = split_iso_aniso(p)
    it, tt = split_iso_aniso(t)
    rmse_iso = float(np.sqrt(np.mean((ip - it) ** 2)))
    std_iso = float(np.std(it))
    rmse_an = float(np.sqrt(np.mean((tp - tt) ** 2)))
    std_an = float(np.sqrt(np.mean((tt - tt.mean(axis=0)) ** 2)))
    return {
        "n_frames": int(len(t)),
        "rmse_iso_A3": rmse_iso,
        "std_iso_A3": std_iso,
        "rel_rmse_iso": rmse_iso / std_iso if std_iso > 0 else float("nan"),
        "rmse_aniso_A3": rmse_an,
        "std_aniso_A3": std_an,
        "rel_rmse_aniso": rmse_an / std_an if std_an > 0 else float("nan"),
        "rmse_total_A3": float(np.sqrt(np.mean((p - t) ** 2))),
    }
