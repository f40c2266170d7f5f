"""λ-SOAP structure features (featomic) shared by the polarizability model and snapshot selection.

Two families of features are computed for every structure, each **summed over
the atoms of one centre species** (a per-species block, so that every species
gets its own regression weights and the sums are extensive):

- λ = 0 (invariant): the SOAP power spectrum, :class:`featomic.SoapPowerSpectrum`,
  ``p^{ab}_{n n' l}(i) = Σ_m c^a_{nlm}(i) c^b_{n'lm}(i)`` (up to featomic's normalisation).
- λ = 2 (proper covariant, σ = +1): the λ-SOAP / equivariant power spectrum
  ``x^{(2)}_{μ; a n l, b n' l'}(i) = Σ_{m m'} ⟨l m; l' m' | 2 μ⟩ c^a_{nlm}(i) c^b_{n'l'm'}(i)``
  from :class:`featomic.clebsch_gordan.EquivariantPowerSpectrum` (selected key
  ``o3_lambda=2, o3_sigma=1``, neighbour types moved to properties).

``c^a_{nlm}(i)`` are the coefficients of :class:`featomic.SphericalExpansion`
(Gaussian-smeared neighbour density of species ``a`` around atom ``i``, GTO
radial basis, shifted-cosine cutoff, real spherical harmonics).

Spherical convention (verified numerically in the tests): featomic's real
spherical harmonics of degree 2 are, in the order μ = −2 … 2,

    Y_2^μ(r̂) = sqrt(15 / 8π) · r̂ᵀ E^μ r̂,

with the Frobenius-orthonormal traceless symmetric matrices of
:data:`SPHERICAL_BASIS_L2`::

    E^-2 = (xy + yx)/√2,  E^-1 = (yz + zy)/√2,  E^0 = (2zz − xx − yy)/√6,
    E^+1 = (xz + zx)/√2,  E^+2 = (xx − yy)/√2.

A traceless symmetric tensor T therefore has spherical components
``t_μ = Σ_ab E^μ_ab T_ab`` and ``T = Σ_μ t_μ E^μ`` (an isometry: ‖T‖_F = ‖t‖).
Under a rotation R the λ = 2 features transform with the real Wigner matrix
``D_μν(R) = tr(E^μ R E^ν Rᵀ)``, exactly as the components of ``R T Rᵀ``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from ..errors import InputError

__all__ = [
    "SPHERICAL_BASIS_L2",
    "SoapSettings",
    "StructureFeatures",
    "LambdaSoap",
    "cartesian_to_spherical_l2",
    "spherical_l2_to_cartesian",
    "structure_soap",
    "species_of",
]

_S2 = 1.0 / np.sqrt(2.0)
_S6 = 1.0 / np.sqrt(6.0)

#: (5, 3, 3) orthonormal traceless symmetric basis matching featomic's real Y_2^μ, μ = −2 … 2
SPHERICAL_BASIS_L2 = np.zeros((5, 3, 3))
SPHERICAL_BASIS_L2[0, 0, 1] = SPHERICAL_BASIS_L2[0, 1, 0] = _S2  # xy
SPHERICAL_BASIS_L2[1, 1, 2] = SPHERICAL_BASIS_L2[1, 2, 1] = _S2  # yz
SPHERICAL_BASIS_L2[2] = np.diag([-_S6, -_S6, 2.0 * _S6])  # 2zz − xx − yy
SPHERICAL_BASIS_L2[3, 0, 2] = SPHERICAL_BASIS_L2[3, 2, 0] = _S2  # xz
SPHERICAL_BASIS_L2[4] = np.diag([_S2, -_S2, 0.0])  # xx − yy
SPHERICAL_BASIS_L2.setflags(write=False)


def cartesian_to_spherical_l2(tensors: np.ndarray) -> np.ndarray:
    """(…, 3, 3) Cartesian tensors → (…, 5) spherical λ = 2 components of their symmetric traceless part."""
    t = np.asarray(tensors, dtype=float)
    return np.einsum("mab,...ab->...m", SPHERICAL_BASIS_L2, t)  # E is symmetric and traceless


def spherical_l2_to_cartesian(components: np.ndarray) -> np.ndarray:
    """(…, 5) spherical λ = 2 components → (…, 3, 3) symmetric traceless Cartesian tensors."""
    return np.einsum("...m,mab->...ab", np.asarray(components, dtype=float), SPHERICAL_BASIS_L2)


def species_of(frames: Sequence[Atoms]) -> list[str]:
    """Element symbols present in ``frames``, sorted by atomic number."""
    zs: set[int] = set()
    for a in frames:
        zs.update(int(z) for z in np.unique(a.numbers))
    return [chemical_symbols[z] for z in sorted(zs)]


@dataclass(frozen=True)
class SoapSettings:
    """Hyperparameters of the featomic spherical expansion (lengths in Å).

    ``max_radial`` is featomic's largest radial index (``max_radial + 1`` GTO
    functions); ``max_angular`` the largest l of the expansion. ``radial_scaling``, when
    given as ``(r0_A, m)``, weights each neighbour's Gaussian by u(r) = 1 / (1 + (r/r0)^m)
    (Willatt, Musil & Ceriotti, PCCP 20, 29661 (2018); featomic's ``Willatt2018`` with
    rate 1), so that distant neighbours count less and a larger cutoff can be used.
    """

    cutoff_A: float = 4.0
    max_radial: int = 4
    max_angular: int = 3
    atomic_gaussian_width: float = 0.3
    cutoff_smoothing_A: float = 0.5
    radial_scaling: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.radial_scaling is not None:
            try:
                rs = tuple(float(v) for v in self.radial_scaling)  # saved models store a JSON list
            except (TypeError, ValueError):
                rs = ()
            if len(rs) != 2 or not all(np.isfinite(v) and v > 0 for v in rs):
                raise InputError(
                    f"SoapSettings radial_scaling={self.radial_scaling!r} is invalid; give (r0_A, exponent) "
                    "with both positive, e.g. (2.5, 7), or None for no scaling."
                )
            object.__setattr__(self, "radial_scaling", rs)
        checks = (
            ("cutoff_A", self.cutoff_A > 0),
            ("max_radial", int(self.max_radial) == self.max_radial and self.max_radial >= 0),
            ("max_angular", int(self.max_angular) == self.max_angular and self.max_angular >= 1),
            ("atomic_gaussian_width", self.atomic_gaussian_width > 0),
            ("cutoff_smoothing_A", 0 < self.cutoff_smoothing_A < self.cutoff_A),
        )
        for name, ok in checks:
            if not ok:
                raise InputError(
                    f"SoapSettings {name}={getattr(self, name)!r} is invalid; use a positive cutoff, "
                    "max_radial ≥ 0, max_angular ≥ 1 (λ = 2 needs l ≥ 1), a positive Gaussian width "
                    "and a smoothing width below the cutoff."
                )

    def hypers(self) -> dict:
        """featomic ``SphericalExpansion`` / ``SoapPowerSpectrum`` keyword arguments."""
        density: dict = {"type": "Gaussian", "width": float(self.atomic_gaussian_width)}
        if self.radial_scaling is not None:
            r0, m = self.radial_scaling
            density["scaling"] = {"type": "Willatt2018", "rate": 1.0, "scale": r0, "exponent": m}
        return {
            "cutoff": {
                "radius": float(self.cutoff_A),
                "smoothing": {"type": "ShiftedCosine", "width": float(self.cutoff_smoothing_A)},
            },
            "density": density,
            "basis": {
                "type": "TensorProduct",
                "max_angular": int(self.max_angular),
                "radial": {"type": "Gto", "max_radial": int(self.max_radial)},
            },
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["radial_scaling"] is None:
            del d["radial_scaling"]  # keeps the ids of models saved before the option existed
        else:
            d["radial_scaling"] = list(d["radial_scaling"])
        return d


@dataclass
class StructureFeatures:
    """Per-species summed λ-SOAP features of a list of structures.

    Attributes
    ----------
    species : element symbols (sorted by Z), the order of the species axis.
    settings : the :class:`SoapSettings` used.
    counts : (n, S) number of atoms of each species per structure.
    x0 : (n, S, p0) λ = 0 features summed over the atoms of each centre species, or None.
    x2 : (n, S, 5, p2) λ = 2 features (μ = −2 … 2) summed likewise, or None.
    """

    species: list[str]
    settings: SoapSettings
    counts: np.ndarray
    x0: np.ndarray | None = None
    x2: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def __getitem__(self, idx) -> StructureFeatures:
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return StructureFeatures(
            species=list(self.species),
            settings=self.settings,
            counts=self.counts[idx],
            x0=None if self.x0 is None else self.x0[idx],
            x2=None if self.x2 is None else self.x2[idx],
        )

    @staticmethod
    def concatenate(parts: Sequence[StructureFeatures]) -> StructureFeatures:
        first = parts[0]
        return StructureFeatures(
            species=list(first.species),
            settings=first.settings,
            counts=np.concatenate([p.counts for p in parts]),
            x0=None if first.x0 is None else np.concatenate([p.x0 for p in parts]),
            x2=None if first.x2 is None else np.concatenate([p.x2 for p in parts]),
        )


def _check_frames(frames: Sequence[Atoms], species: Sequence[str], what: str) -> None:
    allowed = {atomic_numbers[s] for s in species}
    for k, a in enumerate(frames):
        if not isinstance(a, Atoms):
            raise InputError(f"{what}: item {k} is a {type(a).__name__}, not an ase.Atoms; pass a list of structures.")
        if len(a) == 0:
            raise InputError(f"{what}: structure {k} has no atoms; drop it.")
        unknown = sorted({int(z) for z in a.numbers} - allowed, key=int)
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            raise InputError(
                f"{what}: structure {k} contains {names}, which the model was not trained on "
                f"(it knows {', '.join(species)}); retrain with frames containing {names}."
            )
        pbc = np.asarray(a.pbc, dtype=bool)
        if pbc.any() and not pbc.all():
            raise InputError(
                f"{what}: structure {k} is periodic along some axes only (pbc={pbc.tolist()}); "
                "use a fully periodic cell (pbc=True) or a molecule (pbc=False)."
            )
        if pbc.all() and abs(a.cell.volume) < 1e-6:
            raise InputError(f"{what}: structure {k} is periodic but has a zero-volume cell; set its cell vectors.")


class LambdaSoap:
    """Compute :class:`StructureFeatures` (λ = 0 and/or λ = 2) for a fixed species list.

    Parameters
    ----------
    species : element symbols the features are built for (order is irrelevant; stored sorted by Z).
    settings : :class:`SoapSettings` (spherical-expansion hyperparameters).
    """

    def __init__(self, species: Sequence[str], settings: SoapSettings | None = None) -> None:
        import featomic
        from featomic.clebsch_gordan import EquivariantPowerSpectrum

        bad = [s for s in species if s not in atomic_numbers]
        if bad or not species:
            raise InputError(f"LambdaSoap species {list(species)!r} must be a non-empty list of element symbols, e.g. ['O', 'Si'].")
        self.settings = settings or SoapSettings()
        zs = sorted({atomic_numbers[s] for s in species})
        self.species = [chemical_symbols[z] for z in zs]
        self.numbers = zs
        self._zindex = {z: k for k, z in enumerate(zs)}
        hypers = self.settings.hypers()
        self._ps = featomic.SoapPowerSpectrum(**hypers)
        self._eps = EquivariantPowerSpectrum(featomic.SphericalExpansion(**hypers), neighbor_types=zs)
        from metatensor import Labels

        self._l2_keys = Labels(["o3_lambda", "o3_sigma"], np.array([[2, 1]], dtype=np.int32))
        S = len(zs)
        nr = self.settings.max_radial + 1
        L = self.settings.max_angular
        self._n_pairs = S * (S + 1) // 2
        self._pair_index = {}
        k = 0
        for i in range(S):
            for j in range(i, S):
                self._pair_index[(zs[i], zs[j])] = k
                k += 1
        self.p0 = self._n_pairs * (L + 1) * nr * nr
        self._p0_block = (L + 1) * nr * nr
        self._p2: int | None = None

    def describe(self) -> dict:
        return {"species": self.species, "settings": self.settings.to_dict(), "featomic": _featomic_version()}

    def compute(self, frames: Sequence[Atoms], lambdas: Sequence[int] = (0, 2), batch_size: int = 64) -> StructureFeatures:
        """Features of ``frames`` (list of ase.Atoms), computed in batches of ``batch_size`` structures."""
        frames = list(frames)
        if not frames:
            raise InputError("No structures were given; pass at least one ase.Atoms.")
        _check_frames(frames, self.species, "structure features")
        parts = []
        for s in range(0, len(frames), max(1, int(batch_size))):
            parts.append(self._compute_batch(frames[s : s + batch_size], tuple(lambdas)))
        return StructureFeatures.concatenate(parts) if len(parts) > 1 else parts[0]

    # ------------------------------------------------------------------ internals
    def _compute_batch(self, frames: list[Atoms], lambdas: tuple[int, ...]) -> StructureFeatures:
        n, S = len(frames), len(self.species)
        counts = np.zeros((n, S))
        for f, a in enumerate(frames):
            zs, c = np.unique(a.numbers, return_counts=True)
            for z, cc in zip(zs, c):
                counts[f, self._zindex[int(z)]] = cc
        x0 = x2 = None
        if 0 in lambdas:
            x0 = np.zeros((n, S, self.p0))
            tm = self._ps.compute(frames)
            for key, block in tm.items():
                kz = self._zindex[int(key["center_type"])]
                pair = self._pair_index[(int(key["neighbor_1_type"]), int(key["neighbor_2_type"]))]
                vals = block.values
                if vals.shape[1] != self._p0_block:
                    raise RuntimeError(f"unexpected SOAP power-spectrum block width {vals.shape[1]} != {self._p0_block}")
                sl = slice(pair * self._p0_block, (pair + 1) * self._p0_block)
                np.add.at(x0[:, kz, sl], block.samples.values[:, 0], vals)
        if 2 in lambdas:
            tm = self._eps.compute(frames, selected_keys=self._l2_keys, neighbors_to_properties=True)
            for key, block in tm.items():
                if int(key["o3_lambda"]) != 2 or int(key["o3_sigma"]) != 1:
                    continue
                vals = block.values  # (n_atoms, 5, p2)
                if x2 is None:
                    self._p2 = vals.shape[2]
                    x2 = np.zeros((n, S, 5, vals.shape[2]))
                kz = self._zindex[int(key["center_type"])]
                np.add.at(x2[:, kz], block.samples.values[:, 0], vals)
            if x2 is None:  # no atoms at all with neighbours: width from a metadata call on a dimer
                x2 = np.zeros((n, S, 5, self._width_l2()))
        return StructureFeatures(species=list(self.species), settings=self.settings, counts=counts, x0=x0, x2=x2)

    def _width_l2(self) -> int:
        if self._p2 is None:
            probe = Atoms(numbers=[self.numbers[0]] * 2, positions=[[0, 0, 0], [0, 0, 1.0]])
            tm = self._eps.compute_metadata(probe, selected_keys=self._l2_keys, neighbors_to_properties=True)
            self._p2 = int(len(tm.block(0).properties))
        return self._p2


def _featomic_version() -> str:
    try:
        import featomic

        return str(featomic.__version__)
    except Exception:  # pragma: no cover
        return "unknown"


def structure_soap(
    frames: Sequence[Atoms],
    species: Sequence[str] | None = None,
    settings: SoapSettings | None = None,
    normalise: bool = True,
) -> np.ndarray:
    """Structure-level invariant descriptor for snapshot selection, shape (n, S·p0).

    The λ = 0 SOAP power spectrum of every atom, summed per centre species and
    divided by the *total* number of atoms of the structure (so the descriptor
    is intensive and still encodes composition), then (``normalise``) scaled to
    unit Euclidean norm.
    """
    frames = list(frames)
    sp = list(species) if species is not None else species_of(frames)
    feats = LambdaSoap(sp, settings).compute(frames, lambdas=(0,))
    n_atoms = feats.counts.sum(axis=1)
    d = feats.x0.reshape(len(frames), -1) / n_atoms[:, None]
    if normalise:
        norm = np.linalg.norm(d, axis=1, keepdims=True)
        d = d / np.where(norm > 0, norm, 1.0)
    return d


def hash_frames(frames: Sequence[Atoms], labels: np.ndarray | None = None) -> str:
    """SHA-256 over numbers, positions, cells (and labels) of ``frames`` (first 16 hex digits)."""
    h = hashlib.sha256()
    for a in frames:
        h.update(np.ascontiguousarray(a.numbers, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(a.positions, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(a.cell.array, dtype=np.float64).tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(labels, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]
