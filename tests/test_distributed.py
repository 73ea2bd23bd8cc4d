"""Data-parallel training under torchrun (2 CPU processes, gloo) equals one process with the same global batch."""
import os
import socket
import subprocess
import sys
from pathlib import Path

from trainer.checkpoint import load_checkpoint
from trainer.data import load_dataset, validation_split

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_module(module, *args, cwd, procs=1):
    """``python -m module args`` in one process, or under torchrun in ``procs`` (gloo); must succeed."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                 "--master_addr", "127.0.0.1", "--master_port", str(free_port())] if procs > 1 else [sys.executable])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([*launcher, "-m", module, *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def trainer(*args, cwd, procs=1):
    return run_module("trainer", *args, cwd=cwd, procs=procs)


def assert_same_weights(a: Path, b: Path, atol=1e-6):
    sa, sb = load_checkpoint(a).train_state, load_checkpoint(b).train_state
    for k, v in sa["last_state_dict"].items():
        assert (v - sb["last_state_dict"][k]).abs().max() <= atol, k
    ha, hb = sa["history"][-1], sb["history"][-1]
    assert abs(ha["train_loss"] - hb["train_loss"]) < 1e-5 and ha["val_acc"] == hb["val_acc"]


def even_subset(start: int) -> str:
    """The first digits subset size from ``start`` whose training part (the held-out images
    it holds go to validation) is even, so every global batch of 64 splits evenly over 2 ranks."""
    k = start
    while len(validation_split(load_dataset("digits", train_subset=k), 0.1)[0].train_y) % 2:
        k += 1
    return str(k)


def test_ann_and_stdb_two_processes_match_one(tmp_path):
    subset = even_subset(256)
    ann = ["ann", "--train-subset", subset, "--epochs", "2", "--conv-dropout", "0", "--fc-dropout", "0",
           "--quiet", "--device", "cpu"]
    trainer(*ann, "--out", "one/ann.pt", cwd=tmp_path)
    trainer(*ann, "--out", "two/ann.pt", cwd=tmp_path, procs=2)
    assert_same_weights(tmp_path / "one/ann.pt", tmp_path / "two/ann.pt")

    trainer("convert", "one/ann.pt", "--timesteps", "4", "--quiet", "--out", "conv.pt", cwd=tmp_path)
    stdb = ["stdb", "conv.pt", "--timesteps", "4", "--epochs", "1", "--train-subset", subset, "--test-subset", "50",
            "--bptt-window", "2", "--quiet", "--device", "cpu"]
    trainer(*stdb, "--out", "one/stdb.pt", cwd=tmp_path)
    trainer(*stdb, "--out", "two/stdb.pt", cwd=tmp_path, procs=2)
    assert_same_weights(tmp_path / "one/stdb.pt", tmp_path / "two/stdb.pt")
