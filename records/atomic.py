"""Atomic writes, the one implementation every step of the chain uses.

A file is written to a temporary sibling and renamed over its target only when the
write succeeded, so a reader never sees half a file and a failed write leaves the old
file as it was (a ``WriteError`` names the target, not the temporary).

A *set* of files (export's folder, hwsim's results, the report) changes as one: all
temporaries are written first; then a journal listing the renames is committed (itself
by rename), the renames run, and the journal is removed. A writer killed before the
journal leaves only temporaries; one killed after it leaves a journal that ``settle``
plays to the end, after checking that it names only files inside its folder (a journal
planted in a shared run that names others is refused: ``JournalError``, naming it). ``settle``
runs before every write into a folder and before every record is read from it, and also
removes the temporaries of writers that are no longer running (temporaries carry their
writer's process id). Files get the mode the user's umask gives a new file (temporary
files start private, 0600).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

_TMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.(tmp|commit)$")


class WriteError(OSError):
    """A write that failed (no space, no permission); the target was left as it was."""


def _umask_mode(path: Path) -> None:
    """Give a temporary file the permissions ``open`` would have given a new file."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's live process
        return True
    return True


def _temporary(path: Path, suffix: str = ".tmp") -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=suffix)
    os.close(fd)
    return Path(tmp)


def settle(folder: str | os.PathLike) -> None:
    """Finish the committed set writes and remove the temporaries that writers no longer
    running left in ``folder`` (a folder that cannot be changed is left as it is)."""
    folder = Path(folder)
    try:
        names = [p for p in folder.iterdir() if _TMP.match(p.name)]
    except OSError:
        return
    try:
        for journal in sorted(p for p in names if p.name.endswith(".commit")):
            if _alive(int(_TMP.match(journal.name).group(1))):
                continue
            try:
                pairs = json.loads(journal.read_text())
            except ValueError:           # killed before its content was committed
                pairs = []
            except RecursionError:       # not a journal this module wrote
                pairs = None
            pairs = _checked_pairs(folder, journal, pairs)
            for tmp, final in pairs:
                if (folder / tmp).exists():
                    (folder / final).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(folder / tmp, folder / final)
            journal.unlink()
        for tmp in (p for p in names if p.name.endswith(".tmp")):
            if tmp.exists() and not _alive(int(_TMP.match(tmp.name).group(1))):
                tmp.unlink()
    except JournalError:
        raise
    except (OSError, ValueError):
        return


class JournalError(ValueError):
    """A journal that names a file outside its own folder: refused, and left as it is."""


def _checked_pairs(folder: Path, journal: Path, pairs) -> list[tuple[str, str]]:
    """The journal's renames, each a temporary of this folder (a plain name a writer of this
    module gives) to a path inside the folder (relative, no "..", no link on the way); a
    journal with anything else (planted in a shared or downloaded run) is an error naming it."""
    def refuse(what) -> JournalError:
        return JournalError(f"{journal}: refused, the journal names {what!r} outside {folder} (left as it is)")

    if not isinstance(pairs, list):
        raise refuse(pairs)
    root = folder.resolve()
    checked = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise refuse(pair)
        tmp, final = pair
        if os.sep in tmp or (os.altsep and os.altsep in tmp) or not _TMP.match(tmp) or not tmp.endswith(".tmp"):
            raise refuse(tmp)
        rel = Path(final)
        if rel.is_absolute() or not rel.parts or ".." in rel.parts:
            raise refuse(final)
        where = folder
        for part in rel.parts:              # no symbolic link anywhere on the way, the file included
            where = where / part
            if where.is_symlink():
                raise refuse(final)
        if root not in (folder / rel).resolve().parents:
            raise refuse(final)
        checked.append((tmp, final))
    return checked


def _prepare(folder: Path, target: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot create its folder ({exc.strerror or exc})", str(target)) from None
    settle(folder)


def _failed(target: Path, exc: OSError) -> WriteError:
    return WriteError(exc.errno, f"cannot write ({exc.strerror or exc}); nothing was changed", str(target))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` (for writers that want a file name); rename on success."""
    path = Path(path)
    _prepare(path.parent, path)
    try:
        tmp = _temporary(path)
    except OSError as exc:
        raise _failed(path, exc) from None
    try:
        yield tmp
        _umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _failed(path, exc) from None
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs):
    """Yield an open temporary file beside ``path``; it replaces ``path`` when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_together(files: dict[Path, str | bytes | Callable[[Path], object]], index: Path) -> list[Path]:
    """Write every file (path -> content, or a function that writes the file at the path
    it is given) as one set: either every file is replaced or none is. Files may lie in
    ``index``'s folder or below it; their temporaries and the journal lie in that folder,
    so one ``settle`` of it sees the whole set. ``index`` (the file readers open first)
    is renamed last."""
    index = Path(index)
    home = index.parent
    items = {Path(k): v for k, v in files.items()}
    paths = sorted(items, key=lambda p: p == index)
    root = home.resolve()
    for path in paths:
        folder = path.parent.resolve()
        if folder != root and root not in folder.parents:
            raise ValueError(f"{path} lies outside {home}, the folder of the set's index {index.name}")
    _prepare(home, index)
    tmps: list[tuple[Path, Path]] = []
    journal = None
    try:
        for path in paths:
            content = items[path]
            try:
                tmp = _temporary(home / path.name)
            except OSError as exc:
                raise _failed(path, exc) from None
            tmps.append((tmp, path))
            try:
                if callable(content):
                    content(tmp)
                else:
                    tmp.write_bytes(content.encode() if isinstance(content, str) else content)
                _umask_mode(tmp)
            except OSError as exc:
                raise _failed(path, exc) from None
        pairs = [(os.path.relpath(t, home), os.path.relpath(p, home)) for t, p in tmps]
        journal = _temporary(home / (index.name + ".journal"), suffix=".commit")
        try:
            staged = _temporary(journal)
            staged.write_text(json.dumps(pairs))
            os.replace(staged, journal)
        except OSError as exc:
            raise _failed(index, exc) from None
    except BaseException:
        for tmp, _ in tmps:
            tmp.unlink(missing_ok=True)
        if journal is not None:
            journal.unlink(missing_ok=True)
        raise
    for tmp, path in tmps:        # committed: from here on, settle() finishes what a kill interrupts
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
    journal.unlink()
    return paths
