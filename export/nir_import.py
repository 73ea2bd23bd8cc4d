"""A NIR graph written by another framework -> float layers the quantizer maps onto cores.

``read_nir(path)`` follows the chain from ``Input`` to ``Output`` and turns it into
``NIRLayer``s, one per core: a synapse (``Conv2d``, ``Linear``, ``Affine``; a bias, one per output
channel or neuron, becomes the neuron's bias (``export.quantize``, step 4);
``AvgPool2d``/``SumPool2d`` with kernel = stride and no padding folded into the next synapse,
``export.quantize.fold_pool``; ``Flatten`` over all dims) and the neuron after it. Neurons are
discretised by forward Euler at the graph's time step ``dt`` (its metadata's ``dt``, else the
caller's; 1e-4 s, the step snnTorch and SpikingJelly assume), which gives the core's
per-step rule ``v <- lambda * v + g * (W x + b)``:

- ``IF``: ``lambda = 1``, ``g = dt * r``;
- ``LIF``: ``lambda = 1 - dt/tau``, ``g = dt * r / tau`` (``v_leak = 0``);
- ``CubaLIF`` with ``tau_syn = dt`` (a current that lasts one step, as the core's, du = 4095):
  ``lambda = 1 - dt/tau_mem``, ``g = w_in * dt * r / tau_mem``; a longer synaptic current is an error;
- ``LI`` / ``I`` (or a chain that ends at a synapse): the non-spiking output whose voltage
  after T steps is the class score (``I``: ``g = dt * r``; a bare synapse: ``readout_leak`` from
  the metadata of ``export.nir_export``'s files, else 1). A chain that ends in spiking neurons
  is read out by counting their spikes: an identity output core is added.

``g`` folds into the weights and ``v_threshold`` is the float threshold; the quantizer then
applies the checkpoint's rules (``export.quantize.quantize_layers``). Parameters must be the
same for every neuron of a node. Reset: nir 1.0's IF/LIF reset to ``v_reset``; the core
subtracts the threshold. A node is accepted when its metadata say ``reset = "subtract"``
(``export.nir_export`` writes it) or the caller states ``subtract_reset=True`` (snnTorch's
default ``Leaky``, SpikingJelly's ``v_reset=None``); otherwise it is an error naming the node.
Everything else the core cannot represent (branches, recurrence, dilation, groups,
other node types) is an ``NIRImportError`` naming the node.

Initial voltages: NIR's neurons have none; a neuron node whose metadata hold "v_init" (in
``v_threshold``'s units, as ``export.nir_export`` writes it) starts there, any other at 0.

``NIRNetwork.run_float`` is the float reference of the imported network (the same rule with
real numbers) that calibration and the float-vs-fixed comparison use; given the source
framework's neuron rule (``export.neuron_semantics``) it runs that instead, so the exporter
reports agreement against what the network was trained as.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace

import nir
import numpy as np
import torch

from export import fixedpoint as fx
from export.graph import CoreGraph
from export.neuron_semantics import SEMANTICS, NeuronSemantics
from export.nir_export import DT, readout_leak, says_subtract_reset
from export.quantize import FloatLayer, fold_pool, quantize_layers
from records.dataref import DataRef
from records.encoding import RULES, InputEncoding
from records.header import RecordError

SYNAPSES = (nir.Conv2d, nir.Linear, nir.Affine)
NEURONS = (nir.IF, nir.LIF, nir.CubaLIF)
READOUTS = (nir.LI, nir.I)


class NIRImportError(RecordError):
    """A NIR graph the core cannot represent (the message names the node)."""


@dataclass
class NIRLayer:
    """One core's worth of the graph in float: the synapse with its neuron's gain folded in."""
    layer: FloatLayer
    threshold: float | None          # None: the non-spiking output
    leak: float                      # lambda per step
    nodes: list[str] = field(default_factory=list)
    v_init: float = 0.0              # the voltage before the first step, a fraction of the threshold


@dataclass
class NIRNetwork:
    """The imported chain: the input shape (C, H, W) or (N,), its layers and where it came from."""
    input_shape: tuple[int, ...]
    layers: list[NIRLayer]
    dt: float
    source: str
    metadata: dict = field(default_factory=dict)

    def check_input(self, shape) -> None:
        """The data set's image shape fits the graph's input, else an error naming both."""
        if math.prod(shape) != math.prod(self.input_shape) or \
                (len(self.input_shape) == 3 and tuple(shape) != self.input_shape):
            raise NIRImportError(f"{self.source}: the graph reads {self.input_shape} inputs, the data set gives "
                                 f"{tuple(shape)}")

    @property
    def input_rule(self) -> str:
        """The input encoding's rule ``export.nir_export`` recorded (``records.encoding``);
        "poisson" for a graph from elsewhere."""
        raw = self.metadata.get("input_encoding")
        try:
            rule = json.loads(str(np.asarray(raw).reshape(-1)[0]) if isinstance(raw, np.ndarray) else raw)["rule"]
        except (TypeError, ValueError, KeyError, IndexError, RecursionError):
            return "poisson"
        if rule not in RULES:
            raise NIRImportError(f"{self.source}: metadata input_encoding names the rule {rule!r} (one of "
                                 f"{', '.join(RULES)})")
        return rule

    @property
    def thresholds(self) -> list[float]:
        return [lay.threshold for lay in self.layers[:-1]]

    @torch.no_grad()
    def run_float(self, spikes: np.ndarray, semantics: NeuronSemantics = SEMANTICS["core"]
                  ) -> tuple[np.ndarray, float, list[float]]:
        """(scores (B, classes), the largest |output voltage| over the steps, spikes per neuron of
        each spiking layer) for input spikes (T, B, ...): v <- lambda v + u + b - theta * s_prev,
        or the rule of another framework's ``semantics``."""
        x = torch.as_tensor(np.asarray(spikes), dtype=torch.float64)
        weights = [torch.as_tensor(item.layer.weights) for item in self.layers]
        biases = [None if item.layer.bias is None else      # per channel (conv) or neuron (dense)
                  torch.tensor(fx.per_neuron(item.layer.bias, item.layer.output_shape))
                  for item in self.layers]
        steps, n = x.shape[:2]
        v = [None] * len(self.layers)
        prev = [None] * len(self.layers)
        counts = [0.0] * (len(self.layers) - 1)
        peak = 0.0
        for t in range(steps):
            s = x[t]
            for k, item in enumerate(self.layers):
                lay, w = item.layer, weights[k]
                if lay.op == "conv":
                    u = torch.nn.functional.conv2d(s.reshape(n, *lay.input_shape), w, stride=lay.stride,
                                                   padding=lay.padding)
                else:
                    u = s.reshape(n, -1) @ w.T
                if biases[k] is not None:
                    u = u + biases[k]
                if v[k] is None:
                    v[k] = torch.full_like(u, item.v_init * (item.threshold or 0.0))
                if semantics.reset_decays and prev[k] is not None:
                    v[k] = v[k] - item.threshold * prev[k]
                v[k] = item.leak * v[k] + u
                if item.threshold is None:
                    peak = max(peak, float(v[k].abs().max()))
                    continue
                if not semantics.reset_decays and prev[k] is not None:
                    v[k] = v[k] - item.threshold * prev[k]
                fired = v[k] >= item.threshold if semantics.fires_at_threshold else v[k] > item.threshold
                prev[k] = fired.to(torch.float64)
                counts[k] += float(prev[k].sum())
                s = prev[k]
        neurons = [math.prod(lay.layer.output_shape) for lay in self.layers[:-1]]
        return v[-1].reshape(n, -1).numpy(), peak, [c / (m * n) for c, m in zip(counts, neurons)]


def uniform(node_name: str, what: str, values) -> float:
    """The one value a per-neuron parameter array holds (a core has one per layer)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise NIRImportError(f"node {node_name}: {what} must be finite numbers")
    if not np.all(a == a.flat[0]):
        raise NIRImportError(f"node {node_name}: {what} differs between neurons; a core has one value per layer")
    return float(a.flat[0])


def positive(node_name: str, what: str, value: float) -> float:
    if not value > 0:
        raise NIRImportError(f"node {node_name}: {what} = {value:g} must be > 0 (a time constant)")
    return value


def _pair(node_name: str, what: str, value) -> tuple[int, int]:
    a = np.atleast_1d(np.asarray(value))
    if a.dtype.kind not in "iuf" or a.size not in (1, 2) or np.any(a != np.round(a)):
        raise NIRImportError(f"node {node_name}: {what} {value!r} is not one or two integers")
    a = np.broadcast_to(a.astype(np.int64), (2,))
    return int(a[0]), int(a[1])


def _chain(graph: nir.NIRGraph, where: str) -> list[str]:
    """Node names from the Input to the Output; anything but a chain is an error."""
    inputs = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise NIRImportError(f"{where}: the graph has {len(inputs)} Input nodes; the core graph needs exactly one")
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    pred: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise NIRImportError(f"{where}: edge ({a}, {b}) names a node the graph does not have")
        succ[a].append(b)
        pred[b].append(a)
    order, name = [], inputs[0]
    while True:
        if name in order:
            raise NIRImportError(f"node {name}: the graph is recurrent; the core graph holds feed-forward chains")
        order.append(name)
        if isinstance(graph.nodes[name], nir.Output):
            break
        if len(succ[name]) != 1:
            raise NIRImportError(f"node {name}: {len(succ[name])} outgoing edges; the NIR importer reads "
                                 "chains only")
        name = succ[name][0]
        if len(pred[name]) != 1:
            raise NIRImportError(f"node {name}: {len(pred[name])} incoming edges; the NIR importer reads "
                                 "chains only")
    if len(order) != len(graph.nodes):
        extra = sorted(set(graph.nodes) - set(order))
        raise NIRImportError(f"node {extra[0]}: not on the chain from {inputs[0]} to the Output")
    return order


class _Reader:
    """Walks the chain, keeping the synapse that waits for its neuron and any pool before it."""

    def __init__(self, dt: float, subtract_reset: bool):
        self.dt, self.subtract_reset = dt, subtract_reset
        self.layers: list[NIRLayer] = []
        self.synapse: FloatLayer | None = None
        self.synapse_nodes: list[str] = []
        self.pool, self.pool_divisor, self.pool_nodes = 1, 1, []
        self.input_shape: tuple[int, ...] = ()
        self.shape: tuple[int, ...] = ()          # the tensor shape flowing along the chain
        self.unpooled: tuple[int, ...] = ()       # while pools wait for their synapse: the (C, H, W) before them

    def input(self, name: str, node: nir.Input) -> None:
        shape = tuple(int(v) for v in np.asarray(node.input_type["input"]).ravel())
        if len(shape) not in (1, 3) or min(shape, default=0) < 1:
            raise NIRImportError(f"node {name}: input shape {shape} is neither (C, H, W) nor (N,)")
        self.input_shape = self.shape = shape

    def _need_no_synapse(self, name: str) -> None:
        if self.synapse is not None:
            raise NIRImportError(f"node {name}: follows synapse {self.synapse_nodes[-1]} with no neuron between; "
                                 "every core is a synapse and its neurons")

    @staticmethod
    def _bias(name: str, node, channels: int) -> np.ndarray | None:
        """The synapse's bias, one per output channel (conv) or neuron (dense); None when zero."""
        bias = getattr(node, "bias", None)
        if bias is None:
            return None
        bias = np.asarray(bias, dtype=np.float64)
        if bias.size == 1:
            bias = np.full(channels, float(bias.reshape(-1)[0]))
        if bias.shape != (channels,):
            raise NIRImportError(f"node {name}: bias of shape {bias.shape}; the core has one per output "
                                 f"{'channel' if isinstance(node, nir.Conv2d) else 'neuron'} ({channels})")
        if not np.all(np.isfinite(bias)):
            raise NIRImportError(f"node {name}: bias is not all finite")
        return bias if np.any(bias != 0) else None

    def pool_node(self, name: str, node) -> None:
        self._need_no_synapse(name)
        k, s, p = (_pair(name, what, getattr(node, what)) for what in ("kernel_size", "stride", "padding"))
        if k[0] != k[1] or s != k or p != (0, 0):
            raise NIRImportError(f"node {name}: pool kernel {k}, stride {s}, padding {p}; the core folds square "
                                 "pools with stride = kernel and no padding")
        if len(self.shape) != 3:
            raise NIRImportError(f"node {name}: pools a {len(self.shape)}-d tensor; needs (C, H, W)")
        if self.pool == 1:
            self.unpooled = self.shape
        c, h, w = self.shape
        self.pool *= k[0]
        self.pool_divisor *= k[0] ** 2 if isinstance(node, nir.AvgPool2d) else 1
        self.shape = (c, h // k[0], w // k[0])
        self.pool_nodes.append(name)

    def flatten(self, name: str, node: nir.Flatten) -> None:
        if node.start_dim != 0 or node.end_dim not in (-1, len(self.shape) - 1):
            raise NIRImportError(f"node {name}: Flatten(start_dim={node.start_dim}, end_dim={node.end_dim}); "
                                 "the core reads a dense layer's input flattened as a whole")
        self.shape = (math.prod(self.shape),)

    def synapse_node(self, name: str, node) -> None:
        self._need_no_synapse(name)
        w = np.asarray(node.weight, dtype=np.float64)
        if not np.all(np.isfinite(w)):
            raise NIRImportError(f"node {name}: weights are not all finite")
        pooled = self.pool > 1
        in_shape = self.unpooled if pooled else self.shape
        if pooled and any(d % self.pool for d in in_shape[1:]):
            raise NIRImportError(f"node {name}: the pool before it ({', '.join(self.pool_nodes)}) does not tile "
                                 f"{in_shape}; folded into this synapse it would read the pixels it drops")
        if isinstance(node, nir.Conv2d):
            if np.any(np.asarray(node.dilation) != 1) or int(np.asarray(node.groups)) != 1:
                raise NIRImportError(f"node {name}: dilation or groups; the core's conv has neither")
            if len(self.shape) != 3 or w.ndim != 4 or w.shape[1] != self.shape[0]:
                raise NIRImportError(f"node {name}: conv weights {w.shape} do not read a {self.shape} input")
            stride, padding = _pair(name, "stride", node.stride), _pair(name, "padding", node.padding)
            c, h, wd = self.shape
            out = (w.shape[0], (h + 2 * padding[0] - w.shape[2]) // stride[0] + 1,
                   (wd + 2 * padding[1] - w.shape[3]) // stride[1] + 1)
            macs = math.prod(out) * math.prod(w.shape[1:])     # the same layer as an ANN, per step
            layer = fold_pool(FloatLayer(name, "conv", w, in_shape, out, stride, padding, ann_macs=macs,
                                         bias=self._bias(name, node, out[0])), self.pool, self.pool_divisor)
        else:
            if len(self.shape) != 1 or w.ndim != 2 or w.shape[1] != self.shape[0]:
                raise NIRImportError(f"node {name}: weights {w.shape} do not read a {self.shape} input "
                                     "(a Linear after a (C, H, W) tensor needs a Flatten before it)")
            out = (w.shape[0],)
            layer = fold_pool(FloatLayer(name, "dense", w, in_shape, out, ann_macs=w.size,
                                         bias=self._bias(name, node, out[0])), self.pool, self.pool_divisor)
        self.synapse, self.synapse_nodes = layer, self.pool_nodes + [name]
        self.pool, self.pool_divisor, self.pool_nodes = 1, 1, []
        self.shape = out

    def _reset_ok(self, name: str, node) -> None:
        if not (says_subtract_reset(node) or self.subtract_reset):
            raise NIRImportError(f"node {name}: NIR's {type(node).__name__} resets to v_reset; the core resets by "
                                 "subtraction. If the network was trained that way (snnTorch's Leaky, SpikingJelly's "
                                 "v_reset=None), say so: --subtract-reset")

    def neuron(self, name: str, node) -> None:
        if self.synapse is None:
            raise NIRImportError(f"node {name}: a neuron with no synapse before it")
        dt = self.dt
        if isinstance(node, nir.IF):
            leak, gain = 1.0, dt * uniform(name, "r", node.r)
        elif isinstance(node, (nir.LIF, nir.LI)):
            tau = positive(name, "tau", uniform(name, "tau", node.tau))
            if uniform(name, "v_leak", node.v_leak) != 0:
                raise NIRImportError(f"node {name}: v_leak != 0; the core's neurons leak toward 0")
            leak, gain = 1.0 - dt / tau, dt * uniform(name, "r", node.r) / tau
        elif isinstance(node, nir.CubaLIF):
            tau_syn = positive(name, "tau_syn", uniform(name, "tau_syn", node.tau_syn))
            tau_mem = positive(name, "tau_mem", uniform(name, "tau_mem", node.tau_mem))
            if not np.isclose(tau_syn, dt, rtol=1e-6):
                raise NIRImportError(f"node {name}: tau_syn = {tau_syn:g} keeps the synaptic current beyond one step "
                                     f"of dt = {dt:g}; the core's current is instantaneous (du = 4095)")
            if uniform(name, "v_leak", node.v_leak) != 0:
                raise NIRImportError(f"node {name}: v_leak != 0; the core's neurons leak toward 0")
            leak = 1.0 - dt / tau_mem
            gain = uniform(name, "w_in", node.w_in) * dt * uniform(name, "r", node.r) / tau_mem
        else:   # nir.I
            leak, gain = 1.0, dt * uniform(name, "r", node.r)
        if not (0.0 <= leak <= 1.0):
            raise NIRImportError(f"node {name}: a per-step decay of {leak:g} at dt = {dt:g} is outside [0, 1]")
        if gain <= 0:
            raise NIRImportError(f"node {name}: input gain {gain:g} must be > 0")
        threshold = None
        if isinstance(node, NEURONS):
            self._reset_ok(name, node)
            threshold = uniform(name, "v_threshold", node.v_threshold)
            if threshold <= 0:
                raise NIRImportError(f"node {name}: v_threshold {threshold:g} must be > 0")
            v_init = self._v_init(name, node, threshold)
        else:
            v_init = 0.0
        lay = self.synapse
        lay.weights = lay.weights * gain
        if lay.bias is not None:
            lay.bias = lay.bias * gain
        self.layers.append(NIRLayer(lay, threshold, leak, self.synapse_nodes + [name], v_init))
        self.synapse, self.synapse_nodes = None, []

    @staticmethod
    def _v_init(name: str, node, threshold: float) -> float:
        """The neuron's initial voltage as a fraction of its threshold: NIR's neurons carry
        none, so ``export.nir_export``'s metadata "v_init" (in v_threshold's units), else 0."""
        raw = (node.metadata or {}).get("v_init", 0.0)
        try:
            value = float(np.asarray(raw, dtype=np.float64).reshape(-1)[0]) if np.size(raw) == 1 else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and 0.0 <= value <= threshold):
            raise NIRImportError(f"node {name}: metadata v_init {raw!r} must be one number in 0..v_threshold "
                                 f"({threshold:g})")
        return value / threshold

    def output(self, name: str, readout_leak: float) -> None:
        if self.pool > 1:
            raise NIRImportError(f"node {self.pool_nodes[-1]}: a pool with no synapse after it")
        if self.synapse is not None:                           # a bare synapse: the integrator readout
            self.layers.append(NIRLayer(self.synapse, None, readout_leak, self.synapse_nodes))
            self.synapse = None
        elif not self.layers:
            raise NIRImportError(f"node {name}: the graph has no synapse")
        elif self.layers[-1].threshold is not None:           # spiking outputs: count their spikes
            last = self.layers[-1]
            n = math.prod(last.layer.output_shape)
            count = FloatLayer(f"{last.layer.name}_count", "dense", np.eye(n), (n,), (n,))
            self.layers.append(NIRLayer(count, None, 1.0, [name]))


def read_nir(source: str | os.PathLike | nir.NIRGraph, *, dt: float | None = None,
             subtract_reset: bool = False) -> NIRNetwork:
    """The chain of ``source`` (a file or a graph) as float layers; see the module docstring."""
    where = str(source) if not isinstance(source, nir.NIRGraph) else "NIR graph"
    if isinstance(source, nir.NIRGraph):
        graph = source
    else:
        try:
            graph = nir.read(str(source), type_check=False)
        except Exception as exc:       # nir's reader fails on a foreign file in many ways (an unknown node type...)
            raise NIRImportError(f"{where}: not a readable NIR file ({type(exc).__name__}: {exc})") from None
    meta = dict(graph.metadata or {})
    if dt is None:
        dt = float(np.asarray(meta.get("dt", DT)))
    if not (math.isfinite(dt) and dt > 0):
        raise NIRImportError(f"{where}: time step dt = {dt!r} must be a finite number > 0")
    reader = _Reader(dt, subtract_reset)
    for name in _chain(graph, where):
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            reader.input(name, node)
        elif isinstance(node, nir.Output):
            reader.output(name, readout_leak(graph))
        elif isinstance(node, SYNAPSES):
            reader.synapse_node(name, node)
        elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            reader.pool_node(name, node)
        elif isinstance(node, nir.Flatten):
            reader.flatten(name, node)
        elif isinstance(node, NEURONS + READOUTS):
            reader.neuron(name, node)
        else:
            raise NIRImportError(f"node {name}: {type(node).__name__} has no counterpart on the core (it maps "
                                 "Conv2d, Linear, Affine, AvgPool2d, SumPool2d, Flatten, IF, LIF, CubaLIF, LI, I)")
    for lay in reader.layers[:-1]:
        if lay.threshold is None:
            raise NIRImportError(f"node {lay.nodes[-1]}: a non-spiking neuron before the end; only the output "
                                 "layer may be non-spiking")
    return NIRNetwork(reader.input_shape, reader.layers, dt, where, meta)


def quantize_nir(net: NIRNetwork, encoding: InputEncoding, class_names: list[str], timesteps: int, *,
                 data: DataRef | None = None, weight_bits: int = fx.WEIGHT_BITS,
                 output_peak: float | None = None) -> tuple[CoreGraph, list[dict]]:
    """(core graph, quantization report) of ``net`` by the checkpoint's rules; ``encoding`` and
    ``class_names`` come from the data set the graph is deployed on."""
    net.check_input(encoding.shape)
    layers = [lay.layer for lay in net.layers]
    if layers[0].op == "dense" and len(layers[0].input_shape) == 1 and layers[0].pool == 1:
        layers[0] = replace(layers[0], input_shape=tuple(encoding.shape))   # a flat input: the image in C-order
    cores, report = quantize_layers(layers, net.thresholds,
                                    [fx.leak_to_dv(lay.leak) for lay in net.layers], weight_bits=weight_bits,
                                    output_peak=output_peak, source=net.source,
                                    v_init=[lay.v_init for lay in net.layers[:-1]])
    graph = CoreGraph(input=encoding, cores=cores, timesteps=timesteps, class_names=list(class_names), data=data,
                      provenance={"nir": net.source, "arch": f"NIR graph {os.path.basename(net.source)}",
                                  "dt": net.dt, "float_thresholds": net.thresholds,
                                  "leaks": [lay.leak for lay in net.layers],
                                  "nir_nodes": {c.name: lay.nodes for c, lay in zip(cores, net.layers)}})
    return graph, report
