from __future__ import annotations

import numpy as np
import pytest

from ionraman.errors import InputError
from ionraman.trajectory import H5MDWriter, read_h5md, read_metadata, trajectory_from_atoms_list


def _write(path, n_frames=12, seed=0):
    rng = np.random.default_rng(seed)
    cell = np.array([[6.0, 0.0, 0.0], [1.5, 5.5, 0.0], [0.3, 0.7, 7.0]])  # triclinic
    x = rng.uniform(0, 5, size=(3, 3))
    xs, vs = [], []
    with H5MDWriter(path, numbers=np.array([11, 16, 51]), metadata={"temperature_K": 700.0, "mobile_ion": "Na", "md_config": {"a": 1}}) as w:
        for i in range(n_frames):
            x = x + rng.normal(scale=3.0, size=x.shape)  # big jumps: atoms leave the cell
            v = rng.normal(size=x.shape) * 0.01
            w.append(i * 5, i * 10.0, x, cell, v, 700.0 + i, -5.0 - i)
            xs.append(x.copy())
            vs.append(v)
    return np.array(xs), np.array(vs), cell


def test_h5md_round_trip_unwrapped_positions(tmp_path):
    p = tmp_path / "t.h5"
    xs, vs, cell = _write(p)
    t = read_h5md(p)
    assert t.n_frames == 12 and t.n_atoms == 3
    np.testing.assert_allclose(t.positions, xs, atol=1e-10)
    np.testing.assert_allclose(t.velocities, vs, atol=1e-14)
    np.testing.assert_allclose(t.cells[3], cell)
    np.testing.assert_allclose(t.time_fs, np.arange(12) * 10.0)
    assert t.dt_fs == 10.0
    assert t.temperature_K == 700.0
    assert t.symbols == ["Na", "S", "Sb"]
    assert t.metadata["md_config"] == {"a": 1}
    assert read_metadata(p)["mobile_ion"] == "Na"
    # stored positions are wrapped into the cell (what H5MD readers expect)
    import h5py

    with h5py.File(p) as f:
        frac = np.linalg.solve(cell.T, f["particles/all/position/value"][5].T).T
        assert frac.min() >= -1e-12 and frac.max() < 1 + 1e-12
        assert f["h5md"].attrs["version"].tolist() == [1, 1]


def test_mdanalysis_reads_file(tmp_path):
    mda = pytest.importorskip("MDAnalysis", reason="MDAnalysis is in the [test] extra")
    p = tmp_path / "t.h5"
    xs, vs, cell = _write(p)
    u = mda.Universe.empty(3, trajectory=True)
    u.load_new(str(p), format="H5MD")
    assert len(u.trajectory) == 12
    u.trajectory[4]
    t = read_h5md(p)
    np.testing.assert_allclose(
        np.linalg.norm(cell, axis=1), u.dimensions[:3], rtol=1e-6
    )
    # MDAnalysis works in Å and ps: our Å/fs velocities are ×1000 there
    np.testing.assert_allclose(u.trajectory.ts.velocities, t.velocities[4] * 1000, rtol=1e-5)
    np.testing.assert_allclose(u.trajectory.time, 0.04, rtol=1e-6)


def test_truncate_and_append(tmp_path):
    p = tmp_path / "t.h5"
    xs, _, cell = _write(p)
    with H5MDWriter(p, mode="a") as w:
        w.truncate(5)
        assert w.n_frames == 5
        w.append(25, 50.0, xs[0], cell)
    t = read_h5md(p)
    assert t.n_frames == 6
    np.testing.assert_allclose(t.positions[5], xs[0], atol=1e-10)
    assert t.velocities is not None  # earlier frames have velocities; the new one is NaN


def test_bad_files_give_one_sentence(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_h5md(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5"):
        read_h5md(bad)
    import h5py

    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("x")
    with pytest.raises(InputError, match="not an H5MD trajectory"):
        read_h5md(empty)


def test_from_atoms_list_unwraps():
    from ase import Atoms

    frames = []
    for i in range(5):
        a = Atoms("Na", positions=[[0.9 * i, 0, 0]], cell=[2, 2, 2], pbc=True)
        a.wrap()
        frames.append(a)
    t = trajectory_from_atoms_list(frames, dt_fs=2.0)
    np.testing.assert_allclose(t.positions[:, 0, 0], 0.9 * np.arange(5), atol=1e-12)
    assert t.dt_fs == 2.0
