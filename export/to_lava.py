"""``python -m export.to_lava model.pt [--out DIR] [--samples N]``
``python -m export.to_lava model.nir --dataset NAME [--timesteps T] [--subtract-reset] ...``

Quantizes a converted or STDB checkpoint, or a NIR graph written by another framework
(snnTorch, Norse, SpikingJelly, ...; ``export.nir_import`` says what maps), into the
fixed-point core graph and writes, into DIR (default ``<checkpoint folder>/export/<stage>/``,
or ``<name>_core/`` beside a NIR file): coregraph.npz (hwsim's input),
quantization_report.csv, export_summary.json, model.onnx and model.nir, all at once or none
(``export.exporter``). A NIR file needs the data set it is deployed on (normalisation,
classes, calibration and test images) and T where the file does not record them. With
``--samples N`` it also builds the Lava process graph, runs it with
``Loihi2SimCfg(select_tag='fixed_pt')`` on N test images, prints accuracy and spikes per
layer, and checks Lava's spikes against the integer reference bit for bit.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from export import fixedpoint as fx
from export.exporter import ExportConfig, NIRImportConfig, export_checkpoint, export_nir_file
from export.neuron_semantics import SEMANTICS
from records.cli import COUNT, OUTPUT_DIR, SEED, TIMESTEPS, Parser, integer, number, require, run_main


def print_summary(summary: dict, report: list[dict], out: Path) -> None:
    print(f"{'layer':<8} {'op':<6} {'kernel':<7} {'scale':>10} {'exp':>4} {'theta':>10} {'vth':>7} {'max err':>10}")
    for r in report:
        print(f"{r['layer']:<8} {r['op']:<6} {r['kernel']:<7} {r['weight_scale']:>10.4g} {r['weight_exp']:>4} "
              f"{r['float_threshold']:>10.4g} {r['vth']:>7} {r['max_abs_weight_error']:>10.3g}")
    ev = summary.get("evaluation")
    if ev:
        print(f"T={ev['timesteps']}, {ev['samples']} test images, same input spikes: float SNN "
              f"{ev['float_accuracy']:.2f} %, quantized {ev['quantized_accuracy']:.2f} % "
              f"(predictions agree on {ev['prediction_agreement']:.1f} %)")
        print("spikes per neuron (float / quantized): " + ", ".join(
            f"{a:.3f}/{b:.3f}" for a, b in zip(ev["float_spikes_per_neuron"], ev["quantized_spikes_per_neuron"])))
    source = summary.get("source")
    if source:
        for difference in source["differences"] or [f"{source['framework']} steps its neurons as the core does"]:
            print(f"note: {difference}")
        if "float_accuracy" in source:
            print(f"against {source['framework']}'s own neurons (float): {source['float_accuracy']:.2f} %; the "
                  f"quantized predictions agree with it on {source['prediction_agreement']:.1f} %, the core's float "
                  f"rule on {source['float_agreement']:.1f} %")
    lava = summary.get("lava")
    if lava:
        print(f"Lava fixed_pt on {lava['samples']} images: accuracy {lava['accuracy']:.2f} %, "
              f"bit-exact vs reference: {lava['bit_exact_vs_reference']}, "
              f"{lava['seconds_per_image_step']:.3f} s per image-step; spikes per neuron "
              + ", ".join(f"{v:.3f}" for v in lava["spikes_per_neuron"]))
    print(f"wrote {out}/coregraph.npz and the quantization report")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m export.to_lava", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="MODEL",
                   help="converted or STDB checkpoint from `python -m trainer`, or a NIR file (.nir)")
    p.add_argument("--out", type=OUTPUT_DIR, default=None,
                   help="output folder (default <checkpoint folder>/export/<stage>)")
    p.add_argument("--samples", type=COUNT, default=0, help="also run Lava fixed_pt on this many test images")
    p.add_argument("--eval-samples", type=COUNT, default=200,
                   help="test images for float vs quantized accuracy (0 = skip)")
    p.add_argument("--calibration-samples", type=COUNT, default=128,
                   help="training images to size the output accumulator (0 = skip)")
    p.add_argument("--timesteps", type=TIMESTEPS, default=None, help="T (default: the checkpoint's)")
    p.add_argument("--calibration-timesteps", type=TIMESTEPS, default=None,
                   help="largest T the graph will run at: sizes the output accumulator so it does not "
                        "saturate there (default: T; larger costs output precision at small T)")
    p.add_argument("--weight-bits", type=integer(2, fx.WEIGHT_BITS), default=None,
                   help=f"weight mantissa bits (default: the grid the checkpoint was fine-tuned on, else "
                        f"{fx.WEIGHT_BITS})")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--no-nir", action="store_true")
    g = p.add_argument_group("NIR files")
    g.add_argument("--dataset", default=None, help="the data set a NIR graph is deployed on (digits, mnist, cifar10)")
    g.add_argument("--dt", type=number(0, lo_open=True), default=None,
                   help="the NIR graph's time step in s (default: its metadata, else 1e-4)")
    g.add_argument("--subtract-reset", action="store_true",
                   help="IF/LIF nodes reset by subtraction (snnTorch's Leaky, SpikingJelly's v_reset=None); "
                        "NIR 1.0 cannot state it")
    g.add_argument("--source", default=None, choices=tuple(SEMANTICS),
                   help="the framework the network was trained in: implies --subtract-reset, names where its "
                        "neurons differ from the core's and compares the quantized predictions with its own "
                        "neuron rule (export.nir_import)")
    return p


def config_from(args) -> ExportConfig:
    return ExportConfig(out=Path(args.out) if args.out else None, timesteps=args.timesteps,
                        calibration_timesteps=args.calibration_timesteps,
                        calibration_samples=args.calibration_samples, eval_samples=args.eval_samples,
                        lava_samples=args.samples, weight_bits=args.weight_bits, seed=args.seed,
                        data_root=args.data_root, onnx=not args.no_onnx, nir=not args.no_nir)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s: %(message)s")

    def body():
        if Path(args.checkpoint).suffix == ".nir":
            done = export_nir_file(args.checkpoint, config_from(args),
                                   NIRImportConfig(args.dataset, args.dt, args.subtract_reset, args.source or "core"))
        else:
            for name in ("dataset", "dt", "subtract_reset", "source"):
                require(getattr(args, name) in (None, False), name, getattr(args, name),
                        "left out for a checkpoint (it records its data set, T and reset; the option is a NIR file's)")
            done = export_checkpoint(args.checkpoint, config_from(args))
        print_summary(done.summary, done.layers, done.out)
    return run_main("export.to_lava", body)


if __name__ == "__main__":
    sys.exit(main())
