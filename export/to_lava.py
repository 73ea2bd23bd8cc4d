"""``python -m export.to_lava model.pt [--out DIR] [--samples N]``

Quantizes a converted or STDB checkpoint into the fixed-point core graph and writes,
into DIR (default ``<checkpoint folder>/export/<stage>/``):
    coregraph.npz             the core graph (hwsim's input)
    quantization_report.csv   per layer: scale, exponent, vth, clipped fraction, errors
    export_summary.json       float vs quantized accuracy on the same input spikes, spikes per layer
    model.onnx, model.nir     the same network for ONNX and NIR tools
All files are staged in a temporary folder and moved into place only when all succeeded.
With ``--samples N`` it also builds the Lava process graph, runs it with
``Loihi2SimCfg(select_tag='fixed_pt')`` on N test images, prints accuracy and spikes per
layer, and checks Lava's spikes against the integer reference bit for bit.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from export import fixedpoint as fx
from export.graph import CoreGraph, GraphError, save_graph
from export.quantize import QuantizationError, float_output_peak, quantize_checkpoint
from trainer.checkpoint import CheckpointError, load_checkpoint
from trainer.data import DatasetError, Normalisation, load_recorded


def compare_float_and_quantized(ckpt, graph: CoreGraph, images: np.ndarray, labels: np.ndarray,
                                timesteps: int, seed: int) -> dict:
    """Both networks on the same spike trains: accuracy and spikes per neuron per layer."""
    from trainer.snn import SNN
    spikes_in = graph.input.encode(images, timesteps, seed)
    ref = fx.run_reference(graph, spikes_in)
    q_pred = ref["output"].argmax(1)
    snn = SNN(ckpt.model(), ckpt.snn.thresholds, leak=ckpt.snn.leak).eval()
    norm = Normalisation.from_dict(ckpt.data["normalisation"])
    with torch.no_grad():
        x = norm.apply(torch.from_numpy(images))
        logits = snn(x, timesteps, window=50, input_spikes=torch.from_numpy(spikes_in.astype(np.float32)))
    n = len(labels)
    return {
        "samples": n, "timesteps": timesteps, "seed": seed,
        "float_accuracy": 100.0 * float((logits.argmax(1).numpy() == labels).mean()),
        "quantized_accuracy": 100.0 * float((q_pred == labels).mean()),
        "prediction_agreement": 100.0 * float((q_pred == logits.argmax(1).numpy()).mean()),
        "float_spikes_per_neuron": [s / (c * n) for s, c in zip(snn.spike_counts, snn.neuron_counts)],
        "quantized_spikes_per_neuron": [float(s.sum()) / (np.prod(s.shape[2:]) * n) for s in ref["spikes"]],
        "max_abs_input": ref["max_abs_input"],
    }, spikes_in, ref


def write_report_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_lava_check(graph: CoreGraph, spikes_in: np.ndarray, ref: dict, labels: np.ndarray) -> dict:
    from export.lava.builder import run_lava
    lava = run_lava(graph, spikes_in, progress=True)
    exact = all(np.array_equal(a, b) for a, b in zip(lava["spikes"], ref["spikes"])) and \
        np.array_equal(lava["output"], ref["output"])
    n = len(labels)
    return {"samples": n, "accuracy": 100.0 * float((lava["output"].argmax(1) == labels).mean()),
            "spikes_per_neuron": [float(s.sum()) / (np.prod(s.shape[2:]) * n) for s in lava["spikes"]],
            "bit_exact_vs_reference": bool(exact), "seconds_per_image_step": lava["seconds_per_image_step"]}


def export_checkpoint(args) -> Path:
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.snn is None:
        raise QuantizationError(f"{args.checkpoint}: an ANN checkpoint has no thresholds; run "
                                "`python -m trainer convert` first")
    timesteps = args.timesteps or ckpt.snn.timesteps
    out = Path(args.out or Path(args.checkpoint).parent / "export" / ckpt.stage)
    needs_data = args.calibration_samples > 0 or args.eval_samples > 0 or args.samples > 0
    bundle = load_recorded(ckpt.data, args.data_root) if needs_data else None
    peak = None
    if args.calibration_samples > 0:
        images = bundle.train_x[:args.calibration_samples]
        peak = float_output_peak(ckpt, bundle.normalisation.apply(images),
                                 max(timesteps, args.calibration_timesteps or 0), seed=args.seed)
    graph, report = quantize_checkpoint(ckpt, weight_bits=args.weight_bits, output_peak=peak,
                                        source=str(args.checkpoint))
    graph.timesteps = timesteps
    for row in report:
        if row["exceeds_hw_16bit_input"]:
            print(f"warning: layer {row['layer']}: input current can reach {row['max_possible_input']}, beyond the "
                  f"{fx.HW_INPUT_BITS}-bit input of real Loihi hardware (Lava does not enforce it)", file=sys.stderr)
    summary = {"checkpoint": str(args.checkpoint), "stage": ckpt.stage, "timesteps": timesteps,
               "weight_bits": args.weight_bits, "output_peak_calibration": peak,
               "calibration_timesteps": max(timesteps, args.calibration_timesteps or 0), "latency_steps": fx.latency_steps(graph)}
    lava_inputs = None
    if args.eval_samples > 0 or args.samples > 0:
        count = max(args.eval_samples, args.samples)
        images, labels = bundle.test_x[:count].numpy(), bundle.test_y[:count].numpy()
        t = time.time()
        summary["evaluation"], spikes_in, ref = compare_float_and_quantized(ckpt, graph, images, labels, timesteps,
                                                                            args.seed)
        summary["evaluation"]["reference_seconds"] = time.time() - t
        lava_inputs = (spikes_in, ref, labels)

    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.staging-"))
    try:
        save_graph(graph, staging / "coregraph.npz")
        write_report_csv(report, staging / "quantization_report.csv")
        if not args.no_onnx:
            from export.onnx_export import export_onnx
            export_onnx(graph, staging / "model.onnx")
        if not args.no_nir:
            from export.nir_export import export_nir
            export_nir(graph, staging / "model.nir")
        if args.samples > 0:
            spikes_in, ref, labels = lava_inputs
            n = args.samples
            summary["lava"] = run_lava_check(graph, spikes_in[:, :n], {
                "spikes": [s[:, :n] for s in ref["spikes"]], "output": ref["output"][:n]}, labels[:n])
        (staging / "export_summary.json").write_text(json.dumps({**summary, "layers": report}, indent=2))
        out.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print_summary(summary, report, out)
    return out


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
    lava = summary.get("lava")
    if lava:
        print(f"Lava fixed_pt on {lava['samples']} images: accuracy {lava['accuracy']:.2f} %, "
              f"bit-exact vs reference: {lava['bit_exact_vs_reference']}, "
              f"{lava['seconds_per_image_step']:.3f} s per image-step; spikes per neuron "
              + ", ".join(f"{v:.3f}" for v in lava["spikes_per_neuron"]))
    print(f"wrote {out}/coregraph.npz and the quantization report")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.to_lava", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="converted or STDB checkpoint from `python -m trainer`")
    p.add_argument("--out", default=None, help="output folder (default <checkpoint folder>/export/<stage>)")
    p.add_argument("--samples", type=int, default=0, help="also run Lava fixed_pt on this many test images")
    p.add_argument("--eval-samples", type=int, default=200,
                   help="test images for float vs quantized accuracy (0 = skip)")
    p.add_argument("--calibration-samples", type=int, default=128,
                   help="training images to size the output accumulator (0 = skip)")
    p.add_argument("--timesteps", type=int, default=None, help="T (default: the checkpoint's)")
    p.add_argument("--calibration-timesteps", type=int, default=None,
                   help="largest T the graph will run at: sizes the output accumulator so it does not "
                        "saturate there (default: T; larger costs output precision at small T)")
    p.add_argument("--weight-bits", type=int, default=fx.WEIGHT_BITS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--no-nir", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        export_checkpoint(args)
    except (CheckpointError, QuantizationError, GraphError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
