"""Benchmark: hwsim's integer LIF core vs Lava's bit-accurate simulator (docs/fixedpoint.md).

    python benchmarks/hwsim_vs_lava.py                     # CPU: VGG5 convs, hwsim batch vs Lava 1 image
    python benchmarks/hwsim_vs_lava.py --no-lava           # hwsim only
    python benchmarks/hwsim_vs_lava.py --device cuda       # GPU: VGG16, T=100, 1,500 CIFAR-sized images
    python benchmarks/hwsim_vs_lava.py --arch vgg16 --check   # the same graph, small, on the CPU

CPU run: a VGG5-like graph -- the three conv layers of VGG5 on a 32x32x3 input with the
average pools folded into the next layer (6x6 stride-2 conv; a pooled dense output),
random 8-bit weights, thresholds calibrated so that each layer fires at a realistic rate
(~10 % of neurons per step). The same Poisson inputs go through hwsim (a batch of images
x T steps) and through Lava (``export.lava.builder.run_lava``: 1 image, a few steps);
the script prints the time per image-step of both, the ratio (target >= 1000x on 2 CPU
cores), synaptic events per second, and checks that both agree bit for bit on the steps
both ran. GPU run: VGG16 (13 convs with folded pools + 3 dense layers) at T=100 on 1,500
images (target < 10 s).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # see hwsim/run.py: spinning OpenMP threads stall on busy cores

from export.graph import Core, CoreGraph  # noqa: E402
from records.encoding import InputEncoding  # noqa: E402
import torch  # noqa: E402

from hwsim.plan import make_plans  # noqa: E402
from hwsim.simulate import simulate  # noqa: E402

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


def bench_hwsim(graph, spikes, device, repeats=2, **kw):
    """Best of ``repeats`` runs; the per-graph setup (weights to the device) is timed apart."""
    t = time.perf_counter()
    plans = make_plans(graph, torch.device(device))
    setup = time.perf_counter() - t
    simulate(graph, spikes[:, :min(spikes.shape[1], 4)], device=device, plans=plans, **kw)       # warm-up
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        r = simulate(graph, spikes, device=device, plans=plans, **kw)
        dt = time.perf_counter() - t
        if best is None or dt < best[0]:
            best = (dt, r)
    return best + (setup,)


def cpu_main(args) -> int:
    g = build_vgg(VGG5_CONVS, [], timesteps=args.timesteps, seed=args.seed)
    images = random_images(args.images, g.input.shape, seed=args.seed + 1)
    spikes = g.input.encode(images, args.timesteps, seed=args.seed)
    print("VGG5 convs on 3x32x32 (folded pools), cores: "
          + ", ".join(f"{c.name} {c.op} {tuple(c.weights.shape)}->{c.output_shape}" for c in g.cores))
    t = time.perf_counter()
    calib = spikes[:, :2]
    rates = calibrate(g, calib, target=args.rate)
    print(f"thresholds (vth) {[c.vth for c in g.cores if c.spiking]} -> calibration rates "
          f"{[round(r, 3) for r in rates]} per neuron-step ({time.perf_counter() - t:.1f} s)")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes share the cores)")
    dt, r, setup = bench_hwsim(g, spikes, "cpu", sparse=args.sparse)
    steps = r.image_steps
    per = dt / steps
    print(f"\nhwsim: {args.images} images x T={args.timesteps} = {steps} image-steps in {dt:.2f} s "
          f"(+ {setup:.2f} s one-time setup) "
          f"-> {per * 1e3:.3f} ms per image-step, {steps / dt:,.0f} image-steps/s, "
          f"{r.synaptic_events / dt:,.3g} synaptic events/s")
    print("  firing rates per neuron-step: " + ", ".join(
        f"{l.name} {l.spikes / (l.neurons * steps):.3f}" for l in r.layers if l.spiking))
    print("  plan: " + "; ".join(f"{p['name']}: {p['dtype']}" + (f", pool {p['pool_rewrite']}" if p['pool_rewrite']
                                                                  else "") for p in r.plan))
    if args.no_lava:
        return 0
    try:
        from export.lava.builder import run_lava
    except ImportError as exc:
        print(f"\nLava comparison impossible: export.lava.builder.run_lava is not available ({exc}); "
              "rerun with --no-lava for hwsim alone", file=sys.stderr)
        return 1
    lava_steps = args.lava_steps
    x = spikes[:lava_steps, :1]
    latency = len(g.cores)
    t = time.perf_counter()
    lv = run_lava(g, x, record_spikes=True, progress=False)
    wall = time.perf_counter() - t
    ref = simulate(g, x, record_spikes=True)
    agree = all(np.array_equal(a, b) for a, b in zip(lv.spikes, ref.spike_trains)) and \
        np.array_equal(lv.output, ref.output)
    print(f"\nLava (fixed_pt, CPU): 1 image x {lava_steps} steps (+{latency} latency steps) in {wall:.1f} s, "
          f"build and compile included: {wall / lava_steps:.3f} s per image-step "
          f"(run_lava reports {float(lv.seconds_per_image_step):.3f} s per Lava step)")
    marginal = None
    if lava_steps > 1:
        t = time.perf_counter()
        run_lava(g, spikes[:1, :1], record_spikes=True, progress=False)
        wall1 = time.perf_counter() - t
        if wall > wall1:
            marginal = (wall - wall1) / (lava_steps - 1)
            print(f"Lava steady state (the same run with 1 step took {wall1:.1f} s): {marginal:.3f} s per extra step")
    print(f"\nhwsim vs Lava per image-step: {wall / lava_steps / per:,.0f}x (Lava incl. build)"
          + (f", {marginal / per:,.0f}x (Lava steady state)" if marginal else "")
          + "  -- target >= 1000x on 2 CPU cores")
    print(f"bit-exact agreement on the {lava_steps} steps both ran (spikes of every layer + output voltage): "
          f"{'YES' if agree else 'NO'}")
    return 0 if agree else 1


def vgg16_main(args) -> int:
    """VGG16 (13 convs, pools folded, 3 dense layers) on CIFAR-sized images; the GPU figure."""
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA GPU", file=sys.stderr)
        return 2
    n = args.images or (1500 if device == "cuda" else 8)
    steps = args.timesteps or (100 if device == "cuda" else 4)
    g = build_vgg(VGG16_CONVS, VGG16_DENSE, timesteps=steps, seed=args.seed)
    images = random_images(n, g.input.shape, seed=args.seed + 1)
    t = time.perf_counter()
    calib = g.input.encode(images[:4], min(steps, 32), seed=args.seed)
    rates = calibrate(g, calib, target=args.rate, device=device)
    print(f"VGG16 ({len(g.cores)} cores) on 3x32x32, thresholds calibrated to rates "
          f"{[round(r, 3) for r in rates]} ({time.perf_counter() - t:.1f} s)")
    if device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    simulate(g, (images[:min(n, 64)], 0), timesteps=min(steps, 4), device=device)      # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    r = simulate(g, (images, 0), timesteps=steps, device=device, chunk=args.chunk, threads=args.threads)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    target = " (target < 10 s for 1,500 images at T=100 on one H100)" if device == "cuda" else ""
    print(f"hwsim on {device}: VGG16, T={steps}, {n} CIFAR-sized images in {dt:.2f} s{target}, "
          f"Poisson encoding included -> {r.image_steps / dt:,.0f} image-steps/s, "
          f"{r.synaptic_events / dt:,.3g} synaptic events/s")
    print("  firing rates per neuron-step: " + ", ".join(
        f"{l.name} {l.spikes / (l.neurons * r.image_steps):.3f}" for l in r.layers if l.spiking))
    print(f"  plan: chunk {r.plan[0]['chunk']}, steps per block {r.plan[0]['steps_per_block']}, "
          + "; ".join(f"{p['name']}: {p['dtype']}" + (f", pool {p['pool_rewrite']}" if p["pool_rewrite"] else "")
                      for p in r.plan))
    if device == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    if args.check:
        k, ts = min(n, 2), min(steps, 3)
        sp = g.input.encode(images[:k], ts, seed=0)
        from export.fixedpoint import run_reference
        ref = run_reference(g, sp)
        got = simulate(g, sp, device=device, record_spikes=True)
        ok = all(np.array_equal(a, b) for a, b in zip(ref.spikes, got.spike_trains)) and \
            np.array_equal(ref.output, got.output)
        print(f"  bit-exact vs export.fixedpoint.run_reference on {k} images x {ts} steps: {'YES' if ok else 'NO'}")
        return 0 if ok else 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--arch", choices=("vgg5", "vgg16"), default=None,
                   help="vgg5: the three conv layers, vs Lava (CPU default); vgg16: the GPU figure (cuda default)")
    p.add_argument("--check", action="store_true", help="vgg16: also check a few steps against run_reference")
    p.add_argument("--images", type=int, default=None, help="hwsim batch (cpu: 64; cuda: 1500)")
    p.add_argument("--timesteps", "-T", type=int, default=None, help="hwsim steps (cpu: 32; cuda: 100)")
    p.add_argument("--lava-steps", type=int, default=3, help="steps of the single Lava image (default 3)")
    p.add_argument("--no-lava", action="store_true", help="hwsim only")
    p.add_argument("--rate", type=float, default=0.10, help="target firing rate per neuron and step")
    p.add_argument("--sparse", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.sparse = {"auto": "auto", "on": True, "off": False}[args.sparse]
    if args.arch == "vgg16" or (args.device == "cuda" and args.arch is None):
        return vgg16_main(args)
    args.images = args.images or 64
    args.timesteps = args.timesteps or 32
    if not args.no_lava and args.lava_steps > args.timesteps:
        p.error("--lava-steps must not exceed --timesteps")
    return cpu_main(args)


if __name__ == "__main__":
    sys.exit(main())
