"""Force-field registry: a name in, an ASE calculator out.

Specs understood by :func:`get_forcefield`:

- ``auto`` (default of the CLI and campaigns): the DFT-fine-tuned model shipped for
  the candidate (``data/forcefields/index.json``), else ``chgnet``; resolved per
  candidate by :func:`resolve_forcefield` before :func:`get_forcefield`.
- ``chgnet``: CHGNet's pretrained universal model; its weights ship in
  the PyPI package, so it loads without network.
- ``sevennet`` or ``sevennet:<model>`` (extra ``ionraman[sevennet]``; default model 7net-0).
- ``mace:<model file>`` (extra ``ionraman[mace]``): a local MACE model file.
- ``finetuned:<file or shipped name>``: CHGNet fine-tuned on DFT energies and forces
  (``ionraman finetune``, :mod:`ionraman.finetune`); a bare name is looked up among the
  shipped models in ``data/forcefields``.
- ``distilled:<folder>``: a fast MACE model distilled from a teacher (``ionraman distill``,
  :mod:`ionraman.distill`); it warns when run outside its training domain.
- ``python:<module>:<factory>``: any callable returning an ASE calculator,
  e.g. ``python:ase.calculators.emt:EMT``.

Device selection (CUDA when present, else CPU) lives in :func:`select_device`
and nowhere else.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import chemical_symbols

from .errors import InputError

__all__ = [
    "ForceField",
    "get_forcefield",
    "select_device",
    "available_forcefields",
    "register_forcefield",
    "resolve_forcefield",
    "shipped_finetuned",
]

DEFAULT_FORCEFIELD = "chgnet"


def select_device(prefer: str | None = None) -> str:
    """'cuda' if a CUDA GPU is usable (or asked for), else 'cpu'. Honour IONRAMAN_DEVICE."""
    prefer = prefer or os.environ.get("IONRAMAN_DEVICE")
    if prefer:
        return prefer
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


@dataclass
class ForceField:
    """An ASE calculator with what a run needs to know about it."""

    name: str
    calculator: Calculator
    version: str
    cutoff_A: float
    elements: frozenset[str] | None = None  # None: unknown coverage, not checked
    info: dict[str, Any] = field(default_factory=dict)
    domain: Any = None  # e.g. distill.DistilledDomain: where the model was trained

    def check_domain(self, atoms: Atoms, temperature_K: float | None = None, label: str = "structure") -> list[str]:
        """Warn (and return the reasons) when a run leaves the model's training domain; models
        without a recorded domain are not checked."""
        if self.domain is None:
            return []
        return self.domain.check(atoms, temperature_K, label=label, name=self.name)

    def check_elements(self, atoms: Atoms, label: str = "structure") -> None:
        """Raise InputError when the structure holds elements the model was not trained on."""
        if self.elements is None:
            return
        missing = sorted(set(atoms.get_chemical_symbols()) - self.elements)
        if missing:
            raise InputError(
                f"{label}: force field '{self.name}' does not cover element(s) {', '.join(missing)}; "
                "choose another --forcefield or remove those atoms."
            )

    def describe(self) -> dict[str, Any]:
        return {"forcefield": self.name, "forcefield_version": self.version, "forcefield_cutoff_A": self.cutoff_A, **self.info}


# name → factory(argument: str | None, device: str) -> ForceField
_REGISTRY: dict[str, Callable[[str | None, str], ForceField]] = {}


def register_forcefield(prefix: str) -> Callable:
    """Decorator that registers a factory for specs ``prefix`` and ``prefix:ARG``."""

    def deco(fn: Callable[[str | None, str], ForceField]) -> Callable[[str | None, str], ForceField]:
        _REGISTRY[prefix] = fn
        return fn

    return deco


def available_forcefields() -> list[str]:
    return sorted(_REGISTRY)


def get_forcefield(spec: str = DEFAULT_FORCEFIELD, device: str | None = None) -> ForceField:
    """Build the force field named by ``spec`` (see the module docstring); ``auto`` without a
    candidate means the universal default (use :func:`resolve_forcefield` first)."""
    if spec == "auto":
        spec = DEFAULT_FORCEFIELD
    prefix, _, arg = spec.partition(":")
    if prefix not in _REGISTRY:
        raise InputError(
            f"--forcefield '{spec}' is unknown; use one of {', '.join(available_forcefields())} "
            "(e.g. auto, chgnet, sevennet, finetuned:PATH, mace:FILE, python:module:factory)."
        )
    return _REGISTRY[prefix](arg or None, select_device(device))


def _missing_extra(name: str, extra: str) -> InputError:
    return InputError(f"--forcefield {name} needs the optional package; install it with `pip install 'ionraman[{extra}]'`.")


# CHGNet was trained on the Materials Project trajectory set (MPtrj), which has
# elements H–Pu (Z = 1–94); it embeds exactly those.
_Z94 = frozenset(chemical_symbols[1:95])


@register_forcefield("chgnet")
def _chgnet(arg: str | None, device: str) -> ForceField:
    try:
        import chgnet  # noqa: F401
        from chgnet.model import CHGNet
    except ImportError:  # pragma: no cover - chgnet is a core dependency
        raise _missing_extra("chgnet", "chgnet") from None
    with _chgnet_quiet():
        model = CHGNet.load(model_name=arg or "0.3.0", use_device=device, verbose=False)
    return _chgnet_forcefield(model, f"chgnet:{arg}" if arg else "chgnet", f"model {model.version}", device)


def _chgnet_quiet() -> Any:
    """CHGNet prints banners on stdout; drop them (and its warnings) so --json output and error
    messages stay clean."""
    import contextlib
    import warnings

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
    return stack


def _chgnet_forcefield(model: Any, name: str, description: str, device: str, info: dict[str, Any] | None = None) -> ForceField:
    """A :class:`ForceField` around a loaded CHGNet model (pretrained or fine-tuned)."""
    import warnings

    import chgnet
    from chgnet.model.dynamics import CHGNetCalculator

    with _chgnet_quiet():
        calc = CHGNetCalculator(model=model, use_device=device)
    # CHGNet converts a grad-tracking tensor to a float in every call; harmless, but
    # it would print a warning per MD step
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad", category=UserWarning)
    return ForceField(
        name=name,
        calculator=calc,
        version=f"chgnet {chgnet.__version__}, {description}",
        cutoff_A=float(model.graph_converter.atom_graph_cutoff),
        elements=_Z94,
        info={"device": device, **(info or {})},
    )


@register_forcefield("sevennet")
def _sevennet(arg: str | None, device: str) -> ForceField:
    try:
        import sevenn
        from sevenn.calculator import SevenNetCalculator
    except ImportError:
        raise _missing_extra("sevennet", "sevennet") from None
    model = arg or "7net-0"
    calc = SevenNetCalculator(model=model, device=device)
    cutoff = float(getattr(calc, "cutoff", 5.0))
    return ForceField(
        name=f"sevennet:{model}",
        calculator=calc,
        version=f"sevenn {sevenn.__version__}, model {model}",
        cutoff_A=cutoff,
        elements=None,
        info={"device": device},
    )


@register_forcefield("mace")
def _mace(arg: str | None, device: str) -> ForceField:
    if not arg:
        raise InputError("--forcefield mace needs a model file: mace:PATH/TO/model.model (models are not downloaded).")
    if not os.path.exists(arg):
        raise InputError(f"--forcefield mace:{arg}: no such model file; give the path of a local MACE .model file.")
    try:
        import mace
        from mace.calculators import MACECalculator
    except ImportError:
        raise _missing_extra("mace", "mace") from None
    calc = MACECalculator(model_paths=arg, device=device, default_dtype="float64")
    r_max = float(getattr(calc.models[0], "r_max", 5.0))
    z = getattr(calc, "z_table", None)
    elements = frozenset(chemical_symbols[int(x)] for x in z.zs) if z is not None else None
    return ForceField(
        name=f"mace:{arg}",
        calculator=calc,
        version=f"mace {getattr(mace, '__version__', '?')}",
        cutoff_A=r_max,
        elements=elements,
        info={"device": device},
    )


def _forcefields_dir() -> Any:
    from importlib import resources

    return resources.files("ionraman") / "data" / "forcefields"


def shipped_finetuned() -> list[dict[str, Any]]:
    """Entries of ``data/forcefields/index.json``: shipped fine-tuned models, the candidates they
    serve, their training data and validation (empty when none ship)."""
    import json

    p = _forcefields_dir() / "index.json"
    return list(json.loads(p.read_text())) if p.is_file() else []


def resolve_forcefield(spec: str, *candidates: str | None) -> str:
    """``auto`` → ``finetuned:<name>`` when a shipped fine-tuned model serves one of ``candidates``
    (built-in names, e.g. the structure and the campaign label), else ``chgnet``; other specs unchanged."""
    if spec != "auto":
        return spec
    names = {c for c in candidates if c}
    for entry in shipped_finetuned():
        if names & set(entry.get("candidates", [])):
            return f"finetuned:{entry['name']}"
    return DEFAULT_FORCEFIELD


def shipped_forcefield_path(name: str) -> str | None:
    """Path of a shipped fine-tuned model ``data/forcefields/<name>.pt``, or None."""
    p = _forcefields_dir() / f"{name}.pt"
    return str(p) if p.is_file() else None


@register_forcefield("distilled")
def _distilled(arg: str | None, device: str) -> ForceField:
    if not arg:
        raise InputError("--forcefield distilled needs a folder: distilled:PATH (the -o folder of `ionraman distill`).")
    from .distill import DistilledDomain, load_distilled

    calc, m = load_distilled(arg, device)
    domain = DistilledDomain(**m["domain"])
    teacher = m.get("teacher", {}).get("spec") or ", ".join(m.get("teacher", {}).get("dft_files", [])) or "?"
    return ForceField(
        name=f"distilled:{arg}",
        calculator=calc,
        version=f"mace {m.get('mace_version', '?')} distilled from {teacher}",
        cutoff_A=float(m["config"]["r_max_A"]),
        elements=frozenset(domain.elements),
        info={"device": device, "distilled_teacher": teacher,
              "distilled_force_rmse_meV_A": m["errors"]["force_rmse_meV_A"]},
        domain=domain,
    )


@register_forcefield("finetuned")
def _finetuned(arg: str | None, device: str) -> ForceField:
    if not arg:
        raise InputError("--forcefield finetuned needs a model: finetuned:PATH (from `ionraman finetune`) or a shipped name.")
    path = arg if os.path.exists(arg) else shipped_forcefield_path(arg)
    if path is None:
        raise InputError(f"--forcefield finetuned:{arg}: no such file and no shipped fine-tuned model of that name; "
                         "give the path written by `ionraman finetune`.")
    from .finetune import load_finetuned

    model, prov = load_finetuned(path)
    return _chgnet_forcefield(
        model, f"finetuned:{arg}",
        f"fine-tuned from {prov.get('base_model', '?')} on {prov.get('n_train', '?')} DFT frames", device,
        info={"finetune": {k: prov.get(k) for k in ("base_model", "n_train", "epochs", "elements", "after")}},
    )


@register_forcefield("python")
def _python(arg: str | None, device: str) -> ForceField:
    if not arg or ":" not in arg:
        raise InputError("--forcefield python:MODULE:FACTORY needs a module and a callable, e.g. python:ase.calculators.emt:EMT.")
    mod_name, _, fn_name = arg.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise InputError(f"--forcefield python:{arg}: cannot import module '{mod_name}' ({exc}); check the name and PYTHONPATH.") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise InputError(f"--forcefield python:{arg}: module '{mod_name}' has no callable '{fn_name}'.")
    calc = fn()
    if not isinstance(calc, Calculator) and not hasattr(calc, "get_forces"):
        raise InputError(f"--forcefield python:{arg}: '{fn_name}()' did not return an ASE calculator.")
    cutoff = float(getattr(calc, "cutoff", None) or getattr(calc, "rc", None) or 6.0)
    elements = None
    if mod_name == "ase.calculators.emt":  # EMT knows these elements only
        from ase.calculators.emt import parameters

        elements = frozenset(parameters)
    return ForceField(name=f"python:{arg}", calculator=calc, version=f"{mod_name}.{fn_name}", cutoff_A=cutoff, elements=elements)
