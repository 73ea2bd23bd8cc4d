"""Evaluation of a stage's network on a data split: the ANN's accuracy, the SNN's accuracy
and spikes per neuron (Fig. 3's definition), and the ANN's silence check."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from records.progress import progress as progress_bar
from trainer.data import DatasetBundle, batches, num_batches
from trainer.models import ANN
from trainer.snn import SNN


def first_samples(pairs, samples: int | None):
    """The (x, y) batches cut to their first ``samples`` images (None: all): the test split's
    first N, which the ANN's and the SNN's evaluations of N samples share."""
    seen = 0
    for x, y in pairs:
        if samples is not None:
            if seen >= samples:
                return
            x, y = x[:samples - seen], y[:samples - seen]
        seen += len(y)
        yield x, y


@torch.no_grad()
def evaluate_ann(ann: ANN, bundle: DatasetBundle, *, batch_size: int = 256, device="cpu",
                 samples: int | None = None) -> float:
    """Accuracy on the test split, or on its first ``samples`` images: those an SNN evaluation
    of as many samples takes (``evaluate_snn``), so that the two compare on the same images."""
    ann.eval()
    correct = total = 0
    for x, y in first_samples(batches(bundle, "test", batch_size, shuffle=False), samples):
        correct += int((ann(x.to(device)).argmax(1) == y.to(device)).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def evaluate_snn(snn: SNN, bundle: DatasetBundle, timesteps: int, *, batch_size: int = 128,
                 samples: int | None = None, window: int | None = 50, seed: int = 0, device="cpu",
                 progress: bool = False, deadline: float | None = None) -> dict:
    """Accuracy at T and average spikes per neuron per layer (Fig. 3's definition), on the test split.
    Past ``deadline`` (time.monotonic()) it stops after the batch in hand; ``samples`` says how many counted,
    ``seconds`` how long it took."""
    t0 = time.monotonic()
    snn.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = total = 0
    spikes = np.zeros(len(snn.neurons))
    neurons = [0] * len(snn.neurons)
    n_batches = num_batches(bundle, "test", batch_size)
    if samples is not None:                      # the bar's total (and ETA) for the images asked for
        n_batches = min(n_batches, math.ceil(samples / batch_size))
    bar = progress_bar(first_samples(batches(bundle, "test", batch_size, shuffle=False), samples),
                       total=n_batches, enabled=progress, desc=f"SNN eval T={timesteps}", unit="batch", leave=False)
    for x, y in bar:
        if deadline is not None and total and time.monotonic() > deadline:
            break
        logits = snn(x.to(device), timesteps, window=window, generator=generator)
        correct += int((logits.argmax(1) == y.to(logits.device)).sum())
        total += len(y)
        spikes += np.asarray(snn.spike_counts)
        neurons = snn.neuron_counts
    return {"accuracy": 100.0 * correct / max(total, 1), "samples": total, "timesteps": timesteps,
            "spikes_per_neuron": [float(s / (n * total)) if n else 0.0 for s, n in zip(spikes, neurons)],
            "total_spikes_per_sample": float(spikes.sum() / max(total, 1)), "seconds": time.monotonic() - t0}


SILENT_LOGITS = 0.01    # class scores this close: softmax uniform, loss ln K to 1e-4


@torch.no_grad()
def is_silent(ann: ANN, bundle: DatasetBundle, device="cpu", samples: int = 256) -> bool:
    """True when, for every one of the test split's first images, the ANN scores all classes
    within SILENT_LOGITS of each other: it says nothing about its input. (A freshly
    initialised net scores them O(1) apart; on CIFAR-10, VGG5 at lr 0.05 got here in its
    first epoch, its third conv layer silent.)"""
    ann.eval()
    x, _ = next(batches(bundle, "test", min(samples, len(bundle.test_y)), shuffle=False))
    out = ann(x.to(device)).float()
    return bool((out - out.mean(1, keepdim=True)).abs().max() < SILENT_LOGITS)


def firing_rates(snn: SNN, batch_size: int, timesteps: int) -> list[float]:
    """Spikes per neuron per step of each neuron layer in the last run."""
    return [s / (n * batch_size * timesteps) if n else 0.0 for s, n in zip(snn.spike_counts, snn.neuron_counts)]
