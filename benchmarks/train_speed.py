"""STDB training speed: the multistep backend against the per-step reference, same run.

    python benchmarks/train_speed.py                         # GPU: VGG16, CIFAR-sized, T=100 and 32, batch 64
    python benchmarks/train_speed.py --device cpu --arch vgg5 --timesteps 8 --batch 8

Prints training images/s and peak memory of each backend and their ratio (targets:
on one H100 >= 1,000 images/s at T = 100 with <= 6 GiB;
on CPU at least 3x the reference backend). Random data, Adam, full BPTT.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.models import ANN, build_config, neuron_layers  # noqa: E402
from trainer.snn import SNN  # noqa: E402


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # process peak RSS (KiB -> GiB)


def measure(arch: str, backend: str, timesteps: int, batch: int, iters: int, device: torch.device,
            window: int | None) -> tuple[float, float]:
    torch.manual_seed(0)
    cfg = build_config(arch, (3, 32, 32), 10)
    ann = ANN(cfg).to(device)
    snn = SNN(ann, [1.0] * len(neuron_layers(cfg)), backend=backend).train()
    opt = torch.optim.Adam(ann.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    y = torch.randint(0, 10, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elapsed = 0.0
    for i in range(iters + 1):          # the first iteration is warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for _, logits in snn.run(x, timesteps, window=window):
            F.cross_entropy(logits, y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            elapsed += time.perf_counter() - t
    return iters * batch / elapsed, peak_memory_gib(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--timesteps", type=int, nargs="+", default=[100, 32])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--window", type=int, default=None, help="truncated BPTT window (default: full BPTT)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backends", nargs="+", default=["multistep", "reference"])
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"{args.arch}, 3x32x32, batch {args.batch}, device {device}, torch {torch.__version__}")
    for steps in args.timesteps:
        speeds = {}
        for backend in args.backends:
            ips, mem = measure(args.arch, backend, steps, args.batch, args.iters, device, args.window)
            speeds[backend] = ips
            print(f"T={steps:<4} {backend:<10} {ips:9.2f} images/s  peak memory {mem:6.2f} GiB"
                  + ("  (process RSS)" if device.type == "cpu" else ""))
        if "multistep" in speeds and "reference" in speeds:
            print(f"T={steps:<4} multistep / reference = {speeds['multistep'] / speeds['reference']:.2f}x")


if __name__ == "__main__":
    main()
