"""Bias calibration of a low-latency SNN at its T (Li et al., ICML 2021, "A free lunch from
ANN": the light pipeline's bias correction).

A QCFS conversion (``trainer.qcfs``) is exact in expectation only when a layer's inputs
are spread evenly over the quantization steps. With few steps, the SNN's rate x threshold
of a layer departs from the ANN's activation by a mean per channel (docs/method.md).
Layer by layer, in order, ``calibrate_biases`` runs the SNN on a batch of
training images for T steps and adds to each channel's bias the mean over images and
positions of

    a_k - r_k * lambda_k

with a_k the ANN's activation of neuron layer k and r_k the SNN's spikes per step. The
neurons' input currents are in the ANN's units (QCFS conversion scales each layer's
weights by the lambda that feeds it), so the correction of the activation is that of the
current, where the neuron is not clipped. Each layer is corrected with the layers before
it already corrected; the SNN runs only up to the layer calibrated. The biases are those
of the T they were calibrated at: the converted checkpoint records that T
(``metrics["bias_calibration"]``).
"""
from __future__ import annotations

import torch

from trainer.diagnose import ann_activations
from trainer.layers import Conv, Linear
from trainer.models import ANN, ArchConfig, neuron_layers
from trainer.snn import SNN

CALIBRATION_WINDOW = 8     # steps per window of the layers before the one calibrated (bounds their memory)


@torch.no_grad()
def calibrate_biases(ann: ANN, arch: ArchConfig, state: dict, thresholds: list[float], v_init: list[float],
                     x: torch.Tensor, timesteps: int, encoding: str = "integrate") -> tuple[ArchConfig, dict, list]:
    """(the architecture with a bias on every hidden layer, the state_dict with the calibrated
    biases, the mean |correction| per neuron layer) of the QCFS-converted SNN (``arch``,
    ``state``, ``thresholds``, ``v_init``) of ``ann`` on the normalised images ``x`` at T."""
    target = ann_activations(ann.eval(), x)
    state = {k: v.clone() for k, v in state.items()}
    layers = neuron_layers(arch)
    for i, part in layers:
        if part != "out" or not isinstance(arch.layers[i], (Conv, Linear)):
            raise ValueError(f"{arch.name}: bias calibration takes conv and linear neuron layers "
                             f"(layer {i} is a {arch.layers[i].kind})")
        if f"layers.{i}.bias" not in state:
            arch = arch.with_layer(i, bias=True)
            state[f"layers.{i}.bias"] = torch.zeros(state[f"layers.{i}.weight"].shape[0])
    model = ANN(arch)
    model.load_state_dict(state)
    snn = SNN(model, thresholds, v_init=v_init, encoding=encoding).eval()
    corrections = []
    for k, (i, _) in enumerate(layers):
        currents = torch.cat(list(snn.input_currents(x, timesteps, k, window=CALIBRATION_WINDOW)))
        _, states, lut = snn.begin(timesteps, None, x.device)      # layer k alone, from its initial potential
        rate = snn.fire(k, currents, states, 0, lut).sum(0) / timesteps
        dims = [0, 2, 3] if rate.dim() == 4 else [0]
        shift = (target[k] - rate * thresholds[k]).mean(dims)
        model.layers[i].bias += shift
        corrections.append(float(shift.abs().mean()))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return arch, state, corrections
