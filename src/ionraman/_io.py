"""Atomic file writes shared by every module that saves results or figures.

A reader (or an interrupted run) sees either the old file or the complete new one, never a
half-written file: the data go to a temporary file in the same folder, are flushed to disk,
and the temporary file is renamed over the target (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["atomic_write_bytes", "save_figure"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + rename); creates the folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 150, **savefig_kw: Any) -> Path:
    """Save a matplotlib figure atomically in the format its suffix names (png, svg, pdf, …).

    An unknown suffix raises :class:`InputError` naming the path and the formats to use.
    """
    p = Path(path)
    fmt = p.suffix.lstrip(".").lower() or "png"
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi, **savefig_kw)
    except ValueError as exc:
        raise InputError(f"{p}: cannot save a figure as '{fmt}' ({exc}); use a .png, .pdf or .svg path.") from None
    return atomic_write_bytes(p, buf.getvalue())
