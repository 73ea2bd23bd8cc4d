"""Export a converted or STDB checkpoint: quantize it into the core graph and write, into
one folder (``records.layout``: ``<run>/export/<stage>/`` by default), all at once:

    coregraph.npz             the core graph (hwsim's input)
    quantization_report.csv   per layer: scale, exponent, vth, clipped fraction, errors
    export_summary.json       float vs quantized accuracy on the same input spikes, spikes per layer
    model.onnx, model.nir     the same network for ONNX and NIR tools

With ``lava_samples`` it also runs the Lava process graph (``Loihi2SimCfg(select_tag=
'fixed_pt')``) on that many test images and checks its spikes against the integer
reference bit for bit.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export import fixedpoint as fx
from export.graph import CoreGraph, save_graph
from export.quantize import QuantizationError, float_output_peak, quantize_checkpoint
from records.atomic import write_together
from records.cli import require, writable_dir
from records.layout import EXPORT_SUMMARY_FILE, GRAPH_FILE, NIR_FILE, ONNX_FILE, QUANTIZATION_REPORT_FILE, RunLayout
from records.table import csv_text
from trainer.checkpoint import load_checkpoint
from trainer.stages import data_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    out: Path | None = None               # default: the checkpoint's run folder, export/<stage>/
    timesteps: int | None = None          # T (default: the checkpoint's)
    calibration_timesteps: int | None = None   # the largest T the graph will run at (sizes the output)
    calibration_samples: int = 128        # training images that size the output accumulator (0: skip)
    eval_samples: int = 200               # test images for float vs quantized accuracy (0: skip)
    lava_samples: int = 0                 # test images to run through Lava as well
    weight_bits: int = fx.WEIGHT_BITS
    seed: int = 0
    data_root: str | None = None
    onnx: bool = True
    nir: bool = True
    device: str = "cpu"                   # where the float SNN sizes the output accumulator

    def __post_init__(self) -> None:
        for name in ("calibration_samples", "eval_samples", "lava_samples"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "an integer >= 0")
        for name in ("timesteps", "calibration_timesteps"):
            v = getattr(self, name)
            require(v is None or v >= 1, name, v, "an integer >= 1")
        require(self.device in ("cpu", "cuda"), "device", self.device, "cpu or cuda")
        require(2 <= self.weight_bits <= fx.WEIGHT_BITS, "weight_bits", self.weight_bits,
                f"an integer in 2..{fx.WEIGHT_BITS}")


@dataclass
class Exported:
    """What an export produced: the graph, its folder, the summary and the per-layer report."""
    graph: CoreGraph
    out: Path
    summary: dict
    layers: list[dict]

def compare_float_and_quantized(ckpt, graph: CoreGraph, images: np.ndarray, labels: np.ndarray,
                                timesteps: int, seed: int) -> dict:
    """Both networks on the same spike trains: accuracy and spikes per neuron per layer."""
    from trainer.snn import SNN
    spikes_in = graph.input.encode(images, timesteps, seed)
    ref = fx.run_reference(graph, spikes_in)
    q_pred = ref.predictions
    snn = SNN(ckpt.model(), ckpt.snn.thresholds, leak=ckpt.snn.leak).eval()
    with torch.no_grad():
        x = ckpt.normalisation.apply(torch.from_numpy(images))
        logits = snn(x, timesteps, window=50, input_spikes=torch.from_numpy(spikes_in.astype(np.float32)))
    n = len(labels)
    return {
        "samples": n, "timesteps": timesteps, "seed": seed,
        "float_accuracy": 100.0 * float((logits.argmax(1).numpy() == labels).mean()),
        "quantized_accuracy": 100.0 * float((q_pred == labels).mean()),
        "prediction_agreement": 100.0 * float((q_pred == logits.argmax(1).numpy()).mean()),
        "float_spikes_per_neuron": [s / (c * n) for s, c in zip(snn.spike_counts, snn.neuron_counts)],
        "quantized_spikes_per_neuron": [float(s.sum()) / (np.prod(s.shape[2:]) * n) for s in ref.spikes],
        "max_abs_input": ref.max_abs_input,
    }, spikes_in, ref


def run_lava_check(graph: CoreGraph, spikes_in: np.ndarray, ref: fx.CoreRun, labels: np.ndarray) -> dict:
    from export.lava.runner import run_lava
    lava = run_lava(graph, spikes_in, progress=True)
    exact = all(np.array_equal(a, b) for a, b in zip(lava.spikes, ref.spikes)) and \
        np.array_equal(lava.output, ref.output)
    n = len(labels)
    return {"samples": n, "accuracy": 100.0 * float((lava.predictions == labels).mean()),
            "spikes_per_neuron": [float(s.sum()) / (np.prod(s.shape[2:]) * n) for s in lava.spikes],
            "bit_exact_vs_reference": bool(exact), "seconds_per_image_step": lava.seconds_per_image_step}


def export_checkpoint(path: str | Path, cfg: ExportConfig = ExportConfig()) -> Exported:
    """Quantize the checkpoint at ``path`` and write its export folder (all files or none)."""
    ckpt = load_checkpoint(path)
    if ckpt.snn is None:
        raise QuantizationError(f"{path}: an ANN checkpoint has no thresholds; run "
                                "`python -m trainer convert` first")
    timesteps = cfg.timesteps or ckpt.snn.timesteps
    calibration_t = max(timesteps, cfg.calibration_timesteps or 0)
    out = writable_dir(cfg.out or RunLayout.of_checkpoint(path).export_dir(ckpt.stage), "--out")
    needs_data = cfg.calibration_samples > 0 or cfg.eval_samples > 0 or cfg.lava_samples > 0
    bundle = data_of(ckpt, cfg.data_root) if needs_data else None
    peak = None
    if cfg.calibration_samples > 0:
        images = bundle.train_x[:cfg.calibration_samples]
        peak = float_output_peak(ckpt, bundle.normalisation.apply(images), calibration_t, seed=cfg.seed,
                                 device=cfg.device)
    graph, layers = quantize_checkpoint(ckpt, timesteps=timesteps, weight_bits=cfg.weight_bits, output_peak=peak,
                                        source=str(path))
    for row in layers:
        if row["exceeds_hw_16bit_input"]:
            log.warning("layer %s: input current can reach %s, beyond the %s-bit input of real Loihi hardware "
                        "(Lava does not enforce it)", row["layer"], row["max_possible_input"], fx.HW_INPUT_BITS)
    summary = {"checkpoint": str(path), "stage": ckpt.stage, "timesteps": timesteps,
               "weight_bits": cfg.weight_bits, "output_peak_calibration": peak,
               "calibration_timesteps": calibration_t, "latency_steps": fx.latency_steps(graph)}
    if cfg.eval_samples > 0 or cfg.lava_samples > 0:
        count = max(cfg.eval_samples, cfg.lava_samples)
        images, labels = bundle.test_x[:count].numpy(), bundle.test_y[:count].numpy()
        t = time.time()
        summary["evaluation"], spikes_in, ref = compare_float_and_quantized(ckpt, graph, images, labels, timesteps,
                                                                            cfg.seed)
        summary["evaluation"]["reference_seconds"] = time.time() - t
        if cfg.lava_samples > 0:
            n = cfg.lava_samples
            summary["lava"] = run_lava_check(graph, spikes_in[:, :n], fx.CoreRun(
                [s[:, :n] for s in ref.spikes], ref.output[:n]), labels[:n])
    files = {out / GRAPH_FILE: lambda p: save_graph(graph, p),
             out / QUANTIZATION_REPORT_FILE: csv_text(layers),
             out / EXPORT_SUMMARY_FILE: json.dumps({**summary, "layers": layers}, indent=2)}
    if cfg.onnx:
        from export.onnx_export import export_onnx
        files[out / ONNX_FILE] = lambda p: export_onnx(graph, p)
    if cfg.nir:
        from export.nir_export import export_nir
        files[out / NIR_FILE] = lambda p: export_nir(graph, p)
    write_together(files, index=out / GRAPH_FILE)
    return Exported(graph, out, summary, layers)
