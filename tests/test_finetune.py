"""Fine-tuning CHGNet on DFT-style labels: a tiny run end to end, save/load, the force-field registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from ionraman.ffvalidation import ENERGY_KEY, FORCES_KEY


def _emt_frames(n: int, seed0: int = 0) -> list:
    """Rattled Cu cells labelled by EMT, with EMT's energies shifted by a constant per atom as a
    DFT code's would be (a different energy zero), to exercise the offset alignment."""
    out = []
    for k in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        a.rattle(0.1, seed=seed0 + k)
        a.calc = EMT()
        a.info[ENERGY_KEY] = a.get_potential_energy() - 1500.0 * len(a)
        a.arrays[FORCES_KEY] = a.get_forces()
        a.calc = None
        out.append(a)
    return out


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    from ionraman.finetune import finetune_chgnet

    path = tmp_path_factory.mktemp("ft") / "cu.pt"
    res = finetune_chgnet(_emt_frames(6), path, val=_emt_frames(3, seed0=100), epochs=4, learning_rate=1e-3, batch_size=3)
    return path, res


def test_tiny_finetune_moves_chgnet_towards_the_labels(tuned):
    path, res = tuned
    assert path.exists() and res.n_train == 6 and res.n_val == 3
    # the held-out force error falls (EMT Cu is not what CHGNet learned)
    assert res.after["force_rmse_meV_A"] < 0.8 * res.before["force_rmse_meV_A"]
    # the per-atom offset between the "DFT" zero and CHGNet's is found: −1500 eV minus CHGNet's Cu energy (≈ −4.1 eV)
    assert res.energy_offsets_eV["Cu"] == pytest.approx(-1500.0 + 4.1, abs=0.5)
    assert 0 < res.trainable_parameters < 100_000  # only the last block and readout are trained


def test_saved_model_loads_through_the_registry_with_identical_forces(tuned):
    import torch
    from chgnet.model import CHGNet

    from ionraman.forcefields import get_forcefield

    path, _ = tuned
    ff = get_forcefield(f"finetuned:{path}")
    assert ff.name == f"finetuned:{path}" and "fine-tuned from 0.3.0 on 6 DFT frames" in ff.version
    a = _emt_frames(1, seed0=7)[0]
    a.calc = ff.calculator
    f1 = a.get_forces().copy()
    # a second, independent load of the file gives the same forces to float precision
    state = torch.load(path, map_location="cpu", weights_only=False)
    m = CHGNet.from_dict(state["model"])
    pred = m.predict_structure(__import__("pymatgen.io.ase", fromlist=["AseAtomsAdaptor"]).AseAtomsAdaptor.get_structure(a))
    assert np.abs(np.asarray(pred["f"]) - f1).max() < 1e-5
    assert json.loads(json.dumps(state["ionraman"]))["n_train"] == 6


def test_bad_finetune_inputs_are_one_sentence(tmp_path):
    from ionraman.errors import InputError
    from ionraman.finetune import dft_frames, finetune_chgnet
    from ionraman.forcefields import get_forcefield

    with pytest.raises(InputError, match="at least 2 training frames"):
        finetune_chgnet(_emt_frames(1), tmp_path / "m.pt")
    with pytest.raises(InputError, match="no such file"):
        get_forcefield(f"finetuned:{tmp_path / 'missing.pt'}")
    plain = tmp_path / "plain.xyz"
    import ase.io

    ase.io.write(plain, bulk("Cu"))
    with pytest.raises(InputError, match="no frame has"):
        dft_frames([plain])


def test_auto_forcefield_resolves_to_a_shipped_finetuned_model(monkeypatch):
    from ionraman import forcefields

    entries = [{"name": "Na3SbS4-cubic", "file": "Na3SbS4-cubic.pt", "candidates": ["Na3SbS4-cubic", "Na3SbS4-cubic-W0.125"]}]
    monkeypatch.setattr(forcefields, "shipped_finetuned", lambda: entries)
    assert forcefields.resolve_forcefield("auto", "Na3SbS4-cubic-W0.125") == "finetuned:Na3SbS4-cubic"
    assert forcefields.resolve_forcefield("auto", "W-doped label", "Na3SbS4-cubic") == "finetuned:Na3SbS4-cubic"
    assert forcefields.resolve_forcefield("auto", "NaCl") == "chgnet"  # nothing ships for it
    assert forcefields.resolve_forcefield("sevennet", "Na3SbS4-cubic") == "sevennet"  # explicit choice wins
