"""Export and hwsim killed (SIGKILL) at every step of writing their output set: what is
left, once the next reader or writer has settled the folder, is the whole old set or
the whole new set, with no temporary file beside it."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.exporter import ExportConfig, export_checkpoint
from records.atomic import settle, write_together
from records.hwsim_results import layer_rows, load_results, summary_rows, LAYER_COLUMNS, SUMMARY_COLUMNS
from records.inputs import load_inputs
from records.table import csv_text

REPO = Path(__file__).resolve().parents[1]

# Runs a module's main; the process kills itself with SIGKILL right after its k-th call
# of os.<name> (chmod: a temporary file is complete; replace: a rename), k = 0: never.
KILLER = """
import atexit, os, runpy, sys
name, kill_at = sys.argv[1].split(":")
real, count = getattr(os, name), [0]
atexit.register(lambda: print("calls:", count[0]))
def wrapped(*args, **kwargs):
    real(*args, **kwargs)
    count[0] += 1
    if count[0] == int(kill_at):
        os.kill(os.getpid(), 9)
setattr(os, name, wrapped)
module, sys.argv = sys.argv[2], sys.argv[2:]
runpy.run_module(module, run_name="__main__")
"""
KILL_POINTS = ("chmod", "replace")


def run_killed(point: str, module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", KILLER, point, module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def calls_of(done: subprocess.CompletedProcess) -> int:
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1].split()[-1])


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_killed_export_leaves_the_old_or_the_new_set(converted, tmp_path):
    base = ["--eval-samples", "0", "--calibration-samples", "0", "--no-onnx"]
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"

    def old_export(out):
        export_checkpoint(converted, ExportConfig(out=out, weight_bits=6, eval_samples=0, calibration_samples=0,
                                                  onnx=False))
    old_export(old_dir)
    old, new = digests(old_dir), None
    seen = []
    for name in KILL_POINTS:
        total = calls_of(run_killed(f"{name}:0", "export.to_lava", str(converted), "--out", str(new_dir), *base))
        new = digests(new_dir)
        assert old.keys() == new.keys() and all(old[k] != new[k] for k in old)
        for k in range(1, total + 1):
            out = tmp_path / f"{name}{k}"
            old_export(out)
            done = run_killed(f"{name}:{k}", "export.to_lava", str(converted), "--out", str(out), *base)
            assert done.returncode == -9, done.stderr
            settle(out)
            left = digests(out)
            assert left in (old, new), f"killed after {name} {k}: a mixed set"
            seen.append(left == new)
    assert False in seen and True in seen


def test_killed_hwsim_leaves_a_consistent_set(converted, tmp_path):
    graph = export_checkpoint(converted, ExportConfig(out=tmp_path / "g", eval_samples=0, calibration_samples=0,
                                                      onnx=False, nir=False)).out / "coregraph.npz"
    args = ["--graph", f"a={graph}", "--no-progress", "--device", "cpu"]
    assert run_killed("chmod:0", "hwsim.run", *args, "--samples", "10", "--out", str(tmp_path / "old")).returncode == 0
    seen = set()
    for name in KILL_POINTS:
        total = calls_of(run_killed(f"{name}:0", "hwsim.run", *args, "--samples", "20", "--out",
                                    str(tmp_path / "probe")))
        for k in range(1, total + 1):
            out = tmp_path / f"{name}{k}"
            shutil.copytree(tmp_path / "old", out)
            done = run_killed(f"{name}:{k}", "hwsim.run", *args, "--samples", "20", "--out", str(out))
            assert done.returncode == -9, done.stderr
            doc = load_results(out)                  # the reader settles the folder first
            assert not [p for p in out.iterdir() if p.name.startswith(".")]
            assert (out / "layers.csv").read_text() == csv_text(layer_rows(doc), LAYER_COLUMNS)
            assert (out / "summary.csv").read_text() == csv_text(summary_rows(doc), SUMMARY_COLUMNS)
            assert load_inputs(out / "inputs.npz").samples == doc["samples"]
            seen.add(doc["samples"])
    assert seen == {10, 20}                       # killed before the commit: old; after: new


def test_settle_keeps_what_live_writers_own(tmp_path):
    """Temporaries of a running process stay; those of a finished one go."""
    mine = tmp_path / f".a.txt.{os.getpid()}.x1.tmp"
    mine.write_text("in progress")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".a.txt.{int(dead.stdout)}.x2.tmp"
    stale.write_text("left by a killed writer")
    write_together({tmp_path / "a.txt": "a", tmp_path / "sub" / "b.txt": "b"}, index=tmp_path / "a.txt")
    assert mine.exists() and not stale.exists()
    assert (tmp_path / "sub" / "b.txt").read_text() == "b"
    with pytest.raises(ValueError, match="outside"):
        write_together({tmp_path / "a.txt": "a", tmp_path.parent / "x.txt": "x"}, index=tmp_path / "a.txt")
