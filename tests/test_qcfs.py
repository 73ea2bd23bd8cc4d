"""The low-latency recipe: QCFS activations, the integrate encoding, batch norms folded at
conversion, initial potentials, and the converted SNN tracking its ANN at T = L."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from records.encoding import InputEncoding, integrate_spikes
from trainer.convert import qcfs_snn
from trainer.layers import Conv, Linear
from trainer.lif import NeuronState, Surrogate, lif_multistep, lif_reference
from trainer.models import ANN, ArchConfig, ArchError, build_config, neuron_layers
from trainer.norms import fold_ann_norms
from trainer.qcfs import qcfs, quantize_input


def test_qcfs_takes_its_levels_and_learns_its_threshold():
    lam = torch.tensor(2.0, requires_grad=True)
    x = torch.linspace(-1, 3, 101)
    y = qcfs(x, lam, 4)
    assert set(torch.unique(y).tolist()) == {0.0, 0.5, 1.0, 1.5, 2.0}
    assert torch.equal(y, 2.0 * torch.clamp(torch.floor(x / 2.0 * 4 + 0.5) / 4, 0, 1))
    y.sum().backward()
    assert lam.grad is not None and lam.grad != 0


@pytest.mark.parametrize("lif", [lif_multistep, lif_reference])
def test_if_neuron_from_half_threshold_computes_qcfs_at_t_equal_l(lif):
    """Constant current x for L steps into an IF neuron that starts at lambda / 2: its spike
    count times lambda / L is QCFS's activation (ties excluded: random x)."""
    levels, lam = 8, 1.7
    x = torch.rand(4000, dtype=torch.float64) * 2.6 - 0.4
    current = x.expand(levels, -1).clone()
    state = NeuronState.zeros(x, 0.5 * lam)
    spikes, _ = lif(current, state, lam, 1.0, 0, Surrogate("linear"), Surrogate().lut(levels + 1))
    rate = spikes.sum(0) * lam / levels
    assert torch.allclose(rate, qcfs(x, torch.tensor(lam, dtype=torch.float64), levels))


def test_integrate_encoding_is_the_same_in_torch_and_numpy_and_rounds_counts():
    enc = InputEncoding.of((3, 5, 4), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), rule="integrate")
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 5, 4), dtype=np.uint8)
    spikes = enc.encode(images, 9, seed=0)
    x = enc.normalisation.apply(torch.from_numpy(images))
    windowed = torch.cat([integrate_spikes(x, 0, 4), integrate_spikes(x, 4, 5)])      # any windows
    assert np.array_equal(windowed.numpy().astype(np.int8), spikes)
    assert set(np.unique(spikes)) <= {-1, 0, 1}
    assert torch.equal(torch.from_numpy(spikes.sum(0)).float() / 9, quantize_input(x, 9))
    assert InputEncoding.from_json({k: v for k, v in enc.to_json().items() if k != "rule"}).rule == "poisson"


def test_batch_norms_fold_into_weights_and_biases():
    torch.manual_seed(0)
    cfg = build_config("vgg_tiny", (1, 8, 8), 10, conv_dropout=0.0, norm=True, quant_levels=4)
    ann = ANN(cfg)
    ann.train()
    for _ in range(3):                                  # running statistics away from (0, 1)
        ann(torch.rand(16, 1, 8, 8) * 2 - 1)
    for norm in ann.norms.values():
        norm.weight.data.uniform_(0.5, 2.0)
        norm.bias.data.uniform_(-0.5, 0.5)
    ann.eval()
    folded_cfg, folded_state = fold_ann_norms(cfg, ann.state_dict())
    assert not folded_cfg.normed and all(l.bias for l in folded_cfg.layers if isinstance(l, Conv))
    folded = ANN(folded_cfg)
    folded.load_state_dict(folded_state)
    x = torch.rand(32, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        # the same pre-activations; QCFS's floor may round a few values at a level's edge apart
        assert (folded.eval()(x).argmax(1) == ann(x).argmax(1)).float().mean() >= 0.95


def test_qcfs_conversion_scales_each_layer_by_the_threshold_feeding_it():
    cfg = build_config("vgg_tiny", (1, 8, 8), 10, conv_dropout=0.0, fc_dropout=0.0, quant_levels=4)
    ann = ANN(cfg)
    ann.act_thresholds.data = torch.tensor([2.0, 3.0, 5.0])
    plain, state, thresholds = qcfs_snn(cfg, ann.state_dict())
    assert plain.quant_levels is None and "act_thresholds" not in state and thresholds == [2.0, 3.0, 5.0]
    weighted = [i for i, l in enumerate(cfg.layers) if isinstance(l, (Conv, Linear))]
    for i, feed in zip(weighted, (1.0, 2.0, 3.0, 5.0)):
        assert torch.allclose(state[f"layers.{i}.weight"], ann.state_dict()[f"layers.{i}.weight"] * feed)
    ann.act_thresholds.data = torch.tensor([2.0, -1.0, 5.0])
    with pytest.raises(ArchError, match="must be positive"):
        qcfs_snn(cfg, ann.state_dict())


def test_qcfs_refuses_residual_blocks_and_bad_levels():
    with pytest.raises(ArchError, match="residual"):
        build_config("resnet_tiny", (1, 8, 8), 10, quant_levels=4)
    d = build_config("vgg_tiny", (1, 8, 8), 10).to_dict()
    for bad in (0, 2.5, True, "4"):
        with pytest.raises(ArchError):
            ArchConfig.from_dict({**d, "quant_levels": bad})
    with pytest.raises(ArchError, match="batch norm"):            # not on the classifier
        ArchConfig.from_dict({**d, "layers": d["layers"][:-1] + [{**d["layers"][-1], "norm": True}]})


def test_the_input_takes_its_own_levels_where_given():
    """An ANN of 4-level activations for an SNN run at 8 steps sees its input as 8 steps deliver it."""
    cfg = build_config("vgg_tiny", (1, 8, 8), 10, norm=True, quant_levels=4, input_levels=8)
    assert cfg.input_quant_levels == 8 and ArchConfig.from_dict(cfg.to_dict()) == cfg
    same = build_config("vgg_tiny", (1, 8, 8), 10, norm=True, quant_levels=4, input_levels=4)
    assert same.input_levels is None and "input_levels" not in same.to_dict() and same.input_quant_levels == 4
    assert ArchConfig.from_dict({**same.to_dict(), "input_levels": 4}) == same
    x = torch.rand(3, 1, 8, 8)
    for arch, levels in ((cfg, 8), (same, 4)):
        ann, seen = ANN(arch).eval(), []
        ann.layers[0].register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0]))
        ann(x)
        assert torch.equal(seen[0], quantize_input(x, levels))
    assert not torch.equal(quantize_input(x, 8), quantize_input(x, 4))
    plain, _, _ = qcfs_snn(*fold_ann_norms(cfg, ANN(cfg).state_dict()))   # the SNN has no input levels of its own
    assert plain.quant_levels is None and plain.input_levels is None
    with pytest.raises(ArchError, match="input_levels"):
        build_config("vgg_tiny", (1, 8, 8), 10, input_levels=8)            # a ReLU ANN has no input levels
    for bad in (0, 2.5, True, 2000):
        with pytest.raises(ArchError):
            ArchConfig.from_dict({**cfg.to_dict(), "input_levels": bad})


def test_thresholds_start_from_the_data_and_the_running_statistics_stay():
    from trainer.qcfs import init_thresholds

    torch.manual_seed(0)
    cfg = build_config("vgg_tiny", (1, 8, 8), 10, conv_dropout=0.0, fc_dropout=0.0, norm=True, quant_levels=4)
    ann = ANN(cfg)
    x = torch.rand(64, 1, 8, 8) * 2 - 1
    before = {k: v.clone() for k, v in ann.state_dict().items() if "running" in k or "tracked" in k}
    lams = init_thresholds(ann, x)
    assert ann.training and len(lams) == 3 and torch.allclose(ann.act_thresholds, torch.tensor(lams))
    with torch.no_grad():                                  # the first activation's input, the batch's statistics
        bn = ann.norms["0"]
        z = torch.nn.functional.batch_norm(ann.layers[0](quantize_input(x, 4)), None, None, bn.weight, bn.bias,
                                           training=True, eps=bn.eps)
    assert lams[0] == pytest.approx(float(2.0 * 2 * z.abs().mean()), rel=1e-5)
    for k, v in before.items():
        assert torch.equal(ann.state_dict()[k], v), k


def test_the_from_scratch_baseline_of_the_low_latency_recipe_is_a_plain_snn():
    """``pipeline --recipe low-latency`` without a budget trains the from-scratch baseline from
    the chain's architecture: its batch norms and QCFS levels have no part in a random SNN
    (the SNN refused the batch norms' weights)."""
    from trainer.chain import scratch_init
    from trainer.data import batches, load_dataset
    from trainer.snn import SNN
    bundle = load_dataset("digits", train_subset=60, test_subset=20)
    arch = build_config("vgg_tiny", bundle.input_shape, bundle.num_classes, norm=True, quant_levels=4)
    init = scratch_init(arch, bundle, 1.0, 4, 0)
    assert init.arch.quant_levels is None and not init.arch.normed
    assert [type(l) for l in init.arch.layers] == [type(l) for l in arch.layers]
    x = next(batches(bundle, "test", 2, shuffle=False))[0]
    assert SNN.of_checkpoint(init)(x, 4).shape == (2, bundle.num_classes)
