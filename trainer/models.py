"""Architectures as data.

An architecture is a JSON-able config (``ArchConfig``) saved in every checkpoint, so
that any stage (conversion, STDB, export) rebuilds exactly the same model. The ANN
families follow the paper's SNN-friendly constraints: no bias, no batch norm in the SNN,
average pooling only, ReLU, dropout.

``ArchConfig.layers`` is a flat tuple of layer specs (``trainer.layers``: ``Conv``,
``AvgPool``, ``Dropout``, ``Flatten``, ``Linear``, ``ResBlock``). Every weighted layer
except the final ``Linear`` is followed by a ReLU in the ANN and by a spiking neuron
layer in the SNN; the final ``Linear`` is the classifier (the SNN's non-spiking
accumulator). A layer's ``bias`` is only set by a batch norm folded into it
(``trainer.norms``, or an imported module's own biases and batch norms:
``trainer.torch_import``); its ``norm`` puts a batch norm between the layer and its
activation in the ANN, which conversion folds into the weights and that bias, so no SNN
or core graph ever holds one.

``ArchConfig.quant_levels`` L (default None: ReLU) selects the low-latency recipe's ANN
(``trainer.qcfs``): every hidden activation is QCFS's clip-floor-shift with L levels and
a trainable threshold per neuron layer (``ANN.act_thresholds``, which conversion makes
the SNN's thresholds), and the input is quantized to L levels as the integrate encoding
delivers it in L steps. ``ArchConfig.input_levels`` T (default None: L) quantizes the input
to T levels instead, as T steps deliver it: an ANN of L-level activations made for an SNN
run at T != L steps sees the input that SNN will receive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from trainer import qcfs, qcfs_numba
from trainer.layers import ArchError, AvgPool, Conv, Dropout, Flatten, LayerSpec, Linear, ResBlock, layer_from_dict

NORM_EPS = 1e-5        # the ANN's batch norms' epsilon, which the fold at conversion uses as well

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


@dataclass(frozen=True)
class ArchConfig:
    """A network: its input, its classes and its layers, validated on construction (the
    shapes chain, the last layer is the classifier)."""
    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    layers: tuple[LayerSpec, ...] = field(default_factory=tuple)
    quant_levels: int | None = None        # QCFS levels L of the hidden activations and the input; None: ReLU
    input_levels: int | None = None        # the input's levels when not L (a QCFS ANN for T != L steps)

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.input_levels is not None and self.input_levels == self.quant_levels:
            object.__setattr__(self, "input_levels", None)      # one form per network: None is L
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, LayerSpec):
                raise ArchError(f"{self.name}: layer {i} is {layer!r}, not a layer spec (trainer.layers)")
        self.validate()

    def to_dict(self) -> dict:
        d = {"name": self.name, "input_shape": list(self.input_shape),
             "num_classes": self.num_classes, "layers": [l.to_dict() for l in self.layers]}
        if self.quant_levels is not None:          # absent: the paper's ReLU ANN (files of before it load)
            d["quant_levels"] = self.quant_levels
        if self.input_levels is not None:
            d["input_levels"] = self.input_levels
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ArchConfig":
        try:
            levels, input_levels = d.get("quant_levels"), d.get("input_levels")
            for key, v in (("quant_levels", levels), ("input_levels", input_levels)):
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                    raise ValueError(f"{key} must be an integer, got {v!r}")
            name, raw = str(d["name"]), list(d["layers"])
            shape, classes = tuple(int(v) for v in d["input_shape"]), int(d["num_classes"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArchError(f"malformed architecture config: {exc!r}") from None
        layers = []
        for i, layer in enumerate(raw):
            try:
                layers.append(layer_from_dict(layer))
            except ArchError as exc:
                raise ArchError(f"{name}: layer {i}: {exc}") from None
        return cls(name=name, input_shape=shape, num_classes=classes, layers=layers, quant_levels=levels,
                   input_levels=input_levels)

    def validate(self) -> None:
        """Walk the layers once, checking that shapes chain."""
        if self.quant_levels is not None and not 1 <= self.quant_levels <= 1024:
            raise ArchError(f"{self.name}: quant_levels must be an integer in 1..1024, got {self.quant_levels}")
        if self.input_levels is not None and (self.quant_levels is None or not 1 <= self.input_levels <= 1024):
            raise ArchError(f"{self.name}: input_levels must be an integer in 1..1024 beside quant_levels, "
                            f"got {self.input_levels} (quant_levels {self.quant_levels})")
        if self.quant_levels is not None and any(isinstance(l, ResBlock) for l in self.layers):
            raise ArchError(f"{self.name}: QCFS activations (quant_levels) are supported in VGG nets (conv, pool, "
                            "linear), not yet in residual blocks")
        layer_shapes(self)

    @property
    def input_quant_levels(self) -> int | None:
        """The levels the ANN quantizes its input to (None: not at all, a ReLU ANN)."""
        return self.quant_levels if self.input_levels is None else self.input_levels

    def with_layer(self, i: int, **changes) -> "ArchConfig":
        """This architecture with layer i's fields changed (``bias=True`` where a fold gave it one)."""
        layers = list(self.layers)
        layers[i] = replace(layers[i], **changes)
        return replace(self, layers=tuple(layers))

    @property
    def normed(self) -> list[int]:
        """Indices of the layers followed by a batch norm in the ANN."""
        return [i for i, l in enumerate(self.layers) if getattr(l, "norm", False)]


def build_config(name: str, input_shape, num_classes: int, *, conv_dropout: float = 0.2, fc_dropout: float = 0.5,
                 norm: bool = False, quant_levels: int | None = None, input_levels: int | None = None) -> ArchConfig:
    """The named architecture for this input shape and class count; ``norm``: a batch norm
    after every conv layer (VGG nets, the residual nets' pre-processing convs and blocks),
    ``quant_levels``, ``input_levels``: QCFS activations and input (the module docstring)."""
    def conv(width: int) -> list[LayerSpec]:
        return [Conv(width, norm=norm)] + ([Dropout(conv_dropout)] if conv_dropout > 0 else [])

    if name in VGG_FEATURES:
        layers: list[LayerSpec] = []
        for item in VGG_FEATURES[name]:
            layers += [AvgPool(2)] if item == "A" else conv(item)
        layers.append(Flatten())
        for width in VGG_CLASSIFIER[name]:
            layers += [Linear(width)] + ([Dropout(fc_dropout)] if fc_dropout > 0 else [])
    elif name in RESNETS:
        pre, blocks = RESNETS[name]
        layers = [spec for width in pre for spec in conv(width)] + [AvgPool(2)]
        layers += [ResBlock(width, stride, norm=norm) for width, stride in blocks]
        layers.append(Flatten())
    else:
        raise ArchError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    layers.append(Linear(int(num_classes)))
    return ArchConfig(name=name, input_shape=tuple(int(v) for v in input_shape), num_classes=int(num_classes),
                      layers=tuple(layers), quant_levels=quant_levels, input_levels=input_levels)


def layer_shapes(cfg: ArchConfig) -> list[tuple[int, ...]]:
    """Output shape of every layer (without batch); raises ArchError if they do not chain."""
    shape: tuple[int, ...] = tuple(cfg.input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ArchError(f"{cfg.name}: input_shape must be (C, H, W), got {shape}")
    if not cfg.layers or not isinstance(cfg.layers[-1], Linear):
        raise ArchError(f"{cfg.name}: the last layer must be the linear classifier")
    shapes = []
    for i, layer in enumerate(cfg.layers):
        try:
            shape = layer.output_shape(shape)
        except ArchError as exc:
            raise ArchError(f"{cfg.name}: layer {i}: {exc}") from None
        if getattr(layer, "norm", False) and i == len(cfg.layers) - 1:
            raise ArchError(f"{cfg.name}: layer {i} (the classifier) cannot take a batch norm (conv and hidden "
                            "linear layers can)")
        if min(shape) < 1:
            raise ArchError(f"{cfg.name}: layer {i} ({layer.kind}) leaves an empty shape {shape}")
        shapes.append(shape)
    if shapes[-1] != (cfg.num_classes,):
        raise ArchError(f"{cfg.name}: classifier has {shapes[-1][0]} outputs, expected {cfg.num_classes}")
    return shapes


class ResidualBlock(nn.Module):
    """The torch modules of a ``ResBlock`` spec: conv3x3-ReLU-conv3x3 + shortcut, ReLU."""

    def __init__(self, in_channels: int, spec: ResBlock):
        super().__init__()
        out, stride, bias = spec.out_channels, spec.stride, spec.bias
        self.conv1 = nn.Conv2d(in_channels, out, 3, stride, 1, bias=bias)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=bias)
        self.shortcut = nn.Conv2d(in_channels, out, 1, stride, 0, bias=bias) if spec.projects(in_channels) else None

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.shortcut is None else self.shortcut(x)

    def forward(self, x: torch.Tensor, inner=torch.relu, out=torch.relu, norms: nn.ModuleDict | None = None
                ) -> torch.Tensor:
        """``inner``, ``out``: the activations after conv1 and after the sum (ReLU or QCFS);
        ``norms``: the ANN's batch norms of this block (``block_norms``), None: none."""
        def normed(part: str, y: torch.Tensor) -> torch.Tensor:
            return norms[part](y) if norms is not None and part in norms else y
        h = inner(normed("conv1", self.conv1(x)))
        return out(normed("conv2", self.conv2(h)) + normed("shortcut", self.skip(x)))


def block_norms(in_channels: int, spec: ResBlock) -> nn.ModuleDict:
    """A normalised block's batch norms in the ANN: after conv1, after conv2 and after a 1x1
    shortcut (the identity takes none, as in He et al.'s ResNets)."""
    parts = ("conv1", "conv2") + (("shortcut",) if spec.projects(in_channels) else ())
    return nn.ModuleDict({part: nn.BatchNorm2d(spec.out_channels, eps=NORM_EPS) for part in parts})


def build_layers(cfg: ArchConfig) -> nn.ModuleList:
    """Torch modules of the weighted layers (and identity placeholders), index-aligned with cfg.layers.

    The ANN and the SNN share these modules, so one state_dict serves both.
    """
    modules = nn.ModuleList()
    prev: tuple[int, ...] = tuple(cfg.input_shape)
    for spec, shape in zip(cfg.layers, layer_shapes(cfg)):
        if isinstance(spec, Conv):
            modules.append(nn.Conv2d(prev[0], shape[0], spec.kernel, spec.stride, spec.padding, bias=spec.bias))
        elif isinstance(spec, ResBlock):
            modules.append(ResidualBlock(prev[0], spec))
        elif isinstance(spec, Linear):
            modules.append(nn.Linear(prev[0], shape[0], bias=spec.bias))
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
    return [(i, part) for i, layer in enumerate(cfg.layers[:-1]) for part in layer.neuron_parts]


def neuron_count(cfg: ArchConfig) -> int:
    """Neurons per image: every weighted layer's outputs (a residual block's two layers, the
    accumulating classifier too); what a run holds per step scales with it."""
    return sum(math.prod(shape) * len(layer.neuron_parts) for layer, shape in zip(cfg.layers, layer_shapes(cfg)))


class ANN(nn.Module):
    """The ANN under SNN-friendly constraints; input is the normalised, clipped image.

    ``norms[str(i)]``: the batch norm after layer i (``ArchConfig.normed``; a block's: ``block_norms``);
    ``act_thresholds``: QCFS's lambda per neuron layer (only with ``quant_levels``);
    ``qcfs_activation``: its implementation (the compiled kernels on the CPU, else the reference:
    ``trainer.qcfs_numba.activation``; an instance may take ``trainer.qcfs.qcfs`` to compare).
    """
    qcfs_activation = staticmethod(qcfs_numba.activation)

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = build_layers(cfg)
        shapes = [tuple(cfg.input_shape)] + layer_shapes(cfg)
        self.norms = nn.ModuleDict({str(i): self._norm(cfg.layers[i], shapes[i], shapes[i + 1]) for i in cfg.normed})
        if cfg.quant_levels is not None:
            self.act_thresholds = nn.Parameter(torch.full((len(neuron_layers(cfg)),), qcfs.INITIAL_THRESHOLD))

    @staticmethod
    def _norm(spec: LayerSpec, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> nn.Module:
        if isinstance(spec, ResBlock):
            return block_norms(in_shape[0], spec)
        return (nn.BatchNorm2d if isinstance(spec, Conv) else nn.BatchNorm1d)(out_shape[0], eps=NORM_EPS)

    def _act(self, k: int):
        """Neuron layer k's activation."""
        if self.cfg.quant_levels is None:
            return torch.relu
        return lambda x: self.qcfs_activation(x, self.act_thresholds[k], self.cfg.quant_levels)

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
        if self.cfg.input_quant_levels is not None:
            x = qcfs.quantize_input(x, self.cfg.input_quant_levels)
        act = self._act if record is None else self._recorded(record)
        k = 0
        for i, (spec, module) in enumerate(zip(self.cfg.layers, self.layers)):
            if isinstance(spec, (Conv, Linear)):
                x = module(x)
                if str(i) in self.norms:
                    x = self.norms[str(i)](x)
                if i != last:
                    x = act(k)(x)
                    k += 1
            elif isinstance(spec, ResBlock):
                x = module(x, act(k), act(k + 1), self.norms[str(i)] if str(i) in self.norms else None)
                k += 2
            elif isinstance(spec, AvgPool):
                x = nn.functional.avg_pool2d(x, spec.kernel)
            elif isinstance(spec, Dropout):
                x = nn.functional.dropout(x, spec.p, self.training)
            elif isinstance(spec, Flatten):
                x = x.flatten(1)
            else:
                raise ArchError(f"{self.cfg.name}: the ANN has no form for layer {i} ({spec.kind})")
        return x


def count_macs(cfg: ArchConfig) -> list[int]:
    """Multiply-accumulates of one ANN inference, per weighted layer (index-aligned with weighted layers)."""
    shapes = [tuple(cfg.input_shape)] + layer_shapes(cfg)
    return [spec.macs(shapes[i], shapes[i + 1]) for i, spec in enumerate(cfg.layers) if spec.weighted]
