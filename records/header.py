"""The header rule every record follows (checkpoint, core graph, trainer summary, hwsim
inputs, energy model, hwsim results).

A record starts with ``format`` (its name) and ``version`` (an integer). A reader
accepts its own format at versions ``oldest..current``; a newer version asks for an
upgrade of this package, an older one for re-running the step that wrote it. Every
error names the file (``where``) and is a ``RecordError`` of the record's own kind.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from records.atomic import atomic_file, settle

T = TypeVar("T")


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


def parse_json(text: str | bytes) -> object:
    """``json.loads`` for files from anywhere: JSON nested too deep for the parser (thousands
    of brackets) is a ``json.JSONDecodeError`` like any other malformed JSON, not a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deep", "", 0) from None


def npz_header(data, key: str, fmt: str, current: int, oldest: int, error: type[RecordError], what: str,
               rerun: str) -> dict:
    """The checked JSON header that an ``.npz`` record keeps under ``key``."""
    if key not in data.files:
        raise error(f"not {what} (no {key} header)")
    try:
        head = parse_json(bytes(data[key]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{what}'s {key} header is not valid JSON ({exc})") from None
    check_header(head, fmt, current, oldest, error, rerun=rerun)
    return head


def read_json_record(path: str | os.PathLike, what: str, error: type[RecordError], parse: Callable[[dict], T]) -> T:
    """Read a JSON record and ``parse`` it; every problem is an ``error`` naming the file."""
    path = Path(path)
    settle(path.parent)       # a set whose writer was killed after committing it: finish it first
    if not path.is_file():
        raise error(f"{path}: {'is a folder, not a' if path.is_dir() else 'no such'} {what} file")
    try:
        return parse(parse_json(path.read_text()))
    except RecordError as exc:
        raise error(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: corrupt {what} ({type(exc).__name__}: {exc})") from None


def read_npz_record(path: str | os.PathLike, what: str, error: type[RecordError], parse: Callable[..., T]) -> T:
    """Open an ``.npz`` record without pickle and ``parse`` its arrays; every problem is an
    ``error`` naming the file (``what``: e.g. "core graph file")."""
    path = Path(path)
    settle(path.parent)
    if not path.is_file():
        raise error(f"{path}: {'is a folder, not a' if path.is_dir() else 'no such'} {what}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return parse(data)
    except RecordError as exc:
        raise error(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError, EOFError,
            json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: corrupt or foreign {what} ({type(exc).__name__}: {exc})") from None


def write_json_record(doc: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_file(path, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    return path
