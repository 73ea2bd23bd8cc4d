"""The quantization clip-floor-shift activation (QCFS: Bu et al., ICLR 2022) of the
low-latency recipe, and the input quantization that matches the integrate encoding.

An ANN trained for conversion at few steps replaces each hidden ReLU by

    a = lambda * clip(floor(x * L / lambda + 1/2) / L, 0, 1)

with a trainable threshold ``lambda`` per neuron layer and ``L`` levels per run. An IF
neuron with threshold ``lambda`` that starts at ``lambda / 2`` (``SNNParams.v_init``)
and receives a constant current ``x`` fires ``floor(x * T / lambda + 1/2)`` times in
``T`` steps (clipped to 0..T), so at ``T = L`` its rate times ``lambda`` is ``a``; at other
T the shift ``1/2`` makes the expected quantization error zero (QCFS, Theorem 2).

The floor's gradient is the straight-through one (1); ``lambda`` learns through the clip
(``d a / d lambda`` = 1 where ``x > lambda``) as autograd derives it from the expression.

Conversion (``trainer.convert.qcfs_snn``): a spike of neuron layer l stands for lambda_l, so every
layer's weights are multiplied by the lambda of the neuron layer that feeds it (1 for the
input), its bias is kept, and its neurons take lambda_l as their threshold: the SNN's rate
of layer l times lambda_l then tracks the ANN's activation. Residual blocks are not
supported by this recipe yet (an identity shortcut has no weight to carry the scale).

The input: the integrate encoding (``records.encoding``, rule "integrate") makes a pixel
of normalised value ``x`` in [-1, 1] emit ``sign(x) * floor(T * |x| + 1/2)`` spikes in T
steps, so the ANN of this recipe sees its input as ``sign(x) * floor(L * |x| + 1/2) / L``
(``quantize_input``): at ``T = L`` the SNN's input counts are the ANN's input.
"""
from __future__ import annotations

import torch

INITIAL_THRESHOLD = 8.0       # lambda's value when built (QCFS's code starts every layer at 8)
SNN_V_INIT = 0.5              # the converted SNN's initial potential, a fraction of lambda (the shift)


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x) forward, identity backward."""
    return x + (torch.floor(x) - x).detach()


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x forward, its gradient times ``scale`` backward."""
    return (x - x * scale).detach() + x * scale


def threshold_grad_scale(x: torch.Tensor, levels: int) -> float:
    """1 / sqrt(N * L), N the activations per sample of ``x`` (``qcfs``)."""
    return (x[0].numel() * levels) ** -0.5


def qcfs(x: torch.Tensor, threshold: torch.Tensor, levels: int) -> torch.Tensor:
    """lambda * clip(floor(x * L / lambda + 1/2) / L, 0, 1) with the straight-through floor;
    lambda's gradient scaled by 1 / sqrt(N * L), N the activations per sample (LSQ's step-size
    scale, Esser et al. 2020): lambda gathers the gradient of every activation of the layer,
    and unscaled it moves far faster than a weight (a lambda started at 2 on CIFAR-10 went
    negative within 40 SGD steps at lr 0.05)."""
    threshold = scale_grad(threshold, threshold_grad_scale(x, levels))
    y = torch.clamp(x / threshold, 0.0, 1.0)
    return _floor_ste(y * levels + 0.5) / levels * threshold


def quantize_input(x: torch.Tensor, levels: int) -> torch.Tensor:
    """sign(x) * floor(L * |x| + 1/2) / L: what L steps of the integrate encoding deliver."""
    return torch.sign(x) * _floor_ste(x.abs() * levels + 0.5) / levels


@torch.no_grad()
def init_thresholds(ann, x: torch.Tensor) -> list[float]:
    """Set every lambda from the data before training (LSQ's step-size init, Esser et al.
    2020): lambda_k = 2 * sqrt(L) * mean |z_k| over a batch ``x``, z_k the input of neuron
    layer k's activation, layer by layer (each lambda set before the next layer is measured).
    A fixed start (QCFS's 8) is far from a batch-normed layer's scale (about 1), and lambda
    moves slowly under its scaled gradient: on CIFAR-10 VGG9 it went from 8 to 6.9 in two
    epochs, leaving most activations on the zero level. Returns the lambdas."""
    levels = ann.cfg.quant_levels
    found: dict[int, float] = {}

    def measure(k):
        def act(z):
            if k not in found:
                found[k] = max(float(2.0 * levels ** 0.5 * z.abs().mean()), 1e-3)
                ann.act_thresholds[k] = found[k]
            return qcfs(z, ann.act_thresholds[k], levels)
        return act

    was_training, original = ann.training, ann._act
    ann.eval()                          # batch norms normalise with the batch's own statistics below
    ann._act = measure
    try:
        for m in ann.norms.values():
            m.train()                   # (running statistics: restored after)
        saved = {k: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                 for k, m in ann.norms.items()}
        ann(x)
        for k, m in ann.norms.items():
            m.running_mean.copy_(saved[k][0]), m.running_var.copy_(saved[k][1])
            m.num_batches_tracked.copy_(saved[k][2])
    finally:
        ann._act = original
        ann.train(was_training)
    return [found[k] for k in sorted(found)]
