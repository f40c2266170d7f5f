"""The shipped DFT-fine-tuned force fields (``ionraman/data/forcefields``) are complete: model file,
training data with first-principles labels and the recorded CP2K settings, and an entry that
``auto`` resolves to."""

from __future__ import annotations

import json

import ase.io
import pytest

from ionraman.ffvalidation import ENERGY_KEY, FORCES_KEY
from ionraman.forcefields import _forcefields_dir, resolve_forcefield, shipped_finetuned

ENTRIES = shipped_finetuned()


def test_there_is_a_shipped_model():
    assert ENTRIES, "data/forcefields/index.json lists no model"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_entry_is_complete(entry):
    root = _forcefields_dir()
    assert (root / entry["file"]).is_file()
    n_frames = 0
    for rel in entry["training"]:
        frames = ase.io.read(str(root / rel), ":")
        for a in frames:
            assert ENERGY_KEY in a.info and FORCES_KEY in a.arrays, rel
            assert a.arrays[FORCES_KEY].shape == (len(a), 3)
            settings = json.loads(a.info["dft_settings"])
            assert settings["engine"] == "cp2k" and "cutoff_ry" in json.dumps(settings)
        n_frames += len(frames)
    # every training file is listed, and the split the recipe names used all of them
    assert n_frames == entry["n_train"] + entry["n_val"]
    for cand in entry["candidates"]:
        assert resolve_forcefield("auto", cand) == f"finetuned:{entry['name']}"
