"""What hwsim counts: per-core event counts and the result of one simulation."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class SimError(ValueError):
    """Inputs that do not fit the graph, or a device that is not there."""


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
class SimResult:
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

    @property
    def predictions(self) -> np.ndarray:
        """argmax of the output voltage (ties: the lowest class index)."""
        return np.argmax(self.output, axis=1) if self.output.size else np.zeros(0, dtype=np.int64)

    def accuracy(self, labels) -> float:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != self.samples:
            raise SimError(f"{len(labels)} labels for {self.samples} samples")
        return float(np.mean(self.predictions == labels)) if self.samples else 0.0

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
