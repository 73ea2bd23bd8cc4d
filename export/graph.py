"""The core graph: the one format between export and hwsim (and anything after them).

A ``CoreGraph`` is a chain of ``Core`` nodes fed by an ``InputEncoding``. Each node
is a small dataclass of numpy arrays and integers, validated in ``__post_init__``
(after NIR's IR). The file is a single ``.npz`` (no pickle): the JSON header under
``__graph__`` and one integer array per core; ``save_graph`` / ``load_graph`` are
the one writer and the one reader. Fixed-point semantics: ``export.fixedpoint``.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export import fixedpoint as fx
from trainer.files import atomic_file

FORMAT = "hybrid-snn-coregraph"
VERSION = 1


class GraphError(ValueError):
    """A core graph that is malformed, of another format or version, or not representable."""


def _shape(v) -> tuple[int, ...]:
    return tuple(int(x) for x in v)


@dataclass
class InputEncoding:
    """Signed Poisson rate coding of a normalised image.

    ``x = clip((pixel / 255 - mean[c]) / std[c], -clip, clip)``; at every step a pixel
    emits ``sign(x)`` when a fresh uniform number in [0, 1) is below ``|x|``.
    The uniform numbers of sample ``i`` come from ``numpy.random.default_rng([seed, i])``
    as float32 of shape (T, C, H, W), so a sample's train does not depend on batching.
    """
    shape: tuple[int, int, int]
    mean: np.ndarray
    std: np.ndarray
    clip: float = 1.0

    def __post_init__(self):
        self.shape = _shape(self.shape)
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise GraphError(f"input shape must be (C, H, W), got {self.shape}")
        if self.mean.size != self.shape[0] or self.std.size != self.shape[0]:
            raise GraphError(f"input normalisation has {self.mean.size} means / {self.std.size} stds "
                             f"for {self.shape[0]} channels")
        if not np.all(self.std > 0) or not self.clip > 0:
            raise GraphError("input normalisation needs std > 0 and clip > 0")

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> float32 intensities in [-clip, clip]."""
        x = images.astype(np.float32) / np.float32(255.0)
        x = (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        return np.clip(x, -self.clip, self.clip).astype(np.float32)

    def encode(self, images: np.ndarray, timesteps: int, seed: int, first_index: int = 0) -> np.ndarray:
        """Spike trains (T, N, C, H, W) int8 in {-1, 0, 1} of images (N, C, H, W) uint8."""
        if images.shape[1:] != self.shape:
            raise GraphError(f"images of shape {images.shape[1:]} do not fit the input {self.shape}")
        x = self.normalise(images)
        out = np.empty((timesteps, len(images), *self.shape), dtype=np.int8)
        for j, xi in enumerate(x):
            u = np.random.default_rng([seed, first_index + j]).random((timesteps, *self.shape), dtype=np.float32)
            out[:, j] = (u < np.abs(xi)) * np.sign(xi).astype(np.int8)
        return out

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "mean": self.mean.tolist(), "std": self.std.tolist(), "clip": self.clip}


@dataclass
class Core:
    """One neuromorphic core: a synaptic operation feeding a layer of fixed-point neurons.

    op "dense": ``weights`` (N_out, N_in) over the C-order flattened input;
    op "conv": ``weights`` (C_out, C_in, kh, kw), a cross-correlation in torch's layout
    with ``stride`` and zero ``padding`` (the Lava builder flips and transposes).
    Neurons follow ``export.fixedpoint``: threshold mantissa ``vth`` (17 bit), voltage
    decay ``dv`` (12 bit, leak = 1 - dv/4096), du = 4095, soft reset. ``spiking=False``
    marks the output accumulator. ``float_threshold`` and ``weight_scale`` (integer =
    float x scale) record where the integers came from.
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

    def __post_init__(self):
        self.input_shape, self.output_shape = _shape(self.input_shape), _shape(self.output_shape)
        self.stride, self.padding = _shape(self.stride), _shape(self.padding)
        self.vth, self.dv, self.du = int(self.vth), int(self.dv), int(self.du)
        self.weight_exp, self.weight_bits = int(self.weight_exp), int(self.weight_bits)
        self.spiking = bool(self.spiking)
        w = np.asarray(self.weights)
        if not np.issubdtype(w.dtype, np.integer):
            raise GraphError(f"core {self.name}: weights must be integers, got {w.dtype}")
        self.weights = w.astype(np.int32)
        where = f"core {self.name}"
        if self.reset != "subtract":
            raise GraphError(f"{where}: unsupported reset {self.reset!r} (only 'subtract')")
        if self.du != fx.DU_INSTANT:
            raise GraphError(f"{where}: du must be {fx.DU_INSTANT}, got {self.du}")
        if not 0 <= self.dv < fx.DECAY_UNITY:
            raise GraphError(f"{where}: dv={self.dv} does not fit {fx.DECAY_BITS} bits")
        if not 0 <= self.vth <= fx.VTH_MAX:
            raise GraphError(f"{where}: vth={self.vth} does not fit {fx.VTH_BITS} unsigned bits")
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
                "float_threshold": float(self.float_threshold), "weight_scale": float(self.weight_scale)}


@dataclass
class CoreGraph:
    """A chain input -> cores[0] -> ... -> cores[-1] (the non-spiking output accumulator).

    ``timesteps`` is the T the network was trained/quantized for; ``edges`` name the
    connections ("input" then core names) and must form that chain.
    """
    input: InputEncoding
    cores: list[Core]
    timesteps: int
    class_names: list[str]
    edges: list[tuple[str, str]] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    version: int = VERSION

    def __post_init__(self):
        if not self.cores:
            raise GraphError("graph has no cores")
        if not self.edges:
            names = ["input"] + [c.name for c in self.cores]
            self.edges = list(zip(names[:-1], names[1:]))
        self.edges = [(str(a), str(b)) for a, b in self.edges]
        self.validate()

    def validate(self) -> None:
        if int(self.timesteps) < 1:
            raise GraphError(f"timesteps must be >= 1, got {self.timesteps}")
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


def save_graph(graph: CoreGraph, path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the same folder, then rename."""
    graph.validate()
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, "timesteps": int(graph.timesteps),
              "class_names": list(graph.class_names), "input": graph.input.to_json(),
              "edges": [list(e) for e in graph.edges], "provenance": graph.provenance,
              "cores": [c.header() for c in graph.cores]}
    arrays = {"__graph__": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    arrays.update({f"weights_{i}": c.weights for i, c in enumerate(graph.cores)})
    with atomic_file(path) as f:
        np.savez_compressed(f, **arrays)
    return path


def load_graph(path: str | os.PathLike) -> CoreGraph:
    """Read and validate; every problem is a GraphError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"{path}: no such core graph file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "__graph__" not in data.files:
                raise GraphError("not a core graph (no __graph__ header)")
            header = json.loads(bytes(data["__graph__"]).decode())
            if header.get("format") != FORMAT:
                raise GraphError(f"format {header.get('format')!r} is not {FORMAT!r}")
            version = header.get("version")
            if not isinstance(version, int) or version > VERSION:
                raise GraphError(f"version {version!r} is newer than this reader ({VERSION}); upgrade")
            if version < VERSION:
                raise GraphError(f"old version {version}; re-export it")
            cores = []
            for i, h in enumerate(header["cores"]):
                cores.append(Core(weights=data[f"weights_{i}"], **h))
            return CoreGraph(input=InputEncoding(**header["input"]), cores=cores,
                             timesteps=header["timesteps"], class_names=header["class_names"],
                             edges=[tuple(e) for e in header["edges"]], provenance=header.get("provenance", {}),
                             version=version)
    except GraphError as exc:
        raise GraphError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise GraphError(f"{path}: corrupt or foreign core graph ({type(exc).__name__}: {exc})") from None
