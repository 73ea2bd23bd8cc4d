"""Bias calibration of an SNN at its T (Li et al., ICML 2021, "A free lunch from ANN": the
light pipeline's bias correction).

A conversion is exact only in expectation over many steps: a QCFS conversion
(``trainer.qcfs``) when a layer's inputs are spread evenly over the quantization steps, a
balanced one (``trainer.convert``) when T is long enough for every rate to settle. At few
steps, the SNN's rate x scale of a layer departs from the ANN's activation by a mean per
channel (docs/method.md). Layer by layer, in order, ``calibrate_biases`` runs the SNN on a
batch of training images for T steps and adds to the bias feeding each channel the mean
over images and positions of

    (min(a_k / s_k, 1) - r_k) * theta_k

with a_k the ANN's activation of neuron layer k, s_k the activation a rate of one spike
per step stands for (QCFS: lambda_k; balanced: the product of the thresholds up to k),
r_k the SNN's spikes per step and theta_k the layer's threshold: the rate's error in the
units of the layer's current (QCFS: a_k - r_k * lambda_k). The target is capped at one
spike per step, the most a neuron can fire. Each layer is corrected with the layers before
it already corrected. A residual block's two neuron layers take theirs in conv1's bias (the
block's inner neurons) and conv2's (the sum with the shortcut, whose own bias stays), with
s_k the thresholds' product as for any balanced layer (the block's neurons keep threshold 1).
``calibrate_biases`` keeps each layer's output spikes (one byte per neuron-step) once its
bias is corrected and feeds them to the next layer - a block's input spikes until both of
its layers are corrected, since the sum needs them - so each synapse runs about twice
(before and after its correction) instead of once per later layer;
``calibrate_biases_by_replay`` replays the SNN from the input for every layer, the reference
the tests hold it to. The biases are those of the T they were calibrated at: the converted
checkpoint records that T (``metrics["bias_calibration"]``).
"""
from __future__ import annotations

import torch

from trainer.diagnose import ann_activations
from trainer.layers import Conv, Linear, ResBlock
from trainer.models import ANN, ArchConfig, neuron_layers
from trainer.snn import SNN

CALIBRATION_WINDOW = 8     # steps per window (bounds the memory of the currents at large T)


def _prepared(arch: ArchConfig, state: dict, thresholds, v_init, x, encoding, scales):
    """(architecture and state with a zero bias on every weighted hidden layer that has none, its SNN)."""
    state = {k: v.clone() for k, v in state.items()}
    layers = neuron_layers(arch)
    if len(scales) != len(layers):
        raise ValueError(f"{len(scales)} scales for {len(layers)} neuron layers")
    for i in sorted({i for i, _ in layers}):
        layer = arch.layers[i]
        if not isinstance(layer, (Conv, Linear, ResBlock)):
            raise ValueError(f"{arch.name}: bias calibration takes conv, linear and residual neuron layers "
                             f"(layer {i} is a {layer.kind})")
        if not layer.bias:
            arch = arch.with_layer(i, bias=True)
            for name, weight in _weights(state, i, layer).items():
                state[f"{name}.bias"] = torch.zeros(weight.shape[0])
    model = ANN(arch).to(x.device)
    model.load_state_dict(state)
    return arch, SNN(model, thresholds, v_init=v_init, encoding=encoding).eval()


def _weights(state: dict, i: int, layer) -> dict[str, torch.Tensor]:
    """Layer i's weighted modules (state_dict prefix -> weight): one, or a residual block's two or three."""
    if not isinstance(layer, ResBlock):
        return {f"layers.{i}": state[f"layers.{i}.weight"]}
    names = [f"layers.{i}.{part}" for part in ("conv1", "conv2", "shortcut")]
    return {name: state[f"{name}.weight"] for name in names if f"{name}.weight" in state}


def _bias(snn: SNN, i: int, part: str) -> torch.Tensor:
    """The bias that feeds neuron layer (i, part): the layer's own, or a residual block's
    conv1 (its inner neurons) or conv2 (the sum with the shortcut)."""
    module = snn.ann.layers[i]
    if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
        return module.bias
    return module.conv1.bias if part == "conv1" else module.conv2.bias


def _shift(target: torch.Tensor, count: torch.Tensor, timesteps: int, scale: float, threshold: float) -> torch.Tensor:
    """Each channel's bias correction: the mean of (min(a / scale, 1) - rate) x threshold."""
    rate = count / timesteps
    dims = [0, 2, 3] if rate.dim() == 4 else [0]
    return ((target / scale).clamp(max=1.0) - rate).mean(dims) * threshold


def _result(arch: ArchConfig, snn: SNN, corrections: list[float]) -> tuple[ArchConfig, dict, list]:
    return arch, {k: v.detach().cpu().clone() for k, v in snn.ann.state_dict().items()}, corrections


@torch.no_grad()
def calibrate_biases(ann: ANN, arch: ArchConfig, state: dict, thresholds: list[float], v_init: list[float] | None,
                     x: torch.Tensor, timesteps: int, *, scales: list[float], encoding: str = "integrate",
                     seed: int = 0) -> tuple[ArchConfig, dict, list]:
    """(the architecture with a bias on every hidden layer, the state_dict with the calibrated
    biases, the mean |correction| per neuron layer) of the SNN (``arch``, ``state``,
    ``thresholds``, ``v_init``, ``encoding``) converted from ``ann``, on the normalised images
    ``x`` at T; ``scales[k]``: the ANN activation one spike per step of neuron layer k stands for."""
    target = ann_activations(ann.eval(), x)
    arch, snn = _prepared(arch, state, thresholds, v_init, x, encoding, scales)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    windows = [(t0, min(CALIBRATION_WINDOW, timesteps - t0)) for t0 in range(0, timesteps, CALIBRATION_WINDOW)]
    trains = [snn.encode(x, t0, n, generator).to(torch.int8) for t0, n in windows]   # entering at layer index 0
    entry, corrections = 0, []
    for k, (i, part) in enumerate(neuron_layers(arch)):

        def spikes():          # layer k's spikes window by window, from its initial potential
            _, states, lut = snn.begin(timesteps, CALIBRATION_WINDOW, x.device)
            for (t0, _), train in zip(windows, trains):
                yield snn.fire(k, snn.layer_currents(train.to(x.dtype), k, entry, states, t0, lut), states, t0, lut)

        shift = _shift(target[k], sum(s.sum(0) for s in spikes()), timesteps, scales[k], thresholds[k])
        _bias(snn, i, part).add_(shift)
        corrections.append(float(shift.abs().mean()))
        if part == "out":      # a block's inner neurons pass on nothing alone: the sum needs its input too
            trains, entry = [s.to(torch.int8) for s in spikes()], i + 1
    return _result(arch, snn, corrections)


@torch.no_grad()
def calibrate_biases_by_replay(ann: ANN, arch: ArchConfig, state: dict, thresholds: list[float],
                               v_init: list[float] | None, x: torch.Tensor, timesteps: int, *, scales: list[float],
                               encoding: str = "integrate", seed: int = 0) -> tuple[ArchConfig, dict, list]:
    """``calibrate_biases`` as written: for every layer, the SNN replayed from the same input."""
    target = ann_activations(ann.eval(), x)
    arch, snn = _prepared(arch, state, thresholds, v_init, x, encoding, scales)
    corrections = []
    for k, (i, part) in enumerate(neuron_layers(arch)):
        generator = torch.Generator(device=x.device).manual_seed(seed)     # the same input trains for every layer
        _, states, lut = snn.begin(timesteps, CALIBRATION_WINDOW, x.device)   # layer k, from its initial potential
        count = 0
        windows = snn.input_currents(x, timesteps, k, window=CALIBRATION_WINDOW, generator=generator)
        for t0, currents in zip(range(0, timesteps, CALIBRATION_WINDOW), windows):
            count = count + snn.fire(k, currents, states, t0, lut).sum(0)
        shift = _shift(target[k], count, timesteps, scales[k], thresholds[k])
        _bias(snn, i, part).add_(shift)
        corrections.append(float(shift.abs().mean()))
    return _result(arch, snn, corrections)
