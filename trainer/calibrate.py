"""Bias calibration of an SNN at its T (Li et al., ICML 2021, "A free lunch from ANN": the
light pipeline's bias correction).

A conversion is exact only in expectation over many steps: a QCFS conversion
(``trainer.qcfs``) when a layer's inputs are spread evenly over the quantization steps, a
balanced one (``trainer.convert``) when T is long enough for every rate to settle. At few
steps, the SNN's rate x scale of a layer departs from the ANN's activation by a mean per
channel (docs/method.md). Layer by layer, in order, ``calibrate_biases`` runs the SNN on a
batch of training images for T steps and adds to each channel's bias the mean over images
and positions of

    (min(a_k / s_k, 1) - r_k) * theta_k

with a_k the ANN's activation of neuron layer k, s_k the activation a rate of one spike
per step stands for (QCFS: lambda_k; balanced: the product of the thresholds up to k),
r_k the SNN's spikes per step and theta_k the layer's threshold: the rate's error in the
units of the layer's current (QCFS: a_k - r_k * lambda_k). The target is capped at one
spike per step, the most a neuron can fire. Each layer is corrected with the layers before
it already corrected; the SNN runs only up to the layer calibrated, window by window. The
biases are those of the T they were calibrated at: the converted checkpoint records that T
(``metrics["bias_calibration"]``).
"""
from __future__ import annotations

import torch

from trainer.diagnose import ann_activations
from trainer.layers import Conv, Linear
from trainer.models import ANN, ArchConfig, neuron_layers
from trainer.snn import SNN

CALIBRATION_WINDOW = 8     # steps per window (bounds the memory of the currents at large T)


@torch.no_grad()
def calibrate_biases(ann: ANN, arch: ArchConfig, state: dict, thresholds: list[float], v_init: list[float] | None,
                     x: torch.Tensor, timesteps: int, *, scales: list[float], encoding: str = "integrate",
                     seed: int = 0) -> tuple[ArchConfig, dict, list]:
    """(the architecture with a bias on every hidden layer, the state_dict with the calibrated
    biases, the mean |correction| per neuron layer) of the SNN (``arch``, ``state``,
    ``thresholds``, ``v_init``, ``encoding``) converted from ``ann``, on the normalised images
    ``x`` at T; ``scales[k]``: the ANN activation one spike per step of neuron layer k stands for."""
    target = ann_activations(ann.eval(), x)
    state = {k: v.clone() for k, v in state.items()}
    layers = neuron_layers(arch)
    if len(scales) != len(layers):
        raise ValueError(f"{len(scales)} scales for {len(layers)} neuron layers")
    for i, part in layers:
        if part != "out" or not isinstance(arch.layers[i], (Conv, Linear)):
            raise ValueError(f"{arch.name}: bias calibration takes conv and linear neuron layers "
                             f"(layer {i} is a {arch.layers[i].kind})")
        if f"layers.{i}.bias" not in state:
            arch = arch.with_layer(i, bias=True)
            state[f"layers.{i}.bias"] = torch.zeros(state[f"layers.{i}.weight"].shape[0])
    model = ANN(arch).to(x.device)
    model.load_state_dict(state)
    snn = SNN(model, thresholds, v_init=v_init, encoding=encoding).eval()
    corrections = []
    for k, (i, _) in enumerate(layers):
        generator = torch.Generator(device=x.device).manual_seed(seed)     # the same input trains for every layer
        _, states, lut = snn.begin(timesteps, CALIBRATION_WINDOW, x.device)   # layer k, from its initial potential
        count = 0
        windows = snn.input_currents(x, timesteps, k, window=CALIBRATION_WINDOW, generator=generator)
        for t0, currents in zip(range(0, timesteps, CALIBRATION_WINDOW), windows):
            count = count + snn.fire(k, currents, states, t0, lut).sum(0)
        rate = count / timesteps
        dims = [0, 2, 3] if rate.dim() == 4 else [0]
        shift = ((target[k] / scales[k]).clamp(max=1.0) - rate).mean(dims) * thresholds[k]
        model.layers[i].bias += shift
        corrections.append(float(shift.abs().mean()))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return arch, state, corrections
