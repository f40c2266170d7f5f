"""Results store: an ASE database (SQLite by default, PostgreSQL URL accepted), one row per task.

Each row holds the task's starting structure, key–value pairs that ``ase db``
can filter and sort on (candidate, formula, T, D ± error per species, σ, F_LF ±
error, central-peak width, verdict, status …) and the full record (spectra,
transport, fingerprint, artifact paths with SHA-256) in ``row.data``. Only the
client process writes it. Browse with ``ase db results.db``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["ResultsStore", "verdict"]


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def verdict(record: dict[str, Any], threshold_F_LF: float = 0.2, D_min_cm2_s: float = 1e-6, calibration: Any = None) -> str:
    """A one-word classification of an MD task.

    invalid      — the framework broke (integrity monitor), numbers not trustworthy;
    liquid-like  — mobile ions diffuse (D ≥ D_min) and F_LF ≥ threshold;
    hopping      — they diffuse but the low-frequency fraction stays below the threshold;
    immobile     — no measurable diffusion.
    With a calibration (``ionraman calibrate``), its threshold replaces the default
    (0.2, uncalibrated; docs/physics/raman.md).
    """
    if not record.get("integrity_ok", True):
        return "invalid"
    if calibration is not None:
        threshold_F_LF = float(calibration.threshold_F_LF)
    mob = record.get("mobile_ion")
    sp = (record.get("transport") or {}).get("species", {})
    d = sp.get(mob) if mob in sp else (next(iter(sp.values())) if sp else {})
    D = _num((d or {}).get("D_cm2_s")) or 0.0
    D_err = _num((d or {}).get("D_err_cm2_s")) or 0.0
    F = _num((record.get("fingerprint") or {}).get("F_LF"))
    # a D from a short run of vibrating ions is small but positive (kinisi forbids D < 0),
    # so diffusion also needs evidence of ions leaving their sites: hops, or most of the
    # time spent away from any site (liquid-like sublattices such as α-AgI)
    moved = (d or {}).get("n_hops", 1) != 0 or ((d or {}).get("away_from_site_fraction") or 0.0) >= 0.5
    diffusing = D >= D_min_cm2_s and D > 2 * D_err and moved
    if not diffusing:
        return "immobile"
    if F is not None and F >= threshold_F_LF:
        return "liquid-like"
    return "hopping"


class ResultsStore:
    """The campaign's ASE database."""

    def __init__(self, url: str | Path) -> None:
        import ase.db

        self.url = str(url)
        if "://" not in self.url:
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = ase.db.connect(self.url)
        except Exception as exc:
            raise InputError(f"{self.url}: cannot open the results database ({exc}); give a writable .db path or postgresql://… URL.") from None

    def done_keys(self) -> set[str]:
        """Task keys with a finished row (failed ones are retried on the next run)."""
        return {_task_key(r.task_key) for r in self.db.select(status="done")}

    def _delete_key(self, key: str) -> None:
        ids = [r.id for r in self.db.select(task_key=_db_key(key))] + [r.id for r in self.db.select(task_key=key)]
        if ids:
            self.db.delete(ids)

    def write_done(self, record: dict[str, Any], atoms: Any, calibration: Any = None) -> int:
        """Insert (or replace) the row of a finished task."""
        kv: dict[str, Any] = {
            "task_key": _db_key(record["key"]),
            "kind": record["kind"],
            "candidate": record["candidate"],
            "status": "done",
            "temperature_K": float(record["temperature_K"]),
        }
        if record["kind"] == "md":
            fp = record["fingerprint"]
            kv.update(
                {
                    "formula_str": record["formula"],
                    "mobile_ion": record.get("mobile_ion") or "",
                    "integrity_ok": bool(record["integrity_ok"]),
                    "verdict": verdict(record, calibration=calibration),
                }
            )
            for k in ("F_LF", "F_LF_err", "central_peak_width_cm1", "relaxation_time_ps"):
                v = _num(fp.get(k))
                if v is not None:
                    kv[k] = v
            if calibration is not None and _num(fp.get("F_LF")) is not None:
                kv["p_fast"] = calibration.probability_fast(float(fp["F_LF"]))
            for sp, d in record["transport"]["species"].items():
                for src, dst in (("D_cm2_s", f"D_{sp}"), ("D_err_cm2_s", f"D_{sp}_err"), ("sigma_S_cm", f"sigma_{sp}")):
                    v = _num(d.get(src))
                    if v is not None:
                        kv[dst] = v
        self._delete_key(record["key"])
        return self.db.write(atoms, key_value_pairs=kv, data={"record": json.dumps(record, default=str)})

    def write_failed(self, key: str, candidate: str, temperature_K: float, kind: str, reason: str, atoms: Any = None) -> int:
        from ase import Atoms

        self._delete_key(key)
        return self.db.write(
            atoms if atoms is not None else Atoms(),
            key_value_pairs={"task_key": _db_key(key), "candidate": candidate, "temperature_K": float(temperature_K), "kind": kind,
                             "status": "failed"},
            data={"reason": reason},
        )

    def refresh_verdicts(self, calibration: Any = None) -> None:
        """Recompute every MD row's verdict (and P(fast)) from its record, e.g. after a new calibration."""
        for r in self.db.select(status="done", kind="md"):
            rec = json.loads(r.data["record"])
            kv: dict[str, Any] = {"verdict": verdict(rec, calibration=calibration)}
            f = _num((rec.get("fingerprint") or {}).get("F_LF"))
            if calibration is not None and f is not None:
                kv["p_fast"] = calibration.probability_fast(f)
            self.db.update(r.id, **kv)

    def records(self, kind: str | None = "md", status: str = "done") -> list[dict[str, Any]]:
        """The stored records (decoded) of finished tasks, in insertion order."""
        sel: dict[str, Any] = {"status": status}
        if kind:
            sel["kind"] = kind
        out = []
        for r in self.db.select(**sel):
            if status == "done":
                rec = json.loads(r.data["record"])
                rec["row_id"] = r.id
                rec["verdict"] = r.get("verdict")
                out.append(rec)
            else:
                out.append({"key": _task_key(r.task_key), "candidate": r.candidate, "temperature_K": r.temperature_K, "kind": r.kind,
                            "reason": r.data.get("reason", "")})
        return out

    def count(self, **sel: Any) -> int:
        return self.db.count(**sel)


def _db_key(key: str) -> str:
    """The task key as stored: a hex digest can read as a number ("6680909359854665",
    "12e4…"), which ase.db refuses for a string column, so it gets a letter in front."""
    return f"t{key}"


def _task_key(stored: Any) -> str:
    """The task key from a stored value (stores written before the prefix hold it bare)."""
    s = str(stored)
    return s[1:] if s.startswith("t") else s
