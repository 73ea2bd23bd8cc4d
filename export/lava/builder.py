"""Build a CoreGraph as Lava processes and run it bit-accurately (lava-nc 0.10.0, ``fixed_pt``).

Each core becomes Lava's own ``Dense`` or ``Conv`` feeding a ``SoftResetLIF``. Layouts:
our (C, H, W) activations are (W, H, C) in Lava (x before y), everything else is flat;
dense weight rows/columns are permuted to match, conv kernels are transposed to
(C_out, W, H, C_in) and flipped (Lava convolves, torch correlates). Every Dense/Conv
delays by one step, so core k answers reference step t at Lava step t + k + 1 (0-based);
``run_lava`` runs T + ``fixedpoint.latency_steps`` steps and shifts that delay out.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from export.lava.compat import import_lava

import_lava()

from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.conv.process import Conv  # noqa: E402
from lava.proc.dense.process import Dense  # noqa: E402
from lava.proc.io.sink import RingBuffer as SpikeSink  # noqa: E402
from lava.proc.io.source import RingBuffer as SpikeSource  # noqa: E402
from lava.utils.weightutils import SignMode  # noqa: E402

from export import fixedpoint as fx  # noqa: E402
from export.graph import Core, CoreGraph, GraphError  # noqa: E402
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


@dataclass
class LavaNetwork:
    """The Lava processes of one CoreGraph; ``input_port`` takes spikes in Lava's input layout."""
    synapses: list          # Dense or Conv per core
    neurons: list           # SoftResetLIF per core

    @property
    def input_port(self):
        return self.synapses[0].s_in

    @property
    def output(self) -> SoftResetLIF:
        return self.neurons[-1]


def _check_lava_exact(core: Core) -> None:
    """GraphError where Lava's processes cannot compute this core's integers exactly."""
    magnitudes = np.abs(core.weights.astype(np.int64)).reshape(len(core.weights), -1)
    worst_sum = int(magnitudes.sum(axis=1).max(initial=0))      # largest |a| that +-1 spikes can make
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


def soft_reset_lif(core: Core):
    """The neuron process that computes ``core`` bit for bit (``export.fixedpoint``)."""
    return SoftResetLIF(shape=lava_shape(core.output_shape), vth=core.vth, dv=core.dv, du=core.du,
                        spiking=core.spiking, name=core.name)


def build_lava_network(graph: CoreGraph, neuron_process: Callable[[Core], object] = soft_reset_lif) -> LavaNetwork:
    """Lava processes for the chain input -> core 0 -> ... -> output accumulator (nothing runs yet).

    ``neuron_process(core)`` makes each core's neurons: by default the soft-reset LIF that
    matches the graph bit for bit; another process with ``a_in`` and ``s_out`` ports of the
    core's Lava shape may stand in (``benchmarks/hwsim_vs_lava.py`` times Lava's stock LIF,
    which resets to zero, this way)."""
    graph.validate()
    synapses, neurons = [], []
    in_shape = graph.input.shape
    for i, core in enumerate(graph.cores):
        synapse = _synapse(core, in_shape, INPUT_MESSAGE_BITS if i == 0 else 0)
        neuron = neuron_process(core)
        if neurons:
            _connect(neurons[-1].s_out, synapse.s_in)
        _connect(synapse.a_out, neuron.a_in)
        synapses.append(synapse)
        neurons.append(neuron)
        in_shape = core.output_shape
    return LavaNetwork(synapses, neurons)


@dataclass
class LavaRun(fx.CoreRun):
    """A ``CoreRun`` plus Lava's wall time per sample and Lava step (build and compile included)."""
    seconds_per_image_step: float = 0.0


def run_lava(graph: CoreGraph, input_spikes: np.ndarray, record_spikes: bool = True,
             progress: bool = True) -> LavaRun:
    """Run each sample of ``input_spikes`` (T, N, C, H, W) in {-1, 0, 1} through Lava's fixed_pt models.

    Spikes are aligned to ``fixedpoint.run_reference``'s layer-synchronous steps (an empty
    list unless ``record_spikes``). A fresh network runs per sample (Lava cannot rerun a
    stopped one).
    """
    input_spikes = np.asarray(input_spikes)
    if input_spikes.ndim != 5 or input_spikes.shape[2:] != graph.input.shape or 0 in input_spikes.shape[:2]:
        raise ValueError(f"input spikes of shape {input_spikes.shape} are not (T >= 1, N >= 1, "
                         f"*{graph.input.shape})")
    if np.any(np.abs(input_spikes) > 1):
        raise ValueError("input spikes must be in {-1, 0, 1}")
    steps, n = input_spikes.shape[:2]
    lava_steps = steps + fx.latency_steps(graph)
    spiking = [(k, core) for k, core in enumerate(graph.cores) if core.spiking]
    spikes = [np.zeros((steps, n, *core.output_shape), dtype=np.uint8) for _, core in spiking if record_spikes]
    output = np.zeros((n, math.prod(graph.cores[-1].output_shape)), dtype=np.int64)
    run_cfg = Loihi2SimCfg(select_tag="fixed_pt")
    started = time.perf_counter()
    for j in tqdm(range(n), desc="lava", unit="sample", disable=not progress):
        net = build_lava_network(graph)
        trains = np.zeros((*lava_shape(graph.input.shape), lava_steps), dtype=np.int32)   # zeros after T
        sample = to_lava_layout(input_spikes[:, j].astype(np.int32), graph.input.shape)
        trains[..., :steps] = np.moveaxis(sample, 0, -1)
        source = SpikeSource(data=trains)
        _connect(source.s_out, net.input_port)
        sinks = []
        if record_spikes:
            for k, _ in spiking:
                sinks.append(SpikeSink(shape=net.neurons[k].s_out.shape, buffer=lava_steps))
                net.neurons[k].s_out.connect(sinks[-1].a_in)
        try:
            source.run(condition=RunSteps(num_steps=lava_steps), run_cfg=run_cfg)
            for (k, core), sink, record in zip(spiking, sinks, spikes):
                recorded = np.moveaxis(sink.data.get()[..., k + 1:k + 1 + steps], -1, 0)
                record[:, j] = from_lava_layout(recorded, core.output_shape).astype(np.uint8)
            v_out = from_lava_layout(net.output.v.get(), graph.cores[-1].output_shape)
            output[j] = v_out.reshape(-1).astype(np.int64)
        finally:
            source.stop()
    seconds = time.perf_counter() - started
    return LavaRun(spikes, output, seconds_per_image_step=seconds / (n * lava_steps))


def run_graph(graph: CoreGraph, input_spikes: np.ndarray) -> LavaRun:
    """The Lava backend: Lava's own Dense/Conv processes and the soft-reset LIF, fixed_pt."""
    return run_lava(graph, input_spikes, progress=False)
