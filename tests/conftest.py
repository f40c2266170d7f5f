"""Shared fixtures. Real reference data lives in ../shared/data (see its READMEs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.fail(f"shared reference data not found at {SHARED_DATA}; tests need ../shared/data beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def emt():
    """A cheap, deterministic ASE force field (EMT) for driver tests."""
    from ionraman.forcefields import get_forcefield

    return get_forcefield("python:ase.calculators.emt:EMT")


@pytest.fixture(scope="session")
def chgnet():
    from ionraman.forcefields import get_forcefield

    return get_forcefield("chgnet")
