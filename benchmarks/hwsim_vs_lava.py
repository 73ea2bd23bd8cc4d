"""Benchmark: hwsim's integer LIF core against Lava's bit-accurate simulator and a dense conv.

    python benchmarks/hwsim_vs_lava.py                     # CPU: VGG5 convs at 2/5/10/20 % firing
    python benchmarks/hwsim_vs_lava.py --no-lava           # hwsim and the dense conv only
    python benchmarks/hwsim_vs_lava.py --device cuda       # GPU: VGG16, T=100, 1,500 CIFAR-sized images
    python benchmarks/hwsim_vs_lava.py --arch vgg16 --images 16 -T 16 --check
                                                           # CPU: VGG16 at 10 % firing, by path
    python benchmarks/hwsim_vs_lava.py --arch vgg16 --images 96 -T 100 --repeats 1 --paths default
                                                           # CPU: VGG16's default path at T = 100

CPU run: a VGG5-like graph -- the three conv layers of VGG5 on a 32x32x3 input with the
average pools folded into the next layer (6x6 stride-2 conv; a pooled dense output), random
8-bit weights. For each firing rate the input spikes are drawn at that rate and every
layer's threshold is calibrated to fire at it. Then come rounds. In each, every method runs
in a random order (a rotation would always run a method after the same one), called twice
in a row with the second call timed: its steady state, not the caches and heap the previous
method left (hwsim's first call after the fp32 conv took 1.27x its second). The methods:
hwsim as it runs by default (each core's block event-driven or on the int8 path, whichever
has cost less so far, ``hwsim.path_choice``); hwsim with every block on one
path -- event-driven, int8 (oneDNN's int8 products, ``hwsim.int8_products``), dense float;
the same convs as plain fp32 torch convs on the same spikes (no neurons: the floor a dense
float simulator cannot beat); and two Lava networks kept alive across rounds, each
advanced ``--lava-steps`` steps per call: stock Lava (its own Conv/Dense and LIF processes,
``fixed_pt``; the stock LIF resets to zero, so it times the same work but not the same
spikes) and the project's build (``export.lava.builder``: Lava's Conv/Dense and the
soft-reset LIF, bit-exact). Lava's build and compile happen before the first round, so
its figures are steady state; a Lava network's processes are stopped while it is not being
timed (``LavaStepper``). Prints min and median per image-step and the ratios of the
medians; finally checks that the project's Lava build and hwsim agree bit for bit.
OpenMP's wait policy is left as the environment sets it (libgomp's default: spin a while,
then sleep). ``python -m hwsim.run`` sets OMP_WAIT_POLICY=PASSIVE, which is robust on a
busy machine and slower on a quiet one: run this with OMP_WAIT_POLICY=PASSIVE to time that.
GPU run: VGG16 (13 convs with folded pools + 3 dense layers) at T=100 on 1,500 images
(target < 10 s). VGG16 on the CPU: every layer's threshold calibrated to fire at ``--rate``;
hwsim by default and on each path alone, interleaved in rounds as above: min and median
time per image-step, on plans built once as ``python -m hwsim.run`` builds them.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.hwsim_vgg16 import PATHS, vgg16_main  # noqa: E402
from benchmarks.interleave import interleaved  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from benchmarks.vgg_graphs import VGG5_CONVS, build_vgg, calibrate  # noqa: E402
from hwsim import int8_products  # noqa: E402
from hwsim.plan import make_plans  # noqa: E402
from hwsim.simulate import SimOptions, simulate  # noqa: E402


def dense_convs(graph, spikes: np.ndarray):
    """The graph's convolutions as fp32 torch convs over all image-steps at once (no neurons)."""
    weights = [(torch.from_numpy(c.weights).float(), c.stride, c.padding) for c in graph.cores if c.op == "conv"]
    x0 = torch.from_numpy(spikes.reshape(-1, *spikes.shape[2:])).float()

    def run():
        with torch.inference_mode():
            x = x0
            for w, stride, padding in weights:
                x = (F.conv2d(x, w, stride=stride, padding=padding) > 0).float()
    return run


def _descendants() -> set[int]:
    """The process ids below this one (Lava's runtime and process models), from /proc."""
    parent: dict[int, list[int]] = {}
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parent.setdefault(ppid, []).append(int(d))
    found, todo = set(), [os.getpid()]
    while todo:
        kids = parent.get(todo.pop(), [])
        found.update(kids)
        todo += kids
    return found


class LavaStepper:
    """One Lava network kept alive and advanced ``steps`` steps per call, after a first call
    that builds and compiles it (so that the calls time Lava's steady state). Between its
    calls its processes are stopped (SIGSTOP; Linux): idle, they still wake often enough to
    slow whatever else is being timed (hwsim's median per image-step went from 0.12-0.13 ms
    to 0.21 ms beside two idle Lava networks, and back to 0.14 ms with them stopped)."""

    def __init__(self, graph, spikes: np.ndarray, stock: bool):
        from export.lava.builder import build_lava_network, lava_shape, to_lava_layout
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.proc.io.source import RingBuffer
        from lava.proc.lif.process import LIF
        from export import fixedpoint as fx

        def stock_lif(core, latency):
            vth = core.vth if core.spiking else fx.VTH_MAX
            return LIF(shape=lava_shape(core.output_shape), vth=vth, dv=core.dv, du=core.du, name=core.name)
        net = build_lava_network(graph, stock_lif) if stock else build_lava_network(graph)
        trains = to_lava_layout(spikes[:, 0].astype(np.int32), graph.input.shape)     # one image, T steps
        self.source = RingBuffer(data=np.ascontiguousarray(np.moveaxis(trains, 0, -1)))
        net.connect_input(self.source.s_out)
        self.cfg = Loihi2SimCfg(select_tag="fixed_pt")
        before = _descendants()
        t = time.perf_counter()
        self._run(1)
        self.setup = time.perf_counter() - t
        self.pids = _descendants() - before
        self._signal(signal.SIGSTOP)

    def _run(self, steps: int) -> None:
        from lava.magma.core.run_conditions import RunSteps
        self.source.run(condition=RunSteps(num_steps=steps), run_cfg=self.cfg)

    def _signal(self, sig) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def __call__(self, steps: int) -> None:
        self._signal(signal.SIGCONT)
        try:
            self._run(steps)
        finally:
            self._signal(signal.SIGSTOP)

    def stop(self) -> None:
        self._signal(signal.SIGCONT)
        self.source.stop()


def time_rate(args, rate: float, rng) -> dict:
    """Every method at one firing rate, interleaved; returns {name: (min, median) seconds per image-step}."""
    g = build_vgg(VGG5_CONVS, [], timesteps=args.timesteps, seed=args.seed)
    spikes = (rng.random((args.timesteps, args.images, *g.input.shape)) < rate).astype(np.int8)
    calibrate(g, spikes[:, :2], target=rate)
    plans = make_plans(g, torch.device("cpu"))
    image_steps = args.images * args.timesteps
    methods = {name: (lambda kw=kw: simulate(g, spikes, plans=plans, options=SimOptions(**kw)), image_steps)
               for name, kw in PATHS.values()}
    methods["fp32 conv (no neurons)"] = (dense_convs(g, spikes), image_steps)
    fired = simulate(g, spikes, plans=plans)
    lavas = []
    if not args.no_lava:
        for name, stock in (("Lava, stock LIF", True), ("Lava, project build", False)):
            lv = LavaStepper(g, spikes, stock)
            lavas.append(lv)
            methods[name] = (lambda lv=lv: lv(args.lava_steps), args.lava_steps)
            print(f"  {name}: built, compiled and ran 1 step in {lv.setup:.1f} s")
    for fn, _ in methods.values():
        fn()                                                   # warm-up: numba's compile, allocators, Lava's caches

    def seconds_per_step(name):
        fn, steps = methods[name]
        fn()                                               # the state the previous method left is not its own
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) / steps
    try:
        seconds = interleaved(methods, args.repeats, seconds_per_step, "shuffle", args.seed)
    finally:
        for lv in lavas:
            lv.stop()
    rates = ", ".join(f"{l.spikes / (l.neurons * fired.image_steps):.3f}" for l in fired.layers if l.spiking)
    print(f"\nrate {rate:.2f} (layers fired {rates} per neuron-step)")
    out = {name: (min(v), statistics.median(v)) for name, v in seconds.items()}
    conv = out["fp32 conv (no neurons)"][1]
    for name, (lo, med) in out.items():
        unit = (f"{lo:7.3f} s  median {med:7.3f} s  per step" if name.startswith("Lava")
                else f"{lo * 1e3:7.3f} ms median {med * 1e3:7.3f} ms per image-step")
        ratio = f"hwsim {med / out['hwsim'][1]:,.0f}x faster" if name.startswith("Lava") \
            else f"{med / conv:5.2f}x the fp32 conv"
        print(f"  {name:<25} min {unit}  ({ratio})")
    return out


def lava_agrees(args) -> bool:
    """The project's Lava build and hwsim on one image, a few steps: bit for bit?"""
    from export.lava.runner import run_lava
    g = build_vgg(VGG5_CONVS, [], timesteps=args.timesteps, seed=args.seed)
    spikes = (np.random.default_rng(args.seed).random((3, 1, *g.input.shape)) < 0.1).astype(np.int8)
    calibrate(g, spikes, target=0.1)
    lv = run_lava(g, spikes, record_spikes=True, progress=False)
    ref = simulate(g, spikes, record_spikes=True)
    return all(np.array_equal(a, b) for a, b in zip(lv.spikes, ref.spike_trains)) and \
        np.array_equal(lv.output, ref.output)


def cpu_main(args) -> int:
    g = build_vgg(VGG5_CONVS, [], timesteps=args.timesteps, seed=args.seed)
    print("VGG5 convs on 3x32x32 (folded pools), cores: "
          + ", ".join(f"{c.name} {c.op} {tuple(c.weights.shape)}->{c.output_shape}" for c in g.cores))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"hwsim: {args.images} images x T={args.timesteps} per call; Lava: 1 image, {args.lava_steps} steps per "
          f"call; {args.repeats} rounds. torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, int8 products "
          f"{'available' if int8_products.available() else 'NOT available'}, load "
          f"average {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes share the cores)")
    if not args.no_lava:
        try:
            from export.lava.compat import import_lava
            import_lava()
        except ImportError as exc:
            print(f"Lava is not importable ({exc}); rerun with --no-lava for hwsim alone", file=sys.stderr)
            return 1
    rng = np.random.default_rng(args.seed)
    results = {rate: time_rate(args, rate, rng) for rate in args.rates}
    lo, hi = min(args.rates), max(args.rates)
    print()
    for name in ("hwsim", "hwsim, event path"):
        print(f"{name} per image-step at {lo:.0%} firing / at {hi:.0%}: "
              f"{results[lo][name][1] / results[hi][name][1]:.2f} (target <= 1/2)")
    if args.no_lava:
        return 0
    for rate, out in results.items():
        h = out["hwsim"][1]
        print(f"hwsim vs Lava at {rate:.0%} firing (medians): {out['Lava, stock LIF'][1] / h:,.0f}x stock Lava, "
              f"{out['Lava, project build'][1] / h:,.0f}x the project's Lava build")
    agree = lava_agrees(args)
    print(f"the project's Lava build and hwsim, 1 image x 3 steps, every layer's spikes and the output voltage: "
          f"{'bit-exact' if agree else 'DIFFERENT'}")
    return 0 if agree else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--arch", choices=("vgg5", "vgg16"), default=None,
                   help="vgg5: the three conv layers, vs Lava (CPU default); vgg16: the GPU figure (cuda default)")
    p.add_argument("--check", action="store_true", help="vgg16: also check a few steps against run_reference")
    p.add_argument("--images", type=int, default=None, help="hwsim batch (cpu: 16; cuda: 1500)")
    p.add_argument("--timesteps", "-T", type=int, default=None, help="hwsim steps (cpu: 16; cuda: 100)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.02, 0.05, 0.10, 0.20],
                   help="cpu: firing rates per neuron and step (default 2/5/10/20 %%)")
    p.add_argument("--repeats", type=int, default=None, help="cpu: rounds (default 9; vgg16: 5)")
    p.add_argument("--lava-steps", type=int, default=2, help="cpu: Lava steps per round (default 2)")
    p.add_argument("--no-lava", action="store_true", help="cpu: without the Lava networks")
    p.add_argument("--rate", type=float, default=0.10, help="vgg16: target firing rate per neuron and step")
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                   help="vgg16 on the CPU: the methods to time (default: all)")
    args = p.parse_args(argv)
    print(describe(args.device), flush=True)
    if args.arch == "vgg16" or (args.device == "cuda" and args.arch is None):
        args.repeats = args.repeats or 5
        if args.repeats < 1:
            p.error("--repeats must be >= 1")
        return vgg16_main(args)
    args.repeats = args.repeats or 9
    args.images = args.images or 16
    args.timesteps = args.timesteps or 16
    if min(args.rates) <= 0 or max(args.rates) >= 1 or args.repeats < 1 or args.lava_steps < 1:
        p.error("--rates must lie in (0, 1); --repeats and --lava-steps must be >= 1")
    return cpu_main(args)


if __name__ == "__main__":
    sys.exit(main())
