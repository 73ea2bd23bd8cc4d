"""Atomic writes, the one implementation every step of the chain uses.

A file is written to a temporary sibling and renamed over its target only when the
write succeeded, so a reader never sees half a file and a failed write leaves nothing.
A *set* of files (export's folder, hwsim's results, the report) is written the same
way, all temporaries first; only when every one of them is complete are they renamed,
the set's index file (the one readers open first, e.g. ``results.json``) last, so a
reader that finds the new index finds the whole new set. Files get the mode the user's
umask gives a new file (temporary files start private, 0600).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask_mode(path: Path) -> None:
    """Give a temporary file the permissions ``open`` would have given a new file."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` (for writers that want a file name); rename on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _umask_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs):
    """Yield an open temporary file beside ``path``; it replaces ``path`` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_together(files: dict[Path, str | bytes | Callable[[Path], object]], index: Path | None = None
                   ) -> list[Path]:
    """Write every file (path -> content, or a function that writes the file at the path
    it is given) to a temporary sibling, then rename them all, ``index`` last. Any failure
    before the renames leaves every old file as it was."""
    order = sorted(files, key=lambda p: Path(p) == Path(index) if index is not None else False)
    tmps: list[tuple[str, Path]] = []
    try:
        for key in order:
            path, content = Path(key), files[key]
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            tmps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                if not callable(content):
                    f.write(content.encode() if isinstance(content, str) else content)
            if callable(content):
                content(Path(tmp))
            _umask_mode(Path(tmp))
        for tmp, path in tmps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in tmps:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [p for _, p in tmps]
