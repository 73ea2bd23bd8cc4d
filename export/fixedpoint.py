"""The target's fixed-point arithmetic, in one place (Loihi as modelled by lava-nc 0.10).

Bit widths and rounding (docs/fixedpoint.md, checked against lava-nc's sources):

- weights: ``WEIGHT_BITS``-bit signed mantissas. Dense stores them the way Lava's
  mixed-sign Dense applies them: multiples of ``2**(9 - bits)`` in [-256, 255]
  (``truncate_weights`` floors to that grid); Conv applies its integers as given.
- synaptic current per step: Dense ``a = (W @ s)`` shifted by ``weight_exp``
  (left for > 0, arithmetic right = floor for < 0); Conv ``a = conv(s, W)``
  wrapped to signed 24 bit, modulo 2**24 (Lava's ``signed_clamp`` wraps despite its
  name); Lava's Conv never applies ``weight_exp``: it must be 0.
- neuron (du = 4095, so the current is instantaneous):
  ``u_t = wrap24(a_t << 6)``
  ``v_t = clip(decay(v_{t-1}) + u_t + b - (vth << 6) * o_{t-1}, -(2**23 - 1), 2**23 - 1)``
  ``decay(v) = sign(y) * (|y| >> 12)``, ``y = v * (4096 - dv)`` (rounds toward zero)
  ``o_t = v_t > (vth << 6)`` (strictly greater), vth a 17-bit unsigned mantissa;
  ``b = bias << bias_exp`` (13-bit signed mantissa, exponent 0..7, none: 0), Loihi's
  LIF bias, in the voltage's units (not shifted by 6).
  The reset is the paper's Eq. 2: the threshold is subtracted at the step after the
  spike, outside the leak (identical to an immediate soft reset when dv = 0).
- initial state: ``v_{-1} = v_init`` (the core's, in the voltage's units; 0 by default),
  ``o_{-1} = 0``.
- output layer: the same voltage update with no spikes and no reset; its ``v``
  after all steps is the class score.
- shortcuts (``export.graph.Shortcut``, residual nets): a shortcut's current is
  ``shift(W s, weight_exp)`` of its source's spikes of the same step (a conv or a
  one-to-one map, no wrap: it runs as Lava's Sparse), added to the core's own current
  ``a`` (after the conv's 24-bit wrap) before ``<< 6``: Lava's neuron input port sums
  what arrives on it.
- ``wrap24`` is Lava's single wrap of the current: x > 2**23 -> x - 2**24,
  then x <= -2**23 -> (the unwrapped) x + 2**24.

Timing: this reference steps every layer in the same step (layer-synchronous).
Lava delays each Dense/Conv output by one step, so Lava's spikes of core k
(0-based) at step t + k + 1 equal these at step t; running Lava T + len(cores)
steps gives the same output voltage. ``latency_steps`` states it. A shortcut from a
population d synapses further back on the chain carries a synaptic delay of d - 1
steps on Lava (Loihi 2's DelaySparse), so that both currents of a step arrive together.

``run_reference`` is the slow, obviously-correct model. Every other way of running a
graph (hwsim's fast core, the ONNX step model, Lava's process models) is a backend with
its signature, ``run(graph, input_spikes) -> CoreRun``, registered in
``hwsim.backends`` and checked against this one by ``tests/test_conformance.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_BITS = 8            # signed weight mantissa bits (settable per export)
DENSE_WEIGHT_RANGE = (-256, 255)
STATE_BITS = 24            # u and v
V_MAX = 2 ** (STATE_BITS - 1) - 1
CONV_OUT_BITS = 24         # Lava Conv wraps its output to signed 24 bit (modulo 2**24)
VTH_BITS = 17              # unsigned threshold mantissa
VTH_MAX = 2 ** VTH_BITS - 1
DECAY_BITS = 12            # dv, du: 4096 = unity
DECAY_UNITY = 2 ** DECAY_BITS
DU_INSTANT = 4095          # du that makes the current instantaneous
ACT_SHIFT = 6              # synaptic input is MSB-aligned by << 6
VTH_SHIFT = 6              # threshold is MSB-aligned by << 6
HW_INPUT_BITS = 16         # LIF input port width on real hardware (Lava does not enforce it)
BIAS_BITS = 13             # signed bias mantissa (Lava's LIF bias_mant)
BIAS_RANGE = (-(2 ** (BIAS_BITS - 1)), 2 ** (BIAS_BITS - 1) - 1)
BIAS_EXP_MAX = 7           # unsigned 3-bit bias exponent: effective bias = bias_mant << bias_exp


def dense_weight_step(weight_bits: int) -> int:
    """Grid of Dense weights as Lava applies them (mixed sign): 2 for 8-bit weights."""
    return 2 ** (9 - weight_bits)


def conv_weight_range(weight_bits: int) -> tuple[int, int]:
    return -(2 ** (weight_bits - 1)), 2 ** (weight_bits - 1) - 1


def leak_to_dv(leak: float) -> int:
    """lambda -> 12-bit voltage decay: lambda = 1 - dv / 4096."""
    return int(round((1.0 - float(leak)) * DECAY_UNITY))


def wrap24(x: np.ndarray) -> np.ndarray:
    """Lava's wrap of the 24-bit current (one wrap, as lava/proc/lif/models.py does)."""
    half = 2 ** (STATE_BITS - 1)
    wrapped = np.where(x > half, x - 2 * half, x)
    return np.where(wrapped <= -half, x + 2 * half, wrapped)


def decay(v: np.ndarray, dv: int) -> np.ndarray:
    y = v.astype(np.int64) * (DECAY_UNITY - dv)
    return np.sign(y) * (np.abs(y) >> DECAY_BITS)


def shift_by_exp(a: np.ndarray, weight_exp: int) -> np.ndarray:
    return a << weight_exp if weight_exp > 0 else a >> -weight_exp


def max_abs_current(weights: np.ndarray, weight_exp: int = 0) -> int:
    """The largest |current| that +-1 spikes can make through integer ``weights`` (outputs
    first): the largest sum of |w| over one output's fan-in, shifted by ``weight_exp`` as the
    core shifts it (floor for a negative exponent). Exactness guards pass ``max(exp, 0)``:
    the sum before a right shift must be exact too."""
    w = np.abs(np.asarray(weights, dtype=np.int64)).reshape(len(weights), -1)
    return int(shift_by_exp(np.int64(w.sum(axis=1).max(initial=0)), weight_exp))


def wrap_signed(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap to ``bits`` (lava/proc/conv/utils.py ``signed_clamp``)."""
    half = 2 ** (bits - 1)
    return (x + half) % (2 * half) - half


def conv2d_int(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], padding: tuple[int, int]) -> np.ndarray:
    """Plain integer cross-correlation (torch layout): x (N, C, H, W), w (O, C, kh, kw) -> (N, O, H', W')."""
    n, c, h, wd = x.shape
    o, c2, kh, kw = w.shape
    assert c == c2, (c, c2)
    sy, sx = stride
    py, px = padding
    xp = np.zeros((n, c, h + 2 * py, wd + 2 * px), dtype=np.int64)
    xp[:, :, py:py + h, px:px + wd] = x
    ho, wo = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
    out = np.zeros((n, o, ho, wo), dtype=np.int64)
    w64 = w.astype(np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + sy * ho:sy, j:j + sx * wo:sx]          # (N, C, ho, wo)
            out += np.einsum("nchw,oc->nohw", patch, w64[:, :, i, j])
    return out


def synaptic_input(core, spikes: np.ndarray) -> np.ndarray:
    """Integer synaptic current of one step; spikes (N, *core.input_shape) in {-1, 0, 1}."""
    s = spikes.astype(np.int64)
    if core.op == "dense":
        a = s.reshape(s.shape[0], -1) @ core.weights.astype(np.int64).T
        return shift_by_exp(a, core.weight_exp)
    return wrap_signed(conv2d_int(s, core.weights, core.stride, core.padding), CONV_OUT_BITS)


def shortcut_input(sc, spikes: np.ndarray) -> np.ndarray:
    """Integer current of one step through a shortcut; spikes (N, *sc.input_shape) in {-1, 0, 1}."""
    s = spikes.astype(np.int64)
    if sc.op == "identity":
        a = s * np.int64(sc.weights[0])
    else:
        a = conv2d_int(s, sc.weights, sc.stride, sc.padding)
    return shift_by_exp(a, sc.weight_exp)


def per_neuron(values: np.ndarray, output_shape: tuple[int, ...]) -> np.ndarray:
    """One value per output channel (conv) or neuron (dense) broadcast over ``output_shape``."""
    return np.broadcast_to(values.reshape((len(values),) + (1,) * (len(output_shape) - 1)), output_shape)


def neuron_bias(core) -> np.ndarray | int:
    """The bias added to each neuron's voltage per step, ``bias << bias_exp`` broadcast over
    the core's output shape (int64), or 0 for a core without one."""
    if core.bias is None:
        return 0
    return per_neuron(core.bias.astype(np.int64) << core.bias_exp, core.output_shape)


def neuron_step(core, v: np.ndarray, prev_spikes: np.ndarray, a: np.ndarray):
    """One step of the soft-reset fixed-point LIF (or the non-spiking output): returns (v, spikes)."""
    u = wrap24(a.astype(np.int64) << ACT_SHIFT)
    vth = np.int64(core.vth) << VTH_SHIFT
    v = decay(v, core.dv) + u + neuron_bias(core)
    if core.spiking:
        v = v - vth * prev_spikes
    v = np.clip(v, -V_MAX, V_MAX)
    spikes = (v > vth).astype(np.int64) if core.spiking else np.zeros_like(v)
    return v, spikes


def latency_steps(graph) -> int:
    """Extra steps Lava needs beyond T: one per synaptic core (docs/fixedpoint.md)."""
    return len(graph.cores)


@dataclass
class CoreRun:
    """What running a graph on input spikes (T, N, C, H, W) gives, whatever the backend."""
    spikes: list[np.ndarray]               # per spiking core: (T, N, *output_shape) uint8
    output: np.ndarray                     # (N, classes) int64: the output voltage after T steps
    max_abs_input: list[int] | None = None  # per core: the largest |synaptic input| seen (None: not measured)

    @property
    def spikes_per_neuron(self) -> list[float]:
        """Per spiking core: its spikes over all steps per neuron, the mean over samples."""
        return [float(s.sum()) / (np.prod(s.shape[2:]) * s.shape[1]) for s in self.spikes]

    @property
    def predictions(self) -> np.ndarray:
        """argmax of the output voltage (ties: the lowest class index)."""
        return self.output.argmax(1)


def run_reference(graph, input_spikes: np.ndarray) -> CoreRun:
    """Step the whole graph on input spikes (T, N, C, H, W) in {-1, 0, 1}, one step of every
    layer at a time, exactly as the module docstring says."""
    steps, n = input_spikes.shape[:2]
    v = [np.full((n, *c.output_shape), c.v_init, dtype=np.int64) for c in graph.cores]
    prev = [np.zeros_like(x) for x in v]
    spikes_out = [np.zeros((steps, n, *c.output_shape), dtype=np.uint8) for c in graph.cores if c.spiking]
    max_abs = [0] * len(graph.cores)
    for t in range(steps):
        s = input_spikes[t]
        step_spikes = {"input": s}         # this step's spikes of every population so far
        k = 0
        for i, core in enumerate(graph.cores):
            a = synaptic_input(core, s).reshape(n, *core.output_shape)
            for sc in core.shortcuts:
                a = a + shortcut_input(sc, step_spikes[sc.source])
            max_abs[i] = max(max_abs[i], int(np.abs(a).max(initial=0)))
            v[i], prev[i] = neuron_step(core, v[i], prev[i], a)
            if core.spiking:
                spikes_out[k][t] = prev[i]
                k += 1
            s = step_spikes[core.name] = prev[i]
    return CoreRun(spikes_out, v[-1].reshape(n, -1), max_abs)
