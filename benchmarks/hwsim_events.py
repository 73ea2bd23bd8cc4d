"""hwsim's cost against the firing rate: event-driven, dense, and a dense fp32 conv of the same layers.

    python benchmarks/hwsim_events.py                        # VGG5's convs, 3x32x32, rates 2/5/10/20 %

For each rate the input spikes of a VGG5-like conv stack (benchmarks/hwsim_vs_lava.py's
graph: folded pools, random 8-bit weights) are drawn at that rate and every layer's
threshold is calibrated to fire at it. Then, interleaved in rotating rounds: hwsim with
its default (event-driven where a block's input density is at most
``hwsim.simulate.EVENT_DENSITY``), hwsim forced dense (``event_density=0``), and the
same layers as plain fp32 torch convs on the same spike tensors (no neurons: the floor
a dense simulator cannot beat). Prints the median ms per image-step, each one's ratio
to the dense conv, and the ratio of the event-driven time at the lowest rate to that
at the highest (target: at most 1/3 between 2 % and 20 %).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.hwsim_vs_lava import VGG5_CONVS, build_vgg, calibrate  # noqa: E402
from hwsim.plan import make_plans  # noqa: E402
from hwsim.simulate import simulate  # noqa: E402


def dense_convs(graph, spikes: np.ndarray):
    """The graph's convolutions as fp32 torch convs over all image-steps at once."""
    weights = [(torch.from_numpy(c.weights).float(), c.stride, c.padding) for c in graph.cores if c.op == "conv"]
    x0 = torch.from_numpy(spikes.reshape(-1, *spikes.shape[2:])).float()

    def run():
        with torch.inference_mode():
            x = x0
            for w, stride, padding in weights:
                x = (F.conv2d(x, w, stride=stride, padding=padding) > 0).float()
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", type=float, nargs="+", default=[0.02, 0.05, 0.10, 0.20])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--timesteps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"VGG5 convs, 3x32x32, {args.images} images x T={args.timesteps}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} rounds (interleaved)")
    rng = np.random.default_rng(args.seed)
    rows = []
    for rate in args.rates:
        g = build_vgg(VGG5_CONVS, [], timesteps=args.timesteps, seed=args.seed)
        spikes = (rng.random((args.timesteps, args.images, *g.input.shape)) < rate).astype(np.int8)
        calibrate(g, spikes[:, :2], target=rate)
        plans = make_plans(g, torch.device("cpu"))
        methods = {
            "hwsim (events)": lambda: simulate(g, spikes, plans=plans),
            "hwsim (dense)": lambda: simulate(g, spikes, plans=plans, event_density=0.0),
            "fp32 conv": dense_convs(g, spikes),
        }
        fired = simulate(g, spikes, plans=plans)
        seconds = {name: [] for name in methods}
        for fn in methods.values():
            fn()                                                   # warm-up (numba's compile, allocators)
        names = list(methods)
        for r in range(args.repeats):
            for name in names[r % 3:] + names[:r % 3]:
                start = time.perf_counter()
                methods[name]()
                seconds[name].append(time.perf_counter() - start)
        steps = args.images * args.timesteps
        med = {name: statistics.median(v) / steps * 1e3 for name, v in seconds.items()}
        layer_rates = ", ".join(f"{l.spikes / (l.neurons * steps):.3f}" for l in fired.layers if l.spiking)
        print(f"\nrate {rate:.2f} (layers fired {layer_rates} per neuron-step)")
        for name in names:
            print(f"  {name:<15} min {min(seconds[name]) / steps * 1e3:7.3f}  median {med[name]:7.3f} ms/image-step"
                  f"  = {med[name] / med['fp32 conv']:5.2f}x the fp32 conv")
        rows.append((rate, med["hwsim (events)"]))
    lo, hi = min(rows), max(rows)
    print(f"\nhwsim (events) at rate {lo[0]:.2f} / at rate {hi[0]:.2f}: {lo[1] / hi[1]:.2f}")


if __name__ == "__main__":
    main()
