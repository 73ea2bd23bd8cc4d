"""A user's own PyTorch module as the chain's ANN.

``import_module(module, input_shape)`` traces the module with ``torch.fx``, propagates an
example input's shapes through the trace, and maps it onto an ``ArchConfig`` (the layer
kinds of ``trainer.models``) and a state_dict, so that conversion, STDB, export and hwsim
take it as they take the project's own architectures. The mapping, node by node:

- ``Conv2d`` (zero padding, no groups or dilation, square kernel and stride) and ``Linear``
  become ``conv`` and ``linear`` layers; a ``BatchNorm1d``/``BatchNorm2d`` right after one
  folds into its weights and bias (``w * g / sqrt(var + eps)``, ``(b - mean) * g /
  sqrt(var + eps) + beta``), which the core adds as the neuron's bias;
- ``ReLU`` (module, ``F.relu``, ``torch.relu``, ``Tensor.relu``) must follow every conv and
  hidden linear layer: it is the spiking neuron; the last ``Linear`` has none (the
  classifier);
- ``AvgPool2d`` with stride = kernel and no padding, ``AdaptiveAvgPool2d`` whose output
  divides the input (a plain pool) or equals it (nothing), ``F.avg_pool2d``;
- ``Dropout`` (kept for fine-tuning; an identity at inference), ``Identity``;
- ``Flatten``, ``torch.flatten``, ``view``/``reshape`` to (batch, features);
- a residual addition ``relu(f(x) + s(x))`` with ``f`` = conv3x3 (stride s) [BN] ReLU
  conv3x3 [BN] and ``s`` the identity or a 1x1 conv (stride s) [BN]: a ``resblock``.

Anything else (max pooling, other activations, other normalisations) is refused with one
line naming the module and what the chain takes instead: the core's neurons are
integrate-and-fire units that carry ReLU's rates, and its synapses are linear.

The imported ANN must compute what the module computes; ``trainer.user_network`` checks it
on the data set's images before it writes the checkpoint.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from trainer.layers import AvgPool, Conv, Dropout, Flatten, LayerSpec, Linear, ResBlock
from trainer.models import ANN, ArchConfig, ArchError
from trainer.norms import fold_batch_norm

SUPPORTED = ("Conv2d, Linear, BatchNorm1d/2d (folded), ReLU, AvgPool2d, AdaptiveAvgPool2d (as a plain pool), "
             "Dropout, Flatten/view, Identity and residual additions")
INSTEAD = {nn.MaxPool2d: "AvgPool2d", nn.AdaptiveMaxPool2d: "AdaptiveAvgPool2d", nn.GELU: "ReLU", nn.SiLU: "ReLU",
           nn.ELU: "ReLU", nn.LeakyReLU: "ReLU", nn.ReLU6: "ReLU", nn.Sigmoid: "ReLU", nn.Tanh: "ReLU",
           nn.Hardswish: "ReLU", nn.LayerNorm: "BatchNorm after a conv or linear layer",
           nn.GroupNorm: "BatchNorm2d after a conv", nn.Softmax: "no softmax (the chain takes the logits)",
           nn.LogSoftmax: "no softmax (the chain takes the logits)"}
_RELU = (torch.relu, nn.functional.relu)
_FLATTEN = (torch.flatten,)
_SHAPE_ONLY = ("size", "dim")          # methods whose results only feed shapes (x.view(x.size(0), -1))


class ImportRefused(ValueError):
    """A module the chain cannot take, with the reason in one line."""


@dataclass
class _Op:
    """One traced node in the chain's terms: ``kind`` in conv, linear, bn, relu, pool,
    dropout, flatten, add, skip; ``module`` where it calls one; ``pool`` the kernel."""
    node: fx.Node
    kind: str
    module: nn.Module | None = None
    pool: int = 1
    p: float = 0.0


def _describe(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"module {node.target!r} ({type(gm.get_submodule(node.target)).__name__})"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{node.op.replace('call_', '')} {name!r} (node {node.name})"


def _shape(node) -> tuple[int, ...]:
    return tuple(node.meta["tensor_meta"].shape)


def _refuse(node, gm, why: str | None = None) -> ImportRefused:
    what = _describe(node, gm)
    if why is None:
        target = gm.get_submodule(node.target) if node.op == "call_module" else None
        hint = next((v for k, v in INSTEAD.items() if isinstance(target, k)), None)
        why = f"not supported: use {hint}" if hint else f"not supported (the chain takes {SUPPORTED})"
    return ImportRefused(f"{what}: {why}")


def _pool_kernel(node, gm, kernel, stride, padding, in_shape) -> int:
    k = kernel if isinstance(kernel, int) else tuple(kernel)
    s = k if stride is None or stride == [] or stride == () else (stride if isinstance(stride, int) else tuple(stride))
    p = padding if isinstance(padding, int) else tuple(padding)
    ks = k if isinstance(k, tuple) else (k, k)
    ss = s if isinstance(s, tuple) else (s, s)
    if ks[0] != ks[1] or ss != ks or p not in (0, (0, 0)):
        raise _refuse(node, gm, f"average pooling needs a square kernel, stride = kernel and no padding "
                                f"(got kernel {k}, stride {s}, padding {p})")
    if in_shape[-1] % ks[0] or in_shape[-2] % ks[0]:
        raise _refuse(node, gm, f"a {ks[0]}x{ks[0]} pool does not divide its {in_shape[-2]}x{in_shape[-1]} input")
    return ks[0]


def _classify(node: fx.Node, gm: fx.GraphModule) -> _Op:
    """The chain's kind of one traced node, or ImportRefused."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str) \
                    or len(set(m.kernel_size)) != 1 or len(set(m.stride)) != 1 or len(set(m.padding)) != 1:
                raise _refuse(node, gm, "a conv needs groups 1, dilation 1, zero padding given as numbers, and a "
                                        f"square kernel, stride and padding (got kernel {m.kernel_size}, stride "
                                        f"{m.stride}, padding {m.padding}, groups {m.groups}, dilation {m.dilation})")
            return _Op(node, "conv", m)
        if isinstance(m, nn.Linear):
            return _Op(node, "linear", m)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not m.track_running_stats or m.running_mean is None:
                raise _refuse(node, gm, "a batch norm needs running statistics to fold (track_running_stats=True)")
            return _Op(node, "bn", m)
        if isinstance(m, nn.ReLU):
            return _Op(node, "relu")
        if isinstance(m, nn.AvgPool2d):
            if m.ceil_mode:
                raise _refuse(node, gm, "average pooling with ceil_mode is not a plain pool")
            return _Op(node, "pool", pool=_pool_kernel(node, gm, m.kernel_size, m.stride, m.padding,
                                                       _shape(node.args[0])))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return _adaptive(node, gm, m.output_size)
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            return _Op(node, "dropout", p=float(m.p))
        if isinstance(m, nn.Identity):
            return _Op(node, "skip")
        if isinstance(m, nn.Flatten):
            return _flatten(node, gm)
        raise _refuse(node, gm)
    if node.op == "call_function":
        if node.target in _RELU:
            return _Op(node, "relu")
        if node.target in _FLATTEN:
            return _flatten(node, gm)
        if node.target in (operator.add, operator.iadd, torch.add):
            return _Op(node, "add")
        if node.target is nn.functional.avg_pool2d:
            args = list(node.args[1:]) + [None] * 3
            kernel, stride = node.kwargs.get("kernel_size", args[0]), node.kwargs.get("stride", args[1])
            padding = node.kwargs.get("padding", args[2] if args[2] is not None else 0)
            if node.kwargs.get("ceil_mode") or (len(node.args) > 4 and node.args[4]):
                raise _refuse(node, gm, "average pooling with ceil_mode is not a plain pool")
            return _Op(node, "pool", pool=_pool_kernel(node, gm, kernel, stride, padding, _shape(node.args[0])))
        if node.target is nn.functional.adaptive_avg_pool2d:
            return _adaptive(node, gm, node.kwargs.get("output_size", node.args[1] if len(node.args) > 1 else None))
        if node.target is nn.functional.dropout:
            return _Op(node, "dropout", p=float(node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)))
        raise _refuse(node, gm)
    if node.op == "call_method":
        if node.target == "relu":
            return _Op(node, "relu")
        if node.target in ("view", "reshape", "flatten"):
            return _flatten(node, gm)
        if node.target == "contiguous":
            return _Op(node, "skip")
        if node.target in ("add", "add_"):
            return _Op(node, "add")
        raise _refuse(node, gm)
    raise _refuse(node, gm)


def _adaptive(node, gm, output_size) -> _Op:
    h, w = _shape(node.args[0])[-2:]
    oh, ow = _shape(node)[-2:]
    if h % oh or w % ow or h // oh != w // ow:
        raise _refuse(node, gm, f"adaptive average pooling from {h}x{w} to {oh}x{ow} is not a plain square pool "
                                "at this input size")
    return _Op(node, "skip") if h == oh else _Op(node, "pool", pool=h // oh)


def _flatten(node, gm) -> _Op:
    before, after = _shape(node.args[0]), _shape(node)
    if after != (before[0], math.prod(before[1:])):
        raise _refuse(node, gm, f"a reshape from {before} to {after}: the chain takes flattening to "
                                "(batch, features) only")
    return _Op(node, "flatten") if len(before) > 2 else _Op(node, "skip")


def _shape_only(node: fx.Node) -> bool:
    """A node that reads a shape (``x.size(0)``, ``x.shape``), not values."""
    return (node.op == "call_method" and node.target in _SHAPE_ONLY) or \
        (node.op == "call_function" and node.target in (getattr, operator.getitem) and "tensor_meta" not in node.meta)


def _data_users(node: fx.Node) -> list[fx.Node]:
    """The nodes that consume ``node``'s values (not only its shape)."""
    return [u for u in node.users if not _shape_only(u)]


class _Walker:
    """Walks the traced chain from the input, emitting layer specs and the state_dict.

    Its position is a *value*: the node whose output is the current tensor, already mapped."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.layers: list[LayerSpec] = []
        self.state: dict[str, torch.Tensor] = {}
        self.ops = {n: _classify(n, gm) for n in gm.graph.nodes
                    if n.op not in ("placeholder", "output") and not _shape_only(n)}

    def follow(self, value: fx.Node) -> fx.Node | None:
        """The next non-neutral node consuming ``value``; None where it is the module's output."""
        while True:
            users = _data_users(value)
            if len(users) != 1:
                raise _refuse(value, self.gm, f"its output feeds {len(users)} nodes where the chain expects one "
                                              "(layers in a chain, residual additions of the form relu(f(x) + s(x)))")
            if users[0].op == "output":
                return None
            if self.ops[users[0]].kind != "skip":
                return users[0]
            value = users[0]

    def weighted(self, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor | None, fx.Node]:
        """A conv or linear node's weight and bias with a batch norm right after it folded in; the
        value after them (the node itself or its batch norm)."""
        m = self.ops[node].module
        weight = m.weight.detach().float()
        bias = None if m.bias is None else m.bias.detach().float()
        after = self.follow(node)
        if after is None or self.ops[after].kind != "bn":
            return weight, bias, node
        bn = self.ops[after].module
        weight, bias = fold_batch_norm(weight, bias, bn.running_mean, bn.running_var,
                                       bn.weight.detach() if bn.affine else None,
                                       bn.bias.detach() if bn.affine else None, bn.eps)
        return weight, bias, after

    def relu_after(self, value: fx.Node, of: fx.Node) -> fx.Node:
        """The ReLU that must follow ``of`` (dropouts before it commute with it and are kept after)."""
        node = self.follow(value)
        while node is not None and self.ops[node].kind == "dropout":
            self.layers.append(Dropout(self.ops[node].p))
            node = self.follow(node)
        if node is None or self.ops[node].kind != "relu":
            got = "the output" if node is None else _describe(node, self.gm)
            raise _refuse(of, self.gm, f"followed by {got}; every conv and hidden linear layer needs a ReLU after "
                                       "it (and its batch norm): the spiking neuron")
        return node

    def put(self, prefix: str, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.state[f"{prefix}.weight"] = weight
        if bias is not None:
            self.state[f"{prefix}.bias"] = bias

    def walk(self, value: fx.Node) -> None:
        """Map everything after ``value`` (the input) up to the classifier."""
        while True:
            if len(_data_users(value)) == 2:
                value = self.block(value)
                continue
            node = self.follow(value)
            if node is None:
                raise _refuse(value, self.gm, "the network must end in a Linear classifier (no activation after "
                                              "it)")
            op, i = self.ops[node], len(self.layers)
            if op.kind in ("conv", "linear"):
                weight, bias, value = self.weighted(node)
                m = op.module
                self.layers.append(Conv(m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0],
                                        bias=bias is not None) if op.kind == "conv" else
                                   Linear(m.out_features, bias=bias is not None))
                self.put(f"layers.{i}", weight, bias)
                if op.kind == "linear" and self.follow(value) is None:
                    return
                value = self.relu_after(value, node)
            elif op.kind in ("pool", "dropout", "flatten"):
                self.layers.append(AvgPool(op.pool) if op.kind == "pool" else
                                   Dropout(op.p) if op.kind == "dropout" else Flatten())
                value = node
            else:
                raise _refuse(node, self.gm, "expected a conv, linear, pool, dropout or flatten layer here (a ReLU "
                                             "or batch norm after a weighted layer, an addition ending a residual "
                                             "branch)")

    def branch(self, node: fx.Node) -> list[fx.Node]:
        """The nodes from ``node`` up to and including the addition it reaches."""
        path = [node]
        while self.ops[node].kind != "add":
            node = self.follow(node)
            if node is None:
                raise _refuse(path[0], self.gm, "a branch that never meets its shortcut in an addition")
            path.append(node)
        return path

    def block(self, fork: fx.Node) -> fx.Node:
        """A residual block forking at ``fork``: relu(conv2(relu(conv1(x))) + s(x)); its final ReLU."""
        paths = [self.branch(u) if self.ops[u].kind != "skip" else self.branch(self.follow(u) or u)
                 for u in _data_users(fork)]
        add = paths[0][-1]
        if paths[1][-1] is not add or len([a for a in add.args if isinstance(a, fx.Node)]) != 2 or \
                set(add.kwargs) - {"other"}:
            raise _refuse(fork, self.gm, "its two branches must meet in one addition of the two (relu(f(x) + s(x)))")
        main, short = sorted(paths, key=len, reverse=True)
        kinds = [self.ops[n].kind for n in main[:-1] if self.ops[n].kind != "bn"]
        if kinds != ["conv", "relu", "conv"]:
            raise _refuse(add, self.gm, f"a residual branch must be conv3x3 [BN] ReLU conv3x3 [BN] (got "
                                        f"{' '.join(kinds)})")
        convs = [n for n in main if self.ops[n].kind == "conv"]
        c1, c2 = (self.ops[n].module for n in convs)
        stride, in_ch, out_ch = c1.stride[0], c1.in_channels, c1.out_channels
        if (c1.kernel_size[0], c1.padding[0], c2.kernel_size[0], c2.padding[0], c2.stride[0]) != (3, 1, 3, 1, 1):
            raise _refuse(convs[0], self.gm, "a residual branch's convs must be 3x3 with padding 1 (the second "
                                             "with stride 1)")
        short_kinds = [self.ops[n].kind for n in short[:-1] if self.ops[n].kind != "bn"]
        if short_kinds not in ([], ["conv"]):
            raise _refuse(add, self.gm, f"a shortcut must be the identity or a 1x1 conv [BN] (got "
                                        f"{' '.join(short_kinds)})")
        parts = {"conv1": self.weighted(convs[0]), "conv2": self.weighted(convs[1])}
        if short_kinds:
            sc = self.ops[short[0]].module
            if (sc.kernel_size[0], sc.stride[0], sc.padding[0]) != (1, stride, 0) or (stride, in_ch) == (1, out_ch):
                raise _refuse(short[0], self.gm, f"a shortcut conv must be 1x1 with the branch's stride ({stride}) "
                                                 "and no padding, and only where the block changes the shape "
                                                 "(the identity elsewhere)")
            parts["shortcut"] = self.weighted(short[0])
        elif stride != 1 or in_ch != out_ch:
            raise _refuse(add, self.gm, "an identity shortcut where the block changes the shape")
        biased = any(b is not None for _, b, _ in parts.values())
        i = len(self.layers)
        for name, (w, b, _) in parts.items():
            self.put(f"layers.{i}.{name}", w, torch.zeros(w.shape[0]) if biased and b is None else b)
        self.layers.append(ResBlock(out_ch, stride, bias=biased))
        return self.relu_after(add, add)


def import_module(module: nn.Module, input_shape: tuple[int, int, int], name: str = "imported",
                  num_classes: int | None = None) -> tuple[ArchConfig, dict[str, torch.Tensor]]:
    """(architecture, state_dict) of the project's ANN computing what ``module`` computes on
    (C, H, W) inputs (its batch norms folded); ImportRefused names what cannot be mapped."""
    module = module.eval()
    try:
        gm = fx.symbolic_trace(module)
    except Exception as exc:   # fx raises many kinds on data-dependent control flow
        raise ImportRefused(f"torch.fx cannot trace the module ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                            "the chain takes modules whose forward is a fixed graph of layers") from None
    example = torch.zeros(2, *input_shape)
    try:
        with torch.no_grad():
            module(example)       # its own error first (ShapeProp would print a traceback around it)
    except Exception as exc:
        raise ImportRefused(f"the module does not run on inputs of shape {tuple(input_shape)} "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise ImportRefused(f"the module's forward takes {len(inputs)} inputs; the chain feeds one image tensor")
    walker = _Walker(gm)
    try:
        walker.walk(inputs[0])
        out_features = walker.layers[-1].out_features
        if num_classes is not None and out_features != num_classes:
            raise ImportRefused(f"the module's classifier has {out_features} outputs; the data set has "
                                f"{num_classes} classes")
        cfg = ArchConfig(name=name, input_shape=tuple(input_shape), num_classes=out_features, layers=walker.layers)
    except ArchError as exc:
        raise ImportRefused(f"the mapped architecture is not valid: {exc}") from None
    ann = ANN(cfg)
    missing = set(ann.state_dict()) ^ set(walker.state)
    if missing:
        raise ImportRefused(f"internal mapping mismatch on {sorted(missing)}")
    return cfg, walker.state
