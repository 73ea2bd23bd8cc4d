"""``python -m hwsim.run --edp``: replay the same Poisson inputs through the integer LIF
core for every network, count spikes per layer, and compute energy, delay and EDP,
comparing e.g. the converted and the STDB-trained network under identical conditions.

Defaults: the newest run folder ``runs/<name>/`` holding both
``export/converted/coregraph.npz`` and ``export/stdb/coregraph.npz``; results go to
``runs/<name>/hwsim/`` (results.json, layers.csv, summary.csv, inputs.npz).
Bad input: a one-line error on stderr, exit code 2, nothing written.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# OpenMP threads that spin while waiting turn every torch op into a stall when another
# process holds a core (measured on a busy 2-core machine: 4x slower with 2 threads);
# passive waiting costs nothing measurable here. Only effective before torch is imported,
# and a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from export import fixedpoint as fx

MAX_DEFAULT_SAMPLES = 1500
STAGES = ("converted", "stdb")


class CliError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hwsim.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edp", action="store_true",
                   help="report energy, delay and EDP with the paper's first-order model (the default model)")
    p.add_argument("--graph", action="append", default=[], metavar="LABEL=PATH",
                   help="a network to simulate (repeatable; the first is the numerator of the ratios)")
    p.add_argument("--runs", default="runs", help="folder of run folders searched by default (default: runs)")
    p.add_argument("--samples", type=int, default=None,
                   help=f"test samples (default: the whole test set up to {MAX_DEFAULT_SAMPLES})")
    p.add_argument("--timesteps", "-T", type=int, default=None, help="time steps (default: the graphs' T)")
    p.add_argument("--seed", type=int, default=None, help="Poisson seed (default 0, or the inputs file's)")
    p.add_argument("--energy-model", default=None, metavar="first_order|cmos45nm|loihi|PATH",
                   help="energy model preset or JSON file (default: first_order)")
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    p.add_argument("--chunk", type=int, default=None, help="samples per chunk (default: by device)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--sweep", default=None, metavar="T1,T2,...",
                   help="also run every network at these T (same images and seed): accuracy vs T")
    p.add_argument("--data-root", default=None, help="data set folder (default: the graph's provenance)")
    p.add_argument("--inputs", default=None, metavar="FILE",
                   help="replay a saved inputs file (images, labels, seed, T) instead of loading the data set")
    p.add_argument("--out", default=None, help="output folder (default: runs/<name>/hwsim/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def saturation_note(label: str, steps: int, sim) -> str | None:
    """A note when the output accumulator hit its 24-bit limit (class scores then tie or flip)."""
    saturated = int((np.abs(np.asarray(sim.output)) >= fx.V_MAX).any(axis=1).sum())
    if not saturated:
        return None
    return (f"{label} at T={steps}: the output accumulator saturated in {saturated} of {len(sim.output)} samples; "
            f"re-export with `python -m export.to_lava ... --calibration-timesteps {steps}`")


def find_latest_run(runs_dir: Path) -> Path:
    cands = [d for d in runs_dir.glob("*/") if d.is_dir()
             and all((d / "export" / s / "coregraph.npz").is_file() for s in STAGES)]
    if not cands:
        raise CliError(f"{runs_dir}: no run folder with export/converted/coregraph.npz and "
                       "export/stdb/coregraph.npz (name the graphs with --graph LABEL=PATH)")
    return max(cands, key=lambda d: d.stat().st_mtime)


def _graph_specs(args) -> tuple[list[tuple[str, Path]], Path]:
    if args.graph:
        specs = []
        for g in args.graph:
            label, sep, path = g.partition("=")
            if not sep or not label.strip() or not path.strip():
                raise CliError(f"--graph {g!r}: expected LABEL=PATH")
            specs.append((label.strip(), Path(path.strip())))
        labels = [s[0] for s in specs]
        if len(set(labels)) != len(labels):
            raise CliError(f"--graph labels must be unique, got {labels}")
        first = specs[0][1].resolve()
        parts = first.parts
        if len(parts) >= 4 and parts[-3] == "export":
            out = Path(*parts[:-3]) / "hwsim"            # runs/<name>/export/<stage>/coregraph.npz
        else:
            out = first.parent / "hwsim"
        return specs, out
    run = find_latest_run(Path(args.runs))
    return [(s, run / "export" / s / "coregraph.npz") for s in STAGES], run / "hwsim"


def _same_encoding(a, b) -> bool:
    return (a.shape == b.shape and np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std)
            and a.clip == b.clip)


def _load_test_images(graph, args, samples: int | None):
    from trainer.data import DatasetError, load_dataset   # hwsim imports only trainer.data

    prov = graph.provenance or {}
    name = prov.get("dataset")
    if not name:
        raise CliError("the graph's provenance names no dataset: pass --inputs FILE")
    kwargs = {"seed": int(prov.get("data_seed", 0) or 0)}        # the digits split is seeded
    if prov.get("image_size"):
        kwargs["image_size"] = prov["image_size"]
    roots = [args.data_root] if args.data_root else [prov.get("data_root"), None]
    for i, root in enumerate(roots):
        try:
            bundle = load_dataset(name, root, **kwargs)
            break
        except DatasetError as exc:
            if i == len(roots) - 1:
                raise CliError(f"data set {name!r}: {str(exc).splitlines()[0]} (pass --data-root)") from None
    x = bundle.test_x.numpy() if hasattr(bundle.test_x, "numpy") else np.asarray(bundle.test_x)
    y = bundle.test_y.numpy() if hasattr(bundle.test_y, "numpy") else np.asarray(bundle.test_y)
    n = min(len(x), MAX_DEFAULT_SAMPLES) if samples is None else samples
    if n > len(x):
        raise CliError(f"--samples {n}: the {name} test set has only {len(x)} images")
    return x[:n].astype(np.uint8), y[:n], name, list(getattr(bundle, "class_names", []) or [])


def _fmt(v, digits=4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}"


def print_report(doc: dict, paths: dict, out=None) -> None:
    out = out or sys.stdout
    em = doc["energy_model"]
    unit, dunit = em["parameters"]["energy_unit"], em["parameters"]["delay_unit"]
    w = out.write
    w(f"\nhwsim: {doc['dataset'] or '?'} {doc['arch'] or ''}, {doc['samples']} samples, T={doc['timesteps']}, "
      f"seed {doc['seed']}, energy model {em['name']} ({unit} per image, delay in {dunit}s)\n")
    nets = doc["networks"]
    names = [l["name"] for l in nets[0]["layers"]]
    same_layers = all([l["name"] for l in n["layers"]] == names for n in nets)
    w("\naverage spikes per neuron per layer (all spikes over T steps / neurons, mean over samples; Fig. 3)\n")
    if same_layers:
        head = f"{'layer':<14}{'neurons':>10}" + "".join(f"{n['label'][:12]:>14}{'thr':>9}" for n in nets)
        w(head + "\n")
        for j, name in enumerate(names):
            row = f"{name[:13]:<14}{nets[0]['layers'][j]['neurons']:>10}"
            for n in nets:
                l = n["layers"][j]
                thr = _fmt(l["float_threshold"], 3) if l["spiking"] else "-"
                row += f"{(_fmt(l['avg_spikes_per_neuron']) if l['spiking'] else '-'):>14}{thr:>9}"
            w(row + "\n")
    else:
        for n in nets:
            w(f"  {n['label']}: " + ", ".join(f"{l['name']}={_fmt(l['avg_spikes_per_neuron'])}"
                                              for l in n["layers"] if l["spiking"]) + "\n")
    w(f"\n{'network':<12}{'accuracy':>9}{'spikes/img':>13}{'syn.ev/img':>13}{'energy':>12}{'delay':>8}"
      f"{'EDP':>12}{'SNN/ANN':>9}\n")
    cmp = doc["snn_vs_ann"]
    for n in nets:
        t = n["totals"]
        acc = "n/a" if n["accuracy"] is None else f"{100 * n['accuracy']:.2f}%"
        ratio = cmp["networks"].get(n["label"], {}).get("ratio")
        w(f"{n['label'][:11]:<12}{acc:>9}{_fmt(t['spikes_per_image']):>13}"
          f"{_fmt(t['synaptic_events'] / max(n['samples'], 1)):>13}{_fmt(t['energy']):>12}{_fmt(t['delay']):>8}"
          f"{_fmt(t['edp']):>12}{_fmt(ratio, 3):>9}\n")
    ann = doc["ann_baseline"]
    w(f"{'ANN':<12}{'':>9}{'':>13}{'':>13}{_fmt(ann['energy']):>12}   ({_fmt(ann['macs'])} MACs/img "
      f"from {ann['macs_source']}; {ann['model']}, {ann['energy_unit']})\n")
    for r in doc["ratios"]:
        w(f"\n{r['numerator']} / {r['denominator']}: spikes {_fmt(r['spikes'], 3)}x, energy "
          f"{_fmt(r['energy'], 3)}x, EDP {_fmt(r['edp'], 3)}x")
    if doc["ratios"]:
        w("\n")
    if cmp["model"] != em["name"]:
        w(f"SNN/ANN energy under {cmp['model']} ({cmp['energy_unit']}): "
          + ", ".join(f"{k} {_fmt(v['energy'])} vs ANN {_fmt(cmp['ann_energy'])}" for k, v in cmp["networks"].items())
          + "\n")
    if doc.get("sweep"):
        def acc(p):
            return "n/a" if p["accuracy"] is None else f"{100 * p['accuracy']:.1f}%"
        w("accuracy vs T: " + "; ".join(f"{p['network']} T={p['timesteps']} {acc(p)}" for p in doc["sweep"]) + "\n")
    for note in doc["notes"]:
        w(f"note: {note}\n")
    w("\nwritten: " + ", ".join(str(p) for p in paths.values()) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except CliError as exc:
        print(f"hwsim: error: {exc}", file=sys.stderr)
        return 2


def _main(args) -> int:
    from export.graph import GraphError, load_graph
    from hwsim.core import SimError, simulate
    from hwsim.encode import InputSet, InputsError, inputs_to_bytes, load_inputs
    from hwsim.energy import DEFAULT_MODEL, EnergyModelError, load_energy_model
    from hwsim.results import NetworkRun, ResultsError, build_results, save_results, sweep_point

    try:
        if args.samples is not None and args.samples < 1:
            raise CliError(f"--samples must be >= 1, got {args.samples}")
        if args.timesteps is not None and args.timesteps < 1:
            raise CliError(f"--timesteps must be >= 1, got {args.timesteps}")
        for opt in ("chunk", "threads"):
            if getattr(args, opt) is not None and getattr(args, opt) < 1:
                raise CliError(f"--{opt} must be >= 1, got {getattr(args, opt)}")
        sweep_ts = []
        if args.sweep:
            try:
                sweep_ts = sorted({int(t) for t in args.sweep.split(",") if t.strip()})
            except ValueError:
                raise CliError(f"--sweep {args.sweep!r}: expected comma-separated integers") from None
            if not sweep_ts or min(sweep_ts) < 1:
                raise CliError(f"--sweep {args.sweep!r}: time steps must be >= 1")
        model = load_energy_model(args.energy_model or DEFAULT_MODEL)
        specs, default_out = _graph_specs(args)
        graphs = [(label, path, load_graph(path)) for label, path in specs]
        g0 = graphs[0][2]
        for label, path, g in graphs[1:]:
            if g.input.shape != g0.input.shape:
                raise CliError(f"{path}: input shape {g.input.shape} differs from {graphs[0][1]}'s {g0.input.shape}")
            if not _same_encoding(g.input, g0.input):
                raise CliError(f"{path}: input normalisation differs from {graphs[0][1]}'s: "
                               "the networks would not see the same spike trains")
            if args.timesteps is None and g.timesteps != g0.timesteps:
                raise CliError(f"{path}: T={g.timesteps} differs from {graphs[0][1]}'s T={g0.timesteps} "
                               "(compared networks must share T; pass --timesteps to choose one)")
        steps = args.timesteps or g0.timesteps
        # the inputs
        wrote_inputs = None
        if args.inputs:
            inputs = load_inputs(args.inputs)
            if steps != inputs.timesteps:
                raise CliError(f"{args.inputs}: the inputs file is for T={inputs.timesteps}, the run for T={steps} "
                               "(pass --timesteps to match)")
            if args.seed is not None and args.seed != inputs.seed:
                raise CliError(f"--seed {args.seed} differs from the inputs file's seed {inputs.seed}")
            if tuple(inputs.images.shape[1:]) != g0.input.shape:
                raise CliError(f"{args.inputs}: images of shape {tuple(inputs.images.shape[1:])} do not fit the "
                               f"graphs' input {g0.input.shape}")
            if args.samples is not None:
                if args.samples > inputs.samples:
                    raise CliError(f"--samples {args.samples}: {args.inputs} holds only {inputs.samples}")
                inputs = InputSet(inputs.images[:args.samples], inputs.labels[:args.samples], inputs.seed,
                                  inputs.timesteps, inputs.dataset, inputs.class_names)
            inputs_file = str(args.inputs)
        else:
            x, y, dsname, classes = _load_test_images(g0, args, args.samples)
            if tuple(x.shape[1:]) != g0.input.shape:
                raise CliError(f"the {dsname} test images have shape {tuple(x.shape[1:])}, the graphs expect "
                               f"{g0.input.shape}")
            inputs = InputSet(x, y, 0 if args.seed is None else args.seed, steps, dsname, classes)
            wrote_inputs = inputs
            inputs_file = None
        out_dir = Path(args.out) if args.out else default_out
        # simulate
        def run_one(label, g, steps):
            bar = None
            if not args.no_progress:
                from tqdm import tqdm
                bar = tqdm(total=inputs.samples, desc=f"hwsim {label} T={steps}", unit="img", leave=False,
                           file=sys.stderr)
            try:
                return simulate(g, (inputs.images, inputs.seed), timesteps=steps, device=args.device,
                                chunk=args.chunk, threads=args.threads,
                                progress=bar.update if bar is not None else None)
            finally:
                if bar is not None:
                    bar.close()

        runs = [NetworkRun(label, str(path), g, run_one(label, g, inputs.timesteps), inputs.labels)
                for label, path, g in graphs]
        sweep, sweep_sims = [], []
        for t in sweep_ts:
            for (label, _, g), r in zip(graphs, runs):
                sim = r.sim if t == inputs.timesteps else run_one(label, g, t)
                sweep.append(sweep_point(label, sim, inputs.labels))
                if sim is not r.sim:
                    sweep_sims.append((label, t, sim))
        prov = g0.provenance or {}
        arch = prov.get("arch")
        if isinstance(arch, dict):
            arch = arch.get("name", "")
        notes = [saturation_note(label, sim_steps, sim) for label, sim_steps, sim in
                 [(r.label, inputs.timesteps, r.sim) for r in runs] + sweep_sims]
        notes = [n for n in notes if n]
        if wrote_inputs is not None:
            inputs_file = str(out_dir / "inputs.npz")
        doc = build_results(runs, model, dataset=inputs.dataset or str(prov.get("dataset", "")),
                            arch=str(arch or ""), seed=inputs.seed, inputs_file=inputs_file, notes=notes,
                            sweep=sweep)
        extra = {} if wrote_inputs is None else {"inputs": ("inputs.npz", inputs_to_bytes(wrote_inputs))}
        paths = save_results(out_dir, doc, extra=extra)
        print_report(doc, paths)
        return 0
    except (GraphError, InputsError, EnergyModelError, SimError, ResultsError) as exc:
        raise CliError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    except OSError as exc:
        raise CliError(f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    sys.exit(main())
