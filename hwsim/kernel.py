"""The chunk loop: all steps of one chunk of samples through every core, bit-exact to
``export.fixedpoint``.

The graph is a feed-forward chain (plus shortcuts to earlier populations) and the
reference is layer-synchronous, so the synaptic input of a layer for a whole *block* of
time steps is one batched computation over ``steps x samples`` once the previous layer's
spikes of those steps are known; only the neuron recurrence then runs step by step. Per
block and core, ``hwsim.paths.choose_path`` picks how: where the core has both the event
kernels and an int8 product, by what each has cost so far (``hwsim.path_choice``); else
event-driven where the block's input has at most ``simulate.EVENT_DENSITY`` non-zero entries
per input and image-step, else the int8 product, else the dense float path. A core with
shortcuts (``export.graph.Shortcut``) adds each shortcut's current, one batched conv /
product over its source's spikes of the block, kept until the block ends (on every path).
Every event is counted: spikes, synaptic events (input spikes x fan-out), neuron updates and
active neuron updates.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from hwsim.counters import ChunkCounts
from hwsim.path_choice import PathCosts
from hwsim.paths import Block, BlockSettings, choose_path
from hwsim.plan import CorePlan
from hwsim.tensors import CL, flat


def _to_input(x: np.ndarray | torch.Tensor, dev: torch.device) -> torch.Tensor:
    """A block's input spikes (steps, n, ...) as int8 (steps*n, ...), channels-last for maps:
    the event kernels read them as they are, the other paths convert."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    tb, nb = t.shape[:2]
    t = t.to(dev, non_blocking=True).reshape(tb * nb, *t.shape[2:]).to(torch.int8)
    return t.contiguous(memory_format=CL) if t.dim() == 4 else t


@dataclass
class _Counts:
    """One population's spikes per sample and neuron over a chunk (``spikes`` (n, neurons)),
    in its storage order, and whether that order is (H, W, C)."""
    spikes: torch.Tensor
    hwc: bool = False


def _output_voltages(plan: CorePlan, v: torch.Tensor, hwc: bool) -> np.ndarray:
    """The output core's voltages (samples, neurons) as int64, in (C, H, W) order."""
    n = v.shape[0]
    if hwc:                                                            # back to (C, H, W) order
        c, h, w = plan.out_shape
        v = v.view(n, h, w, c).permute(0, 3, 1, 2)
    return v.reshape(n, -1).round().to(torch.int64).cpu().numpy()


def _blocks(steps: int, block: int, readouts: Sequence[int]) -> list[tuple[int, int]]:
    """(first step, steps) of each block: ``block`` steps at a time, cut at every readout step."""
    cuts = sorted(set(range(0, steps, block)) | {t for t in readouts if 0 < t < steps} | {steps})
    return [(a, b - a) for a, b in zip(cuts, cuts[1:])]


def run_chunk(plans: Sequence[CorePlan], x_chunk, steps: int, block: int, dev: torch.device, record: bool,
              settings: BlockSettings, event_density: Sequence[float], int8: bool,
              costs: Sequence[PathCosts | None], readouts: Sequence[int] = ()) -> ChunkCounts:
    """All steps of one chunk of samples, in blocks of ``block`` steps, the neuron states
    flat (samples, neurons) in storage order. Core i's block runs event-driven where
    ``costs[i]`` (learned over the run, updated here) predicts it cheaper than the int8
    product, or, for a core without ``costs[i]``, when its input has at most
    ``event_density[i]`` non-zero entries (per input and image-step); else on the int8 path
    where ``int8`` and the core has one, else dense. After each step count t in
    ``readouts`` (below ``steps``), the output voltages and every core's spikes per sample
    so far are read out (``ChunkCounts.readouts``); blocks are cut there.

    Per block, a path hands back only its spikes and their count per sample (what the next
    core's path choice needs); each population's spikes per neuron add up over the chunk
    (``Block.counts``), and the synaptic events, linear in them, are counted once per chunk."""
    n = int(x_chunk.shape[1])
    f64 = torch.float64
    spikes_acc = [torch.zeros(n, dtype=f64, device=dev) for _ in plans]
    active_acc = [torch.zeros((), dtype=torch.int64, device=dev) for _ in plans]
    maxabs_acc = [torch.zeros((), dtype=f64, device=dev) for _ in plans]
    in_counts = torch.zeros((n, int(np.prod(x_chunk.shape[2:]))), dtype=f64, device=dev)
    counts = {"input": _Counts(in_counts)}                # per population: the input, every spiking core
    v: list[torch.Tensor | None] = [None] * len(plans)      # flat (n, M), storage order of the core's output
    prev: list[torch.Tensor | None] = [None] * len(plans)
    out_hwc = [False] * len(plans)
    buffers: list[np.ndarray | None] = [None] * len(plans)   # compiled paths' spikes, reused per block
    trains = [[] for p in plans if p.spiking] if record else None
    sources = {sc.source for p in plans for sc in p.shortcuts}      # populations a shortcut reads
    read = {}
    for t0, tb in _blocks(steps, block, readouts):
        if t0 in readouts:
            read[t0] = (_output_voltages(plans[-1], v[-1], out_hwc[-1]),
                        torch.stack(spikes_acc).sum(0).round().to(torch.int64).cpu().numpy())
        x = _to_input(x_chunk[t0:t0 + tb], dev)                       # (tb*n, C, H, W) channels-last
        xf, hwc = flat(x)
        s_sum = xf.abs().view(tb, n, -1).sum(0, dtype=f64)            # (n, M): |spikes| per sample and input
        in_counts += s_sum
        counts["input"].hwc = hwc
        input_events = float(s_sum.sum())
        kept = {"input": x} if "input" in sources else {}             # a shortcut source's block
        k = 0
        for i, p in enumerate(plans):
            if v[i] is None:
                v[i] = torch.full((n, p.neurons), p.core.v_init, dtype=p.dtype, device=dev)
                prev[i] = torch.zeros_like(v[i])
                if p.spiking:
                    counts[p.name] = _Counts(torch.zeros((n, p.neurons), dtype=torch.float32, device=dev))
            if costs[i] is not None:
                events = costs[i].events(tb * n, input_events)
            else:
                events = event_density[i] > 0 and input_events <= event_density[i] * tb * n * math.prod(p.in_shape)
            path = choose_path(p, events, int8)
            if path is not p.dense and buffers[i] is None:
                buffers[i] = np.empty((block, n, p.neurons), dtype=np.int8)
            started = time.perf_counter()
            res = path.run(Block(x, hwc, tb, n, v[i], prev[i], [kept[sc.source] for sc in p.shortcuts],
                                 counts[p.name].spikes if p.spiking else None, buffers[i]), settings)
            if costs[i] is not None and path is not p.dense:
                costs[i].observe(path.name, time.perf_counter() - started, tb * n, input_events)
            out, per_sample, out_hwc[i], active, amax = res
            active_acc[i] += active
            maxabs_acc[i] = torch.clamp(maxabs_acc[i], min=amax)
            if p.spiking:
                counts[p.name].hwc = out_hwc[i]
                spikes_acc[i] += per_sample
                input_events = float(per_sample.sum())
                if record:
                    trains[k].append(out.view(tb, n, *p.out_shape).to(torch.uint8).contiguous().cpu().numpy())
                    k += 1
                x, hwc = out, out_hwc[i]
                if p.name in sources:
                    kept[p.name] = out
    return ChunkCounts(spikes=torch.stack(spikes_acc).round().to(torch.int64).cpu().numpy(),
                       synaptic_events=_synaptic_events(plans, counts, steps),
                       active=torch.stack(active_acc).cpu().numpy(),
                       max_abs=torch.stack(maxabs_acc).round().to(torch.int64).cpu().numpy(),
                       input_spikes=in_counts.sum(1).round().to(torch.int64).cpu().numpy(),
                       output=_output_voltages(plans[-1], v[-1], out_hwc[-1]),
                       trains=[np.concatenate(t, axis=0) for t in trains] if record else None, readouts=read)


def _synaptic_events(plans: Sequence[CorePlan], counts: dict[str, _Counts], steps: int) -> np.ndarray:
    """Per core, the events arriving over the chunk: its sources' spikes per neuron (summed
    over the samples) times each neuron's fan-out into the core, through its input and its
    shortcuts; ``steps`` bounds a neuron's spikes."""
    def per_neuron(c: torch.Tensor) -> torch.Tensor:         # float32 sums of integers: exact below 2**24
        exact = c.dtype != torch.float32 or c.shape[0] * steps < 2 ** 24
        return (c.sum(0) if exact else c.sum(0, dtype=torch.float64)).double()
    syn = []
    source = "input"
    for p in plans:
        c = counts[source]
        total = torch.dot(per_neuron(c.spikes), p.fan_out[c.hwc and len(p.in_shape) == 3])
        for sc in p.shortcuts:
            c = counts[sc.source]
            total = total + torch.dot(per_neuron(c.spikes), sc.fan_out[c.hwc])
        syn.append(total)
        source = p.name
    return torch.stack(syn).round().to(torch.int64).cpu().numpy()
