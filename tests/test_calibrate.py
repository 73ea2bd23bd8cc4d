"""Bias calibration at T (trainer.calibrate): the SNN's rates drift from the ANN's
activations by a mean per channel at few steps; calibrating the biases on training images
removes most of it, for a QCFS conversion and for a balanced (ReLU) one."""
from __future__ import annotations

import itertools
import operator

import numpy as np
import pytest
import torch

from records.cli import BadInput
from trainer.chain import ArchChoice, ConvertConfig, convert
from trainer.data import batches, load_dataset
from trainer.defaults import ann_recipe
from trainer.diagnose import RecordingSNN, ann_activations
from trainer.models import neuron_layers
from trainer.recipe import Runtime
from trainer.train import train_ann


def _mean_shift(ckpt, ann, x, timesteps) -> float:
    """Mean over neuron layers and channels of |mean(min(ANN activation / scale, 1) - SNN rate)| x
    threshold, the scale being what a rate of 1 stands for (QCFS: lambda; balanced: the
    thresholds' product)."""
    thresholds = ckpt.snn.thresholds
    qcfs = ckpt.snn.encoding == "integrate"
    scales = thresholds if qcfs else list(itertools.accumulate(thresholds, operator.mul))
    snn = RecordingSNN(ckpt.model(), thresholds, v_init=ckpt.snn.v_init, encoding=ckpt.snn.encoding).eval()
    with torch.no_grad():
        target = ann_activations(ann.eval(), x)
        snn(x, timesteps, generator=torch.Generator().manual_seed(1))
    shifts = []
    for k, a in enumerate(target):
        diff = ((a / scales[k]).clamp(max=1) - snn.counts[k] / timesteps) * thresholds[k]
        shifts.append(float(diff.mean([0, 2, 3] if diff.dim() == 4 else [0]).abs().mean()))
    return float(np.mean(shifts))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_subset=600, test_subset=100)


@pytest.mark.parametrize("quant_levels,timesteps,cut", [(4, 2, 0.6), (None, 8, 0.6)], ids=["qcfs", "balanced"])
def test_bias_calibration_moves_the_snn_toward_its_ann_at_few_steps(tmp_path, digits, quant_levels, timesteps, cut):
    """QCFS at T = 2 (fewer steps than its 4 levels) and a balanced ReLU conversion at T = 8
    (its thresholds scaled by the paper's 0.7): calibration on 256 training images removes
    most of the per-channel drift (on other images), biases every hidden layer, and is
    recorded. Before the balanced case was supported, ``convert`` refused it."""
    rt = Runtime(progress=False)
    arch = ArchChoice("vgg_tiny", 0.0, 0.0, True, quant_levels).config(digits)
    ann_ckpt = train_ann(digits, arch, ann_recipe("digits", epochs=6), tmp_path / "ann.pt", rt)
    plain = convert(ann_ckpt, digits, ConvertConfig(), timesteps, tmp_path / "plain.pt", rt)
    calibrated = convert(ann_ckpt, digits, ConvertConfig(bias_calibration=256), timesteps,
                         tmp_path / "calibrated.pt", rt)
    assert calibrated.snn.thresholds == plain.snn.thresholds
    x = next(batches(digits, "train", 256, shuffle=True, augment=False, seed=rt.seed + 1))[0]
    before = _mean_shift(plain, ann_ckpt.model(), x, timesteps)
    after = _mean_shift(calibrated, ann_ckpt.model(), x, timesteps)
    print(f"mean |shift| per channel: {before:.4f} -> {after:.4f}")
    assert after < cut * before, (before, after)
    hidden = [i for i, _ in neuron_layers(calibrated.arch)]
    assert all(f"layers.{i}.bias" in calibrated.state_dict for i in hidden)
    record = calibrated.metrics["bias_calibration"]
    assert record["timesteps"] == timesteps and record["samples"] == 256 and len(record["mean_abs_shift"]) == len(hidden)
    assert calibrated.metrics["balance"]["bias_calibration"] == 256
    assert "bias_calibration" not in plain.metrics["balance"]


def test_bias_calibration_moves_a_residual_net_toward_its_ann(tmp_path, digits):
    """A residual net balanced at T = 8 (its blocks' neurons at threshold 1): calibration
    biases both of every block's neuron layers (conv1 for the inner neurons, conv2 for the
    sum) and removes most of the drift, on other images. Before, ``convert`` refused it."""
    rt = Runtime(progress=False)
    arch = ArchChoice("resnet_tiny", 0.0, 0.0, True).config(digits)
    ann_ckpt = train_ann(digits, arch, ann_recipe("digits", epochs=4), tmp_path / "ann.pt", rt)
    plain = convert(ann_ckpt, digits, ConvertConfig(), 8, tmp_path / "plain.pt", rt)
    calibrated = convert(ann_ckpt, digits, ConvertConfig(bias_calibration=256), 8, tmp_path / "calibrated.pt", rt)
    x = next(batches(digits, "train", 256, shuffle=True, augment=False, seed=rt.seed + 1))[0]
    before = _mean_shift(plain, ann_ckpt.model(), x, 8)
    after = _mean_shift(calibrated, ann_ckpt.model(), x, 8)
    print(f"mean |shift| per channel: {before:.4f} -> {after:.4f}")
    assert after < 0.6 * before, (before, after)
    blocks = [i for i, layer in enumerate(calibrated.arch.layers) if layer.kind == "resblock"]
    assert blocks and all(calibrated.arch.layers[i].bias for i in blocks)
    assert all(calibrated.state_dict[f"layers.{i}.{part}.bias"].abs().sum() > 0 for i in blocks
               for part in ("conv1", "conv2"))
    assert len(calibrated.metrics["bias_calibration"]["mean_abs_shift"]) == len(neuron_layers(calibrated.arch))


@pytest.mark.parametrize("name,encoding,timesteps", [("vgg_tiny", "poisson", 11), ("vgg_tiny", "integrate", 4),
                                                    ("resnet_tiny", "poisson", 11)])
def test_one_pass_calibration_equals_replay(name, encoding, timesteps):
    """The kept-spikes calibration gives the replayed one's biases bit for bit (T = 11: a
    window cut short; biases added to layers without one; a residual net's blocks, one with
    a projecting shortcut, whose inner neurons' spikes never leave the block)."""
    from trainer.calibrate import calibrate_biases, calibrate_biases_by_replay
    from trainer.models import ANN, build_config

    torch.manual_seed(0)
    arch = build_config(name, (1, 8, 8), 10)
    ann = ANN(arch).eval()
    x = torch.rand(6, 1, 8, 8)
    thresholds = [0.6 + 0.1 * k for k in range(len(neuron_layers(arch)))]
    scales = list(itertools.accumulate(thresholds, operator.mul))
    args = (ann, arch, ann.state_dict(), thresholds, None, x, timesteps)
    fast = calibrate_biases(*args, scales=scales, encoding=encoding, seed=3)
    slow = calibrate_biases_by_replay(*args, scales=scales, encoding=encoding, seed=3)
    assert fast[0] == slow[0] and fast[2] == slow[2] and any(v > 0 for v in fast[2])
    assert fast[1].keys() == slow[1].keys()
    assert all(torch.equal(fast[1][k], slow[1][k]) for k in fast[1])
