"""The hybrid's baselines (trainer.methods): batch norm on input currents folds into weights
and a neuron bias exactly enough to keep every spike, the bias quantizes onto Loihi's
13-bit mantissa and exponent, and the recipes are the papers'."""
import numpy as np
import pytest
import torch

from export.quantize import QuantizationError, _quantize_bias
from trainer.layers import Conv, Linear
from trainer.lif import Surrogate
from trainer.methods import baseline_config
from trainer.models import ANN, ArchError, build_config, neuron_layers
from trainer.norms import CurrentNorms, fold_norms
from trainer.snn import SNN
from trainer.recipe import lr_factor


def test_folded_batch_norm_keeps_every_spike():
    torch.manual_seed(0)
    cfg = build_config("vgg_tiny", (1, 8, 8), 10)
    ann, norms = ANN(cfg), CurrentNorms(cfg)
    with torch.no_grad():
        for n in norms.norms:
            n.running_mean.uniform_(-0.5, 0.5)
            n.running_var.uniform_(0.3, 2.0)
            n.weight.uniform_(0.5, 1.5)
            n.bias.uniform_(-0.3, 0.6)
    thresholds = [1.0] * len(neuron_layers(cfg))
    trained = SNN(ann, thresholds, leak=0.9, norms=norms).eval()
    arch, state = fold_norms(cfg, torch.nn.ModuleDict({"ann": ann, "norms": norms}).state_dict())
    folded_ann = ANN(arch)
    folded_ann.load_state_dict(state)
    folded = SNN(folded_ann, thresholds, leak=0.9).eval()
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        a = trained(x, 8, generator=torch.Generator().manual_seed(3))
        b = folded(x, 8, generator=torch.Generator().manual_seed(3))
    assert trained.spike_counts == folded.spike_counts and min(trained.spike_counts) > 0
    assert torch.allclose(a, b, atol=1e-5)
    assert [l.bias for l in arch.layers if isinstance(l, (Conv, Linear))] == [True, True, True, False]


def test_batch_norm_on_currents_refuses_residual_blocks():
    with pytest.raises(ArchError, match="conv and linear layers; layer 7 is a resblock"):
        CurrentNorms(build_config("resnet_tiny", (1, 8, 8), 10))


def test_bias_quantizes_to_the_smallest_exponent_that_holds_it():
    mant, exp = _quantize_bias(np.array([0.5, -0.25, 0.0]), 100.0, "layer x")     # 64 * 100 * 0.5 = 3200
    assert exp == 0 and mant.tolist() == [3200, -1600, 0]
    mant, exp = _quantize_bias(np.array([2.0, -1.0]), 100.0, "layer x")         # 12800 -> 3200 << 2
    assert exp == 2 and mant.tolist() == [3200, -1600]
    with pytest.raises(QuantizationError, match="layer x: bias up to 10 needs more than 13-bit mantissas << 7"):
        _quantize_bias(np.array([10.0]), 1000.0, "layer x")                   # 640,000 > 4095 << 7
    with pytest.raises(QuantizationError, match="not all finite"):
        _quantize_bias(np.array([np.nan]), 1.0, "layer x")


def test_recipes_are_the_papers():
    lee = baseline_config("spikebp", 150)
    assert (lee.surrogate, lee.leak, lee.loss, lee.optim.momentum, lee.optim.batch_size) == \
        (Surrogate("spikebp"), 0.99, "mse", 0.0, 16)
    assert lee.optim.lr == pytest.approx(0.0033 * 16)
    assert [lr_factor(lee.optim, e) for e in (69.9, 70, 100, 125)] == pytest.approx([1, 0.2, 0.04, 0.008])
    bn = baseline_config("bncurrent", 10)
    assert bn.current_norm and bn.surrogate.kind == "linear" and bn.loss == "ce"
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_config("hybrid", 1)
