"""The cases every fixed-point backend must run exactly as ``export.fixedpoint`` does
(``tests/test_conformance.py``): each a small core graph and its input spikes, chosen to
exercise one trap -- layouts and kernel flips, folded pools, weight exponents, leak,
signed inputs, the 24-bit current wrap, the conv sum wrap, voltage saturation, Lava's
mixed-sign dense weights, float32 exactness limits, residual shortcuts (identity and
conv, from the input, across stride 2 and a folded pool, with negative exponents), neuron
biases (per channel and per neuron, both signs, exponents, saturating, beside a shortcut),
bursts that go on after the input has fallen silent, initial potentials (at half and at the
whole threshold, with leak, on a chain Lava delays, beside a bias and a shortcut) under the
integrate encoding."""
from __future__ import annotations

import math

import numpy as np

from export import fixedpoint as fx
from export.graph import Core, CoreGraph, Shortcut
from records.encoding import InputEncoding


def enc(shape, mean=0.5, std=0.5):
    return InputEncoding.of(shape, [mean] * shape[0], [std] * shape[0])


def graph_of(cores, shape, timesteps=6, encoding=None, **fields):
    """A graph of ``cores`` on a (C, H, W) input; ``fields``: CoreGraph's others (data, provenance)."""
    classes = math.prod(cores[-1].output_shape)
    return CoreGraph(encoding or enc(shape), cores, timesteps=timesteps, class_names=[f"c{i}" for i in range(classes)],
                     **fields)


def dense_w(rng, n_out, n_in, lo=-60, hi=60):
    """Weights on Lava's 8-bit mixed-sign grid (even values)."""
    return rng.integers(lo, hi + 1, size=(n_out, n_in)) * 2


def conv_core(rng, name, cin, cout, k, hw, stride=(1, 1), pad=(0, 0), vth=60, dv=0, wmax=30, w=None, pool=(1, 1),
              shortcuts=()):
    (kh, kw), (h, wd) = k, hw
    ho, wo = (h + 2 * pad[0] - kh) // stride[0] + 1, (wd + 2 * pad[1] - kw) // stride[1] + 1
    if w is None:
        w = rng.integers(-wmax, wmax + 1, size=(cout, cin, kh, kw))
    return Core(name, "conv", w, (cin, h, wd), (cout, ho, wo), vth=vth, dv=dv, stride=stride, padding=pad,
                pool=pool, shortcuts=list(shortcuts))


def out_core(rng, in_shape, classes=3, dv=0, exp=0):
    return Core("out", "dense", dense_w(rng, classes, math.prod(in_shape)), in_shape, (classes,), vth=0,
                dv=dv, spiking=False, weight_exp=exp)


def random_spikes(rng, steps, n, shape, p=0.4):
    s = (rng.random((steps, n, *shape)) < p) * rng.choice([-1, 1], size=(steps, n, *shape))
    return s.astype(np.int8)


def encoded(graph, samples, steps, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (samples, *graph.input.shape), dtype=np.uint8)
    return graph.input.encode(images, steps, seed=seed)


# ---- the cases: name -> () -> (graph, input spikes) ---------------------------------
def dense_exp_and_leak():
    rng = np.random.default_rng(1)
    shape = (1, 3, 4)
    h1 = Core("h1", "dense", dense_w(rng, 7, 12), shape, (7,), vth=40, weight_exp=-2)
    h2 = Core("h2", "dense", dense_w(rng, 5, 7), (7,), (5,), vth=30, weight_exp=1, dv=700)
    return graph_of([h1, h2, out_core(rng, (5,), dv=100, exp=-1)], shape), random_spikes(rng, 7, 3, shape)


def conv_nonsymmetric_nonsquare_leak():
    """Non-symmetric kernels on non-square maps with unequal stride and padding catch a
    wrong transpose, a missing kernel flip or swapped x/y geometry."""
    rng = np.random.default_rng(2)
    shape = (2, 7, 5)
    c1 = conv_core(rng, "c1", 2, 3, (3, 2), (7, 5), stride=(1, 2), pad=(1, 0), vth=20, dv=300)
    c2 = conv_core(rng, "c2", 3, 4, (2, 1), c1.output_shape[1:], pad=(0, 1), vth=25)
    return graph_of([c1, c2, out_core(rng, c2.output_shape)], shape), random_spikes(rng, 6, 2, shape)


def folded_pools():
    """A 2x2 average pool folded into a 3x3 conv (6x6, stride 2) and into a dense layer."""
    rng = np.random.default_rng(3)
    shape = (3, 8, 4)
    c1 = conv_core(rng, "c1", 3, 4, (3, 3), (8, 4), pad=(1, 1), vth=15)
    w = np.repeat(np.repeat(rng.integers(-30, 31, size=(5, 4, 3, 3)), 2, axis=2), 2, axis=3)
    c2 = conv_core(rng, "c2", 4, 5, (6, 6), (8, 4), stride=(2, 2), pad=(2, 2), vth=60, w=w, pool=(2, 2))
    wd = np.repeat(np.repeat(rng.integers(-60, 61, size=(3, 5, 2, 1)), 2, 2), 2, 3) * 2
    out = Core("out", "dense", wd.reshape(3, -1), c2.output_shape, (3,), vth=0, spiking=False, pool=(2, 2))
    return graph_of([c1, c2, out], shape), random_spikes(rng, 6, 2, shape)


def folded_pool_odd_input():
    """An odd input size: the pool rewrite pads explicitly."""
    rng = np.random.default_rng(4)
    shape = (4, 7, 7)
    w = np.repeat(np.repeat(rng.integers(-30, 31, size=(2, 4, 3, 3)), 2, axis=2), 2, axis=3)
    c = conv_core(rng, "c", 4, 2, (6, 6), (7, 7), stride=(2, 2), pad=(1, 2), vth=40, w=w, pool=(2, 2))
    return graph_of([c, out_core(rng, c.output_shape)], shape), random_spikes(rng, 5, 2, shape)


def current_wrap_and_saturation():
    """a << 6 beyond 2**23 wraps (weight_exp 7); an output that saturates at 2**23 - 1."""
    rng = np.random.default_rng(5)
    shape = (1, 2, 4)
    spikes = random_spikes(rng, 12, 3, shape, p=0.8)
    spikes[:, 0] = 1
    h1 = Core("h1", "dense", np.full((3, 8), 254) * np.array([[1], [-1], [1]]), shape, (3,), vth=5, weight_exp=7)
    out = Core("out", "dense", np.full((2, 3), 254), (3,), (2,), vth=0, spiking=False, weight_exp=7)
    return graph_of([h1, out], shape, timesteps=12), spikes


def largest_threshold():
    """vth = VTH_MAX: v must climb to within 63 of the clip to spike."""
    rng = np.random.default_rng(6)
    shape = (1, 2, 4)
    spikes = random_spikes(rng, 12, 2, shape, p=0.8)
    spikes[:, 0] = 1
    h = Core("h", "dense", np.full((2, 8), 254), shape, (2,), vth=fx.VTH_MAX, weight_exp=3)
    return graph_of([h, out_core(rng, (2,))], shape, timesteps=12), spikes


def leak_signed_input_24bit_overflow():
    """dv > 0, signed input, and weight_exp 7 layers that saturate v and wrap the output's
    current both ways (rows of +254 and of -256)."""
    rng = np.random.default_rng(7)
    hidden = Core("leaky", "dense", dense_w(rng, 12, 12, -128, 127), (12,), (12,), vth=60, dv=700)
    loud_weights = np.zeros((6, 12), dtype=np.int64)
    loud_weights[:, :4] = 254           # at most 4 inputs: 4 * 254 << 13 stays below 2**23
    loud = Core("loud", "dense", loud_weights, (12,), (6,), vth=fx.VTH_MAX, dv=100, weight_exp=7)
    out = Core("out", "dense", np.repeat([[254], [254], [-256], [-256]], 6, axis=1), (6,), (4,), vth=1,
               spiking=False, weight_exp=7)
    graph = graph_of([hidden, loud, out], (1, 3, 4), timesteps=8)
    return graph, encoded(graph, 2, 8)


def all_negative_dense():
    """Lava picks its inhibitory mode for a matrix without positive weights and clips -256
    to -255 unless told the weights are mixed-sign."""
    weights = np.zeros((2, 6), dtype=np.int64)
    weights[0] = -256
    graph = graph_of([Core("out", "dense", weights, (6,), (2,), vth=1, spiking=False)], (1, 2, 3), timesteps=4)
    return graph, encoded(graph, 1, 4)


def dense_flat_after_conv():
    """A dense core may declare its input flat (C*H*W,) after a conv: C-order columns."""
    rng = np.random.default_rng(8)
    shape = (2, 4, 3)
    c1 = conv_core(rng, "c1", 2, 3, (3, 3), (4, 3), pad=(1, 1), vth=20)
    h = Core("h", "dense", dense_w(rng, 6, 36), (36,), (6,), vth=30)
    spikes = random_spikes(rng, 6, 2, shape)
    spikes[:, :, 1] = 0
    return graph_of([c1, h, out_core(rng, (6,))], shape), spikes


def conv_sum_wraps_24bit():
    """Lava's Conv wraps its sums modulo 2**24 ('signed_clamp'): 67,200 inputs of 127."""
    channels = 4200
    weights = np.full((1, channels, 4, 4), 127)
    graph = graph_of([Core("out", "conv", weights, (channels, 4, 4), (1, 1, 1), vth=1, spiking=False)],
                     (channels, 4, 4), timesteps=2, encoding=enc((channels, 4, 4), 0.0, 1.0))
    return graph, np.ones((2, 1, channels, 4, 4), dtype=np.int8)


def wide_conv_beyond_float32():
    """|sum w| >= 2**24: float32 is no longer exact (hwsim falls back to float64, ONNX
    splits the fan-in), and the conv sum wraps at 24 bit."""
    rng = np.random.default_rng(9)
    w = np.full((1, 8200, 4, 4), -128)
    w[0, :9, 0, 0] = 127
    c = conv_core(rng, "c", 8200, 1, (4, 4), (4, 4), vth=7, w=w)
    spikes = random_spikes(rng, 2, 2, (8200, 4, 4), p=0.9)
    spikes[:, 0] = 1
    return graph_of([c, out_core(rng, (1, 1, 1))], (8200, 4, 4), timesteps=2), spikes


def shortcut_w(rng, *shape, lo=-40, hi=40):
    """Shortcut weights: Lava's mixed-sign grid (even values), as a Sparse synapse applies them."""
    return rng.integers(lo, hi + 1, size=shape) * 2


def residual_identity_and_projection():
    """Two residual blocks on a non-square map with leak: an identity shortcut (weight x 2**2)
    and a 1x1 stride-2 projection (weight_exp -1, floor), plus a shortcut from the signed input."""
    rng = np.random.default_rng(10)
    shape = (2, 6, 5)
    c1 = conv_core(rng, "c1", 2, 4, (3, 3), (6, 5), pad=(1, 1), vth=25, dv=300)
    w2, from_input = rng.integers(-30, 31, size=(4, 4, 3, 3)), shortcut_w(rng, 4, 2, 1, 1)
    c2 = conv_core(rng, "c2", 4, 4, (3, 3), (6, 5), pad=(1, 1), vth=30, w=w2,
                   shortcuts=[Shortcut("input", "conv", from_input, shape, weight_exp=1)])
    c3 = conv_core(rng, "c3", 4, 4, (3, 3), (6, 5), pad=(1, 1), vth=50, dv=200,
                   shortcuts=[Shortcut("c1", "identity", [36], c1.output_shape, weight_exp=2)])
    c4 = conv_core(rng, "c4", 4, 6, (3, 3), (6, 5), stride=(2, 2), pad=(1, 1), vth=20)
    w5, projection = rng.integers(-30, 31, size=(6, 6, 3, 3)), shortcut_w(rng, 6, 4, 1, 1)
    c5 = conv_core(rng, "c5", 6, 6, (3, 3), c4.output_shape[1:], pad=(1, 1), vth=40, dv=100, w=w5,
                   shortcuts=[Shortcut("c3", "conv", projection, c3.output_shape, weight_exp=-1, stride=(2, 2))])
    cores = [c1, c2, c3, c4, c5, out_core(rng, c5.output_shape)]
    return graph_of(cores, shape), random_spikes(rng, 7, 3, shape)


def residual_after_pool_dense():
    """A block after a folded 2x2 pool: the projection is 2x2 with stride 2 (the pool folded
    into a 1x1 conv); a dense population with an identity shortcut from a dense one."""
    rng = np.random.default_rng(11)
    shape = (3, 8, 6)
    c1 = conv_core(rng, "c1", 3, 4, (3, 3), (8, 6), pad=(1, 1), vth=20)
    w = np.repeat(np.repeat(rng.integers(-30, 31, size=(5, 4, 3, 3)), 2, axis=2), 2, axis=3)
    projection = np.repeat(np.repeat(shortcut_w(rng, 5, 4, 1, 1), 2, 2), 2, 3)     # a 1x1 conv after the pool
    c2 = conv_core(rng, "c2", 4, 5, (6, 6), (8, 6), stride=(2, 2), pad=(2, 2), vth=60, w=w, pool=(2, 2),
                   shortcuts=[Shortcut("c1", "conv", projection, c1.output_shape, stride=(2, 2))])
    h1 = Core("h1", "dense", dense_w(rng, 8, math.prod(c2.output_shape)), c2.output_shape, (8,), vth=40,
              weight_exp=-1)
    h2 = Core("h2", "dense", dense_w(rng, 8, 8), (8,), (8,), vth=30, dv=500,
              shortcuts=[Shortcut("h1", "identity", [-50], (8,), weight_exp=1)])
    return graph_of([c1, c2, h1, h2, out_core(rng, (8,))], shape), random_spikes(rng, 6, 2, shape, p=0.6)


def neuron_biases():
    """Biases (Loihi's ``bias << bias_exp`` added to v each step): per channel on convs with
    leak, the most negative one (-4096 << 7) and one that fires its channel at every step,
    per neuron on a dense core beside an identity shortcut, and on the output accumulator."""
    rng = np.random.default_rng(12)
    shape = (2, 6, 5)
    c1 = conv_core(rng, "c1", 2, 4, (3, 3), (6, 5), pad=(1, 1), vth=40, dv=300)
    c1.bias, c1.bias_exp = np.array([700, -900, 4095, 0]), 2
    c1.__post_init__()
    c2 = conv_core(rng, "c2", 4, 3, (3, 3), (6, 5), stride=(2, 1), pad=(1, 0), vth=50)
    c2.bias, c2.bias_exp = np.array([-4096, 1500, -35]), 7
    c2.__post_init__()
    n2 = math.prod(c2.output_shape)
    h1 = Core("h1", "dense", dense_w(rng, 6, n2), c2.output_shape, (6,), vth=30, weight_exp=-1,
              bias=rng.integers(-3000, 3001, size=6), bias_exp=1)
    h2 = Core("h2", "dense", dense_w(rng, 6, 6), (6,), (6,), vth=25, dv=900, bias=rng.integers(-2000, 2001, size=6),
              shortcuts=[Shortcut("h1", "identity", [30], (6,))])
    out = out_core(rng, (6,), dv=50)
    out.bias = np.array([-300, 0, 2200])
    out.__post_init__()
    return graph_of([c1, c2, h1, h2, out], shape), random_spikes(rng, 8, 3, shape, p=0.3)


def bursts_after_silence():
    """Input only at the first step, in one corner: neurons keep firing on their stored charge
    for up to seven steps with no input event at all (an event-driven core must update them),
    while the rest of the map stays at rest (and may be skipped)."""
    rng = np.random.default_rng(13)
    shape = (2, 6, 6)
    w = np.zeros((4, 2, 3, 3), dtype=np.int64)
    w[:, :, 1, 1] = rng.integers(10, 81, size=(4, 2))              # centre taps only: no spreading
    c1 = conv_core(rng, "c1", 2, 4, (3, 3), (6, 6), pad=(1, 1), vth=20, w=w)
    c2 = conv_core(rng, "c2", 4, 3, (3, 3), (6, 6), pad=(1, 1), vth=30)
    spikes = np.zeros((9, 2, *shape), dtype=np.int8)
    spikes[0, :, :, :3, :3] = 1
    spikes[0, 1, 1, 0, 0] = 0
    return graph_of([c1, c2, out_core(rng, c2.output_shape)], shape, timesteps=9), spikes


def initial_potentials():
    """Neurons that start charged (``Core.v_init``): half the threshold with leak on a conv,
    the whole threshold (fires on the first positive input, never without) on a sparse map
    that an event-driven core may skip, beside a bias and an identity shortcut on a dense
    core 3 synapses down the chain (Lava holds its state until its input arrives), with the
    deterministic integrate encoding's input."""
    rng = np.random.default_rng(14)
    shape = (2, 6, 6)
    c1 = conv_core(rng, "c1", 2, 4, (3, 3), (6, 6), pad=(1, 1), vth=40, dv=300)
    c1.v_init = 40 << 5
    c1.__post_init__()
    c2 = conv_core(rng, "c2", 4, 3, (3, 3), (6, 6), stride=(2, 2), pad=(1, 1), vth=50)
    c2.v_init = 50 << 6
    c2.__post_init__()
    n2 = math.prod(c2.output_shape)
    h1 = Core("h1", "dense", dense_w(rng, 6, n2), c2.output_shape, (6,), vth=30, dv=700, v_init=(30 << 6) - 1,
              bias=rng.integers(-300, 301, size=6))
    h2 = Core("h2", "dense", dense_w(rng, 6, 6), (6,), (6,), vth=150, v_init=150 << 5,
              shortcuts=[Shortcut("h1", "identity", [30], (6,))])
    graph = graph_of([c1, c2, h1, h2, out_core(rng, (6,))], shape, timesteps=7,
                     encoding=InputEncoding.of(shape, [0.5, 0.5], [0.5, 0.5], rule="integrate"))
    return graph, encoded(graph, 3, 7)


CASES = {f.__name__: f for f in (dense_exp_and_leak, conv_nonsymmetric_nonsquare_leak, folded_pools,
                                 folded_pool_odd_input, current_wrap_and_saturation, largest_threshold,
                                 leak_signed_input_24bit_overflow, all_negative_dense, dense_flat_after_conv,
                                 conv_sum_wraps_24bit, wide_conv_beyond_float32,
                                 residual_identity_and_projection, residual_after_pool_dense, neuron_biases,
                                 bursts_after_silence, initial_potentials)}
