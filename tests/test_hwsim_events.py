"""hwsim's compiled cores (``hwsim.events``: event-driven, and the int8 path's neuron
updates after ``hwsim.int8_products``) mixed with its dense path, block by block.

Every case of tests/fixedpoint_cases.py runs with one step per block and event thresholds
between the blocks' input densities, with and without the int8 path, so that cores switch
between the event-driven, the int8 and the dense path while their state (voltages, last
spikes) carries over; the result must equal the reference bit for bit. (All blocks on one
path: backends ``hwsim-events``, ``hwsim-int8`` and ``hwsim-dense`` in
tests/test_conformance.py.)
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export import fixedpoint as fx
from export.graph import Core
from fixedpoint_cases import CASES, conv_core, graph_of, out_core
from hwsim.paths import DensePath, EventPath, Int8Path
from hwsim.plan import make_plans
from hwsim.simulate import SimOptions, simulate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def path_counts(monkeypatch):
    """How many (core, block) pairs ran on each path (in most cases several within one run:
    deeper cores see sparser inputs than the first)."""
    counts = {"events": 0, "int8": 0, "dense": 0}
    for path in (DensePath, EventPath, Int8Path):
        def spy(self, *args, run=path.run):
            counts[self.name] += 1
            return run(self, *args)
        monkeypatch.setattr(path, "run", spy)
    return counts


@pytest.mark.parametrize("case", list(CASES))
def test_event_and_dense_blocks_interleave_exactly(case, path_counts):
    graph, spikes = CASES[case]()
    ref = fx.run_reference(graph, spikes)
    for int8 in (False, True):
        for density in (0.05, 0.2, 0.4, 0.7, 1.0):
            got = simulate(graph, spikes, record_spikes=True,
                           options=SimOptions(steps_per_block=1, event_density=density, int8=int8))
            for core, a, b in zip(graph.spiking_cores, got.spike_trains, ref.spikes):
                assert np.array_equal(a, b), (int8, density, core.name)
            np.testing.assert_array_equal(got.output, ref.output)
            assert [l.max_abs_input for l in got.layers] == ref.max_abs_input
    assert min(path_counts.values()) > 0, path_counts


@pytest.mark.parametrize("path", [dict(event_density=np.inf), dict(event_density=0.0, int8=True)],
                         ids=["events", "int8"])
def test_compiled_paths_count_what_the_dense_path_counts(path):
    graph, spikes = CASES["conv_nonsymmetric_nonsquare_leak"]()
    dense = simulate(graph, spikes, options=SimOptions(event_density=0.0, int8=False))
    other = simulate(graph, spikes, options=SimOptions(**path))
    for a, b in zip(dense.layers, other.layers):
        assert (a.spikes, a.synaptic_events, a.neuron_updates, a.active_neuron_updates, a.max_abs_input) == \
               (b.spikes, b.synaptic_events, b.neuron_updates, b.active_neuron_updates, b.max_abs_input), a.name
        assert np.array_equal(a.spikes_per_sample, b.spikes_per_sample)


def run_every_case_event_driven():
    """Every case, and a folded 2x2 pool under a fully active input (four events per channel
    and pooled position), event-driven throughout, then on the int8 path throughout."""
    rng = np.random.default_rng(0)
    w = np.repeat(np.repeat(rng.integers(-30, 31, size=(5, 4, 3, 3)), 2, axis=2), 2, axis=3)
    c = conv_core(rng, "c", 4, 5, (6, 6), (8, 4), stride=(2, 2), pad=(2, 2), vth=60, w=w, pool=(2, 2))
    full = (graph_of([c, out_core(rng, c.output_shape)], (4, 8, 4)), np.ones((3, 2, 4, 8, 4), np.int8))
    for graph, spikes in [make() for make in CASES.values()] + [full]:
        simulate(graph, spikes, options=SimOptions(event_density=np.inf))
        simulate(graph, spikes, options=SimOptions(event_density=0.0, int8=True))


def test_event_kernels_stay_within_their_arrays(tmp_path):
    """``run_every_case_event_driven`` in a fresh process whose kernels numba compiles with
    bounds checks: an index past an array's end -- silent heap corruption in the normal
    build -- raises IndexError there."""
    code = "import sys; sys.path.insert(0, 'tests'); import test_hwsim_events as t; t.run_every_case_event_driven()"
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]



def test_event_rows_are_int8_on_float32_cores():
    """Every float32 core of the cases gathers int8 weight rows into int32 sums (the graph
    format's weights are all int8 times a power of two); a float64 core (|sum w| >= 2**24,
    where int32 sums could overflow) gathers float64 rows. Both are run exactly by the tests
    above, which cover every case."""
    kinds = set()
    for make in CASES.values():
        graph, _ = make()
        for p in make_plans(graph, torch.device("cpu")):
            if p.events is None:
                continue
            want = (np.int8, np.int32) if p.dtype == torch.float32 else (np.float64, np.float64)
            assert (p.events.weight.dtype, p.events.sum_type.dtype) == want, p.name
            kinds.add(want)
    assert len(kinds) == 2


def test_int16_partial_sums_at_their_limit():
    """The event kernel sums int8 rows in int16 lanes, 256 rows at a time: 256 x -128 is
    int16's least value, one row more would wrap. A 1x1 conv over 300 active channels whose
    rows are all -128 (and all 127) must give the reference's sums."""
    channels = 300
    w = np.empty((2, channels, 1, 1), dtype=np.int64)
    w[0], w[1] = -128, 127
    core = Core("out", "conv", w, (channels, 1, 1), (2, 1, 1), vth=1, spiking=False)
    graph = graph_of([core], (channels, 1, 1), timesteps=2)
    spikes = np.ones((2, 1, channels, 1, 1), dtype=np.int8)
    plans = make_plans(graph, torch.device("cpu"))
    assert plans[0].events.span == 256 and plans[0].events.part_type.dtype == np.int16
    got = simulate(graph, spikes, plans=plans, options=SimOptions(event_density=np.inf))
    np.testing.assert_array_equal(got.output, fx.run_reference(graph, spikes).output)
