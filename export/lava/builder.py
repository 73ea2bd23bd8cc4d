"""Build a CoreGraph as Lava processes and run it bit-accurately (lava-nc 0.10.0, ``fixed_pt``).

Each core becomes Lava's own ``Dense`` or ``Conv`` feeding a ``SoftResetLIF``; each
shortcut a ``Sparse`` (``DelaySparse`` with a delay of d - 1 steps for a source d synapses
back on the chain) into the same neuron port, where Lava adds what arrives. Layouts:
our (C, H, W) activations are (W, H, C) in Lava (x before y), everything else is flat;
dense weight rows/columns are permuted to match, conv kernels are transposed to
(C_out, W, H, C_in) and flipped (Lava convolves, torch correlates). Every Dense/Conv
delays by one step, so core k answers reference step t at Lava step t + k + 1 (0-based);
``export.lava.runner`` runs T + ``fixedpoint.latency_steps`` steps and shifts that delay out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from export.lava.compat import import_lava

import_lava()

from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import Dense  # noqa: E402
from lava.proc.sparse.process import DelaySparse, Sparse  # noqa: E402
from lava.utils.weightutils import SignMode  # noqa: E402

from scipy.sparse import csr_matrix  # noqa: E402

from export import fixedpoint as fx  # noqa: E402
from export.graph import Core, CoreGraph, GraphError, Shortcut  # noqa: E402
from export.lava.procs.process import SoftResetLIF  # noqa: E402

# Signed input spikes must travel as graded messages: binary (0-bit) spikes cannot be -1.
INPUT_MESSAGE_BITS = 8
# Lava's Conv stores kernel size, stride and padding as int8 Vars.
CONV_GEOMETRY_MAX = 127
# Lava's Conv runs torch's float32 convolution: integer sums are exact below 2**24.
FLOAT32_EXACT = 2 ** 24
# Lava's channels carry int32: a larger Dense sum would wrap silently on the way.
INT32_LIMIT = 2 ** 31


def lava_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Lava's layout of an activation of our shape: (C, H, W) -> (W, H, C); anything else flat."""
    return tuple(reversed(shape)) if len(shape) == 3 else (math.prod(shape),)


def to_lava_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(..., *shape) in our layout -> (..., *lava_shape(shape))."""
    if len(shape) == 3:
        return np.swapaxes(x, -1, -3)
    return x.reshape(*x.shape[:x.ndim - len(shape)], math.prod(shape))


def from_lava_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(..., *lava_shape(shape)) -> (..., *shape) in our layout."""
    if len(shape) == 3:
        return np.swapaxes(x, -1, -3)
    return x.reshape(*x.shape[:-1], *shape)


def _lava_order(shape: tuple[int, ...]) -> np.ndarray:
    """For each flat position in Lava's layout, the flat index of that neuron in ours."""
    return to_lava_layout(np.arange(math.prod(shape)).reshape(shape), shape).ravel()


def lava_conv_weight(weights: np.ndarray) -> np.ndarray:
    """Torch cross-correlation kernel (C_out, C_in, kh, kw) -> Lava's (C_out, W, H, C_in), flipped."""
    return np.ascontiguousarray(weights.transpose(0, 3, 2, 1)[:, ::-1, ::-1])


def _connect(src_port, dst_port) -> None:
    """Connect ports whose shapes differ only by layout (same size, C-order reshape)."""
    if src_port.shape != dst_port.shape:
        src_port = src_port.reshape(dst_port.shape)
    src_port.connect(dst_port)


# Vars that carry state from one step to the next: neurons' and synapses' (Dense: a_buff, Conv: a_buf)
STATE_VARS = ("u", "v", "spiked", "steps_run", "a_buff", "a_buf")


@dataclass
class LavaNetwork:
    """The connected Lava processes of one CoreGraph, for use with Lava's own calls.

    Feed spike trains from ``input_trains`` (e.g. through Lava's ``RingBuffer`` source,
    joined with ``connect_input``), run ``steps(T)`` steps (T plus one step of delay per
    core), read the class scores from ``output.v``; between samples, with the network
    paused, ``reset()`` zeroes every state. ``examples/lava_take_away.py`` does exactly that."""
    graph: CoreGraph
    synapses: list          # Lava's Dense or Conv per core
    neurons: list           # SoftResetLIF (or the ``neuron_process`` given) per core
    shortcuts: list         # Lava's Sparse or DelaySparse per shortcut, in core order
    input_ports: list       # the first core's synapse's s_in, then those of shortcuts from the input

    @property
    def input_port(self):
        return self.input_ports[0]

    def connect_input(self, out_port) -> None:
        """Connect a source of ``input_trains``' shape to every synapse the input feeds."""
        for port in self.input_ports:
            _connect(out_port, port)

    @property
    def output(self) -> SoftResetLIF:
        return self.neurons[-1]

    def steps(self, timesteps: int) -> int:
        """Lava steps that carry T input steps through every core (``fixedpoint.latency_steps``)."""
        return int(timesteps) + fx.latency_steps(self.graph)

    def input_trains(self, sample: np.ndarray, timesteps: int | None = None) -> np.ndarray:
        """One sample's spikes (T, *input shape) in {-1, 0, 1} -> a source's data (*input_port's
        shape, ``steps(T)``) int32 in Lava's layout, zeros after T, so that the source connects
        to ``input_port`` as it is; ``timesteps`` (> T) pads with more zeros."""
        sample = np.asarray(sample)
        if sample.ndim != 1 + len(self.graph.input.shape) or sample.shape[1:] != self.graph.input.shape:
            raise ValueError(f"a sample must be (T, *{self.graph.input.shape}), got {sample.shape}")
        steps = self.steps(max(len(sample), timesteps or 0))
        trains = np.zeros((*lava_shape(self.graph.input.shape), steps), dtype=np.int32)
        trains[..., :len(sample)] = np.moveaxis(to_lava_layout(sample.astype(np.int32), self.graph.input.shape), 0, -1)
        return trains.reshape(*self.input_port.shape, steps)      # a dense first core takes it flat

    def state_vars(self) -> list:
        return [var for proc in [*self.synapses, *self.shortcuts, *self.neurons]
                for name in STATE_VARS if (var := getattr(proc, name, None)) is not None]

    def reset(self) -> None:
        """Return every state (voltages, currents, last spikes, the synapses' delayed outputs) of a
        paused network to its initial value (0; a voltage to its core's ``v_init``), so that the
        next run starts as a fresh one."""
        for var in self.state_vars():
            var.set(np.full(var.shape, var.init if np.isscalar(var.init) else 0, dtype=np.int32))


def _check_lava_exact(core: Core) -> None:
    """GraphError where Lava's processes cannot compute this core's integers exactly."""
    worst_sum = fx.max_abs_current(core.weights)                 # largest |a| that +-1 spikes can make
    if core.op == "dense" and worst_sum << max(core.weight_exp, 0) >= INT32_LIMIT:
        raise GraphError(f"core {core.name}: a dense sum can reach 2**31, beyond Lava's int32 messages")
    if core.op == "conv":
        geometry = [*core.weights.shape[2:], *core.stride, *core.padding]
        if max(geometry) > CONV_GEOMETRY_MAX:
            raise GraphError(f"core {core.name}: kernel/stride/padding {geometry} exceed Lava Conv's "
                             f"int8 geometry ({CONV_GEOMETRY_MAX})")
        if worst_sum >= FLOAT32_EXACT:
            raise GraphError(f"core {core.name}: a conv sum can reach {worst_sum} >= 2**24, where Lava's "
                             "float32 convolution is no longer exact")


def _synapse(core: Core, in_shape: tuple[int, ...], num_message_bits: int):
    """Lava's Dense or Conv for one core, fed by an activation of our shape ``in_shape``."""
    _check_lava_exact(core)
    if core.op == "dense":
        weights = core.weights[_lava_order(core.output_shape)][:, _lava_order(in_shape)]
        return Dense(weights=weights, weight_exp=core.weight_exp, num_weight_bits=core.weight_bits,
                     sign_mode=SignMode.MIXED, num_message_bits=num_message_bits, name=f"{core.name}.dense")
    if core.op == "conv":
        return Conv(weight=lava_conv_weight(core.weights), input_shape=lava_shape(in_shape),
                    stride=core.stride[::-1], padding=core.padding[::-1], num_weight_bits=core.weight_bits,
                    num_message_bits=num_message_bits, name=f"{core.name}.conv")
    raise GraphError(f"core {core.name}: op {core.op!r} has no Lava process")


def shortcut_matrix(sc: Shortcut, out_shape: tuple[int, ...]) -> csr_matrix:
    """The shortcut as a (neurons, source neurons) matrix in Lava's layouts (rows and columns)."""
    n_out, n_in = math.prod(out_shape), math.prod(sc.input_shape)
    if sc.op == "identity":
        rows, cols = np.arange(n_out), np.arange(n_in)
        vals = np.full(n_out, int(sc.weights[0]), dtype=np.int64)
    else:
        o, c, kh, kw = sc.weights.shape
        (_, h, w), (_, ho, wo) = sc.input_shape, out_shape
        oo, cc, ii, jj, yy, xx = np.meshgrid(np.arange(o), np.arange(c), np.arange(kh), np.arange(kw),
                                             np.arange(ho), np.arange(wo), indexing="ij")
        y = yy * sc.stride[0] - sc.padding[0] + ii
        x = xx * sc.stride[1] - sc.padding[1] + jj
        keep = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        rows = ((oo * ho + yy) * wo + xx)[keep]
        cols = ((cc * h + np.clip(y, 0, h - 1)) * w + np.clip(x, 0, w - 1))[keep]
        vals = sc.weights.astype(np.int64)[oo, cc, ii, jj][keep]
    m = csr_matrix((vals, (rows, cols)), shape=(n_out, n_in))        # duplicates (none here) would add
    m.eliminate_zeros()
    lava_rows, lava_cols = _lava_order(out_shape), _lava_order(sc.input_shape)
    return m[lava_rows][:, lava_cols].tocsr()


def _shortcut_synapse(graph: CoreGraph, core: Core, sc: Shortcut):
    """Lava's Sparse (or DelaySparse, to wait for the chain) for one shortcut of ``core``."""
    weights = shortcut_matrix(sc, core.output_shape)
    if fx.max_abs_current(sc.weights, max(sc.weight_exp, 0)) >= INT32_LIMIT:
        raise GraphError(f"core {core.name}: a shortcut sum can reach 2**31, beyond Lava's int32 messages")
    delay = graph.depth(core.name) - graph.depth(sc.source) - 1
    args = dict(weights=weights, weight_exp=sc.weight_exp, num_weight_bits=sc.weight_bits, sign_mode=SignMode.MIXED,
                num_message_bits=INPUT_MESSAGE_BITS if sc.source == "input" else 0,
                name=f"{core.name}.shortcut_from_{sc.source}")
    if delay == 0:
        return Sparse(**args)
    delays = weights.copy()
    delays.data[:] = delay
    return DelaySparse(delays=delays.astype(int), **args)


def soft_reset_lif(core: Core, latency: int = 0):
    """The neuron process that computes ``core`` bit for bit (``export.fixedpoint``);
    ``latency``: the Lava steps before the core's first input arrives, in which its bias
    and leak are held back (the reference's neurons start with their input, at step 0)."""
    bias = 0 if core.bias is None else np.ascontiguousarray(     # per neuron, in Lava's layout
        to_lava_layout(fx.per_neuron(core.bias, core.output_shape), core.output_shape))
    return SoftResetLIF(shape=lava_shape(core.output_shape), vth=core.vth, dv=core.dv, du=core.du,
                        spiking=core.spiking, bias_mant=bias, bias_exp=core.bias_exp, bias_delay=latency,
                        v_init=core.v_init, name=core.name)


def build_lava_network(graph: CoreGraph, neuron_process: Callable[[Core, int], object] = soft_reset_lif
                       ) -> LavaNetwork:
    """Lava processes for the chain input -> core 0 -> ... -> output accumulator (nothing runs yet).

    ``neuron_process(core, latency)`` makes each core's neurons (``latency``: the Lava steps
    before the core's first input arrives, one per synapse on the chain): by default the soft-reset LIF that
    matches the graph bit for bit; another process with ``a_in`` and ``s_out`` ports of the
    core's Lava shape may stand in (``benchmarks/hwsim_vs_lava.py`` times Lava's stock LIF,
    which resets to zero, this way)."""
    graph.validate()
    synapses, neurons, shortcuts, input_ports = [], [], [], []
    in_shape = graph.input.shape
    outputs = {}                                           # spiking population -> its s_out
    for i, core in enumerate(graph.cores):
        synapse = _synapse(core, in_shape, INPUT_MESSAGE_BITS if i == 0 else 0)
        neuron = neuron_process(core, graph.depth(core.name))
        if neurons:
            _connect(neurons[-1].s_out, synapse.s_in)
        else:
            input_ports.append(synapse.s_in)
        _connect(synapse.a_out, neuron.a_in)
        for sc in core.shortcuts:
            extra = _shortcut_synapse(graph, core, sc)
            if sc.source == "input":
                input_ports.append(extra.s_in)
            else:
                _connect(outputs[sc.source], extra.s_in)
            _connect(extra.a_out, neuron.a_in)
            shortcuts.append(extra)
        synapses.append(synapse)
        neurons.append(neuron)
        outputs[core.name] = neuron.s_out
        in_shape = core.output_shape
    return LavaNetwork(graph, synapses, neurons, shortcuts, input_ports)
