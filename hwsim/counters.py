"""What hwsim counts: per-core event counts and the result of one simulation."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import torch


class SimError(ValueError):
    """Inputs that do not fit the graph, or a device that is not there."""


class BlockOutput(NamedTuple):
    """One core over one block of steps, on any of the paths (``hwsim.paths``)."""
    spikes: torch.Tensor             # (steps*B, *out_shape) in the storage order below
    spikes_per_sample: torch.Tensor | None   # (B,) the block's spikes per sample; None for the output core
    channels_last: bool              # the spikes' and the voltages' storage order (a conv's (H, W, C))
    active: int | torch.Tensor       # neuron updates with a non-zero current
    max_abs: int | torch.Tensor      # the largest |current|


@dataclass
class ChunkCounts:
    """One chunk of samples over all steps (``hwsim.kernel.run_chunk``), per core where
    per-core: spikes per sample (cores, B), synaptic events, active neuron updates and the
    largest |current| (cores,); the input's spikes per sample (B,); the output core's
    voltages (B, classes); the spike trains of the spiking cores when recorded."""
    spikes: np.ndarray
    synaptic_events: np.ndarray
    active: np.ndarray
    max_abs: np.ndarray
    input_spikes: np.ndarray
    output: np.ndarray
    trains: list[np.ndarray] | None
    readouts: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # t: (output, spikes)


class Readout:
    """What the output voltages say: ``predictions`` and ``accuracy`` (``output`` (samples,
    classes), ``samples``)."""
    output: np.ndarray
    samples: int

    @property
    def predictions(self) -> np.ndarray:
        """argmax of the output voltage (ties: the lowest class index)."""
        return np.argmax(self.output, axis=1) if self.output.size else np.zeros(0, dtype=np.int64)

    def accuracy(self, labels) -> float:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != self.samples:
            raise SimError(f"{len(labels)} labels for {self.samples} samples")
        return float(np.mean(self.predictions == labels)) if self.samples else 0.0


@dataclass
class StepReadout(Readout):
    """The output voltages and spike counts after the first ``timesteps`` steps of a longer
    simulation, read out on the way (``simulate(readouts=...)``). They are what a simulation
    of ``timesteps`` steps gives: the input trains of T steps are the first T steps of longer
    ones (``records.encoding``), the graph is the same, and step t depends on steps up to t
    only. So an accuracy-vs-T sweep costs one simulation of its largest T."""
    timesteps: int
    samples: int
    output: np.ndarray                      # (samples, classes) int64
    spikes_per_sample: np.ndarray           # (samples,) int64: every core's spikes, the input's excluded

    @property
    def spikes(self) -> int:
        return int(self.spikes_per_sample.sum())


@dataclass
class LayerCounts:
    """Event counts of one core over all samples and steps.

    ``synaptic_events`` are the events *arriving* at this core: the previous layer's
    (for the first core: the input's) spikes times their fan-out into this core.
    ``spikes`` are the spikes this core's neurons emit (0 for the output core).
    """
    name: str
    op: str
    neurons: int
    spiking: bool
    vth: int
    float_threshold: float
    spikes: int
    synaptic_events: int
    neuron_updates: int
    active_neuron_updates: int
    max_abs_input: int
    spikes_per_sample: np.ndarray           # (samples,) int64

    @property
    def avg_spikes_per_neuron(self) -> float:
        """The paper's Fig. 3: spikes of the layer over T steps / neurons, averaged over samples."""
        n = len(self.spikes_per_sample)
        return float(self.spikes) / (self.neurons * n) if n and self.neurons else 0.0


@dataclass
class SimResult(Readout):
    timesteps: int
    samples: int
    layers: list[LayerCounts]
    input_neurons: int
    input_spikes: int                       # non-zero input spikes (signed ones count once)
    input_spikes_per_sample: np.ndarray
    output: np.ndarray                      # (samples, classes) int64: output voltage after T steps
    spike_trains: list[np.ndarray] | None = None   # per spiking core (T, samples, *shape) uint8
    device: str = "cpu"
    seconds: float = 0.0
    plan: list[dict] = field(default_factory=list)
    readouts: dict[int, StepReadout] = field(default_factory=dict)   # T < timesteps: that T's readout

    @property
    def spikes(self) -> int:
        """All spikes of the network's neurons (input spikes excluded: they are the same
        for every network fed the same inputs)."""
        return int(sum(l.spikes for l in self.layers))

    @property
    def synaptic_events(self) -> int:
        return int(sum(l.synaptic_events for l in self.layers))

    @property
    def image_steps(self) -> int:
        return self.samples * self.timesteps

    @classmethod
    def merged(cls, parts: list["SimResult"]) -> "SimResult":
        """The result of simulating the parts' samples one after the other (``hwsim.shard``)."""
        first = parts[0]
        if any(p.timesteps != first.timesteps or len(p.layers) != len(first.layers) for p in parts):
            raise SimError("cannot merge simulations of different graphs or time steps")
        cat = lambda arrays: np.concatenate(arrays, axis=0)  # noqa: E731
        layers = []
        for i, layer in enumerate(first.layers):
            own = [p.layers[i] for p in parts]
            layers.append(replace(
                layer, spikes=sum(l.spikes for l in own), synaptic_events=sum(l.synaptic_events for l in own),
                neuron_updates=sum(l.neuron_updates for l in own),
                active_neuron_updates=sum(l.active_neuron_updates for l in own),
                max_abs_input=max(l.max_abs_input for l in own),
                spikes_per_sample=cat([l.spikes_per_sample for l in own])))
        trains = None
        if all(p.spike_trains is not None for p in parts):
            trains = [np.concatenate(t, axis=1) for t in zip(*(p.spike_trains for p in parts))]
        if any(p.readouts.keys() != first.readouts.keys() for p in parts):
            raise SimError("cannot merge simulations read out at different steps")
        readouts = {t: StepReadout(t, sum(p.samples for p in parts), cat([p.readouts[t].output for p in parts]),
                                   cat([p.readouts[t].spikes_per_sample for p in parts])) for t in first.readouts}
        return replace(first, samples=sum(p.samples for p in parts), layers=layers, readouts=readouts,
                       input_spikes=sum(p.input_spikes for p in parts),
                       input_spikes_per_sample=cat([p.input_spikes_per_sample for p in parts]),
                       output=cat([p.output for p in parts]), spike_trains=trains,
                       seconds=max(p.seconds for p in parts))
