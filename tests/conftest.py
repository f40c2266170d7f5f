"""Shared fixtures. Real reference data lives in ../shared/data (see its READMEs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
# distilled models run TorchScript here: torch.compile's first compilation of each model takes
# ~0.5–2 min, which every test that builds a calculator would pay; the inductor backend has
# its own tests (tests/test_distill.py)
os.environ.setdefault("IONRAMAN_DISTILLED_BACKEND", "script")

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
