"""Layer specs: one small frozen dataclass per kind of layer an architecture lists.

As NIR has one node class per primitive, each kind here knows its output shape, its
multiply-accumulates per inference and its neuron layers, validates its own fields on
construction, and writes the dict a checkpoint stores (``to_dict``; ``layer_from_dict``
reads it back, refusing unknown kinds and keys). The packages that must know a kind's
arithmetic (the ANN and SNN in ``trainer``, the quantizer in ``export``) dispatch on the
type; a new kind is a class here and a branch in each of those.

Shapes are (C, H, W) for feature maps and (N,) after ``Flatten``, without the batch.
``bias`` is only set by a batch norm folded into the layer (the neuron's bias on the
core); ``norm`` puts a batch norm between the layer and its activation in the ANN, which
conversion folds away.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar


class ArchError(ValueError):
    """An architecture name, config or layer spec that cannot be built."""


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _check_int(spec, name: str, low: int) -> None:
    value = getattr(spec, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ArchError(f"{spec.kind} needs an integer {name} >= {low}, got {value!r}")


def _check_flag(spec, name: str) -> None:
    if not isinstance(getattr(spec, name), bool):
        raise ArchError(f"{spec.kind} needs {name} true or false, got {getattr(spec, name)!r}")


def _check_map(spec, shape: tuple) -> None:
    if len(shape) != 3:
        raise ArchError(f"{spec.kind} needs a (C, H, W) input, got {shape}")


class LayerSpec:
    """What every kind answers; ``neuron_parts``: the neuron layers it ends in (none for
    shape-only kinds; the classifier's ``Linear`` accumulates instead)."""
    kind: ClassVar[str]
    neuron_parts: ClassVar[tuple[str, ...]] = ()
    defaults_written: ClassVar[tuple[str, ...]] = ()   # fields a checkpoint holds even at their default

    @property
    def weighted(self) -> bool:
        """Whether it holds weights: exactly the kinds that end in neurons."""
        return bool(self.neuron_parts)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def macs(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
        """Multiply-accumulates of one ANN inference (0 for shape-only kinds)."""
        return 0

    def to_dict(self) -> dict:
        """The checkpoint's form: ``kind`` and every field that differs from its default or
        is always written (so files of before these classes read back the same)."""
        out = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self.defaults_written or value != f.default:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class Conv(LayerSpec):
    """y[c, i, j] = sum_{c', u, v} W[c, c', u, v] x[c', s*i + u - p, s*j + v - p] (+ b[c]):
    C_out x C_in x k x k weights, stride s, zero padding p."""
    out_channels: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    bias: bool = False
    norm: bool = False
    kind: ClassVar[str] = "conv"
    neuron_parts: ClassVar[tuple[str, ...]] = ("out",)
    defaults_written: ClassVar[tuple[str, ...]] = ("kernel", "stride", "padding")

    def __post_init__(self):
        for name, low in (("out_channels", 1), ("kernel", 1), ("stride", 1), ("padding", 0)):
            _check_int(self, name, low)
        _check_flag(self, "bias")
        _check_flag(self, "norm")

    def output_shape(self, shape):
        _check_map(self, shape)
        return (self.out_channels, _conv_out(shape[1], self.kernel, self.stride, self.padding),
                _conv_out(shape[2], self.kernel, self.stride, self.padding))

    def macs(self, in_shape, out_shape):
        return math.prod(out_shape) * in_shape[0] * self.kernel * self.kernel


@dataclass(frozen=True)
class AvgPool(LayerSpec):
    """y[c, i, j] = mean of x[c, k*i .. k*i + k - 1, k*j .. k*j + k - 1]: stride = kernel k,
    which must divide the map (the SNN-friendly pool; max pooling is not)."""
    kernel: int = 2
    kind: ClassVar[str] = "avgpool"
    defaults_written: ClassVar[tuple[str, ...]] = ("kernel",)

    def __post_init__(self):
        _check_int(self, "kernel", 1)

    def output_shape(self, shape):
        _check_map(self, shape)
        if shape[1] % self.kernel or shape[2] % self.kernel:
            raise ArchError(f"avgpool {self.kernel} does not divide {shape[1]}x{shape[2]}")
        return (shape[0], shape[1] // self.kernel, shape[2] // self.kernel)


@dataclass(frozen=True)
class Dropout(LayerSpec):
    """y = x * m / (1 - p), m ~ Bernoulli(1 - p) while training (in the SNN one mask per
    mini-batch, fixed over the time steps); y = x otherwise."""
    p: float = 0.0
    kind: ClassVar[str] = "dropout"
    defaults_written: ClassVar[tuple[str, ...]] = ("p",)

    def __post_init__(self):
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0.0 <= self.p < 1.0:
            raise ArchError(f"dropout p must be a number in [0, 1), got {self.p!r}")
        object.__setattr__(self, "p", float(self.p))

    def output_shape(self, shape):
        return shape


@dataclass(frozen=True)
class Flatten(LayerSpec):
    """y = x as one vector of C*H*W values, in C-order."""
    kind: ClassVar[str] = "flatten"

    def output_shape(self, shape):
        return (math.prod(shape),)


@dataclass(frozen=True)
class Linear(LayerSpec):
    """y = W x (+ b), N_out x N_in weights on a flattened input; the last one is the classifier."""
    out_features: int
    bias: bool = False
    norm: bool = False
    kind: ClassVar[str] = "linear"
    neuron_parts: ClassVar[tuple[str, ...]] = ("out",)

    def __post_init__(self):
        _check_int(self, "out_features", 1)
        _check_flag(self, "bias")
        _check_flag(self, "norm")

    def output_shape(self, shape):
        if len(shape) != 1:
            raise ArchError(f"linear needs a flattened input, got {shape}")
        return (self.out_features,)

    def macs(self, in_shape, out_shape):
        return out_shape[0] * in_shape[0]


@dataclass(frozen=True)
class ResBlock(LayerSpec):
    """The basic residual block: h = f(conv1(x)), y = f(conv2(h) + shortcut(x)), 3x3 convs
    (conv1 with stride s), the shortcut a 1x1 conv with stride s where the shape changes,
    the identity otherwise; two neuron layers, after conv1 ("conv1") and after the sum
    ("out"). ``bias`` gives each conv one (the shortcut's adds to conv2's); ``norm`` a batch
    norm after each conv in the ANN (conv1's before its activation, conv2's and the 1x1
    shortcut's before the sum; the identity takes none), folded into each at conversion."""
    out_channels: int
    stride: int = 1
    bias: bool = False
    norm: bool = False
    kind: ClassVar[str] = "resblock"
    neuron_parts: ClassVar[tuple[str, ...]] = ("conv1", "out")
    defaults_written: ClassVar[tuple[str, ...]] = ("stride",)

    def __post_init__(self):
        _check_int(self, "out_channels", 1)
        _check_int(self, "stride", 1)
        _check_flag(self, "bias")
        _check_flag(self, "norm")

    def projects(self, in_channels: int) -> bool:
        """Whether the shortcut is a 1x1 conv (the shape changes) rather than the identity."""
        return self.stride != 1 or in_channels != self.out_channels

    def output_shape(self, shape):
        _check_map(self, shape)
        return (self.out_channels, _conv_out(shape[1], 3, self.stride, 1), _conv_out(shape[2], 3, self.stride, 1))

    def macs(self, in_shape, out_shape):
        outputs = math.prod(out_shape)
        return outputs * (in_shape[0] * 9 + out_shape[0] * 9) + (outputs * in_shape[0] if self.projects(in_shape[0])
                                                                  else 0)


LAYER_TYPES: dict[str, type[LayerSpec]] = {t.kind: t for t in (Conv, AvgPool, Dropout, Flatten, Linear, ResBlock)}


def layer_from_dict(d: dict) -> LayerSpec:
    """The spec a checkpoint's layer dict describes; ArchError for an unknown kind or key."""
    if not isinstance(d, dict):
        raise ArchError(f"a layer must be a mapping with a kind, got {d!r}")
    kind = d.get("kind")
    if kind not in LAYER_TYPES:
        raise ArchError(f"unsupported kind {kind!r} (supported: {', '.join(LAYER_TYPES)}; max pooling and batch "
                        "norm layers are not SNN-friendly)")
    cls = LAYER_TYPES[kind]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names - {"kind"})
    if unknown:
        raise ArchError(f"{kind} has no field {', '.join(map(repr, unknown))} (its fields: {', '.join(sorted(names))})")
    try:
        return cls(**{k: v for k, v in d.items() if k != "kind"})
    except TypeError as exc:                     # a required field missing
        raise ArchError(f"{kind}: {exc}") from None

