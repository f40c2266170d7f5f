"""Exactly equivariant, extensive, symmetry-adapted linear model of the cell polarizability.

The symmetric cell tensor α (Å³) is split into its isotropic part
α⁽⁰⁾ = tr(α)/3 and the five real-spherical components α⁽²⁾_μ of its traceless
part (convention of :mod:`ionraman.polarizability.descriptors`). Each part is a
sum of atomic contributions, linear in λ-SOAP features with one weight vector
per centre species (SA-GPR with a linear kernel; Grisafi et al., PRL 120,
036002 (2018)):

    α⁽⁰⁾   = Σ_a N_a b_a + Σ_a w⁽⁰⁾_a · X⁽⁰⁾_a,          X⁽⁰⁾_a = Σ_{i∈a} x⁽⁰⁾(i)
    α⁽²⁾_μ = Σ_a w⁽²⁾_a · X⁽²⁾_{a,μ},                    X⁽²⁾_{a,μ} = Σ_{i∈a} x⁽²⁾_μ(i)

The same weights multiply every μ and there is no λ = 2 intercept, so the
prediction rotates exactly as R α Rᵀ; the only λ = 0 intercept is per atom
(N_a b_a), so predictions are exactly extensive. Weights come from ridge
regression (per-species-block scaling, regularisation chosen by K-fold CV on
the training frames). See docs/physics/polarizability-model.md.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..errors import InputError
from .bond_model import polarizability_errors
from .dataset import get_alpha
from .descriptors import (
    LambdaSoap,
    SoapSettings,
    StructureFeatures,
    cartesian_to_spherical_l2,
    hash_frames,
    spherical_l2_to_cartesian,
    species_of,
)

__all__ = [
    "CV_DESCRIPTOR_GRID",
    "FORMAT_VERSION",
    "PolarizabilityModel",
    "TrajectoryPolarizability",
    "learning_curve",
    "plot_parity",
    "predict_trajectory",
    "polarizability_errors",
    "read_alpha_sidecar",
]

#: version of the saved-model file layout; :meth:`PolarizabilityModel.load` refuses others.
#: 2 added the radial scaling of the descriptor; a model that neither uses nor lists one (in
#: its descriptor grid) is still written as version 1, so releases that read only version 1
#: keep reading it and refuse the others with their version message instead of failing on the
#: unknown field (files saved with a scaling before this rule say 1 and still load here)
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_FORMAT_NAME = "ionraman.PolarizabilityModel"
_SIDECAR_FORMAT = "ionraman.alpha_sidecar"

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-8, 4, 25))

#: descriptor settings ``ionraman train`` lets cross-validation choose from: the plain 4 Å
#: expansion and longer cutoffs whose distant neighbours are damped by the Willatt radial
#: scaling 1 / (1 + (r/r0)^m). Measured (docs/physics/polarizability-model.md, session 11): on
#: the SiO2 split CV picks a scaled 6 Å setting, iso 5.2 → 4.3–4.8 %, and on the shipped
#: Na3SbS4/AgI/NaCl families the scaled settings lower both held-out errors.
CV_DESCRIPTOR_GRID: tuple[dict, ...] = (
    {"cutoff_A": 4.0, "radial_scaling": None},
    {"cutoff_A": 5.0, "radial_scaling": (3.5, 5.0)},
    {"cutoff_A": 6.0, "radial_scaling": (2.5, 7.0)},
    {"cutoff_A": 6.0, "radial_scaling": (3.5, 5.0)},
)


def _version() -> str:
    from .. import __version__

    return __version__


# --------------------------------------------------------------------------- metrics


# --------------------------------------------------------------------------- ridge helpers


def _blas_limit(size: int):
    """One BLAS thread for small problems.

    Multithreaded OpenBLAS on a loaded machine (more runnable processes than cores) can be
    ~100× slower than one thread for the few-hundred-square matrices of a typical fit; large
    problems keep the default thread pool. Uses threadpoolctl when available.
    """
    import contextlib

    if size > 3000:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _ridge_weights_path(X: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge weights for every alpha, (p, n_alpha), from one eigendecomposition of the smaller Gram matrix."""
    with _blas_limit(min(X.shape)):
        return _ridge_weights_path_impl(X, y, alphas)


def _ridge_weights_path_impl(X: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    n, p = X.shape
    if p == 0 or n == 0:
        return np.zeros((p, len(alphas)))
    # eigendecomposition of the smaller Gram matrix (much cheaper than an SVD);
    # directions with numerically zero eigenvalue are dropped (pseudo-inverse limit)
    if n <= p:
        lam, U = np.linalg.eigh(X @ X.T)
        keep = lam > lam.max() * 1e-12
        lam, U = lam[keep], U[:, keep]
        Uy = U.T @ y
        return X.T @ (U @ (Uy[:, None] / (lam[:, None] + alphas[None, :])))
    lam, V = np.linalg.eigh(X.T @ X)
    keep = lam > lam.max() * 1e-12
    lam, V = lam[keep], V[:, keep]
    Vy = V.T @ (X.T @ y)
    return V @ (Vy[:, None] / (lam[:, None] + alphas[None, :]))


def _count_basis(N: np.ndarray) -> np.ndarray:
    """Orthonormal basis (n, r) of the column space of the atom-count matrix N (n, S)."""
    if N.shape[1] == 0:
        return np.zeros((N.shape[0], 0))
    U, s, _ = np.linalg.svd(N, full_matrices=False)
    r = int(np.sum(s > s.max() * 1e-10)) if s.size else 0
    return U[:, :r]


def _fit_iso(N: np.ndarray, X: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """λ=0 ridge with unpenalised per-species intercepts: y ≈ N b + X w.  Returns (W (p, nα), B (S, nα))."""
    Q = _count_basis(N)
    Xp = X - Q @ (Q.T @ X)
    yp = y - Q @ (Q.T @ y)
    W = _ridge_weights_path(Xp, yp, alphas)
    R = y[:, None] - X @ W
    B = np.linalg.lstsq(N, R, rcond=None)[0] if N.shape[1] else np.zeros((0, len(alphas)))
    return W, B


# --------------------------------------------------------------------------- the model


class PolarizabilityModel:
    """Symmetry-adapted (λ-SOAP) linear ridge model of the cell polarizability tensor (Å³).

    Parameters
    ----------
    cutoff_A, max_radial, max_angular, atomic_gaussian_width, cutoff_smoothing_A, radial_scaling :
        featomic spherical-expansion hyperparameters (see :class:`SoapSettings`; ``radial_scaling``
        ``(r0_A, m)`` down-weights neighbours as 1 / (1 + (r/r0)^m), None = off).
    alphas : ridge regularisation grid; the value used for each of λ = 0 and λ = 2 is picked
        separately by ``cv_folds``-fold cross-validation on the training frames.
    cv_folds : number of CV folds (folds split frames, never the 5 components of one frame).
    descriptor_grid : optional short list of dicts overriding the SOAP settings above
        (e.g. ``[{"cutoff_A": 3.5}, {"cutoff_A": 5.0, "max_radial": 6}]``); CV then also picks
        the setting with the lowest mean of the iso and aniso CV relative RMSE.
    baseline : ``None`` or an object with ``predict(list[Atoms]) -> (n, 3, 3)`` (Å³) for Δ-learning:
        the model is fitted to α − baseline and predicts baseline + correction. If it has
        ``to_dict()`` its description is saved with the model.
    fit_baseline : call ``baseline.fit(frames)`` on the training frames before fitting (default False:
        the baseline is used as given).
    seed : seed of the CV fold shuffling.
    batch_size : structures per featomic call.
    """

    def __init__(
        self,
        cutoff_A: float = 4.0,
        max_radial: int = 4,
        max_angular: int = 3,
        atomic_gaussian_width: float = 0.3,
        cutoff_smoothing_A: float = 0.5,
        radial_scaling: tuple[float, float] | None = None,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        cv_folds: int = 5,
        descriptor_grid: Sequence[dict] | None = None,
        baseline: Any = None,
        fit_baseline: bool = False,
        seed: int = 0,
        batch_size: int = 64,
    ) -> None:
        self.cutoff_A = cutoff_A
        self.max_radial = max_radial
        self.max_angular = max_angular
        self.atomic_gaussian_width = atomic_gaussian_width
        self.cutoff_smoothing_A = cutoff_smoothing_A
        self.radial_scaling = radial_scaling
        self.alphas = alphas
        self.cv_folds = cv_folds
        self.descriptor_grid = descriptor_grid
        self.baseline = baseline
        self.fit_baseline = fit_baseline
        self.seed = seed
        self.batch_size = batch_size
        self._fitted = False
        self.path_: str = ""

    # ------------------------------------------------------------ sklearn habit
    _PARAMS = (
        "cutoff_A",
        "max_radial",
        "max_angular",
        "atomic_gaussian_width",
        "cutoff_smoothing_A",
        "radial_scaling",
        "alphas",
        "cv_folds",
        "descriptor_grid",
        "baseline",
        "fit_baseline",
        "seed",
        "batch_size",
    )

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> PolarizabilityModel:
        for k, v in params.items():
            if k not in self._PARAMS:
                raise InputError(f"PolarizabilityModel has no parameter '{k}'; valid ones are {', '.join(self._PARAMS)}.")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        if self._fitted:  # the descriptor actually used (CV may have chosen it from descriptor_grid)
            return f"PolarizabilityModel({self.settings_}; fitted, species={self.species_}, id={self.model_id})"
        return (
            f"PolarizabilityModel(cutoff_A={self.cutoff_A}, max_radial={self.max_radial}, "
            f"max_angular={self.max_angular}, atomic_gaussian_width={self.atomic_gaussian_width}, "
            f"radial_scaling={self.radial_scaling}; unfitted)"
        )

    # ------------------------------------------------------------ descriptor
    def _settings(self, overrides: dict | None = None) -> SoapSettings:
        base = {
            "cutoff_A": float(self.cutoff_A),
            "max_radial": int(self.max_radial),
            "max_angular": int(self.max_angular),
            "atomic_gaussian_width": float(self.atomic_gaussian_width),
            "cutoff_smoothing_A": float(self.cutoff_smoothing_A),
            "radial_scaling": self.radial_scaling,
        }
        if overrides:
            unknown = set(overrides) - set(base)
            if unknown:
                raise InputError(
                    f"descriptor_grid entry {overrides!r} has unknown keys {sorted(unknown)}; use {sorted(base)}."
                )
            base.update(overrides)
        return SoapSettings(**base)

    @property
    def descriptor(self) -> LambdaSoap:
        """The fitted model's featomic calculator wrapper (created lazily)."""
        self._require_fitted()
        if getattr(self, "_descriptor", None) is None:
            self._descriptor = LambdaSoap(self.species_, self.settings_)
        return self._descriptor

    def featurize(self, frames: Sequence[Atoms]) -> StructureFeatures:
        """λ-SOAP features of ``frames`` with the fitted settings (reuse them in ``fit``/``predict``)."""
        return self.descriptor.compute(list(frames), batch_size=self.batch_size)

    # ------------------------------------------------------------ fit
    def fit(self, frames: Sequence[Atoms], features: StructureFeatures | None = None) -> PolarizabilityModel:
        """Fit to labelled frames (``info["polarizability"]``, Å³).

        ``features`` may be precomputed :class:`StructureFeatures` of exactly these frames
        (e.g. a slice of a larger set computed once); they must carry the model's settings.
        """
        frames = list(frames)
        if not frames:
            raise InputError("fit() got no frames; pass a list of labelled ase.Atoms (info['polarizability'] in Å³).")
        Y = np.array([get_alpha(a, f"training frame {k}") for k, a in enumerate(frames)])
        Y = 0.5 * (Y + Y.transpose(0, 2, 1))
        labels_hash = hash_frames(frames, Y)
        baseline_desc = None
        if self.baseline is not None:
            if not callable(getattr(self.baseline, "predict", None)):
                raise InputError(
                    f"baseline {type(self.baseline).__name__} has no predict(frames) method; pass an object whose "
                    "predict(list[Atoms]) returns (n, 3, 3) tensors in Å³, or baseline=None."
                )
            if self.fit_baseline and callable(getattr(self.baseline, "fit", None)):
                self.baseline.fit(frames)
            Y = Y - self._baseline_predict(frames)
            baseline_desc = describe_baseline(self.baseline)
        species = species_of(frames)
        grid = list(self.descriptor_grid) if self.descriptor_grid else [None]
        if features is not None and len(grid) > 1:
            raise InputError("fit(features=...) cannot be combined with descriptor_grid; drop one of them.")
        alphas = np.asarray(sorted({float(a) for a in np.atleast_1d(self.alphas)}), dtype=float)
        if alphas.size == 0 or (alphas < 0).any() or not np.isfinite(alphas).all():
            raise InputError(f"alphas={self.alphas!r} must be a non-empty list of non-negative finite numbers.")

        t0 = time.perf_counter()
        best = None
        grid_results = []
        for overrides in grid:
            settings = self._settings(overrides)
            if features is not None:
                if features.settings != settings or list(features.species) != species or len(features) != len(frames):
                    raise InputError(
                        "fit(features=...) were computed with other settings, species or frames; compute them "
                        "with the same SoapSettings and species (LambdaSoap(species, settings).compute(frames))."
                    )
                feats = features
            else:
                feats = LambdaSoap(species, settings).compute(frames, batch_size=self.batch_size)
            state = self._fit_features(feats, Y, alphas)
            score = 0.5 * (state["cv"]["rel_rmse_iso"] + state["cv"]["rel_rmse_aniso"])
            grid_results.append({"settings": settings.to_dict(), "cv_score": score, **state["cv"]})
            if best is None or (np.isfinite(score) and not score >= best[0]):
                best = (score, settings, state)
        assert best is not None
        _, settings, state = best
        self.settings_ = settings
        self.species_ = species
        self._descriptor = None
        self.scale0_ = state["scale0"]
        self.scale2_ = state["scale2"]
        self.w0_ = state["w0"]
        self.b0_ = state["b0"]
        self.w2_ = state["w2"]
        self.alpha0_ = state["alpha0"]
        self.alpha2_ = state["alpha2"]
        self.cv_results_ = {**state["cv"], "grid": grid_results if len(grid) > 1 else []}
        self.training_ = {
            "n_train": len(frames),
            "species": species,
            "n_atoms_min": int(min(len(a) for a in frames)),
            "n_atoms_max": int(max(len(a) for a in frames)),
            "data_hash": labels_hash,
            "fit_seconds": round(time.perf_counter() - t0, 3),
        }
        self.baseline_description_ = baseline_desc
        self._baseline_missing = False
        self._fitted = True
        self._model_id = None
        return self

    def _fit_features(self, feats: StructureFeatures, Y: np.ndarray, alphas: np.ndarray) -> dict:
        """Scale blocks, cross-validate alpha per λ, refit on all frames."""
        n, S = feats.counts.shape
        y0 = np.trace(Y, axis1=1, axis2=2) / 3.0
        y2 = cartesian_to_spherical_l2(Y)
        N = feats.counts
        # per-species block scales: rms of the count-projected λ=0 block / rms of the λ=2 block
        Q = _count_basis(N)
        scale0 = np.ones(S)
        scale2 = np.ones(S)
        for a in range(S):
            x = feats.x0[:, a, :]
            xp = x - Q @ (Q.T @ x)
            r = math.sqrt(float(np.mean(xp**2))) if xp.size else 0.0
            r_full = math.sqrt(float(np.mean(x**2))) if x.size else 0.0
            # a species whose block lies in the span of the counts (e.g. it occurs in one training
            # frame) leaves only round-off after the projection: scaling by that would multiply its
            # unprojected features by ~1e16 at prediction time
            if r <= 1e-8 * r_full:
                r = r_full
            scale0[a] = 1.0 / r if r > 0 else 1.0
            r2 = math.sqrt(float(np.mean(feats.x2[:, a] ** 2)))
            scale2[a] = 1.0 / r2 if r2 > 0 else 1.0
        X0 = (feats.x0 * scale0[None, :, None]).reshape(n, -1)
        X2 = (feats.x2 * scale2[None, :, None, None]).transpose(0, 2, 1, 3).reshape(n, 5, -1)

        k = int(min(self.cv_folds, n))
        if len(alphas) == 1 or k < 2 or n < 3:
            i0 = i2 = len(alphas) // 2
            mse0 = mse2 = np.full(len(alphas), np.nan)
            cv_rel0 = cv_rel2 = float("nan")
            k_used = 0
        else:
            rng = np.random.default_rng(self.seed)
            folds = np.array_split(rng.permutation(n), k)
            sse0 = np.zeros(len(alphas))
            sse2 = np.zeros(len(alphas))
            for val in folds:
                tr = np.setdiff1d(np.arange(n), val)
                W, B = _fit_iso(N[tr], X0[tr], y0[tr], alphas)
                p0 = X0[val] @ W + N[val] @ B
                sse0 += ((p0 - y0[val, None]) ** 2).sum(axis=0)
                W2 = _ridge_weights_path(X2[tr].reshape(-1, X2.shape[2]), y2[tr].reshape(-1), alphas)
                p2 = (X2[val].reshape(-1, X2.shape[2]) @ W2).reshape(len(val), 5, -1)
                sse2 += ((p2 - y2[val, :, None]) ** 2).sum(axis=(0, 1))
            mse0 = sse0 / n
            mse2 = sse2 / (5 * n)
            i0 = int(np.nanargmin(mse0))
            i2 = int(np.nanargmin(mse2))
            std0 = float(np.std(y0))
            std2 = float(np.sqrt(np.mean((y2 - y2.mean(axis=0)) ** 2)))
            cv_rel0 = math.sqrt(mse0[i0]) / std0 if std0 > 0 else float("nan")
            cv_rel2 = math.sqrt(mse2[i2]) / std2 if std2 > 0 else float("nan")
            k_used = k
        a0, a2 = alphas[i0], alphas[i2]
        W, B = _fit_iso(N, X0, y0, np.array([a0]))
        W2 = _ridge_weights_path(X2.reshape(-1, X2.shape[2]), y2.reshape(-1), np.array([a2]))
        return {
            "scale0": scale0,
            "scale2": scale2,
            "w0": W[:, 0],
            "b0": B[:, 0],
            "w2": W2[:, 0],
            "alpha0": float(a0),
            "alpha2": float(a2),
            "cv": {
                "folds": k_used,
                "alphas": alphas.tolist(),
                "mse_iso": [float(v) for v in mse0],
                "mse_aniso_spherical": [float(v) for v in mse2],
                "alpha_iso": float(a0),
                "alpha_aniso": float(a2),
                "rel_rmse_iso": float(cv_rel0),
                "rel_rmse_aniso": float(cv_rel2),
            },
        }

    # ------------------------------------------------------------ predict
    def _require_fitted(self) -> None:
        if not getattr(self, "_fitted", False):
            raise InputError("This PolarizabilityModel is not fitted; call fit(frames) or PolarizabilityModel.load(path) first.")

    def _baseline_predict(self, frames: list[Atoms]) -> np.ndarray:
        B = np.asarray(self.baseline.predict(frames), dtype=float)
        if B.shape != (len(frames), 3, 3):
            raise InputError(
                f"baseline {type(self.baseline).__name__}.predict returned shape {B.shape}; it must return "
                f"({len(frames)}, 3, 3) tensors in Å³."
            )
        if not np.isfinite(B).all():
            raise InputError(f"baseline {type(self.baseline).__name__}.predict returned NaN or infinite values; fix the baseline.")
        return 0.5 * (B + B.transpose(0, 2, 1))

    def predict_parts(self, frames: Sequence[Atoms], features: StructureFeatures | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The learned (non-baseline) parts: isotropic (n,) and spherical λ = 2 components (n, 5), Å³."""
        self._require_fitted()
        frames = list(frames)
        if features is None:
            features = self.featurize(frames)
        elif features.settings != self.settings_ or list(features.species) != self.species_:
            raise InputError("predict(features=...) were computed with other settings or species; use model.featurize(frames).")
        n = len(features)
        X0 = (features.x0 * self.scale0_[None, :, None]).reshape(n, -1)
        iso = X0 @ self.w0_ + features.counts @ self.b0_
        X2 = (features.x2 * self.scale2_[None, :, None, None]).transpose(0, 2, 1, 3).reshape(n, 5, -1)
        sph = X2 @ self.w2_
        return iso, sph

    def predict(self, frames: Sequence[Atoms], features: StructureFeatures | None = None) -> np.ndarray:
        """Cell polarizability tensors (n, 3, 3) in Å³ (symmetric), baseline included."""
        self._require_fitted()
        frames = list(frames)
        if self.baseline_description_ is not None and self.baseline is None:
            raise InputError(
                f"model {self.path_ or self.model_id} was trained on residuals of the baseline "
                f"{self.baseline_description_.get('class')}; pass it with PolarizabilityModel.load(path, baseline=...) "
                "or set model.baseline."
            )
        iso, sph = self.predict_parts(frames, features)
        alpha = iso[:, None, None] * np.eye(3) + spherical_l2_to_cartesian(sph)
        if self.baseline is not None and self.baseline_description_ is not None:
            alpha = alpha + self._baseline_predict(frames)
        return alpha

    def score(self, frames: Sequence[Atoms], features: StructureFeatures | None = None) -> dict[str, float]:
        """Errors on labelled frames; see :func:`polarizability_errors` for the definitions."""
        frames = list(frames)
        Y = np.array([get_alpha(a, f"test frame {k}") for k, a in enumerate(frames)])
        return polarizability_errors(self.predict(frames, features), Y)

    # ------------------------------------------------------------ identity & persistence
    def _header(self) -> dict:
        return {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION if self._uses_radial_scaling() else 1,
            "ionraman_version": _version(),
            "featomic_version": _featomic_version(),
            "hyperparameters": {
                "cutoff_A": self.cutoff_A,
                "max_radial": self.max_radial,
                "max_angular": self.max_angular,
                "atomic_gaussian_width": self.atomic_gaussian_width,
                "cutoff_smoothing_A": self.cutoff_smoothing_A,
                "radial_scaling": None if self.radial_scaling is None else [float(v) for v in self.radial_scaling],
                "alphas": [float(a) for a in np.atleast_1d(self.alphas)],
                "cv_folds": int(self.cv_folds),
                "descriptor_grid": list(self.descriptor_grid) if self.descriptor_grid else None,
                "seed": int(self.seed),
                "batch_size": int(self.batch_size),
                "fit_baseline": bool(self.fit_baseline),
            },
            "settings": self.settings_.to_dict(),
            "species": list(self.species_),
            "alpha_iso": self.alpha0_,
            "alpha_aniso": self.alpha2_,
            "cv": {k: v for k, v in self.cv_results_.items()},
            "training": dict(self.training_),
            "baseline": self.baseline_description_,
            "units": "Å³ (α/4πε₀)",
            "spherical_convention": "featomic real Y_2^mu, mu=-2..2 <-> (xy, yz, 2zz-xx-yy, xz, xx-yy)/norm",
        }

    def _uses_radial_scaling(self) -> bool:
        grid = self.descriptor_grid or ()
        return (self.radial_scaling is not None or self.settings_.radial_scaling is not None
                or any(g.get("radial_scaling") is not None for g in grid))

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "scale0": np.asarray(self.scale0_, dtype=np.float64),
            "scale2": np.asarray(self.scale2_, dtype=np.float64),
            "w0": np.asarray(self.w0_, dtype=np.float64),
            "b0": np.asarray(self.b0_, dtype=np.float64),
            "w2": np.asarray(self.w2_, dtype=np.float64),
        }

    @property
    def model_id(self) -> str:
        """16-hex-digit SHA-256 of the settings, species and weights (identifies what the model predicts)."""
        self._require_fitted()
        if getattr(self, "_model_id", None) is None:
            h = hashlib.sha256()
            h.update(json.dumps({"settings": self.settings_.to_dict(), "species": self.species_,
                                 "baseline": self.baseline_description_}, sort_keys=True, default=str).encode())
            for k, v in sorted(self._arrays().items()):
                h.update(k.encode())
                h.update(np.ascontiguousarray(v).tobytes())
            self._model_id = h.hexdigest()[:16]
        return self._model_id

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted model to one ``.npz`` file (JSON header + float64 arrays, no pickle), atomically."""
        self._require_fitted()
        p = Path(path)
        header = self._header()
        header["model_id"] = self.model_id
        buf = io.BytesIO()
        np.savez(buf, header=np.array(json.dumps(header, default=_json_default)), **self._arrays())
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, p)
        self.path_ = str(p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike, baseline: Any = None) -> PolarizabilityModel:
        """Read a model written by :meth:`save`.

        ``baseline``: the Δ-learning baseline object to attach (required when the model was
        trained with one that cannot be rebuilt from its saved description).
        """
        p = Path(path)
        if not p.exists():
            raise InputError(f"{p}: no such file; give a model written by PolarizabilityModel.save().")
        try:
            with np.load(p, allow_pickle=False) as z:
                if "header" not in z.files:
                    raise InputError(f"{p}: has no 'header' entry, so it is not an ionraman polarizability model; give a file written by PolarizabilityModel.save().")
                header = json.loads(str(z["header"][()]))
                arrays = {k: z[k] for k in z.files if k != "header"}
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{p}: could not be read as a saved polarizability model ({type(exc).__name__}: {exc}); give a file written by PolarizabilityModel.save().") from None
        if header.get("format") != _FORMAT_NAME:
            raise InputError(f"{p}: header format is {header.get('format')!r}, not {_FORMAT_NAME!r}; give a file written by PolarizabilityModel.save().")
        version = header.get("format_version")
        if version not in _READABLE_VERSIONS:
            raise InputError(
                f"{p}: format_version {version!r} is not supported by ionraman {_version()} (it reads versions "
                f"{', '.join(map(str, _READABLE_VERSIONS))}); refit the model with this version or use the ionraman release that wrote it."
            )
        missing = {"scale0", "scale2", "w0", "b0", "w2"} - set(arrays)
        if missing:
            raise InputError(f"{p}: the arrays {sorted(missing)} are missing; the file is truncated or corrupt, save the model again.")
        hp = dict(header["hyperparameters"])
        model = cls(
            cutoff_A=hp["cutoff_A"],
            max_radial=hp["max_radial"],
            max_angular=hp["max_angular"],
            atomic_gaussian_width=hp["atomic_gaussian_width"],
            cutoff_smoothing_A=hp["cutoff_smoothing_A"],
            radial_scaling=hp.get("radial_scaling"),
            alphas=hp["alphas"],
            cv_folds=hp["cv_folds"],
            descriptor_grid=hp.get("descriptor_grid"),
            seed=hp.get("seed", 0),
            batch_size=hp.get("batch_size", 64),
            fit_baseline=hp.get("fit_baseline", False),
        )
        model.settings_ = SoapSettings(**header["settings"])
        model.species_ = list(header["species"])
        model.scale0_ = arrays["scale0"]
        model.scale2_ = arrays["scale2"]
        model.w0_ = arrays["w0"]
        model.b0_ = arrays["b0"]
        model.w2_ = arrays["w2"]
        model.alpha0_ = header["alpha_iso"]
        model.alpha2_ = header["alpha_aniso"]
        model.cv_results_ = header.get("cv", {})
        model.training_ = header.get("training", {})
        model.baseline_description_ = header.get("baseline")
        model._descriptor = None
        model._fitted = True
        model._model_id = None
        desc = model.baseline_description_
        if desc is not None:
            model.baseline = baseline if baseline is not None else rebuild_baseline(desc)
        elif baseline is not None:
            raise InputError(f"{p}: the model was trained without a baseline; load it without baseline=.")
        S = len(model.species_)
        if model.scale0_.shape != (S,) or model.b0_.shape != (S,):
            raise InputError(f"{p}: weight shapes do not match its {S} species; the file is corrupt, save the model again.")
        if header.get("model_id") and header["model_id"] != model.model_id:
            raise InputError(f"{p}: stored model_id {header['model_id']} does not match its weights ({model.model_id}); the file is corrupt.")
        model.path_ = str(p)
        return model


def _featomic_version() -> str:
    try:
        import featomic

        return str(featomic.__version__)
    except Exception:  # pragma: no cover
        return "unknown"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def describe_baseline(baseline: Any) -> dict:
    """JSON-able identity of a Δ-learning baseline: class path, and ``to_dict()`` if it has one."""
    cls = type(baseline)
    desc: dict[str, Any] = {"class": f"{cls.__module__}:{cls.__qualname__}", "params": None, "repr": repr(baseline)[:500]}
    to_dict = getattr(baseline, "to_dict", None)
    if callable(to_dict):
        try:
            desc["params"] = json.loads(json.dumps(to_dict(), default=_json_default))
        except Exception as exc:  # a broken to_dict must not prevent fitting
            desc["params_error"] = f"{type(exc).__name__}: {exc}"
    return desc


def rebuild_baseline(desc: dict) -> Any:
    """Rebuild a baseline from its description via ``Class.from_dict(params)``; None if impossible."""
    params = desc.get("params")
    target = desc.get("class", "")
    if params is None or ":" not in target:
        return None
    mod, _, qual = target.partition(":")
    try:
        obj: Any = importlib.import_module(mod)
        for part in qual.split("."):
            obj = getattr(obj, part)
        from_dict = getattr(obj, "from_dict", None)
        return from_dict(params) if callable(from_dict) else None
    except Exception:
        return None


# --------------------------------------------------------------------------- parity plot


def plot_parity(model: PolarizabilityModel, frames: Sequence[Atoms], path: str | os.PathLike) -> Path:
    """Predicted against reference α (Å³) of labelled ``frames``: isotropic tr(α)/3 and the 9
    Cartesian components of the traceless part, with their errors (:func:`polarizability_errors`)
    in the titles. Written atomically; the format follows the suffix (png, svg, pdf)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .._io import save_figure
    from .bond_model import split_iso_aniso

    ref = np.array([get_alpha(a) for a in frames])
    pred = np.asarray(model.predict(list(frames)))
    err = polarizability_errors(pred, ref)
    (ir, ar), (ip, ap) = (split_iso_aniso(0.5 * (t + t.transpose(0, 2, 1))) for t in (ref, pred))
    fig = Figure(figsize=(8.0, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, x, y, name, key in ((fig.add_subplot(1, 2, 1), ir, ip, "isotropic tr(α)/3", "iso"),
                                (fig.add_subplot(1, 2, 2), ar.ravel(), ap.ravel(), "traceless part, all components", "aniso")):
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.scatter(x, y, s=8, alpha=0.7)
        ax.set_xlabel("reference α (Å$^3$)")
        ax.set_ylabel("model α (Å$^3$)")
        ax.set_title(f"{name}: RMSE {err[f'rmse_{key}_A3']:.3g} Å$^3$, rel. {err[f'rel_rmse_{key}']:.2f}", fontsize=9)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- learning curve


def learning_curve(
    train_frames: Sequence[Atoms],
    test_frames: Sequence[Atoms],
    sizes: Sequence[int],
    model: PolarizabilityModel | None = None,
    **params: Any,
) -> list[dict]:
    """Fit on the first ``n`` of ``train_frames`` for each ``n`` in ``sizes``; score on ``test_frames``.

    Features are computed once (train and test together). Shuffle ``train_frames`` yourself if
    their order is not random. ``model`` (unfitted, used as a template) or ``params`` set the
    hyperparameters. Returns one dict per size with ``n_train``, the test errors of
    :func:`polarizability_errors`, the chosen ``alpha_iso``/``alpha_aniso`` and ``fit_seconds``.
    """
    train_frames = list(train_frames)
    test_frames = list(test_frames)
    template = model if model is not None else PolarizabilityModel(**params)
    if template.descriptor_grid:
        raise InputError("learning_curve needs one descriptor setting; drop descriptor_grid from the model.")
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1 or max(sizes) > len(train_frames):
        raise InputError(f"learning_curve sizes {sizes} must lie between 1 and the {len(train_frames)} training frames.")
    species = species_of(train_frames)
    settings = template._settings()
    desc = LambdaSoap(species, settings)
    feats_train = desc.compute(train_frames, batch_size=template.batch_size)
    feats_test = desc.compute(test_frames, batch_size=template.batch_size)
    out = []
    for n in sizes:
        m = PolarizabilityModel(**template.get_params())
        t0 = time.perf_counter()
        sub = train_frames[:n]
        if species_of(sub) != species:
            m.fit(sub)  # fewer species in the subset: features differ, compute them
        else:
            m.fit(sub, features=feats_train[:n])
        fit_s = time.perf_counter() - t0
        sc = m.score(test_frames, features=feats_test if m.species_ == species else None)
        out.append({"n_train": n, **sc, "alpha_iso": m.alpha0_, "alpha_aniso": m.alpha2_, "fit_seconds": fit_s})
    return out


# --------------------------------------------------------------------------- trajectories


@dataclass
class TrajectoryPolarizability:
    """α(t) predicted along a trajectory (and stored in the sidecar file ``path``).

    ``time_fs`` (n,), ``alpha_A3`` (n, 3, 3) Å³, ``frame_index`` (n,) indices in the H5MD file.
    """

    time_fs: np.ndarray
    alpha_A3: np.ndarray
    path: Path
    model_id: str
    frame_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    temperature_K: float = float("nan")
    metadata: dict = field(default_factory=dict)

    def to_series(self):
        """As an :class:`ionraman.raman.PolarizabilitySeries` (validated, symmetrised)."""
        from ..raman import PolarizabilitySeries

        meta = {"source": str(self.path), "model_id": self.model_id, **self.metadata}
        return PolarizabilitySeries(self.time_fs, self.alpha_A3, self.temperature_K, meta)


def sidecar_path(h5md_path: str | os.PathLike) -> Path:
    """``run.h5`` → ``run.alpha.h5`` (same folder)."""
    p = Path(h5md_path)
    return p.with_suffix(".alpha.h5") if p.suffix else p.with_name(p.name + ".alpha.h5")


def read_alpha_sidecar(path: str | os.PathLike) -> TrajectoryPolarizability:
    """Read a sidecar written by :func:`predict_trajectory`."""
    import h5py

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file; run predict_trajectory (or `ionraman` prediction) on the trajectory first.")
    try:
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") != _SIDECAR_FORMAT:
                raise InputError(f"{p}: not an ionraman polarizability sidecar (no format attribute); give a <traj>.alpha.h5 file.")
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            t = f["time_fs"][()]
            a = f["alpha_A3"][()]
            idx = f["frame_index"][()] if "frame_index" in f else np.arange(len(t))
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"{p}: not a readable HDF5 file ({exc}); delete it and predict again.") from None
    meta = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}
    return TrajectoryPolarizability(
        time_fs=t, alpha_A3=a, path=p, model_id=str(attrs.get("model_id", "")), frame_index=idx,
        temperature_K=float(attrs.get("temperature_K", float("nan"))), metadata=meta,
    )


def _sidecar_matches(f, expect: dict) -> bool:
    for k, v in expect.items():
        got = f.attrs.get(k)
        if isinstance(got, bytes):
            got = got.decode()
        if isinstance(got, np.generic):
            got = got.item()
        if got != v:
            return False
    return "alpha_A3" in f and "time_fs" in f and "frame_index" in f


def predict_trajectory(
    model: PolarizabilityModel,
    h5md_path: str | os.PathLike,
    batch_size: int = 64,
    every: int = 1,
    progress: bool = True,
    out_path: str | os.PathLike | None = None,
    resume: bool = True,
) -> TrajectoryPolarizability:
    """Predict α(t) for every ``every``-th frame of an H5MD trajectory, in batches.

    Results go to the sidecar ``<traj>.alpha.h5`` (or ``out_path``) with datasets ``time_fs``,
    ``alpha_A3`` (n, 3, 3) Å³ and ``frame_index``, and attributes ``model_id``, ``model_file``,
    ``ionraman_version``, ``source``, ``every``. Batches are appended to ``<sidecar>.partial``
    (flushed after each batch) and the file is renamed into place when complete. With
    ``resume``, a matching partial file (same model_id, source size and ``every``) is
    continued, and a complete sidecar for the same model is reused (or extended when the
    trajectory has grown). A progress bar (rich) shows frames/s unless ``progress=False``.
    """
    import h5py

    from ..trajectory import read_h5md, read_metadata

    if not isinstance(model, PolarizabilityModel):
        raise InputError(f"predict_trajectory needs a PolarizabilityModel, got {type(model).__name__}; load one with PolarizabilityModel.load(path).")
    model._require_fitted()
    if int(every) < 1 or int(batch_size) < 1:
        raise InputError(f"every={every} and batch_size={batch_size} must be positive integers.")
    every, batch_size = int(every), int(batch_size)
    src = Path(h5md_path)
    meta = read_metadata(src)  # raises InputError for missing/unreadable files
    with h5py.File(src, "r") as f:
        if "particles/all/position/value" not in f:
            raise InputError(f"{src}: no 'particles/all/position' group; this is not an H5MD trajectory from `ionraman md`.")
        n_total = int(f["particles/all/position/value"].shape[0])
        n_atoms = int(f["particles/all/position/value"].shape[1])
    if n_total == 0:
        raise InputError(f"{src}: the trajectory holds no frames; run (or resume) the MD first.")
    wanted = np.arange(0, n_total, every)
    out = Path(out_path) if out_path is not None else sidecar_path(src)
    partial = out.with_name(out.name + ".partial")
    temperature = float(meta.get("temperature_K", float("nan"))) if isinstance(meta.get("temperature_K", None), (int, float)) else float("nan")
    expect = {"format": _SIDECAR_FORMAT, "model_id": model.model_id, "every": every, "n_atoms": n_atoms, "source_name": src.name}

    # ---- reuse / resume
    n_done = 0
    if resume and out.exists():
        try:
            with h5py.File(out, "r") as f:
                ok = _sidecar_matches(f, expect)
                n_have = int(f["alpha_A3"].shape[0]) if ok else 0
        except OSError:
            ok, n_have = False, 0
        if ok and n_have >= len(wanted):
            res = read_alpha_sidecar(out)
            if n_have > len(wanted):  # trajectory was truncated: keep the matching prefix
                res.time_fs, res.alpha_A3, res.frame_index = res.time_fs[: len(wanted)], res.alpha_A3[: len(wanted)], res.frame_index[: len(wanted)]
            return res
        if ok:
            shutil.copyfile(out, partial)
    if not (resume and partial.exists()):
        _new_sidecar(partial, expect, model, src, temperature)
    try:
        with h5py.File(partial, "r") as f:
            ok = _sidecar_matches(f, expect)
            n_done = int(f["alpha_A3"].shape[0]) if ok else 0
            last_t = float(f["time_fs"][n_done - 1]) if ok and n_done else None
    except OSError:
        ok, n_done, last_t = False, 0, None
    if ok and n_done and n_done <= len(wanted):
        j = int(wanted[n_done - 1])
        t_src = read_h5md(src, start=j, stop=j + 1).time_fs[0]
        if not np.isclose(t_src, last_t, rtol=0, atol=1e-6):
            ok = False  # a different trajectory under the same name: start again
    if not ok or n_done > len(wanted):
        _new_sidecar(partial, expect, model, src, temperature)
        n_done = 0

    # ---- predict the remaining frames in batches
    todo = wanted[n_done:]
    bar = _Progress(len(wanted), n_done, progress, f"α(t) {src.name}")
    try:
        with h5py.File(partial, "a") as f:
            for s in range(0, len(todo), batch_size):
                idx = todo[s : s + batch_size]
                traj = read_h5md(src, start=int(idx[0]), stop=int(idx[-1]) + 1, step=every)
                frames = [traj.atoms(k, wrap=True) for k in range(traj.n_frames)]
                alpha = model.predict(frames)
                m = f["alpha_A3"].shape[0]
                for name, val in (("alpha_A3", alpha), ("time_fs", traj.time_fs), ("frame_index", idx)):
                    f[name].resize(m + len(idx), axis=0)
                    f[name][m:] = val
                f.flush()
                bar.advance(len(idx))
            f.attrs["complete"] = True
    finally:
        bar.close()
    os.replace(partial, out)
    return read_alpha_sidecar(out)


def _new_sidecar(path: Path, expect: dict, model: PolarizabilityModel, src: Path, temperature: float) -> None:
    import h5py

    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        for k, v in expect.items():
            f.attrs[k] = v
        f.attrs["model_file"] = str(model.path_ or "")
        f.attrs["model_settings"] = json.dumps(model.settings_.to_dict())
        f.attrs["model_species"] = json.dumps(model.species_)
        f.attrs["ionraman_version"] = _version()
        f.attrs["source"] = str(src.resolve())
        f.attrs["temperature_K"] = temperature
        f.attrs["units"] = "alpha_A3: Å³ (α/4πε₀); time_fs: fs"
        f.attrs["complete"] = False
        f.create_dataset("alpha_A3", shape=(0, 3, 3), maxshape=(None, 3, 3), dtype=np.float64, chunks=(256, 3, 3))
        f.create_dataset("time_fs", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(256,))
        f.create_dataset("frame_index", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(256,))
    os.replace(tmp, path)


class _Progress:
    """A rich progress bar with frames/s, or nothing."""

    def __init__(self, total: int, done: int, enabled: bool, label: str) -> None:
        self._p = None
        if not enabled:
            return
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        except ImportError:  # pragma: no cover
            return
        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f} frames/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._p.start()
        self._task = self._p.add_task(label, total=total, completed=done, rate=0.0)
        self._t0 = time.perf_counter()
        self._n = 0

    def advance(self, k: int) -> None:
        if self._p is None:
            return
        self._n += k
        rate = self._n / max(time.perf_counter() - self._t0, 1e-9)
        self._p.update(self._task, advance=k, rate=rate)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
