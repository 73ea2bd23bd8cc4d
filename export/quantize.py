"""Float checkpoint (converted or STDB) -> fixed-point core graph.

1. Fold average pooling exactly into the next weighted layer (docs/fixedpoint.md):
   a q x q pool before a k x k conv (stride s, padding p) is one conv with kernel k*q,
   stride s*q, padding p*q and weights W[i // q, j // q] / q^2; before a dense layer
   the weights spread over the un-pooled input the same way.
2. Per core, scale the float weights so the largest magnitude fills the signed
   ``weight_bits`` mantissa (round to nearest; nothing clips by construction): the grid
   of ``trainer.weight_grid``, on which fine-tuning can train. Dense
   weights are stored on Lava's mixed-sign grid (x 2 for 8 bit). Thresholds share the
   scale: vth = round(theta * scale). A dense core whose vth would overflow 17 bits
   moves scale into a negative ``weight_exp``; a conv core cannot (Lava's Conv ignores
   ``weight_exp``), so that is an error naming the layer and the value.
3. The output accumulator's voltage must not saturate over T steps: its scale is set
   from the largest accumulated output of the float SNN on calibration images, with 2x
   headroom, through ``weight_exp``.
4. A layer's initial potential (a fraction of its threshold) is that fraction of
   ``vth << 6``, rounded to nearest. A layer's bias (a folded batch norm) is the neuron's bias, in the voltage's units:
   ``bias * scale << 6`` per step as a 13-bit mantissa and the smallest exponent 0..7 that
   holds it (rounded to nearest); one that needs more is an error naming the layer.
5. Residual blocks: a block is two cores, its first conv and its second conv with the
   shortcut (``export.graph.Shortcut``: a 1x1 projection, or an identity) from the
   population before the block, one population summing both. The shortcut's integers are
   in the population's units (its scale, as step 2 set it from the conv): the float
   weights times that scale, on Lava's mixed-sign grid with the exponent that fills the
   mantissa; a shortcut that needs an exponent above 7 is an error naming the block. A
   pool before a block folds into its first conv and into the shortcut (an identity
   becomes a q x q, stride-q conv).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from export import fixedpoint as fx
from export.graph import Core, CoreGraph, GraphError, Shortcut
from records.encoding import InputEncoding
from records.header import RecordError
from trainer.checkpoint import Checkpoint
from trainer.layers import AvgPool, Conv, Dropout, Flatten, Linear, ResBlock
from trainer.models import count_macs, layer_shapes, neuron_layers
from trainer.weight_grid import ShortcutRangeError, mantissa_scale, shortcut_exponent


class QuantizationError(RecordError):
    """A checkpoint that cannot be mapped onto the core."""


@dataclass
class FloatLayer:
    """One weighted layer after pool folding, still in float64."""
    name: str
    op: str
    weights: np.ndarray
    input_shape: tuple
    output_shape: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    pool: int = 1              # the q x q average pool folded in
    ann_macs: int = 0          # MACs per step of the ANN layer (trainer.models.count_macs)
    shortcut: "FloatShortcut | None" = None
    bias: np.ndarray | None = None   # per output channel / neuron, in the layer's current units


@dataclass
class FloatShortcut:
    """A residual block's shortcut into a layer, still in float64: from layer ``source``
    (an index into the folded layers; -1: the input), a conv or an identity (weights [1.0])."""
    source: int
    op: str
    weights: np.ndarray
    input_shape: tuple
    stride: tuple = (1, 1)


def fold_layers(ckpt: Checkpoint) -> list[FloatLayer]:
    """The checkpoint's weighted layers with average pools folded in and dropout dropped."""
    cfg = ckpt.arch
    shapes = layer_shapes(cfg)
    macs = iter(count_macs(cfg))                                # one entry per weighted layer
    folded, pool, prev_shape = [], 1, tuple(cfg.input_shape)   # prev_shape: un-pooled spike shape
    for i, (spec, shape) in enumerate(zip(cfg.layers, shapes)):
        if isinstance(spec, ResBlock):
            next(macs)
            folded += _fold_block(ckpt, i, spec.stride, prev_shape, shape, pool, len(folded) - 1)
            pool, prev_shape = 1, shape
        elif isinstance(spec, AvgPool):
            pool *= spec.kernel
        elif isinstance(spec, Conv):
            w = ckpt.state_dict[f"layers.{i}.weight"].double().numpy()
            s, p = spec.stride, spec.padding
            folded.append(fold_pool(FloatLayer(f"conv{i}", "conv", w, prev_shape, shape, (s, s), (p, p),
                                               ann_macs=next(macs), bias=_bias(ckpt, i)), pool))
            pool, prev_shape = 1, shape
        elif isinstance(spec, Linear):
            w = ckpt.state_dict[f"layers.{i}.weight"].double().numpy()
            folded.append(fold_pool(FloatLayer(f"fc{i}", "dense", w, prev_shape, shape, ann_macs=next(macs),
                                               bias=_bias(ckpt, i)), pool))
            pool, prev_shape = 1, shape
        elif not isinstance(spec, (Dropout, Flatten)):
            raise QuantizationError(f"layer {i} ({spec.kind}) has no core form: only feed-forward chains of "
                                    "conv, avgpool, dropout, flatten, linear and resblock map onto cores")
    return folded


def _bias(ckpt: Checkpoint, i: int | str) -> np.ndarray | None:
    """Layer ``i``'s bias (``"7.conv1"``: a block's part), None where it has none."""
    b = ckpt.state_dict.get(f"layers.{i}.bias")
    return None if b is None else b.double().numpy()


def _fold_block(ckpt: Checkpoint, i: int, stride: int, in_shape: tuple, out_shape: tuple, pool: int,
                source: int) -> list[FloatLayer]:
    """Residual block ``i`` as two layers: conv1, and conv2 with the shortcut from layer
    ``source`` (whose un-pooled output is ``in_shape``; a pending ``pool`` folds into conv1
    and the shortcut)."""
    weight = lambda part: ckpt.state_dict[f"layers.{i}.{part}.weight"].double().numpy()  # noqa: E731
    bias = lambda part: _bias(ckpt, f"{i}.{part}")  # noqa: E731
    c_in, c_out = in_shape[0], out_shape[0]
    conv1 = fold_pool(FloatLayer(f"block{i}_conv1", "conv", weight("conv1"), in_shape, out_shape, (stride, stride),
                                 (1, 1), ann_macs=math.prod(out_shape) * c_in * 9, bias=bias("conv1")), pool)
    projection = f"layers.{i}.shortcut.weight" in ckpt.state_dict
    if projection or pool > 1:          # a conv: the 1x1 projection, or the identity after a pool
        ws = weight("shortcut") if projection else np.eye(c_in)[:, :, None, None]
        folded = fold_pool(FloatLayer("shortcut", "conv", ws, in_shape, out_shape, (stride, stride)), pool)
        short = FloatShortcut(source, "conv", folded.weights, in_shape, folded.stride)
    else:
        short = FloatShortcut(source, "identity", np.ones(1), in_shape)
    macs = math.prod(out_shape) * (c_out * 9 + (c_in if projection else 0))
    out_bias = bias("conv2")                # the shortcut's bias feeds the same neurons
    if out_bias is not None and projection and bias("shortcut") is not None:
        out_bias = out_bias + bias("shortcut")
    conv2 = FloatLayer(f"block{i}_conv2", "conv", weight("conv2"), out_shape, out_shape, padding=(1, 1),
                       ann_macs=macs, shortcut=short, bias=out_bias)
    return [conv1, conv2]


def _quantize_shortcut(fs: FloatShortcut, units: float, weight_bits: int, block: str,
                       sources: list[str]) -> Shortcut:
    """The shortcut's integers in its population's ``units`` (integer current per float current)."""
    target = fs.weights * units
    step = fx.dense_weight_step(weight_bits)
    try:
        exp = shortcut_exponent(target.max(), target.min(), weight_bits)
    except ShortcutRangeError as exc:
        raise QuantizationError(f"block {block}: its shortcut {exc} in the population's units "
                                f"(scale {units:.6g})") from None
    mant = np.round(target / (2.0 ** exp * step)).astype(np.int64) * step
    source = "input" if fs.source < 0 else sources[fs.source]
    return Shortcut(source, fs.op, mant, fs.input_shape, weight_exp=exp, weight_bits=weight_bits, stride=fs.stride)


def fold_pool(layer: FloatLayer, pool: int, divisor: int | None = None) -> FloatLayer:
    """``layer`` preceded by a pool x pool average pool (stride pool), as one layer on the
    un-pooled input: ``layer.input_shape`` is the un-pooled (C, H, W); ``divisor`` (default
    pool**2) is what the pool divides its sum by (1 for a sum pool)."""
    if pool == 1:
        return layer
    w, div = layer.weights, pool ** 2 if divisor is None else divisor
    if layer.op == "conv":
        w = np.repeat(np.repeat(w, pool, axis=2), pool, axis=3) / div
        return FloatLayer(layer.name, "conv", w, layer.input_shape, layer.output_shape,
                          tuple(s * pool for s in layer.stride), tuple(p * pool for p in layer.padding), pool,
                          layer.ann_macs, bias=layer.bias)
    c, h, wd = layer.input_shape
    w = w.reshape(w.shape[0], c, h // pool, wd // pool)
    w = np.repeat(np.repeat(w, pool, axis=2), pool, axis=3).reshape(w.shape[0], -1) / div
    return FloatLayer(layer.name, "dense", w, layer.input_shape, layer.output_shape, pool=pool,
                      ann_macs=layer.ann_macs, bias=layer.bias)


def _quantize_bias(bias: np.ndarray, units: float, where: str) -> tuple[np.ndarray, int]:
    """(13-bit mantissas, exponent 0..7) of a float bias in a population of ``units``
    (integer current per float current): the voltage gains ``bias * units << 6`` per step."""
    if not np.all(np.isfinite(bias)):
        raise QuantizationError(f"{where}: bias is not all finite")
    target = bias * units * 2 ** fx.ACT_SHIFT
    hi = fx.BIAS_RANGE[1]
    exp = next((e for e in range(fx.BIAS_EXP_MAX + 1) if np.abs(np.round(target / 2 ** e)).max(initial=0) <= hi),
               None)
    if exp is None:
        raise QuantizationError(f"{where}: bias up to {np.abs(bias).max():.6g} needs more than "
                                f"{fx.BIAS_BITS}-bit mantissas << {fx.BIAS_EXP_MAX} in the layer's units "
                                f"(scale {units:.6g})")
    return np.round(target / 2 ** exp).astype(np.int64), exp


def quantize_layers(layers: list[FloatLayer], thresholds: list[float], dvs: list[int], *,
                    weight_bits: int = fx.WEIGHT_BITS, output_peak: float | None = None,
                    source: str = "", v_init: list[float] | None = None) -> tuple[list[Core], list[dict]]:
    """Cores and report rows for float layers (the last one the output accumulator) with the
    hidden layers' float ``thresholds`` and every layer's ``dvs`` (the module docstring's rules).

    ``output_peak``: the largest |accumulated output| of the float SNN over its T steps (in
    float units), from calibration; None assumes no saturation risk. ``v_init``: each hidden
    layer's initial potential as a fraction of its threshold (None: 0), which becomes
    ``round(fraction * (vth << 6))``.
    """
    if not 2 <= weight_bits <= 8:
        raise QuantizationError(f"weight bits must be in 2..8, got {weight_bits}")
    if len(thresholds) != len(layers) - 1 or len(dvs) != len(layers):
        raise QuantizationError(f"{source}: {len(layers)} layers need {len(layers) - 1} thresholds and "
                                f"{len(layers)} decays, got {len(thresholds)} and {len(dvs)}")
    cores, report, names = [], [], [layer.name for layer in layers]
    for k, layer in enumerate(layers):
        is_output = k == len(layers) - 1
        if not np.all(np.isfinite(layer.weights)):
            raise QuantizationError(f"{source}: layer {layer.name}: weights are not all finite")
        scale = mantissa_scale(layer.weights.max(), layer.weights.min(), weight_bits)
        mant = np.round(layer.weights * scale).astype(np.int64)
        step = fx.dense_weight_step(weight_bits) if layer.op == "dense" else 1
        scale_eff = scale * step
        weight_exp = 0
        theta = 0.0 if is_output else float(thresholds[k])
        if is_output:
            if output_peak is not None and output_peak > 0:
                limit = (fx.V_MAX >> fx.ACT_SHIFT) / 2          # half of the accumulator's range
                while output_peak * scale_eff * 2.0 ** weight_exp > limit and weight_exp > -7:
                    weight_exp -= 1
            vth = 0
        else:
            if not (math.isfinite(theta) and theta > 0):
                raise QuantizationError(f"{source}: layer {layer.name}: threshold {theta} must be finite and > 0")
            vth = int(round(theta * scale_eff))
            if layer.op == "dense":
                while vth > fx.VTH_MAX and weight_exp > -7:
                    weight_exp -= 1
                    vth = int(round(theta * scale_eff * 2.0 ** weight_exp))
            if vth > fx.VTH_MAX:
                raise QuantizationError(
                    f"{source}: layer {layer.name}: threshold {theta:.6g} needs vth={vth} at {weight_bits}-bit "
                    f"weights, more than the {fx.VTH_BITS}-bit maximum {fx.VTH_MAX}")
            if vth < 1:
                raise QuantizationError(f"{source}: layer {layer.name}: threshold {theta:.6g} rounds to vth=0")
        start = 0 if is_output or v_init is None else int(round(float(v_init[k]) * (vth << fx.VTH_SHIFT)))
        stored = mant * step
        shortcuts = [_quantize_shortcut(layer.shortcut, scale_eff * 2.0 ** weight_exp, weight_bits, layer.name,
                                        names)] if layer.shortcut is not None else []
        bias, bias_exp = (None, 0) if layer.bias is None else _quantize_bias(
            layer.bias, scale_eff * 2.0 ** weight_exp, f"{source}: layer {layer.name}")
        error = np.abs(layer.weights - stored / scale_eff)
        max_input = fx.max_abs_current(stored, weight_exp) + sum(fx.max_abs_current(sc.weights, sc.weight_exp)
                                                                 for sc in shortcuts)
        try:
            cores.append(Core(name=layer.name, op=layer.op, weights=stored, input_shape=layer.input_shape,
                              output_shape=layer.output_shape, vth=vth, dv=dvs[k],
                              spiking=not is_output, weight_exp=weight_exp, weight_bits=weight_bits,
                              stride=layer.stride, padding=layer.padding, float_threshold=theta,
                              weight_scale=scale_eff * 2.0 ** weight_exp, pool=(layer.pool, layer.pool),
                              ann_macs=layer.ann_macs, shortcuts=shortcuts, bias=bias, bias_exp=bias_exp,
                              v_init=start))
        except GraphError as exc:
            raise QuantizationError(f"{source}: {exc}") from None
        report.append({
            "layer": layer.name, "op": layer.op, "kernel": "x".join(map(str, layer.weights.shape[2:])) or "-",
            "stride": layer.stride[0], "weight_scale": scale_eff * 2.0 ** weight_exp, "weight_exp": weight_exp,
            "float_threshold": theta, "vth": vth,
            "vth_rel_error": abs(vth - theta * scale_eff * 2.0 ** weight_exp) / max(theta * scale_eff, 1e-12)
            if not is_output else 0.0,
            "max_abs_weight_error": float(error.max()),
            "max_abs_weight_error_steps": float(error.max() * scale_eff / step),
            "max_possible_input": max_input, "exceeds_hw_16bit_input": max_input >= 2 ** (fx.HW_INPUT_BITS - 1),
            "shortcut": (f"{shortcuts[0].op} from {shortcuts[0].source}, weight_exp {shortcuts[0].weight_exp}"
                         if shortcuts else "-"),
            "bias_exp": "-" if bias is None else bias_exp, "v_init": start,
        })
    return cores, report


def quantize_checkpoint(ckpt: Checkpoint, *, timesteps: int | None = None, weight_bits: int = fx.WEIGHT_BITS,
                        output_peak: float | None = None, source: str = "") -> tuple[CoreGraph, list[dict]]:
    """(core graph, per-layer quantization report rows).

    ``timesteps``: the graph's T (default: the checkpoint's). ``output_peak``: see ``quantize_layers``.
    """
    if ckpt.snn is None:
        raise QuantizationError(f"{source}: stage {ckpt.stage!r} has no thresholds; convert it first")
    layers = fold_layers(ckpt)
    thresholds = ckpt.snn.thresholds
    if len(neuron_layers(ckpt.arch)) != len(layers) - 1:
        raise QuantizationError(f"{source}: neuron layers do not match weighted layers")
    dv = fx.leak_to_dv(ckpt.snn.leak)
    cores, report = quantize_layers(layers, list(thresholds), [dv] * (len(layers) - 1) + [0],
                                    weight_bits=weight_bits, output_peak=output_peak, source=source,
                                    v_init=ckpt.snn.v_init)
    norm = ckpt.normalisation
    graph = CoreGraph(
        input=InputEncoding(tuple(ckpt.arch.input_shape), norm, ckpt.snn.encoding), cores=cores, timesteps=timesteps or ckpt.snn.timesteps,
        class_names=list(ckpt.data["class_names"]), stage=ckpt.stage, data=ckpt.data_ref,
        provenance={"checkpoint": str(source), "arch": ckpt.arch.name, "leak": ckpt.snn.leak,
                    "float_thresholds": list(thresholds), "trained_by": ckpt.provenance,
                    "float_metrics": {k: v for k, v in ckpt.metrics.items() if isinstance(v, (int, float))}})
    return graph, report


@torch.no_grad()
def float_output_peak(ckpt: Checkpoint, images: torch.Tensor, timesteps: int, seed: int = 0,
                      device: str = "cpu") -> float:
    """Largest |accumulated output| of the float SNN over ``timesteps`` on normalised images."""
    from trainer.snn import SNN
    snn = SNN.of_checkpoint(ckpt).to(device).eval()
    logits = snn(images.to(device), timesteps, window=50,
                 generator=torch.Generator(device=device).manual_seed(seed))
    return float(logits.abs().max()) * timesteps

