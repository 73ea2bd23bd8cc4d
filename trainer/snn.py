"""The spiking network of the paper (Eq. 2-4) on the ANN's own modules.

Hidden neurons, per layer, steps t = 0..T-1 (Eq. 2-3):
    u_t = leak * u_{t-1} + I_t - theta * o_{t-1}        (soft reset, outside the leak)
    o_t = 1 if u_t > theta else 0                        (strictly greater)
The output layer accumulates I_t over all steps and never spikes (Eq. 4); its
potential divided by the steps so far is the logit (so the loss does not scale with T).

Input: signed Poisson rate coding of the normalised image x in [-1, 1]: at every step a
pixel emits sign(x) when a fresh uniform number is below |x|. Dropout masks are drawn
once per mini-batch and kept for all T steps.

Surrogate gradient of the spike (Section 2.2 and Appendix A), on z = u / theta - 1 as in
the paper's code, so d o / d u = g / theta ("scaled by the threshold"):
    stdb:   g = alpha * exp(-beta * dt), dt = t - t_s, t_s the latest spike time <= t
            (a look-up table over dt in [0, T]; a neuron that never spiked gets 0)
    linear: g = alpha * max(0, 1 - |z|)
    exp:    g = alpha * exp(-beta * |z|)
The reset path carries no gradient (the paper's code detaches it).

Two interchangeable backends compute the same spikes:
    "reference": Algorithm 3 as written - time outer loop, layers inner, autograd per step.
    "multistep": per layer, the synaptic input of all steps of a window is one batched
                 conv/matmul over steps x batch; only the neuron recurrence runs step by
                 step, in a hand-written forward/backward that stores 1-byte spikes and
                 16-bit spike ages instead of autograd's per-step graph.
Time runs in windows: state is carried (and detached) from one window to the next, which
is truncated BPTT when training and bounds memory when evaluating.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from records.encoding import poisson_spikes
from trainer.models import ANN, ArchConfig, layer_shapes, neuron_layers

SURROGATES = ("stdb", "linear", "exp")
BACKENDS = ("multistep", "reference")
NEVER = -1  # last-spike marker of a neuron that has not spiked yet


@dataclass(frozen=True)
class Surrogate:
    kind: str = "stdb"
    alpha: float = 0.3
    beta: float = 0.01

    def __post_init__(self):
        if self.kind not in SURROGATES:
            raise ValueError(f"unknown surrogate {self.kind!r}; choose one of {', '.join(SURROGATES)}")
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"surrogate {name} must be a finite number > 0, got {v!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "alpha": self.alpha, "beta": self.beta}

    def lut(self, size: int, device=None) -> torch.Tensor:
        """alpha * exp(-beta * dt) for dt = 0..size-1, computed in float64: no underflow."""
        dt = torch.arange(size, dtype=torch.float64, device=device)
        return (self.alpha * torch.exp(-self.beta * dt)).to(torch.float32)

    def stdb(self, dt: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
        """Surrogate for spike ages dt (NEVER for silent neurons -> 0)."""
        return torch.where(dt >= 0, lut[dt.clamp(min=0).long()], torch.zeros((), device=dt.device))

    def of_potential(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return self.alpha * (1.0 - z.abs()).clamp(min=0.0)
        return self.alpha * torch.exp(-self.beta * z.abs())


@dataclass
class NeuronState:
    u: torch.Tensor          # membrane potential
    o: torch.Tensor          # spikes of the previous step
    last: torch.Tensor       # int32 step of the latest spike, NEVER if none

    @classmethod
    def zeros(cls, like: torch.Tensor) -> "NeuronState":
        return cls(torch.zeros_like(like), torch.zeros_like(like),
                   torch.full_like(like, NEVER, dtype=torch.int32))

    def detached(self) -> "NeuronState":
        return NeuronState(self.u.detach(), self.o.detach(), self.last)


def _lif_forward(current, state, theta, leak, t0):
    """Forward recurrence; returns spikes, latest spike times (steps, ...), potentials, new state."""
    u, o, last = state.u.detach(), state.o.detach(), state.last.clone()
    spikes = torch.empty_like(current)
    lasts = torch.empty(current.shape, dtype=torch.int32, device=current.device)
    potentials = torch.empty_like(current)
    for k in range(current.shape[0]):
        u = leak * u + current[k] - theta * o
        fired = u > theta
        o = fired.to(current.dtype)
        last.masked_fill_(fired, t0 + k)
        spikes[k], potentials[k], lasts[k] = o, u, last
    return spikes, lasts, potentials, NeuronState(u, o, last)


def spike_ages(lasts: torch.Tensor, t0: int) -> torch.Tensor:
    """dt = t - t_s per step from the latest spike times (NEVER where none yet), as int16."""
    steps = torch.arange(t0, t0 + lasts.shape[0], device=lasts.device, dtype=lasts.dtype)
    steps = steps.view(-1, *([1] * (lasts.dim() - 1)))
    return torch.where(lasts >= 0, steps - lasts, NEVER).to(torch.int16)


class _LIFSequence(torch.autograd.Function):
    """Multi-step LIF: forward recurrence without a per-step graph; backward by a reverse scan.

    dL/du_t = dL/do_t * g_t / theta + leak * dL/du_{t+1};  dL/dI_t = dL/du_t.
    Saved for backward: 16-bit spike ages (STDB) or the potentials (linear / exp).
    """

    @staticmethod
    def forward(ctx, current, u0, o0, last0, theta, leak, t0, surrogate, lut):
        spikes, lasts, potentials, state = _lif_forward(current, NeuronState(u0, o0, last0), theta, leak, t0)
        if surrogate.kind == "stdb":
            ctx.save_for_backward(spike_ages(lasts, t0), lut)
        else:
            ctx.save_for_backward(potentials)
        ctx.theta, ctx.leak, ctx.surrogate = theta, leak, surrogate
        ctx.mark_non_differentiable(state.u, state.o, state.last)
        return spikes, state.u, state.o, state.last

    @staticmethod
    def backward(ctx, grad_spikes, _gu, _go, _gl):
        theta, leak, surrogate = ctx.theta, ctx.leak, ctx.surrogate
        if surrogate.kind == "stdb":
            ages, lut = ctx.saved_tensors
            slopes = surrogate.stdb(ages, lut)
        else:
            (potentials,) = ctx.saved_tensors
            slopes = surrogate.of_potential(potentials / theta - 1.0)
        grad_current = grad_spikes * (slopes / theta)
        for k in range(grad_spikes.shape[0] - 2, -1, -1):
            grad_current[k].add_(grad_current[k + 1], alpha=leak)
        return grad_current, None, None, None, None, None, None, None, None


def lif_multistep(current, state: NeuronState, theta: float, leak: float, t0: int, surrogate: Surrogate, lut):
    spikes, u, o, last = _LIFSequence.apply(current, state.u, state.o, state.last, theta, leak, t0, surrogate, lut)
    return spikes, NeuronState(u, o, last)


def lif_reference(current, state: NeuronState, theta: float, leak: float, t0: int, surrogate: Surrogate, lut):
    """Eq. 2-3 step by step with autograd; the spike's gradient is the surrogate (straight-through)."""
    u, o, last = state.u, state.o, state.last
    out = []
    for k in range(current.shape[0]):
        u = leak * u + current[k] - theta * o.detach()
        fired = (u > theta).to(current.dtype)
        last = torch.where(fired > 0, torch.full_like(last, t0 + k), last)
        with torch.no_grad():
            if surrogate.kind == "stdb":
                age = torch.where(last >= 0, t0 + k - last, torch.full_like(last, NEVER))
                slope = surrogate.stdb(age, lut) / theta
            else:
                slope = surrogate.of_potential(u / theta - 1.0) / theta
        o = fired + (u - u.detach()) * slope
        out.append(o)
    return torch.stack(out), NeuronState(u, o, last)


NEURON_BACKENDS = {"multistep": lif_multistep, "reference": lif_reference}


class SNN(nn.Module):
    """The spiking view of an ANN: same modules and weights, plus thresholds and leak."""

    def __init__(self, ann: ANN, thresholds, leak: float = 1.0, surrogate: Surrogate | None = None,
                 backend: str = "multistep"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.ann = ann
        self.cfg: ArchConfig = ann.cfg
        self.neurons = neuron_layers(self.cfg)
        if len(thresholds) != len(self.neurons):
            raise ValueError(f"{len(thresholds)} thresholds for {len(self.neurons)} neuron layers")
        self.thresholds = [float(v) for v in thresholds]
        self.leak = float(leak)
        self.surrogate = surrogate or Surrogate()
        self.backend = backend
        self.spike_counts: list[float] = []   # per neuron layer, summed over steps and batch, last run
        self.neuron_counts: list[int] = []    # neurons per neuron layer

    def _neuron(self, k, current, states, t0, lut):
        """Run neuron layer k over the window's currents, updating states[k]."""
        current = current.float()      # under bf16 autocast the synapses are bf16, the neurons fp32
        if states[k] is None:
            states[k] = NeuronState.zeros(current[0])
        lif = NEURON_BACKENDS[self.backend]
        spikes, states[k] = lif(current, states[k], self.thresholds[k], self.leak, t0, self.surrogate, lut)
        self.spike_counts[k] += float(spikes.detach().sum())
        self.neuron_counts[k] = math.prod(current.shape[2:])
        return spikes

    def _propagate(self, spikes, states, masks, t0, lut, stop_at: int | None = None):
        """Push input spikes (steps, B, ...) through the layers; returns the classifier's summed input.

        With ``stop_at=k`` it returns the input currents (steps, B, ...) of neuron layer k instead.
        """
        steps = spikes.shape[0]
        merged = lambda module, p: module(p.flatten(0, 1)).unflatten(0, (steps, -1))  # noqa: E731
        last = len(self.cfg.layers) - 1
        k = 0
        for i, (spec, module) in enumerate(zip(self.cfg.layers, self.ann.layers)):
            kind = spec["kind"]
            if kind in ("conv", "linear"):
                current = merged(module, spikes)
                if i == last:
                    return current.float().sum(0)
                if stop_at == k:
                    return current
                spikes = self._neuron(k, current, states, t0, lut)
                k += 1
            elif kind == "resblock":
                current = merged(module.conv1, spikes)
                if stop_at == k:
                    return current
                inner = self._neuron(k, current, states, t0, lut)
                current = merged(module.conv2, inner) + merged(module.skip, spikes)
                if stop_at == k + 1:
                    return current
                spikes = self._neuron(k + 1, current, states, t0, lut)
                k += 2
            elif kind == "avgpool":
                spikes = merged(lambda p: F.avg_pool2d(p, int(spec.get("kernel", 2))), spikes)
            elif kind == "dropout" and i in masks:
                spikes = spikes * masks[i]
            elif kind == "flatten":
                spikes = spikes.flatten(2)
        raise AssertionError("architecture without classifier")  # validated by ArchConfig

    def _dropout_masks(self, x: torch.Tensor, generator) -> dict[int, torch.Tensor]:
        """One mask per dropout layer for this mini-batch, fixed over all steps."""
        if not self.training:
            return {}
        masks = {}
        for i, (spec, shape) in enumerate(zip(self.cfg.layers, layer_shapes(self.cfg))):
            if spec["kind"] == "dropout" and float(spec["p"]) > 0:
                keep = 1.0 - float(spec["p"])
                masks[i] = (torch.rand((x.shape[0], *shape), generator=generator, device=x.device) < keep
                            ).to(x.dtype) / keep
        return masks

    def _begin(self, timesteps: int, window: int | None, device):
        """Start a run: reset the spike counters; (window length, empty neuron states, surrogate table)."""
        self.spike_counts = [0.0] * len(self.neurons)
        self.neuron_counts = [0] * len(self.neurons)
        window = timesteps if window is None else max(1, min(int(window), timesteps))
        states: list[NeuronState | None] = [None] * len(self.neurons)
        return window, states, self.surrogate.lut(timesteps + 1, device=device)

    def run(self, x: torch.Tensor, timesteps: int, *, window: int | None = None,
            generator: torch.Generator | None = None, input_spikes: torch.Tensor | None = None,
            shard=None):
        """Yield (steps so far, logits) after every window; state between windows is detached.

        The caller may backpropagate each window's logits (truncated BPTT, gradients summed).
        ``input_spikes`` (T, B, ...) replaces the Poisson encoding of ``x`` (e.g. to replay the
        exact trains a fixed-point simulation saw). ``shard(tensor, dim)`` (data-parallel
        training): random draws are made for the global batch ``x`` and this rank computes on
        its slice, so N processes see what one would.
        """
        shard = shard or (lambda t, dim=0: t)
        window, states, lut = self._begin(timesteps, window, x.device)
        masks = {i: shard(m) for i, m in self._dropout_masks(x, generator).items()}
        total = None
        for t0 in range(0, timesteps, window):
            steps = min(window, timesteps - t0)
            spikes = (shard(poisson_spikes(x, steps, generator), dim=1) if input_spikes is None
                      else input_spikes[t0:t0 + steps].to(x.dtype))
            if self.backend == "reference":
                summed = sum(self._propagate(spikes[k:k + 1], states, masks, t0 + k, lut) for k in range(steps))
            else:
                summed = self._propagate(spikes, states, masks, t0, lut)
            total = summed if total is None else total.detach() + summed
            yield t0 + steps, total / (t0 + steps)
            states = [s.detached() if s is not None else None for s in states]

    def forward(self, x: torch.Tensor, timesteps: int, *, window: int | None = None,
                generator: torch.Generator | None = None, input_spikes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits after all steps (full BPTT when window is None)."""
        logits = None
        for _, logits in self.run(x, timesteps, window=window, generator=generator, input_spikes=input_spikes):
            pass
        return logits

    @torch.no_grad()
    def input_currents(self, x: torch.Tensor, timesteps: int, layer: int, *, window: int | None = None,
                       generator: torch.Generator | None = None):
        """Yield the input currents (steps, B, ...) of neuron layer ``layer`` window by window."""
        window, states, lut = self._begin(timesteps, window, x.device)
        for t0 in range(0, timesteps, window):
            steps = min(window, timesteps - t0)
            yield self._propagate(poisson_spikes(x, steps, generator), states, {}, t0, lut, stop_at=layer)

