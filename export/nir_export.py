"""The core graph as a NIR graph (Neuromorphic Intermediate Representation, nir 1.0.x).

``export_nir(graph, path)`` writes, with ``nir.write``, the chain
``Input -> [Flatten] -> Conv2d | Linear -> IF | LIF -> ... -> Linear -> Output``:
one synapse node and one neuron node per hidden core (a ``Flatten`` where a dense core reads
a multi-dimensional input; average pooling is already folded into the weights), and the
output core as its synapse alone. A shortcut (residual nets) is one more synapse node, a
``Conv2d`` (an identity: a diagonal 1x1 ``Conv2d``, or ``Linear`` on a flat population, as
released importers map no ``Scale``), from its source's neuron node (or the input)
into the core's neuron node: NIR sums a node's inputs, as Lava's neuron port does (NIR has
no delays, and needs none: its graphs are layer-synchronous like ``export.fixedpoint``).
Nodes and parameters are chosen so that released NIR importers run the file as written
(docs/interop.md has the figures):

- time step ``DT = 1e-4`` s, the step most NIR importers assume (SpikingJelly's default
  ``dt``, snnTorch's fixed one); recorded as ``dt``. Forward Euler at that step gives the
  discrete neuron of ``export.fixedpoint``.
- synapses carry the integer weights times ``2**weight_exp`` (as float32: exact), so a
  synapse's output is the core's synaptic current ``u = a * 2**weight_exp`` in units of the
  threshold mantissa (hardware voltage = 64 * v, the << 6 alignment); ``Conv2d``'s bias is
  the core's neuron bias ``(bias << bias_exp) / 64`` (zero without one; importers expect a
  bias), a dense core with a bias is an ``Affine``, without one a ``Linear``.
- dv = 0: ``IF`` with ``r = 1 / DT``, ``v_threshold = vth``: ``v += u`` per step.
- dv > 0: ``LIF`` with ``tau = DT * 4096 / dv``, ``r = tau / DT``, ``v_leak = 0``: Euler gives
  ``v <- (1 - dv/4096) * v + u``, the hardware's ``lambda = 1 - dv/4096``.
- readout: the output core never spikes; its voltage after T steps, the class score, is
  ``sum_t lambda**(T-1-t) * y_t`` over the outputs ``y_t`` of the graph (lambda from the
  output core's dv, recorded as ``readout_leak``; 1 = a plain sum). No released importer maps
  NIR's ``I``/``LI`` nodes (snnTorch 1.0.0, Norse 1.1.0, SpikingJelly 2.0.0), so the graph
  ends at the synapse and the sum is the reader's, as it is for a rate-coded readout.
- reset: the network resets by subtraction, outside the leak (Eq. 2: ``v -= vth`` at the
  step after a spike), which nir 1.0.x cannot state (its IF/LIF reset to ``v_reset``).
  ``v_reset`` is written as 0 and every neuron node's metadata, and the graph's, say
  ``reset = "subtract"``; ``export.nir_consumers`` applies it in the importers.
- what NIR's float semantics do not state (24-bit wrap and clip, decay rounding toward zero,
  the floor of negative ``weight_exp`` shifts) is the fixed point of ``export.fixedpoint``; the
  integers it needs are in the metadata of each node: core name/index, op, vth, vth_shifted,
  dv, du, leak, weight_exp, weight_bits, weight_scale (integer = float x scale),
  float_threshold, act_shift, vth_shift, shapes, stride/padding, reset, v_init (the voltage
  before the first step, in v_threshold's units: NIR's neurons have no initial state), and the synapse's
  integer weights are its weight over ``input_scale = 2**weight_exp``.
nir 1.0.8 (and NIR's main branch) sizes a Conv2d's output with ``weight.shape[2]`` for both
spatial dims, so a graph with a non-square kernel fails NIR's type check: such a graph is
written with a warning and ``metadata["nir_type_check"] = False`` and must be read with
``nir.read(path, type_check=False)`` (square kernels, the usual case, read normally).
The graph's metadata hold T, the input encoding, class names, provenance and format versions
(structured values as JSON strings, so they survive HDF5).
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import nir
import numpy as np

from export import fixedpoint as fx
from export.graph import FORMAT, VERSION as GRAPH_VERSION, CoreGraph, GraphError
from records.atomic import atomic_path

EXPORT_FORMAT = "hybrid-snn-nir"
EXPORT_VERSION = 4       # 4: neuron bias; 3: shortcut nodes; 2: dt = 1e-4 s, weights x 2**weight_exp, readout
DT = 1e-4


def _safe(name: str) -> str:
    """Node names usable as HDF5 group names and torch module names."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else f"core_{s}"


def _core_metadata(core, k: int, role: str) -> dict:
    return {
        "core": core.name, "index": k, "role": role, "op": core.op, "spiking": bool(core.spiking),
        "vth": int(core.vth), "vth_shifted": int(core.vth) << fx.VTH_SHIFT, "dv": int(core.dv),
        "du": int(core.du), "leak": float(core.leak), "weight_exp": int(core.weight_exp),
        "input_scale": float(2.0 ** core.weight_exp), "weight_bits": int(core.weight_bits),
        "weight_scale": float(core.weight_scale), "float_threshold": float(core.float_threshold),
        "act_shift": fx.ACT_SHIFT, "vth_shift": fx.VTH_SHIFT, "reset": core.reset, "dt": DT,
        "input_shape": np.asarray(core.input_shape, dtype=np.int64),
        "output_shape": np.asarray(core.output_shape, dtype=np.int64),
        "stride": np.asarray(core.stride, dtype=np.int64), "padding": np.asarray(core.padding, dtype=np.int64),
        "voltage_unit": "synaptic current a; hardware voltage = 64 * v (<< 6 alignment)",
        "v_init": float(core.v_init) / 2 ** fx.VTH_SHIFT,
    }


def _neuron(core, shape: tuple[int, ...], meta: dict) -> nir.NIRNode:
    """IF (dv = 0) or LIF (dv > 0) whose Euler step at DT is ``v <- lambda * v + u``."""
    full = lambda x: np.full(shape, x, dtype=np.float32)  # noqa: E731
    if core.dv:
        tau = DT * fx.DECAY_UNITY / core.dv
        return nir.LIF(tau=full(tau), r=full(tau / DT), v_leak=full(0.0), v_threshold=full(core.vth),
                       v_reset=full(0.0), metadata=meta)
    return nir.IF(r=full(1.0 / DT), v_threshold=full(core.vth), v_reset=full(0.0), metadata=meta)


def synapse_weights(core) -> np.ndarray:
    """A core's (or shortcut's) weights in units of its current: integer x 2**weight_exp, exact in float32."""
    return (core.weights * 2.0 ** core.weight_exp).astype(np.float32)


def synapse_bias(core) -> np.ndarray:
    """The core's bias in units of its current (voltage bias / 64: exact in float32), one per
    output channel (conv) or neuron (dense); zeros for a core without one."""
    if core.bias is None:
        return np.zeros(core.output_shape[0], dtype=np.float32)
    return ((core.bias.astype(np.int64) << core.bias_exp) / 2.0 ** fx.ACT_SHIFT).astype(np.float32)


def _shortcut_node(core, k: int, j: int) -> nir.NIRNode:
    """Core k's shortcut j: weights x 2**weight_exp (exact in float32), zero bias."""
    sc = core.shortcuts[j]
    meta = {"core": core.name, "index": k, "role": "shortcut", "shortcut": j, "source": sc.source, "op": sc.op,
            "weight_exp": int(sc.weight_exp), "input_scale": float(2.0 ** sc.weight_exp),
            "weight_bits": int(sc.weight_bits), "reset": core.reset, "dt": DT,
            "input_shape": np.asarray(sc.input_shape, dtype=np.int64),
            "stride": np.asarray(sc.stride, dtype=np.int64), "padding": np.asarray(sc.padding, dtype=np.int64)}
    w = synapse_weights(sc)
    if sc.op == "identity":                # a diagonal Linear / 1x1 Conv2d: importers map no Scale node
        eye = np.eye(sc.input_shape[0], dtype=np.float32) * w[0]
        if len(sc.input_shape) == 1:
            return nir.Linear(weight=eye, metadata=meta)
        w = eye[:, :, None, None]
    node = nir.Conv2d(input_shape=tuple(sc.input_shape[1:]), weight=w, stride=tuple(sc.stride),
                      padding=tuple(sc.padding), dilation=(1, 1), groups=1,
                      bias=np.zeros(w.shape[0], dtype=np.float32), metadata=meta)
    node.output_type = {"output": np.asarray(core.output_shape, dtype=np.int64)}
    return node


def build_nir(graph: CoreGraph) -> nir.NIRGraph:
    """The NIRGraph of ``graph`` (not written; see ``export_nir``)."""
    graph.validate()
    square = all(w.shape[2] == w.shape[3] for c in graph.cores
                 for w in [c.weights] * (c.op == "conv") + [sc.weights for sc in c.shortcuts if sc.op == "conv"])
    if not square:
        warnings.warn("nir's shape inference assumes square conv kernels (it sizes both spatial dims with "
                      "weight.shape[2]); this graph has a non-square one, so it is written without NIR's type "
                      "check and must be read with nir.read(path, type_check=False)", stacklevel=2)
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    enc = graph.input.to_json()
    nodes["input"] = nir.Input(input_type=np.asarray(graph.input.shape, dtype=np.int64),
                               metadata={"encoding": json.dumps(enc), "values": "signed spikes in {-1, 0, 1}"})
    prev, prev_shape = "input", tuple(graph.input.shape)
    spikes_of = {"input": "input"}                 # population -> the node that emits its spikes
    for k, core in enumerate(graph.cores):
        base = _safe(core.name)
        if base in nodes or f"{base}_neuron" in nodes:
            base = f"{base}_{k}"
        role = "neuron" if core.spiking else "readout"
        if core.op == "conv":
            if prev_shape != tuple(core.input_shape):
                raise GraphError(f"core {core.name}: NIR 1.0 has no reshape node to feed a conv with {prev_shape}")
            syn = nir.Conv2d(input_shape=tuple(core.input_shape[1:]), weight=synapse_weights(core),
                             stride=tuple(core.stride), padding=tuple(core.padding), dilation=(1, 1), groups=1,
                             bias=synapse_bias(core),
                             metadata=_core_metadata(core, k, "synapse" if core.spiking else role))
            syn.output_type = {"output": np.asarray(core.output_shape, dtype=np.int64)}   # see `square`
            shape = tuple(core.output_shape)
        else:
            if len(prev_shape) != 1:
                flat = f"{base}_flatten"
                nodes[flat] = nir.Flatten(input_type=np.asarray(prev_shape, dtype=np.int64), start_dim=0, end_dim=-1)
                edges.append((prev, flat))
                prev = flat
            meta = _core_metadata(core, k, "synapse" if core.spiking else role)
            syn = (nir.Linear(weight=synapse_weights(core), metadata=meta) if core.bias is None else
                   nir.Affine(weight=synapse_weights(core), bias=synapse_bias(core), metadata=meta))
            shape = (math.prod(core.output_shape),)
        nodes[base] = syn
        edges.append((prev, base))
        prev, prev_shape = base, shape
        if core.shortcuts and not core.spiking:
            raise GraphError(f"core {core.name}: NIR export has no node to sum a shortcut into the readout")
        if core.spiking:
            neuron = f"{base}_neuron"
            nodes[neuron] = _neuron(core, shape, _core_metadata(core, k, role))
            edges.append((base, neuron))
            for j, sc in enumerate(core.shortcuts):
                name = f"{base}_shortcut{j}"
                nodes[name] = _shortcut_node(core, k, j)
                edges += [(spikes_of[sc.source], name), (name, neuron)]
            prev = spikes_of[core.name] = neuron
    nodes["output"] = nir.Output(output_type=np.asarray(prev_shape, dtype=np.int64))
    edges.append((prev, "output"))
    readout = graph.cores[-1]
    meta = {
        "format": EXPORT_FORMAT, "export_version": EXPORT_VERSION, "nir_type_check": bool(square),
        "graph_format": FORMAT,
        "graph_version": GRAPH_VERSION, "timesteps": int(graph.timesteps), "dt": DT,
        "class_names": json.dumps(list(graph.class_names)), "input_encoding": json.dumps(enc),
        "provenance": json.dumps(graph.provenance, default=str), "reset": "subtract",
        "readout": "score = sum over the T steps of lambda**(T-1-t) * output_t (the output core's voltage)",
        "readout_leak": float(readout.leak) if not readout.spiking else 1.0,
        "neuron_mapping": "forward Euler, dt = 1e-4 s per step: IF r=1/dt; LIF tau=dt*4096/dv, r=tau/dt, "
                          "v_leak=0; synapse weights = integer x 2**weight_exp; v_threshold = vth (voltage in "
                          "units of the synaptic current; hardware v = 64 v); reset by subtraction outside the "
                          "leak (v_reset unused); fixed point: export.fixedpoint",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=square)


def says_subtract_reset(node: nir.NIRNode) -> bool:
    """Whether a node's metadata state reset by subtraction (as ``build_nir`` writes it)."""
    return str(np.asarray((node.metadata or {}).get("reset", ""))) == "subtract"


def readout_leak(graph: nir.NIRGraph) -> float:
    """The readout's per-step leak the graph's metadata state (1, a plain sum, when absent)."""
    return float(np.asarray((graph.metadata or {}).get("readout_leak", 1.0)))


def export_nir(graph: CoreGraph, path: str | os.PathLike) -> Path:
    """Write ``graph`` as a NIR file atomically (nir.write to a temp file in the same folder, then rename)."""
    g = build_nir(graph)
    path = Path(path)
    with atomic_path(path) as tmp:
        nir.write(str(tmp), g)
    return path
