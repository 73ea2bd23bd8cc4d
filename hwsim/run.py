"""``python -m hwsim.run --edp``: replay the same inputs through the integer LIF core for
every network, count spikes per layer, and compute energy, delay and EDP, comparing e.g.
the converted and the STDB-trained network under identical conditions. Every network
encodes the same images by its graph's rule (``records.encoding``): networks of the same
rule see the same spike trains. ``--sweep`` adds accuracy and spikes at other T: those
below the run's T are read out of the run itself after that many steps, those above it
out of one longer run (``simulate(readouts=...)``: the trains of T steps are the first T
steps of longer ones), so a sweep costs about one simulation of its largest T, not one
per point.

Defaults: the newest run folder ``runs/<name>/`` holding both
``export/converted/coregraph.npz`` and ``export/stdb/coregraph.npz`` (``records.layout``);
results go to ``runs/<name>/hwsim/`` (results.json, layers.csv, summary.csv, predictions.csv, inputs.npz).
Bad input: a one-line error on stderr, exit code 2, nothing written.
``torchrun --nproc_per_node N -m hwsim.run ...`` shards the samples over N processes
(CPU: gloo; GPUs: nccl, one per rank) and gives one process's results (``hwsim.shard``).
The CLI is a thin layer over ``run_hwsim``, which the pipeline calls directly.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# OpenMP threads that spin while waiting turn every torch op into a stall when another
# process holds a core (measured on a busy 2-core machine: 4x slower with 2 threads);
# passive waiting costs nothing measurable here. Only effective before torch is imported,
# and a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from export import fixedpoint as fx
from hwsim.shard import close as close_shards
from records.cli import (OUTPUT_DIR, POSITIVE, SEED, TIMESTEPS, BadInput, Parser, integer, require, run_main,
                         writable_dir)
from records.progress import progress as progress_bar
from records.layout import COMPARED_STAGES, INPUTS_FILE, SNN_STAGES, RunLayout
from records.timesteps import check_timesteps
from reports.terminal import print_report

MAX_DEFAULT_SAMPLES = 1500


@dataclass(frozen=True)
class HwsimConfig:
    """One hwsim run over one or more graphs; None: the default named in the CLI's help."""
    timesteps: int | None = None
    sweep: tuple[int, ...] = ()
    samples: int | None = None
    seed: int | None = None
    energy_model: str | None = None
    device: str = "auto"
    chunk: int | None = None
    threads: int | None = None
    data_root: str | None = None
    inputs: Path | None = None
    out: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for opt in ("samples", "timesteps", "chunk", "threads"):
            v = getattr(self, opt)
            require(v is None or v >= 1, opt, v, "an integer >= 1")
        require(self.seed is None or self.seed >= 0, "seed", self.seed, "an integer >= 0")
        require(all(t >= 1 for t in self.sweep), "sweep", ",".join(map(str, self.sweep)), "time steps >= 1")


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m hwsim.run", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edp", action="store_true",
                   help="print energy, delay, EDP and the SNN/ANN energy beside accuracy and spikes (under "
                        "--energy-model, by default the paper's first-order model); results.json and the CSVs "
                        "hold them either way")
    p.add_argument("--graph", action="append", default=[], metavar="LABEL=PATH",
                   help="a network to simulate (repeatable; the first is the numerator of the ratios)")
    p.add_argument("--runs", default="runs", help="folder of run folders searched by default (default: runs)")
    p.add_argument("--samples", type=POSITIVE, default=None,
                   help=f"test samples (default: the whole test set up to {MAX_DEFAULT_SAMPLES})")
    p.add_argument("--timesteps", "-T", type=TIMESTEPS, default=None, help="time steps (default: the graphs' T)")
    p.add_argument("--seed", type=SEED, default=None, help="Poisson seed (default 0, or the inputs file's)")
    p.add_argument("--energy-model", default=None, metavar="first_order|cmos45nm|loihi|PATH",
                   help="energy model preset or JSON file (default: first_order)")
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    p.add_argument("--chunk", type=POSITIVE, default=None, help="samples per chunk (default: by device)")
    p.add_argument("--threads", type=integer(1, 4 * (os.cpu_count() or 1)), default=None,
                   help="CPU threads, at most 4 per core of this machine (default: torch's)")
    p.add_argument("--sweep", default=None, metavar="T1,T2,...",
                   help="also run every network at these T (same images and seed): accuracy vs T")
    p.add_argument("--data-root", default=None, help="data set folder (default: the one the graph records)")
    p.add_argument("--inputs", default=None, metavar="FILE",
                   help="replay a saved inputs file (images, labels, seed, T) instead of loading the data set")
    p.add_argument("--out", type=OUTPUT_DIR, default=None, help="output folder (default: runs/<name>/hwsim/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def saturation_note(label: str, steps: int, sim) -> str | None:
    """A note when the output accumulator hit its 24-bit limit (class scores then tie or flip)."""
    saturated = int((np.abs(np.asarray(sim.output)) >= fx.V_MAX).any(axis=1).sum())
    if not saturated:
        return None
    return (f"{label} at T={steps}: the output accumulator saturated in {saturated} of {len(sim.output)} samples; "
            f"re-export with `python -m export.to_lava ... --calibration-timesteps {steps}`")


def graph_specs(graph_args: list[str], runs: str) -> tuple[list[tuple[str, Path]], Path]:
    """The (label, path) of each graph and the default output folder."""
    if graph_args:
        specs = []
        for g in graph_args:
            label, sep, path = g.partition("=")
            if not sep or not label.strip() or not path.strip():
                raise BadInput(f"--graph: expected LABEL=PATH, got {g!r}")
            specs.append((label.strip(), Path(path.strip())))
        labels = [s[0] for s in specs]
        if len(set(labels)) != len(labels):
            raise BadInput(f"--graph: labels must be unique, got {labels}")
        run = RunLayout.of_graph(specs[0][1])
        return specs, run.hwsim_dir if run is not None else specs[0][1].parent / "hwsim"
    run = RunLayout.latest(runs)
    if run is None:
        raise BadInput(f"{runs}: no run folder with export/converted/coregraph.npz and "
                       "export/stdb/coregraph.npz (name the graphs with --graph LABEL=PATH)")
    return [(s, run.graph(s)) for s in COMPARED_STAGES], run.hwsim_dir


def _load_test_images(graph, where: Path, data_root: str | None, samples: int | None):
    from trainer.data import DatasetError, check_fits, load_dataset   # hwsim imports only trainer.data

    ref = graph.data
    if ref is None:
        raise BadInput(f"{where}: the graph records no data set; pass --inputs FILE")
    roots = [data_root] if data_root else [ref.root, None]
    for i, root in enumerate(roots):
        try:
            bundle = load_dataset(ref.dataset, root, seed=ref.seed, image_size=ref.image_size)
            break
        except DatasetError as exc:
            if i == len(roots) - 1:
                raise BadInput(f"{str(exc).splitlines()[0]} (the {ref.dataset} data set of {where}; "
                               "pass --data-root)") from None
    check_fits(bundle, graph.class_names, graph.input.shape, str(where))
    x, y = bundle.test_x.numpy(), bundle.test_y.numpy()
    n = min(len(x), MAX_DEFAULT_SAMPLES) if samples is None else samples
    if n > len(x):
        raise BadInput(f"--samples: {n}, but the {ref.dataset} test set has only {len(x)} images")
    return x[:n].astype(np.uint8), y[:n], ref.dataset, list(bundle.class_names)


def run_hwsim(specs: list[tuple[str, Path]], cfg: HwsimConfig, default_out: Path) -> tuple[dict, dict]:
    """Simulate every (label, graph path) on the same inputs; write and return
    (results document, written paths). Bad input raises a ValueError (a record's error,
    ``BadInput``, hwsim's ``SimError``) naming the file or option; nothing is written then."""
    from export.graph import load_graph
    from hwsim.energy import DEFAULT_MODEL, load_energy_model
    from hwsim.results import NetworkRun, build_results, sweep_point
    from hwsim.shard import setup as setup_shard
    from hwsim.counters import SimError
    from hwsim.plan import make_plans
    from hwsim.simulate import SimOptions, simulate
    from records.device import resolve_device
    from records.hwsim_results import prediction_rows, save_results
    from records.inputs import InputSet, inputs_to_bytes, load_inputs

    out_dir = writable_dir(cfg.out or default_out, "--out")
    model = load_energy_model(cfg.energy_model or DEFAULT_MODEL)
    graphs = [(label, path, load_graph(path)) for label, path in specs]
    for label, path, g in graphs:
        if label in SNN_STAGES and g.stage is not None and label != g.stage:
            raise BadInput(f"--graph {label}={path}: the label names a trainer stage, and the graph is of the "
                           f"{g.stage!r} network; reports would show it as {label!r}")
    g0 = graphs[0][2]
    for label, path, g in graphs[1:]:
        if g.input.shape != g0.input.shape:
            raise BadInput(f"{path}: input shape {g.input.shape} differs from {graphs[0][1]}'s {g0.input.shape}")
        if g.input.normalisation != g0.input.normalisation:       # the rule may differ: same images, own rule
            raise BadInput(f"{path}: input normalisation differs from {graphs[0][1]}'s: "
                           "the networks would not see the same inputs")
        if cfg.timesteps is None and g.timesteps != g0.timesteps:
            raise BadInput(f"{path}: T={g.timesteps} differs from {graphs[0][1]}'s T={g0.timesteps} "
                           "(compared networks must share T; pass --timesteps to choose one)")
    steps = cfg.timesteps or g0.timesteps
    wrote_inputs = None
    if cfg.inputs:
        inputs = load_inputs(cfg.inputs)
        if not inputs.samples:
            raise BadInput(f"{cfg.inputs}: holds no images")
        if steps != inputs.timesteps:
            raise BadInput(f"{cfg.inputs}: the inputs file is for T={inputs.timesteps}, the run for T={steps} "
                           "(pass --timesteps to match)")
        if cfg.seed is not None and cfg.seed != inputs.seed:
            raise BadInput(f"--seed: {cfg.seed} differs from the seed of {cfg.inputs}, {inputs.seed}")
        if tuple(inputs.images.shape[1:]) != g0.input.shape:
            raise BadInput(f"{cfg.inputs}: images of shape {tuple(inputs.images.shape[1:])} do not fit the "
                           f"graphs' input {g0.input.shape}")
        if inputs.class_names and inputs.class_names != list(g0.class_names):
            raise BadInput(f"{cfg.inputs}: its classes ({', '.join(inputs.class_names[:4])}, ...) are not the "
                           f"graphs' ({', '.join(g0.class_names[:4])}, ...)")
        if inputs.samples and inputs.labels.max() >= len(g0.class_names):
            raise BadInput(f"{cfg.inputs}: label {inputs.labels.max()} outside the graphs' "
                           f"{len(g0.class_names)} classes")
        if cfg.samples is not None:
            if cfg.samples > inputs.samples:
                raise BadInput(f"--samples: {cfg.samples}, but {cfg.inputs} holds only {inputs.samples}")
            inputs = InputSet(inputs.images[:cfg.samples], inputs.labels[:cfg.samples], inputs.seed,
                              inputs.timesteps, inputs.dataset, inputs.class_names)
        inputs_file = str(cfg.inputs)
    else:
        x, y, dsname, classes = _load_test_images(g0, specs[0][1], cfg.data_root, cfg.samples)
        inputs = InputSet(x, y, 0 if cfg.seed is None else cfg.seed, steps, dsname, classes)
        wrote_inputs = inputs
        inputs_file = None

    shard = setup_shard(cfg.device)        # one process, or this rank of torchrun's
    first, end = shard.bounds(inputs.samples)
    # each graph's plans, built once and reused by every T of the sweep (they keep learning
    # which CPU path suits each core: hwsim.path_choice)
    plans = {label: make_plans(g, resolve_device(cfg.device, SimError)) for label, _, g in graphs}

    def run_one(label, g, steps, readouts=()):
        bar = None
        if cfg.progress and shard.is_main:
            bar = progress_bar(total=end - first, desc=f"hwsim {label} T={steps}" + (
                f" (rank 0 of {shard.world})" if shard.world > 1 else ""), unit="img", leave=False, file=sys.stderr)
        try:
            part = simulate(g, (inputs.images[first:end], inputs.seed), timesteps=steps, device=cfg.device,
                            options=SimOptions(chunk=cfg.chunk, threads=cfg.threads), first_index=first,
                            plans=plans[label], readouts=readouts,
                            progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
        return shard.gather(part)

    # the sweep's T below the run's are read out on the way; those above it, from one longer run
    ts = sorted(set(cfg.sweep))
    shorter, longer = [t for t in ts if t < inputs.timesteps], [t for t in ts if t > inputs.timesteps]
    runs, sweep_sims = [], []
    for label, path, g in graphs:
        sim = run_one(label, g, inputs.timesteps, shorter)
        runs.append(NetworkRun(label, str(path), g, sim, inputs.labels))
        at = dict(sim.readouts) | ({inputs.timesteps: sim} if inputs.timesteps in ts else {})
        if longer:
            long_sim = run_one(label, g, longer[-1], longer[:-1])
            at |= dict(long_sim.readouts) | {longer[-1]: long_sim}
        sweep_sims += [(label, t, at[t]) for t in ts]
    sweep = [sweep_point(label, point, inputs.labels)              # by T, then in the graphs' order
             for label, _, point in sorted(sweep_sims, key=lambda s: s[1])]
    notes = [saturation_note(label, sim_steps, sim) for label, sim_steps, sim in
             [(r.label, inputs.timesteps, r.sim) for r in runs]
             + [(label, t, point) for label, t, point in sweep_sims if t != inputs.timesteps]]
    notes = [n for n in notes if n]
    if wrote_inputs is not None:
        inputs_file = str(out_dir / INPUTS_FILE)
    doc = build_results(runs, model, dataset=inputs.dataset or (g0.data.dataset if g0.data else ""),
                        arch=str(g0.provenance.get("arch", "")), seed=inputs.seed, inputs_file=inputs_file,
                        notes=notes, sweep=sweep)
    if not shard.is_main:
        return doc, {}
    extra = {} if wrote_inputs is None else {"inputs": (INPUTS_FILE, inputs_to_bytes(wrote_inputs))}
    predictions = prediction_rows([(r.label, r.sim.output, r.labels) for r in runs])
    return doc, save_results(out_dir, doc, predictions, extra=extra)


def parse_sweep(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        ts = tuple(sorted({int(t) for t in text.split(",") if t.strip()}))
    except ValueError:
        raise BadInput(f"--sweep: expected comma-separated integers, got {text!r}") from None
    if not ts:
        raise BadInput(f"--sweep: expected comma-separated integers, got {text!r}")
    return tuple(check_timesteps(t, "--sweep", BadInput) for t in ts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def body():
        cfg = HwsimConfig(timesteps=args.timesteps, sweep=parse_sweep(args.sweep), samples=args.samples,
                          seed=args.seed, energy_model=args.energy_model, device=args.device, chunk=args.chunk,
                          threads=args.threads, data_root=args.data_root,
                          inputs=Path(args.inputs) if args.inputs else None,
                          out=Path(args.out) if args.out else None, progress=not args.no_progress)
        specs, default_out = graph_specs(args.graph, args.runs)
        finished = False
        try:
            doc, paths = run_hwsim(specs, cfg, default_out)
            if paths:                          # under torchrun: rank 0 writes and reports
                print_report(doc, paths, edp=args.edp)
            finished = True
        finally:
            close_shards(finished)
    return run_main("hwsim.run", body)


if __name__ == "__main__":
    sys.exit(main())
