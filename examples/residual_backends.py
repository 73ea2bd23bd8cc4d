"""Export a residual net at CIFAR size and run it on every fixed-point backend.

    python examples/residual_backends.py [--arch resnet20] [--samples 1] [--timesteps 3] [--no-lava]

The weights are random (the ANN's initialisation) and every neuron layer gets the same
float threshold (``--threshold``, low enough that the deepest blocks fire): what is checked
is the export and the arithmetic, not accuracy. The checkpoint is quantized as a trained one
would be (residual blocks as two cores, the shortcut summed into the second), and each
backend (``hwsim.backends``) runs the same Poisson spikes; the script prints, per backend,
whether every spike of every core and the output voltage equal the reference's, and its
wall time. Lava runs the network with Python process models: minutes per sample.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export import fixedpoint as fx  # noqa: E402
from export.quantize import quantize_checkpoint  # noqa: E402
from hwsim.backends import run_graph  # noqa: E402
from trainer.checkpoint import Checkpoint, SNNParams  # noqa: E402
from trainer.models import ANN, RESNETS, build_config, neuron_layers  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=sorted(RESNETS), default="resnet20")
    p.add_argument("--shape", default="3,32,32", help="input C,H,W (default CIFAR's)")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--timesteps", type=int, default=3)
    p.add_argument("--threshold", type=float, default=0.3)
    p.add_argument("--no-lava", action="store_true", help="skip Lava (minutes per sample at CIFAR size)")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    arch = build_config(args.arch, shape, 10)
    torch.manual_seed(0)
    data = {"dataset": "random", "normalisation": {"mean": [0.5] * shape[0], "std": [0.5] * shape[0]},
            "class_names": [str(i) for i in range(10)]}
    ckpt = Checkpoint("converted", arch, ANN(arch).state_dict(), data,
                      SNNParams([args.threshold] * len(neuron_layers(arch)), 1.0, args.timesteps))
    graph, _ = quantize_checkpoint(ckpt, source=f"random {args.arch}")
    shortcuts = [f"{c.name} <- {sc.source} ({sc.op}, exp {sc.weight_exp})" for c in graph.cores for sc in c.shortcuts]
    print(f"{args.arch} on {shape}: {len(graph.cores)} cores, {len(shortcuts)} shortcuts: {'; '.join(shortcuts)}")
    images = np.random.default_rng(0).integers(0, 256, (args.samples, *shape), dtype=np.uint8)
    spikes = graph.input.encode(images, args.timesteps, seed=0)
    t = time.perf_counter()
    ref = fx.run_reference(graph, spikes)
    print(f"reference: {time.perf_counter() - t:.1f} s; spikes per core: {[int(s.sum()) for s in ref.spikes]}")
    same_everywhere = True
    for backend in [b for b in ("hwsim", "hwsim-events", "onnx", "lava") if b != "lava" or not args.no_lava]:
        t = time.perf_counter()
        got = run_graph(backend, graph, spikes)
        same = (all(np.array_equal(a, b) for a, b in zip(got.spikes, ref.spikes))
                and np.array_equal(got.output, ref.output))
        same_everywhere &= same
        print(f"{backend}: {'bit-exact' if same else 'DIFFERS'} ({time.perf_counter() - t:.1f} s)")
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
