"""Run an exported NIR file (``export.nir_export``) in released third-party simulators.

Each consumer loads the file with its own NIR importer and steps it with its own neurons;
``CONSUMERS`` maps a name to a loader ``path -> NIRModel``. What the importers do with the
file as written, and the small fixes applied here (docs/interop.md has the figures):

- ``spikingjelly`` (2.0.0, ``spikingjelly.activation_based.nir_exchange.import_from_nir``,
  at its default ``dt = 1e-4`` s, the file's): imports and runs every node as written. Two
  semantics NIR cannot carry are set on its neurons afterwards: reset by subtraction
  (``v_reset=None``) where the node's metadata say ``reset = "subtract"`` (nir 1.0 IF/LIF reset
  to ``v_reset``; SpikingJelly's own exporter refuses soft reset for that reason), and the
  strict firing condition ``v > v_threshold`` of NIR and the core (SpikingJelly fires at
  ``>=``). ``as_written=True`` skips both.
- ``snntorch`` (1.0.0, with nirtorch 2.6): ``snntorch.import_nir.import_from_nir`` cannot run
  the file: it asserts ``r == 1`` on IF nodes and maps them to ``snn.Leaky(beta=0.9)``
  (snnTorch issue #416, fixed after 1.0.0 by its pull request #452), resets LIF nodes to
  zero, and turns ``Flatten(start_dim=0)`` into a flatten of the batch (its own exporter
  writes NIR's batch-free dims, so its importer does not read back what it writes). The
  loader here maps the same nodes through ``nirtorch.nir_to_torch`` with snnTorch's own
  ``snn.Leaky`` as the neuron — ``beta = 1`` for IF, ``1 - dt/tau`` for LIF,
  ``reset_mechanism="subtract"`` with snnTorch's default delayed reset, which is the core's
  rule (threshold subtracted at the step after the spike, outside the leak) — and the
  batch-aware ``torch.nn.Flatten``.

Both give outputs ``(T, B, classes)``: the readout synapse's current at each step;
``scores`` turns them into the class scores the metadata define. Import is lazy: the
consumers are test dependencies, not the toolchain's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import nir
import numpy as np
import torch

from export import fixedpoint as fx
from export.graph import CoreGraph, GraphError
from export.nir_export import DT, readout_leak, says_subtract_reset, synapse_bias, synapse_weights
from export.nir_import import uniform


@dataclass
class NIRModel:
    """A consumer's module for one NIR file and the stepping its API needs."""
    consumer: str
    module: torch.nn.Module
    step: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]   # (module, (T, B, ...)) -> (T, B, n)
    readout_leak: float

    @torch.no_grad()
    def run(self, spikes: np.ndarray) -> np.ndarray:
        """Outputs (T, B, n) float32 for input spikes (T, B, *input_shape) in {-1, 0, 1}."""
        return self.step(self.module, torch.as_tensor(np.asarray(spikes), dtype=torch.float32)).numpy()

    def scores(self, spikes: np.ndarray) -> np.ndarray:
        return scores(self.run(spikes), self.readout_leak)


def scores(outputs: np.ndarray, readout_leak: float = 1.0) -> np.ndarray:
    """Class scores (B, n) from per-step outputs (T, B, n): sum_t leak**(T-1-t) * y_t (float64)."""
    steps = outputs.shape[0]
    weights = float(readout_leak) ** np.arange(steps - 1, -1, -1, dtype=np.float64)
    return np.tensordot(weights, outputs.astype(np.float64), axes=1)


def readout_currents(graph: CoreGraph, run: fx.CoreRun) -> np.ndarray:
    """(T, B, classes) float64: the current the output core of ``graph`` receives at each step
    of ``run`` (any backend's), which a consumer's output must equal where NIR's float
    semantics are exact (the output core's bias included)."""
    last = run.spikes[-1]
    last = last.reshape(last.shape[0], last.shape[1], -1).astype(np.float64)
    out = graph.cores[-1]
    return last @ synapse_weights(out).astype(np.float64).T + synapse_bias(out).astype(np.float64)


def _read(path: str | os.PathLike) -> nir.NIRGraph:
    """Our files with a non-square kernel fail nir's own type check (export.nir_export)."""
    return nir.read(str(path), type_check=False)


class _StrictStep(torch.nn.Module):
    """Heaviside with NIR's strict ``x > 0`` (forward only: these models are run, not trained)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x)


def load_spikingjelly(path: str | os.PathLike, as_written: bool = False) -> NIRModel:
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    graph = _read(path)
    module = import_from_nir(graph, dt=DT)
    if not as_written:
        for name, node in graph.nodes.items():
            if isinstance(node, (nir.IF, nir.LIF)):
                cell = getattr(module, name).module
                if not isinstance(cell, neuron.BaseNode):
                    raise GraphError(f"node {name}: SpikingJelly imported it as {type(cell).__name__}, not a neuron")
                cell.surrogate_function = _StrictStep()
                if says_subtract_reset(node):
                    cell.v_reset = None

    def step(m, x):
        state, out = None, []
        for t in range(x.shape[0]):
            y, state = m(x[t], state)
            out.append(y)
        return torch.stack(out)
    return NIRModel("spikingjelly", module, step, readout_leak(graph))


def load_snntorch(path: str | os.PathLike) -> NIRModel:
    import nirtorch
    import snntorch as snn
    from snntorch import utils as snn_utils

    def leaky(node, beta: float) -> torch.nn.Module:
        return snn.Leaky(beta=beta, threshold=uniform(type(node).__name__, "v_threshold", node.v_threshold),
                         init_hidden=True,
                         reset_mechanism="subtract" if says_subtract_reset(node) else "zero")

    def if_cell(node: nir.IF):
        r = uniform("IF", "r", node.r)
        if not np.isclose(r * DT, 1.0):
            raise GraphError(f"IF node with r = {r}: snn.Leaky adds its input unscaled, so r must be 1/dt = {1 / DT:g}")
        return leaky(node, 1.0)

    def lif_cell(node: nir.LIF):
        tau, r = uniform("LIF", "tau", node.tau), uniform("LIF", "r", node.r)
        if not (np.isclose(r * DT, tau) and np.allclose(node.v_leak, 0)):
            raise GraphError(f"LIF node with tau = {tau:g}, r = {r:g}: snn.Leaky needs r = tau/dt and v_leak = 0")
        return leaky(node, 1.0 - DT / tau)

    def affine(node: nir.Affine) -> torch.nn.Module:   # nirtorch 2.6 sets weight.bias: the bias is lost
        lin = torch.nn.Linear(*node.weight.shape[::-1])
        lin.weight.data, lin.bias.data = torch.as_tensor(node.weight), torch.as_tensor(node.bias)
        return lin

    node_map = {
        nir.IF: if_cell,
        nir.LIF: lif_cell,
        nir.Affine: affine,
        nir.Flatten: lambda n: torch.nn.Flatten(n.start_dim + 1 if n.start_dim >= 0 else n.start_dim,
                                                n.end_dim + 1 if n.end_dim >= 0 else n.end_dim),
    }
    graph = _read(path)
    module = nirtorch.nir_to_torch(graph, node_map)

    def step(m, x):
        snn_utils.reset(m)
        out = []
        for t in range(x.shape[0]):
            y, _ = m(x[t])
            out.append(y)
        return torch.stack(out)
    return NIRModel("snntorch", module, step, readout_leak(graph))


CONSUMERS: dict[str, Callable[[str | os.PathLike], NIRModel]] = {
    "spikingjelly": load_spikingjelly,
    "snntorch": load_snntorch,
}
