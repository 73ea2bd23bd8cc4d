"""The LIF neuron of the paper (Eq. 2-3) over a window of steps, and its interchangeable backends.

Hidden neurons, per layer, steps t = 0..T-1:
    u_t = leak * u_{t-1} + I_t - theta * o_{t-1}        (soft reset, outside the leak)
    o_t = 1 if u_t > theta else 0                        (strictly greater)

Surrogate gradient of the spike (Section 2.2 and Appendix A), on z = u / theta - 1 as in
the paper's code, so d o / d u = g / theta ("scaled by the threshold"):
    stdb:   g = alpha * exp(-beta * dt), dt = t - t_s, t_s the latest spike time <= t
            (a look-up table over dt in [0, T]; a neuron that never spiked gets 0)
    linear: g = alpha * max(0, 1 - |z|)
    exp:    g = alpha * exp(-beta * |z|)
The soft reset's gradient (``through_reset``, the default) is the derivative of Eq. 2 as
written: u_{t+1} depends on u_t through leak * u_t and through - theta * o_t, so
    dL/dI_t = dL/du_t = dL/do_t * g_t / theta + (leak - g_t) * dL/du_{t+1}.
The paper's code detaches the reset (``through_reset=False``):
    dL/dI_t = dL/du_t = dL/do_t * g_t / theta + leak * dL/du_{t+1}.
Detached, an IF neuron that has spiked passes back sum_{s >= t} g_s / theta, about
alpha * (T - t) / theta with STDB's slowly decaying g: a gain of about alpha * T / 2 per
layer where the count's own derivative is 1 / theta, compounded over the layers (VGG16 at
T = 100: the first layer's gradient 4e8 times the last's; docs/method.md). With the reset
the carry (1 - g) telescopes the sum back to about 1 / theta per layer.

"spikebp" is instead the approximate derivative of Lee et al. 2020 (spike-based
backpropagation, its public code): a neuron passes gradient only at the steps it fires,
d o_t / d u_t = o_t * c / theta, with the leak correction of the window
    c = 1 + ln(leak) * (sum_s leak**(T-1-s) o_s) / (sum_s o_s)       (1 for IF neurons),
and the membrane carries it back through silent steps unattenuated and not across a spike
(the leak counts as noise; a spike ends an integration period):
    dL/du_t = dL/do_t * o_t * c / theta + (1 - o_t) * dL/du_{t+1}.

Backends (one signature: currents (steps, ...), state, theta, leak, t0, surrogate, table):
    "reference": Eq. 2-3 step by step under autograd - slow, obviously correct.
    "multistep": the recurrence in a hand-written forward/backward without a per-step
                 graph, storing int32 spike ages (STDB) or the potentials.
    "fused":     one Triton kernel per layer for the forward and one for the backward
                 (trainer.lif_fused); stores one byte per spike and recomputes the ages.
    "numba":     the same two passes compiled for the CPU (trainer.lif_numba).
    "auto":      fused on CUDA where Triton imports, numba on the CPU, multistep elsewhere
                 (and multistep for the spikebp surrogate, which the compiled kernels lack).
All give the same spikes bit for bit; tests/test_lif_backends.py holds them to it.
``trainer.lif_backends.neuron_backend`` picks one by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

SURROGATES = ("stdb", "linear", "exp", "spikebp")
NEVER = -1  # last-spike marker of a neuron that has not spiked yet


@dataclass(frozen=True)
class Surrogate:
    kind: str = "stdb"
    alpha: float = 0.3
    beta: float = 0.01
    through_reset: bool = True       # the soft reset's gradient (False: detached, as the paper's code)

    def __post_init__(self):
        if self.kind not in SURROGATES:
            raise ValueError(f"unknown surrogate {self.kind!r}; choose one of {', '.join(SURROGATES)}")
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"surrogate {name} must be a finite number > 0, got {v!r}")
        if not isinstance(self.through_reset, bool):
            raise ValueError(f"surrogate through_reset must be true or false, got {self.through_reset!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "alpha": self.alpha, "beta": self.beta, "through_reset": self.through_reset}

    def lut(self, size: int, device=None) -> torch.Tensor:
        """alpha * exp(-beta * dt) for dt = 0..size-1, computed in float64: no underflow."""
        dt = torch.arange(size, dtype=torch.float64, device=device)
        return (self.alpha * torch.exp(-self.beta * dt)).to(torch.float32)

    def stdb(self, dt: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
        """Surrogate for spike ages dt (NEVER for silent neurons -> 0)."""
        return torch.where(dt >= 0, lut[dt.clamp(min=0).long()], torch.zeros((), device=dt.device))

    @staticmethod
    def spikebp_correction(fired: torch.Tensor, leak: float) -> torch.Tensor:
        """Lee 2020's leak correction c per neuron of a window, from its spikes (steps, ...)."""
        steps = fired.shape[0]
        decay = leak ** torch.arange(steps - 1, -1, -1, dtype=fired.dtype, device=fired.device)
        decayed = torch.tensordot(decay, fired, dims=1)                  # sum_s leak**(T-1-s) o_s
        return 1.0 + math.log(leak) * decayed / fired.sum(0).clamp(min=1.0)

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
    def zeros(cls, like: torch.Tensor, u0: float = 0.0) -> "NeuronState":
        """The state before the first step: potential ``u0`` (0: at rest), no spikes."""
        return cls(torch.full_like(like, u0), torch.zeros_like(like),
                   torch.full_like(like, NEVER, dtype=torch.int32))

    def detached(self) -> "NeuronState":
        return NeuronState(self.u.detach(), self.o.detach(), self.last)


def _lif_forward(current, state, theta, leak, t0, keep: str | None, silent_age: int = 0):
    """Forward recurrence, in place on one potential; returns spikes, kept (steps, ...) tensor, new state.

    ``keep``: "ages" (int32 spike age at every step, ``silent_age`` or more for a neuron that
    has not spiked), "potentials" or None (no gradient wanted). The arithmetic is Eq. 2's, in
    its order: leak * u, + I_t, - theta * o_{t-1} (exact: o is 0 or 1).
    """
    u, o, last = state.u.detach().clone(), state.o.detach(), state.last.clone()
    spikes = torch.empty_like(current)
    kept = None if keep is None else torch.empty(
        current.shape, dtype=torch.int32 if keep == "ages" else current.dtype, device=current.device)
    fired = torch.empty(current.shape[1:], dtype=torch.bool, device=current.device)
    if keep == "ages":
        age = torch.where(last >= 0, t0 - last, silent_age).to(torch.int32)    # at step t0, if silent there
    for k in range(current.shape[0]):
        if leak != 1.0:
            u.mul_(leak)
        u.add_(current[k]).sub_(o, alpha=theta)
        torch.gt(u, theta, out=fired)
        o = spikes[k].copy_(fired)
        if keep == "ages":
            age = torch.add(age, 1 if k else 0, out=kept[k]).masked_fill_(fired, 0)
        else:
            last.masked_fill_(fired, t0 + k)
            if kept is not None:
                kept[k] = u
    if keep == "ages":       # the latest spike time from the last step's age
        last = torch.where(age < silent_age, t0 + current.shape[0] - 1 - age, NEVER).to(torch.int32)
    return spikes, kept, NeuronState(u, o.clone(), last)


class _LIFSequence(torch.autograd.Function):
    """Multi-step LIF: forward recurrence without a per-step graph; backward by a reverse scan.

    dL/du_t = dL/do_t * g_t / theta + c_t * dL/du_{t+1};  dL/dI_t = dL/du_t,
    c_t = leak - g_t through the reset (``Surrogate.through_reset``), leak with it detached.
    Saved for backward: the int32 spike ages (STDB), the potentials (linear / exp) or the spikes (spikebp). The STDB
    slopes are one look-up in the table g(dt) / theta followed by zeros, where the ages of
    neurons that have not spiked (len(table) and up) land.
    """

    @staticmethod
    def forward(ctx, current, u0, o0, last0, theta, leak, t0, surrogate, lut):
        keep = {"stdb": "ages", "linear": "potentials", "exp": "potentials"}.get(surrogate.kind)  # spikebp: spikes
        spikes, kept, state = _lif_forward(current, NeuronState(u0, o0, last0), theta, leak, t0, keep,
                                           silent_age=lut.numel())
        if surrogate.kind == "spikebp":
            ctx.save_for_backward(spikes)
        elif surrogate.kind == "stdb":
            table = torch.cat([lut / theta, torch.zeros_like(lut)])
            ctx.save_for_backward(kept, table)
        else:
            ctx.save_for_backward(kept)
        ctx.theta, ctx.leak, ctx.surrogate = theta, leak, surrogate
        ctx.mark_non_differentiable(state.u, state.o, state.last)
        return spikes, state.u, state.o, state.last

    @staticmethod
    def backward(ctx, grad_spikes, _gu, _go, _gl):
        theta, leak, surrogate = ctx.theta, ctx.leak, ctx.surrogate
        if surrogate.kind == "spikebp":
            (fired,) = ctx.saved_tensors
            grad_u = grad_spikes * fired * (Surrogate.spikebp_correction(fired, leak) / theta)
            for k in range(grad_u.shape[0] - 2, -1, -1):
                grad_u[k].addcmul_(1.0 - fired[k], grad_u[k + 1])
            return grad_u, None, None, None, None, None, None, None, None
        if surrogate.kind == "stdb":
            ages, table = ctx.saved_tensors
            slope = F.embedding(ages, table.view(-1, 1)).view(ages.shape)
        else:
            (potentials,) = ctx.saved_tensors
            slope = surrogate.of_potential(potentials / theta - 1.0) / theta
        grad_current = slope * grad_spikes
        for k in range(grad_spikes.shape[0] - 2, -1, -1):
            if surrogate.through_reset:
                grad_current[k].addcmul_(leak - theta * slope[k], grad_current[k + 1])
            else:
                grad_current[k].add_(grad_current[k + 1], alpha=leak)
        return grad_current, None, None, None, None, None, None, None, None


def lif_multistep(current, state: NeuronState, theta: float, leak: float, t0: int, surrogate: Surrogate, lut):
    if not (torch.is_grad_enabled() and current.requires_grad):     # evaluation, balancing: keep nothing
        spikes, _, state = _lif_forward(current, state, theta, leak, t0, None)
        return spikes, state
    spikes, u, o, last = _LIFSequence.apply(current, state.u, state.o, state.last, theta, leak, t0, surrogate, lut)
    return spikes, NeuronState(u, o, last)


def lif_reference(current, state: NeuronState, theta: float, leak: float, t0: int, surrogate: Surrogate, lut):
    """Eq. 2-3 step by step with autograd; the spike's gradient is the surrogate (straight-through).
    For "spikebp", the membrane's gradient path is gated by the spikes and each step's spike
    gradient is scaled, by hooks, with the window's leak correction once the window is known."""
    if surrogate.kind == "spikebp":
        return _spikebp_reference(current, state, theta, leak, t0)
    u, o, last = state.u, state.o, state.last
    out = []
    for k in range(current.shape[0]):
        u = leak * u + current[k] - theta * (o if surrogate.through_reset else o.detach())
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


def _spikebp_reference(current, state: NeuronState, theta: float, leak: float, t0: int):
    u, o, last = state.u, state.o, state.last
    carry = leak * u.detach()
    out, gain = [], []
    for k in range(current.shape[0]):
        u = carry + current[k] - theta * o.detach()
        fired = (u > theta).to(current.dtype)
        last = torch.where(fired > 0, torch.full_like(last, t0 + k), last)
        o = fired + (u - u.detach()) * fired / theta
        if o.requires_grad:
            o.register_hook(lambda g: g * gain[0])
        carry = leak * u.detach() + (u - u.detach()) * (1.0 - fired)      # value leak*u, gradient 1 - o
        out.append(o)
    spikes = torch.stack(out)
    gain.append(Surrogate.spikebp_correction(spikes.detach(), leak))    # c, set before any backward
    return spikes, NeuronState(u, o, last)
