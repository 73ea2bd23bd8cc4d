"""hwsim on VGG16 (13 convs with folded pools, 3 dense layers) on CIFAR-sized images: on the
GPU, 1,500 images at T = 100 timed once (target < 10 s on one H100); on the CPU, hwsim by
default and on each path alone, interleaved in rounds; ``--check`` compares a few steps with
``export.fixedpoint.run_reference``. Run through ``benchmarks/hwsim_vs_lava.py --arch vgg16``."""
from __future__ import annotations

import math
import statistics
import sys
import time

import numpy as np
import torch

from benchmarks.interleave import interleaved
from benchmarks.vgg_graphs import VGG16_CONVS, VGG16_DENSE, build_vgg, calibrate, random_images
from export.graph import CoreGraph
from hwsim.plan import make_plans
from hwsim.simulate import SimOptions, simulate

# hwsim as it runs by default, and each path alone: the methods of both CPU benchmarks
# (VGG5's convs and VGG16; ``--paths`` picks among them for VGG16)
PATHS = {"default": ("hwsim", {}), "events": ("hwsim, event path", dict(event_density=math.inf)),
         "int8": ("hwsim, int8 path", dict(event_density=0.0, int8=True)),
         "dense": ("hwsim, dense float path", dict(event_density=0.0, int8=False))}


def vgg16_cpu_paths(args, g: CoreGraph, images: np.ndarray, steps: int) -> bool:
    """VGG16 on the CPU: the methods of ``args.paths`` (``PATHS``), on plans built once (as
    ``hwsim.run`` builds them per network: building VGG16's costs about a second), in a
    random order per round, each called twice with the second call timed; min and median
    time per image-step, and whether every method's output is the same."""
    plans = make_plans(g, torch.device("cpu"))
    paths = dict(PATHS[key] for key in args.paths)
    outputs = {}

    def run(name):
        r = simulate(g, (images, 0), timesteps=steps, plans=plans, options=SimOptions(chunk=args.chunk,
                                                                                       **paths[name]))
        outputs[name] = r
        return r
    for name in paths:
        run(name)                                                  # warm-up: numba's compile, allocators

    def seconds_per_image_step(name):
        run(name)
        t = time.perf_counter()
        res = run(name)
        return (time.perf_counter() - t) / res.image_steps
    seconds = interleaved(paths, args.repeats, seconds_per_image_step, "shuffle", args.seed)
    first = next(iter(paths))
    res = outputs[first]
    print(f"hwsim on the CPU: VGG16, T={steps}, {len(images)} CIFAR-sized images per call, Poisson encoding "
          f"included; {args.repeats} rounds; {torch.get_num_threads()} torch threads; "
          f"plan: chunk {res.plan[0]['chunk']}, steps per block {res.plan[0]['steps_per_block']}")
    print("  firing rates per neuron-step: " + ", ".join(
        f"{l.name} {l.spikes / (l.neurons * res.image_steps):.3f}" for l in res.layers if l.spiking))
    base = statistics.median(seconds[first])
    for name, v in seconds.items():
        med = statistics.median(v)
        print(f"  {name:<25} min {min(v) * 1e3:6.3f} ms  median {med * 1e3:6.3f} ms per image-step "
              f"({1 / med:6.1f} image-steps/s; {med / base:5.2f}x {first}'s time)")
    same = all(np.array_equal(o.output, res.output) for o in outputs.values())
    print(f"  every method's output voltages equal: {'YES' if same else 'NO'}")
    return same


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
    if device != "cuda":
        ok = vgg16_cpu_paths(args, g, images, steps)
        return 0 if ok and (not args.check or agrees_with_reference(g, images, steps, device)) else 1
    print(f"GPU: {torch.cuda.get_device_name()}")
    simulate(g, (images[:min(n, 64)], 0), timesteps=min(steps, 4), device=device)      # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    r = simulate(g, (images, 0), timesteps=steps, device=device,
                 options=SimOptions(chunk=args.chunk, threads=args.threads))
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(f"hwsim on {device}: VGG16, T={steps}, {n} CIFAR-sized images in {dt:.2f} s "
          "(target < 10 s for 1,500 images at T=100 on one H100), "
          f"Poisson encoding included -> {r.image_steps / dt:,.0f} image-steps/s, "
          f"{r.synaptic_events / dt:,.3g} synaptic events/s")
    print("  firing rates per neuron-step: " + ", ".join(
        f"{l.name} {l.spikes / (l.neurons * r.image_steps):.3f}" for l in r.layers if l.spiking))
    print(f"  plan: chunk {r.plan[0]['chunk']}, steps per block {r.plan[0]['steps_per_block']}, "
          + "; ".join(f"{p['name']}: {p['dtype']}" + (f", pool {p['pool_rewrite']}" if p["pool_rewrite"] else "")
                      for p in r.plan))
    print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0 if not args.check or agrees_with_reference(g, images, steps, device) else 1


def agrees_with_reference(g: CoreGraph, images: np.ndarray, steps: int, device: str) -> bool:
    """hwsim against ``export.fixedpoint.run_reference`` on 2 images x 3 steps: bit for bit?"""
    from export.fixedpoint import run_reference
    k, ts = min(len(images), 2), min(steps, 3)
    sp = g.input.encode(images[:k], ts, seed=0)
    ref = run_reference(g, sp)
    got = simulate(g, sp, device=device, record_spikes=True)
    ok = all(np.array_equal(a, b) for a, b in zip(ref.spikes, got.spike_trains)) and \
        np.array_equal(ref.output, got.output)
    print(f"  bit-exact vs export.fixedpoint.run_reference on {k} images x {ts} steps: {'YES' if ok else 'NO'}")
    return ok
