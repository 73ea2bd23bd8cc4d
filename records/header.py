"""The header rule every record follows (checkpoint, core graph, trainer summary, hwsim
inputs, energy model, hwsim results).

A record starts with ``format`` (its name) and ``version`` (an integer). A reader
accepts its own format at versions ``oldest..current``; a newer version asks for an
upgrade of this package, an older one for re-running the step that wrote it. Every
error names the file (``where``) and is a ``RecordError`` of the record's own kind.
"""
from __future__ import annotations

import math


class RecordError(ValueError):
    """A record that is missing, corrupt, of another format or an unreadable version."""


def header(fmt: str, version: int) -> dict:
    return {"format": fmt, "version": int(version)}


def check_header(doc, fmt: str, current: int, oldest: int, error: type[RecordError] = RecordError,
                 rerun: str = "re-run the step that wrote it") -> int:
    """Validate ``doc``'s header; return its version."""
    if not isinstance(doc, dict):
        raise error(f"not a {fmt} record (no header object)")
    if doc.get("format") != fmt:
        raise error(f"format {doc.get('format')!r} is not {fmt!r}")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise error(f"version {version!r} is not an integer")
    if version > current:
        raise error(f"version {version} is newer than this reader ({current}); upgrade hybrid-snn-toolchain")
    if version < oldest:
        raise error(f"old version {version} (this reader needs {oldest}..{current}); {rerun}")
    return version


def finite_number(v) -> bool:
    """A JSON number that is a real, finite value (not a bool, NaN or infinity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
