"""The float SNN's evaluation speed on the CPU (what the chain's accuracy checks cost: VGG9
on 10,000 images at T = 32 took 890 s of a 148-minute budgeted run), NCHW against the
channels-last layout, beside SpikingJelly's inference on the same layers, interleaved in one run.

    python benchmarks/eval_speed.py                      # VGG9, 3x32x32, T = 4 and 32, batch 128, fp32
    python benchmarks/eval_speed.py --timesteps 4 --bf16

One iteration is ``trainer.evaluate.evaluate_snn``'s arithmetic for one batch: the integrate
encoding of T steps, the synapses of each window as one conv over steps x batch, the numba
neurons, no gradient. Methods: ``snn nchw``, ``snn nhwc`` (``SNN(channels_last=True)``),
SpikingJelly 2.0.0's multi-step IF neurons on the same layers (when installed), and the
synapses alone (the same convs and matmuls on binary inputs at batch T x B, 10 % ones,
forward only, no neurons) in the faster layout. Each round times every method for
``--iters`` batches in a rotating order; after ``--repeats`` rounds it prints min and
median images/s and the medians' ratios to ``snn nchw``.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.interleave import interleaved, items_per_second  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from benchmarks.train_speed import spikingjelly_net, synapse_inputs  # noqa: E402
from records.encoding import integrate_spikes  # noqa: E402
from trainer.models import ANN, build_config, neuron_layers  # noqa: E402
from trainer.snn import SNN  # noqa: E402

SPIKINGJELLY = "spikingjelly"
SYNAPSES = "synapses (T*B) nhwc"


def evaluation(method: str, arch: str, timesteps: int, batch: int, bf16: bool):
    """One batch of ``method``'s evaluation, callable (random weights: the cost does not depend on them)."""
    torch.manual_seed(0)
    cfg = build_config(arch, (3, 32, 32), 10)
    ann = ANN(cfg).eval()
    x = torch.rand(batch, 3, 32, 32) * 2 - 1
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    if method == SYNAPSES:
        ann = ann.to(memory_format=torch.channels_last)
        inputs = synapse_inputs(ann, timesteps * batch, torch.device("cpu"), torch.channels_last)
        run = lambda: [m(v) for m, v in inputs]  # noqa: E731
    elif method == SPIKINGJELLY:
        from spikingjelly.activation_based import functional

        net = spikingjelly_net(ann).eval()

        def run():
            functional.reset_net(net)
            return net(integrate_spikes(x, 0, timesteps)).mean(0)
    else:
        snn = SNN(ann, [1.0] * len(neuron_layers(cfg)), encoding="integrate", channels_last=method == "snn nhwc").eval()
        run = lambda: snn(x, timesteps, window=50)  # noqa: E731

    def once():
        with torch.no_grad(), autocast:
            run()
    return once


def compare(args, timesteps: int, methods: list[str]) -> None:
    steps = {m: evaluation(m, args.arch, timesteps, args.batch, args.bf16) for m in methods}
    for step in steps.values():          # warm-up: allocator, oneDNN's kernels, numba's compilation
        step()
    speeds = interleaved(methods, args.repeats, lambda m: items_per_second(steps[m], args.iters, args.batch))
    medians = {m: statistics.median(v) for m, v in speeds.items()}
    print(f"\nT={timesteps}, batch {args.batch}, {args.iters} batches x {args.repeats} rounds, interleaved")
    print(f"{'method':<22} {'min img/s':>10} {'median img/s':>13} {'vs snn nchw':>12}")
    for m in methods:
        print(f"{m:<22} {min(speeds[m]):10.2f} {medians[m]:13.2f} {medians[m] / medians['snn nchw']:11.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg9")
    p.add_argument("--timesteps", type=int, nargs="+", default=[4, 32])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=1, help="batches per method and round")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--bf16", action="store_true", help="synapses under bf16 autocast (the chain evaluates in fp32)")
    args = p.parse_args()
    print(describe("cpu"), flush=True)
    methods = ["snn nchw", "snn nhwc"]
    if importlib.util.find_spec("spikingjelly") is not None:
        methods.append(SPIKINGJELLY)
    methods.append(SYNAPSES)
    print(f"{args.arch}, 3x32x32, {'bf16 synapses' if args.bf16 else 'fp32'}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    for timesteps in args.timesteps:
        compare(args, timesteps, methods)


if __name__ == "__main__":
    main()
