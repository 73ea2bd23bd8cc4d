"""Layer specs (trainer.layers): validation, the checkpoint's dict form, shapes and MACs."""
import math

import pytest
import torch

from trainer.layers import LAYER_TYPES, ArchError, AvgPool, Conv, Dropout, Flatten, Linear, ResBlock, layer_from_dict
from trainer.models import ANN, ArchConfig, build_config, count_macs, layer_shapes, neuron_count

ONE_OF_EACH = [Conv(8, kernel=5, stride=2, padding=2, bias=True), Conv(4, norm=True), AvgPool(3), Dropout(0.25),
               Flatten(), Linear(12, bias=True), Linear(7, norm=True), ResBlock(6, stride=2, bias=True), ResBlock(6)]


@pytest.mark.parametrize("spec", ONE_OF_EACH, ids=lambda s: s.kind)
def test_every_kind_reads_back_as_it_was_written(spec):
    assert layer_from_dict(spec.to_dict()) == spec
    assert set(LAYER_TYPES) == {"conv", "avgpool", "dropout", "flatten", "linear", "resblock"}


def test_the_dict_form_is_the_checkpoint_format_of_before_the_classes():
    """Written fields and key sets as the dict-based configs had them, so checkpoints and
    run configurations (compared on resume) read back unchanged."""
    layers = build_config("vgg_tiny", (1, 8, 8), 10, norm=True).to_dict()["layers"]
    assert layers[:3] == [{"kind": "conv", "out_channels": 32, "kernel": 3, "stride": 1, "padding": 1, "norm": True},
                          {"kind": "dropout", "p": 0.2}, {"kind": "avgpool", "kernel": 2}]
    assert layers[-3:] == [{"kind": "linear", "out_features": 128}, {"kind": "dropout", "p": 0.5},
                           {"kind": "linear", "out_features": 10}]
    assert {"kind": "flatten"} in layers
    res = build_config("resnet_tiny", (1, 8, 8), 10).to_dict()["layers"]
    assert {"kind": "resblock", "out_channels": 32, "stride": 2} in res
    # files that left a default out read back with it
    assert layer_from_dict({"kind": "conv", "out_channels": 3}) == Conv(3, 3, 1, 1)


@pytest.mark.parametrize("bad, message", [
    ({"kind": "maxpool", "kernel": 2}, "unsupported kind 'maxpool'"),
    ({"kind": "conv"}, "out_channels"),
    ({"kind": "conv", "out_channels": 4, "dilation": 2}, "conv has no field 'dilation'"),
    ({"kind": "conv", "out_channels": 0}, "out_channels >= 1"),
    ({"kind": "conv", "out_channels": 4, "kernel": 2.5}, "integer kernel"),
    ({"kind": "conv", "out_channels": 4, "stride": True}, "integer stride"),
    ({"kind": "conv", "out_channels": 4, "padding": -1}, "padding >= 0"),
    ({"kind": "conv", "out_channels": 4, "bias": 1}, "bias true or false"),
    ({"kind": "avgpool", "kernel": 0}, "kernel >= 1"),
    ({"kind": "dropout", "p": 1.0}, r"\[0, 1\)"),
    ({"kind": "dropout", "p": float("nan")}, r"\[0, 1\)"),
    ({"kind": "linear", "out_features": "10"}, "integer out_features"),
    ({"kind": "resblock", "out_channels": 8, "pool": 2}, "resblock has no field 'pool'"),
    ({"kind": "resblock", "out_channels": 8, "norm": 1}, "norm true or false"),
    ([1, 2], "mapping"),
])
def test_bad_specs_are_refused_naming_the_field(bad, message):
    with pytest.raises(ArchError, match=message):
        layer_from_dict(bad)


def test_arch_config_names_the_layer_and_checks_that_shapes_chain():
    d = build_config("vgg_tiny", (1, 8, 8), 10).to_dict()
    with pytest.raises(ArchError, match=r"vgg_tiny: layer 0: conv has no field 'groups'"):
        ArchConfig.from_dict({**d, "layers": [{**d["layers"][0], "groups": 2}] + d["layers"][1:]})
    with pytest.raises(ArchError, match=r"layer 1: avgpool 3 does not divide 8x8"):
        ArchConfig("p", (1, 8, 8), 2, [Conv(4), AvgPool(3), Flatten(), Linear(2)])
    with pytest.raises(ArchError, match=r"layer 1: linear needs a flattened input"):
        ArchConfig("p", (1, 8, 8), 2, [Conv(4), Linear(2)])
    with pytest.raises(ArchError, match="the last layer must be the linear classifier"):
        ArchConfig("p", (1, 8, 8), 2, [Conv(4), Flatten()])
    with pytest.raises(ArchError, match="not a layer spec"):
        ArchConfig("p", (1, 8, 8), 2, [{"kind": "flatten"}, Linear(2)])
    with pytest.raises(ArchError, match="classifier has 3 outputs, expected 2"):
        ArchConfig("p", (1, 8, 8), 2, [Flatten(), Linear(3)])


@pytest.mark.parametrize("name", ["vgg_tiny", "resnet_tiny"])
def test_shapes_macs_and_neurons_agree_with_torch(name):
    """Each layer's output shape is what its torch module gives; a conv's MACs are its
    outputs times its fan-in (the weight's elements per output channel)."""
    cfg = build_config(name, (3, 16, 16), 10)
    ann = ANN(cfg).eval()
    x, shapes = torch.zeros(1, 3, 16, 16), layer_shapes(cfg)
    record = []
    assert ann(x, record).shape[1:] == shapes[-1]
    prev, macs = (3, 16, 16), []
    for spec, module, shape in zip(cfg.layers, ann.layers, shapes):
        if isinstance(spec, (Conv, Linear)):
            macs.append(math.prod(shape) * module.weight[0].numel())
        elif isinstance(spec, ResBlock):
            parts = [module.conv1, module.conv2] + ([module.shortcut] if module.shortcut is not None else [])
            macs.append(sum(math.prod(shape) * m.weight[0].numel() for m in parts))
            assert (module.shortcut is not None) == spec.projects(prev[0])
        prev = shape
    assert count_macs(cfg) == macs
    assert neuron_count(cfg) == sum(a[0].numel() for a in record) + 10


def test_a_fold_changes_a_copy_not_the_architecture():
    cfg = build_config("vgg_tiny", (1, 8, 8), 10, norm=True)
    folded = cfg.with_layer(0, norm=False, bias=True)
    assert cfg.layers[0] == Conv(32, norm=True) and folded.layers[0] == Conv(32, bias=True)
    with pytest.raises(AttributeError):
        cfg.layers[0].bias = True            # frozen: a spec is a value
