"""Polarizability-model factories for screening tests (imported by Dask worker processes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ionraman.polarizability.bond_model import BondPolarizabilityModel

# Illustrative parameters for the test cells (Å³, Å³/Å, Å); not fitted to anything.
TEST_BOND_PARAMETERS = {
    "parameters": {
        "Cl-Na": {"a_par": 1.2, "b_par": 1.5, "a_perp": 0.6, "b_perp": 0.4, "r0": 2.82},
        "Ag-I": {"a_par": 3.0, "b_par": 2.5, "a_perp": 1.8, "b_perp": 0.8, "r0": 2.83},
    },
    "atomic": {},
    "cutoffs": {"Cl-Na": 3.4, "Ag-I": 3.4},
}


def write_test_bond_parameters(path: str | Path) -> Path:
    p = Path(path)
    p.write_text(json.dumps(TEST_BOND_PARAMETERS))
    return p


def bond_model() -> BondPolarizabilityModel:
    return BondPolarizabilityModel.from_dict(TEST_BOND_PARAMETERS)


def killer_bond_model() -> BondPolarizabilityModel:
    """Kills its worker process the first time any task asks for it (marker file in the env)."""
    marker = Path(os.environ["IONRAMAN_TEST_KILL_MARKER"])
    if not marker.exists():
        marker.write_text("killed once\n")
        os._exit(1)
    return bond_model()
