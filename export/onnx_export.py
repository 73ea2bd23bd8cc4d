"""The core graph as a runnable ONNX model of ONE time step, integer-exact to ``export.fixedpoint``.

``export_onnx(graph, path)`` writes a model in standard ONNX operators (opset 17, IR 8) that
advances every core of the chain by one step, layer-synchronously, exactly as
``export.fixedpoint.run_reference`` does; ``run_onnx(path, spikes)`` loops it T times with
onnxruntime and returns what ``run_reference`` returns (a ``CoreRun``).

Names (k = 0-based core index, in chain order; ``metadata_props["cores"]`` maps k to the
core's name):

- inputs: ``input_spikes`` int8 (N, C, H, W) in {-1, 0, 1}; for every core ``v_k`` int64
  (N, *output_shape), its voltage before the step; for every spiking core ``o_k`` uint8
  (N, *output_shape), its spikes of the previous step (the Eq. 2 reset).
- outputs: ``output`` int64 (N, *output_shape of the last core), the accumulator's voltage
  after the step (= ``v_{K-1}_next``); for every spiking core ``spikes_k`` uint8; for every
  core ``v_k_next`` int64.
- to step: start with every ``v_k`` at its core's ``v_init`` (metadata ``cores``; 0 unless
  the core sets it) and every ``o_k`` at zeros, feed ``v_k_next`` back as ``v_k`` and ``spikes_k`` as ``o_k``.

State tensors are int64 (voltages, the 24-bit values of Lava, unshifted: the threshold
compared with is ``vth << 6``) and uint8 (spikes). Arithmetic:

- synaptic input: float32 ``MatMul`` / ``Conv`` (ONNX Conv is a cross-correlation, torch
  layout, like ``Core``) on integer-valued tensors. Spikes are in {-1, 0, 1}, so every
  partial sum is an integer bounded by the sum of |w| over the fan-in; where that sum can
  exceed 2**24 (float32's exact-integer range) the fan-in is split along input
  channels/features into groups that stay below it, each group summed in float32, the
  groups added in float64 (exact below 2**53). Any summation order is then exact.
- Dense ``weight_exp``: multiply by 2**weight_exp in float64 (exact: a power of two), and
  ``Floor`` for negative exponents (= the arithmetic right shift). Conv: wrap to signed
  24 bit (``Mod``), as Lava's Conv does. Then ``Cast`` to int64.
- shortcuts (residual nets): the same float32 ``Conv`` (or a ``Mul`` for an identity) on
  the source's spikes of this step, the shift in float64, ``Cast`` to int64, ``Add`` to
  the core's own current, before the neuron.
- neuron, all int64: ``u = a * 64``; Lava's single 24-bit wrap (two ``Where``);
  decay ``Sign(y) * (Abs(y) / 4096)`` with ``y = v * (4096 - dv)`` (integer ``Div`` only on a
  non-negative operand, where truncation and floor agree; skipped when dv = 0, where it is
  the identity); ``+ bias << bias_exp`` (a constant per neuron, where the core has a
  bias); ``v - (vth << 6) * o_prev``; ``Clip`` to +-(2**23 - 1);
  ``spikes = v > vth << 6``.

``metadata_props`` hold the neuromorphic parameters, each value a JSON document.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export import fixedpoint as fx
from export.fixedpoint import CoreRun
from export.graph import FORMAT, VERSION as GRAPH_VERSION, CoreGraph, GraphError
from records.atomic import atomic_file

OPSET = 17
IR_VERSION = 8
EXPORT_FORMAT = "hybrid-snn-onnx-step"
EXPORT_VERSION = 3           # 3: neuron bias; 2: shortcuts (each core's metadata lists them)
F32_EXACT = 2 ** 24          # float32 holds every integer of magnitude <= 2**24 exactly

INPUT_NAME = "input_spikes"
OUTPUT_NAME = "output"


def v_name(k: int) -> str:
    return f"v_{k}"


def o_name(k: int) -> str:
    return f"o_{k}"


def spikes_name(k: int) -> str:
    return f"spikes_{k}"


def v_next_name(k: int) -> str:
    return f"v_{k}_next"


def fan_in_groups(abs_sums: np.ndarray, limit: int = F32_EXACT) -> list[tuple[int, int]]:
    """Split the fan-in axis so that, for every output, the sum of |w| inside a group is <= limit.

    ``abs_sums`` (outputs, inputs): sum of |w| per output and input channel/feature.
    Returns contiguous [start, stop) ranges over the inputs.
    """
    n_in = abs_sums.shape[1]
    if n_in == 0:
        return [(0, 0)]
    groups, start = [], 0
    acc = np.zeros(abs_sums.shape[0], dtype=np.int64)
    for i in range(n_in):
        col = abs_sums[:, i].astype(np.int64)
        if col.max(initial=0) > limit:
            raise GraphError(f"one input channel carries a weight sum {int(col.max())} > {limit}; "
                             "float32 cannot sum it exactly")
        if (acc + col).max(initial=0) > limit:
            groups.append((start, i))
            start, acc = i, np.zeros_like(acc)
        acc += col
    groups.append((start, n_in))
    return groups


class _Builder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}__{self._n}"

    def const(self, value, dtype, hint: str) -> str:
        name = self._fresh(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, out: str | None = None, **attrs) -> str:
        out = out or self._fresh(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self._fresh(f"{hint}_{op_type}"), **attrs))
        return out


def _conv_f64(b: _Builder, hint: str, w: np.ndarray, stride, padding, x_f32: str) -> str:
    """float64 cross-correlation (torch layout, as ONNX Conv) of float32 spikes with integer
    weights ``w``: float32 ``Conv`` per fan-in group (``fan_in_groups``), the groups added in float64."""
    o, c, kh, kw = w.shape
    attrs = dict(kernel_shape=[kh, kw], strides=list(stride), dilations=[1, 1], group=1,
                 pads=[padding[0], padding[1], padding[0], padding[1]])
    groups = fan_in_groups(np.abs(w).sum(axis=(2, 3)))
    parts = []
    for lo, hi in groups:
        xg = x_f32 if len(groups) == 1 else b.op(
            "Slice", [x_f32, b.const([lo], np.int64, f"{hint}_lo"), b.const([hi], np.int64, f"{hint}_hi"),
                      b.const([1], np.int64, f"{hint}_ax")], f"{hint}_slice")
        wt = b.const(w[:, lo:hi].astype(np.float32), np.float32, f"{hint}_weight")
        parts.append(b.op("Cast", [b.op("Conv", [xg, wt], f"{hint}_conv", **attrs)], f"{hint}_f64",
                          to=TensorProto.DOUBLE))
    a = parts[0]
    for part in parts[1:]:
        a = b.op("Add", [a, part], f"{hint}_sum")
    return a


def _shift_f64(b: _Builder, hint: str, a: str, weight_exp: int) -> str:
    """a x 2**weight_exp in float64 (exact: a power of two), floored for a negative exponent
    (the arithmetic right shift)."""
    if weight_exp:
        a = b.op("Mul", [a, b.const(2.0 ** weight_exp, np.float64, f"{hint}_scale")], f"{hint}_shift")
        if weight_exp < 0:
            a = b.op("Floor", [a], f"{hint}_floor")
    return a


def _synaptic_input(b: _Builder, k: int, core, x_f32: str) -> str:
    """int64 synaptic current a (N, *output_shape) of core k from float32 spikes x_f32."""
    hint = f"core{k}"
    w = core.weights.astype(np.int64)
    if core.op == "dense":
        # the incoming tensor has the previous core's (or the input's) shape, whatever shape
        # this core declares: always flatten (a no-op on (N, M))
        x = b.op("Flatten", [x_f32], f"{hint}_flat", axis=1)
        groups = fan_in_groups(np.abs(w))
        parts = []
        for lo, hi in groups:
            xg = x if len(groups) == 1 else b.op(
                "Slice", [x, b.const([lo], np.int64, f"{hint}_lo"), b.const([hi], np.int64, f"{hint}_hi"),
                          b.const([1], np.int64, f"{hint}_ax")], f"{hint}_slice")
            wt = b.const(w[:, lo:hi].T.astype(np.float32), np.float32, f"{hint}_weight")
            parts.append(b.op("Cast", [b.op("MatMul", [xg, wt], f"{hint}_mm")], f"{hint}_f64", to=TensorProto.DOUBLE))
        a = parts[0]
        for p in parts[1:]:
            a = b.op("Add", [a, p], f"{hint}_sum")
        a = _shift_f64(b, hint, a, core.weight_exp)
        a = b.op("Cast", [a], f"{hint}_a", to=TensorProto.INT64)
        if len(core.output_shape) != 1:
            a = b.op("Reshape", [a, b.const([-1, *core.output_shape], np.int64, f"{hint}_shape")], f"{hint}_unflat")
        return a
    # conv: cross-correlation in torch layout, as ONNX Conv
    a = _conv_f64(b, hint, w, core.stride, core.padding, x_f32)
    half = 2 ** (fx.CONV_OUT_BITS - 1)
    # Lava's Conv wraps its sum to signed 24 bit: (a + 2**23) mod 2**24 - 2**23 (exact integers in float64)
    shifted = b.op("Add", [a, b.const(float(half), np.float64, f"{hint}_wh")], f"{hint}_wadd")
    a = b.op("Sub", [b.op("Mod", [shifted, b.const(float(2 * half), np.float64, f"{hint}_wm")], f"{hint}_wmod",
                          fmod=1),
                     b.const(float(half), np.float64, f"{hint}_wh2")], f"{hint}_wrap24")
    return b.op("Cast", [a], f"{hint}_a", to=TensorProto.INT64)


def _shortcut_input(b: _Builder, k: int, j: int, sc, x_f32: str) -> str:
    """int64 current (N, *output_shape) of core k's shortcut j from its source's float32 spikes:
    ``shift(W s, weight_exp)`` in float64 (``fixedpoint.shortcut_input``), no wrap."""
    hint = f"core{k}_shortcut{j}"
    w = sc.weights.astype(np.int64)
    if sc.op == "identity":
        a = b.op("Cast", [b.op("Mul", [x_f32, b.const(float(w[0]), np.float32, f"{hint}_weight")], f"{hint}_mul")],
                 f"{hint}_f64", to=TensorProto.DOUBLE)
    else:
        a = _conv_f64(b, hint, w, sc.stride, sc.padding, x_f32)
    a = _shift_f64(b, hint, a, sc.weight_exp)
    return b.op("Cast", [a], f"{hint}_a", to=TensorProto.INT64)


def _neuron(b: _Builder, k: int, core, a: str) -> tuple[str, str | None]:
    """Append the fixed-point neuron update of core k; returns (v_next, spikes or None)."""
    hint = f"core{k}"
    i64 = np.int64
    u = b.op("Mul", [a, b.const(2 ** fx.ACT_SHIFT, i64, f"{hint}_act")], f"{hint}_u")
    half = 2 ** (fx.STATE_BITS - 1)
    # Lava's single wrap: x > 2**23 -> x - 2**24; then (that) <= -2**23 -> (the unwrapped) x + 2**24
    two = b.const(2 * half, i64, f"{hint}_2h")
    w1 = b.op("Where", [b.op("Greater", [u, b.const(half, i64, f"{hint}_h")], f"{hint}_gt"),
                        b.op("Sub", [u, two], f"{hint}_um"), u], f"{hint}_wrap1")
    u = b.op("Where", [b.op("LessOrEqual", [w1, b.const(-half, i64, f"{hint}_mh")], f"{hint}_le"),
                       b.op("Add", [u, two], f"{hint}_up"), w1], f"{hint}_wrap")
    v = v_name(k)
    if core.dv:
        y = b.op("Mul", [v, b.const(fx.DECAY_UNITY - core.dv, i64, f"{hint}_leak")], f"{hint}_y")
        mag = b.op("Div", [b.op("Abs", [y], f"{hint}_abs"), b.const(fx.DECAY_UNITY, i64, f"{hint}_unity")],
                   f"{hint}_shr")
        v = b.op("Mul", [b.op("Sign", [y], f"{hint}_sign"), mag], f"{hint}_decay")
    v = b.op("Add", [v, u], f"{hint}_vu")
    if core.bias is not None:
        v = b.op("Add", [v, b.const(np.ascontiguousarray(fx.neuron_bias(core)), i64, f"{hint}_bias")], f"{hint}_vb")
    vth = b.const(int(core.vth) << fx.VTH_SHIFT, i64, f"{hint}_vth")
    if core.spiking:
        reset = b.op("Mul", [b.op("Cast", [o_name(k)], f"{hint}_o64", to=TensorProto.INT64), vth], f"{hint}_reset")
        v = b.op("Sub", [v, reset], f"{hint}_vr")
    v = b.op("Clip", [v, b.const(-fx.V_MAX, i64, f"{hint}_vmin"), b.const(fx.V_MAX, i64, f"{hint}_vmax")],
             f"{hint}_clip", out=v_next_name(k))
    if not core.spiking:
        return v, None
    s = b.op("Cast", [b.op("Greater", [v, vth], f"{hint}_fire")], f"{hint}_s", out=spikes_name(k),
             to=TensorProto.UINT8)
    return v, s


ENCODING_TEXT = {
    "poisson": "x = clip((pixel/255 - mean[c]) / std[c], -clip, clip); each step a pixel emits sign(x) "
               "when a fresh uniform number in [0, 1) is below |x| (signed Poisson rate coding)",
    "integrate": "x = clip((pixel/255 - mean[c]) / std[c], -clip, clip); a pixel emits sign(x) at step t "
                 "(0-based) when c(t + 1) > c(t), c(t) = floor(t * |x| + 1/2) in float32 (deterministic)"}


def _metadata(graph: CoreGraph, groups: list[int]) -> dict[str, object]:
    cores = []
    for k, c in enumerate(graph.cores):
        h = c.header()
        h.update(index=k, leak=c.leak, vth_shifted=int(c.vth) << fx.VTH_SHIFT, fan_in_groups=groups[k],
                 onnx={"v": v_name(k), "v_next": v_next_name(k),
                       "o": o_name(k) if c.spiking else None, "spikes": spikes_name(k) if c.spiking else None})
        cores.append(h)
    enc = graph.input.to_json()
    enc.update(description=ENCODING_TEXT[graph.input.rule], dtype="int8", values=[-1, 0, 1])
    return {
        "format": EXPORT_FORMAT,
        "export_version": EXPORT_VERSION,
        "graph_format": FORMAT,
        "graph_version": GRAPH_VERSION,
        "timesteps": int(graph.timesteps),
        "input_encoding": enc,
        "class_names": list(graph.class_names),
        "provenance": graph.provenance,
        "cores": cores,
        "fixed_point": {"state_bits": fx.STATE_BITS, "v_max": fx.V_MAX, "conv_out_bits": fx.CONV_OUT_BITS,
                        "vth_bits": fx.VTH_BITS, "decay_bits": fx.DECAY_BITS, "act_shift": fx.ACT_SHIFT,
                        "vth_shift": fx.VTH_SHIFT, "du": fx.DU_INSTANT, "hw_input_bits": fx.HW_INPUT_BITS,
                        "reference": "export.fixedpoint"},
        "semantics": "one layer-synchronous time step of every core, as export.fixedpoint.run_reference; "
                     "Lava delays each Dense/Conv by one step, so its spikes of core k at step t + k + 1 equal "
                     "these at step t (run Lava T + len(cores) steps: export.fixedpoint.latency_steps)",
        "state": {"v": "int64 voltage (24-bit value as in Lava; threshold compared with is vth << 6)",
                  "o": "uint8 spikes of the previous step",
                  "initial": "v_k: the core's v_init (cores[k].v_init; 0 unless set), o_k: zeros",
                  "loop": "feed v_k_next back as v_k and spikes_k as o_k"},
        "inputs": [INPUT_NAME] + [n for k, c in enumerate(graph.cores)
                                  for n in ([v_name(k), o_name(k)] if c.spiking else [v_name(k)])],
        "outputs": [OUTPUT_NAME] + [spikes_name(k) for k, c in enumerate(graph.cores) if c.spiking]
                   + [v_next_name(k) for k in range(len(graph.cores))],
    }


def build_model(graph: CoreGraph) -> onnx.ModelProto:
    """The one-step ONNX model of ``graph`` (not written; see ``export_onnx``)."""
    graph.validate()
    b = _Builder()
    batch = "N"
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.INT8, [batch, *graph.input.shape])]
    spike_outs, v_outs = [], []
    x = b.op("Cast", [INPUT_NAME], "input_f32", to=TensorProto.FLOAT)
    spikes_f32 = {"input": x}                # each population's spikes of this step, for shortcuts
    groups = []
    for k, core in enumerate(graph.cores):
        shape = [batch, *core.output_shape]
        inputs.append(helper.make_tensor_value_info(v_name(k), TensorProto.INT64, shape))
        if core.spiking:
            inputs.append(helper.make_tensor_value_info(o_name(k), TensorProto.UINT8, shape))
        n_before = len(b.nodes)
        a = _synaptic_input(b, k, core, x)
        groups.append(sum(n.op_type in ("Conv", "MatMul") for n in b.nodes[n_before:]))
        for j, sc in enumerate(core.shortcuts):
            a = b.op("Add", [a, _shortcut_input(b, k, j, sc, spikes_f32[sc.source])], f"core{k}_residual")
        v, s = _neuron(b, k, core, a)
        v_outs.append(helper.make_tensor_value_info(v, TensorProto.INT64, shape))
        if s is not None:
            spike_outs.append(helper.make_tensor_value_info(s, TensorProto.UINT8, shape))
            x = spikes_f32[core.name] = b.op("Cast", [s], f"core{k}_spikes_f32", to=TensorProto.FLOAT)
    last = graph.cores[-1]
    b.op("Identity", [v_next_name(len(graph.cores) - 1)], "output", out=OUTPUT_NAME)
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.INT64, [batch, *last.output_shape])]
    outputs += spike_outs + v_outs
    g = helper.make_graph(b.nodes, "snn_step", inputs, outputs, initializer=b.inits,
                          doc_string="One time step of a fixed-point spiking network (export.onnx_export).")
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hybrid-snn-toolchain",
                              producer_version=str(EXPORT_VERSION), doc_string=__doc__)
    model.ir_version = IR_VERSION
    meta = _metadata(graph, groups)
    helper.set_model_props(model, {k: json.dumps(v, default=str) for k, v in meta.items()})
    return model


def export_onnx(graph: CoreGraph, path: str | os.PathLike) -> Path:
    """Write the one-step ONNX model of ``graph`` atomically (temp file in the same folder, then rename)."""
    model = build_model(graph)
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    with atomic_file(path) as f:
        f.write(model.SerializeToString())
    return path


def run_onnx(model: str | os.PathLike | bytes, input_spikes: np.ndarray, threads: int | None = None) -> CoreRun:
    """Step an exported model (a file, or its bytes) over input spikes (T, N, C, H, W) in
    {-1, 0, 1} with onnxruntime (CPU), the state loop a user writes by hand."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])
    x = np.asarray(input_spikes)
    if x.ndim != 5:
        raise ValueError(f"input spikes must be (T, N, C, H, W), got shape {x.shape}")
    x = x.astype(np.int8, copy=False)
    steps, n = x.shape[:2]
    dtypes = {"tensor(int64)": np.int64, "tensor(uint8)": np.uint8}
    meta = sess.get_modelmeta().custom_metadata_map
    v_init = {c["onnx"]["v"]: int(c.get("v_init", 0)) for c in json.loads(meta["cores"])} if "cores" in meta else {}
    state = {i.name: np.full((n, *i.shape[1:]), v_init.get(i.name, 0), dtype=dtypes[i.type])
             for i in sess.get_inputs() if i.name != INPUT_NAME}
    out_info = {o.name: o for o in sess.get_outputs()}
    spiking = sorted((int(name.split("_")[1]) for name in out_info if name.startswith("spikes_")))
    spikes = [np.zeros((steps, n, *out_info[spikes_name(k)].shape[1:]), dtype=np.uint8) for k in spiking]
    output = np.zeros((n, *out_info[OUTPUT_NAME].shape[1:]), dtype=np.int64)
    names = [o.name for o in sess.get_outputs()]
    for t in range(steps):
        res = dict(zip(names, sess.run(names, {INPUT_NAME: x[t], **state})))
        for j, k in enumerate(spiking):
            spikes[j][t] = res[spikes_name(k)]
            state[o_name(k)] = res[spikes_name(k)]
        for name in state:
            if name.startswith("v_"):
                state[name] = res[f"{name}_next"]
        output = res[OUTPUT_NAME]
    return CoreRun(spikes, output.reshape(n, -1))


def run_graph(graph: CoreGraph, input_spikes: np.ndarray) -> CoreRun:
    """The ONNX backend: export ``graph`` in memory and run it with onnxruntime."""
    return run_onnx(build_model(graph).SerializeToString(), input_spikes, threads=1)
