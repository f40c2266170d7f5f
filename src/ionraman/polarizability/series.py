"""α(t) along a trajectory: the sidecar file ``<trajectory>.alpha.h5`` and how to get one.

The sidecar holds ``time_fs`` (n,) and ``alpha_A3`` (n, 3, 3) with the model's
identity as attributes; it is written by
:func:`ionraman.polarizability.model.predict_trajectory`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["sidecar_path", "read_alpha_sidecar", "load_alpha_series"]


def sidecar_path(trajectory: str | Path) -> Path:
    """Where α(t) predicted for an H5MD trajectory is stored."""
    p = Path(trajectory)
    return p.with_name(p.name + ".alpha.h5") if not p.name.endswith(".alpha.h5") else p


def read_alpha_sidecar(path: str | Path, temperature_K: float | None = None) -> Any:
    """Read a ``.alpha.h5`` file into a :class:`ionraman.raman.PolarizabilitySeries`."""
    import h5py

    from ..raman import PolarizabilitySeries

    p = Path(path)
    try:
        with h5py.File(p, "r") as f:
            if "alpha_A3" not in f or "time_fs" not in f:
                raise InputError(f"{p}: no 'alpha_A3'/'time_fs' datasets; this is not an α(t) file from `ionraman predict`.")
            alpha = f["alpha_A3"][()]
            t = f["time_fs"][()]
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise InputError(f"{p}: not a readable HDF5 file ({exc}).") from None
    meta: dict[str, Any] = {}
    for k, v in attrs.items():
        if isinstance(v, str) and v[:1] in "[{":
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        meta[k] = v.item() if isinstance(v, np.generic) else v
    T = temperature_K if temperature_K is not None else float(meta.get("temperature_K", float("nan")))
    return PolarizabilitySeries(time_fs=np.asarray(t, dtype=float), alpha_A3=np.asarray(alpha, dtype=float), temperature_K=T, metadata=meta)


def load_alpha_series(source: str | Path, model: str | Path | None = None, temperature_K: float | None = None) -> Any:
    """α(t) for an H5MD trajectory (predicted with ``model``, or its stored sidecar) or a sidecar file."""
    src = Path(source)
    if src.name.endswith(".alpha.h5"):
        return read_alpha_sidecar(src, temperature_K)
    from ..trajectory import read_metadata

    traj_T = read_metadata(src).get("temperature_K")
    T = temperature_K if temperature_K is not None else (float(traj_T) if traj_T is not None else None)
    if model is not None:
        from .model import PolarizabilityModel, predict_trajectory

        predict_trajectory(PolarizabilityModel.load(model), src, progress=True)
        return read_alpha_sidecar(sidecar_path(src), T)
    side = sidecar_path(src)
    if side.exists():
        return read_alpha_sidecar(side, T)
    raise InputError(
        f"{src}: no stored α(t) ({side.name} is missing); pass --model MODEL to predict it, "
        "or run `ionraman predict` first."
    )
