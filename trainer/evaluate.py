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


# Under a deadline the first images are timed before a whole batch is committed: one batch
# of VGG5 at T = 2,500 took 547 s, past its stage's share, on 2 CPU cores.
PROBE_IMAGES = 8


def images_that_fit(batch_left: int, seconds_left: float, per_image: float | None, any_counted: bool) -> int:
    """How many of a batch's remaining images to run before a deadline: a probe of
    PROBE_IMAGES until one image has been timed, then those its pace fits (0: stop), at
    least one while none has counted (an evaluation reports on some images)."""
    if per_image is None:
        fits = PROBE_IMAGES if seconds_left > 0 else 0
    else:
        fits = int(max(seconds_left, 0.0) / max(per_image, 1e-9))
    return min(batch_left, max(fits, 0 if any_counted else 1))


@torch.no_grad()
def evaluate_snn(snn: SNN, bundle: DatasetBundle, timesteps: int, *, batch_size: int = 128,
                 samples: int | None = None, window: int | None = 50, seed: int = 0, device="cpu",
                 progress: bool = False, deadline: float | None = None) -> dict:
    """Accuracy at T and average spikes per neuron per layer (Fig. 3's definition), on the test split.
    Under ``deadline`` (time.monotonic()) each batch runs in parts sized by the pace so far
    (``images_that_fit``; its Poisson draws then differ from an evaluation without one), and
    it stops where the next image would not fit; ``samples`` says how many counted,
    ``seconds`` how long it took."""
    t0 = time.monotonic()
    snn.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = total = 0
    per_image = None
    spikes = np.zeros(len(snn.neurons))
    neurons = [0] * len(snn.neurons)
    n_batches = num_batches(bundle, "test", batch_size)
    if samples is not None:                      # the bar's total (and ETA) for the images asked for
        n_batches = min(n_batches, math.ceil(samples / batch_size))
    bar = progress_bar(first_samples(batches(bundle, "test", batch_size, shuffle=False), samples),
                       total=n_batches, enabled=progress, desc=f"SNN eval T={timesteps}", unit="batch", leave=False)
    for x, y in bar:
        start = 0
        while start < len(y):
            n = len(y) - start if deadline is None else images_that_fit(
                len(y) - start, deadline - time.monotonic(), per_image, total > 0)
            if n == 0:
                break
            t = time.monotonic()
            logits = snn(x[start:start + n].to(device), timesteps, window=window, generator=generator)
            per_image = (time.monotonic() - t) / n
            correct += int((logits.argmax(1) == y[start:start + n].to(logits.device)).sum())
            total += n
            start += n
            spikes += np.asarray(snn.spike_counts)
            neurons = snn.neuron_counts
        if start < len(y):
            break
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
