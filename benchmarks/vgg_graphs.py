"""The synthetic core graphs of the hwsim benchmarks: VGG5's convs and VGG16 on CIFAR-sized
inputs with their average pools folded into the next layer, random 8-bit weights, and every
layer's threshold calibrated to fire at a target rate."""
from __future__ import annotations

import math

import numpy as np

from export.graph import Core, CoreGraph
from hwsim.simulate import simulate
from records.encoding import InputEncoding

VGG5_CONVS = [64, "A", 128, 128, "A"]
VGG16_CONVS = [64, 64, "A", 128, 128, "A", 256, 256, 256, "A", 512, 512, 512, "A", 512, 512, 512]
VGG16_DENSE = [4096, 4096]


def _conv_weights(rng, cout, cin, pooled: bool) -> tuple[np.ndarray, tuple, tuple]:
    """Random 8-bit 3x3 weights; after a 2x2 average pool the pool is folded in: a 6x6,
    stride-2 kernel, each 3x3 weight spread over a 2x2 block (the /4 goes to the threshold)."""
    w = rng.integers(-127, 128, size=(cout, cin, 3, 3))
    if not pooled:
        return w, (1, 1), (1, 1)
    return np.repeat(np.repeat(w, 2, axis=2), 2, axis=3), (2, 2), (2, 2)


def build_vgg(cfg, dense: list[int], *, input_shape=(3, 32, 32), classes=10, seed=0, timesteps=32) -> CoreGraph:
    rng = np.random.default_rng(seed)
    cores, shape, pooled, k = [], tuple(input_shape), False, 0
    for item in cfg:
        if item == "A":
            if pooled:
                raise ValueError("two pools in a row")
            pooled = True
            continue
        w, stride, pad = _conv_weights(rng, item, shape[0], pooled)
        h = (shape[1] + 2 * pad[0] - w.shape[2]) // stride[0] + 1
        wd = (shape[2] + 2 * pad[1] - w.shape[3]) // stride[1] + 1
        k += 1
        cores.append(Core(f"conv{k}", "conv", w, shape, (item, h, wd), vth=1, stride=stride, padding=pad))
        shape, pooled = (item, h, wd), False
    f = 2 if pooled else 1
    for i, width in enumerate(dense + [classes]):
        last = i == len(dense)
        if len(shape) == 3:
            c, h, wd = shape
            w4 = rng.integers(-127, 128, size=(width, c, h // f, wd // f)) * 2
            w = np.repeat(np.repeat(w4, f, axis=2), f, axis=3).reshape(width, -1)
        else:
            w = rng.integers(-127, 128, size=(width, math.prod(shape))) * 2
        k += 1
        cores.append(Core("output" if last else f"fc{k}", "dense", w, shape, (width,), vth=1 if not last else 0,
                          spiking=not last))
        shape, f = (width,), 1
    return CoreGraph(InputEncoding.of(input_shape, [0.5] * input_shape[0], [0.25] * input_shape[0]), cores,
                     timesteps=timesteps, class_names=[str(i) for i in range(classes)])


def random_images(n, shape, seed=1) -> np.ndarray:
    """Smooth random 'natural-ish' images (uint8)."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    low = rng.integers(0, 256, size=(n, c, max(1, h // 4), max(1, w // 4))).astype(np.float32)
    img = np.repeat(np.repeat(low, 4, axis=2), 4, axis=3)[:, :, :h, :w]
    img += rng.normal(0, 20, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def calibrate(graph: CoreGraph, spikes: np.ndarray, target=0.10, device="cpu") -> list[float]:
    """Set each spiking layer's vth, in order, so that it fires at ~``target`` per neuron and
    step on ``spikes`` (T, N, C, H, W); one layer at a time, fed the previous layer's spikes."""
    rates, x = [], spikes
    for core in graph.cores:
        if not core.spiking:
            continue
        shape = core.input_shape if len(core.input_shape) == 3 else (1, 1, math.prod(core.input_shape))
        x = x.reshape(x.shape[0], x.shape[1], *shape)
        sub = CoreGraph(InputEncoding.of(shape, [0.0] * shape[0], [1.0] * shape[0]), [core, _sink(core)],
                        graph.timesteps, ["x"])

        def rate(vth):
            core.vth = vth
            r = simulate(sub, x, device=device)
            return r.layers[0].spikes / (r.layers[0].neurons * r.image_steps)
        lo, hi = 1, 131071
        while lo < hi:                      # the smallest vth with rate <= target
            mid = (lo + hi) // 2
            if rate(mid) > target:
                lo = mid + 1
            else:
                hi = mid
        core.vth = lo
        r = simulate(sub, x, device=device, record_spikes=True)
        rates.append(r.layers[0].spikes / (r.layers[0].neurons * r.image_steps))
        x = r.spike_trains[0].astype(np.int8)
    return rates


def _sink(core: Core) -> Core:
    n = math.prod(core.output_shape)
    return Core("sink", "dense", np.zeros((1, n), dtype=np.int64), core.output_shape, (1,), vth=0, spiking=False)
