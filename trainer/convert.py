"""ANN -> SNN conversion by threshold balancing (Algorithm 1).

Layer by layer, in order, simulate the SNN with Poisson inputs for T steps using the
thresholds already found, and set this layer's threshold to a statistic of the input
current it receives over several batches, neurons and steps: the maximum (the paper's
default) or a percentile (averaged over batches and windows, a common robust choice).
The search runs with the raw statistics and the scaling factor enters at the end
(``scale_thresholds``); it adjusts a network for the reduced T only (the paper's Table 1,
column 4), and at the large T of the conversion column the unscaled thresholds are the
balanced network (``trainer.chain.convert`` records both). Two ways (``SCALINGS``):
"compound", the paper's code, multiplies every balanced threshold by the factor, so the
rate of layer l grows by about (1 / factor)**l: it fills the few steps of a shallow
network but saturates the deep layers of a deep one; "uniform" multiplies the first
balanced threshold only, so every layer's rate grows by about 1 / factor - the activation
a rate of 1 stands for (the thresholds' product up to the layer) shrinks by the factor in
every layer, as percentile normalisation scaled layer by layer would. In residual nets only the layers outside residual
blocks are balanced; neurons inside blocks keep threshold 1 (Section 4).

``balance_thresholds`` keeps every balanced layer's output spikes (as floats while they fit
in half of ``keep_bytes``, then one byte per neuron-step) and its currents (while they fit
in ``keep_bytes``), so each synapse runs about once: the whole balancing costs about one
pass over T x images.
``balance_thresholds_by_replay`` is Algorithm 1 as written - it replays the network from
the input for every layer - and the reference the tests hold the fast path to.

Biases (a folded batch norm, an imported module's own: ``trainer.torch_import``) change
units with the thresholds: neuron layer m's rate stands for its ANN activation divided by
the product of the thresholds up to m, so a bias summed into neuron layer m's current is
the ANN's divided by the product of the thresholds of the neuron layers before m
(``rescale_biases``). Balancing sets each bias so before it measures the currents it
feeds; the converted checkpoint holds its biases in the units of its own (scaled)
thresholds.

A QCFS ANN (``trainer.qcfs``) needs no balancing: ``qcfs_snn`` takes its trained thresholds.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace

import torch

from records.encoding import poisson_spikes
from records.progress import progress as progress_bar
from trainer.layers import Conv, Linear, ResBlock
from trainer.lif import Surrogate
from trainer.models import ANN, ArchConfig, ArchError, neuron_layers
from trainer.snn import SNN

STATISTICS = ("max", "percentile")
SCALINGS = ("compound", "uniform")
CPU_KEEP_BYTES = 2 * 2 ** 30   # currents kept between the statistic and the firing pass (on CUDA: 1/4 of free)


def current_statistic(current: torch.Tensor, statistic: str, percentile: float) -> float:
    if statistic == "max":
        return float(current.max())
    flat = current.flatten()
    k = min(flat.numel(), max(1, math.ceil(percentile / 100.0 * flat.numel())))
    return float(torch.kthvalue(flat.cpu(), k).values)


def _check_arguments(statistic: str, scaling_factor: float, scaling: str) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}")
    if not 0 < scaling_factor:
        raise ValueError("scaling factor must be positive")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")


def bias_feeds(cfg: ArchConfig) -> dict[str, int]:
    """Each bias's state_dict key -> the neuron layer its current drives (the classifier: the
    number of neuron layers). Keys of layers without a bias are listed too."""
    feeds, k = {}, 0
    for i, layer in enumerate(cfg.layers):
        if isinstance(layer, (Conv, Linear)):
            feeds[f"layers.{i}.bias"] = k
            k += 1
        elif isinstance(layer, ResBlock):
            feeds[f"layers.{i}.conv1.bias"] = k
            feeds[f"layers.{i}.conv2.bias"] = feeds[f"layers.{i}.shortcut.bias"] = k + 1
            k += 2
    return feeds


def rescale_biases(cfg: ArchConfig, state: dict, old: list[float] | None, new: list[float] | None) -> dict:
    """``state`` with every bias moved from the units of thresholds ``old`` to those of ``new``
    (None: the ANN's own units, every product 1): a bias driving neuron layer m is multiplied
    by prod(old[:m]) / prod(new[:m])."""
    out = dict(state)
    for key, m in bias_feeds(cfg).items():
        if key in state:
            factor = math.prod(old[:m]) if old is not None else 1.0
            out[key] = state[key] * (factor / (math.prod(new[:m]) if new is not None else 1.0))
    return out


def _ann_biases(ann: ANN) -> dict[str, torch.Tensor]:
    """A copy of the ANN's biases, in its own units (what ``_set_biases`` moves)."""
    keys = bias_feeds(ann.cfg)
    return {key: p.detach().clone() for key, p in ann.named_parameters() if key in keys}


@torch.no_grad()
def _set_biases(ann: ANN, ann_biases: dict[str, torch.Tensor], thresholds: list[float]) -> None:
    """The ANN's biases (``ann_biases``, in its own units) into its modules, in the units of ``thresholds``."""
    params = dict(ann.named_parameters())
    for key, value in rescale_biases(ann.cfg, ann_biases, None, thresholds).items():
        params[key].copy_(value)


def _balanced(ann: ANN) -> list[int]:
    return [k for k, (i, _) in enumerate(neuron_layers(ann.cfg)) if not isinstance(ann.cfg.layers[i], ResBlock)]


def _threshold(k: int, values: list[float], statistic: str, timesteps: int, images: int, upstream: str) -> float:
    if not values:
        raise ValueError("threshold balancing got no batches")
    found = max(values) if statistic == "max" else sum(values) / len(values)
    if not found > 0:
        raise ValueError(f"neuron layer {k} receives no positive input current in {timesteps} steps over "
                         f"{images} images ({upstream}); its threshold cannot be balanced: balance at a larger T "
                         "(--timesteps) or check that the ANN learned")
    return found


def balance_thresholds(ann: ANN, batches: Callable[[], Iterable[torch.Tensor]], timesteps: int, *,
                       statistic: str = "max", percentile: float = 99.9, scaling_factor: float = 0.7,
                       scaling: str = "compound", leak: float = 1.0, window: int | None = None, seed: int = 0,
                       progress: bool = True, keep_bytes: int | None = None) -> list[float]:
    """Thresholds for every neuron layer; ``batches()`` yields normalised input batches."""
    _check_arguments(statistic, scaling_factor, scaling)
    layers, balanced = neuron_layers(ann.cfg), _balanced(ann)
    ann.eval()
    snn = SNN(ann, [1.0] * len(layers), leak=leak, surrogate=Surrogate())
    inputs = list(batches())
    if not inputs:
        raise ValueError("threshold balancing got no batches")
    if keep_bytes is None:
        on_cuda = inputs[0].device.type == "cuda"
        keep_bytes = torch.cuda.mem_get_info(inputs[0].device)[0] // 4 if on_cuda else CPU_KEEP_BYTES
    window, _, lut = snn.begin(timesteps, window, inputs[0].device)
    steps = [(t0, min(window, timesteps - t0)) for t0 in range(0, timesteps, window)]
    generator = torch.Generator(device=inputs[0].device).manual_seed(seed)  # on the inputs' device
    # trains[b][w]: the spikes entering at layer index `entry`, batch b, window w (int8: inputs are signed)
    trains = [[poisson_spikes(x, n, generator).to(torch.int8) for _, n in steps] for x in inputs]
    bar = progress_bar(balanced, desc="threshold balancing", unit="layer", enabled=progress)
    ann_biases = _ann_biases(ann)
    try:
        thresholds = _balance_layers(snn, bar, inputs, trains, steps, lut, ann_biases, statistic, percentile,
                                     timesteps, keep_bytes)
    finally:
        _set_biases(ann, ann_biases, [1.0] * len(layers))       # the ANN's modules as they came
    return scale_thresholds(ann, thresholds, scaling_factor, scaling)


def _balance_layers(snn: SNN, bar, inputs, trains, steps, lut, ann_biases, statistic, percentile, timesteps,
                    keep_bytes) -> list[float]:
    """``balance_thresholds``'s layer loop: the unscaled thresholds."""
    layers, images = snn.neurons, sum(len(x) for x in inputs)
    entry, upstream = 0, "the input"
    for k in bar:
        _set_biases(snn.ann, ann_biases, snn.thresholds)

        def currents(b, states):
            return [snn.layer_currents(train.to(inputs[b].dtype), k, entry, states, t0, lut)
                    for (t0, _), train in zip(steps, trains[b])]

        values, kept, kept_bytes = [], [], 0
        for b in range(len(inputs)):
            found = currents(b, [None] * len(layers))
            values += [current_statistic(c, statistic, percentile) for c in found]
            size = sum(c.numel() * c.element_size() for c in found)
            keep = kept_bytes + size <= keep_bytes
            kept.append(found if keep else None)
            kept_bytes += size if keep else 0
        snn.thresholds[k] = _threshold(k, values, statistic, timesteps, images, upstream)
        fired, float_bytes = [], 0
        for b in range(len(inputs)):
            states = [None] * len(layers)       # neuron layer k and, when recomputing, the blocks before it
            found = kept[b] if kept[b] is not None else currents(b, states)
            spikes = [snn.fire(k, c, states, t0, lut) for (t0, _), c in zip(steps, found)]
            size = sum(s.numel() * s.element_size() for s in spikes)
            as_float = float_bytes + size <= keep_bytes // 2        # else one byte per neuron-step
            fired.append(spikes if as_float else [s.to(torch.int8) for s in spikes])
            float_bytes += size if as_float else 0
            kept[b] = None
        trains, entry = fired, layers[k][0] + 1
        upstream = f"neuron layer {k} fired {int(snn.spike_counts[k])} spikes"
        bar.set_postfix(layer=k, threshold=f"{snn.thresholds[k]:.3g}")
    return list(snn.thresholds)


def scale_thresholds(ann: ANN, thresholds: list[float], scaling_factor: float, scaling: str = "compound"
                     ) -> list[float]:
    """The thresholds for the reduced T: "compound", every balanced layer's times
    ``scaling_factor``; "uniform", the first balanced layer's only (residual blocks' stay at 1)."""
    _check_arguments("max", scaling_factor, scaling)
    balanced = _balanced(ann)
    scaled = balanced if scaling == "compound" else balanced[:1]
    return [v * scaling_factor if k in scaled else v for k, v in enumerate(thresholds)]


def balance_thresholds_by_replay(ann: ANN, batches: Callable[[], Iterable[torch.Tensor]], timesteps: int, *,
                                 statistic: str = "max", percentile: float = 99.9, scaling_factor: float = 0.7,
                                 scaling: str = "compound", leak: float = 1.0, window: int | None = None,
                                 seed: int = 0) -> list[float]:
    """Algorithm 1 as written: for every layer, replay the network from the same Poisson input."""
    _check_arguments(statistic, scaling_factor, scaling)
    layers, balanced = neuron_layers(ann.cfg), _balanced(ann)
    thresholds = [1.0] * len(layers)
    ann.eval()
    ann_biases = _ann_biases(ann)
    for k in balanced:
        _set_biases(ann, ann_biases, thresholds)
        snn = SNN(ann, thresholds, leak=leak, surrogate=Surrogate())
        generator, values, images = None, [], 0
        for x in batches():
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(seed)
            images += len(x)
            for current in snn.input_currents(x, timesteps, k, window=window, generator=generator):
                values.append(current_statistic(current, statistic, percentile))
        thresholds[k] = _threshold(k, values, statistic, timesteps, images, "replayed")
    _set_biases(ann, ann_biases, [1.0] * len(layers))
    return scale_thresholds(ann, thresholds, scaling_factor, scaling)


@torch.no_grad()
def qcfs_snn(cfg: ArchConfig, state: dict) -> tuple[ArchConfig, dict, list[float]]:
    """QCFS conversion (``trainer.qcfs``): (the ReLU architecture, the state_dict with each layer's weights times the lambda
    feeding it, the thresholds lambda per neuron layer) of a QCFS ANN without batch norms
    (``trainer.norms.fold_ann_norms`` first)."""
    if cfg.quant_levels is None or cfg.normed:
        raise ArchError(f"{cfg.name}: qcfs_snn needs a QCFS ANN with its batch norms folded")
    lam = [float(v) for v in state["act_thresholds"]]
    if not all(math.isfinite(v) and v > 0 for v in lam):
        raise ArchError(f"{cfg.name}: QCFS thresholds {lam} must be positive to become an SNN's; retrain the ANN")
    plain = replace(cfg, quant_levels=None, input_levels=None)
    scaled = {k: v.detach().clone() for k, v in state.items() if k != "act_thresholds"}
    feed, k = 1.0, 0
    for i, layer in enumerate(cfg.layers):          # no residual blocks: ArchConfig refuses them with QCFS
        if isinstance(layer, (Conv, Linear)):
            scaled[f"layers.{i}.weight"] *= feed
            if i != len(cfg.layers) - 1:
                feed, k = lam[k], k + 1
    return plain, scaled, lam
