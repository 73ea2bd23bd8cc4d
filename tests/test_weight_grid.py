"""Training on the export's weight grid (trainer.weight_grid): the float SNN computes with
the weights the core holds, and the checkpoint, the trainer and the exporter agree on it."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export.exporter import ExportConfig, export_checkpoint
from export.quantize import QuantizationError, fold_layers, quantize_checkpoint
from trainer.checkpoint import Checkpoint, SNNParams, load_checkpoint, save_checkpoint
from trainer.layers import AvgPool, Conv, Flatten, Linear, ResBlock
from trainer.models import ANN, ArchConfig, neuron_layers
from trainer.recipe import OptimConfig, Runtime, SNNTrainConfig
from trainer.snn import SNN
from trainer.train import train_snn
from trainer.weight_grid import block_on_grid, grid_scale, on_grid, snapped, snapped_reference

REPO = Path(__file__).resolve().parents[1]


def _with_bits(path: Path, bits: int | None, out: Path) -> Path:
    ckpt = load_checkpoint(path)
    ckpt.snn = dataclasses.replace(ckpt.snn, weight_bits=bits)
    return save_checkpoint(ckpt, out)


@pytest.mark.parametrize("bits", [3, 8])
def test_grid_weights_are_the_exported_weights(converted, bits):
    """conv, conv after a folded pool, dense after a folded pool: the grid's weights, folded
    as export folds, are the core's integers over its scale (to float32's precision)."""
    ckpt = load_checkpoint(converted)
    graph, _ = quantize_checkpoint(ckpt, weight_bits=bits)
    snapped = load_checkpoint(converted)
    for name, w in ckpt.state_dict.items():
        if name.endswith(".weight"):
            snapped.state_dict[name] = on_grid(w, bits)
    for layer, plain, core in zip(fold_layers(snapped), fold_layers(ckpt), graph.cores, strict=True):
        np.testing.assert_allclose(layer.weights, core.weights / core.weight_scale, rtol=1e-6, atol=0)
        assert not np.allclose(plain.weights, layer.weights, rtol=1e-6)          # the grid is not a no-op


def test_the_gradient_passes_straight_through():
    w = torch.randn(4, 3, requires_grad=True)
    g = torch.randn(4, 3)
    on_grid(w, 4).backward(g)
    assert torch.equal(w.grad, g)
    assert len(torch.unique(on_grid(w, 2).detach())) <= 4        # 2 bits: -2, -1, 0, 1 steps


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_compiled_grid_is_the_reference_bit_for_bit(layout):
    """The CPU's one-pass kernel against the torch expression: random weights at their own
    scale, and exact ties (k + 1/2 steps of a power-of-two scale: rounded half to even), in
    the weights' memory layout."""
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3) * 0.05
    w.view(-1)[:200] = (torch.arange(200) - 100 + 0.5) / 64
    w = w.contiguous(memory_format=layout)
    for scale in (grid_scale(w, 8), 64.0):
        fast, ref = snapped(w, scale), snapped_reference(w, scale)
        assert torch.equal(fast, ref) and fast.stride() == w.stride()
    ties = snapped(w, 64.0).flatten()[:200] * 64               # (in NCHW order: the first 200 of the row)
    assert torch.equal(ties, torch.round(torch.arange(200) - 100 + 0.5))   # half to even: 0.5 -> 0, 1.5 -> 2
    odd = w[:, :, :2]                                                       # not dense: the reference
    assert torch.equal(snapped(odd, 64.0), snapped_reference(odd, 64.0))


def test_weight_bits_round_trip_and_bad_values_are_refused():
    assert SNNParams.from_dict(SNNParams([1.0], weight_bits=6).to_dict()).weight_bits == 6
    assert "weight_bits" not in SNNParams([1.0]).to_dict()               # files of before the option
    for bad in ("8", 9, 1, True, 7.0):
        with pytest.raises(ValueError, match="weight_bits"):
            SNNParams.from_dict({**SNNParams([1.0]).to_dict(), "weight_bits": bad})


def test_fine_tuning_on_the_grid_records_it_and_export_takes_it(converted, digits, tmp_path):
    out = tmp_path / "stdb.pt"
    cfg = SNNTrainConfig(OptimConfig(epochs=1, lr=1e-3, optimizer="adam"), weight_bits=5)
    ckpt = train_snn(digits, load_checkpoint(converted), "stdb", 6, cfg, out, Runtime(progress=False))
    assert ckpt.snn.weight_bits == 5 and SNN.of_checkpoint(ckpt).weight_bits == 5
    exported = export_checkpoint(out, ExportConfig(out=tmp_path / "exp", eval_samples=0, calibration_samples=0,
                                                   onnx=False, nir=False))
    assert exported.summary["weight_bits"] == 5 and {c.weight_bits for c in exported.graph.cores} == {5}
    with pytest.raises(QuantizationError, match="fine-tuned on the 5-bit weight grid"):
        export_checkpoint(out, ExportConfig(out=tmp_path / "exp8", weight_bits=8, eval_samples=0,
                                            calibration_samples=0, onnx=False, nir=False))
    assert not (tmp_path / "exp8").exists()
    # resuming under another grid is another configuration
    with pytest.raises(Exception, match="configuration"):
        train_snn(digits, load_checkpoint(converted), "stdb", 6, dataclasses.replace(cfg, weight_bits=6), out,
                  Runtime(progress=False))


@pytest.mark.parametrize("network", ["converted", "converted_residual"])
def test_on_the_grid_the_float_snn_fires_as_the_core(network, digits, request):
    """Every layer's largest weight is 7/16, so at 4 bits its scale is 16 and the grid's
    weights are multiples of 1/16 (of 1/64 after a folded pool): float32 sums them exactly,
    and with the thresholds on the core's grid (vth / scale, which the weight grid itself
    leaves to export) the float SNN on the grid fires spike for spike as the core's
    reference. Off the grid it does not. resnet_tiny: its shortcuts too, 1x1 projections (one
    with a pool folded in) in their populations' units, their currents floored by their
    negative exponents as the core floors them. Thresholds of 1/2: every layer fires."""
    from export import fixedpoint as fx
    from export.exporter import float_snn_run
    ckpt = load_checkpoint(request.getfixturevalue(network))
    for name, w in ckpt.state_dict.items():
        if name.endswith(".weight"):
            w = w / w.abs().max() * (7 / 16)
            w.view(-1)[w.abs().argmax()] = 7 / 16
            ckpt.state_dict[name] = w
    ckpt.snn = dataclasses.replace(ckpt.snn, thresholds=[0.5] * len(ckpt.snn.thresholds))
    graph, _ = quantize_checkpoint(ckpt, weight_bits=4)
    steps = {c.name: fx.dense_weight_step(4) if c.op == "dense" else 1 for c in graph.cores}
    assert {c.weight_scale / (c.pool[0] ** 2 * steps[c.name]) for c in graph.cores} == {16.0}
    ckpt.snn = dataclasses.replace(ckpt.snn, thresholds=[c.vth / c.weight_scale for c in graph.cores[:-1]])
    images = digits.test_x[:40].numpy()
    spikes = graph.input.encode(images, graph.timesteps, 0)
    core = fx.run_reference(graph, spikes)
    runs = {}
    for bits in (None, 4):
        ckpt.snn = dataclasses.replace(ckpt.snn, weight_bits=bits)
        runs[bits] = float_snn_run(ckpt, graph, images, spikes)
    assert runs[4][1] == core.spikes_per_neuron and np.array_equal(runs[4][0], core.predictions)
    assert min(core.spikes_per_neuron) > 0.1
    assert network == "converted" or {sc.weight_exp for c in graph.cores for sc in c.shortcuts} == {-7, -5}
    assert runs[None][1] != core.spikes_per_neuron


def test_cli_option_and_refusals(converted, tmp_path):
    res = subprocess.run([sys.executable, "-m", "trainer", "stdb", str(converted), "--timesteps", "6",
                          "--weight-bits", "9", "--out", str(tmp_path / "s.pt")], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2 and "--weight-bits" in res.stderr and "Traceback" not in res.stderr
    grid = _with_bits(converted, 6, tmp_path / "grid.pt")
    res = subprocess.run([sys.executable, "-m", "export.to_lava", str(grid), "--weight-bits", "8", "--out",
                          str(tmp_path / "e"), "--eval-samples", "0", "--calibration-samples", "0"], cwd=tmp_path,
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2 and "6-bit weight grid" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


RESIDUAL = [Conv(4), AvgPool(2), ResBlock(4), ResBlock(6), ResBlock(6), AvgPool(2), ResBlock(8, stride=2),
            Flatten(), Linear(3)]


@pytest.mark.parametrize("bits", [4, 8])
def test_a_residual_nets_grid_weights_are_the_exported_weights(bits):
    """Residual blocks on the grid, as export stores them: conv1 and conv2 on their own grids,
    the shortcut in conv2's units - an identity after a folded pool, a 1x1 projection, an
    identity, a projection with stride 2 after a folded pool. Every float weight the SNN
    computes with is the core's integer over its units (to float32's precision), and the
    identity's factor is within 2^-(bits-1) of 1."""
    cfg = ArchConfig("res", (2, 8, 8), 3, tuple(RESIDUAL))
    torch.manual_seed(1)
    ann = ANN(cfg)
    data = {"dataset": "x", "normalisation": {"mean": [0, 0], "std": [1, 1]}, "class_names": list("abc")}
    ckpt = Checkpoint("converted", cfg, ann.state_dict(), data, SNNParams([0.7] * len(neuron_layers(cfg)), 1.0, 4))
    graph, _ = quantize_checkpoint(ckpt, weight_bits=bits)
    cores = {c.name: c for c in graph.cores}
    snn = SNN(ann, ckpt.snn.thresholds, weight_bits=bits)
    assert snn.block_pools == {2: 2, 3: 1, 4: 1, 6: 2}
    for i, pool in snn.block_pools.items():
        grid = block_on_grid(ann.layers[i], bits, pool)
        w1, w2, short = grid.conv1, grid.conv2, grid.shortcut
        conv1, conv2 = cores[f"block{i}_conv1"], cores[f"block{i}_conv2"]
        folded = np.repeat(np.repeat(w1.detach().double().numpy(), pool, 2), pool, 3) / pool ** 2
        np.testing.assert_allclose(folded, conv1.weights / conv1.weight_scale, rtol=1e-6, atol=0)
        np.testing.assert_allclose(w2.detach().numpy(), conv2.weights / conv2.weight_scale, rtol=1e-6, atol=0)
        (sc,) = conv2.shortcuts
        assert (grid.units, grid.exp) == (conv2.weight_scale, sc.weight_exp)
        stored = sc.weights * 2.0 ** sc.weight_exp / conv2.weight_scale       # in float weights
        if ann.layers[i].shortcut is None:
            assert abs(short - 1) <= 2.0 ** (1 - bits) and short != 1.0
            expected = short / pool ** 2 if pool > 1 else short        # the pool's identity: eye / pool**2
            assert np.allclose(stored[stored != 0], expected, rtol=1e-12, atol=0)
        else:
            want = np.repeat(np.repeat(short.detach().double().numpy(), pool, 2), pool, 3) / pool ** 2
            np.testing.assert_allclose(want, stored, rtol=1e-6, atol=0)
            assert not np.allclose(want, np.repeat(np.repeat(ann.layers[i].shortcut.weight.detach().double().numpy(),
                                                             pool, 2), pool, 3) / pool ** 2, rtol=1e-6)


def test_a_residual_net_on_the_grid_trains_straight_through():
    """The gradient of a residual SNN on the grid reaches every block's float weights (the
    shortcut's through its rescaling) as off the grid it would: the same loss surface's
    straight-through estimate, not zero."""
    cfg = ArchConfig("res", (2, 8, 8), 3, tuple(RESIDUAL))
    torch.manual_seed(2)
    ann = ANN(cfg)
    snn = SNN(ann, [0.5] * len(neuron_layers(cfg)), weight_bits=8)
    snn(torch.rand(4, 2, 8, 8) * 2 - 1, 6, generator=torch.Generator().manual_seed(0)).sum().backward()
    for i in snn.block_pools:
        for part in ("conv1", "conv2", "shortcut"):
            module = getattr(ann.layers[i], part)
            if module is not None:
                assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, (i, part)


def test_pipeline_trains_a_residual_net_on_the_grid(tmp_path):
    """``pipeline --arch resnet_tiny --weight-bits 8`` fine-tunes on the grid and exports it
    (before, residual nets were refused)."""
    from pipeline.__main__ import main
    code = main(["--runs", str(tmp_path), "--name", "g", "--arch", "resnet_tiny", "--weight-bits", "8", "--epochs", "1",
                 "--snn-epochs", "1", "--timesteps-large", "16", "--samples", "20", "--sweep", "4", "--no-scratch",
                 "--eval-samples", "20", "--quiet"])
    assert code == 0
    assert load_checkpoint(tmp_path / "g" / "stdb.pt").snn.weight_bits == 8


def test_the_grids_mixed_sign_step_is_the_cores():
    """trainer.weight_grid keeps its own copy of Lava's mixed-sign step (the trainer imports
    nothing of export): it must be export.fixedpoint's at every width."""
    from export import fixedpoint as fx
    from trainer.weight_grid import MAX_BITS, MIN_BITS, mixed_sign_step
    assert all(mixed_sign_step(b) == fx.dense_weight_step(b) for b in range(MIN_BITS, MAX_BITS + 1))
