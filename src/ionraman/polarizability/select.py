"""Snapshot selection for labelling: farthest-point sampling (FPS) in SOAP space.

The descriptor of a structure is the λ = 0 SOAP power spectrum (featomic),
summed per centre species, divided by the total number of atoms (intensive,
composition-aware) and normalised to unit length
(:func:`ionraman.polarizability.descriptors.structure_soap`). Distances are
Euclidean in that space.

FPS: the first point is the structure farthest from the mean descriptor
(``start="farthest"``, the default, deterministic) or one drawn at random with
``seed`` (``start="random"``); every next point is the structure whose distance
to the already selected set is largest. Ties are broken by the lowest index.
To extend a set that is already labelled, pass it as ``existing``: the picks then
start from it (the first pick is the structure whose nearest labelled structure is
farthest away, and the start rule is not used), so new labels go where the old ones are sparse.
Greedy FPS is a 2-approximation of the k-centre problem, so outliers are
picked first — exactly the configurations a model trained on the bulk of a
trajectory would extrapolate to.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from ..errors import InputError
from .descriptors import SoapSettings, species_of, structure_soap

__all__ = ["farthest_point_sampling", "select_from_trajectories", "frame_descriptors"]

log = logging.getLogger(__name__)


def frame_descriptors(
    frames: Sequence[Atoms],
    descriptor: Any = None,
) -> np.ndarray:
    """(n, d) descriptor matrix of ``frames``.

    ``descriptor``: None (default SOAP, :func:`structure_soap`), a :class:`SoapSettings`,
    a callable ``frames -> (n, d)``, or a precomputed (n, d) array.
    """
    frames = list(frames)
    if descriptor is None or isinstance(descriptor, SoapSettings):
        return structure_soap(frames, species_of(frames), descriptor)
    if callable(descriptor):
        d = np.asarray(descriptor(frames), dtype=float)
    else:
        d = np.asarray(descriptor, dtype=float)
    if d.ndim == 1:
        d = d[:, None]
    if d.ndim != 2 or d.shape[0] != len(frames):
        raise InputError(
            f"descriptor gave shape {d.shape} for {len(frames)} structures; it must be an (n_structures, n_features) array."
        )
    if not np.isfinite(d).all():
        raise InputError("descriptor contains NaN or infinite values; check the structures (overlapping atoms?) or the descriptor.")
    return d


def farthest_point_sampling(
    frames: Sequence[Atoms] | np.ndarray,
    n: int,
    seed: int = 0,
    descriptor: Any = None,
    start: str = "farthest",
    return_distances: bool = False,
    existing: Sequence[Atoms] | np.ndarray | None = None,
) -> list[int] | tuple[list[int], np.ndarray]:
    """Indices of ``n`` structures chosen by farthest-point sampling, in the order picked.

    ``frames`` is a list of ase.Atoms (or directly an (N, d) descriptor array). See the module
    docstring for the descriptor and the start rule. ``existing``: structures already labelled
    (ase.Atoms, or an (M, d) array when ``frames`` is an array); every pick is then the
    structure farthest from them and from the earlier picks. With ``return_distances`` also
    returns the distance of each picked point to the set before it (without ``existing``, the
    first is its distance to the mean).
    """
    old = None
    if isinstance(frames, np.ndarray):
        X = frames_to_array(frames)
        if existing is not None:
            if not isinstance(existing, np.ndarray):
                raise InputError("farthest_point_sampling got a descriptor array for frames but structures for existing; "
                                 "pass both as arrays or both as structures.")
            old = frames_to_array(existing)
            if old.shape[1] != X.shape[1]:
                raise InputError(f"existing descriptors have {old.shape[1]} features, frames {X.shape[1]}; "
                                 "compute both with the same descriptor.")
    else:
        frames = list(frames)
        if not frames:
            raise InputError("farthest_point_sampling got no structures; pass a non-empty list.")
        old_frames = [] if existing is None else list(existing)
        # one descriptor call over both sets, so they share species and settings
        X = frame_descriptors(frames + old_frames, descriptor)
        if old_frames:
            X, old = X[: len(frames)], X[len(frames) :]
    N = X.shape[0]
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise InputError(f"n={n!r} is not an integer; give the number of structures to select.") from None
    if n < 1:
        raise InputError(f"n={n} must be at least 1.")
    if n > N:
        raise InputError(f"n={n} is larger than the pool of {N} structures; ask for at most {N} or add more frames.")
    picked: list[int] = []
    dists: list[float] = []
    if old is not None and len(old):
        from scipy.spatial.distance import cdist  # (N, M) memory, not (N, M, d)

        dmin = cdist(X, old).min(axis=1)
    else:
        if start == "farthest":
            d_mean = np.linalg.norm(X - X.mean(axis=0), axis=1)
            first = int(np.argmax(d_mean))
            first_d = float(d_mean[first])
        elif start == "random":
            first = int(np.random.default_rng(seed).integers(N))
            first_d = float(np.linalg.norm(X[first] - X.mean(axis=0)))
        else:
            raise InputError(f"start={start!r} is not 'farthest' or 'random'.")
        picked.append(first)
        dists.append(first_d)
        dmin = np.linalg.norm(X - X[first], axis=1)
        dmin[first] = -np.inf
    while len(picked) < n:
        j = int(np.argmax(dmin))  # lowest index among ties
        picked.append(j)
        dists.append(float(dmin[j]))
        dmin = np.minimum(dmin, np.linalg.norm(X - X[j], axis=1))
        dmin[picked] = -np.inf
    return (picked, np.array(dists)) if return_distances else picked


def frames_to_array(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] == 0:
        raise InputError(f"a descriptor array must have shape (n_structures, n_features), got {X.shape}.")
    return X


def select_from_trajectories(
    paths: Sequence[str | os.PathLike],
    n: int,
    every: int = 10,
    seed: int = 0,
    descriptor: Any = None,
    start: str = "farthest",
    skip_fs: float = 0.0,
    intact_only: bool = True,
    existing: Sequence[Atoms] | None = None,
) -> list[Atoms]:
    """Pick ``n`` diverse snapshots from several H5MD trajectories (e.g. different temperatures).

    Every ``every``-th frame of each file (after the first ``skip_fs`` fs of equilibration) is a
    candidate; frames are wrapped into the cell. With ``intact_only`` (default), a file whose
    integrity monitor recorded a broken framework only offers the frames before the failure
    (:func:`ionraman.integrity.production_failure`): labels of a force field's broken chemistry (e.g. CHGNet's Na3PS4 at 900 K,
    a P with three S) would teach the polarizability model configurations the material never has. Each returned Atoms records in ``info``:
    ``source`` (path), ``frame`` (index in that file), ``time_fs`` and ``temperature_K``
    (from the file's metadata, NaN if absent), plus ``fps_rank`` and ``fps_distance``.
    The result is in FPS order (most informative first). ``existing`` (structures already
    labelled, e.g. a shipped dataset) makes the picks extend that set instead of starting anew.
    """
    from ..integrity import production_failure
    from ..trajectory import read_h5md

    paths = [str(p) for p in paths]
    if not paths:
        raise InputError("select_from_trajectories got no trajectory paths; pass one or more H5MD files.")
    if int(every) < 1:
        raise InputError(f"every={every} must be a positive integer (take every k-th frame).")
    pool: list[Atoms] = []
    dropped: dict[str, int] = {}
    for p in paths:
        traj = read_h5md(p, step=int(every))
        t_stop = None
        # only a run its monitor flagged is read again in full: the recheck needs every stored frame
        if intact_only and not (traj.metadata.get("integrity") or {}).get("ok", True):
            fail = production_failure(read_h5md(p))
            t_stop = None if fail is None else 1000.0 * fail.time_ps
        for k in range(traj.n_frames):
            t = float(traj.time_fs[k])
            if t < skip_fs:
                continue
            if t_stop is not None and t >= t_stop:
                dropped[p] = dropped.get(p, 0) + 1
                continue
            a = traj.atoms(k, wrap=True)
            a.info["source"] = p
            a.info["frame"] = int(k * int(every))
            a.info["time_fs"] = t
            a.info["temperature_K"] = float(traj.temperature_K)
            pool.append(a)
    for p, k in dropped.items():
        log.warning("%s: %d frame(s) after the framework broke are not candidates", p, k)
    if not pool:
        raise InputError(f"no frames left after skip_fs={skip_fs} fs and before any framework failure in {', '.join(paths)}; "
                         "lower skip_fs, run longer or at a temperature where the force field keeps the framework intact.")
    if int(n) > len(pool):
        raise InputError(
            f"n={n} is larger than the {len(pool)} candidate frames (every={every}); lower every or n, or add trajectories."
        )
    if existing is not None:
        existing = list(existing)
        _check_labelled_species(pool, existing)
    idx, dist = farthest_point_sampling(pool, n, seed=seed, descriptor=descriptor, start=start, return_distances=True,
                                        existing=existing or None)
    out = []
    for rank, (i, d) in enumerate(zip(idx, dist)):
        a = pool[i]
        a.info["fps_rank"] = rank
        a.info["fps_distance"] = float(d)
        out.append(a)
    return out


def _check_labelled_species(pool: list[Atoms], existing: list[Atoms]) -> None:
    # the descriptor is per atom, so different cells are comparable; different compositions
    # are too, but a species only the labelled set has would be a sign of the wrong file
    extra = sorted(set(species_of(existing)) - set(species_of(pool)))
    if extra:
        raise InputError(
            f"the labelled structures contain {', '.join(extra)}, which no trajectory frame has; "
            "pass the labelled file of the same material."
        )
