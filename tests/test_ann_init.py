"""An ANN started from another ANN checkpoint (``trainer ann --init``): a QCFS ANN fine-tuned
to other levels, a ReLU ANN turned QCFS; architectures that differ otherwise refused, and a
run that refuses to resume from another init."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.checkpoint import CheckpointError
from trainer.models import ANN, build_config
from trainer.recipe import OptimConfig, Runtime
from trainer.train import init_weights, train_ann

REPO = Path(__file__).resolve().parents[1]
OPT = OptimConfig(epochs=1, batch_size=64, lr=0.01)


def _arch(digits, **kw):
    return build_config("vgg_tiny", digits.input_shape, digits.num_classes, conv_dropout=0.0, fc_dropout=0.0, **kw)


@pytest.fixture(scope="module")
def qcfs8(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("init") / "a8.pt"
    return train_ann(digits, _arch(digits, norm=True, quant_levels=8), OPT, out, Runtime(progress=False))


def test_a_qcfs_ann_fine_tunes_to_other_levels_from_its_weights(tmp_path, digits, qcfs8):
    ann = ANN(_arch(digits, norm=True, quant_levels=4))
    assert init_weights(ann, qcfs8) == set()
    assert all(torch.equal(ann.state_dict()[k], v) for k, v in qcfs8.state_dict.items())
    out = train_ann(digits, _arch(digits, norm=True, quant_levels=4), OPT, tmp_path / "a4.pt", Runtime(progress=False),
                    init=qcfs8)
    assert out.arch.quant_levels == 4 and out.train_state["config"]["init"]
    finer = _arch(digits, norm=True, quant_levels=4, input_levels=8)     # and to another input
    out = train_ann(digits, finer, OPT, tmp_path / "a4i8.pt", Runtime(progress=False), init=qcfs8)
    assert (out.arch.quant_levels, out.arch.input_quant_levels) == (4, 8)


def test_a_relu_init_gets_its_thresholds_from_the_data(tmp_path, digits):
    relu = train_ann(digits, _arch(digits, norm=True), OPT, tmp_path / "relu.pt", Runtime(progress=False))
    out = train_ann(digits, _arch(digits, norm=True, quant_levels=4), OPT, tmp_path / "q.pt", Runtime(progress=False),
                    init=relu)
    assert "act_thresholds" not in relu.state_dict and (out.state_dict["act_thresholds"] > 0).all()


def test_the_pipelines_qcfs_ann_is_an_init(tmp_path, digits, qcfs8):
    import dataclasses
    ann = ANN(_arch(digits, norm=True, quant_levels=4))
    assert init_weights(ann, dataclasses.replace(qcfs8, stage="qcfs_ann")) == set()
    with pytest.raises(CheckpointError, match="stage 'converted'"):
        init_weights(ann, dataclasses.replace(qcfs8, stage="converted"))


def test_another_architecture_or_init_is_refused(tmp_path, digits, qcfs8):
    with pytest.raises(CheckpointError, match="layer 0"):
        train_ann(digits, _arch(digits, quant_levels=4), OPT, tmp_path / "x.pt", Runtime(progress=False), init=qcfs8)
    out = tmp_path / "a4.pt"
    train_ann(digits, _arch(digits, norm=True, quant_levels=4), OPT, out, Runtime(progress=False), init=qcfs8)
    with pytest.raises(Exception, match="init"):                 # resuming from other weights
        train_ann(digits, _arch(digits, norm=True, quant_levels=4), OPT, out, Runtime(progress=False))


def test_the_command_line_names_init_and_exits_2(tmp_path, qcfs8):
    from trainer.checkpoint import save_checkpoint
    path = save_checkpoint(qcfs8, tmp_path / "a8.pt")
    cmd = [sys.executable, "-m", "trainer", "ann", "--dataset", "digits", "--train-subset", "200", "--epochs", "1",
           "--quiet", "--init", str(path)]
    bad = subprocess.run(cmd + ["--quant-levels", "4", "--out", str(tmp_path / "b.pt")], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and f"--init {path}: its architecture" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "b.pt").exists()
    same = subprocess.run(cmd + ["--batch-norm", "--quant-levels", "8", "--out", str(path)], cwd=REPO,
                          capture_output=True, text=True)
    assert same.returncode == 2 and f"--out: {path} is the command's own input {path}" in same.stderr
