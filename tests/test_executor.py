"""The Dask execution layer: every key reported once, failures isolated, dead workers retried."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ionraman.executor import Outcome, get_client, map_tasks, run_tasks


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x + 100


def die_once(arg: tuple[int, str]) -> int:
    """Kill the worker process the first time it runs for item 2 (marker file remembers)."""
    x, marker = arg
    if x == 2 and not Path(marker).exists():
        Path(marker).write_text("died once")
        os._exit(1)
    return -x


@pytest.fixture(scope="module")
def client():
    with get_client(workers=2) as c:
        yield c


def test_map_returns_every_result_once(client):
    seen: list[tuple[str, int]] = []
    outcomes = list(map_tasks(square, range(6), [f"k{i}" for i in range(6)], client, lambda k, r: seen.append((k, r)), progress=False))
    assert sorted(o.key for o in outcomes) == [f"k{i}" for i in range(6)]
    assert all(isinstance(o, Outcome) and o.ok for o in outcomes)
    assert {o.key: o.value for o in outcomes} == {f"k{i}": i * i for i in range(6)}
    assert sorted(seen) == sorted((f"k{i}", i * i) for i in range(6))  # on_result once per key


def test_exception_is_reported_for_its_key_only(client):
    seen: dict[str, object] = {}
    res = run_tasks(fail_on_three, list(range(6)), None, client, lambda k, r: seen.__setitem__(k, r), progress=True)
    assert set(res) == {str(i) for i in range(6)}
    assert not res["3"].ok and isinstance(res["3"].error, ValueError) and "three" in str(res["3"].error)
    assert isinstance(seen["3"], ValueError)
    assert all(res[str(i)].ok and res[str(i)].value == i + 100 for i in range(6) if i != 3)


def test_task_that_kills_its_worker_is_retried(client, tmp_path):
    marker = str(tmp_path / "died")
    items = [(i, marker) for i in range(4)]
    res = run_tasks(die_once, items, ["a", "b", "c", "d"], client, progress=False)
    assert Path(marker).exists(), "the task never killed its worker; the test proves nothing"
    assert {k: o.value for k, o in res.items()} == {"a": 0, "b": -1, "c": -2, "d": -3}
    assert all(o.ok for o in res.values())


def test_keys_must_match_items(client):
    with pytest.raises(ValueError):
        list(map_tasks(square, [1, 2], ["a"], client, progress=False))
    with pytest.raises(ValueError):
        list(map_tasks(square, [1, 2], ["a", "a"], client, progress=False))
