"""ionraman: low-frequency Raman fingerprints of fast ion conduction from ML-MD."""

from __future__ import annotations

__version__ = "0.1.0"
