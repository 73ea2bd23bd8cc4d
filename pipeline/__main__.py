"""The whole chain in one command: ``python -m pipeline [--dataset digits] ...``.

trainer (ANN -> conversion -> STDB, + from-scratch baseline) writes runs/<name>/*.pt;
``--methods hybrid,spikebp,bncurrent,qcfs`` trains the hybrid's baselines too (trainer.methods:
Lee 2020's spike-based BP, batch norm on input currents) and the low-latency recipe (qcfs: a
QCFS ANN with batch norm, converted and fine-tuned at the same T; the digits default),
exported and simulated beside it;
export quantizes the converted and STDB networks into core graphs (runs/<name>/export/);
hwsim replays the same Poisson inputs through both (runs/<name>/hwsim/, --edp);
reports draws Fig. 3, the energy/EDP figures and the tables (runs/<name>/report.md).
Each step is the step's own function, called with typed configurations; the time steps
are decided once, here, as one ``records.timesteps.TimeSteps`` that every step reads.

``--recipe low-latency`` makes the low-latency recipe the chain's own: the ANN with batch norm
and QCFS activations of L = T levels (default T = 4), converted with its thresholds and its
biases calibrated at T, fine-tuned at T on the core's 8-bit weight grid; the chain's stages,
files and report stay the hybrid's (ann, converted, stdb).

``--recipe calibrated``, the default where the paper's T is long (CIFAR), keeps the paper's T
and threshold balancing with what made them hold at depth on CIFAR-10 (RESULTS.md: VGG9 at
T = 100, VGG5 at T = 75): an ANN with batch norm, Cutout and label smoothing, thresholds at
the 99.9th percentile unscaled, the biases calibrated at T, STDB against the ANN's outputs
on the 8-bit weight grid (trainer.defaults). ``--recipe paper`` keeps the paper's settings.

``--budget-minutes M`` is the profile for one GPU run or a CPU run (docs/gpu.md): the whole
chain in M minutes, split over the stages (``pipeline.budget``), the recipe's ANN (the
paper's: the fast ANN recipe) trained as many epochs as fit, bf16 where the device computes
it natively (fp32 elsewhere), no from-scratch baseline, a short accuracy-vs-T sweep, and the
stages' wall times in ``stage_times.csv``; without ``--timesteps``, a reduced T whose STDB
would not fit in memory is lowered to the most that does (``trainer.chain.fitted_timesteps``:
ResNet20's T = 250 on 24 GiB), and every stage after runs at it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import torch

from export.exporter import ExportConfig, export_checkpoint
from export.to_lava import print_summary
from hwsim.energy import load_energy_model
from hwsim.run import HwsimConfig, parse_sweep, run_hwsim
from records.atomic import atomic_file
from records.cli import (OUTPUT_DIR, POSITIVE, PROBABILITY, SEED, TIMESTEPS, BadInput, Parser, integer, number,
                         run_main, run_name)
from records.device import resolve_device
from records.heap import reuse_freed_memory
from records.layout import COMPARED_STAGES, METHOD_STAGES, STAGE_TIMES_FILE
from records.table import csv_text
from reports import render_report
from reports.terminal import print_report
from trainer.convert import SCALINGS, STATISTICS
from trainer.data import DATASETS
from trainer.distill import Distillation
from trainer.methods import METHODS
from trainer.models import ARCHITECTURES, RESNETS
from pipeline.budget import LOW_LATENCY_SHARES, STAGE_SHARES, StageClock
from trainer.defaults import (RECIPE_CONVERSION, RECIPES, ann_recipe, calibrated_recipe, calibrated_snn_optim,
                              default_recipe, default_timesteps, fast_recipe, fast_snn_optim, low_latency_recipe,
                              low_latency_snn_optim)
from trainer.chain import ArchChoice, ChainConfig, ConvertConfig, DataConfig, SurrogateChoice, chain
from trainer.weight_grid import MAX_BITS, MIN_BITS
from trainer.recipe import Runtime


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=DATASETS)
    p.add_argument("--data-root", default=None)
    p.add_argument("--arch", default=None, choices=ARCHITECTURES, help="default: the data set's")
    p.add_argument("--timesteps", type=TIMESTEPS, default=None, help="reduced T (STDB, export, hwsim)")
    p.add_argument("--timesteps-large", type=TIMESTEPS, default=None, help="large T to evaluate the conversion")
    p.add_argument("--epochs", type=POSITIVE, default=None, help="ANN epochs")
    p.add_argument("--snn-epochs", type=POSITIVE, default=None, help="STDB / from-scratch epochs")
    p.add_argument("--train-subset", type=POSITIVE, default=None)
    p.add_argument("--test-subset", type=POSITIVE, default=None)
    p.add_argument("--name", type=run_name, default=None, help="run folder name under --runs")
    p.add_argument("--runs", type=OUTPUT_DIR, default="runs")
    p.add_argument("--samples", type=POSITIVE, default=None, help="hwsim test samples (default: test set, <= 1500)")
    p.add_argument("--eval-samples", type=POSITIVE, default=None,
                   help="test images of the trainer's float SNN evaluations, and validation images of the "
                        "fine-tuning's checks (default: the whole split, or what a budget leaves time for)")
    p.add_argument("--large-eval-samples", type=POSITIVE, default=None,
                   help="test images of the converted network's evaluation at the large T (default: --eval-samples)")
    p.add_argument("--sweep", default=None, help="T values for accuracy vs T, e.g. 2,4,8,16 (default: powers "
                                                 "of two up to the large T, plus both Ts)")
    p.add_argument("--energy-model", default="first_order")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-scratch", action="store_true")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--restart", action="store_true",
                   help="retrain where the run folder holds runs of another configuration (default: refuse)")
    p.add_argument("--methods", type=methods_list, default=None,
                   help=f"training methods to compare at the reduced T, comma-separated from {', '.join(METHODS)} "
                        "(hybrid always among them): each is trained, exported and run through hwsim on the same "
                        "images, and the report compares them (default: hybrid,qcfs on digits without a budget or "
                        "--recipe low-latency, else hybrid)")
    p.add_argument("--recipe", choices=RECIPES, default=None,
                   help="the chain's ANN and conversion: the paper's (ReLU, no batch norm, threshold balancing), "
                        "the low-latency recipe's (batch norm, QCFS activations, T = 4 by default) or the calibrated "
                        "one (the paper's T; batch norm, ReLU, percentile thresholds unscaled, biases calibrated, "
                        "distilled STDB on the 8-bit grid); default: the calibrated one where the paper's T is long "
                        "(CIFAR), else the paper's")
    p.add_argument("--quant-levels", type=integer(1, 1024), default=None, metavar="L",
                   help="levels of the QCFS ANN's activations (the qcfs method's, or the chain's under --recipe "
                        "low-latency; default: the reduced T; its input has the reduced T's levels, as the SNN's)")
    p.add_argument("--weight-bits", type=integer(MIN_BITS, MAX_BITS), default=None, metavar="BITS",
                   help="fine-tune (STDB, qcfs, scratch) on the export's BITS-bit weight grid, so each float SNN "
                        "is the one the core runs (trainer.weight_grid; default: float weights)")
    p.add_argument("--distill", action="store_true",
                   help="fine-tune the hybrid (and the low-latency recipe's SNN) against its own ANN's outputs "
                        "as well as the labels (knowledge distillation, trainer.distill); default: the labels alone, "
                        "except under the calibrated recipe")
    p.add_argument("--method-epochs", type=POSITIVE, default=None,
                   help="epochs of each baseline of --methods (default: the ANN's)")
    p.add_argument("--conv-dropout", type=PROBABILITY, default=None, metavar="P",
                   help="dropout after each hidden conv (default: the recipe's: 0.2 for the paper's, 0 for the "
                        "others)")
    p.add_argument("--fc-dropout", type=PROBABILITY, default=None, metavar="P",
                   help="dropout after each hidden linear layer (default: the recipe's: 0.5 for the paper's, 0 for "
                        "the others)")
    p.add_argument("--label-smoothing", type=PROBABILITY, default=None, metavar="EPS",
                   help="the ANN's label smoothing (default: the recipe's)")
    p.add_argument("--cutout", type=integer(0, 1024), default=None, metavar="PIXELS",
                   help="the ANN's Cutout: a square of this side set to the data's mean in each training image "
                        "(default: the recipe's: 16 for the calibrated recipe on CIFAR, else off)")
    p.add_argument("--statistic", default=None, choices=STATISTICS,
                   help="threshold balancing's statistic of the input currents (default: the recipe's: the "
                        "paper's max, the calibrated recipe's percentile)")
    p.add_argument("--scaling-factor", type=number(0, lo_open=True), default=None, metavar="F",
                   help="the balanced thresholds' factor for the reduced T (default: the paper's 0.7; the "
                        "calibrated recipe's 1)")
    p.add_argument("--scaling", default=None, choices=SCALINGS,
                   help="how the factor enters: compound = every balanced threshold x F (the paper's code, the "
                        "default), uniform = every layer's rate x 1/F (trainer.convert)")
    p.add_argument("--calibrate-biases", type=integer(0, 100000), default=None, metavar="N",
                   help="calibrate the converted SNN's biases at the reduced T on N training images "
                        "(trainer.calibrate; default: the low-latency and calibrated recipes' 256, else none)")
    p.add_argument("--budget-minutes", type=number(0, lo_open=True), default=None,
                   help="finish the whole chain, report included, in this many minutes (the one-GPU-run profile)")
    return p


def methods_list(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in METHODS]
    if unknown or "hybrid" not in names:
        raise argparse.ArgumentTypeError(
            f"{text!r}: " + (f"unknown method {unknown[0]!r}" if unknown else "the hybrid must be among them "
                             "(the chain is built around it)") + f"; choose from {', '.join(METHODS)}")
    return names


DEFAULT_METHODS = {"digits": ("hybrid", "qcfs")}     # else (residual nets, which qcfs lacks; a budget) the hybrid


def methods_of(args) -> tuple[str, ...]:
    if args.methods:
        return args.methods
    if args.arch in RESNETS or args.budget_minutes is not None:      # a budget's stage shares are the hybrid's
        return ("hybrid",)
    if args.recipe == "low-latency":           # the qcfs method is then the chain itself
        return tuple(m for m in DEFAULT_METHODS.get(args.dataset, ("hybrid",)) if m != "qcfs")
    return DEFAULT_METHODS.get(args.dataset, ("hybrid",))


def compared_stages(args) -> list[str]:
    """The stages exported and simulated: converted and STDB, then each method's of --methods
    (the qcfs recipe's conversion too)."""
    extra = [s for m in methods_of(args) if m != "hybrid"
             for s in (("qcfs_converted", "qcfs") if m == "qcfs" else (METHOD_STAGES[m],))]
    return list(COMPARED_STAGES) + extra


def recipe_of(args) -> str:
    recipe = args.recipe or default_recipe(args.dataset)
    if recipe == "low-latency" and "qcfs" in (args.methods or ()):
        raise BadInput("--methods qcfs: under --recipe low-latency the chain itself is that recipe")
    return recipe


def convert_config(args, recipe_name: str) -> ConvertConfig:
    """The conversion's settings: the recipe's (the low-latency one calibrates its biases, the
    calibrated one balances at a percentile, unscaled, and calibrates), with what the command
    line changes."""
    return dataclasses.replace(ConvertConfig(**RECIPE_CONVERSION[recipe_name]), **{k: v for k, v in (
        ("statistic", args.statistic), ("scaling_factor", args.scaling_factor), ("scaling", args.scaling),
        ("bias_calibration", args.calibrate_biases)) if v is not None})


def chain_config(args, timesteps, device: str, recipe: str = "paper") -> ChainConfig:
    budget = args.budget_minutes is not None
    low, calibrated = recipe == "low-latency", recipe == "calibrated"
    arch = (ArchChoice(args.arch, conv_dropout=0.0, fc_dropout=0.0, norm=True,      # its input as T steps deliver it
                       quant_levels=args.quant_levels or timesteps.reduced, input_levels=timesteps.reduced)
            if low else ArchChoice(args.arch, conv_dropout=0.0, fc_dropout=0.0, norm=True) if calibrated
            else ArchChoice(args.arch))
    arch = dataclasses.replace(arch, **{k: v for k, v in (("conv_dropout", args.conv_dropout),
                                                          ("fc_dropout", args.fc_dropout)) if v is not None})
    # a budget's reduced T may be lowered to fit in memory, but not the low-latency ANN's: it is made for T
    cfg = ChainConfig(data=DataConfig(args.dataset, args.data_root, args.train_subset, args.test_subset),
                      arch=arch, timesteps=timesteps, fit_timesteps=budget and args.timesteps is None and not low,
                      scratch=not (args.no_scratch or budget),
                      convert=convert_config(args, recipe),
                      runs=args.runs, name=args.name, baselines=tuple(m for m in methods_of(args) if m != "hybrid"),
                      baseline_epochs=args.method_epochs, qcfs_levels=None if low else args.quant_levels,
                      eval_samples=args.eval_samples, large_eval_samples=args.large_eval_samples)
    if low:            # the CPU runs' recipe (trainer.defaults); fine-tuned on the core's 8-bit weight grid
        cfg.ann_optim = low_latency_recipe(args.dataset, device if budget else None)
        cfg.snn = dataclasses.replace(cfg.snn, optim=low_latency_snn_optim(cfg.snn.optim, device if budget else None),
                                      weight_bits=8)
        cfg.surrogate = SurrogateChoice("linear")
    elif calibrated:   # RESULTS.md's T = 100 run (trainer.defaults)
        cfg.ann_optim = calibrated_recipe(args.dataset, device if budget else None)
        cfg.snn = dataclasses.replace(cfg.snn, optim=calibrated_snn_optim(cfg.snn.optim, device if budget else None),
                                      weight_bits=8, distill=Distillation())
        cfg.surrogate = SurrogateChoice("linear")
    elif budget:
        cfg.ann_optim = fast_recipe(args.dataset, device)
        cfg.snn = dataclasses.replace(cfg.snn, optim=fast_snn_optim(args.dataset, cfg.snn.optim, device))
    if args.epochs is not None:
        cfg.ann_optim = dataclasses.replace(cfg.ann_optim or ann_recipe(args.dataset), epochs=args.epochs)
    if args.label_smoothing is not None:
        cfg.ann_optim = dataclasses.replace(cfg.ann_optim or ann_recipe(args.dataset),
                                            label_smoothing=args.label_smoothing)
    if args.cutout is not None:
        cfg.ann_optim = dataclasses.replace(cfg.ann_optim or ann_recipe(args.dataset), cutout=args.cutout)
    if args.eval_samples is not None:            # the fine-tuning's validation checks too
        cfg.snn = dataclasses.replace(cfg.snn, val_samples=args.eval_samples)
    if args.weight_bits is not None:
        cfg.snn = dataclasses.replace(cfg.snn, weight_bits=args.weight_bits)
    if args.snn_epochs is not None:
        cfg.snn = dataclasses.replace(cfg.snn, optim=dataclasses.replace(cfg.snn.optim, epochs=args.snn_epochs))
    if args.distill:
        cfg.snn = dataclasses.replace(cfg.snn, distill=Distillation())
    return cfg


def budget_sweep(reduced: int) -> tuple[int, ...]:
    """The accuracy-vs-T sweep of a budgeted run: the powers of two below the reduced T, and
    T. hwsim reads the smaller T out of its run at T (``simulate(readouts=...)``), so the
    sweep costs no more than the run; the large T of the conversion check stays out of it."""
    return tuple(sorted({2 ** k for k in range(reduced.bit_length()) if 2 ** k < reduced} | {reduced}))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")
    reuse_freed_memory()          # each iteration's tensors reuse the last one's pages (records.heap)
    return run_main("pipeline", lambda: run_pipeline(args))


def run_pipeline(args) -> None:
    """The four steps, in order; each step's own function does the work."""
    device = resolve_device(args.device, BadInput).type
    recipe = recipe_of(args)
    clock = StageClock(None if args.budget_minutes is None else 60.0 * args.budget_minutes,
                       LOW_LATENCY_SHARES if recipe == "low-latency" else STAGE_SHARES)
    steps = default_timesteps(args.dataset, args.timesteps, args.timesteps_large, parse_sweep(args.sweep),
                              arch=args.arch, recipe=recipe)
    if args.budget_minutes is not None and not args.sweep:
        steps = dataclasses.replace(steps, sweep=budget_sweep(steps.reduced))
    load_energy_model(args.energy_model)          # a bad model is reported before any training
    if args.budget_minutes is not None and device == "cuda":
        torch.backends.cudnn.benchmark = True            # fixed shapes: cuDNN's fastest kernels
        torch.backends.cuda.matmul.allow_tf32 = True     # the float SNN's matmuls (the convs use TF32 already)
    rt = Runtime(device=device, seed=args.seed, progress=not args.quiet, command=sys.argv, restart=args.restart)
    print(f"== 1/4 trainer: ANN -> conversion -> STDB ({recipe} recipe, T = {steps.reduced}, "
          f"large T = {steps.large})", flush=True)
    run, summary = chain(chain_config(args, steps, device, recipe), rt, clock)
    steps = summary.timesteps                     # a budget's reduced T may have been lowered to fit
    print("float accuracy (%): " + ", ".join(
        f"{a.stage}{'' if a.timesteps is None else f' T={a.timesteps}'} {a.accuracy:.2f}"
        for a in summary.accuracies) + f"; run folder: {run.root}")

    stages = compared_stages(args)
    print(f"== 2/4 export: quantize the {', '.join(stages)} networks", flush=True)
    for stage in stages:
        # The output accumulator is sized for the largest T of the accuracy-vs-T sweep.
        # Under a budget the integer reference (about 1 s per image-step for VGG16) is left
        # out: hwsim, bit-exact with it (tests/test_conformance.py), tests the fixed point.
        done = export_checkpoint(run.checkpoint(stage), ExportConfig(
            timesteps=steps.reduced, calibration_timesteps=steps.calibration, seed=args.seed,
            data_root=args.data_root, device=device, eval_samples=0 if args.budget_minutes else 200))
        print_summary(done.summary, done.layers, done.out)
    clock.done("export")

    print(f"== 3/4 hwsim: same inputs through the {len(stages)} networks, --edp", flush=True)
    doc, paths = run_hwsim([(s, run.graph(s)) for s in stages], HwsimConfig(
        timesteps=steps.reduced, sweep=steps.sweep, samples=args.samples, seed=args.seed,
        energy_model=args.energy_model, device=args.device, data_root=args.data_root,
        progress=not args.quiet), run.hwsim_dir)
    print_report(doc, paths)
    clock.done("hwsim")

    print("== 4/4 reports", flush=True)
    report = render_report(run.root)
    clock.done("report")
    times = clock.rows()
    with atomic_file(run.root / STAGE_TIMES_FILE, "w") as f:
        f.write(csv_text(times))
    print(f"summary: {report}")
    print("stage wall times (s): " + ", ".join(f"{r['stage']} {r['seconds']:.1f}" for r in times)
          + f"; total {sum(clock.spent.values()):.1f}")


if __name__ == "__main__":
    sys.exit(main())
