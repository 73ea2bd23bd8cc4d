"""Command line: ``python -m trainer {ann,import,convert,stdb,scratch,spikebp,bncurrent,eval,diagnose,chain} ...``.

``import`` takes a user's own PyTorch module as the ANN (``trainer.user_network``).

``chain`` runs ANN -> conversion -> STDB (and the from-scratch baseline) into
``runs/<name>/`` with defaults that finish in a few minutes on ``digits`` on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import pandas as pd

from records.atomic import atomic_file
from records.cli import (OUTPUT_DIR, OUTPUT_FILE, POSITIVE, PROBABILITY, SEED, TIMESTEPS, BadInput, Parser, integer,
                         number, run_main, run_name, writable_file)
from records.device import resolve_device
from records.heap import reuse_freed_memory
from records.table import csv_text
from records.layout import RunLayout
from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainer.convert import SCALINGS, STATISTICS, rescale_biases
from trainer.data import DATASETS, batches, data_of
from trainer.diagnose import layer_agreement
from trainer.distill import Distillation, check_teacher
from trainer.distributed import setup as setup_ranks
from trainer.models import ANN, ARCHITECTURES
from trainer.lif import SURROGATES
from trainer.lif_backends import BACKENDS
from trainer.defaults import ann_recipe, default_timesteps
from trainer.chain import (ArchChoice, ChainConfig, ConvertConfig, DataConfig, SurrogateChoice, chain,
                            check_converted, convert, evaluate, fine_tune, load_data, scratch_init,
                            train_baseline)
from trainer.torch_import import ImportRefused
from trainer.user_network import imported_checkpoint, load_user_module
from trainer.evaluate import evaluate_ann
from trainer.recipe import PRECISIONS, SCHEDULES, OptimConfig, Runtime, SNNTrainConfig
from trainer.train import train_ann
from trainer.weight_grid import MAX_BITS, MIN_BITS


LEAK = number(0, 1, lo_open=True)


def add_arch_args(p: argparse.ArgumentParser) -> None:
    """The network of a command that builds one: its architecture and dropout."""
    p.add_argument("--arch", default=None, choices=ARCHITECTURES, help="default: the data set's")
    p.add_argument("--conv-dropout", type=PROBABILITY, default=0.2)
    p.add_argument("--fc-dropout", type=PROBABILITY, default=0.5)


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="digits", choices=DATASETS)
    p.add_argument("--data-root", default=None, help="folder or archive of the data set (default: shared datasets)")
    p.add_argument("--train-subset", type=POSITIVE, default=None, help="seeded subset of the training set")
    p.add_argument("--test-subset", type=POSITIVE, default=None, help="seeded subset of the test set")
    p.add_argument("--image-size", type=integer(4, 1024), default=None, help="resize for 'folder' data sets")


SNN_OPTIM = ChainConfig().snn.optim      # the SNN default, defined once; the ANN's: stages.ANN_RECIPES
OPTIM_FIELDS = tuple(f.name for f in dataclasses.fields(OptimConfig))


def add_optim_args(p: argparse.ArgumentParser, d: OptimConfig | None, prefix: str = "") -> None:
    """The optimizer's options; ``d`` None: every default is the data set's ANN recipe."""
    def default(name):
        return None if d is None else getattr(d, name)
    p.add_argument(f"--{prefix}epochs", type=POSITIVE, default=default("epochs"))
    p.add_argument(f"--{prefix}lr", type=number(0, lo_open=True), default=default("lr"))
    p.add_argument(f"--{prefix}optimizer", default=default("optimizer"), choices=("sgd", "adam"))
    p.add_argument(f"--{prefix}momentum", type=number(0, 1, hi_open=True), default=default("momentum"),
                   help="SGD's momentum")
    p.add_argument(f"--{prefix}batch-size", type=POSITIVE, default=default("batch_size"))
    p.add_argument(f"--{prefix}weight-decay", type=number(0), default=default("weight_decay"))
    p.add_argument(f"--{prefix}schedule", default=default("schedule"), choices=SCHEDULES)
    p.add_argument(f"--{prefix}warmup-epochs", type=number(0), default=default("warmup_epochs"))
    p.add_argument(f"--{prefix}grad-clip", type=number(0), default=default("grad_clip"),
                   help="max gradient norm (0 = off)")
    p.add_argument(f"--{prefix}label-smoothing", type=PROBABILITY, default=default("label_smoothing"))
    p.add_argument(f"--{prefix}cutout", type=integer(0, 1024), default=default("cutout"), metavar="PIXELS",
                   help="Cutout: a square of this side set to the data's mean in each training image (0: off)")
    p.add_argument(f"--{prefix}precision", default=default("precision"), choices=PRECISIONS,
                   help="bf16: synapses (convolutions, matmuls) under autocast; neurons integrate in fp32")
    p.add_argument(f"--{prefix}channels-last", default=default("channels_last"), action=argparse.BooleanOptionalAction,
                   help="NHWC layout for the convolutions (fast on GPUs)")


def add_convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--statistic", default="max", choices=STATISTICS, help="threshold statistic (paper: max)")
    p.add_argument("--percentile", type=number(0, 100, lo_open=True), default=99.9)
    p.add_argument("--scaling-factor", type=number(0, lo_open=True), default=0.7)
    p.add_argument("--scaling", default="compound", choices=SCALINGS,
                   help="how the factor enters: compound = every balanced threshold x factor (the paper's code; "
                        "layer l's rate grows by (1/factor)^l), uniform = every layer's rate grows by 1/factor")
    p.add_argument("--balance-batches", type=POSITIVE, default=4, help="batches the statistic is taken over")
    p.add_argument("--leak", type=LEAK, default=1.0, help="membrane leak lambda in (0, 1] (1.0 = IF)")
    p.add_argument("--calibrate-biases", type=integer(0, 100000), default=0, metavar="N",
                   help="calibrate the SNN's biases at T on N training images (trainer.calibrate; 0 = none)")


def add_snn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--surrogate", default=None, choices=SURROGATES,
                   help="surrogate gradient (default: stdb; linear for digits and MNIST, where T is tiny)")
    p.add_argument("--alpha", type=number(0, lo_open=True), default=0.3)
    p.add_argument("--beta", type=number(0, lo_open=True), default=0.01)
    p.add_argument("--detach-reset", action="store_true",
                   help="no gradient through the soft reset, as the paper's code (default: through it; "
                        "docs/method.md: detached, STDB's gradient grows about alpha*T/2 per layer)")
    p.add_argument("--bptt-window", type=POSITIVE, default=None, help="truncated BPTT: loss every t0 steps")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="LIF implementation (trainer.lif); auto: fused Triton kernels on CUDA, numba on the CPU")
    p.add_argument("--rollback-drop", type=number(0, 100), default=10.0,
                   help="roll back to the best weights when validation accuracy drops this many points")
    p.add_argument("--weight-bits", type=integer(MIN_BITS, MAX_BITS), default=None, metavar="BITS",
                   help="train on the export's BITS-bit weight grid (trainer.weight_grid), so the float SNN is "
                        "the core's; default: the initial checkpoint's grid, float weights if it has none")


# ---- argparse Namespace -> typed configurations (nothing below main() sees the Namespace)
def optim_from(args, prefix: str = "") -> OptimConfig:
    return OptimConfig(**{name: getattr(args, prefix + name) for name in OPTIM_FIELDS})


def ann_optim_from(args) -> OptimConfig:
    """The data set's ANN recipe with the options given on the command line."""
    return ann_recipe(args.dataset, **{name: getattr(args, name) for name in OPTIM_FIELDS})


def data_from(args) -> DataConfig:
    return DataConfig(args.dataset, args.data_root, args.train_subset, args.test_subset, args.image_size)


def arch_from(args) -> ArchChoice:
    levels, input_levels = getattr(args, "quant_levels", None), getattr(args, "input_levels", None)
    if input_levels is not None and levels is None:
        raise BadInput(f"--input-levels {input_levels}: quantizes a QCFS ANN's input; give --quant-levels too")
    return ArchChoice(args.arch, args.conv_dropout, args.fc_dropout, getattr(args, "batch_norm", False),
                      levels, input_levels)


def convert_from(args, batch_size: int) -> ConvertConfig:
    return ConvertConfig(args.statistic, args.percentile, args.scaling_factor, args.balance_batches, batch_size,
                         args.leak, args.calibrate_biases, args.scaling)


def snn_from(args, optim: OptimConfig, leak: float | None) -> tuple[SNNTrainConfig, SurrogateChoice]:
    return (SNNTrainConfig(optim, leak=leak, window=args.bptt_window, backend=args.backend,
                           rollback_drop=args.rollback_drop, weight_bits=args.weight_bits),
            SurrogateChoice(args.surrogate, args.alpha, args.beta, not args.detach_reset))


def runtime_from(args) -> Runtime:
    return Runtime(device=resolve_device(args.device, BadInput).type, seed=args.seed, progress=not args.quiet,
                   command=sys.argv, restart=getattr(args, "restart", False))


def chain_from(args) -> ChainConfig:
    snn, surrogate = snn_from(args, optim_from(args, "snn_"), None)
    timesteps = None
    if args.timesteps or args.timesteps_large:
        timesteps = default_timesteps(args.dataset, args.timesteps, args.timesteps_large, arch=args.arch)
    ann_optim = ann_optim_from(args)
    return ChainConfig(data=data_from(args), arch=arch_from(args), ann_optim=ann_optim,
                       convert=convert_from(args, ann_optim.batch_size), snn=snn, surrogate=surrogate,
                       timesteps=timesteps, scratch=not args.no_scratch, runs=args.runs, name=args.name,
                       eval_samples=args.eval_samples)


# ---- commands
def cmd_ann(args) -> None:
    """Under torchrun (WORLD_SIZE > 1) each process trains on its slice of every global batch."""
    rt = runtime_from(args)
    writable_file(args.out, "--out", inputs=(args.init,) if args.init is not None else ())
    init = None if args.init is None else load_checkpoint(args.init)
    bundle = load_data(data_from(args), rt.seed)
    rt.ranks = setup_ranks(rt.device)
    try:
        ckpt = train_ann(bundle, arch_from(args).config(bundle), ann_optim_from(args), Path(args.out), rt, init=init)
    except CheckpointError as exc:
        raise BadInput(f"--init {args.init}: {exc}") from None
    if rt.ranks.is_main:
        print(f"ANN test accuracy {ckpt.metrics['test_acc']:.2f} % -> {args.out}")


def cmd_import(args) -> None:
    rt = runtime_from(args)
    out = writable_file(args.out, "--out", inputs=(args.module.rpartition(":")[0],) + ((args.weights,) if args.weights
                                                                                      else ()))
    bundle = load_data(data_from(args), rt.seed)
    module = load_user_module(args.module, args.weights)
    try:
        ckpt = imported_checkpoint(module, bundle, name=args.name or Path(args.module.rpartition(":")[0]).stem,
                                   seed=rt.seed, command=sys.argv)
    except ImportRefused as exc:
        raise BadInput(f"{args.module}: {exc}") from None
    save_checkpoint(ckpt, out)
    m = ckpt.metrics
    print(f"imported {len(ckpt.arch.layers)} layers ({', '.join(l.kind for l in ckpt.arch.layers)}); test "
          f"accuracy {m['test_acc']:.2f} % (the module: {m['module_test_acc']:.2f} %), largest logit difference "
          f"{m['max_abs_difference']:.3g} -> {out}")


def cmd_convert(args) -> None:
    rt = runtime_from(args)
    ann_ckpt = load_checkpoint(args.checkpoint)
    bundle = data_of(ann_ckpt, args.data_root)
    out = writable_file(args.out or RunLayout.of_checkpoint(args.checkpoint).checkpoint("converted"), "--out",
                        inputs=(args.checkpoint,))
    ckpt = convert(ann_ckpt, bundle, convert_from(args, args.batch_size), args.timesteps, out, rt)
    print("thresholds:", ", ".join(f"{v:.4g}" for v in ckpt.snn.thresholds), f"-> {out}")


def cmd_stdb(args) -> None:
    rt = runtime_from(args)
    init = load_checkpoint(args.checkpoint)
    check_converted(init, args.checkpoint)
    teacher = None
    if args.distill is not None:
        teacher = load_checkpoint(args.distill)
        check_teacher(teacher, init, args.distill)
    bundle = data_of(init, args.data_root, args.train_subset, args.test_subset)
    out = writable_file(args.out or RunLayout.of_checkpoint(args.checkpoint).checkpoint("stdb"), "--out",
                        inputs=tuple(p for p in (args.checkpoint, args.distill) if p is not None))
    cfg, surrogate = snn_from(args, optim_from(args), args.leak)
    if teacher is not None:
        cfg = dataclasses.replace(cfg, distill=Distillation(args.distill_temperature, args.distill_weight))
    result = fine_tune(init, bundle, "stdb", args.timesteps, cfg, surrogate, out, rt, args.eval_samples, teacher)
    if result is not None:
        print(f"STDB test accuracy at T={args.timesteps}: {result['accuracy']:.2f} % -> {out}")


def cmd_scratch(args) -> None:
    rt = runtime_from(args)
    bundle = load_data(data_from(args), rt.seed)
    arch = arch_from(args).config(bundle)
    cfg, surrogate = snn_from(args, optim_from(args), args.leak)
    init = scratch_init(arch, bundle, args.leak, args.timesteps, rt.seed)
    result = fine_tune(init, bundle, "scratch", args.timesteps, cfg, surrogate, Path(args.out), rt, args.eval_samples)
    if result is not None:
        print(f"from-scratch test accuracy at T={args.timesteps}: {result['accuracy']:.2f} % -> {args.out}")


def cmd_baseline(args) -> None:
    rt = runtime_from(args)
    bundle = load_data(data_from(args), rt.seed)
    arch = arch_from(args).config(bundle)
    result = train_baseline(args.command, arch, bundle, args.timesteps, args.epochs, Path(args.out), rt, args.leak,
                            args.eval_samples)
    if result is not None:
        print(f"{args.command} test accuracy at T={args.timesteps}: {result['accuracy']:.2f} % -> {args.out}")


def cmd_eval(args) -> None:
    rt = runtime_from(args)
    ckpt = load_checkpoint(args.checkpoint)
    bundle = data_of(ckpt, args.data_root)
    if ckpt.snn is None:
        accuracy = evaluate_ann(ckpt.model().to(rt.device), bundle, device=rt.device, samples=args.eval_samples)
        print(json.dumps({"stage": "ann", "accuracy": accuracy,
                          "samples": min(args.eval_samples or len(bundle.test_y), len(bundle.test_y))}))
        return
    thresholds = recorded_thresholds(ckpt, args.checkpoint, args.unscaled)
    for t in args.timesteps or [ckpt.snn.timesteps]:
        result = evaluate(ckpt, bundle, t, rt, args.eval_samples, thresholds=thresholds)
        print(json.dumps({"stage": ckpt.stage, **result}))


def recorded_thresholds(ckpt, path, unscaled: bool) -> list[float] | None:
    """The checkpoint's thresholds, or with ``unscaled`` the balanced ones before the scaling factor."""
    if not unscaled:
        return None
    found = (ckpt.metrics.get("balance") or {}).get("unscaled")
    if not isinstance(found, list) or len(found) != len(ckpt.snn.thresholds) or not all(
            isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in found):
        raise BadInput(f"{path}: --unscaled: the checkpoint records no unscaled thresholds (convert it again)")
    return [float(v) for v in found]


def cmd_diagnose(args) -> None:
    rt = runtime_from(args)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.snn is None:
        raise BadInput(f"{args.checkpoint}: an ANN checkpoint; diagnose compares an SNN (converted or fine-tuned) "
                       "with its ANN")
    if ckpt.snn.v_init is not None or ckpt.snn.encoding != "poisson":
        raise BadInput(f"{args.checkpoint}: a low-latency (QCFS) SNN; diagnose compares a balanced conversion "
                       "(Poisson input, neurons from rest) with its ANN, rate x the thresholds' product per layer")
    if "bias_calibration" in ckpt.metrics:
        raise BadInput(f"{args.checkpoint}: its biases are calibrated at T (trainer.calibrate), so its ANN cannot be "
                       "read back from them; diagnose the conversion made without --calibrate-biases")
    out = writable_file(args.out, "--out")
    bundle = data_of(ckpt, args.data_root)
    thresholds = recorded_thresholds(ckpt, args.checkpoint, args.unscaled) or ckpt.snn.thresholds
    x = next(batches(bundle, "test", args.samples, shuffle=False))[0].to(rt.device)
    ann = ANN(ckpt.arch).to(rt.device)            # the ANN: the biases back in its own units
    ann.load_state_dict(rescale_biases(ckpt.arch, ckpt.state_dict, ckpt.snn.thresholds, None))
    snn = ANN(ckpt.arch).to(rt.device)            # the SNN's weights: biases in the units of ``thresholds``
    snn.load_state_dict(rescale_biases(ckpt.arch, ckpt.state_dict, ckpt.snn.thresholds, thresholds))
    rows = [{"timesteps": t, **r} for t in args.timesteps
            for r in layer_agreement(ann, thresholds, x, t, leak=ckpt.snn.leak, seed=rt.seed, snn_model=snn)]
    with atomic_file(out, "w") as f:
        f.write(csv_text(rows))
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"-> {out}")


def cmd_chain(args) -> None:
    run, summary = chain(chain_from(args), runtime_from(args))
    print(json.dumps(summary.to_dict(), indent=2))
    print(f"run folder: {run.root}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--seed", type=SEED, default=0)
        p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
        p.add_argument("--quiet", action="store_true",
                       help="no progress output: no bars, no per-epoch lines (the metrics CSV has the epochs)")
        p.add_argument("--eval-samples", type=POSITIVE, default=None,
                       help="test samples for evaluation, the test split's first N (the SNN stages' evaluations; "
                            "eval: an ANN's too, on the images an SNN's evaluation takes)")

    def restart(p):
        p.add_argument("--restart", action="store_true",
                       help="start over where the output holds a run of another configuration (default: refuse)")

    p = sub.add_parser("ann", help="train the constrained ANN")
    add_data_args(p), common(p)
    add_arch_args(p)
    p.add_argument("--batch-norm", action="store_true",
                   help="a batch norm after every conv layer, folded into weights and neuron biases at conversion")
    p.add_argument("--quant-levels", type=integer(1, 1024), default=None, metavar="L",
                   help="QCFS activations with L levels and trainable thresholds, the input quantized to L levels "
                        "or --input-levels (the low-latency recipe's ANN; default: ReLU)")
    p.add_argument("--input-levels", type=integer(1, 1024), default=None, metavar="T",
                   help="with --quant-levels: the input quantized to T levels instead, as T steps of the integrate "
                        "encoding deliver it (an ANN for an SNN run at T steps; default: L)")
    p.add_argument("--init", default=None, metavar="ANN.pt",
                   help="start from this ANN checkpoint's weights (its architecture but for --quant-levels and "
                        "--input-levels: e.g. a QCFS ANN fine-tuned to other levels); default: random weights")
    p.add_argument("--out", type=OUTPUT_FILE, required=True)
    restart(p), add_optim_args(p, None)

    p = sub.add_parser("import", help="a PyTorch module of your own as the ANN (trainer.user_network)")
    p.add_argument("module", help="FILE.py:NAME, a function or class building the torch.nn.Module (runs your code)")
    p.add_argument("--weights", default=None, help="its state_dict (torch.save); default: the module as built")
    p.add_argument("--name", type=run_name, default=None, help="the architecture's name (default: the file's)")
    add_data_args(p), common(p)
    p.add_argument("--out", type=OUTPUT_FILE, required=True)

    p = sub.add_parser("convert", help="threshold balancing (Algorithm 1) of an ANN checkpoint")
    p.add_argument("checkpoint"), common(p), add_convert_args(p)
    p.add_argument("--data-root", default=None)
    p.add_argument("--timesteps", type=TIMESTEPS, required=True)
    p.add_argument("--batch-size", type=POSITIVE, default=64)
    p.add_argument("--out", type=OUTPUT_FILE, default=None)

    for name, help_ in (("stdb", "STDB fine-tuning of a converted checkpoint"),
                        ("scratch", "train an SNN from random weights with the same loop")):
        p = sub.add_parser(name, help=help_)
        if name == "stdb":
            p.add_argument("checkpoint")
            p.add_argument("--data-root", default=None)
            p.add_argument("--train-subset", type=POSITIVE, default=None, help="seeded subset of the training set")
            p.add_argument("--test-subset", type=POSITIVE, default=None, help="seeded subset of the test set")
            p.add_argument("--out", type=OUTPUT_FILE, default=None)
            p.add_argument("--leak", type=LEAK, default=None)
            p.add_argument("--distill", default=None, metavar="ANN.pt",
                           help="fine-tune against this ANN's outputs (knowledge distillation, trainer.distill; "
                                "default: the labels alone)")
            p.add_argument("--distill-temperature", type=number(0, lo_open=True), default=Distillation.temperature,
                           help="softmax temperature of --distill's soft targets")
            p.add_argument("--distill-weight", type=number(0, 1), default=Distillation.weight,
                           help="weight of --distill's soft term; 1 - it weighs the labels' cross-entropy")
        else:
            add_data_args(p)
            add_arch_args(p)
            p.add_argument("--out", type=OUTPUT_FILE, required=True)
            p.add_argument("--leak", type=LEAK, default=1.0)
        common(p), restart(p), add_snn_args(p)
        p.add_argument("--timesteps", type=TIMESTEPS, required=True)
        add_optim_args(p, SNN_OPTIM)

    for name, help_ in (("spikebp", "Lee 2020's spike-based BP from scratch, its recipe (trainer.methods)"),
                        ("bncurrent", "surrogate-gradient training with batch norm on input currents, folded "
                                      "into weights and neuron biases (trainer.methods)")):
        p = sub.add_parser(name, help=help_)
        add_data_args(p), common(p), restart(p)
        add_arch_args(p)
        p.add_argument("--out", type=OUTPUT_FILE, required=True)
        p.add_argument("--timesteps", type=TIMESTEPS, required=True)
        p.add_argument("--epochs", type=POSITIVE, default=30)
        p.add_argument("--leak", type=LEAK, default=1.0, help="bncurrent's leak (spikebp uses its recipe's, 0.99)")

    p = sub.add_parser("eval", help="accuracy and spikes per layer of any checkpoint at any T")
    p.add_argument("checkpoint"), common(p)
    p.add_argument("--data-root", default=None)
    p.add_argument("--timesteps", type=TIMESTEPS, nargs="*", default=None)
    p.add_argument("--unscaled", action="store_true",
                   help="the converted thresholds before the scaling factor (the large-T column)")

    p = sub.add_parser("diagnose", help="a converted SNN against its ANN, layer by layer (trainer.diagnose)")
    p.add_argument("checkpoint"), common(p)
    p.add_argument("--data-root", default=None)
    p.add_argument("--timesteps", type=TIMESTEPS, nargs="+", required=True)
    p.add_argument("--samples", type=integer(1, 4096), default=64, help="first test images compared")
    p.add_argument("--unscaled", action="store_true", help="the converted thresholds before the scaling factor")
    p.add_argument("--out", type=OUTPUT_FILE, required=True, help="CSV, one row per T and neuron layer")

    p = sub.add_parser("chain", help="ANN -> conversion -> STDB (+ from scratch) into runs/<name>/")
    add_data_args(p), common(p), restart(p), add_convert_args(p), add_snn_args(p)
    add_arch_args(p)
    p.add_argument("--runs", type=OUTPUT_DIR, default="runs")
    p.add_argument("--name", type=run_name, default=None)
    p.add_argument("--timesteps", type=TIMESTEPS, default=None, help="reduced T for STDB")
    p.add_argument("--timesteps-large", type=TIMESTEPS, default=None, help="large T to evaluate the conversion")
    p.add_argument("--no-scratch", action="store_true", help="skip the from-scratch baseline")
    add_optim_args(p, None)
    add_optim_args(p, SNN_OPTIM, prefix="snn-")
    return parser


COMMANDS = {"ann": cmd_ann, "import": cmd_import, "convert": cmd_convert, "stdb": cmd_stdb, "scratch": cmd_scratch,
            "eval": cmd_eval, "chain": cmd_chain, "spikebp": cmd_baseline, "bncurrent": cmd_baseline,
            "diagnose": cmd_diagnose}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    reuse_freed_memory()          # each iteration's tensors reuse the last one's pages (records.heap)
    return run_main(f"trainer {args.command}", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":
    sys.exit(main())
