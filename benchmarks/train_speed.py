"""Training speed of the LIF backends against SpikingJelly and a dense ANN, interleaved in one run.

    python benchmarks/train_speed.py                     # CUDA: VGG16, 3x32x32, T = 100 and 32, batch 64, bf16
    python benchmarks/train_speed.py --device cpu        # CPU: VGG5, T = 16, batch 16, fp32

One training iteration = Poisson input, forward over T steps, cross-entropy, full BPTT,
Adam (the trainer's: ``trainer.recipe.make_optimizer``, fused on the CPU). Methods: our
backends (reference, multistep, and fused on CUDA), SpikingJelly's multi-step IFNode
with subtractive reset on the same layers (when spikingjelly is installed:
``pip install --no-deps spikingjelly==2.0.0 'loguru>=0.7,<1'``), the dense
ANN of the same layers at batch T*B (forward + backward + Adam), and the limit: the
synaptic work alone, the same convolutions and matmuls on binary inputs at batch T*B
(10 % ones, bf16 under --bf16: no cast per call), forward and both backward products (to the weights and to the inputs) and
the optimizer's step, no neurons. Every round times each method for ``--iters``
iterations, in a rotating order so that a change in the machine's load spreads over all
of them; after ``--repeats`` rounds it prints min and median images/s, peak memory (CUDA:
allocated during the method's rounds; CPU: the peak RSS of a separate process running one
iteration), and the medians' ratios to the synaptic work and to SpikingJelly (its faster
layout where ``--layouts nchw nhwc`` runs every method in both: channels-last inputs, so
the convolutions run NHWC, the layout oneDNN computes without a reorder per call).
Targets (issue "fused LIF kernel"): on one H100 the fused backend >= 1,000 images/s at
T = 100, batch 64, <= 6 GiB; on a CPU at least SpikingJelly's speed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.interleave import interleaved, items_per_second  # noqa: E402
from benchmarks.machine import HEAP_CHOICES, HEAP_HELP, describe, set_heap  # noqa: E402
from records.encoding import poisson_spikes  # noqa: E402
from trainer.layers import AvgPool, Conv, Dropout, Flatten, Linear, ResBlock  # noqa: E402
from trainer.models import ANN, build_config, layer_shapes, neuron_layers  # noqa: E402
from trainer.recipe import OptimConfig, make_optimizer  # noqa: E402
from trainer.snn import SNN, channels_last  # noqa: E402

DENSE = "dense ANN (T*B)"
SYNAPSES = "synapses (T*B)"
INPUT_DENSITY = 0.1      # the binary inputs' share of ones (dense kernels cost the same at any share)
SPIKINGJELLY = "spikingjelly"


def spikingjelly_net(ann: ANN) -> nn.Module:
    """The ANN's layers as a SpikingJelly multi-step SNN: IF neurons, subtractive reset, threshold 1."""
    from spikingjelly.activation_based import layer, neuron

    modules, last = [], len(ann.cfg.layers) - 1
    for i, (spec, module) in enumerate(zip(ann.cfg.layers, ann.layers)):
        if isinstance(spec, (Conv, Linear)):
            modules.append(layer.SeqToANNContainer(module))
            if i != last:
                modules.append(neuron.IFNode(v_threshold=1.0, v_reset=None, detach_reset=True, step_mode="m"))
        elif isinstance(spec, AvgPool):
            modules.append(layer.SeqToANNContainer(nn.AvgPool2d(spec.kernel)))
        elif isinstance(spec, Dropout):
            modules.append(layer.Dropout(spec.p, step_mode="m"))
        elif isinstance(spec, Flatten):
            modules.append(layer.SeqToANNContainer(nn.Flatten()))
        else:
            raise ValueError(f"no SpikingJelly counterpart for layer kind {spec.kind!r}")
    return nn.Sequential(*modules)


def synapse_inputs(ann: ANN, batch: int, device: torch.device, fmt=torch.contiguous_format,
                   dtype=torch.float32) -> list[tuple[nn.Module, torch.Tensor]]:
    """Each conv and linear layer of ``ann`` with a binary input of its shape at ``batch``
    (convs' in memory format ``fmt``; in ``dtype``: bf16 under autocast, as an SNN's neurons
    hand spikes to bf16 synapses, so that the limit does not pay a cast per layer), wanting a
    gradient (BPTT carries one back to the layer before)."""
    cfg = ann.cfg
    shapes = [tuple(cfg.input_shape)] + layer_shapes(cfg)[:-1]
    generator = torch.Generator(device=device).manual_seed(2)
    pairs = []
    for spec, module, shape in zip(cfg.layers, ann.layers, shapes):
        if isinstance(spec, ResBlock):
            raise ValueError(f"the synapses-only limit covers VGGs, not layer kind {spec.kind!r}")
        if isinstance(spec, (Conv, Linear)):
            x = (torch.rand((batch, *shape), generator=generator, device=device) < INPUT_DENSITY).to(dtype)
            x = x.contiguous(memory_format=fmt) if x.dim() == 4 else x
            pairs.append((module, x.requires_grad_()))
    return pairs


class TrainingStep:
    """One training iteration of a method, callable; its parts (``loss``: forward and loss,
    ``optimizer``) stay reachable for ``benchmarks/train_profile.py``, which times them apart.
    ``weight_bits``: our SNN computes with its weights on that grid (the chain's fine-tuning)."""

    def __init__(self, method: str, arch: str, timesteps: int, batch: int, device: torch.device, bf16: bool,
                 layout: str = "nchw", weight_bits: int | None = None):
        torch.manual_seed(0)         # the same weights and data for every method
        cfg = build_config(arch, (3, 32, 32), 10)
        ann = ANN(cfg).to(device).train()
        x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
        nhwc = layout == "nhwc"
        fmt = torch.channels_last if nhwc else torch.contiguous_format
        if nhwc:
            ann = ann.to(memory_format=fmt)
        y = torch.randint(0, 10, (batch,), device=device)
        generator = torch.Generator(device=device).manual_seed(1)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        if method == SYNAPSES:
            model, inputs = ann, synapse_inputs(ann, timesteps * batch, device, fmt,
                                                torch.bfloat16 if bf16 else torch.float32)
            self.forward = lambda: sum(m(x).float().mean() for m, x in inputs)  # noqa: E731
        elif method == DENSE:
            model, xs, ys = ann, x.repeat(timesteps, 1, 1, 1).contiguous(memory_format=fmt), y.repeat(timesteps)
            self.forward = lambda: F.cross_entropy(model(xs), ys)  # noqa: E731
        elif method == SPIKINGJELLY:
            from spikingjelly.activation_based import functional

            model = spikingjelly_net(ann)

            def forward():
                functional.reset_net(model)
                spikes = poisson_spikes(x, timesteps, generator)
                return F.cross_entropy(model(channels_last(spikes) if nhwc else spikes).float().mean(0), y)
            self.forward = forward
        else:
            model = SNN(ann, [1.0] * len(neuron_layers(cfg)), backend=method, channels_last=nhwc,
                        weight_bits=weight_bits).train()
            self.forward = lambda: F.cross_entropy(model(x, timesteps, generator=generator), y)  # noqa: E731
        # every method takes the trainer's optimizer (fused on the CPU: trainer.recipe)
        self.optimizer = make_optimizer(model.parameters(), OptimConfig(optimizer="adam", lr=1e-4, weight_decay=0.0))

    def loss(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            return self.forward()

    def __call__(self) -> None:
        self.loss().backward()
        self.optimizer.step()


def peak_rss_gib(args, method: str, layout: str) -> float:
    """Peak RSS of a fresh process running one iteration of ``method`` (CPU memory per method)."""
    cmd = [sys.executable, __file__, "--device", "cpu", "--arch", args.arch, "--batch", str(args.batch),
           "--timesteps", str(args.timesteps[0]), "--peak-of", method, "--layouts", layout,
           "--bf16" if args.bf16 else "--no-bf16", "--heap", args.heap]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_gib"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def label(method: str, layout: str, layouts: list[str]) -> str:
    return method if layouts == ["nchw"] else f"{method} {layout}"


def compare(args, timesteps: int, methods: list[str], device: torch.device) -> None:
    runs = {label(m, f, args.layouts): (m, f) for f in args.layouts for m in methods}
    steps = {name: TrainingStep(m, args.arch, timesteps, args.batch, device, args.bf16, f)
             for name, (m, f) in runs.items()}
    methods = list(runs)
    for step in steps.values():          # warm-up: allocator, cuDNN's algorithms, Triton's compilation
        step()
    peaks = {m: 0.0 for m in methods}

    def measure(m: str) -> float:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rate = items_per_second(steps[m], args.iters, args.batch, lambda: sync(device))
        if device.type == "cuda":
            peaks[m] = max(peaks[m], torch.cuda.max_memory_allocated(device) / 2 ** 30)
        return rate
    speeds = interleaved(methods, args.repeats, measure)
    if device.type == "cpu" and not args.no_memory:
        peaks = {m: peak_rss_gib(args, *runs[m]) for m in methods}
    medians = {m: statistics.median(v) for m, v in speeds.items()}
    sj = max((medians[label(SPIKINGJELLY, f, args.layouts)] for f in args.layouts
              if label(SPIKINGJELLY, f, args.layouts) in medians), default=None)
    synapses = max(medians[label(SYNAPSES, f, args.layouts)] for f in args.layouts)
    print(f"\nT={timesteps}, batch {args.batch}, {args.iters} iterations x {args.repeats} rounds, interleaved")
    print(f"{'method':<23} {'min img/s':>10} {'median img/s':>13} {'peak GiB':>9} {'vs synapses':>12} {'vs SJ':>7}")
    for m in methods:
        vs_sj = f"{medians[m] / sj:6.2f}x" if sj else "      -"
        memory = f"{peaks[m]:9.2f}" if peaks[m] else "        -"
        print(f"{m:<23} {min(speeds[m]):10.2f} {medians[m]:13.2f} {memory} {medians[m] / synapses:11.2f}x {vs_sj}")
    if len(args.layouts) > 1:
        print("(vs synapses, vs SJ: against the faster layout's)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", default=None, help="default: vgg16 on CUDA, vgg5 on the CPU")
    p.add_argument("--timesteps", type=int, nargs="+", default=None, help="default: 100 32 on CUDA, 16 on the CPU")
    p.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 16 on the CPU")
    p.add_argument("--iters", type=int, default=None, help="iterations per method and round (CUDA 5, CPU 3)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", nargs="+", default=None,
                   help="our backends (default: multistep reference, and fused on CUDA)")
    p.add_argument("--bf16", default=None, action=argparse.BooleanOptionalAction,
                   help="synapses under bf16 autocast (default: on CUDA)")
    p.add_argument("--layouts", nargs="+", choices=("nchw", "nhwc"), default=["nchw"],
                   help="memory layouts of the convolutions' inputs; each method runs in each")
    p.add_argument("--no-memory", action="store_true", help="CPU: skip the per-method peak-RSS processes")
    p.add_argument("--heap", choices=HEAP_CHOICES, default="reuse", help=HEAP_HELP)
    p.add_argument("--peak-of", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    print(describe(args.device) + set_heap(args.heap), flush=True)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    args.arch = args.arch or ("vgg16" if cuda else "vgg5")
    args.timesteps = args.timesteps or ([100, 32] if cuda else [16])
    args.batch = args.batch or (64 if cuda else 16)
    args.iters = args.iters or (5 if cuda else 3)
    args.bf16 = cuda if args.bf16 is None else args.bf16
    if args.peak_of:
        TrainingStep(args.peak_of, args.arch, args.timesteps[0], args.batch, device, args.bf16, args.layouts[0])()
        status = Path("/proc/self/status").read_text()      # VmHWM: this process's peak RSS since exec
        peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 2 ** 20
        print(json.dumps({"peak_rss_gib": peak}))
        return
    methods = args.backends or (["fused", "multistep", "reference"] if cuda else ["multistep", "reference"])
    if importlib.util.find_spec("spikingjelly") is not None:
        methods.append(SPIKINGJELLY)
    methods += [DENSE, SYNAPSES]
    print(f"{args.arch}, 3x32x32, device {device}, {'bf16 synapses' if args.bf16 else 'fp32'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for timesteps in args.timesteps:
        compare(args, timesteps, methods, device)


if __name__ == "__main__":
    main()
