"""Farthest-point sampling of snapshots in SOAP space."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from ionraman.errors import InputError
from ionraman.polarizability.descriptors import structure_soap
from ionraman.polarizability.select import farthest_point_sampling, select_from_trajectories
from ionraman.trajectory import H5MDWriter


def _pool():
    """10 near-identical rattled NaCl cells + 2 very different ones (compressed; strongly rattled)."""
    base = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    frames = []
    for k in range(10):
        a = base.copy()
        a.rattle(0.002, seed=k)
        frames.append(a)
    squeezed = base.copy()
    squeezed.set_cell(base.cell.array * 0.85, scale_atoms=True)
    hot = base.copy()
    hot.rattle(0.4, seed=99)
    return frames + [squeezed, hot]


def test_fps_distinct_deterministic_and_outliers_first():
    frames = _pool()
    idx = farthest_point_sampling(frames, 6, seed=0)
    assert len(idx) == 6 and len(set(idx)) == 6
    assert all(0 <= i < len(frames) for i in idx)
    assert farthest_point_sampling(frames, 6, seed=0) == idx
    assert {10, 11} <= set(idx[:3])
    # random start: deterministic for a seed, still finds both outliers early
    r1 = farthest_point_sampling(frames, 4, seed=3, start="random")
    assert r1 == farthest_point_sampling(frames, 4, seed=3, start="random")
    assert {10, 11} <= set(r1[:3])


def test_fps_distances_decrease_and_array_input():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    idx, d = farthest_point_sampling(X, 10, return_distances=True)
    assert len(set(idx)) == 10
    assert np.all(np.diff(d[1:]) <= 1e-12)  # greedy FPS: non-increasing covering radius
    assert idx[0] == int(np.argmax(np.linalg.norm(X - X.mean(0), axis=1)))
    # the full pool is a permutation
    assert sorted(farthest_point_sampling(X, 40)) == list(range(40))


def test_fps_bad_inputs():
    frames = _pool()
    with pytest.raises(InputError, match="larger than the pool of 12"):
        farthest_point_sampling(frames, 13)
    with pytest.raises(InputError, match="at least 1"):
        farthest_point_sampling(frames, 0)
    with pytest.raises(InputError, match="no structures"):
        farthest_point_sampling([], 1)
    with pytest.raises(InputError, match="start"):
        farthest_point_sampling(frames, 2, start="middle")
    with pytest.raises(InputError, match="shape"):
        farthest_point_sampling(frames, 2, descriptor=np.zeros((3, 2)))


def test_structure_descriptor_is_normalised_and_intensive():
    a = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    a.rattle(0.05, seed=1)
    d = structure_soap([a, a.repeat((2, 1, 1))])
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    np.testing.assert_allclose(d[0], d[1], atol=1e-12)


def _write(path, temperature, amplitude, n=8, seed=0):
    base = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    rng = np.random.default_rng(seed)
    with H5MDWriter(path, numbers=base.numbers, metadata={"temperature_K": temperature}) as w:
        for i in range(n):
            x = base.positions + rng.normal(scale=amplitude, size=base.positions.shape)
            x[0] += base.cell[0] * 1.0  # an unwrapped atom outside the cell
            w.append(i, 5.0 * i, x, base.cell.array)


def test_select_from_trajectories(tmp_path):
    cold, hot = tmp_path / "cold.h5", tmp_path / "hot.h5"
    _write(cold, 300.0, 0.01)
    _write(hot, 900.0, 0.3, seed=1)
    sel = select_from_trajectories([cold, hot], n=5, every=2)
    assert len(sel) == 5
    keys = {(a.info["source"], a.info["frame"]) for a in sel}
    assert len(keys) == 5
    for a in sel:
        assert a.info["frame"] % 2 == 0
        assert a.info["time_fs"] == pytest.approx(5.0 * a.info["frame"])
        assert a.info["temperature_K"] in (300.0, 900.0)
        frac = a.get_scaled_positions(wrap=False)
        assert frac.min() >= -1e-9 and frac.max() < 1 + 1e-9  # wrapped
    # hot frames are more diverse, so FPS draws mostly from them
    assert sum(a.info["temperature_K"] == 900.0 for a in sel) >= 3
    assert [a.info["fps_rank"] for a in sel] == list(range(5))
    again = select_from_trajectories([cold, hot], n=5, every=2)
    assert [(a.info["source"], a.info["frame"]) for a in again] == [(a.info["source"], a.info["frame"]) for a in sel]
    with pytest.raises(InputError, match="larger than the 8 candidate"):
        select_from_trajectories([cold, hot], n=9, every=2)
    with pytest.raises(InputError, match="no such file"):
        select_from_trajectories([tmp_path / "missing.h5"], n=1)


def test_frames_after_a_broken_framework_are_not_candidates(tmp_path, caplog):
    """A run whose monitor recorded a broken framework only offers the frames before the break."""
    from ase.spacegroup import crystal

    cell = crystal(["Na", "Sb", "S"], basis=[(0, 0.5, 0.5), (0, 0, 0), (0.1876, 0.1876, 0.1876)], spacegroup=217,
                   cellpar=[7.17] * 3 + [90] * 3)
    sb = [i for i, s in enumerate(cell.get_chemical_symbols()) if s == "Sb"][0]
    s_near = [j for j in range(len(cell)) if cell[j].symbol == "S" and cell.get_distance(sb, j, mic=True) < 2.5][0]
    bond = cell.get_distance(sb, s_near, mic=True, vector=True)
    path = tmp_path / "broken.h5"
    rng = np.random.default_rng(0)
    meta = {"temperature_K": 900.0, "integrity": {"ok": False, "first_failure_ps": 0.03}}
    with H5MDWriter(path, numbers=cell.numbers, metadata=meta) as w:
        for i in range(10):
            x = cell.positions + rng.normal(scale=0.03, size=cell.positions.shape)
            if i >= 6:  # from 30 fs on, one S leaves its Sb: a 3-coordinated Sb
                x[s_near] += 1.2 * bond / np.linalg.norm(bond)
            w.append(i, 5.0 * i, x, cell.cell.array)
    with caplog.at_level("WARNING"):
        sel = select_from_trajectories([path], n=6, every=1)
    assert sorted(a.info["frame"] for a in sel) == list(range(6))
    assert "4 frame(s) after the framework broke" in caplog.text
    with pytest.raises(InputError, match="larger than the 6 candidate"):
        select_from_trajectories([path], n=7, every=1)
    assert len(select_from_trajectories([path], n=10, every=1, intact_only=False)) == 10


def test_fps_extends_an_existing_set_on_a_line():
    """Points 0, 1, 2, 3, 10 with 0 already labelled: 10 (distance 10), then 3 (3 from 0, 7 from 10)."""
    X = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    idx, d = farthest_point_sampling(X, 3, existing=np.array([[0.0]]), return_distances=True)
    assert idx == [4, 3, 1]  # 1 and 2 tie at distance 1 after {0, 3, 10}: the lower index wins
    np.testing.assert_allclose(d, [10.0, 3.0, 1.0])
    with pytest.raises(InputError, match="same descriptor"):
        farthest_point_sampling(X, 1, existing=np.zeros((1, 2)))
    with pytest.raises(InputError, match="both as arrays"):
        farthest_point_sampling(X, 1, existing=_pool()[:1])


def test_fps_in_two_steps_equals_fps_in_one():
    """Picking 2, then 3 more with the first 2 as `existing`, gives the same 5 as one FPS run."""
    frames = _pool()
    once = farthest_point_sampling(frames, 5)
    first = farthest_point_sampling(frames, 2)
    rest = farthest_point_sampling(frames, 3, existing=[frames[i] for i in first])
    assert first + rest == once
    # a labelled structure is never picked again: its distance to the set is zero
    again = farthest_point_sampling(frames, 12 - 5, existing=[frames[i] for i in once])
    assert not set(again) & set(once)


def test_select_extends_a_labelled_file(tmp_path):
    from typer.testing import CliRunner

    from ase.io import read, write

    from ionraman.cli import app

    cold, hot = tmp_path / "cold.h5", tmp_path / "hot.h5"
    _write(cold, 300.0, 0.01)
    _write(hot, 900.0, 0.3, seed=1)
    runner = CliRunner()
    r = runner.invoke(app, ["select", str(cold), str(hot), "-n", "3", "-o", str(tmp_path / "a.xyz")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["select", str(cold), str(hot), "-n", "4", "-o", str(tmp_path / "b.xyz"),
                            "--labelled", str(tmp_path / "a.xyz"), "--json"])
    assert r.exit_code == 0, r.output
    a, b = read(tmp_path / "a.xyz", index=":"), read(tmp_path / "b.xyz", index=":")
    seven = select_from_trajectories([cold, hot], n=7, every=1)
    key = lambda x: (x.info["source"], int(x.info["frame"]))  # noqa: E731
    assert [key(x) for x in a + b] == [key(x) for x in seven]
    # a labelled file of another material is refused
    other = tmp_path / "other.xyz"
    write(other, bulk("KCl", "rocksalt", a=6.3, cubic=True), format="extxyz")
    r = runner.invoke(app, ["select", str(cold), "-n", "1", "-o", str(tmp_path / "c.xyz"), "--labelled", str(other)])
    assert r.exit_code != 0 and "K" in r.output and "same material" in r.output
