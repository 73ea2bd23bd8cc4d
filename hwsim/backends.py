"""Every way to run a core graph, behind one signature: ``run(graph, input_spikes) -> CoreRun``.

Like Lava's ProcessModels picked by tag, a backend is picked by name; all of them
compute what ``export.fixedpoint`` specifies, and ``tests/test_conformance.py`` runs each
one on the same cases against ``reference``:

- ``reference``   ``export.fixedpoint.run_reference``: the slow, obviously-correct model
- ``hwsim``       hwsim's fast core as it runs on the CPU by default (event-driven at low
                  input density, else the int8 path)
- ``hwsim-dense`` the same core on its float path (oneDNN's float conv, host-side shortcuts)
- ``hwsim-gemm``  the same core on its CUDA code path (im2col + GEMM, no host-side checks)
- ``hwsim-events`` the same core with every synaptic input event-driven (``hwsim.events``)
- ``hwsim-int8``  the same core with every synaptic input one int8 product where the core has
                  one (``hwsim.int8_products``), then compiled neuron updates
- ``onnx``        the exported one-step ONNX model, stepped T times by onnxruntime
- ``lava``        Lava's own Dense/Conv processes and the project's soft-reset LIF, fixed_pt
                  (imported only when asked for: nothing else in hwsim imports Lava)
"""
from __future__ import annotations

import importlib
import math
from typing import Callable

import numpy as np

from export import fixedpoint as fx
from export.graph import CoreGraph

Backend = Callable[[CoreGraph, np.ndarray], fx.CoreRun]


def _hwsim(**options) -> Backend:
    def run(graph: CoreGraph, input_spikes: np.ndarray) -> fx.CoreRun:
        from hwsim.simulate import SimOptions, simulate
        sim = simulate(graph, input_spikes, record_spikes=True, options=SimOptions(**options))
        return fx.CoreRun(sim.spike_trains, sim.output, [l.max_abs_input for l in sim.layers])
    return run


def _imported(module: str) -> Backend:
    def run(graph: CoreGraph, input_spikes: np.ndarray) -> fx.CoreRun:
        return importlib.import_module(module).run_graph(graph, input_spikes)
    return run


BACKENDS: dict[str, Backend] = {
    "reference": fx.run_reference,
    "hwsim": _hwsim(),
    "hwsim-dense": _hwsim(event_density=0.0, int8=False),
    "hwsim-gemm": _hwsim(conv_impl="gemm", host_checks=False, event_density=0.0, int8=False),
    "hwsim-events": _hwsim(event_density=math.inf),
    "hwsim-int8": _hwsim(event_density=0.0, int8=True),
    "onnx": _imported("export.onnx_export"),
    "lava": _imported("export.lava.runner"),
}


def run_graph(backend: str, graph: CoreGraph, input_spikes: np.ndarray) -> fx.CoreRun:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    return BACKENDS[backend](graph, np.asarray(input_spikes))
