"""The conversion's cost in ANN forward passes: threshold balancing and bias calibration, each
one-pass (kept spikes) vs replay, against the ANN.

    python benchmarks/balance_speed.py                       # VGG5, 3x32x32, T=16, 4 batches of 16
    python benchmarks/balance_speed.py --arch vgg16 --timesteps 100 --device cuda

The unit is one ANN forward over the same T x images (batch T*B, the same layers, no
grad). The five are interleaved in one run, in a rotating order, ``--repeats`` times;
min and median seconds and each one's ratio to the ANN pass are printed (target for the
one-pass balancing: <= 1.5x). Random weights; the thresholds of both balancings, and the
biases of both calibrations (on all the images, at the balanced thresholds), are checked equal.
"""
from __future__ import annotations

import argparse
import itertools
import operator
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.interleave import interleaved  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from trainer.calibrate import calibrate_biases, calibrate_biases_by_replay  # noqa: E402
from trainer.convert import balance_thresholds, balance_thresholds_by_replay  # noqa: E402
from trainer.models import ANN, build_config  # noqa: E402


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg5")
    p.add_argument("--timesteps", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    print(describe(args.device), flush=True)
    device = torch.device(args.device)
    torch.manual_seed(0)
    ann = ANN(build_config(args.arch, (3, 32, 32), 10)).to(device).eval()
    # Lift the random net's weights so that spikes reach the last layer within T steps.
    with torch.no_grad():
        for param in ann.parameters():
            param.mul_(2.0)
    xs = [torch.rand(args.batch, 3, 32, 32, device=device) * 2 - 1 for _ in range(args.batches)]
    steps = args.timesteps

    def ann_pass():
        with torch.no_grad():
            for x in xs:
                ann(x.repeat(steps, 1, 1, 1))

    one_pass = lambda: balance_thresholds(ann, lambda: iter(xs), steps, progress=False)  # noqa: E731
    replay = lambda: balance_thresholds_by_replay(ann, lambda: iter(xs), steps)  # noqa: E731
    thresholds = one_pass()
    assert thresholds == replay(), "the two balancings disagree"
    x, scales = torch.cat(xs), list(itertools.accumulate(thresholds, operator.mul))
    calibration = [ann, ann.cfg, ann.state_dict(), thresholds, None, x, steps]
    calibrate = lambda: calibrate_biases(*calibration, scales=scales, encoding="poisson")  # noqa: E731
    calibrate_replay = lambda: calibrate_biases_by_replay(*calibration, scales=scales, encoding="poisson")  # noqa: E731
    fast, slow = calibrate(), calibrate_replay()
    assert all(torch.equal(fast[1][k], slow[1][k]) for k in fast[1]), "the two calibrations disagree"
    methods = {"ANN forward (T*B)": ann_pass, "balancing, one pass": one_pass, "balancing, replay": replay,
               "calibration, one pass": calibrate, "calibration, replay": calibrate_replay}
    seconds = interleaved(methods, args.repeats, lambda name: timed(methods[name], device))
    print(f"{args.arch}, 3x32x32, T={steps}, {args.batches} x {args.batch} images, device {device}, "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats (interleaved)")
    base = statistics.median(seconds["ANN forward (T*B)"])
    for name, values in seconds.items():
        print(f"{name:<24} min {min(values):8.3f} s  median {statistics.median(values):8.3f} s  "
              f"= {statistics.median(values) / base:5.2f}x the ANN pass")


if __name__ == "__main__":
    main()
