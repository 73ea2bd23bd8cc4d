"""``simulate``: run a CoreGraph on many samples at once, bit-exact to
``export.fixedpoint.run_reference``: chunks of samples (Poisson-encoded by a thread pool
ahead of the kernel), blocks of steps (``hwsim.kernel``), per-core plans (``hwsim.plan``) and
their paths (``hwsim.paths``),
counts per core (``hwsim.counters``).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from export.graph import CoreGraph
from hwsim.counters import LayerCounts, SimError, SimResult, StepReadout
from hwsim.device import _tf32, _threads, tf32_round
from hwsim.kernel import run_chunk
from hwsim.path_choice import PathCosts
from hwsim.paths import BlockSettings
from hwsim.plan import CorePlan, make_plans
from records.device import resolve_device

# On the CPU a core without an int8 product runs a block event-driven at or below this
# fraction of non-zero inputs per image-step, else dense (benchmarks/hwsim_vs_lava.py: on
# VGG5's convs the event kernels are 3.9x faster than the dense float path at 2 % firing and
# break even between 20 and 30 %); a core with both picks by measured cost (hwsim.path_choice)
EVENT_DENSITY = 0.20


def _default_sizes(graph: CoreGraph, device: torch.device, n: int, steps: int,
                   chunk: int | None, block: int | None) -> tuple[int, int]:
    """Samples per chunk and steps per block. One block's buffer of the widest layer is
    kept near ``buffer`` bytes: on the CPU, buffers beyond glibc's mmap threshold (32 MiB)
    are fresh pages on every allocation, and page faults cost more than small GEMMs lose."""
    widest = max([math.prod(graph.input.shape)] + [math.prod(c.output_shape) for c in graph.cores])
    if device.type == "cuda":
        buffer, most = 1 << 30, 1 << 16
        chunk = chunk or 512
    else:
        buffer, most = 16 << 20, 4096
        chunk = chunk or 8
    chunk = max(1, min(chunk, n)) if n else 1
    if block is None:
        image_steps = max(16, min(most, buffer // (4 * widest)))
        block = max(1, image_steps // chunk)
    return chunk, max(1, min(block, steps))


@dataclass(frozen=True)
class SimOptions:
    """How ``simulate`` computes, never what: every choice gives the same integers
    (``tests/test_conformance.py``, ``tests/test_hwsim.py``); None picks the default for
    the device.

    ``chunk``: samples per chunk; ``steps_per_block``: time steps per batched synaptic
    computation (defaults follow the device and a memory budget). ``sparse``: compute a
    block's synaptic input on its active input channels/neurons only ("auto": on the CPU).
    ``event_density``: a core whose block input has at most this fraction of non-zero
    entries runs event-driven (``hwsim.events``; CPU only; ``math.inf``: always). None: on
    the CPU, a core with both the event kernels and an int8 product picks per block by the
    costs it has measured (``hwsim.path_choice``; kept in its plan, so that a run that reuses
    the plans goes on learning), any other core by ``EVENT_DENSITY``; never event-driven on
    CUDA. ``int8``: a block that does not run event-driven computes its
    synaptic input as one exact int8 product where the core has one (``CorePlan.int8``,
    oneDNN on the CPU's int8 units); None: on the CPU. ``tf32``: CUDA's TF32 where every
    weight is exact in it. ``encode_workers``: threads that Poisson-encode the next chunks.
    ``recurrence_threads``: CPU threads for the step-by-step neuron updates (None: torch's).
    ``conv_impl``: "native" (torch's conv: oneDNN's direct convolution on the CPU), "gemm"
    (im2col + matmul), "auto" (gemm on CUDA, where cuDNN may choose FFT/Winograd algorithms
    that are not exact: "native" is not guaranteed exact there). ``threads``: torch CPU
    threads while simulating (None: leave torch's setting). ``host_checks``: data-dependent
    shortcuts that need a device sync (skip a block's wrap24 / clip when its currents cannot
    need them, skip silent inputs); None: on the CPU.
    """
    chunk: int | None = None
    steps_per_block: int | None = None
    sparse: bool | str = "auto"
    event_density: float | None = None
    int8: bool | None = None
    tf32: bool = True
    encode_workers: int | None = None
    recurrence_threads: int | None = 1
    conv_impl: str = "auto"
    threads: int | None = None
    host_checks: bool | None = None

    def __post_init__(self) -> None:
        for name in ("chunk", "steps_per_block", "encode_workers", "recurrence_threads", "threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SimError(f"{name} must be an integer >= 1, got {v!r}")
        if self.sparse not in (True, False, "auto"):
            raise SimError(f"sparse must be True, False or 'auto', got {self.sparse!r}")
        if self.event_density is not None and not self.event_density >= 0:
            raise SimError(f"event_density must be >= 0, got {self.event_density!r}")


def simulate(graph: CoreGraph, inputs, *, timesteps: int | None = None, device: str | torch.device = "cpu",
             options: SimOptions = SimOptions(), record_spikes: bool = False,
             progress: Callable[[int], None] | None = None, plans: list[CorePlan] | None = None,
             first_index: int = 0, readouts: Sequence[int] = ()) -> SimResult:
    """Run ``graph`` on many samples; bit-exact to ``export.fixedpoint.run_reference``.

    ``inputs``: spike trains (T, N, C, H, W) in {-1, 0, 1} (numpy or torch), or a tuple
    ``(images, seed)`` of uint8 images (N, C, H, W), encoded chunk by chunk with
    ``graph.input.encode`` for ``timesteps`` steps (default ``graph.timesteps``).
    ``options``: how it computes (``SimOptions``). ``progress(k)`` is called after each
    chunk with the number of samples it held. ``plans``: ``make_plans(graph, device)``
    built beforehand (weights on the device, pool rewrites), to reuse across calls on an
    unchanged graph; built here when None. ``first_index``: the index of ``images[0]`` in
    the whole input set: image j is encoded with the generator ``[seed, first_index + j]``,
    so a shard of the images (``hwsim.shard``) gets the spike trains the whole set would.
    ``readouts``: step counts below T after which the output voltages and spike counts are
    read out as well (``SimResult.readouts``, each what a simulation of that many steps gives:
    ``counters.StepReadout``).
    """
    o = options
    host_checks, sparse, event_density, int8, tf32 = o.host_checks, o.sparse, o.event_density, o.int8, o.tf32
    dev = resolve_device(device, SimError)
    if host_checks is None:
        host_checks = dev.type == "cpu"
    if sparse == "auto":
        sparse = host_checks
    if event_density is not None and event_density > 0 and dev.type != "cpu":
        raise SimError("the event-driven path runs on the CPU (event_density must be 0 on CUDA)")
    if int8 and dev.type != "cpu":
        raise SimError("the int8 path runs on the CPU (int8 must be False on CUDA)")
    int8 = dev.type == "cpu" if int8 is None else bool(int8)
    images = seed = spikes_in = None
    if isinstance(inputs, tuple):
        images, seed = inputs
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise SimError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if tuple(images.shape[1:]) != graph.input.shape:
            raise SimError(f"images of shape {tuple(images.shape[1:])} do not fit the graph input "
                           f"{graph.input.shape}")
        steps = int(timesteps or graph.timesteps)
        n = len(images)
        seed = int(seed)
    else:
        spikes_in = inputs
        if spikes_in.ndim != 5 or tuple(spikes_in.shape[2:]) != graph.input.shape:
            raise SimError(f"input spikes must be (T, N, *{graph.input.shape}), got {tuple(spikes_in.shape)}")
        steps, n = int(spikes_in.shape[0]), int(spikes_in.shape[1])
        if timesteps is not None and int(timesteps) != steps:
            raise SimError(f"timesteps={timesteps} but the input spikes have {steps} steps")
    if steps < 1:
        raise SimError("need at least one time step")
    if any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 1 <= t < steps for t in readouts):
        raise SimError(f"readouts must be step counts from 1 to T - 1 = {steps - 1}, got {list(readouts)}")
    readouts = sorted({int(t) for t in readouts})
    t_start = time.perf_counter()
    if plans is None:
        plans = make_plans(graph, dev, o.conv_impl)
    elif len(plans) != len(graph.cores) or any(p.core is not c or p.device != dev
                                                for p, c in zip(plans, graph.cores)):
        raise SimError("plans were made for another graph or device")
    if dev.type == "cuda" and tf32:
        # TF32 keeps 11 significant bits: exact for <= 8-bit weights (all the graph format allows)
        # and spike counts; checked anyway, the check is cheap
        tf32 = all(np.array_equal(tf32_round(w.astype(np.float32)), w) for c in graph.cores
                   for w in [c.weights, *(sc.weights for sc in c.shortcuts)])
    chunk, block = _default_sizes(graph, dev, n, steps, o.chunk, o.steps_per_block)
    costs: list[PathCosts | None] = [None] * len(plans)
    if event_density is not None:
        limits = [float(event_density)] * len(plans)
    elif dev.type == "cpu":
        limits = [EVENT_DENSITY] * len(plans)
        if int8:
            costs = [p.costs for p in plans]
    else:
        limits = [0.0] * len(plans)
    settings = BlockSettings(sparse=bool(sparse), host_checks=bool(host_checks),
                             recurrence_threads=o.recurrence_threads)
    ncores = len(plans)
    in_neurons = math.prod(graph.input.shape)

    spikes_ps = np.zeros((ncores, n), dtype=np.int64)
    syn_tot = np.zeros(ncores, dtype=np.int64)
    active_tot = np.zeros(ncores, dtype=np.int64)
    max_abs = np.zeros(ncores, dtype=np.int64)
    in_spikes_ps = np.zeros(n, dtype=np.int64)
    output = np.zeros((n, plans[-1].neurons), dtype=np.int64)
    read = {t: StepReadout(t, n, np.zeros_like(output), np.zeros(n, dtype=np.int64)) for t in readouts}
    trains = ([np.zeros((steps, n, *p.out_shape), dtype=np.uint8) for p in plans if p.spiking]
              if record_spikes else None)

    chunks = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    pool = None
    futures: dict[int, object] = {}
    if images is not None:
        workers = o.encode_workers or (min(8, max(1, (torch.get_num_threads() if dev.type == "cpu" else 8))))
        pool = ThreadPoolExecutor(max_workers=max(1, workers))

        def submit(k):
            a, b = chunks[k]
            step = max(1, (b - a + workers - 1) // workers)
            futures[k] = [pool.submit(graph.input.encode, images[s:min(s + step, b)], steps, seed,
                                  first_index + s)
                          for s in range(a, b, step)]

        def fetch(k):
            parts = [f.result() for f in futures.pop(k)]
            return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        for k in range(min(2, len(chunks))):
            submit(k)
    try:
        with _tf32(dev, tf32), _threads(torch.device("cpu"), o.threads), torch.inference_mode():
            for k, (a, b) in enumerate(chunks):
                if images is not None:
                    x_chunk = fetch(k)
                    if k + 2 < len(chunks):
                        submit(k + 2)
                else:
                    x_chunk = spikes_in[:, a:b]
                res = run_chunk(plans, x_chunk, steps, block, dev, record_spikes, settings, limits, int8, costs,
                                readouts)
                spikes_ps[:, a:b] = res.spikes
                syn_tot += res.synaptic_events
                active_tot += res.active
                max_abs = np.maximum(max_abs, res.max_abs)
                in_spikes_ps[a:b] = res.input_spikes
                output[a:b] = res.output
                for t, (out_t, spikes_t) in res.readouts.items():
                    read[t].output[a:b] = out_t
                    read[t].spikes_per_sample[a:b] = spikes_t
                if record_spikes:
                    for tr, rec in zip(trains, res.trains):
                        tr[:, a:b] = rec
                if progress is not None:
                    progress(b - a)
    finally:
        if pool is not None:
            for fs in futures.values():
                for f in fs:
                    f.cancel()
            pool.shutdown(wait=True)
    layers = []
    for i, p in enumerate(plans):
        c = p.core
        layers.append(LayerCounts(
            name=c.name, op=c.op, neurons=p.neurons, spiking=c.spiking, vth=c.vth,
            float_threshold=float(c.float_threshold), spikes=int(spikes_ps[i].sum()),
            synaptic_events=int(syn_tot[i]), neuron_updates=p.neurons * steps * n,
            active_neuron_updates=int(active_tot[i]), max_abs_input=int(max_abs[i]),
            spikes_per_sample=spikes_ps[i].copy()))
    return SimResult(timesteps=steps, samples=n, layers=layers, input_neurons=in_neurons,
                     input_spikes=int(in_spikes_ps.sum()), input_spikes_per_sample=in_spikes_ps,
                     output=output, spike_trains=trains, device=str(dev),
                     seconds=time.perf_counter() - t_start,
                     plan=[p.describe() | {"device": str(dev), "chunk": chunk, "steps_per_block": block}
                           for p in plans], readouts=read)
