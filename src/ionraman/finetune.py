"""Fine-tuning the universal force field (CHGNet) on DFT energies and forces.

Why: CHGNet breaks the SbS₄ tetrahedra of Na₃SbS₄ at 600–900 K (S–S bonds form)
while PBE keeps them; the cure the seed's pipeline used is a model trained on
first-principles data of the material. We fine-tune the pretrained model offline on
CP2K frames (:mod:`ionraman.ffvalidation` labels them), so that the broken
configurations the universal model wanders into are taught to be high in energy.

Energy reference (docs/physics/ff-validation.md): CP2K total energies (GTH
pseudopotentials) and CHGNet energies (MPtrj/VASP) differ by a constant per element.
The targets are E_DFT − Σ_e n_e δ_e with δ fitted by least squares against the base
model on the training frames (:func:`ionraman.ffvalidation.align_energies`), so the
fine-tuned model keeps the base model's energy scale and only learns the DFT energy
*differences* and forces.

What is trained: by default only CHGNet's last interaction block and readout
(embeddings, basis expansions and the first three atom-convolution layers are frozen),
as in CHGNet's own fine-tuning example — a few hundred frames cannot retrain 400k
parameters, but they can move the last layers.

The saved file is a ``torch.save`` of ``{"model": CHGNet.as_dict(), "ionraman": provenance}``,
loadable by ``CHGNet.from_file`` and by ``--forcefield finetuned:PATH``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from .errors import InputError
from .ffvalidation import ENERGY_KEY, FORCES_KEY, force_errors
from .forcefields import _chgnet_quiet as _quiet

__all__ = ["FinetuneResult", "finetune_chgnet", "load_finetuned", "dft_frames", "split_frames"]

FORMAT_VERSION = 1


@dataclass
class FinetuneResult:
    """What :func:`finetune_chgnet` did; errors in meV/Å against the DFT forces."""

    path: str
    base_model: str
    n_train: int
    n_val: int
    epochs: int
    trainable_parameters: int
    wall_time_s: float
    before: dict[str, float]
    after: dict[str, float]
    energy_offsets_eV: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dft_frames(paths: Sequence[str | os.PathLike]) -> list[Atoms]:
    """All frames of the given extxyz files that carry DFT energies and forces."""
    from .polarizability.dataset import read_extxyz_frames

    frames: list[Atoms] = []
    for p in paths:
        got = read_extxyz_frames(p, "DFT energies and forces")
        ok = [a for a in got if ENERGY_KEY in a.info and FORCES_KEY in a.arrays]
        if not ok:
            raise InputError(f"{p}: no frame has info['{ENERGY_KEY}'] and arrays['{FORCES_KEY}']; label it with "
                             "`ionraman validate-ff` (or ffvalidation.label_energy_forces) first.")
        frames += ok
    return frames


def split_frames(frames: Sequence[Atoms], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Atoms], list[Atoms]]:
    """Seeded random split into (train, validation) frames."""
    if not 0 <= val_fraction < 1:
        raise InputError(f"--val-fraction {val_fraction}: give a fraction in [0, 1).")
    order = np.random.default_rng(seed).permutation(len(frames))
    n_val = int(round(val_fraction * len(frames)))
    return [frames[i] for i in order[n_val:]], [frames[i] for i in order[:n_val]]


def _load_base(base: str) -> Any:
    from chgnet.model import CHGNet

    with _quiet():
        if Path(base).exists():
            return CHGNet.from_file(str(base))
        return CHGNet.load(model_name=base, use_device="cpu", verbose=False)


def _evaluate(model: Any, frames: Sequence[Atoms]) -> tuple[Any, dict[str, np.ndarray]]:
    """:func:`ionraman.ffvalidation.force_errors` of a CHGNet model on DFT frames."""
    from chgnet.model.dynamics import CHGNetCalculator

    with _quiet():
        return force_errors(frames, CHGNetCalculator(model=model, use_device="cpu"))


def _errors(model: Any, frames: Sequence[Atoms], offsets: dict[str, float]) -> dict[str, float]:
    """Force RMSE/MAE (meV/Å) and the energy MAE (meV/atom) with the training frames' energy zero
    ``offsets`` and one common shift removed."""
    if not frames:
        return {}
    err, raw = _evaluate(model, frames)
    n = np.array([len(a) for a in frames])
    shift = np.array([sum(offsets.get(s, 0.0) for s in a.get_chemical_symbols()) for a in frames])
    de = (raw["e_dft"] - shift - raw["e_model"]) / n
    return {"force_rmse_meV_A": err.force_rmse_meV_A,
            "force_mae_meV_A": err.force_mae_meV_A,
            "energy_mae_meV_atom": 1e3 * float(np.abs(de - de.mean()).mean()) if len(de) > 1 else 0.0}


def _best_checkpoint(save_dir: Path, trainer: Any) -> Any:
    """The epoch with the lowest validation force MAE (``bestF_*`` written by CHGNet's trainer).

    CHGNet's ``Trainer.best_model`` is a reference to the live model (the last epoch), so
    the saved checkpoint is the one to load."""
    import torch
    from chgnet.model import CHGNet

    files = sorted(save_dir.glob("bestF_*.pth.tar"), key=lambda f: f.stat().st_mtime)  # the newest best
    if not files:
        return trainer.model
    with _quiet():
        return CHGNet.from_dict(torch.load(files[-1], map_location="cpu", weights_only=False)["model"])


def finetune_chgnet(
    train: Sequence[Atoms],
    output: str | os.PathLike,
    val: Sequence[Atoms] = (),
    base: str = "0.3.0",
    epochs: int = 30,
    learning_rate: float = 3e-4,
    batch_size: int = 4,
    freeze_early: bool = True,
    force_loss_ratio: float = 1.0,
    seed: int = 0,
) -> FinetuneResult:
    """Fine-tune CHGNet (``base``: a pretrained version or a saved file) on DFT frames.

    train / val: frames with ``info["energy_eV"]`` and ``arrays["forces_dft"]`` (eV, eV/Å).
    Writes the model to ``output`` (atomically) and returns errors before/after on ``val``
    (or on ``train`` when no validation frames are given).
    """
    import torch
    from chgnet.data.dataset import StructureData
    from chgnet.trainer import Trainer
    from pymatgen.io.ase import AseAtomsAdaptor
    from torch.utils.data import DataLoader

    train = list(train)
    val = list(val)
    if len(train) < 2:
        raise InputError(f"fine-tuning needs at least 2 training frames with DFT energies and forces; got {len(train)}.")
    unseen = sorted({s for a in val for s in a.get_chemical_symbols()} - {s for a in train for s in a.get_chemical_symbols()})
    if unseen:
        raise InputError(f"validation frames contain {', '.join(unseen)}, absent from the training frames; "
                         "put frames with every element into training (or change the split seed).")
    if epochs < 1:
        raise InputError(f"--epochs {epochs}: give at least 1.")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = _load_base(base)
    offsets = _evaluate(model, train)[0].energy_offsets_eV  # DFT − base-model energy zero per element
    check = val or train
    before = _errors(model, check, offsets)

    def data(frames: Sequence[Atoms]) -> Any:
        structs = [AseAtomsAdaptor.get_structure(a) for a in frames]
        e_pa = [(float(a.info[ENERGY_KEY]) - sum(offsets[s] for s in a.get_chemical_symbols())) / len(a) for a in frames]
        forces = [np.asarray(a.arrays[FORCES_KEY], dtype=float).tolist() for a in frames]
        with _quiet():
            return StructureData(structures=structs, energies=e_pa, forces=forces, shuffle=False,
                                 graph_converter=model.graph_converter)

    from chgnet.data.dataset import collate_graphs

    train_loader = DataLoader(data(train), batch_size=batch_size, shuffle=True, collate_fn=collate_graphs,
                              generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(data(check), batch_size=batch_size, shuffle=False, collate_fn=collate_graphs)
    if freeze_early:
        frozen = [model.atom_embedding, model.bond_embedding, model.angle_embedding, model.bond_basis_expansion,
                  model.angle_basis_expansion, *model.atom_conv_layers[:3], *model.bond_conv_layers, *model.angle_layers]
        for layer in frozen:
            for p in layer.parameters():
                p.requires_grad = False
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = Trainer(model=model, targets="ef", optimizer="Adam", scheduler="CosLR", criterion="MSE", epochs=epochs,
                      learning_rate=learning_rate, force_loss_ratio=force_loss_ratio, use_device="cpu",
                      print_freq=10**6, torch_seed=seed, data_seed=seed)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_dir = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".train", dir=out.parent))
    with _quiet():
        trainer.train(train_loader, val_loader, save_dir=str(save_dir))
    best = _best_checkpoint(save_dir, trainer)
    best.eval()
    after = _errors(best, check, offsets)
    if not all(math.isfinite(v) for v in after.values()) or not all(torch.isfinite(p).all() for p in best.parameters()):
        shutil.rmtree(save_dir, ignore_errors=True)
        raise InputError(f"fine-tuning diverged (NaN) for {out}; lower --learning-rate or check the DFT labels.")
    prov = {"format": FORMAT_VERSION, "base_model": base, "n_train": len(train), "n_val": len(val), "epochs": epochs,
            "learning_rate": learning_rate, "freeze_early": freeze_early, "energy_offsets_eV": offsets,
            "elements": sorted({s for a in train for s in a.get_chemical_symbols()}),
            "before": before, "after": after}
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"model": best.as_dict(), "ionraman": prov}, tmp)
    os.replace(tmp, out)
    shutil.rmtree(save_dir, ignore_errors=True)
    return FinetuneResult(path=str(out), base_model=base, n_train=len(train), n_val=len(val), epochs=epochs,
                          trainable_parameters=int(n_train), wall_time_s=time.perf_counter() - t0,
                          before=before, after=after, energy_offsets_eV=offsets)


def load_finetuned(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """A fine-tuned CHGNet and its provenance from a file written by :func:`finetune_chgnet`."""
    import torch
    from chgnet.model import CHGNet

    p = Path(path)
    if not p.exists():
        raise InputError(f"--forcefield finetuned:{p}: no such file; make one with `ionraman finetune`.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
        with _quiet():
            model = CHGNet.from_dict(state["model"])
    except Exception as exc:  # unpickling, wrong layout, wrong tensors: all "not our file"
        raise InputError(f"{p}: not a fine-tuned model from `ionraman finetune` ({type(exc).__name__}: {exc}).") from None
    model.eval()
    return model, dict(state.get("ionraman", {}))

