"""Run a core graph in Lava sample after sample, on one network built and compiled once.

Lava cannot rerun a stopped network, and building and compiling one costs more than a
sample's steps; but a paused network can be continued. ``LavaRunner`` keeps one network
(``build_lava_network``) with a spike source and, when spikes are recorded, one sink per
spiking core. Each sample runs exactly ``T + latency`` steps (``fixedpoint.latency_steps``),
the length of the source's and the sinks' ring buffers, so every sample starts at index 0
of both; before a sample the source's trains are replaced and the network's state is
zeroed (``LavaNetwork.reset``). Lava's Var reads and writes cost about as much as the
steps of a small network, so a sample's spikes are read only when recorded.

    with LavaRunner(graph, timesteps=16) as runner:
        for sample in spikes.transpose(1, 0, 2, 3, 4):      # (T, C, H, W) each
            spikes_per_core, output_voltage = runner.run(sample)
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
from lava.proc.io.sink import RingBuffer as SpikeSink  # noqa: E402
from lava.proc.io.source import RingBuffer as SpikeSource  # noqa: E402

from export import fixedpoint as fx  # noqa: E402
from export.graph import Core, CoreGraph  # noqa: E402
from export.lava.builder import build_lava_network, from_lava_layout, soft_reset_lif  # noqa: E402

class LavaRunner:
    """One Lava network for ``graph`` that runs many samples of ``timesteps`` steps each.

    ``neuron_process`` as for ``build_lava_network``; ``run_cfg`` defaults to Lava's
    bit-accurate ``Loihi2SimCfg(select_tag="fixed_pt")``. The network is built at once and
    compiled at the first ``run``; ``close()`` (or leaving a ``with`` block) stops it."""

    def __init__(self, graph: CoreGraph, timesteps: int, record_spikes: bool = True,
                 neuron_process: Callable[[Core, int], object] = soft_reset_lif, run_cfg=None):
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.graph, self.timesteps = graph, int(timesteps)
        self.network = build_lava_network(graph, neuron_process)
        self.lava_steps = self.network.steps(self.timesteps)
        self.source = SpikeSource(data=self.network.input_trains(np.zeros((self.timesteps, *graph.input.shape))))
        self.network.connect_input(self.source.s_out)                   # input_trains lays it out
        self.spiking = [(k, core) for k, core in enumerate(graph.cores) if core.spiking] if record_spikes else []
        self.sinks = []
        for k, _ in self.spiking:
            self.sinks.append(SpikeSink(shape=self.network.neurons[k].s_out.shape, buffer=self.lava_steps))
            self.network.neurons[k].s_out.connect(self.sinks[-1].a_in)
        self.run_cfg = run_cfg or Loihi2SimCfg(select_tag="fixed_pt")
        self._started = self._closed = False

    def run(self, sample: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """One sample's spikes (T, *input shape) in {-1, 0, 1} -> (spikes of each spiking core,
        (T, *output_shape) uint8, aligned to ``fixedpoint.run_reference``'s steps (empty when
        not recorded); the output core's voltage after the run, flat int64)."""
        if self._closed:
            raise RuntimeError("this LavaRunner is closed")
        sample = np.asarray(sample)
        if len(sample) != self.timesteps:
            raise ValueError(f"a sample must have T={self.timesteps} steps, got {len(sample)}")
        trains = self.network.input_trains(sample)
        if self._started:
            self.source.data.set(trains)
            self.network.reset()
        else:
            self.source.data.init = trains
            self._started = True
        self.source.run(condition=RunSteps(num_steps=self.lava_steps), run_cfg=self.run_cfg)
        spikes = []
        for (k, core), sink in zip(self.spiking, self.sinks):
            recorded = np.moveaxis(sink.data.get()[..., k + 1:k + 1 + self.timesteps], -1, 0)
            spikes.append(from_lava_layout(recorded, core.output_shape).astype(np.uint8))
        v_out = from_lava_layout(self.network.output.v.get(), self.graph.cores[-1].output_shape)
        return spikes, v_out.reshape(-1).astype(np.int64)

    def close(self) -> None:
        if self._started and not self._closed:
            self.source.stop()
        self._closed = True

    def __enter__(self) -> "LavaRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class LavaRun(fx.CoreRun):
    """A ``CoreRun`` plus Lava's wall time per sample and Lava step (build and compile included)."""
    seconds_per_image_step: float = 0.0


def run_lava(graph: CoreGraph, input_spikes: np.ndarray, record_spikes: bool = True,
             progress: bool = True) -> LavaRun:
    """Run each sample of ``input_spikes`` (T, N, C, H, W) in {-1, 0, 1} through Lava's fixed_pt
    models, on one network (``LavaRunner``). Spikes are aligned to
    ``fixedpoint.run_reference``'s layer-synchronous steps (an empty list unless ``record_spikes``)."""
    input_spikes = np.asarray(input_spikes)
    if input_spikes.ndim != 5 or input_spikes.shape[2:] != graph.input.shape or 0 in input_spikes.shape[:2]:
        raise ValueError(f"input spikes of shape {input_spikes.shape} are not (T >= 1, N >= 1, "
                         f"*{graph.input.shape})")
    if np.any(np.abs(input_spikes) > 1):
        raise ValueError("input spikes must be in {-1, 0, 1}")
    steps, n = input_spikes.shape[:2]
    started = time.perf_counter()
    with LavaRunner(graph, steps, record_spikes=record_spikes) as runner:
        spikes = [np.zeros((steps, n, *core.output_shape), dtype=np.uint8) for _, core in runner.spiking]
        output = np.zeros((n, math.prod(graph.cores[-1].output_shape)), dtype=np.int64)
        for j in tqdm(range(n), desc="lava", unit="sample", disable=not progress):
            recorded, output[j] = runner.run(input_spikes[:, j])
            for record, got in zip(spikes, recorded):
                record[:, j] = got
    seconds = time.perf_counter() - started
    return LavaRun(spikes, output, seconds_per_image_step=seconds / (n * runner.lava_steps))


def run_graph(graph: CoreGraph, input_spikes: np.ndarray) -> LavaRun:
    """The Lava backend: Lava's own Dense/Conv processes and the soft-reset LIF, fixed_pt."""
    return run_lava(graph, input_spikes, progress=False)
