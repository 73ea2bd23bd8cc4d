"""How every command line of the chain reports bad input: one line on stderr,

    <program>: <file or option>: <what is wrong>

and exit code 2, before any work starts where the problem is in the arguments. Defined
once here and used by ``trainer``, ``export.to_lava``, ``hwsim.run``, ``reports`` and
``pipeline``: ``Parser`` turns argparse's own complaints into that line, the argument
types below check ranges and finiteness at parse time, and ``run_main`` turns the
errors a user can fix (a record's, a data set's, an unwritable or full disk) into it.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable

from records.timesteps import MAX_TIMESTEPS

EXIT_BAD_INPUT = 2


class BadInput(ValueError):
    """An input a user can fix; the message names the file or option."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def program_name(prog: str) -> str:
    """'python -m trainer ann' -> 'trainer ann'."""
    return prog[len("python -m "):] if prog.startswith("python -m ") else prog


class Parser(argparse.ArgumentParser):
    """argparse with the chain's error line instead of usage + message."""

    def error(self, message: str):
        m = re.match(r"argument ([^:/ ]+)(?:/\S+)?: (.*)", message, re.S)
        if m:
            message = f"{m.group(1)}: {m.group(2)}"
        else:
            m = re.match(r"the following arguments are required: (.*)", message)
            if m:
                message = f"{m.group(1)}: required"
        self.exit(EXIT_BAD_INPUT, f"{program_name(self.prog)}: {one_line(message)}\n")


# ---- argument types: each raises ArgumentTypeError, which Parser reports against its option
def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (either bound may be open-ended)."""
    want = "an integer" + (f" >= {lo}" if lo is not None and hi is None else "") + \
           (f" in {lo}..{hi}" if lo is not None and hi is not None else "")

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {want}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[str], float]:
    """A finite real number in the interval given (NaN and infinities are bad input)."""
    if lo is None and hi is None:
        want = "a finite number"
    else:
        left = "(" if lo_open or lo is None else "["
        right = ")" if hi_open or hi is None else "]"
        low, high = "-inf" if lo is None else f"{lo:g}", "inf" if hi is None else f"{hi:g}"
        want = f"a finite number in {left}{low}, {high}{right}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}") from None
        if not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo))) or \
                (hi is not None and (v > hi or (hi_open and v == hi))):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return v
    parse.__name__ = "number"
    return parse


def run_name(text: str) -> str:
    """A run folder's name: one path component, not hidden."""
    if not text or text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be a plain folder name (no '/', not hidden), got {text!r}")
    return text


POSITIVE = integer(1)
TIMESTEPS = integer(1, MAX_TIMESTEPS)    # every T option: work sized before it starts
COUNT = integer(0)          # a count where 0 means "none" / "skip"
SEED = integer(0, 2**32 - 1)
PROBABILITY = number(0, 1, hi_open=True)     # dropout, label smoothing: a number in [0, 1)


def require(ok: bool, name: str, value, want: str) -> None:
    """A configuration field's check, reported against the option that sets it."""
    if not ok:
        raise BadInput(f"--{name.replace('_', '-')}: must be {want}, got {value!r}")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _folder_problem(folder: Path) -> str | None:
    base = _nearest_existing(folder)
    if not base.is_dir():
        return f"{base} is a file, not a folder"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"folder {base} is not writable"
    return None


def _file_problem(path: Path) -> str | None:
    if path.is_dir():
        return f"{path} is a folder, not a file"
    return _folder_problem(path.parent)


def _dir_problem(path: Path) -> str | None:
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    return _folder_problem(path)


def writable_file(path: str | os.PathLike, option: str, inputs: tuple = ()) -> Path:
    """``path`` can be written as a file: not a folder, its folder exists or can be made,
    and it is none of the command's ``inputs`` (no command writes over what it reads)."""
    problem = _file_problem(Path(path))
    if problem:
        raise BadInput(f"{option}: {problem}")
    for given in inputs:
        if Path(given).exists() and Path(path).exists() and os.path.samefile(given, path):
            raise BadInput(f"{option}: {path} is the command's own input {given}; write to another file")
    return Path(path)


def writable_dir(path: str | os.PathLike, option: str) -> Path:
    """``path`` is a folder that exists or can be made, and files can be created in it."""
    problem = _dir_problem(Path(path))
    if problem:
        raise BadInput(f"{option}: {problem}")
    return Path(path)


def _path_type(check: Callable[[Path], str | None], name: str) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        problem = check(Path(text))
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return Path(text)
    parse.__name__ = name
    return parse


OUTPUT_FILE = _path_type(_file_problem, "output file")
OUTPUT_DIR = _path_type(_dir_problem, "output folder")


def describe(exc: BaseException) -> str:
    """The one-line text of an error a user can fix (an OSError names its file first)."""
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror)
    return one_line(str(exc) or type(exc).__name__)


def run_main(program: str, body: Callable[[], int | None]) -> int:
    """Run a command's body; an error a user can fix becomes the one-line message and exit 2."""
    try:
        return body() or 0
    except (ValueError, OSError) as exc:     # records' and data sets' errors are ValueErrors
        print(f"{program}: {describe(exc)}", file=sys.stderr)
    except (MemoryError, RuntimeError) as exc:
        if str(exc).startswith("Symlink loop from "):        # pathlib's resolve() of a path that loops
            print(f"{program}: {one_line(str(exc))}: a symbolic link that points back at itself, not a file or "
                  "folder", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc):    # torch's allocators say so
            raise
        first = one_line(str(exc))[:160]
        print(f"{program}: not enough memory for these options ({first}); fewer time steps, samples or a "
              "smaller --chunk / --batch-size need less", file=sys.stderr)
    return EXIT_BAD_INPUT
