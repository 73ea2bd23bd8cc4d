"""The core graph: the one format between export and hwsim (and anything after them).

A ``CoreGraph`` is a chain of ``Core`` nodes fed by an ``InputEncoding``
(``records.encoding``), the backbone, plus ``Shortcut`` synapse groups that reach back
to an earlier population: a directed acyclic graph in which a neuron population may
receive synaptic input from several populations (a residual block's sum is its conv
and its shortcut into one population, as on Loihi: no extra "add" neurons). Each node is
a small dataclass of numpy arrays and integers,
validated in ``__post_init__`` (after NIR's IR). The graph records what the trainer
knew: the stage it came from, the average pool folded into each core and the MACs of
the ANN layer each core implements, and the data set to test it on. The file is a
single ``.npz`` (no pickle): the JSON header under ``__graph__`` (``records.header``'s
rule) and one integer array per core; ``save_graph`` / ``load_graph`` are the one writer
and the one reader. Fixed-point semantics: ``export.fixedpoint``; docs/formats.md.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export import fixedpoint as fx
from records.atomic import atomic_file
from records.dataref import DataRef
from records.encoding import InputEncoding
from records.header import RecordError, header, npz_header, read_npz_record
from records.layout import SNN_STAGES
from records.timesteps import check_timesteps

FORMAT = "hybrid-snn-coregraph"
VERSION = 5              # 5: initial potential, input rule; 4: neuron bias; 3: shortcut synapse groups (a DAG);
#                          2: stage, data, pool, ANN MACs
OLDEST_READABLE = 2      # a version-2 file is a graph without shortcuts, a version-3 one without biases, a
#                          version-4 one with every neuron starting at 0 and Poisson input


class GraphError(RecordError):
    """A core graph that is malformed, of another format or version, or not representable."""


def _int(where: str, name: str, value) -> int:
    """An integer field as it is: 168.9, "4" or true is an error, never rounded or converted."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise GraphError(f"{where}: {name} must be an integer, got {value!r}")
    return int(value)


def _shape(v, where: str = "graph", name: str = "shape") -> tuple[int, ...]:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise GraphError(f"{where}: {name} must be a list of integers, got {v!r}")
    return tuple(_int(where, name, x) for x in v)


def _fan_out(op: str, weights: np.ndarray, input_shape, output_shape, stride, padding) -> np.ndarray:
    """Synapses leaving each input neuron of a dense, conv or one-to-one map."""
    if op == "dense":
        return np.full(input_shape, weights.shape[0], dtype=np.int64)
    if op == "identity":
        return np.ones(input_shape, dtype=np.int64)
    o, _, kh, kw = weights.shape
    (h, w), (ho, wo) = input_shape[1:], output_shape[1:]
    (sy, sx), (py, px) = stride, padding
    cover = np.zeros((h + 2 * py, w + 2 * px), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            cover[i:i + sy * ho:sy, j:j + sx * wo:sx] += 1
    return np.broadcast_to(cover[py:py + h, px:px + w] * o, input_shape).copy()


def _conv_maps(where: str, weights: np.ndarray, input_shape, output_shape, stride, padding) -> None:
    if weights.ndim != 4 or len(input_shape) != 3 or len(output_shape) != 3:
        raise GraphError(f"{where}: conv needs 4-d weights and (C, H, W) shapes")
    if len(stride) != 2 or len(padding) != 2 or min(stride) < 1 or min(padding) < 0:
        raise GraphError(f"{where}: conv stride {stride} must be two integers >= 1 and padding {padding} two >= 0")
    o, c, kh, kw = weights.shape
    ho = (input_shape[1] + 2 * padding[0] - kh) // stride[0] + 1
    wo = (input_shape[2] + 2 * padding[1] - kw) // stride[1] + 1
    if c != input_shape[0] or (o, ho, wo) != tuple(output_shape):
        raise GraphError(f"{where}: conv weights {weights.shape} with stride {stride}, "
                         f"padding {padding} do not map {input_shape} -> {output_shape}")


def _integer_weights(where: str, weights) -> np.ndarray:
    w = np.asarray(weights)
    if not np.issubdtype(w.dtype, np.integer):
        raise GraphError(f"{where}: weights must be integers, got {w.dtype}")
    return w.astype(np.int32)


def _dense_grid(where: str, weights: np.ndarray, weight_bits: int, weight_exp: int) -> None:
    """Weights as Lava's mixed-sign Dense/Sparse applies them, and an exponent it accepts."""
    lo, hi = fx.DENSE_WEIGHT_RANGE
    step = fx.dense_weight_step(weight_bits)
    if weights.size and (weights.min() < lo or weights.max() > hi or np.any(weights % step)):
        raise GraphError(f"{where}: weights must be multiples of {step} in [{lo}, {hi}] "
                         f"({weight_bits}-bit mixed-sign Lava weights)")
    if abs(weight_exp) > 7:
        raise GraphError(f"{where}: weight_exp={weight_exp} outside -7..7")


@dataclass
class Shortcut:
    """A synapse group from an earlier population (``source``: a core's name, or "input")
    into a core's neurons, beside the core's own synapse: a residual block's shortcut.

    op "conv": ``weights`` (C_out, C_in, kh, kw) in torch's layout, with ``stride`` and zero
    ``padding`` (a 1x1 projection; a folded pool makes it q x q with stride q);
    op "identity": one-to-one, ``weights`` one integer (shape (1,)) for every synapse.
    Its current ``a_s = shift(W s, weight_exp)`` (``fixedpoint.shortcut_input``) is added to
    the core's own current before the neuron: the core's threshold and both weight sets are
    in the same units (one scale per population). A shortcut runs on Lava as a sparse
    synapse with a delay (``export.lava.builder``), so its weights follow Dense's rules:
    Lava's mixed-sign grid and a ``weight_exp`` in -7..7; no 24-bit wrap.
    """
    source: str
    op: str
    weights: np.ndarray
    input_shape: tuple[int, ...]
    weight_exp: int = 0
    weight_bits: int = fx.WEIGHT_BITS
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self):
        self.source = str(self.source)
        where = f"shortcut from {self.source}"
        self.input_shape = _shape(self.input_shape, where, "input_shape")
        self.stride, self.padding = _shape(self.stride, where, "stride"), _shape(self.padding, where, "padding")
        self.weight_exp = _int(where, "weight_exp", self.weight_exp)
        self.weight_bits = _int(where, "weight_bits", self.weight_bits)
        self.weights = _integer_weights(f"shortcut from {self.source}", self.weights)
        if self.op not in ("conv", "identity"):
            raise GraphError(f"shortcut from {self.source}: unsupported op {self.op!r} (conv or identity)")
        if self.op == "identity" and self.weights.shape != (1,):
            raise GraphError(f"shortcut from {self.source}: an identity shortcut has one weight, "
                             f"got shape {self.weights.shape}")
        if not 2 <= self.weight_bits <= 8:
            raise GraphError(f"shortcut from {self.source}: weight_bits={self.weight_bits} outside 2..8")
        _dense_grid(f"shortcut from {self.source}", self.weights, self.weight_bits, self.weight_exp)

    def check_maps(self, where: str, output_shape: tuple[int, ...]) -> None:
        if self.op == "identity":
            if self.input_shape != tuple(output_shape):
                raise GraphError(f"{where}: an identity shortcut maps {self.input_shape} onto "
                                 f"{tuple(output_shape)}; the shapes must be equal")
        else:
            _conv_maps(where, self.weights, self.input_shape, output_shape, self.stride, self.padding)

    def fan_out_per_input(self, output_shape: tuple[int, ...]) -> np.ndarray:
        return _fan_out(self.op, self.weights, self.input_shape, output_shape, self.stride, self.padding)

    def header(self) -> dict:
        return {"source": self.source, "op": self.op, "input_shape": list(self.input_shape),
                "weight_exp": self.weight_exp, "weight_bits": self.weight_bits,
                "stride": list(self.stride), "padding": list(self.padding)}


@dataclass
class Core:
    """One neuromorphic core: a synaptic operation feeding a layer of fixed-point neurons.

    op "dense": ``weights`` (N_out, N_in) over the C-order flattened input;
    op "conv": ``weights`` (C_out, C_in, kh, kw), a cross-correlation in torch's layout
    with ``stride`` and zero ``padding`` (the Lava builder flips and transposes).
    Neurons follow ``export.fixedpoint``: threshold mantissa ``vth`` (17 bit), voltage
    decay ``dv`` (12 bit, leak = 1 - dv/4096), du = 4095, soft reset. ``spiking=False``
    marks the output accumulator. ``float_threshold`` and ``weight_scale`` (integer =
    float x scale) record where the integers came from. ``pool`` (fy, fx) is the average
    pool export folded into this core (its weights are constant over fy x fx blocks of
    the kernel, or of a dense core's (C, H, W) input), ``ann_macs`` the multiply-accumulates
    per step of the ANN layer the core implements (None: not made from an ANN).
    ``shortcuts``: further synapse groups into these neurons from earlier populations.
    ``bias``: None, or a 13-bit signed mantissa per output channel (conv: (C_out,)) or
    neuron (dense: (N_out,)), added to the voltage every step as ``bias << bias_exp``
    (``bias_exp`` 0..7) in the voltage's units, Loihi's LIF bias (a folded batch norm).
    ``v_init``: every neuron's voltage before the first step, in the voltage's units (those
    of ``vth << 6``), 0 ..  ``vth << 6`` (a neuron above its threshold would fire unprompted;
    the output accumulator starts at 0): the LIF process's initial ``v`` on Lava (the
    low-latency recipe starts at half the threshold).
    """
    name: str
    op: str
    weights: np.ndarray
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    vth: int
    dv: int = 0
    spiking: bool = True
    weight_exp: int = 0
    weight_bits: int = fx.WEIGHT_BITS
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    reset: str = "subtract"
    du: int = fx.DU_INSTANT
    float_threshold: float = 0.0
    weight_scale: float = 1.0
    pool: tuple[int, int] = (1, 1)
    ann_macs: int | None = None
    shortcuts: list[Shortcut] = field(default_factory=list)
    bias: np.ndarray | None = None
    bias_exp: int = 0
    v_init: int = 0

    def __post_init__(self):
        where = f"core {self.name}"
        for name in ("input_shape", "output_shape", "stride", "padding", "pool"):
            setattr(self, name, _shape(getattr(self, name), where, name))
        for name in ("vth", "dv", "du", "weight_exp", "weight_bits", "bias_exp", "v_init") + (
                ("ann_macs",) if self.ann_macs is not None else ()):
            setattr(self, name, _int(where, name, getattr(self, name)))
        if not isinstance(self.spiking, (bool, np.bool_)):
            raise GraphError(f"{where}: spiking must be true or false, got {self.spiking!r}")
        for name in ("float_threshold", "weight_scale"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise GraphError(f"{where}: {name} must be a number, got {value!r}")
        self.spiking = bool(self.spiking)
        self.weights = _integer_weights(f"core {self.name}", self.weights)
        if not (math.isfinite(self.float_threshold) and math.isfinite(self.weight_scale)):
            raise GraphError(f"{where}: float_threshold and weight_scale must be finite")
        if self.float_threshold < 0 or self.weight_scale <= 0:
            raise GraphError(f"{where}: float_threshold must be >= 0 and weight_scale > 0")
        if self.reset != "subtract":
            raise GraphError(f"{where}: unsupported reset {self.reset!r} (only 'subtract')")
        if self.du != fx.DU_INSTANT:
            raise GraphError(f"{where}: du must be {fx.DU_INSTANT}, got {self.du}")
        if not 0 <= self.dv < fx.DECAY_UNITY:
            raise GraphError(f"{where}: dv={self.dv} does not fit {fx.DECAY_BITS} bits")
        if not 0 <= self.vth <= fx.VTH_MAX:
            raise GraphError(f"{where}: vth={self.vth} does not fit {fx.VTH_BITS} unsigned bits")
        if self.spiking and self.vth < 1:
            raise GraphError(f"{where}: a spiking core needs vth >= 1 (vth=0 fires at every step)")
        if not 2 <= self.weight_bits <= 8:
            raise GraphError(f"{where}: weight_bits={self.weight_bits} outside 2..8")
        if self.op == "dense":
            if self.weights.shape != (math.prod(self.output_shape), math.prod(self.input_shape)):
                raise GraphError(f"{where}: dense weights {self.weights.shape} do not map "
                                 f"{self.input_shape} -> {self.output_shape}")
            _dense_grid(where, self.weights, self.weight_bits, self.weight_exp)
        elif self.op == "conv":
            _conv_maps(where, self.weights, self.input_shape, self.output_shape, self.stride, self.padding)
            lo, hi = fx.conv_weight_range(self.weight_bits)
            if self.weights.size and (self.weights.min() < lo or self.weights.max() > hi):
                raise GraphError(f"{where}: conv weights outside [{lo}, {hi}] ({self.weight_bits}-bit)")
            if self.weight_exp != 0:
                raise GraphError(f"{where}: Lava's Conv ignores weight_exp; it must be 0")
        else:
            raise GraphError(f"{where}: unsupported op {self.op!r} (conv or dense)")
        self._check_pool(where)
        self.shortcuts = list(self.shortcuts)
        for sc in self.shortcuts:
            if not isinstance(sc, Shortcut):
                raise GraphError(f"{where}: shortcuts must be Shortcut objects, got {type(sc).__name__}")
            sc.check_maps(f"{where}, shortcut from {sc.source}", self.output_shape)
        if self.ann_macs is not None and not 0 <= self.ann_macs <= self.synapses_per_step:
            raise GraphError(f"{where}: ann_macs={self.ann_macs} is not the MAC count of an ANN layer this core "
                             f"implements (0..{self.synapses_per_step:,}, the core's synapses per step)")
        self._check_bias(where)
        self._check_v_init(where)

    def _check_v_init(self, where: str) -> None:
        top = (self.vth << fx.VTH_SHIFT) if self.spiking else 0
        if not 0 <= self.v_init <= top:
            raise GraphError(f"{where}: v_init={self.v_init} outside 0..{top} (the threshold's voltage"
                             f"{'' if self.spiking else '; the output accumulator starts at 0'})")

    def _check_bias(self, where: str) -> None:
        if not 0 <= self.bias_exp <= fx.BIAS_EXP_MAX:
            raise GraphError(f"{where}: bias_exp={self.bias_exp} outside 0..{fx.BIAS_EXP_MAX}")
        if self.bias is None:
            return
        self.bias = _integer_weights(f"{where} (bias)", self.bias)
        if self.bias.shape != (self.output_shape[0],):
            raise GraphError(f"{where}: bias shape {self.bias.shape}, the core needs one per output "
                             f"{'channel' if self.op == 'conv' else 'neuron'}: ({self.output_shape[0]},)")
        lo, hi = fx.BIAS_RANGE
        if self.bias.size and (self.bias.min() < lo or self.bias.max() > hi):
            raise GraphError(f"{where}: bias mantissas outside [{lo}, {hi}] ({fx.BIAS_BITS}-bit signed)")

    def _check_pool(self, where: str) -> None:
        """A recorded folded pool must be what the weights say: constant over its blocks."""
        fy, fx_ = self.pool
        if len(self.pool) != 2 or fy < 1 or fx_ < 1:
            raise GraphError(f"{where}: pool {self.pool} must be two factors >= 1")
        if self.pool == (1, 1):
            return
        if self.op == "conv":
            w4, dims = self.weights, self.weights.shape[2:]
            if self.stride[0] % fy or self.stride[1] % fx_:
                raise GraphError(f"{where}: folded pool {self.pool} does not divide the stride {self.stride}")
        else:
            if len(self.input_shape) != 3:
                raise GraphError(f"{where}: a folded pool needs a (C, H, W) input, got {self.input_shape}")
            c, h, wd = self.input_shape
            w4, dims = self.weights.reshape(-1, c, h, wd), (h, wd)
        if dims[0] % fy or dims[1] % fx_:
            raise GraphError(f"{where}: folded pool {self.pool} does not tile {tuple(dims)}")
        o, c = w4.shape[:2]
        blocks = w4.reshape(o, c, dims[0] // fy, fy, dims[1] // fx_, fx_)
        if not np.array_equal(blocks, np.broadcast_to(blocks[:, :, :, :1, :, :1], blocks.shape)):
            raise GraphError(f"{where}: weights are not constant over the folded pool's {fy}x{fx_} blocks")

    @property
    def leak(self) -> float:
        return 1.0 - self.dv / fx.DECAY_UNITY

    @property
    def synapses_per_step(self) -> int:
        """Multiply-accumulates of a dense evaluation of the core's synapses and shortcuts per
        step: the most an ANN layer it implements can have (a folded pool only adds)."""
        out = math.prod(self.output_shape)
        own = self.weights.size if self.op == "dense" else out * math.prod(self.weights.shape[1:])
        return own + sum(out * (1 if sc.op == "identity" else math.prod(sc.weights.shape[1:]))
                         for sc in self.shortcuts)

    @property
    def fan_out_per_input(self) -> np.ndarray:
        """Synapses of the core's own synapse leaving each input neuron (a spike there is that
        many synaptic events); a shortcut's: ``Shortcut.fan_out_per_input``."""
        return _fan_out(self.op, self.weights, self.input_shape, self.output_shape, self.stride, self.padding)

    def header(self) -> dict:
        return {"name": self.name, "op": self.op, "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape), "vth": self.vth, "dv": self.dv, "du": self.du,
                "spiking": self.spiking, "weight_exp": self.weight_exp, "weight_bits": self.weight_bits,
                "stride": list(self.stride), "padding": list(self.padding), "reset": self.reset,
                "float_threshold": float(self.float_threshold), "weight_scale": float(self.weight_scale),
                "pool": list(self.pool), "ann_macs": self.ann_macs,
                "shortcuts": [sc.header() for sc in self.shortcuts], "bias_exp": self.bias_exp,
                "v_init": self.v_init}


@dataclass
class CoreGraph:
    """A chain input -> cores[0] -> ... -> cores[-1] (the non-spiking output accumulator),
    the backbone, plus each core's shortcuts from earlier spiking populations (or the input).

    ``timesteps`` is the T the network was trained/quantized for; ``edges`` name the
    connections ("input" then core names): the chain, then each shortcut as (source, core)
    in core order (``dag_edges``). ``stage`` is the
    trainer stage it came from (None for a graph made by hand), ``data`` the data set
    to test it on (None: bring your own inputs).
    """
    input: InputEncoding
    cores: list[Core]
    timesteps: int
    class_names: list[str]
    edges: list[tuple[str, str]] = field(default_factory=list)
    stage: str | None = None
    data: DataRef | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.cores:
            raise GraphError("graph has no cores")
        if not self.edges:
            self.edges = self.dag_edges()
        self.edges = [(str(a), str(b)) for a, b in self.edges]
        self.validate()

    def validate(self) -> None:
        check_timesteps(self.timesteps, "timesteps", GraphError)
        if self.stage is not None and self.stage not in SNN_STAGES:
            raise GraphError(f"stage {self.stage!r} is not one of {', '.join(SNN_STAGES)}")
        names = [c.name for c in self.cores]
        if len(set(names)) != len(names) or "input" in names:
            raise GraphError(f"core names must be unique and not 'input': {names}")
        if self.edges != self.dag_edges():
            raise GraphError(f"edges {self.edges} are not the chain and shortcuts {self.dag_edges()}")
        prev = self.input.shape
        shapes = {"input": self.input.shape}
        for core in self.cores:
            if math.prod(core.input_shape) != math.prod(prev) or (core.op == "conv" and core.input_shape != prev):
                raise GraphError(f"core {core.name}: input shape {core.input_shape} does not chain "
                                 f"with the previous output {prev}")
            for sc in core.shortcuts:
                if sc.source not in shapes:
                    raise GraphError(f"core {core.name}: shortcut source {sc.source!r} is not the input or a "
                                     "spiking core before it")
                if sc.input_shape != shapes[sc.source]:
                    raise GraphError(f"core {core.name}: shortcut input shape {sc.input_shape} is not "
                                     f"{sc.source}'s output {shapes[sc.source]}")
            prev = shapes[core.name] = core.output_shape
        if any(not c.spiking for c in self.cores[:-1]) or self.cores[-1].spiking:
            raise GraphError("only the last core may be (and must be) the non-spiking output")
        if len(self.class_names) != math.prod(self.cores[-1].output_shape):
            raise GraphError(f"{len(self.class_names)} class names for "
                             f"{math.prod(self.cores[-1].output_shape)} outputs")

    def dag_edges(self) -> list[tuple[str, str]]:
        """The chain's edges, then every shortcut's (source, core), in core order."""
        names = ["input"] + [c.name for c in self.cores]
        return list(zip(names[:-1], names[1:])) + [(sc.source, c.name) for c in self.cores for sc in c.shortcuts]

    def depth(self, name: str) -> int:
        """Synapses on the chain from the input to population ``name`` (input 0, cores[k] k + 1)."""
        return 0 if name == "input" else 1 + [c.name for c in self.cores].index(name)

    @property
    def spiking_cores(self) -> list[Core]:
        return [c for c in self.cores if c.spiking]

    @property
    def ann_macs(self) -> list[int] | None:
        """MACs per inference step of the ANN each core came from, or None if any is unknown."""
        macs = [c.ann_macs for c in self.cores]
        return None if any(m is None for m in macs) else macs


def save_graph(graph: CoreGraph, path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the same folder, then rename."""
    graph.validate()
    path = Path(path)
    head = {**header(FORMAT, VERSION), "timesteps": int(graph.timesteps), "stage": graph.stage,
            "data": graph.data.to_dict() if graph.data is not None else None,
            "class_names": list(graph.class_names), "input": graph.input.to_json(),
            "edges": [list(e) for e in graph.edges], "provenance": graph.provenance,
            "cores": [c.header() for c in graph.cores]}
    arrays = {"__graph__": np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)}
    arrays.update({f"weights_{i}": c.weights for i, c in enumerate(graph.cores)})
    arrays.update({f"weights_{i}_shortcut_{j}": sc.weights for i, c in enumerate(graph.cores)
                   for j, sc in enumerate(c.shortcuts)})
    arrays.update({f"bias_{i}": c.bias for i, c in enumerate(graph.cores) if c.bias is not None})
    with atomic_file(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def load_graph(path: str | os.PathLike) -> CoreGraph:
    """Read and validate; every problem is a GraphError naming the file."""
    def parse(data) -> CoreGraph:
        head = npz_header(data, "__graph__", FORMAT, VERSION, OLDEST_READABLE, GraphError, "a core graph",
                          "re-export it")
        cores = []
        for i, h in enumerate(head["cores"]):
            shortcuts = [Shortcut(weights=data[f"weights_{i}_shortcut_{j}"], **sh)
                         for j, sh in enumerate(h.pop("shortcuts", []))]
            bias = data[f"bias_{i}"] if f"bias_{i}" in data.files else None
            cores.append(Core(weights=data[f"weights_{i}"], shortcuts=shortcuts, bias=bias, **h))
        return CoreGraph(input=InputEncoding.from_json(head["input"]), cores=cores,
                         timesteps=head["timesteps"], class_names=head["class_names"],
                         edges=[tuple(e) for e in head["edges"]], stage=head["stage"],
                         data=DataRef.from_dict(head["data"]) if head["data"] is not None else None,
                         provenance=head.get("provenance", {}))
    return read_npz_record(path, "core graph file", GraphError, parse)
