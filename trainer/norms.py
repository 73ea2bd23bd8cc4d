"""Batch norm on input currents (Ledinauskas et al. 2020) and its fold into weights and biases.

Training (``trainer.methods``, "bncurrent"): each hidden neuron layer normalises its
synaptic current per channel before the neuron, with statistics over the batch, the time
steps of the window and (conv) the positions:
    I'_t = gamma * (I_t - mu) / sigma + beta,      sigma = sqrt(var + eps)
Deployment: with the running statistics that map is affine per channel, so it folds into
the layer it follows,
    W' = W * gamma / sigma,      b' = beta - gamma * mu / sigma,
and the layer's bias becomes each neuron's bias on the core (``export.graph.Core.bias``):
the SNN after the fold computes what the trained one computes in evaluation mode.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.models import ANN, ArchConfig, ArchError, layer_shapes, neuron_layers


class CurrentNorms(nn.Module):
    """One batch norm per hidden neuron layer of ``cfg`` (conv and linear layers)."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        shapes = layer_shapes(cfg)
        norms = []
        for i, _ in neuron_layers(cfg):
            kind = cfg.layers[i]["kind"]
            if kind not in ("conv", "linear"):
                raise ArchError(f"{cfg.name}: batch norm on input currents supports conv and linear layers; "
                                f"layer {i} is a {kind}")
            channels = shapes[i][0]
            norms.append(nn.BatchNorm2d(channels) if kind == "conv" else nn.BatchNorm1d(channels))
        self.norms = nn.ModuleList(norms)

    def forward(self, k: int, current: torch.Tensor) -> torch.Tensor:
        """Neuron layer k's currents (steps, B, ...), normalised over steps x B (and positions)."""
        return self.norms[k](current.flatten(0, 1)).unflatten(0, current.shape[:2])


@torch.no_grad()
def fold_norms(ann: ANN, norms: CurrentNorms) -> tuple[ArchConfig, dict]:
    """(the architecture with ``bias: true`` on every normalised layer, its folded state_dict)."""
    cfg = ArchConfig.from_dict(ann.cfg.to_dict())
    state = {k: v.detach().clone() for k, v in ann.state_dict().items()}
    for (i, _), norm in zip(neuron_layers(cfg), norms.norms):
        sigma = torch.sqrt(norm.running_var.double() + norm.eps)
        gain = norm.weight.double() / sigma
        w = state[f"layers.{i}.weight"]
        shape = (-1,) + (1,) * (w.dim() - 1)
        old_bias = state.get(f"layers.{i}.bias", torch.zeros(len(gain), dtype=w.dtype)).double()
        state[f"layers.{i}.weight"] = (w.double() * gain.view(shape)).to(w.dtype)
        state[f"layers.{i}.bias"] = (gain * (old_bias - norm.running_mean.double()) + norm.bias.double()).to(w.dtype)
        cfg.layers[i]["bias"] = True
    return cfg, state
