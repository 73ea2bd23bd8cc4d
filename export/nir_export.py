"""The core graph as a NIR graph (Neuromorphic Intermediate Representation, nir 1.0.x).

``export_nir(graph, path)`` writes, with ``nir.write``, the chain
``Input -> [Flatten] -> Conv2d | Linear -> IF | LIF -> ... -> Linear -> I | LI -> Output``:
one synapse node and one neuron node per core (a ``Flatten`` where a dense core reads a
multi-dimensional input; average pooling is already folded into the weights).

Mapping of the discrete fixed-point neuron (``export.fixedpoint``) onto NIR's continuous-time
models, integrated with forward Euler at dt = 1 time step (recorded as ``dt``):

- synapses carry the integer weights (as float32, exact), so ``I = W @ s`` is the integer
  synaptic sum; the dense ``weight_exp`` goes into the neuron's input resistance,
  ``r = 2**weight_exp`` (conv cores have weight_exp = 0).
- voltage unit: the synaptic current ``a``. The hardware keeps ``v_hw = 64 * v`` (the << 6
  alignment of input and threshold), so the threshold is the integer mantissa,
  ``v_threshold = vth``, with hardware spike condition ``v > vth`` as in NIR.
- dv = 0 (lambda = 1): ``IF`` with ``r = 2**weight_exp``: ``v += r * I`` per step.
- dv > 0: ``LIF`` with ``tau = 4096 / dv``, ``v_leak = 0``, ``r = tau * 2**weight_exp``; Euler at
  dt = 1 gives ``v <- (1 - dv/4096) * v + 2**weight_exp * I``, the hardware's
  ``lambda = 1 - dv/4096``. With weight_exp = 0 this is the convention snnTorch's NIR export and
  import use (tau = 1 / (1 - beta), r = tau).
- the output core never spikes: an integrator ``I`` (``r = 2**weight_exp``) when dv = 0, else a
  leaky integrator ``LI`` (same tau/r as LIF); its voltage after T steps is the class score
  (``Output`` follows it). ``nir.read`` loads the file, but the released importers do not run
  it as written: snnTorch 1.0.0's ``import_from_nir`` has no mapping for ``I`` ("Unknown node
  type nir.I"), and Norse 1.1.0 turns the ``Flatten`` (``start_dim=0`` over one sample) into a
  flatten of the batch; with nirtorch 2.6 and hand-made IF/I modules the predictions agree
  with hwsim up to the readout's per-step floor, which only the metadata states.
- reset: the network resets by subtraction (Eq. 2: ``v -= vth`` the step after a spike), which
  nir 1.0.x cannot state (its IF/LIF reset to ``v_reset``). ``v_reset`` is written as 0 and every
  neuron node's metadata says ``reset = "subtract"``; importers that honour it (snnTorch
  ``reset_mechanism="subtract"``, SpikingJelly ``v_reset=None``) reproduce the network.
- what NIR's float semantics do not state (24-bit wrap and clip, decay rounding toward zero,
  the floor of negative ``weight_exp`` shifts) is the fixed point of ``export.fixedpoint``; the
  integers it needs are in the metadata of each node: core name/index, op, vth, vth_shifted,
  dv, du, leak, weight_exp, weight_bits, weight_scale (integer = float x scale),
  float_threshold, act_shift, vth_shift, shapes, stride/padding, reset.
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
EXPORT_VERSION = 1
DT = 1.0


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
    }


def _neuron(core, shape: tuple[int, ...], meta: dict) -> nir.NIRNode:
    full = lambda x: np.full(shape, x, dtype=np.float32)  # noqa: E731
    scale = 2.0 ** core.weight_exp
    if core.dv:
        tau = fx.DECAY_UNITY / core.dv
        if core.spiking:
            return nir.LIF(tau=full(tau), r=full(tau * scale), v_leak=full(0.0), v_threshold=full(core.vth),
                           v_reset=full(0.0), metadata=meta)
        return nir.LI(tau=full(tau), r=full(tau * scale), v_leak=full(0.0), metadata=meta)
    if core.spiking:
        return nir.IF(r=full(scale), v_threshold=full(core.vth), v_reset=full(0.0), metadata=meta)
    return nir.I(r=full(scale), metadata=meta)


def build_nir(graph: CoreGraph) -> nir.NIRGraph:
    """The NIRGraph of ``graph`` (not written; see ``export_nir``)."""
    graph.validate()
    square = all(c.weights.shape[2] == c.weights.shape[3] for c in graph.cores if c.op == "conv")
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
    for k, core in enumerate(graph.cores):
        base = _safe(core.name)
        if base in nodes or f"{base}_neuron" in nodes:
            base = f"{base}_{k}"
        if core.op == "conv":
            if prev_shape != tuple(core.input_shape):
                raise GraphError(f"core {core.name}: NIR 1.0 has no reshape node to feed a conv with {prev_shape}")
            syn = nir.Conv2d(input_shape=tuple(core.input_shape[1:]), weight=core.weights.astype(np.float32),
                             stride=tuple(core.stride), padding=tuple(core.padding), dilation=(1, 1), groups=1,
                             bias=np.zeros(core.weights.shape[0], dtype=np.float32),
                             metadata=_core_metadata(core, k, "synapse"))
            syn.output_type = {"output": np.asarray(core.output_shape, dtype=np.int64)}   # see `square`
            shape = tuple(core.output_shape)
        else:
            if len(prev_shape) != 1:
                flat = f"{base}_flatten"
                nodes[flat] = nir.Flatten(input_type=np.asarray(prev_shape, dtype=np.int64), start_dim=0, end_dim=-1)
                edges.append((prev, flat))
                prev = flat
            syn = nir.Linear(weight=core.weights.astype(np.float32), metadata=_core_metadata(core, k, "synapse"))
            shape = (math.prod(core.output_shape),)
        nodes[base] = syn
        edges.append((prev, base))
        role = "neuron" if core.spiking else "readout"
        neuron = f"{base}_{role}"
        nodes[neuron] = _neuron(core, shape, _core_metadata(core, k, role))
        edges.append((base, neuron))
        prev, prev_shape = neuron, shape
    nodes["output"] = nir.Output(output_type=np.asarray(prev_shape, dtype=np.int64))
    edges.append((prev, "output"))
    meta = {
        "format": EXPORT_FORMAT, "export_version": EXPORT_VERSION, "nir_type_check": bool(square), "graph_format": FORMAT,
        "graph_version": GRAPH_VERSION, "timesteps": int(graph.timesteps), "dt": DT,
        "class_names": json.dumps(list(graph.class_names)), "input_encoding": json.dumps(enc),
        "provenance": json.dumps(graph.provenance, default=str), "reset": "subtract",
        "neuron_mapping": "forward Euler, dt = 1 step: IF r=2**weight_exp; LIF tau=4096/dv, r=tau*2**weight_exp, "
                          "v_leak=0; v_threshold = vth (voltage in units of the synaptic current; hardware "
                          "v = 64 v); reset by subtraction (v_reset unused); fixed point: export.fixedpoint",
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=square)


def export_nir(graph: CoreGraph, path: str | os.PathLike) -> Path:
    """Write ``graph`` as a NIR file atomically (nir.write to a temp file in the same folder, then rename)."""
    g = build_nir(graph)
    path = Path(path)
    with atomic_path(path) as tmp:
        nir.write(str(tmp), g)
    return path
