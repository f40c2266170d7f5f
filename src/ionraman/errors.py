"""The one exception type users see.

Every check on user input raises :class:`InputError` with a single sentence
that names the file (or option), the field and the fix. The CLI prints the
sentence and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a malformed file, an unknown name, an impossible request."""


class SimulationError(RuntimeError):
    """A simulation was stopped by a guard (blow-up, atoms too close, runaway T)."""
