"""α(t) along a trajectory: the sidecar file ``<trajectory>.alpha.h5`` and how to get one.

The sidecar holds ``time_fs`` (n,) and ``alpha_A3`` (n, 3, 3) with the model's
identity as attributes; it is written by
:func:`ionraman.polarizability.model.predict_trajectory`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["sidecar_path", "read_alpha_sidecar", "load_alpha_series"]


def sidecar_path(trajectory: str | Path) -> Path:
    """Where α(t) predicted for an H5MD trajectory is stored."""
    p = Path(trajectory)
    return p.with_name(p.name + ".alpha.h5") if not p.name.endswith(".alpha.h5") else p


def read_alpha_sidecar(path: str | Path, temperature_K: float | None = None) -> Any:
    """Read a ``.alpha.h5`` file into a :class:`ionraman.raman.PolarizabilitySeries`."""
    from .model import read_alpha_sidecar as _read

    series = _read(path).to_series()
    if temperature_K is not None:
        from dataclasses import replace

        series = replace(series, temperature_K=float(temperature_K))
    return series


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
