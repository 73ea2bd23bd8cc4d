"""The core graph: the one format between export and hwsim (and anything after them).

A ``CoreGraph`` is a chain of ``Core`` nodes fed by an ``InputEncoding``
(``records.encoding``). Each node is a small dataclass of numpy arrays and integers,
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

FORMAT = "hybrid-snn-coregraph"
VERSION = 2              # 2: stage, data reference, per-core folded pool and ANN MACs
OLDEST_READABLE = 2


class GraphError(RecordError):
    """A core graph that is malformed, of another format or version, or not representable."""


def _shape(v) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


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

    def __post_init__(self):
        self.input_shape, self.output_shape = _shape(self.input_shape), _shape(self.output_shape)
        self.stride, self.padding, self.pool = _shape(self.stride), _shape(self.padding), _shape(self.pool)
        if self.ann_macs is not None:
            self.ann_macs = int(self.ann_macs)
        self.vth, self.dv, self.du = int(self.vth), int(self.dv), int(self.du)
        self.weight_exp, self.weight_bits = int(self.weight_exp), int(self.weight_bits)
        self.spiking = bool(self.spiking)
        w = np.asarray(self.weights)
        if not np.issubdtype(w.dtype, np.integer):
            raise GraphError(f"core {self.name}: weights must be integers, got {w.dtype}")
        self.weights = w.astype(np.int32)
        where = f"core {self.name}"
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
            lo, hi = fx.DENSE_WEIGHT_RANGE
            step = fx.dense_weight_step(self.weight_bits)
            if self.weights.size and (self.weights.min() < lo or self.weights.max() > hi
                                      or np.any(self.weights % step)):
                raise GraphError(f"{where}: dense weights must be multiples of {step} in [{lo}, {hi}] "
                                 f"({self.weight_bits}-bit mixed-sign Lava weights)")
            if abs(self.weight_exp) > 7:
                raise GraphError(f"{where}: weight_exp={self.weight_exp} outside -7..7")
        elif self.op == "conv":
            if self.weights.ndim != 4 or len(self.input_shape) != 3 or len(self.output_shape) != 3:
                raise GraphError(f"{where}: conv needs 4-d weights and (C, H, W) shapes")
            o, c, kh, kw = self.weights.shape
            ho = (self.input_shape[1] + 2 * self.padding[0] - kh) // self.stride[0] + 1
            wo = (self.input_shape[2] + 2 * self.padding[1] - kw) // self.stride[1] + 1
            if c != self.input_shape[0] or (o, ho, wo) != self.output_shape:
                raise GraphError(f"{where}: conv weights {self.weights.shape} with stride {self.stride}, "
                                 f"padding {self.padding} do not map {self.input_shape} -> {self.output_shape}")
            lo, hi = fx.conv_weight_range(self.weight_bits)
            if self.weights.size and (self.weights.min() < lo or self.weights.max() > hi):
                raise GraphError(f"{where}: conv weights outside [{lo}, {hi}] ({self.weight_bits}-bit)")
            if self.weight_exp != 0:
                raise GraphError(f"{where}: Lava's Conv ignores weight_exp; it must be 0")
        else:
            raise GraphError(f"{where}: unsupported op {self.op!r} (conv or dense)")
        self._check_pool(where)
        if self.ann_macs is not None and self.ann_macs < 0:
            raise GraphError(f"{where}: ann_macs={self.ann_macs} is negative")

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
    def fan_out_per_input(self) -> np.ndarray:
        """Synapses leaving each input neuron (a spike there is that many synaptic events)."""
        if self.op == "dense":
            return np.full(self.input_shape, self.weights.shape[0], dtype=np.int64)
        o, _, kh, kw = self.weights.shape
        (h, w), (ho, wo) = self.input_shape[1:], self.output_shape[1:]
        (sy, sx), (py, px) = self.stride, self.padding
        cover = np.zeros((h + 2 * py, w + 2 * px), dtype=np.int64)
        for i in range(kh):
            for j in range(kw):
                cover[i:i + sy * ho:sy, j:j + sx * wo:sx] += 1
        return np.broadcast_to(cover[py:py + h, px:px + w] * o, self.input_shape).copy()

    def header(self) -> dict:
        return {"name": self.name, "op": self.op, "input_shape": list(self.input_shape),
                "output_shape": list(self.output_shape), "vth": self.vth, "dv": self.dv, "du": self.du,
                "spiking": self.spiking, "weight_exp": self.weight_exp, "weight_bits": self.weight_bits,
                "stride": list(self.stride), "padding": list(self.padding), "reset": self.reset,
                "float_threshold": float(self.float_threshold), "weight_scale": float(self.weight_scale),
                "pool": list(self.pool), "ann_macs": self.ann_macs}


@dataclass
class CoreGraph:
    """A chain input -> cores[0] -> ... -> cores[-1] (the non-spiking output accumulator).

    ``timesteps`` is the T the network was trained/quantized for; ``edges`` name the
    connections ("input" then core names) and must form that chain. ``stage`` is the
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
            names = ["input"] + [c.name for c in self.cores]
            self.edges = list(zip(names[:-1], names[1:]))
        self.edges = [(str(a), str(b)) for a, b in self.edges]
        self.validate()

    def validate(self) -> None:
        if isinstance(self.timesteps, bool) or not isinstance(self.timesteps, (int, np.integer)) \
                or self.timesteps < 1:
            raise GraphError(f"timesteps must be an integer >= 1, got {self.timesteps!r}")
        if self.stage is not None and self.stage not in SNN_STAGES:
            raise GraphError(f"stage {self.stage!r} is not one of {', '.join(SNN_STAGES)}")
        names = [c.name for c in self.cores]
        if len(set(names)) != len(names) or "input" in names:
            raise GraphError(f"core names must be unique and not 'input': {names}")
        chain = list(zip(["input"] + names[:-1], names))
        if self.edges != chain:
            raise GraphError(f"edges {self.edges} are not the chain {chain} (only feed-forward chains "
                             "are supported)")
        prev = self.input.shape
        for core in self.cores:
            if math.prod(core.input_shape) != math.prod(prev) or (core.op == "conv" and core.input_shape != prev):
                raise GraphError(f"core {core.name}: input shape {core.input_shape} does not chain "
                                 f"with the previous output {prev}")
            prev = core.output_shape
        if any(not c.spiking for c in self.cores[:-1]) or self.cores[-1].spiking:
            raise GraphError("only the last core may be (and must be) the non-spiking output")
        if len(self.class_names) != math.prod(self.cores[-1].output_shape):
            raise GraphError(f"{len(self.class_names)} class names for "
                             f"{math.prod(self.cores[-1].output_shape)} outputs")

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
    with atomic_file(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def load_graph(path: str | os.PathLike) -> CoreGraph:
    """Read and validate; every problem is a GraphError naming the file."""
    def parse(data) -> CoreGraph:
        head = npz_header(data, "__graph__", FORMAT, VERSION, OLDEST_READABLE, GraphError, "a core graph",
                          "re-export it")
        cores = [Core(weights=data[f"weights_{i}"], **h) for i, h in enumerate(head["cores"])]
        return CoreGraph(input=InputEncoding.from_json(head["input"]), cores=cores,
                         timesteps=head["timesteps"], class_names=head["class_names"],
                         edges=[tuple(e) for e in head["edges"]], stage=head["stage"],
                         data=DataRef.from_dict(head["data"]) if head["data"] is not None else None,
                         provenance=head.get("provenance", {}))
    return read_npz_record(path, "core graph file", GraphError, parse)
