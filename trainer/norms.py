"""Batch norms and their fold into weights and neuron biases: on the SNN's input currents
(Ledinauskas et al. 2020) and in the ANN (``ArchConfig.normed``, the low-latency recipe).

Training (``trainer.methods``, "bncurrent"): each hidden neuron layer normalises its
synaptic current per channel before the neuron, with statistics over the batch, the time
steps of the window and (conv) the positions:
    I'_t = gamma * (I_t - mu) / sigma + beta,      sigma = sqrt(var + eps)
Deployment: with the running statistics that map is affine per channel, so it folds into
the layer it follows,
    W' = W * gamma / sigma,      b' = beta - gamma * mu / sigma,
and the layer's bias becomes each neuron's bias on the core (``export.graph.Core.bias``):
the SNN after the fold computes what the trained one computes in evaluation mode.
An ANN's own batch norms (after a conv or linear layer, before its activation) fold the
same way at conversion (``fold_ann_norms``), so no SNN or core graph holds a batch norm.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.layers import Conv, Linear, ResBlock
from trainer.models import NORM_EPS, ArchConfig, ArchError, layer_shapes, neuron_layers

EPS = NORM_EPS       # the batch norms' epsilon, which the fold must use as well


class CurrentNorms(nn.Module):
    """One batch norm per hidden neuron layer of ``cfg`` (conv and linear layers)."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        shapes = layer_shapes(cfg)
        norms = []
        for i, _ in neuron_layers(cfg):
            layer = cfg.layers[i]
            if not isinstance(layer, (Conv, Linear)):
                raise ArchError(f"{cfg.name}: batch norm on input currents supports conv and linear layers; "
                                f"layer {i} is a {layer.kind}")
            channels = shapes[i][0]
            norms.append(nn.BatchNorm2d(channels, eps=EPS) if isinstance(layer, Conv) else
                         nn.BatchNorm1d(channels, eps=EPS))
        self.norms = nn.ModuleList(norms)

    def forward(self, k: int, current: torch.Tensor) -> torch.Tensor:
        """Neuron layer k's currents (steps, B, ...), normalised over steps x B (and positions)."""
        return self.norms[k](current.flatten(0, 1)).unflatten(0, current.shape[:2])


def fold_batch_norm(weight: torch.Tensor, bias: torch.Tensor | None, mean: torch.Tensor, var: torch.Tensor,
                    gamma: torch.Tensor | None, beta: torch.Tensor | None, eps: float = EPS
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') of a layer (``weight``, ``bias``; None: no bias) followed by a batch norm in
    evaluation mode (``gamma``, ``beta`` None: not affine), computed in float64 and returned
    in the weight's dtype: W' = W * gamma / sigma, b' = gamma * (b - mu) / sigma + beta."""
    var = var.double()
    gain = (torch.ones_like(var) if gamma is None else gamma.double()) / torch.sqrt(var + eps)
    old_bias = torch.zeros_like(gain) if bias is None else bias.double()
    shift = torch.zeros_like(gain) if beta is None else beta.double()
    folded = weight.double() * gain.view((-1,) + (1,) * (weight.dim() - 1))
    return folded.to(weight.dtype), (gain * (old_bias - mean.double()) + shift).to(weight.dtype)


def _fold_layer(folded: dict, layer: str, norm: dict) -> None:
    """Fold one batch norm (its weight, bias, running_mean, running_var) into the weighted
    module ``layer`` (a state_dict prefix: "layers.3", "layers.7.conv1") of a state_dict."""
    folded[f"{layer}.weight"], folded[f"{layer}.bias"] = fold_batch_norm(
        folded[f"{layer}.weight"], folded.get(f"{layer}.bias"), norm["running_mean"], norm["running_var"],
        norm["weight"], norm["bias"])


_NORM_FIELDS = ("weight", "bias", "running_mean", "running_var")


@torch.no_grad()
def fold_norms(cfg: ArchConfig, state: dict) -> tuple[ArchConfig, dict]:
    """(the architecture with ``bias: true`` on every normalised layer, its folded state_dict)
    from ``state``: the state_dict of a ``ModuleDict(ann=ANN(cfg), norms=CurrentNorms(cfg))``
    (no module is touched, so a training loop may fold any snapshot it keeps)."""
    folded = {k[len("ann."):]: v.detach().clone() for k, v in state.items() if k.startswith("ann.")}
    for k, (i, _) in enumerate(neuron_layers(cfg)):
        _fold_layer(folded, f"layers.{i}", {name: state[f"norms.norms.{k}.{name}"] for name in _NORM_FIELDS})
        cfg = cfg.with_layer(i, bias=True)
    return cfg, folded


@torch.no_grad()
def fold_ann_norms(cfg: ArchConfig, state: dict) -> tuple[ArchConfig, dict]:
    """(the architecture without batch norms, ``bias: true`` where one was, its folded
    state_dict) of an ANN's ``cfg`` and state_dict: in evaluation mode it computes the same.
    A residual block's norms fold into conv1, conv2 and the 1x1 shortcut they follow; an
    identity shortcut has none, so the block's sum keeps conv2's bias alone."""
    folded = {k: v.detach().clone() for k, v in state.items() if not k.startswith("norms.")}
    for i in cfg.normed:
        parts = [""]
        if isinstance(cfg.layers[i], ResBlock):
            parts = [f".{part}" for part in ("conv1", "conv2", "shortcut") if f"norms.{i}.{part}.weight" in state]
        for part in parts:
            _fold_layer(folded, f"layers.{i}{part}", {name: state[f"norms.{i}{part}.{name}"] for name in _NORM_FIELDS})
        cfg = cfg.with_layer(i, norm=False, bias=True)
    return cfg, folded
