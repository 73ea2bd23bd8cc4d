"""Every case of the bad-input corpus (tests/bad_input_corpus.py) against the real
programs: exit code 2, one line ``<program>: ...`` naming the problem, and not one file
changed or added under the folder of good files the case works in."""
from __future__ import annotations

import collections
import errno
import hashlib
import os
import shlex
import shutil
from pathlib import Path

import pytest
import torch

import export.to_lava
import hwsim.run
import pipeline.__main__
import records.atomic
import reports.__main__
import trainer.__main__
from bad_input_corpus import CASES
from bad_input_kit import CLASSES
from export.exporter import ExportConfig, export_checkpoint
from hwsim.run import HwsimConfig, run_hwsim
from records.layout import COMPARED_STAGES, RunLayout
from records.timesteps import TimeSteps
from records.trainer_summary import StageAccuracy, TrainerSummary, save_trainer_summary
from trainer.data import load_dataset
from trainer.defaults import ann_recipe
from trainer.chain import ArchChoice
from trainer.recipe import Runtime
from trainer.train import train_ann

MAINS = {"trainer": trainer.__main__.main, "export.to_lava": export.to_lava.main, "hwsim.run": hwsim.run.main,
         "reports": reports.__main__.main, "pipeline": pipeline.__main__.main}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good_files(tmp_path_factory, converted, stdb) -> Path:
    """The folder of good files every case starts from (see the corpus's docstring)."""
    t = tmp_path_factory.mktemp("good")
    run = RunLayout(t / "run")
    run.root.mkdir()
    shutil.copy(converted, run.checkpoint("converted"))
    shutil.copy(stdb, run.checkpoint("stdb"))
    # As `trainer ann --out ann.pt --lr 0.05 --epochs 1 --train-subset 200` makes it.
    bundle = load_dataset("digits", train_subset=200)
    train_ann(bundle, ArchChoice().config(bundle), ann_recipe("digits", epochs=1), t / "ann.pt",
              Runtime(progress=False))
    for stage in COMPARED_STAGES:
        export_checkpoint(run.checkpoint(stage), ExportConfig(eval_samples=0, calibration_samples=0, onnx=False,
                                                              nir=False))
    run_hwsim([(s, run.graph(s)) for s in COMPARED_STAGES], HwsimConfig(samples=20, progress=False, device="cpu"),
              run.hwsim_dir)
    save_trainer_summary(TrainerSummary("digits", "vgg_tiny", TimeSteps(6, 200), "stdb", [
        StageAccuracy("ann", None, 90.0), StageAccuracy("converted", 6, 80.0), StageAccuracy("stdb", 6, 85.0)]),
        run.trainer_summary)
    shutil.copy(REPO / "hwsim" / "presets" / "first_order.json", t / "energy.json")
    return t


def snapshot(root: Path) -> dict[str, str]:
    """Every file (hidden ones too) and folder under root, with the files' digests."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = ("link -> " + os.readlink(p) if os.path.islink(p)
                                            else hashlib.sha256(Path(p).read_bytes()).hexdigest())
    return out


def inject(kind: str | None, monkeypatch) -> None:
    """A full disk (the write fails once the content is out) or a folder that refuses new files."""
    if kind == "no-space":
        def full(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        monkeypatch.setattr(records.atomic, "_umask_mode", full)
    elif kind == "torch-full":        # torch's zip writer on a full disk raises a RuntimeError, not an OSError
        def enforce_fail(obj, f, *args, **kwargs):
            f.write(b"PK")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
        monkeypatch.setattr(torch, "save", enforce_fail)
    elif kind == "no-permission":
        def refuse(path, suffix=".tmp"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path.parent))
        monkeypatch.setattr(records.atomic, "_temporary", refuse)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.klass}: {c.name}" for c in CASES])
def test_bad_input(case, good_files, tmp_path, monkeypatch, capsys):
    t = tmp_path / "t"
    shutil.copytree(good_files, t)
    monkeypatch.setenv("HYBRID_SNN_CACHE", str(tmp_path / "cache"))
    if case.setup is not None:
        case.setup(t)
    before = snapshot(t)
    inject(case.fault, monkeypatch)
    try:
        code = MAINS[case.program](shlex.split(case.args.format(t=t)))
    except SystemExit as exc:          # argparse's exit
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(case.program) and case.expect in lines[0], lines[0]
    assert "Traceback" not in err and "weights_only" not in err
    assert snapshot(t) == before, "files changed"


def test_corpus_covers_every_class():
    counts = collections.Counter(c.klass for c in CASES)
    assert set(counts) == set(CLASSES)
    assert min(counts.values()) >= 6, counts
    assert len({(c.klass, c.name) for c in CASES}) == len(CASES)
