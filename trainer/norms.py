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

from trainer.models import ArchConfig, ArchError, layer_shapes, neuron_layers

EPS = 1e-5          # the batch norms' epsilon, which the fold must use as well


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
            norms.append(nn.BatchNorm2d(channels, eps=EPS) if kind == "conv" else nn.BatchNorm1d(channels, eps=EPS))
        self.norms = nn.ModuleList(norms)

    def forward(self, k: int, current: torch.Tensor) -> torch.Tensor:
        """Neuron layer k's currents (steps, B, ...), normalised over steps x B (and positions)."""
        return self.norms[k](current.flatten(0, 1)).unflatten(0, current.shape[:2])


@torch.no_grad()
def fold_norms(cfg: ArchConfig, state: dict) -> tuple[ArchConfig, dict]:
    """(the architecture with ``bias: true`` on every normalised layer, its folded state_dict)
    from ``state``: the state_dict of a ``ModuleDict(ann=ANN(cfg), norms=CurrentNorms(cfg))``
    (no module is touched, so a training loop may fold any snapshot it keeps)."""
    cfg = ArchConfig.from_dict(cfg.to_dict())
    folded = {k[len("ann."):]: v.detach().clone() for k, v in state.items() if k.startswith("ann.")}
    for k, (i, _) in enumerate(neuron_layers(cfg)):
        norm = {name: state[f"norms.norms.{k}.{name}"].double() for name in ("weight", "bias", "running_mean",
                                                                             "running_var")}
        gain = norm["weight"] / torch.sqrt(norm["running_var"] + EPS)
        w = folded[f"layers.{i}.weight"]
        old_bias = folded.get(f"layers.{i}.bias", torch.zeros(len(gain), dtype=w.dtype)).double()
        folded[f"layers.{i}.weight"] = (w.double() * gain.view((-1,) + (1,) * (w.dim() - 1))).to(w.dtype)
        folded[f"layers.{i}.bias"] = (gain * (old_bias - norm["running_mean"]) + norm["bias"]).to(w.dtype)
        cfg.layers[i]["bias"] = True
    return cfg, folded
