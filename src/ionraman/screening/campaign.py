"""Run a campaign on Dask: skip finished tasks, run the rest, store results, rank, report.

Execution targets:
- an in-process ``LocalCluster`` (default; ``workers`` processes, one thread each);
- an existing scheduler (``scheduler="tcp://host:8786"``), e.g. ``dask scheduler``
  plus ``dask worker`` processes on other machines;
- a batch system through dask-jobqueue (``cluster="slurm"|"pbs"``), configured by
  a YAML/JSON file of keyword arguments for ``SLURMCluster``/``PBSCluster``.

Faults: a task whose worker dies is rescheduled by Dask; a task that raises
(e.g. an MD blow-up) is recorded as failed with its reason and does not stop the
rest; a re-run skips every task whose key already has a finished row, and an
interrupted MD continues from its checkpoint. Only this (client) process writes
the results store.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .spec import CampaignSpec, TaskSpec
from .store import ResultsStore
from .tasks import run_task

__all__ = ["CampaignResult", "run_campaign", "results_db_path"]


@dataclass(frozen=True)
class CampaignResult:
    """Counts of a campaign run and where its outputs are."""

    output_dir: Path
    database: str
    done: int
    failed: int
    skipped: int
    failures: dict[str, str] = field(default_factory=dict)
    report: Path | None = None
    ranking: Path | None = None


def results_db_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / "results.db"


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None, cluster: str | None, cluster_config: str | None) -> Iterator[Any]:
    from ..executor import get_client

    if cluster is None:
        with get_client(workers, scheduler) as c:
            yield c
        return
    kinds = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}
    if cluster not in kinds:
        raise InputError(f"--cluster '{cluster}' is unknown; use one of {', '.join(kinds)}.")
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError(f"--cluster {cluster} needs dask-jobqueue; install it with `pip install 'ionraman[cluster]'`.") from None
    kwargs: dict[str, Any] = {}
    if cluster_config:
        p = Path(cluster_config)
        if not p.exists():
            raise InputError(f"--cluster-config {p}: no such file; give a JSON/YAML file of {kinds[cluster]} keyword arguments.")
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            kwargs = yaml.safe_load(text) or {}
        else:
            kwargs = json.loads(text)
    from distributed import Client

    cl = getattr(dask_jobqueue, kinds[cluster])(**kwargs)
    cl.scale(jobs=workers or 1)
    try:
        with Client(cl) as c:
            yield c
    finally:
        cl.close()


def _atoms(record: dict[str, Any]) -> Any:
    from ase import Atoms

    a = record.pop("atoms", None)
    if not a:
        return Atoms()
    return Atoms(numbers=a["numbers"], positions=a["positions"], cell=a["cell"], pbc=True)


def run_campaign(
    spec: CampaignSpec,
    workers: int | None = None,
    scheduler: str | None = None,
    cluster: str | None = None,
    cluster_config: str | None = None,
    database: str | None = None,
    progress: bool = True,
    report: bool = True,
    calibration: Any = None,
) -> CampaignResult:
    """Run every task of ``spec`` that has no finished row yet; write the store, ranking and report."""
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "campaign.json.tmp"
    tmp.write_text(json.dumps(spec.to_dict(), indent=2))
    os.replace(tmp, out / "campaign.json")
    db_url = database or str(results_db_path(out))
    store = ResultsStore(db_url)
    tasks = spec.tasks()
    done_keys = store.done_keys()
    todo: list[TaskSpec] = [t for t in tasks if t.key not in done_keys]
    skipped = len(tasks) - len(todo)
    by_key = {t.key: t for t in todo}
    failures: dict[str, str] = {}
    n_done = 0

    def on_result(key: str, value: Any) -> None:
        nonlocal n_done
        t = by_key[key]
        if isinstance(value, BaseException):
            reason = f"{type(value).__name__}: {value}"
            failures[t.label] = reason
            store.write_failed(key, t.candidate.name, t.temperature_K, t.kind, reason)
        else:
            store.write_done(value, _atoms(value), calibration=calibration)
            n_done += 1

    if todo:
        from ..executor import map_tasks

        with _client(workers, scheduler, cluster, cluster_config) as client:
            for _ in map_tasks(run_task, todo, [t.key for t in todo], client, on_result, progress, description=f"campaign {spec.name}"):
                pass
    store.refresh_verdicts(calibration)
    rep = rank = None
    if report:
        from .report import write_report

        rep, rank = write_report(store, spec, out, calibration=calibration)
    return CampaignResult(out, db_url, n_done, len(failures), skipped, failures, rep, rank)
