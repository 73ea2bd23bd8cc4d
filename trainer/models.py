"""Architectures as data.

An architecture is a JSON-able config (``ArchConfig``) saved in every checkpoint, so
that any stage (conversion, STDB, export) rebuilds exactly the same model. The ANN
families follow the paper's SNN-friendly constraints: no bias, no batch norm in the SNN,
average pooling only, ReLU, dropout.

``ArchConfig.layers`` is a flat list of layer specs, each a dict with a ``kind``:

- ``conv``     {out_channels, kernel, stride, padding, bias}  3x3/stride 1/pad 1 by default
- ``avgpool``  {kernel}                                   stride = kernel
- ``dropout``  {p}
- ``flatten``  {}
- ``linear``   {out_features, bias}
- ``resblock`` {out_channels, stride, bias}               basic block, 1x1 conv shortcut
                                                          when the shape changes

Every ``conv``/``linear``/``resblock`` except the final ``linear`` is followed by a
ReLU in the ANN and by a spiking neuron layer in the SNN; the final ``linear`` is
the classifier (the SNN's non-spiking accumulator). ``bias`` (default false) is only set
by a batch norm folded into the layer (``trainer.norms``, or an imported module's own
biases and batch norms: ``trainer.torch_import``): the neuron's per-channel bias on the
core. A residual block's ``bias`` gives each of its convs one (the shortcut's adds to
conv2's: both feed the block's output neurons). ``norm`` (default false; conv and hidden
linear layers) puts a batch norm between the layer and its activation in the ANN;
conversion folds it into the weights and that bias, so no SNN or core graph ever holds one.

``ArchConfig.quant_levels`` L (default None: ReLU) selects the low-latency recipe's ANN
(``trainer.qcfs``): every hidden activation is QCFS's clip-floor-shift with L levels and
a trainable threshold per neuron layer (``ANN.act_thresholds``, which conversion makes
the SNN's thresholds), and the input is quantized to L levels as the integrate encoding
delivers it in L steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from trainer import qcfs

class ArchError(ValueError):
    """An architecture name or config that cannot be built."""


NORM_EPS = 1e-5        # the ANN's batch norms' epsilon, which the fold at conversion uses as well
LAYER_KINDS = ("conv", "avgpool", "dropout", "flatten", "linear", "resblock")

# The paper's feature configurations (docs/method.md); "A" = 2x2 average pool.
VGG_FEATURES = {
    "vgg5": [64, "A", 128, 128, "A"],
    "vgg9": [64, "A", 128, 256, "A", 256, 512, "A", 512, "A", 512],
    "vgg11": [64, "A", 128, 256, 256, "A", 512, 512, 512, "A", 512, 512],
    "vgg16": [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512],
    # A small VGG-style net that suits 8x8 digits and trains in seconds on a CPU.
    "vgg_tiny": [32, "A", 64, "A"],
}
VGG_CLASSIFIER = {
    "vgg5": [4096, 4096],
    "vgg9": [4096, 4096],
    "vgg11": [1024, 1024],
    "vgg16": [4096, 4096],
    "vgg_tiny": [128],
}
# Residual nets (Section 4.2): a pre-processing block of three 3x3 convs (with dropout)
# replaces the wide first conv, a 2x2 average pool, then basic blocks (width, stride).
# ResNet20 = 3 + 8 blocks x 2 + the classifier; ResNet8 = 3 + 2 x 2 + 1 (the paper gives
# its depth, not its widths: these follow ResNet20's first and third stage).
RESNETS = {
    "resnet20": ((64, 64, 64), ((128, 1), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 2), (512, 1))),
    "resnet8": ((64, 64, 64), ((128, 1), (256, 2))),
    # A small residual net for digits and MNIST that trains in seconds on a CPU.
    "resnet_tiny": ((16, 16, 16), ((32, 1), (32, 2))),
}
ARCHITECTURES = tuple(VGG_FEATURES) + tuple(RESNETS)


@dataclass
class ArchConfig:
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    layers: list[dict] = field(default_factory=list)
    quant_levels: int | None = None        # QCFS levels L of the hidden activations and the input; None: ReLU

    def to_dict(self) -> dict:
        d = {"name": self.name, "input_shape": list(self.input_shape),
             "num_classes": self.num_classes, "layers": [dict(l) for l in self.layers]}
        if self.quant_levels is not None:          # absent: the paper's ReLU ANN (files of before it load)
            d["quant_levels"] = self.quant_levels
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ArchConfig":
        try:
            levels = d.get("quant_levels")
            if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int)):
                raise ValueError(f"quant_levels must be an integer, got {levels!r}")
            cfg = cls(name=str(d["name"]), input_shape=tuple(int(v) for v in d["input_shape"]),
                      num_classes=int(d["num_classes"]), layers=[dict(l) for l in d["layers"]],
                      quant_levels=levels)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArchError(f"malformed architecture config: {exc!r}") from None
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Walk the layers once, checking kinds and that shapes chain."""
        if self.quant_levels is not None and not 1 <= self.quant_levels <= 1024:
            raise ArchError(f"{self.name}: quant_levels must be an integer in 1..1024, got {self.quant_levels}")
        if self.quant_levels is not None and any(l.get("kind") == "resblock" for l in self.layers):
            raise ArchError(f"{self.name}: QCFS activations (quant_levels) are supported in VGG nets (conv, pool, "
                            "linear), not yet in residual blocks")
        layer_shapes(self)

    @property
    def normed(self) -> list[int]:
        """Indices of the layers followed by a batch norm in the ANN."""
        return [i for i, l in enumerate(self.layers) if l.get("norm")]


def build_config(name: str, input_shape, num_classes: int, *, conv_dropout: float = 0.2, fc_dropout: float = 0.5,
                 norm: bool = False, quant_levels: int | None = None) -> ArchConfig:
    """The named architecture for this input shape and class count; ``norm``: a batch norm
    after every conv layer (VGG nets and the residual nets' pre-processing convs),
    ``quant_levels``: QCFS activations (the module docstring)."""
    if name in VGG_FEATURES:
        layers: list[dict] = []
        for item in VGG_FEATURES[name]:
            if item == "A":
                layers.append({"kind": "avgpool", "kernel": 2})
            else:
                layers.append({"kind": "conv", "out_channels": item, "kernel": 3, "stride": 1, "padding": 1,
                               **({"norm": True} if norm else {})})
                if conv_dropout > 0:
                    layers.append({"kind": "dropout", "p": conv_dropout})
        layers.append({"kind": "flatten"})
        for width in VGG_CLASSIFIER[name]:
            layers.append({"kind": "linear", "out_features": width})
            if fc_dropout > 0:
                layers.append({"kind": "dropout", "p": fc_dropout})
        layers.append({"kind": "linear", "out_features": num_classes})
    elif name in RESNETS:
        pre, blocks = RESNETS[name]
        layers = []
        for width in pre:
            layers.append({"kind": "conv", "out_channels": width, "kernel": 3, "stride": 1, "padding": 1,
                           **({"norm": True} if norm else {})})
            if conv_dropout > 0:
                layers.append({"kind": "dropout", "p": conv_dropout})
        layers.append({"kind": "avgpool", "kernel": 2})
        for width, stride in blocks:
            layers.append({"kind": "resblock", "out_channels": width, "stride": stride})
        layers.append({"kind": "flatten"})
        layers.append({"kind": "linear", "out_features": num_classes})
    else:
        raise ArchError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    cfg = ArchConfig(name=name, input_shape=tuple(int(v) for v in input_shape),
                     num_classes=int(num_classes), layers=layers, quant_levels=quant_levels)
    cfg.validate()
    return cfg


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def layer_shapes(cfg: ArchConfig) -> list[tuple[int, ...]]:
    """Output shape of every layer (without batch); raises ArchError if they do not chain."""
    shape: tuple[int, ...] = tuple(cfg.input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ArchError(f"{cfg.name}: input_shape must be (C, H, W), got {shape}")
    shapes = []
    linears = [i for i, l in enumerate(cfg.layers) if l.get("kind") == "linear"]
    if not linears or linears[-1] != len(cfg.layers) - 1:
        raise ArchError(f"{cfg.name}: the last layer must be the linear classifier")
    for i, layer in enumerate(cfg.layers):
        kind = layer.get("kind")
        if kind not in LAYER_KINDS:
            raise ArchError(f"{cfg.name}: layer {i} has unsupported kind {kind!r} "
                            f"(supported: {', '.join(LAYER_KINDS)}; max pooling and batch norm "
                            "are not SNN-friendly)")
        if kind in ("conv", "avgpool", "resblock") and len(shape) != 3:
            raise ArchError(f"{cfg.name}: layer {i} ({kind}) needs a (C, H, W) input, got {shape}")
        if kind == "conv":
            k, s, p = int(layer.get("kernel", 3)), int(layer.get("stride", 1)), int(layer.get("padding", 1))
            if k < 1 or s < 1 or p < 0:
                raise ArchError(f"{cfg.name}: layer {i} conv needs kernel >= 1, stride >= 1 and padding >= 0, "
                                f"got {k}, {s}, {p}")
            shape = (int(layer["out_channels"]), _conv_out(shape[1], k, s, p), _conv_out(shape[2], k, s, p))
        elif kind == "resblock":
            s = int(layer.get("stride", 1))
            if s < 1:
                raise ArchError(f"{cfg.name}: layer {i} resblock needs stride >= 1, got {s}")
            shape = (int(layer["out_channels"]), _conv_out(shape[1], 3, s, 1), _conv_out(shape[2], 3, s, 1))
        elif kind == "avgpool":
            k = int(layer.get("kernel", 2))
            if k < 1 or shape[1] % k or shape[2] % k:
                raise ArchError(f"{cfg.name}: layer {i} avgpool {k} does not divide {shape[1]}x{shape[2]}")
            shape = (shape[0], shape[1] // k, shape[2] // k)
        elif kind == "flatten":
            shape = (math.prod(shape),)
        elif kind == "linear":
            if len(shape) != 1:
                raise ArchError(f"{cfg.name}: layer {i} (linear) needs a flattened input, got {shape}")
            shape = (int(layer["out_features"]),)
        elif kind == "dropout":
            if not 0.0 <= float(layer.get("p", 0.0)) < 1.0:
                raise ArchError(f"{cfg.name}: layer {i} dropout p must be in [0, 1)")
        if not isinstance(layer.get("norm", False), bool):
            raise ArchError(f"{cfg.name}: layer {i} norm must be true or false, got {layer['norm']!r}")
        if layer.get("norm") and (kind not in ("conv", "linear") or i == len(cfg.layers) - 1):
            raise ArchError(f"{cfg.name}: layer {i} ({kind}) cannot take a batch norm (conv and hidden linear "
                            "layers can)")
        if min(shape) < 1:
            raise ArchError(f"{cfg.name}: layer {i} ({kind}) leaves an empty shape {shape}")
        shapes.append(shape)
    if shapes[-1] != (cfg.num_classes,):
        raise ArchError(f"{cfg.name}: classifier has {shapes[-1][0]} outputs, expected {cfg.num_classes}")
    return shapes


class ResBlock(nn.Module):
    """Basic residual block: conv3x3-ReLU-conv3x3 + shortcut (1x1 conv when shapes change), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, bias: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=bias)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=bias)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=bias)
                         if stride != 1 or in_channels != out_channels else None)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.shortcut is None else self.shortcut(x)

    def forward(self, x: torch.Tensor, inner=torch.relu, out=torch.relu) -> torch.Tensor:
        """``inner``, ``out``: the activations after conv1 and after the sum (ReLU or QCFS)."""
        return out(self.conv2(inner(self.conv1(x))) + self.skip(x))


def build_layers(cfg: ArchConfig) -> nn.ModuleList:
    """Torch modules of the weighted layers (and identity placeholders), index-aligned with cfg.layers.

    The ANN and the SNN share these modules, so one state_dict serves both.
    """
    modules = nn.ModuleList()
    shapes = layer_shapes(cfg)
    prev: tuple[int, ...] = tuple(cfg.input_shape)
    for layer, shape in zip(cfg.layers, shapes):
        kind = layer["kind"]
        if kind == "conv":
            modules.append(nn.Conv2d(prev[0], shape[0], int(layer.get("kernel", 3)), int(layer.get("stride", 1)),
                                     int(layer.get("padding", 1)), bias=bool(layer.get("bias", False))))
        elif kind == "resblock":
            modules.append(ResBlock(prev[0], shape[0], int(layer.get("stride", 1)), bool(layer.get("bias", False))))
        elif kind == "linear":
            modules.append(nn.Linear(prev[0], shape[0], bias=bool(layer.get("bias", False))))
        else:
            modules.append(nn.Identity())
        prev = shape
    for m in modules.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return modules


def neuron_layers(cfg: ArchConfig) -> list[tuple[int, str]]:
    """The SNN's neuron layers, in order, as (layer index, part); one threshold each.

    Every weighted layer but the classifier has one ("out"); a residual block has two:
    after its first conv ("conv1") and after the sum with the shortcut ("out").
    """
    found: list[tuple[int, str]] = []
    for i, layer in enumerate(cfg.layers[:-1]):
        if layer["kind"] == "resblock":
            found += [(i, "conv1"), (i, "out")]
        elif layer["kind"] in ("conv", "linear"):
            found.append((i, "out"))
    return found


def neuron_count(cfg: ArchConfig) -> int:
    """Neurons per image: every weighted layer's outputs (a residual block's two layers, the
    accumulating classifier too); what a run holds per step scales with it."""
    shapes = layer_shapes(cfg)
    return sum(math.prod(shapes[i]) * (2 if layer["kind"] == "resblock" else 1)
               for i, layer in enumerate(cfg.layers) if layer["kind"] in ("conv", "linear", "resblock"))


class ANN(nn.Module):
    """The ANN under SNN-friendly constraints; input is the normalised, clipped image.

    ``norms[str(i)]``: the batch norm after layer i (``ArchConfig.normed``);
    ``act_thresholds``: QCFS's lambda per neuron layer (only with ``quant_levels``).
    """

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = build_layers(cfg)
        shapes = layer_shapes(cfg)
        self.norms = nn.ModuleDict({
            str(i): (nn.BatchNorm2d if cfg.layers[i]["kind"] == "conv" else nn.BatchNorm1d)(shapes[i][0], eps=NORM_EPS)
            for i in cfg.normed})
        if cfg.quant_levels is not None:
            self.act_thresholds = nn.Parameter(torch.full((len(neuron_layers(cfg)),), qcfs.INITIAL_THRESHOLD))

    def _act(self, k: int):
        """Neuron layer k's activation."""
        if self.cfg.quant_levels is None:
            return torch.relu
        return lambda x: qcfs.qcfs(x, self.act_thresholds[k], self.cfg.quant_levels)

    def _recorded(self, record: list):
        """``_act`` that appends each activation to ``record``."""
        def act(k):
            def run(x):
                record.append(self._act(k)(x))
                return record[-1]
            return run
        return act

    def forward(self, x: torch.Tensor, record: list | None = None) -> torch.Tensor:
        """The logits; ``record``, a list: every neuron layer's activation is appended to it, in order."""
        last = len(self.cfg.layers) - 1
        if self.cfg.quant_levels is not None:
            x = qcfs.quantize_input(x, self.cfg.quant_levels)
        act = self._act if record is None else self._recorded(record)
        k = 0
        for i, (spec, module) in enumerate(zip(self.cfg.layers, self.layers)):
            kind = spec["kind"]
            if kind in ("conv", "linear"):
                x = module(x)
                if str(i) in self.norms:
                    x = self.norms[str(i)](x)
                if i != last:
                    x = act(k)(x)
                    k += 1
            elif kind == "resblock":
                x = module(x, act(k), act(k + 1))
                k += 2
            elif kind == "avgpool":
                x = nn.functional.avg_pool2d(x, int(spec.get("kernel", 2)))
            elif kind == "dropout":
                x = nn.functional.dropout(x, float(spec["p"]), self.training)
            elif kind == "flatten":
                x = x.flatten(1)
        return x


def count_macs(cfg: ArchConfig) -> list[int]:
    """Multiply-accumulates of one ANN inference, per weighted layer (index-aligned with weighted layers)."""
    macs = []
    prev: tuple[int, ...] = tuple(cfg.input_shape)
    for spec, shape in zip(cfg.layers, layer_shapes(cfg)):
        kind = spec["kind"]
        if kind == "conv":
            k = int(spec.get("kernel", 3))
            macs.append(math.prod(shape) * prev[0] * k * k)
        elif kind == "resblock":
            m = math.prod(shape) * (prev[0] * 9 + shape[0] * 9)
            if int(spec.get("stride", 1)) != 1 or prev[0] != shape[0]:
                m += math.prod(shape) * prev[0]
            macs.append(m)
        elif kind == "linear":
            macs.append(shape[0] * prev[0])
        prev = shape
    return macs
