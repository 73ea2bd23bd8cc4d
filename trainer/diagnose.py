"""Where a converted SNN departs from its ANN, layer by layer.

With weights copied and thresholds balanced, neuron layer l of the SNN fires at a rate
r_l ~ a_l / (theta_1 * ... * theta_l), where a_l is the ANN's activation: each layer's
spikes are worth the product of the thresholds up to it. ``layer_agreement`` runs both
networks on the same images and compares r_l * prod(theta) with a_l per layer: the
relative error, the share of neurons the SNN saturates (firing at nearly every step),
and the share the thresholds clip (a_l / prod(theta) > 1, more than one spike per step
would be needed), then the output's logits and the share of images on which the two
networks agree. A layer whose clipped share grows with depth is what a scaling factor
below 1 does at large T (trainer.convert); too few steps show as relative error with
nothing clipped.
"""
from __future__ import annotations

import math

import torch

from trainer.models import ANN, neuron_layers
from trainer.snn import SNN

SATURATED_RATE = 0.95       # a neuron firing at this share of steps or more counts as saturated


class RecordingSNN(SNN):
    """The SNN, summing every neuron's spikes over the steps of a run."""

    def begin(self, timesteps, window, device):
        self.counts = [None] * len(self.neurons)
        return super().begin(timesteps, window, device)

    def _neuron(self, k, current, states, t0, lut, mask=None):
        spikes = super()._neuron(k, current, states, t0, lut, mask)
        counts = spikes.detach().float().sum(0)
        self.counts[k] = counts if self.counts[k] is None else self.counts[k] + counts
        return spikes


def ann_activations(ann: ANN, x: torch.Tensor) -> list[torch.Tensor]:
    """The ANN's output (after its activation) at every neuron layer of the SNN, in order."""
    found: list[torch.Tensor] = []
    ann(x, record=found)
    return found


@torch.no_grad()
def layer_agreement(ann: ANN, thresholds: list[float], x: torch.Tensor, timesteps: int, *, leak: float = 1.0,
                    seed: int = 0, snn_model: ANN | None = None) -> list[dict]:
    """One row per neuron layer: threshold, mean rate, saturated and clipped shares, and the
    relative error of rate x prod(theta) against the ANN's activation on the images ``x``;
    then one for the output: the SNN's logits x prod(theta) against the ANN's, and the share
    of images on which both predict the same class (``ann_agreement``). ``snn_model``: the
    SNN's weights where they differ from the ANN's (biases in the thresholds' units:
    ``trainer.convert.rescale_biases``); default ``ann``."""
    ann.eval()
    logits = ann(x).float()
    activations = ann_activations(ann, x)
    snn = RecordingSNN(snn_model or ann, thresholds, leak=leak).eval()
    out = snn(x, timesteps, window=min(timesteps, 50), generator=torch.Generator(device=x.device).manual_seed(seed))
    rows, scale = [], 1.0
    for k, ((i, part), a) in enumerate(zip(neuron_layers(ann.cfg), activations)):
        scale *= thresholds[k]
        rate = snn.counts[k] / timesteps
        a = a.float()
        norm = float(a.norm())
        rows.append({"neuron_layer": k, "layer": f"{ann.cfg.layers[i].kind}{i}" + ("" if part == "out" else
                                                                                        f".{part}"),
                     "threshold": thresholds[k], "threshold_product": scale, "mean_rate": float(rate.mean()),
                     "saturated": float((rate >= SATURATED_RATE).float().mean()),
                     "clipped": float((a / scale > 1.0).float().mean()),
                     "relative_error": float((rate * scale - a).norm()) / norm if norm > 0 else math.nan})
    rows.append({"neuron_layer": None, "layer": "output", "threshold_product": scale,
                 "relative_error": float((out.float() * scale - logits).norm() / logits.norm()),
                 "ann_agreement": float((out.argmax(1) == logits.argmax(1)).float().mean())})
    return rows
