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
from trainer.layers import AvgPool, Conv, Flatten, Linear, ResBlock
from trainer.models import ANN, ArchConfig, build_config, count_macs, neuron_layers

REPO = Path(__file__).resolve().parents[1]


def test_pool_folding_is_exact_in_float():
    torch.manual_seed(0)
    spikes = (torch.rand(3, 4, 8, 12) < 0.3).double()
    conv_w = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    expected = F.conv2d(F.avg_pool2d(spikes, 2), conv_w, padding=1)
    layers = [Conv(4), AvgPool(2), Conv(5), AvgPool(2), Flatten(), Linear(7)]
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
        if core.spiking:
            assert core.vth == round(core.float_threshold * core.weight_scale)


def test_threshold_overflow_is_an_error(converted):
    from trainer.checkpoint import load_checkpoint
    ckpt = load_checkpoint(converted)
    ckpt.snn.thresholds[0] = 1e6
    with pytest.raises(QuantizationError, match=r"layer conv0: threshold 1e\+06 needs vth=\d+ .* 17-bit"):
        quantize_checkpoint(ckpt)


def _random_checkpoint(name, shape, threshold, seed=0):
    arch = build_config(name, shape, 10)
    torch.manual_seed(seed)
    data = {"dataset": "x", "normalisation": {"mean": [0.5] * shape[0], "std": [0.5] * shape[0]},
            "class_names": list("0123456789")}
    return Checkpoint("converted", arch, ANN(arch).state_dict(), data,
                      SNNParams([threshold] * len(neuron_layers(arch)), 1.0, 4))


def test_residual_block_folds_exactly_in_float():
    """Block currents from the folded layers equal the torch block's: a 1x1 projection after a
    2x2 pool (folded to 2x2, stride 2) and an identity (a one-to-one shortcut of weight 1)."""
    layers = [Conv(4), AvgPool(2), ResBlock(6, stride=2), ResBlock(6), Flatten(), Linear(3)]
    cfg = ArchConfig("res", (2, 8, 12), 3, layers)
    ann = ANN(cfg).double()
    data = {"dataset": "x", "normalisation": {"mean": [0, 0], "std": [1, 1]}, "class_names": list("abc")}
    ckpt = Checkpoint("converted", cfg, ann.state_dict(), data, SNNParams([1.0] * 5, 1.0, 4))
    folded = fold_layers(ckpt)
    assert [l.name for l in folded] == ["conv0", "block2_conv1", "block2_conv2", "block3_conv1", "block3_conv2",
                                        "fc5"]
    torch.manual_seed(1)
    conv = lambda x, l: F.conv2d(x, torch.from_numpy(l.weights), stride=l.stride, padding=l.padding)  # noqa: E731
    x = (torch.rand(3, 4, 8, 12) < 0.4).double()                     # conv0's spikes, before the pool
    inner = (torch.rand(3, 6, 2, 3) < 0.4).double()                  # the block's conv1 spikes
    block = ann.layers[2]
    with torch.no_grad():
        np.testing.assert_allclose(conv(x, folded[1]), block.conv1(F.avg_pool2d(x, 2)), atol=1e-12)
        sc = folded[2].shortcut
        assert sc.source == 0 and sc.op == "conv" and sc.weights.shape == (6, 4, 2, 2) and sc.stride == (4, 4)
        short = F.conv2d(x, torch.from_numpy(sc.weights), stride=sc.stride)
        np.testing.assert_allclose(conv(inner, folded[2]) + short, block.conv2(inner) + block.skip(F.avg_pool2d(x, 2)),
                                   atol=1e-12)
    sc = folded[4].shortcut
    assert sc.source == 2 and sc.op == "identity" and sc.weights.tolist() == [1.0]
    assert folded[4].ann_macs == 6 * 2 * 3 * 6 * 9 and folded[2].ann_macs == 6 * 2 * 3 * (6 * 9 + 4)


def test_resnet20_exports_and_every_backend_agrees():
    """ResNet20 at CIFAR size (random weights, low thresholds so that the deep blocks fire):
    identity and 1x1 shortcuts, the pool folded into the first block; hwsim and ONNX equal the
    reference bit for bit (Lava: ``examples/residual_backends.py``, minutes per sample)."""
    from hwsim.backends import run_graph
    graph, report = quantize_checkpoint(_random_checkpoint("resnet20", (3, 32, 32), 0.3))
    ops = [sc.op for c in graph.cores for sc in c.shortcuts]
    assert ops.count("identity") == 4 and ops.count("conv") == 4
    assert len(graph.cores) == 3 + 16 + 1 and len(graph.edges) == len(graph.cores) + 8
    for core, row in zip(graph.cores, report):
        for sc in core.shortcuts:                                     # the population's units
            assert row["shortcut"].startswith(f"{sc.op} from {sc.source}")
            if sc.op == "identity":
                assert abs(int(sc.weights[0]) * 2.0 ** sc.weight_exp - core.weight_scale) <= 2 ** sc.weight_exp
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    spikes = graph.input.encode(images, 3, seed=0)
    ref = fx.run_reference(graph, spikes)
    assert all(s.sum() > 0 for s in ref.spikes)
    for backend in ("hwsim", "onnx"):
        got = run_graph(backend, graph, spikes)
        for core, a, b in zip(graph.spiking_cores, got.spikes, ref.spikes):
            np.testing.assert_array_equal(a, b, err_msg=f"{backend}: {core.name}")
        np.testing.assert_array_equal(got.output, ref.output)


def test_shortcut_beyond_the_exponent_range_is_an_error_naming_the_block():
    ckpt = _random_checkpoint("resnet_tiny", (1, 8, 8), 1.0)
    conv2, short = (ckpt.state_dict[f"layers.8.{part}.weight"] for part in ("conv2", "shortcut"))
    conv2 *= 127 / 60000 / conv2.abs().max()          # the population's scale: 60,000 per unit (vth fits)
    short /= short.abs().max()                        # a shortcut weight of 1: 60,000 > 254 x 2**7
    with pytest.raises(QuantizationError, match=r"block block8_conv2: its shortcut needs weight_exp \d+"):
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
