"""Where a training iteration's time goes, per method: forward, backward and optimizer
apart, and the synaptic products apart from the neurons and the glue.

    python benchmarks/train_profile.py                          # CPU: VGG5, T = 16, batch 16, fp32
    python benchmarks/train_profile.py --arch vgg9 --timesteps 8 --batch 32
    python benchmarks/train_profile.py --arch vgg9 --timesteps 8 --batch 32 --bf16 --layout nhwc --backends numba

The methods are ``benchmarks/train_speed.py``'s (our backends, SpikingJelly when installed,
the synaptic work alone), on the same weights and data. Each is warmed up, then timed for
``--iters`` iterations per round over ``--repeats`` rounds in a rotating order, each phase
on its own clock (medians printed); one more iteration runs under torch's profiler, whose
self times are summed into the synaptic products (convolutions and matrix products,
forward and backward) and the rest. The rest is what a neuron backend can win: the
recurrence, its saved state, casts, copies and the optimizer.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.interleave import interleaved  # noqa: E402
from benchmarks.machine import HEAP_CHOICES, HEAP_HELP, describe, set_heap  # noqa: E402
from benchmarks.train_speed import SPIKINGJELLY, SYNAPSES, TrainingStep, sync  # noqa: E402

SYNAPTIC_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution", "aten::convolution_backward",
                "aten::_convolution", "aten::cudnn_convolution", "aten::_mkldnn_convolution")
PHASES = ("forward", "backward", "optimizer")


def timed_phases(step: TrainingStep, device: torch.device) -> dict[str, float]:
    """Seconds of each phase of one iteration."""
    times = {}
    sync(device)
    start = time.perf_counter()
    loss = step.loss()
    sync(device)
    times["forward"] = time.perf_counter() - start
    start = time.perf_counter()
    loss.backward()
    sync(device)
    times["backward"] = time.perf_counter() - start
    start = time.perf_counter()
    step.optimizer.step()
    sync(device)
    times["optimizer"] = time.perf_counter() - start
    return times


def op_split(step: TrainingStep, top: int) -> tuple[float, float, list[tuple[str, float, int]]]:
    """(synaptic seconds, other seconds, the ``top`` ops by self time) of one profiled iteration."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    synaptic = sum(e.self_cpu_time_total for e in events if e.key in SYNAPTIC_OPS) / 1e6
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    return synaptic, total - synaptic, [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in events[:top]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg5")
    p.add_argument("--timesteps", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=2, help="iterations per method and round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=8, help="ops listed per method")
    p.add_argument("--backends", nargs="+", default=["multistep"])
    p.add_argument("--bf16", action="store_true", help="synapses under bf16 autocast")
    p.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw",
                   help="every method's memory layout (train_speed's --layouts)")
    p.add_argument("--weight-bits", type=int, default=None,
                   help="our backends on the export's weight grid, as the chain fine-tunes (SpikingJelly without)")
    p.add_argument("--heap", choices=HEAP_CHOICES, default="reuse", help=HEAP_HELP)
    args = p.parse_args()
    device = torch.device("cpu")
    print(describe("cpu") + set_heap(args.heap), flush=True)
    methods = list(args.backends)
    if importlib.util.find_spec("spikingjelly") is not None:
        methods.append(SPIKINGJELLY)
    methods.append(SYNAPSES)
    steps = {m: TrainingStep(m, args.arch, args.timesteps, args.batch, device, args.bf16, args.layout,
                             args.weight_bits if m in args.backends else None) for m in methods}
    for step in steps.values():
        step()
    rounds = interleaved(methods, args.repeats, lambda m: [timed_phases(steps[m], device) for _ in range(args.iters)])
    phases = {m: {ph: [it[ph] for rnd in rounds[m] for it in rnd] for ph in PHASES} for m in methods}
    precision = "bf16 synapses" if args.bf16 else "fp32"
    grid = f", {args.weight_bits}-bit weight grid" if args.weight_bits else ""
    print(f"{args.arch}, T={args.timesteps}, batch {args.batch}, {precision}, {args.layout}{grid}, "
          f"{torch.get_num_threads()} threads; medians of {args.iters * args.repeats} iterations, seconds")
    print(f"{'method':<16}" + "".join(f"{ph:>11}" for ph in PHASES) + f"{'total':>9}{'img/s':>8}"
          + f"{'synaptic':>10}{'rest':>8}")
    splits = {}
    for m in methods:
        med = {ph: statistics.median(v) for ph, v in phases[m].items()}
        total = sum(med.values())
        splits[m] = op_split(steps[m], args.top)
        print(f"{m:<16}" + "".join(f"{med[ph]:11.3f}" for ph in PHASES) + f"{total:9.3f}{args.batch / total:8.2f}"
              + f"{splits[m][0]:10.3f}{splits[m][1]:8.3f}")
    print("\n(synaptic / rest: self times of one profiled iteration)")
    for m in methods:
        print(f"\n{m}: top ops by self time")
        for name, seconds, count in splits[m][2]:
            print(f"  {name:<36}{seconds:8.3f} s {count:6d} calls")


if __name__ == "__main__":
    main()
