"""Which polarizability model to use: a spec string in, a model with ``predict(frames)`` out.

Specs:

- ``auto`` — the shipped model trained for the candidate (``data/models/index.json``);
  a candidate without one falls back to the shipped bond-polarizability
  parameters with a warning (a physical model, not ab initio);
- ``bond`` or ``bond:PARAMS.json`` — the bond-polarizability model
  (:mod:`ionraman.polarizability.bond_model`), shipped or given parameters;
- ``PATH`` — a model file saved by :class:`ionraman.polarizability.model.PolarizabilityModel`
  (``.json`` files are read as bond-model parameters);
- ``python:MODULE:FACTORY`` — any object with ``predict(list[Atoms]) -> (n, 3, 3)`` Å³.
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ase import Atoms

from ..errors import InputError

__all__ = ["resolve_model", "shipped_models", "load_bond_model"]

log = logging.getLogger(__name__)


def _models_dir() -> Path:
    return Path(str(resources.files("ionraman") / "data" / "models"))


@cache
def shipped_models() -> tuple[dict[str, Any], ...]:
    """Entries of ``data/models/index.json`` (name, file, candidates, engine, test errors …)."""
    p = _models_dir() / "index.json"
    if not p.exists():
        return ()
    return tuple(json.loads(p.read_text()))


def load_bond_model(path: str | Path | None = None) -> Any:
    """Bond-polarizability model from a parameter file (default: the shipped one)."""
    from .bond_model import BondPolarizabilityModel

    p = Path(path) if path else _models_dir() / "bond_default.json"
    if not p.exists():
        raise InputError(
            f"{p}: no bond-polarizability parameters; fit them with `ionraman train DATA.xyz --baseline bond` "
            "or pass a trained model with --model."
        )
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}: not valid JSON ({exc}).") from None
    return BondPolarizabilityModel.from_dict(d)


def _check_bond_coverage(model: Any, atoms: Atoms, label: str) -> None:
    bonds = model.bonds(atoms)
    if not any(len(r) for r, _ in bonds.values()):
        types = ", ".join("-".join(k) for k in model.bond_types) or "none"
        raise InputError(
            f"{label}: the bond-polarizability parameters (types {types}) find no bonds in this structure; "
            "train a model for it (`ionraman label` + `ionraman train`) and pass --model."
        )


def resolve_model(spec: str, candidate: str, atoms: Atoms) -> tuple[Any, dict[str, Any]]:
    """The model named by ``spec`` for ``candidate``, and a JSON description of what was chosen."""
    spec = spec or "auto"
    if spec == "auto":
        # a tensor model trained for the candidate wins over the shared bond model
        entries = sorted(shipped_models(), key=lambda e: e.get("kind") == "bond-model")
        for entry in entries:
            if candidate in entry.get("candidates", []):
                info = {"kind": entry.get("kind", "tensor-model"), "name": entry["name"], "file": entry["file"],
                        "engine": entry.get("engine")}
                if entry.get("kind") == "bond-model":
                    m = load_bond_model(_models_dir() / entry["file"])
                    _check_bond_coverage(m, atoms, candidate)
                    return m, info
                from .model import PolarizabilityModel

                return PolarizabilityModel.load(_models_dir() / entry["file"]), info
        msg = (f"no shipped polarizability model for {candidate}; using the bond-polarizability model "
               "(a physical model, not ab initio) — train one with `ionraman label` and `ionraman train` for real spectra")
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)
        m = load_bond_model()
        _check_bond_coverage(m, atoms, candidate)
        return m, {"kind": "bond-model", "file": "bond_default.json", "warning": msg}
    if spec == "bond" or spec.startswith("bond:"):
        path = spec.partition(":")[2] or None
        m = load_bond_model(path)
        _check_bond_coverage(m, atoms, candidate)
        return m, {"kind": "bond-model", "file": path or "bond_default.json"}
    if spec.startswith("python:"):
        mod_name, _, fn_name = spec[len("python:"):].partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"polarizability model '{spec}': cannot load {mod_name}:{fn_name} ({exc}).") from None
        return fn(), {"kind": "python", "spec": spec}
    p = Path(spec)
    if not p.exists():
        raise InputError(f"polarizability model '{spec}': no such file; give a model file, 'auto', 'bond' or python:MODULE:FACTORY.")
    if p.suffix == ".json":
        m = load_bond_model(p)
        _check_bond_coverage(m, atoms, candidate)
        return m, {"kind": "bond-model", "file": str(p)}
    from .model import PolarizabilityModel

    m = PolarizabilityModel.load(p)
    return m, {"kind": "tensor-model", "file": str(p)}
