"""Atomic writes shared by every module (ionraman._io)."""

import os

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ionraman._io import atomic_write_bytes, save_figure
from ionraman.errors import InputError


def _figure():
    fig = Figure(figsize=(2, 2))
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1], [0, 1])
    return fig


def test_atomic_write_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    p = tmp_path / "sub" / "x.bin"
    atomic_write_bytes(p, b"old contents")
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    assert os.listdir(p.parent) == ["x.bin"]


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "x.bin"
    atomic_write_bytes(p, b"kept")
    with pytest.raises(TypeError):
        atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_bytes() == b"kept"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_save_figure_format_from_suffix_and_clear_error(tmp_path):
    png = save_figure(_figure(), tmp_path / "f.png")
    svg = save_figure(_figure(), tmp_path / "f.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:400]
    with pytest.raises(InputError, match=r"f\.xyz: cannot save a figure as 'xyz'.*\.png"):
        save_figure(_figure(), tmp_path / "f.xyz")
    assert not (tmp_path / "f.xyz").exists()
