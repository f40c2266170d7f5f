"""A small execution layer on Dask: run many independent, expensive tasks in parallel.

Used by the reference labeller (:func:`ionraman.polarizability.reference_cp2k.label_frames`)
and meant to be reused by the screening layer. Two pieces:

- :func:`get_client` — a context manager that yields a :class:`distributed.Client`:
  by default an in-process ``LocalCluster`` of worker *processes* with one thread
  each (our tasks are CPU-bound and often spawn their own MPI/OpenMP programs);
  with ``scheduler="tcp://host:8786"`` it connects to a running scheduler instead
  (e.g. one started with ``dask scheduler`` plus ``dask worker`` on other machines).
- :func:`map_tasks` — submits ``fn(item)`` per item, yields ``(key, outcome)`` as
  tasks finish (``distributed.as_completed``), calls ``on_result(key, outcome)`` in
  the *client* process (so the caller is the only process that writes files) and
  shows a progress bar (done / running / failed, ETA). ``outcome`` is the task's
  return value or the exception it raised; one failing task never stops the others.

Failure handling:

- a task that *raises* is reported once (after ``retries`` re-runs, default 0: a
  deterministic failure such as a non-converging SCF is not worth repeating);
- a task whose *worker process dies* (segfault, ``os._exit``, OOM kill) is
  rescheduled by the Dask scheduler on a fresh worker (the nanny restarts the
  process); after ``allowed_failures`` deaths (default 3) it is reported with
  :class:`distributed.KilledWorker`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Outcome", "get_client", "map_tasks", "run_tasks", "available_cores"]

T = TypeVar("T")
R = TypeVar("R")


def available_cores() -> int:
    """Number of CPU cores this process may use (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What one task produced: ``value`` on success, ``error`` (the exception) on failure."""

    key: str
    value: R | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@contextlib.contextmanager
def get_client(
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    allowed_failures: int = 3,
    memory_limit: str | int | None = 0,
    silence_logs: int = logging.ERROR,
    **cluster_kwargs: Any,
) -> Iterator[Any]:
    """Yield a Dask client; the cluster (if we started one) is closed on exit.

    workers: number of worker processes of the local cluster (default: all cores).
    scheduler: address of an existing scheduler (``tcp://host:8786``); then no local
        cluster is started and ``workers`` is ignored.
    allowed_failures: how many worker deaths a task may cause before it is reported
        as failed (``distributed.scheduler.allowed-failures``; local cluster only —
        a remote scheduler keeps its own setting).
    memory_limit: per-worker memory limit of the local cluster (0 = none: the heavy
        lifting happens in subprocesses the nanny does not see anyway).
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return

    n = available_cores() if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers={workers}: give a positive number of worker processes.")
    with dask.config.set({"distributed.scheduler.allowed-failures": int(allowed_failures)}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=memory_limit,
            silence_logs=silence_logs,
            **cluster_kwargs,
        )
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


class _Progress:
    """Rich progress bar with done / running / failed counts (no-op when disabled)."""

    def __init__(self, total: int, slots: int, description: str, enabled: bool) -> None:
        self.total, self.slots, self.enabled = total, max(1, slots), enabled
        self.done = self.failed = 0
        self._progress = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("running {task.fields[running]}  failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total, running=self._running(), failed=0)
        self._progress.start()

    def _running(self) -> int:
        return min(self.total - self.done, self.slots)

    def update(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, running=self._running(), failed=self.failed)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def map_tasks(
    fn: Callable[[T], R],
    items: Sequence[T],
    keys: Sequence[str] | None,
    client: Any,
    on_result: Callable[[str, R | BaseException], None] | None = None,
    progress: bool = True,
    *,
    retries: int = 0,
    description: str = "tasks",
) -> Iterator[Outcome[R]]:
    """Run ``fn(item)`` for every item on the cluster behind ``client``; yield outcomes as they finish.

    keys: one unique string per item (default ``"0"``, ``"1"``, …); outcomes and
        ``on_result`` calls carry these keys.
    on_result: called in this (client) process as ``on_result(key, value_or_exception)``
        for every task, in completion order, before the outcome is yielded.
    retries: extra attempts for a task that *raised* (worker deaths are handled by
        the scheduler, see the module docstring).

    This is a generator: nothing runs until it is iterated (use :func:`run_tasks`
    to run everything and get a dict). Each key is reported exactly once.
    """
    from distributed import as_completed

    items = list(items)
    keys = [str(i) for i in range(len(items))] if keys is None else [str(k) for k in keys]
    if len(keys) != len(items):
        raise ValueError(f"map_tasks: {len(items)} items but {len(keys)} keys.")
    if len(set(keys)) != len(keys):
        raise ValueError("map_tasks: keys must be unique.")
    if not items:
        return
    # Dask keys must be unique on the scheduler: prefix them with a run token.
    token = uuid.uuid4().hex[:8]
    name = getattr(fn, "__name__", "task")
    submitted = [client.submit(fn, item, key=f"{name}-{token}-{key}", retries=retries, pure=False) for key, item in zip(keys, items)]
    user_key = {fut.key: key for fut, key in zip(submitted, keys)}
    alive = {fut.key: fut for fut in submitted}  # dropped once reported, so results can be freed
    del submitted
    try:
        slots = sum(client.nthreads().values())
    except Exception:  # pragma: no cover - scheduler without workers yet
        slots = 1
    bar = _Progress(len(items), slots, description, progress)
    t0 = time.perf_counter()
    try:
        for fut in as_completed(list(alive.values())):
            alive.pop(fut.key, None)
            key = user_key[fut.key]
            if fut.status == "finished":
                value = fut.result()
                outcome: Outcome[R] = Outcome(key, value=value)
                payload: Any = value
            else:
                try:
                    exc = fut.exception()
                except BaseException as e:  # cancelled / lost futures raise here
                    exc = e
                if exc is None:  # pragma: no cover - defensive
                    exc = RuntimeError(f"task {key} ended with status {fut.status!r}")
                outcome = Outcome(key, error=exc)
                payload = exc
            bar.update(outcome.ok)
            if on_result is not None:
                on_result(key, payload)
            yield outcome
    finally:
        bar.close()
        # futures not yet collected (caller stopped iterating): cancel them
        pending = [f for f in alive.values() if f.status == "pending"]
        if pending:
            client.cancel(pending)
        logging.getLogger(__name__).debug("map_tasks: %d tasks in %.1f s", len(items), time.perf_counter() - t0)


def run_tasks(
    fn: Callable[[T], R],
    items: Sequence[T],
    keys: Sequence[str] | None = None,
    client: Any = None,
    on_result: Callable[[str, R | BaseException], None] | None = None,
    progress: bool = True,
    *,
    retries: int = 0,
    description: str = "tasks",
    workers: int | None = None,
) -> dict[str, Outcome[R]]:
    """Run :func:`map_tasks` to completion; returns ``{key: Outcome}``.

    Without a ``client`` a local cluster with ``workers`` processes is started for the call.
    """
    if client is None:
        with get_client(workers) as c:
            return {o.key: o for o in map_tasks(fn, items, keys, c, on_result, progress, retries=retries, description=description)}
    return {o.key: o for o in map_tasks(fn, items, keys, client, on_result, progress, retries=retries, description=description)}
