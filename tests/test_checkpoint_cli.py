"""The checkpoint format and the trainer's command line on bad input."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import Checkpoint, CheckpointError, SNNParams, load_checkpoint, save_checkpoint
from trainer.models import ANN, ARCHITECTURES, ArchError, build_config, neuron_layers

REPO = Path(__file__).resolve().parents[1]
DATA = {"dataset": "digits", "data_root": None, "normalisation": {"mean": [0.0], "std": [1.0], "clip": 1.0},
        "class_names": [str(i) for i in range(10)], "input_shape": [1, 8, 8]}


def make_checkpoint(stage="converted") -> Checkpoint:
    arch = build_config("vgg_tiny", (1, 8, 8), 10)
    snn = SNNParams([1.5] * len(neuron_layers(arch)), leak=1.0, timesteps=10) if stage != "ann" else None
    return Checkpoint(stage=stage, arch=arch, state_dict=ANN(arch).state_dict(), data=DATA, snn=snn,
                      metrics={"test_acc": 90.0})


def test_round_trip(tmp_path):
    path = save_checkpoint(make_checkpoint(), tmp_path / "c.pt")
    ckpt = load_checkpoint(path)
    assert ckpt.stage == "converted" and ckpt.snn.thresholds == [1.5, 1.5, 1.5]
    assert ckpt.arch.to_dict() == make_checkpoint().arch.to_dict()
    assert ckpt.provenance["version"] and ckpt.provenance["command"]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_builds(name):
    shape = (1, 8, 8) if name == "vgg_tiny" else (3, 32, 32)
    cfg = build_config(name, shape, 10)
    assert ANN(cfg)(torch.zeros(1, *shape)).shape == (1, 10)
    assert all(p.ndim > 1 for p in ANN(cfg).parameters())  # bias-free


def test_unknown_architecture():
    with pytest.raises(ArchError, match="unknown architecture 'vgg7'"):
        build_config("vgg7", (3, 32, 32), 10)


def test_rejects_foreign_and_corrupt_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a hybrid-snn-checkpoint"):
        load_checkpoint(foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable checkpoint"):
        load_checkpoint(corrupt)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rejects_newer_version_and_mismatched_weights(tmp_path):
    path = save_checkpoint(make_checkpoint(), tmp_path / "c.pt")
    raw = torch.load(path, weights_only=True)
    raw["version"] = 99
    torch.save(raw, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="version 99 is newer"):
        load_checkpoint(tmp_path / "new.pt")
    raw["version"] = 1
    raw["state_dict"]["layers.0.weight"] = torch.zeros(5, 1, 3, 3)
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: weights do not fit the vgg_tiny config"):
        load_checkpoint(tmp_path / "bad.pt")
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["layers.0.bias"] = torch.zeros(32)
    torch.save(raw, tmp_path / "bias.pt")
    with pytest.raises(CheckpointError, match="bias"):
        load_checkpoint(tmp_path / "bias.pt")
    raw = torch.load(path, weights_only=True)
    raw["snn"]["thresholds"] = [1.0]
    torch.save(raw, tmp_path / "th.pt")
    with pytest.raises(CheckpointError, match="1 thresholds for 3 neuron layers"):
        load_checkpoint(tmp_path / "th.pt")


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
    missing = run_cli("chain", "--dataset", "mnist", "--data-root", str(tmp_path / "nowhere"), "--quiet",
                      "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nowhere" in missing.stderr
    assert not (tmp_path / "runs").exists()

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    bad_ckpt = run_cli("convert", str(foreign), "--timesteps", "5", "--quiet", cwd=tmp_path)
    assert bad_ckpt.returncode == 2 and bad_ckpt.stderr.strip().count("\n") == 0
    assert "not a hybrid-snn-checkpoint" in bad_ckpt.stderr
    assert not (tmp_path / "converted.pt").exists()

    bad_arch = run_cli("chain", "--arch", "vgg7", "--quiet", "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert bad_arch.returncode == 2 and bad_arch.stderr.strip().count("\n") == 0
    assert bad_arch.stderr.startswith("trainer chain: --arch: invalid choice: 'vgg7'")
    assert not (tmp_path / "runs").exists()


def test_written_files_follow_the_umask(tmp_path):
    """Temporary files start private (0600); what lands gets the mode of any new file."""
    import os

    from records.atomic import atomic_file, write_together

    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "one.bin") as f:
            f.write(b"x")
        write_together({tmp_path / "a.txt": "a", tmp_path / "b.txt": lambda p: p.write_text("b")},
                       index=tmp_path / "a.txt")
    finally:
        os.umask(old)
    for name in ("one.bin", "a.txt", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "one.bin"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_and_thresholds_are_refused(tmp_path, bad):
    path = save_checkpoint(make_checkpoint(), tmp_path / "c.pt")
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["layers.0.weight"][0, 0, 0, 0] = bad
    torch.save(raw, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"w\.pt: layers\.0\.weight holds 1 non-finite"):
        load_checkpoint(tmp_path / "w.pt")
    raw = torch.load(path, weights_only=True)
    raw["snn"]["thresholds"][1] = bad
    torch.save(raw, tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match=r"t\.pt: thresholds must be positive and finite"):
        load_checkpoint(tmp_path / "t.pt")
    ckpt = load_checkpoint(path)
    ckpt.state_dict["layers.0.weight"][0, 0, 0, 0] = bad
    with pytest.raises(CheckpointError, match="non-finite"):            # never saved either
        save_checkpoint(ckpt, tmp_path / "again.pt")
    assert not (tmp_path / "again.pt").exists()


def test_chain_stops_when_the_ann_is_still_at_chance(tmp_path):
    """An ANN recipe that does not learn stops the chain before conversion, naming the recipe."""
    done = run_cli("chain", "--lr", "3", "--epochs", "2", "--train-subset", "300", "--no-scratch", "--quiet",
                   "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 2
    assert "chance is 10.0 %" in done.stderr and "--lr 3" in done.stderr and done.stderr.count("\n") == 1
    run = tmp_path / "runs" / "digits-vgg_tiny"
    assert (run / "ann.pt").is_file() and not (run / "converted.pt").exists()
