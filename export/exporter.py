"""Export a converted or STDB checkpoint, or a NIR graph from another framework
(``export_nir_file``, ``export.nir_import``): quantize it into the core graph and write, into
one folder (``records.layout``: ``<run>/export/<stage>/`` or ``<name>_core/`` by default), all at once:

    coregraph.npz             the core graph (hwsim's input)
    quantization_report.csv   per layer: scale, exponent, vth, weight errors, largest input
    export_summary.json       float vs quantized accuracy on the same input spikes, spikes per layer
    model.onnx, model.nir     the same network for ONNX and NIR tools

With ``lava_samples`` it also runs the Lava process graph (``Loihi2SimCfg(select_tag=
'fixed_pt')``) on that many test images and checks its spikes against the integer
reference bit for bit.
"""
from __future__ import annotations

import json
import logging
import math
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
from records.layout import (EXPORT_SUMMARY_FILE, GRAPH_FILE, NIR_FILE, ONNX_FILE, QUANTIZATION_REPORT_FILE, RunLayout,
                            nir_import_dir)
from records.sizing import require_memory
from records.table import csv_text
from trainer.checkpoint import load_checkpoint
from trainer.data import data_of
from trainer.models import neuron_count

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportConfig:
    out: Path | None = None               # default: the checkpoint's run folder, export/<stage>/
    timesteps: int | None = None          # T (default: the checkpoint's)
    calibration_timesteps: int | None = None   # the largest T the graph will run at (sizes the output)
    calibration_samples: int = 128        # training images that size the output accumulator (0: skip)
    eval_samples: int = 200               # test images for float vs quantized accuracy (0: skip)
    lava_samples: int = 0                 # test images to run through Lava as well
    weight_bits: int | None = None        # default: the grid the checkpoint trained on, else fx.WEIGHT_BITS
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
        require(self.weight_bits is None or 2 <= self.weight_bits <= fx.WEIGHT_BITS, "weight_bits",
                self.weight_bits, f"an integer in 2..{fx.WEIGHT_BITS}")


@dataclass
class Exported:
    """What an export produced: the graph, its folder, the summary and the per-layer report."""
    graph: CoreGraph
    out: Path
    summary: dict
    layers: list[dict]


# Bytes the export holds per test image and step, for all steps at once: the input spikes
# (int8), the float SNN's float32 copy of them and the integrate rule's two float32 count
# arrays (13 per input); one byte per neuron for the integer reference's spike trains, and
# as much again for Lava's. A NIR graph's calibration holds its inputs as int8, the rule's
# counts and float64 (17 per input).
EVALUATION_BYTES_PER_INPUT = 13
NIR_CALIBRATION_BYTES_PER_INPUT = 17


def require_export_memory(cfg: ExportConfig, timesteps: int, source, inputs: int, neurons: int) -> None:
    """Refuse, naming the options (or the ``source`` file whose T it is), an evaluation whose
    spike trains cannot fit in memory."""
    n = max(cfg.eval_samples, cfg.lava_samples)
    t_named = f"--timesteps {timesteps}" if cfg.timesteps else f"{source}'s T = {timesteps}"
    need = n * timesteps * (EVALUATION_BYTES_PER_INPUT * inputs + (2 if cfg.lava_samples else 1) * neurons)
    require_memory(need, f"--eval-samples {n} at {t_named}",
                   f"the float-vs-fixed-point evaluation of {n} test images over {timesteps} steps",
                   "fewer --eval-samples (0: none) or time steps need less")


def float_snn_run(ckpt, graph: CoreGraph, images: np.ndarray, spikes_in: np.ndarray
                  ) -> tuple[np.ndarray, list[float]]:
    """The checkpoint's float SNN on the quantized graph's input spikes: (predictions, spikes
    per neuron of each spiking layer)."""
    from trainer.snn import SNN
    snn = SNN.of_checkpoint(ckpt).eval()
    with torch.no_grad():
        x = ckpt.normalisation.apply(torch.from_numpy(images))
        logits = snn(x, graph.timesteps, window=50, input_spikes=torch.from_numpy(spikes_in.astype(np.float32)))
    n = len(images)
    return logits.argmax(1).numpy(), [s / (c * n) for s, c in zip(snn.spike_counts, snn.neuron_counts)]


def run_lava_check(graph: CoreGraph, spikes_in: np.ndarray, ref: fx.CoreRun, labels: np.ndarray) -> dict:
    from export.lava.runner import run_lava
    lava = run_lava(graph, spikes_in, progress=True)
    exact = all(np.array_equal(a, b) for a, b in zip(lava.spikes, ref.spikes)) and \
        np.array_equal(lava.output, ref.output)
    n = len(labels)
    return {"samples": n, "accuracy": 100.0 * float((lava.predictions == labels).mean()),
            "spikes_per_neuron": lava.spikes_per_neuron,
            "bit_exact_vs_reference": bool(exact), "seconds_per_image_step": lava.seconds_per_image_step}


def export_bits(asked: int | None, trained: int | None, path) -> int:
    """The weight bits of an export: those asked for, else the grid the checkpoint was
    fine-tuned on, else the core's; asking for another grid than the trained one is an error."""
    if asked is not None and trained is not None and asked != trained:
        raise QuantizationError(f"{path}: fine-tuned on the {trained}-bit weight grid (--weight-bits {trained}); "
                                f"exporting it at {asked} bits would not be the network it trained as")
    return asked or trained or fx.WEIGHT_BITS


def export_checkpoint(path: str | Path, cfg: ExportConfig = ExportConfig()) -> Exported:
    """Quantize the checkpoint at ``path`` and write its export folder (all files or none)."""
    ckpt = load_checkpoint(path)
    if ckpt.snn is None:
        raise QuantizationError(f"{path}: an ANN checkpoint has no thresholds; run "
                                "`python -m trainer convert` first")
    bits = export_bits(cfg.weight_bits, ckpt.snn.weight_bits, path)
    timesteps = cfg.timesteps or ckpt.snn.timesteps
    calibration_t = max(timesteps, cfg.calibration_timesteps or 0)
    require_export_memory(cfg, timesteps, path, math.prod(ckpt.arch.input_shape), neuron_count(ckpt.arch))
    out = writable_dir(cfg.out or RunLayout.of_checkpoint(path).export_dir(ckpt.stage), "--out")
    needs_data = cfg.calibration_samples > 0 or cfg.eval_samples > 0 or cfg.lava_samples > 0
    bundle = data_of(ckpt, cfg.data_root) if needs_data else None
    peak = None
    if cfg.calibration_samples > 0:
        images = bundle.train_x[:cfg.calibration_samples]
        peak = float_output_peak(ckpt, bundle.normalisation.apply(images), calibration_t, seed=cfg.seed,
                                 device=cfg.device)
    graph, layers = quantize_checkpoint(ckpt, timesteps=timesteps, weight_bits=bits, output_peak=peak,
                                        source=str(path))
    summary = {"checkpoint": str(path), "stage": ckpt.stage, "timesteps": timesteps,
               "weight_bits": bits, "output_peak_calibration": peak,
               "calibration_timesteps": calibration_t, "latency_steps": fx.latency_steps(graph)}

    def float_model(images, spikes_in):
        return float_snn_run(ckpt, graph, images, spikes_in)
    return _evaluate_and_write(graph, layers, summary, out, cfg, bundle, float_model)


@dataclass(frozen=True)
class NIRImportConfig:
    """What a NIR file does not say: the data set it is deployed on, T, dt, the reset."""
    dataset: str | None = None            # a trainer.data data set name (normalisation, classes, images)
    dt: float | None = None               # the time step (default: the file's metadata, else 1e-4 s)
    subtract_reset: bool = False          # IF/LIF nodes reset by subtraction (NIR 1.0 cannot state it)
    source: str = "core"                  # the framework it was trained in (nir_import.SEMANTICS): implies
                                          # subtract reset and adds the comparison against its own neurons


def export_nir_file(path: str | Path, cfg: ExportConfig = ExportConfig(),
                    nir_cfg: NIRImportConfig = NIRImportConfig()) -> Exported:
    """Import the NIR graph at ``path`` (``export.nir_import``), quantize it by the checkpoint's
    rules and write the same export folder a checkpoint gets (default ``<name>_core/``)."""
    from export.neuron_semantics import SEMANTICS
    from export.nir_import import quantize_nir, read_nir
    from records.dataref import DataRef
    from records.encoding import InputEncoding
    from trainer.data import load_dataset
    require(nir_cfg.source in SEMANTICS, "source", nir_cfg.source, f"one of {', '.join(SEMANTICS)}")
    semantics = SEMANTICS[nir_cfg.source]
    if nir_cfg.subtract_reset and nir_cfg.source == "core":
        log.warning("--subtract-reset without --source: float and fixed point are compared under the core's "
                    "neuron rule only; name the framework that trained the network (--source %s) to compare with "
                    "its own (SpikingJelly's differs with a leak)", "|".join(k for k in SEMANTICS if k != "core"))
    net = read_nir(path, dt=nir_cfg.dt, subtract_reset=nir_cfg.subtract_reset or nir_cfg.source != "core")
    timesteps = cfg.timesteps or (int(np.asarray(net.metadata["timesteps"])) if "timesteps" in net.metadata else None)
    require(timesteps is not None, "timesteps", None, "given: the NIR file does not record T")
    require(nir_cfg.dataset is not None, "dataset", None,
            "the data set the graph is deployed on (its normalisation, classes and test images)")
    calibration_t = max(timesteps, cfg.calibration_timesteps or 0)
    inputs, neurons = math.prod(net.input_shape), sum(math.prod(item.layer.output_shape) for item in net.layers)
    require_export_memory(cfg, timesteps, path, inputs, neurons)
    require_memory(cfg.calibration_samples * calibration_t * NIR_CALIBRATION_BYTES_PER_INPUT * inputs,
                   f"--calibration-samples {cfg.calibration_samples} at T = {calibration_t}",
                   f"sizing the output on {cfg.calibration_samples} training images over {calibration_t} steps",
                   "fewer --calibration-samples or --calibration-timesteps need less")
    out = writable_dir(cfg.out or nir_import_dir(path), "--out")
    bundle = load_dataset(nir_cfg.dataset, cfg.data_root)
    net.check_input(bundle.input_shape)                 # before calibration runs the graph on its images
    encoding = InputEncoding(bundle.input_shape, bundle.normalisation, net.input_rule)
    peak = None
    if cfg.calibration_samples > 0:
        spikes = encoding.encode(bundle.train_x[:cfg.calibration_samples].numpy(), calibration_t, cfg.seed)
        peak = net.run_float(spikes)[1]
    bits = export_bits(cfg.weight_bits, None, path)
    graph, layers = quantize_nir(net, encoding, bundle.class_names, timesteps, weight_bits=bits,
                                 output_peak=peak, data=DataRef(bundle.name, cfg.data_root))
    summary = {"nir": str(path), "dataset": bundle.name, "dt": net.dt, "timesteps": timesteps,
               "weight_bits": bits, "output_peak_calibration": peak,
               "calibration_timesteps": calibration_t, "latency_steps": fx.latency_steps(graph),
               "nir_nodes": graph.provenance["nir_nodes"]}

    def float_model(images, spikes_in):
        scores, _, per_neuron = net.run_float(spikes_in)
        return scores.argmax(1), per_neuron

    source_model = None
    if nir_cfg.source != "core":
        summary["source"] = {"framework": semantics.framework,
                             "differences": semantics.differences([lay.leak for lay in net.layers[:-1]])}

        def source_scores(images, spikes_in):
            return net.run_float(spikes_in, semantics)[0].argmax(1)
        source_model = source_scores
    return _evaluate_and_write(graph, layers, summary, out, cfg, bundle, float_model, source_model)


def _evaluate_and_write(graph: CoreGraph, layers: list[dict], summary: dict, out: Path, cfg: ExportConfig, bundle,
                        float_model, source_model=None) -> Exported:
    """Float vs quantized on the same test spikes, the optional Lava check, then every file
    of the export folder at once. ``float_model(images, spikes) -> (predictions, spikes per
    neuron per spiking layer)``; ``source_model(images, spikes) -> predictions``: the source
    framework's own neurons, which the quantized predictions are compared with as well."""
    for row in layers:
        if row["exceeds_hw_16bit_input"]:
            log.warning("layer %s: input current can reach %s, beyond the %s-bit input of real Loihi hardware "
                        "(Lava does not enforce it)", row["layer"], row["max_possible_input"], fx.HW_INPUT_BITS)
    timesteps = graph.timesteps
    if cfg.eval_samples > 0 or cfg.lava_samples > 0:
        count = max(cfg.eval_samples, cfg.lava_samples)
        images, labels = bundle.test_x[:count].numpy(), bundle.test_y[:count].numpy()
        t = time.time()
        spikes_in = graph.input.encode(images, timesteps, cfg.seed)
        ref = fx.run_reference(graph, spikes_in)
        float_pred, float_spikes = float_model(images, spikes_in)
        n = len(labels)
        summary["evaluation"] = {
            "samples": n, "timesteps": timesteps, "seed": cfg.seed,
            "float_accuracy": 100.0 * float((float_pred == labels).mean()),
            "quantized_accuracy": 100.0 * float((ref.predictions == labels).mean()),
            "prediction_agreement": 100.0 * float((ref.predictions == float_pred).mean()),
            "float_spikes_per_neuron": [float(v) for v in float_spikes],
            "quantized_spikes_per_neuron": ref.spikes_per_neuron,
            "max_abs_input": ref.max_abs_input, "reference_seconds": time.time() - t}
        if source_model is not None:
            source_pred = source_model(images, spikes_in)
            summary["source"].update({"float_accuracy": 100.0 * float((source_pred == labels).mean()),
                                      "prediction_agreement": 100.0 * float((ref.predictions == source_pred).mean()),
                                      "float_agreement": 100.0 * float((float_pred == source_pred).mean())})
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
