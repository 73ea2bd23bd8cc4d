"""ANN -> SNN conversion by threshold balancing (Algorithm 1).

Layer by layer, in order, simulate the SNN with Poisson inputs for T steps using the
thresholds already found, and set this layer's threshold to a statistic of the input
current it receives over several batches, neurons and steps: the maximum (the paper's
default) or a percentile (averaged over batches and windows, a common robust choice).
As in the paper's code the search runs with the raw statistics and the scaling factor
multiplies all thresholds at the end. In residual nets only the layers outside residual
blocks are balanced; neurons inside blocks keep threshold 1 (Section 4).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm

from trainer.lif import Surrogate
from trainer.models import ANN, neuron_layers
from trainer.snn import SNN

STATISTICS = ("max", "percentile")


def current_statistic(current: torch.Tensor, statistic: str, percentile: float) -> float:
    if statistic == "max":
        return float(current.max())
    flat = current.flatten()
    k = min(flat.numel(), max(1, math.ceil(percentile / 100.0 * flat.numel())))
    return float(torch.kthvalue(flat.cpu(), k).values)


def balance_thresholds(ann: ANN, batches: Callable[[], Iterable[torch.Tensor]], timesteps: int, *,
                       statistic: str = "max", percentile: float = 99.9, scaling_factor: float = 0.7,
                       leak: float = 1.0, window: int | None = None, seed: int = 0,
                       progress: bool = True) -> list[float]:
    """Thresholds for every neuron layer; ``batches()`` yields normalised input batches."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    if not 0 < scaling_factor:
        raise ValueError("scaling factor must be positive")
    layers = neuron_layers(ann.cfg)
    balanced = [k for k, (i, _) in enumerate(layers) if ann.cfg.layers[i]["kind"] != "resblock"]
    thresholds = [1.0] * len(layers)
    ann.eval()
    bar = tqdm(balanced, desc="threshold balancing", unit="layer", disable=not progress)
    for k in bar:
        snn = SNN(ann, thresholds, leak=leak, surrogate=Surrogate())
        generator = None
        values = []
        for x in batches():
            if generator is None:        # on the inputs' device (a CPU generator cannot draw on a GPU)
                generator = torch.Generator(device=x.device).manual_seed(seed)
            for current in snn.input_currents(x, timesteps, k, window=window, generator=generator):
                values.append(current_statistic(current, statistic, percentile))
        if not values:
            raise ValueError("threshold balancing got no batches")
        found = max(values) if statistic == "max" else sum(values) / len(values)
        if not found > 0:
            raise ValueError(f"neuron layer {k} receives no positive input current; its threshold "
                             "cannot be balanced (is the network silent?)")
        thresholds[k] = found
        bar.set_postfix(layer=k, threshold=f"{found:.3g}")
    return [v * scaling_factor if k in balanced else v for k, v in enumerate(thresholds)]
