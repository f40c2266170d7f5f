"""Campaign specification: candidates × temperatures and every setting that changes a result.

A campaign is a TOML file (or a built-in preset) like::

    name = "my-screen"
    temperatures_K = [600, 800]
    output_dir = "runs/my-screen"

    [[candidates]]
    structure = "Na3SbS4-cubic"          # built-in name, file path or glob
    supercell = "2x2x2"

    [[candidates]]
    structure = "Na3SbS4-cubic"
    label = "Na3SbS4-cubic-W"
    substitute = ["Sb:W:0.125"]

    [md]
    forcefield = "chgnet"
    time_ps = 10.0
    equilibrate_ps = 1.0

    [spectrum]
    polarizability_model = "auto"        # shipped model for the candidate, else the bond model
    segments = 4

    [fingerprint]
    cutoff_cm1 = 100.0

Every error names the file, the field and the fix in one sentence.
"""

from __future__ import annotations

import glob
import hashlib
import json
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["CandidateSpec", "MDSpec", "SpectrumSpec", "FingerprintSpec", "CampaignSpec", "TaskSpec", "load_campaign", "preset", "PRESETS"]


@dataclass(frozen=True)
class CandidateSpec:
    """One material: a structure plus the modifications that define it."""

    structure: str
    label: str = ""
    supercell: str | None = None
    min_atoms: int | None = None
    vacancies: str | None = None
    substitute: tuple[str, ...] = ()
    mobile_ion: str | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        return self.label or self.structure


@dataclass(frozen=True)
class MDSpec:
    """MD settings shared by all tasks (times in ps/fs)."""

    forcefield: str = "auto"  # the candidate's shipped DFT-fine-tuned model, else chgnet
    time_ps: float = 10.0
    timestep_fs: float = 2.0
    equilibrate_ps: float = 1.0
    sample_every: int = 5
    thermostat_tau_fs: float = 100.0
    integrity: str = "flag"
    seed: int = 0
    # forcefield = "distilled": distil the teacher once per candidate with these settings
    distill_teacher: str = "auto"
    distill_md_time_ps: float = 1.0
    distill_epochs: int = 300
    distill_channels: int = 8

    def key_dict(self) -> dict[str, Any]:
        """The settings that change results (distillation settings only when a model is distilled)."""
        d = asdict(self)
        if self.forcefield not in ("distilled", "distilled:auto"):
            d = {k: v for k, v in d.items() if not k.startswith("distill_")}
        return d


@dataclass(frozen=True)
class SpectrumSpec:
    """α(t) and Raman settings."""

    polarizability_model: str = "auto"
    segments: int = 4
    max_frequency_cm1: float = 800.0
    harmonic: bool = True
    harmonic_fwhm_cm1: float = 8.0


@dataclass(frozen=True)
class FingerprintSpec:
    """F_LF definition (docs/physics/raman.md)."""

    cutoff_cm1: float = 100.0
    omega_min_cm1: float = 5.0
    omega_max_cm1: float = 800.0
    channel: str = "unpolarized"
    representation: str = "reduced"


@dataclass(frozen=True)
class TaskSpec:
    """One (candidate, temperature) unit of work, or the harmonic reference of a candidate."""

    kind: str  # "md" or "harmonic"
    candidate: CandidateSpec
    temperature_K: float
    md: MDSpec
    spectrum: SpectrumSpec
    fingerprint: FingerprintSpec
    output_dir: str

    @property
    def key(self) -> str:
        """Hash of every input that changes the result (not the output directory)."""
        payload = {
            "kind": self.kind,
            "candidate": asdict(self.candidate),
            "temperature_K": self.temperature_K,
            "md": self.md.key_dict() | _resolved_forcefield(self.md.forcefield, self.candidate),
            "spectrum": asdict(self.spectrum),
            "fingerprint": asdict(self.fingerprint),
        }
        if self.kind == "harmonic":  # independent of MD length and fingerprint settings
            payload = {"kind": "harmonic", "candidate": payload["candidate"], "forcefield": self.md.forcefield,
                       **_resolved_forcefield(self.md.forcefield, self.candidate),
                       "model": self.spectrum.polarizability_model, "fwhm": self.spectrum.harmonic_fwhm_cm1,
                       "max_frequency_cm1": self.spectrum.max_frequency_cm1, "temperature_K": self.temperature_K}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.candidate.name} @ {self.temperature_K:g} K" if self.kind == "md" else f"{self.candidate.name} harmonic"

    @property
    def workdir(self) -> Path:
        return Path(self.output_dir) / "tasks" / f"{_slug(self.candidate.name)}_{self.kind}_{self.temperature_K:g}K_{self.key}"


@dataclass(frozen=True)
class CampaignSpec:
    """A screening campaign: candidates × temperatures with shared settings."""

    name: str
    candidates: tuple[CandidateSpec, ...]
    temperatures_K: tuple[float, ...]
    output_dir: str = "runs/campaign"
    md: MDSpec = field(default_factory=MDSpec)
    spectrum: SpectrumSpec = field(default_factory=SpectrumSpec)
    fingerprint: FingerprintSpec = field(default_factory=FingerprintSpec)
    source: str = "<preset>"

    def tasks(self) -> list[TaskSpec]:
        """MD tasks for every candidate × temperature, then one harmonic task per candidate (at the lowest T)."""
        out = [
            TaskSpec("md", c, float(T), self.md, self.spectrum, self.fingerprint, self.output_dir)
            for c in self.candidates
            for T in self.temperatures_K
        ]
        if self.spectrum.harmonic:
            t_low = float(min(self.temperatures_K))
            out += [TaskSpec("harmonic", c, t_low, self.md, self.spectrum, self.fingerprint, self.output_dir) for c in self.candidates]
        return out

    def with_output(self, output_dir: str | Path) -> CampaignSpec:
        return replace(self, output_dir=str(output_dir))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "candidates": [asdict(c) for c in self.candidates],
            "temperatures_K": list(self.temperatures_K),
            "output_dir": self.output_dir,
            "md": asdict(self.md),
            "spectrum": asdict(self.spectrum),
            "fingerprint": asdict(self.fingerprint),
            "source": self.source,
        }


def _resolved_forcefield(spec: str, candidate: CandidateSpec) -> dict[str, str]:
    """``auto`` names the model it resolves to (and that model file's hash) in task keys, so
    results cached under ``auto`` are recomputed when a fine-tuned model ships or changes."""
    if spec != "auto":
        return {}
    from ..forcefields import resolve_forcefield, shipped_forcefield_path

    resolved = resolve_forcefield(spec, candidate.name, candidate.structure)
    path = shipped_forcefield_path(resolved.split(":", 1)[1]) if resolved.startswith("finetuned:") else None
    if path is None:
        return {"forcefield_resolved": resolved}
    return {"forcefield_resolved": resolved, "forcefield_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}


def _slug(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def _section(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a table (e.g. [{where.split(':')[-1].strip()}]); fix the TOML.")
    defaults = {f.name: (f.default if f.default is not MISSING else "") for f in fields(cls)}
    unknown = sorted(set(data) - set(defaults))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(defaults)}.")
    kw = {k: _coerce(v, defaults[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kw)


def _coerce(v: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise InputError(f"{where} = {v!r} must be true or false.")
        return v
    if isinstance(default, int) and not isinstance(default, bool):
        if not isinstance(v, int) or isinstance(v, bool):
            raise InputError(f"{where} = {v!r} must be an integer.")
        return v
    if isinstance(default, float):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise InputError(f"{where} = {v!r} must be a number.")
        return float(v)
    if isinstance(default, tuple):
        if isinstance(v, str):
            return (v,)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise InputError(f"{where} = {v!r} must be a list of strings.")
        return tuple(v)
    if v is not None and not isinstance(v, (str, int)):
        raise InputError(f"{where} = {v!r} must be a string.")
    return v


def _candidates(raw: Any, where: str, base: Path) -> tuple[CandidateSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{where}: 'candidates' must be a non-empty list (strings or [[candidates]] tables with 'structure').")
    out: list[CandidateSpec] = []
    for k, item in enumerate(raw):
        w = f"{where}: candidates[{k}]"
        if isinstance(item, str):
            item = {"structure": item}
        if not isinstance(item, dict) or "structure" not in item:
            raise InputError(f"{w} needs a 'structure' (built-in name, file or glob).")
        c = _section(CandidateSpec, item, w)
        out += _expand(c, base, w)
    labels = [c.name for c in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise InputError(f"{where}: candidate name(s) {', '.join(dup)} appear twice; give each a distinct 'label'.")
    return tuple(out)


def _expand(c: CandidateSpec, base: Path, where: str) -> list[CandidateSpec]:
    """Resolve a candidate's structure: a built-in name, a file (relative to the campaign file) or a glob."""
    from ..structures import _find_variant, builtin_structures

    s = c.structure
    if any(b.name.lower() == s.lower() for b in builtin_structures()) or _find_variant(s):
        return [c]
    p = Path(s) if Path(s).is_absolute() else base / s
    if any(ch in s for ch in "*?["):
        hits = sorted(glob.glob(str(p)))
        if not hits:
            raise InputError(f"{where}: the pattern '{s}' matches no file (relative to {base}).")
        return [replace(c, structure=h, label=(f"{c.label}-{Path(h).stem}" if c.label else Path(h).stem)) for h in hits]
    if p.exists():
        return [replace(c, structure=str(p), label=c.label or p.stem)]
    names = ", ".join(b.name for b in builtin_structures())
    raise InputError(f"{where}: structure '{s}' is neither a built-in name nor an existing file; use one of {names} or a path.")


def _parse(data: dict[str, Any], where: str, base: Path) -> CampaignSpec:
    allowed = {"name", "candidates", "temperatures_K", "output_dir", "md", "spectrum", "fingerprint"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}.")
    temps = data.get("temperatures_K")
    if not isinstance(temps, list) or not temps or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in temps):
        raise InputError(f"{where}: 'temperatures_K' must be a non-empty list of numbers, e.g. temperatures_K = [600, 800].")
    if any(t <= 0 for t in temps):
        raise InputError(f"{where}: temperatures_K = {temps} has a non-positive temperature; give kelvin > 0.")
    md = _section(MDSpec, data.get("md"), f"{where}: [md]")
    if md.integrity not in ("stop", "flag", "off"):
        raise InputError(f"{where}: [md].integrity = '{md.integrity}' must be stop, flag or off.")
    if md.time_ps <= 0 or md.timestep_fs <= 0 or md.equilibrate_ps < 0 or md.sample_every < 1:
        raise InputError(f"{where}: [md] needs time_ps > 0, timestep_fs > 0, equilibrate_ps ≥ 0 and sample_every ≥ 1.")
    sp = _section(SpectrumSpec, data.get("spectrum"), f"{where}: [spectrum]")
    if sp.segments < 1:
        raise InputError(f"{where}: [spectrum].segments = {sp.segments} must be ≥ 1.")
    fp = _section(FingerprintSpec, data.get("fingerprint"), f"{where}: [fingerprint]")
    if not 0 < fp.omega_min_cm1 < fp.cutoff_cm1 < fp.omega_max_cm1:
        raise InputError(f"{where}: [fingerprint] needs 0 < omega_min_cm1 < cutoff_cm1 < omega_max_cm1.")
    name = data.get("name", "campaign")
    if not isinstance(name, str):
        raise InputError(f"{where}: 'name' must be a string.")
    out_dir = data.get("output_dir", f"runs/{_slug(name)}")
    if not isinstance(out_dir, str):
        raise InputError(f"{where}: 'output_dir' must be a string path.")
    return CampaignSpec(
        name=name,
        candidates=_candidates(data.get("candidates"), where, base),
        temperatures_K=tuple(float(t) for t in temps),
        output_dir=out_dir,
        md=md,
        spectrum=sp,
        fingerprint=fp,
        source=where,
    )


def load_campaign(path: str | Path) -> CampaignSpec:
    """Read and validate a campaign TOML file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such campaign file; give a TOML file or use --preset demo.")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{p}: not valid TOML ({exc}); fix the syntax at that line.") from None
    return _parse(data, str(p), p.parent)


# Presets. "demo" must finish in ≤ 15 min on a 2-core laptop-class machine, so
# cells are small (64–128 atoms … see report) and runs short; "production" is
# what a study would use on a cluster.
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "name": "demo",
        "output_dir": "runs/demo",
        "temperatures_K": [500, 800],
        "candidates": [
            {"structure": "AgI-alpha", "supercell": "2x2x2"},
            {"structure": "Na3SbS4-cubic", "supercell": "1x1x1"},
            {"structure": "Na3SbS4-cubic", "supercell": "1x2x1", "substitute": ["Sb:W:0.25"], "label": "Na3SbS4-cubic-W0.25"},
            {"structure": "Na3PS4-tetragonal", "supercell": "1x1x1"},
            {"structure": "NaCl", "supercell": "1x1x1"},
        ],
        "md": {"time_ps": 2.5, "equilibrate_ps": 0.25, "timestep_fs": 2.0, "sample_every": 2},
        "spectrum": {"segments": 3, "max_frequency_cm1": 600.0},
    },
    # Built-ins that the shipped literature table links to a measured σ, on both sides of
    # the fast-conductor line, small cells at one temperature: the store that
    # `ionraman calibrate runs/calibration/results.db` fits (issue #6; ≈ 30 min on 2 cores, the 64-atom LiF run dominates).
    "calibration": {
        "name": "calibration",
        "output_dir": "runs/calibration",
        "temperatures_K": [500],
        "candidates": [
            {"structure": "AgI-alpha", "supercell": "2x2x2"},
            {"structure": "Na3PS4-cubic", "supercell": "1x1x1"},
            {"structure": "Na3SbS4-tetragonal", "supercell": "1x1x1"},
            {"structure": "Na3PS4-tetragonal", "supercell": "1x1x1"},
            {"structure": "LiI", "supercell": "2x2x2"},
            {"structure": "LiF", "supercell": "2x2x2"},
        ],
        "md": {"time_ps": 2.5, "equilibrate_ps": 0.25, "timestep_fs": 2.0, "sample_every": 2},
        "spectrum": {"segments": 3, "max_frequency_cm1": 600.0},
    },
    "production": {
        "name": "production",
        "output_dir": "runs/production",
        "temperatures_K": [500, 600, 700, 800],
        "candidates": [
            {"structure": "Na3SbS4-cubic", "supercell": "2x2x2"},
            {"structure": "Na3SbS4-cubic-W0.125"},
            {"structure": "Na3SbS4-tetragonal", "supercell": "2x2x2"},
            {"structure": "Na3PS4-cubic", "supercell": "2x2x2"},
            {"structure": "Na3PS4-tetragonal", "supercell": "2x2x2"},
            {"structure": "Na3PSe4-cubic", "supercell": "2x2x2"},
            {"structure": "AgI-alpha", "supercell": "3x3x3"},
            {"structure": "AgI-beta", "supercell": "4x4x2"},
            {"structure": "Li10GeP2S12", "supercell": "2x2x1"},
            {"structure": "Li6PS5Cl", "supercell": "2x2x2"},
            {"structure": "NaCl", "supercell": "3x3x3"},
        ],
        "md": {"time_ps": 50.0, "equilibrate_ps": 5.0, "timestep_fs": 2.0, "sample_every": 5},
        "spectrum": {"segments": 8, "max_frequency_cm1": 800.0},
    },
}


def preset(name: str) -> CampaignSpec:
    """A built-in campaign ('demo', 'calibration' or 'production')."""
    if name not in PRESETS:
        raise InputError(f"--preset '{name}' is unknown; use one of {', '.join(PRESETS)}.")
    return _parse(json.loads(json.dumps(PRESETS[name])), f"preset {name}", Path.cwd())
