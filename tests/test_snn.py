"""The spiking network, surrogates, conversion: hand-computed expectations."""
import math

import pytest
import torch

from trainer.convert import balance_thresholds, balance_thresholds_by_replay
from trainer.layers import Dropout, Flatten, Linear
from trainer.models import ANN, ArchConfig, build_config, neuron_layers
from records.encoding import poisson_spikes
from trainer.checkpoint import load_checkpoint
from trainer.lif import Surrogate
from trainer.recipe import OptimConfig, Runtime, SNNTrainConfig
from trainer.snn import SNN
from trainer.train import train_snn


def test_stdb_surrogate_values():
    s = Surrogate("stdb", alpha=0.3, beta=0.01)
    lut = s.lut(201)
    ages = torch.tensor([0, 1, 150, 200, -1])
    got = s.stdb(ages, lut)
    assert got[0] == pytest.approx(0.3)
    assert got[1] == pytest.approx(0.3 * math.exp(-0.01))
    # The reference code's exp(-dt)**beta underflows to 0 here; the look-up table does not.
    assert got[2] == pytest.approx(0.3 * math.exp(-1.5), rel=1e-6) and got[2] > 0
    assert got[3] == pytest.approx(0.3 * math.exp(-2.0), rel=1e-6)
    assert got[4] == 0.0  # never spiked: no gradient


def test_appendix_a_surrogates():
    z = torch.tensor([0.0, 0.5, -0.5, 2.0])
    lin = Surrogate("linear", alpha=0.3).of_potential(z)
    assert lin.tolist() == pytest.approx([0.3, 0.15, 0.15, 0.0])
    exp = Surrogate("exp", alpha=0.3, beta=0.01).of_potential(z)
    assert exp.tolist() == pytest.approx([0.3 * math.exp(-0.01 * abs(v)) for v in z.tolist()])
    with pytest.raises(ValueError):
        Surrogate("sigmoid")


def test_poisson_rate_matches_intensity():
    x = torch.tensor([0.2, -0.7, 1.0, 0.0])
    s = poisson_spikes(x, 20000, torch.Generator().manual_seed(0))
    assert s.mean(0).tolist() == pytest.approx([0.2, -0.7, 1.0, 0.0], abs=0.015)
    assert set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}


def tiny_mlp(weights_hidden, weights_out, dropout=0.0):
    layers = [Flatten(), Linear(weights_hidden.shape[0])] + ([Dropout(dropout)] if dropout else [])
    layers.append(Linear(weights_out.shape[0]))
    cfg = ArchConfig("mlp", (1, 1, weights_hidden.shape[1]), weights_out.shape[0], layers)
    ann = ANN(cfg)
    with torch.no_grad():
        ann.layers[1].weight.copy_(weights_hidden)
        ann.layers[-1].weight.copy_(weights_out)
    return ann


def test_threshold_is_max_input_current():
    # Input intensity 1 spikes every step, so layer 0's current is W @ 1 at every step.
    w_hidden = torch.tensor([[0.5, 0.25, -0.1], [1.0, 1.5, 0.2], [-1.0, 0.0, 0.3]])
    w_out = torch.tensor([[1.0, -1.0, 0.5], [0.2, 0.3, 0.4]])
    ann = tiny_mlp(w_hidden, w_out)
    x = torch.ones(4, 1, 1, 3)
    th = balance_thresholds(ann, lambda: [x], 6, scaling_factor=1.0, progress=False)
    assert th == pytest.approx([2.7])  # max of (0.65, 2.7, -0.7)
    th_scaled = balance_thresholds(ann, lambda: [x, x], 6, scaling_factor=0.7, progress=False)
    assert th_scaled == pytest.approx([2.7 * 0.7])


def test_threshold_balancing_is_sequential():
    # Layer 1's threshold depends on layer 0's spikes under layer 0's threshold.
    torch.manual_seed(0)
    cfg = ArchConfig("mlp2", (1, 1, 4), 2, [Flatten(), Linear(3), Linear(3), Linear(2)])
    ann = ANN(cfg)
    with torch.no_grad():
        ann.layers[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.2, 0.2, 0.2]]))
        ann.layers[2].weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))
    x = torch.ones(2, 1, 1, 4)
    th = balance_thresholds(ann, lambda: [x], 8, scaling_factor=1.0, progress=False)
    assert th[0] == pytest.approx(1.0)
    # With theta0 = 1: neuron currents 1.0, 1.0, 0.8 never exceed 1 strictly ... except by accumulation:
    # u = t*I - (spikes so far); neuron 0/1 reach u = 2 > 1 at t = 2, neuron 2 at 1.6 > 1.
    snn = SNN(ann, [1.0, 1.0])
    currents = torch.cat(list(snn.input_currents(x, 8, 1)))
    assert th[1] == pytest.approx(float(currents.max()))
    assert th[1] == pytest.approx(2.0)


def test_dropout_mask_fixed_over_steps():
    torch.manual_seed(0)
    w_hidden = torch.ones(64, 3)
    ann = tiny_mlp(w_hidden, torch.ones(2, 64), dropout=0.5)
    snn = SNN(ann, [0.5], backend="reference").train()
    seen = []
    original = snn._propagate

    def spy(spikes, states, masks, *args, **kwargs):
        seen.append({k: v.clone() for k, v in masks.items()})
        return original(spikes, states, masks, *args, **kwargs)

    snn._propagate = spy
    snn(torch.ones(5, 1, 1, 3), 6, window=2, generator=torch.Generator().manual_seed(1))
    assert len(seen) == 6  # one call per step with the reference backend
    assert all(torch.equal(seen[0][2], m[2]) for m in seen)
    assert 0 < (seen[0][2] == 0).float().mean() < 1  # some units dropped, some kept


def _with_biases(cfg):
    """``cfg`` with a bias on every weighted layer (a folded batch norm, an imported module's)."""
    for i, layer in enumerate(cfg.layers):
        if layer.weighted:
            cfg = cfg.with_layer(i, bias=True)
    return cfg


@pytest.mark.parametrize("arch,statistic,window,keep,biased", [
    ("vgg_tiny", "max", None, True, False), ("vgg_tiny", "percentile", 3, True, False),
    ("vgg_tiny", "max", 4, False, False), ("resnet20", "max", 5, True, False),
    ("resnet20", "percentile", None, False, False), ("vgg_tiny", "max", 4, True, True),
    ("resnet_tiny", "max", None, False, True)])
def test_one_pass_balancing_equals_replay(arch, statistic, window, keep, biased):
    torch.manual_seed(0)
    cfg = build_config(arch, (1, 8, 8), 10)
    ann = ANN(_with_biases(cfg) if biased else cfg)
    if biased:
        for name, p in ann.named_parameters():
            if name.endswith("bias"):
                p.data.uniform_(-0.2, 0.3)
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    xs = [torch.rand(3, 1, 8, 8) * 2 - 1, torch.rand(2, 1, 8, 8) * 2 - 1]
    options = dict(statistic=statistic, percentile=99.0, window=window, seed=4)
    fast = balance_thresholds(ann, lambda: iter(xs), 10, progress=False, keep_bytes=2 ** 30 if keep else 0,
                              **options)
    assert fast == balance_thresholds_by_replay(ann, lambda: iter(xs), 10, **options)
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())   # the ANN as it came


def test_biases_move_to_the_thresholds_units():
    """A bias driving neuron layer m is divided by the product of the thresholds before m:
    the SNN's rate of layer m then stands for the ANN's activation / that product."""
    from trainer.convert import rescale_biases

    cfg = _with_biases(build_config("resnet_tiny", (1, 8, 8), 10))
    state = {k: torch.ones_like(v) for k, v in ANN(cfg).state_dict().items()}
    thresholds = [2.0, 3.0, 5.0, 1.0, 1.0, 1.0, 1.0]
    moved = rescale_biases(cfg, state, None, thresholds)
    assert float(moved["layers.0.bias"][0]) == 1.0                          # fed by the input
    assert float(moved["layers.4.bias"][0]) == pytest.approx(1 / 6)         # after two layers
    assert float(moved["layers.7.conv1.bias"][0]) == pytest.approx(1 / 30)
    assert float(moved["layers.7.conv2.bias"][0]) == float(moved["layers.7.shortcut.bias"][0]) == pytest.approx(1 / 30)
    assert float(moved["layers.10.bias"][0]) == pytest.approx(1 / 30)       # the classifier
    back = rescale_biases(cfg, moved, thresholds, None)
    assert all(torch.allclose(back[k], state[k]) for k in state)


def test_silent_layer_is_named():
    ann = tiny_mlp(-torch.ones(3, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"neuron layer 0 receives no positive input current in 6 steps over 4 "
                                         r"images \(the input\).*larger T"):
        balance_thresholds(ann, lambda: [torch.ones(4, 1, 1, 3)], 6, progress=False)


@pytest.mark.parametrize("arch", ["resnet8", "resnet_tiny"])
def test_residual_conversion_balances_the_preprocessing_block_only(arch, digits):
    """Section 4.2: threshold balancing on the three pre-processing convs; every neuron of
    the basic blocks keeps threshold 1; STDB then fine-tunes all of them."""
    from trainer.checkpoint import Checkpoint, SNNParams
    from trainer.data import batches
    torch.manual_seed(0)
    cfg = build_config(arch, digits.input_shape, digits.num_classes)
    ann = ANN(cfg)
    calib = lambda: (x for x, _ in batches(digits, "train", 64, shuffle=False))  # noqa: E731
    thresholds = balance_thresholds(ann, calib, 6, progress=False)
    kinds = [cfg.layers[i].kind for i, _ in neuron_layers(cfg)]
    assert kinds[:3] == ["conv"] * 3 and set(kinds[3:]) == {"resblock"}
    assert all(t > 0 and t != 1.0 for t in thresholds[:3]) and thresholds[3:] == [1.0] * (len(thresholds) - 3)
    data = {"dataset": "digits", "data_root": None, "normalisation": digits.normalisation.to_dict(),
            "class_names": digits.class_names, "input_shape": list(digits.input_shape)}
    ckpt = Checkpoint("converted", cfg, ann.state_dict(), data, SNNParams(thresholds, 1.0, 6))
    if arch == "resnet_tiny":                     # one STDB epoch on a small net: same checkpoint format
        import tempfile
        from pathlib import Path
        with tempfile.TemporaryDirectory() as tmp:
            done = train_snn(digits, ckpt, "stdb", 6, SNNTrainConfig(OptimConfig(epochs=1, lr=1e-3, optimizer="adam")),
                             Path(tmp) / "stdb.pt", Runtime(progress=False))
            assert done.stage == "stdb" and done.arch.name == "resnet_tiny"
            assert len(done.snn.thresholds) == len(thresholds)


@pytest.mark.parametrize("laid_out", [False, True])
def test_fine_tuning_runs_its_convs_in_the_recipes_layout(converted, digits, tmp_path, laid_out, conv_input_layouts):
    """--channels-last reaches the SNN's convolutions while it trains (the ANN had it, STDB not)."""
    seen = conv_input_layouts(lambda: train_snn(
        digits, load_checkpoint(converted), "stdb", 4,
        SNNTrainConfig(OptimConfig(epochs=1, lr=1e-3, optimizer="adam", channels_last=laid_out)),
        tmp_path / "stdb.pt", Runtime(progress=False)))
    assert seen and all(seen) == laid_out       # digits has one input channel: its first conv is either


def test_uniform_scaling_raises_every_rate_by_one_over_the_factor():
    """At depth the paper's compound scaling (every threshold x f) raises layer l's rate by
    about (1/f)**l; uniform scaling raises every layer's by about 1/f (the CIFAR VGG9 at
    T = 100 collapsed under compound 0.7: docs/method.md)."""
    from trainer.convert import scale_thresholds
    from trainer.diagnose import RecordingSNN

    torch.manual_seed(0)
    cfg = ArchConfig("mlp5", (1, 1, 8), 2, [Flatten()] + [Linear(16) for _ in range(5)] + [Linear(2)])
    ann = ANN(cfg)
    with torch.no_grad():
        for layer in ann.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.uniform_(-0.05, 0.25)
    x = torch.rand(64, 1, 1, 8)
    unscaled = balance_thresholds(ann, lambda: [x], 50, statistic="percentile", percentile=99.0,
                                  scaling_factor=1.0, progress=False)
    factor = 0.8

    def rates(thresholds):
        snn = RecordingSNN(ann, thresholds).eval()
        with torch.no_grad():
            snn(x, 400, generator=torch.Generator().manual_seed(1))
        return [float(c.mean()) / 400 for c in snn.counts]

    base = rates(unscaled)
    uniform = rates(scale_thresholds(ann, unscaled, factor, "uniform"))
    compound = rates(scale_thresholds(ann, unscaled, factor, "compound"))
    assert scale_thresholds(ann, unscaled, factor, "uniform") == [unscaled[0] * factor] + unscaled[1:]
    uniform_gain = [u / b for u, b in zip(uniform, base)]
    compound_gain = [c / b for c, b in zip(compound, base)]
    print("uniform", uniform_gain, "compound", compound_gain)
    assert all(1.1 < g < 1 / factor * 1.05 for g in uniform_gain), uniform_gain
    assert compound_gain[-1] > 1.6 > uniform_gain[-1], compound_gain
