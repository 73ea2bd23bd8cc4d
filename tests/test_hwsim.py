"""hwsim: the fast integer LIF core (bit-exact to export.fixedpoint.run_reference), its
counters, the energy models on hand counts, the graph and inputs files (the results
document and the CLI: test_hwsim_results.py).

Graphs, T and N are tiny: the whole file runs in seconds on 2 CPU cores.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from export import fixedpoint as fx
from export.graph import Core, CoreGraph, GraphError, load_graph, save_graph
from hwsim.counters import SimError
from hwsim.energy import ann_energy, available_presets, evaluate, load_energy_model
from hwsim.simulate import SimOptions, simulate
from fixedpoint_cases import CASES, conv_core, dense_w, enc, graph_of, out_core, random_spikes
from records.encoding import InputEncoding
from records.inputs import InputSet, InputsError, load_inputs, save_inputs

# --------------------------------------------------------------------------------------
# helpers (the graph builders are tests/fixedpoint_cases.py's)
# --------------------------------------------------------------------------------------
def assert_matches_reference(graph, spikes, **kw):
    if "conv_impl" not in kw:         # the CUDA code path (im2col + GEMM conv, no host-side shortcuts) on the CPU
        assert_matches_reference(graph, spikes, conv_impl="gemm", host_checks=False, **kw)
    ref = fx.run_reference(graph, spikes)
    res = simulate(graph, spikes, record_spikes=True, options=SimOptions(**kw))
    assert len(ref.spikes) == len(res.spike_trains)
    for k, (a, b) in enumerate(zip(ref.spikes, res.spike_trains)):
        assert a.shape == b.shape
        bad = np.argwhere(a != b)
        assert bad.size == 0, f"spiking core {k}: first mismatch at (t, n, ...) = {bad[0]}"
    np.testing.assert_array_equal(res.output, ref.output)
    assert [l.max_abs_input for l in res.layers] == ref.max_abs_input
    return ref, res


# --------------------------------------------------------------------------------------
# the hand-computed example
# --------------------------------------------------------------------------------------
def tiny_graph():
    """2 input pixels -> 2 IF neurons (vth 2, i.e. 128 after << 6) -> 1 output accumulator."""
    hidden = Core("h", "dense", np.array([[2, 0], [2, 2]]), (1, 1, 2), (2,), vth=2)
    out = Core("out", "dense", np.array([[4, 2]]), (2,), (1,), vth=0, spiking=False)
    return CoreGraph(enc((1, 1, 2)), [hidden, out], timesteps=4, class_names=["only"])


TINY_INPUT = np.zeros((4, 1, 1, 1, 2), dtype=np.int8)
TINY_INPUT[:, 0, 0, 0, 0] = [1, 1, 0, 1]
TINY_INPUT[:, 0, 0, 0, 1] = [0, 1, 1, 0]


def test_tiny_graph_hand_computed():
    # neuron 0: a = 2*x0 = [2, 2, 0, 2] -> u = a << 6 = [128, 128, 0, 128]
    #   v: 128 (no spike: not > 128), 256 (spike), 256 - 128 + 0 = 128 (no), 128 + 128 = 256 (spike)
    # neuron 1: a = 2*x0 + 2*x1 = [2, 4, 2, 2] -> u = [128, 256, 128, 128]
    #   v: 128 (no), 384 (spike), 384 - 128 + 128 = 384 (spike), 384 (spike)
    # output: a = 4*o0 + 2*o1 = [0, 6, 2, 6] -> v = 14 << 6 = 896
    res = simulate(tiny_graph(), TINY_INPUT, record_spikes=True)
    np.testing.assert_array_equal(res.spike_trains[0][:, 0], [[0, 0], [1, 1], [0, 1], [1, 1]])
    assert res.output.tolist() == [[896]]
    assert res.predictions.tolist() == [0]
    h, o = res.layers
    assert res.input_spikes == 5
    assert (h.spikes, h.synaptic_events, h.neuron_updates, h.active_neuron_updates) == (5, 10, 8, 7)
    assert (o.spikes, o.synaptic_events, o.neuron_updates, o.active_neuron_updates) == (0, 5, 4, 3)
    assert h.avg_spikes_per_neuron == 2.5
    assert [h.max_abs_input, o.max_abs_input] == [4, 6]
    assert_matches_reference(tiny_graph(), TINY_INPUT)


def test_energy_models_on_hand_counts():
    res = simulate(tiny_graph(), TINY_INPUT)
    first = evaluate(load_energy_model("first_order"), res)
    assert first["energy"] == 5.0 and first["delay"] == 4.0 and first["edp"] == 20.0   # 5 spikes, T = 4
    loihi = evaluate(load_energy_model("loihi"), res)
    # 15 synaptic events x 23.6 + 10 active x 81 + 2 inactive x 52 + 5 spike hops x 3.5
    assert loihi["energy"] == pytest.approx(15 * 23.6 + 10 * 81 + 2 * 52 + 5 * 3.5)
    assert loihi["layers"] == pytest.approx([10 * 23.6 + 7 * 81 + 1 * 52 + 5 * 3.5, 5 * 23.6 + 3 * 81 + 52])
    assert loihi["edp"] == pytest.approx(loihi["energy"] * 4)
    cmos = load_energy_model("cmos45nm")
    assert evaluate(cmos, res)["energy"] == pytest.approx(15 * 0.9)
    assert ann_energy(cmos, 6) == pytest.approx(6 * 4.6)
    assert tiny_graph().ann_macs is None                 # made by hand: no ANN behind it
    assert set(available_presets()) >= {"first_order", "cmos45nm", "loihi"}


# --------------------------------------------------------------------------------------
# hwsim's own code paths (plans, rewrites, chunking), bit-exact against the reference;
# every backend on the shared cases: tests/test_conformance.py
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("blocky", [True, False])
def test_folded_pool_conv_6x6_stride2(blocky):
    rng = np.random.default_rng(3)
    shape = (3, 8, 4)
    c1 = conv_core(rng, "c1", 3, 4, (3, 3), (8, 4), pad=(1, 1), vth=15)
    if blocky:     # a 2x2 average pool folded into a 3x3 conv: constant over 2x2 blocks
        w = np.repeat(np.repeat(rng.integers(-30, 31, size=(5, 4, 3, 3)), 2, axis=2), 2, axis=3)
    else:
        w = rng.integers(-30, 31, size=(5, 4, 6, 6))
    pool = (2, 2) if blocky else (1, 1)      # the graph records the pool export folded in
    c2 = conv_core(rng, "c2", 4, 5, (6, 6), (8, 4), stride=(2, 2), pad=(2, 2), vth=60, w=w, pool=pool)
    if not blocky:
        with pytest.raises(GraphError, match="not constant over the folded pool"):
            conv_core(rng, "c2", 4, 5, (6, 6), (8, 4), stride=(2, 2), pad=(2, 2), vth=60, w=w, pool=(2, 2))
    # a dense output after a folded pool too: (5, 4, 2) pooled to (5, 2, 1)
    wd = np.repeat(np.repeat(rng.integers(-60, 61, size=(3, 5, 2, 1)), 2, 2), 2, 3) * 2
    out = Core("out", "dense", wd.reshape(3, -1), c2.output_shape, (3,), vth=0, spiking=False, pool=(2, 2))
    g = graph_of([c1, c2, out], shape)
    _, res = assert_matches_reference(g, random_spikes(rng, 6, 3, shape))
    assert (res.plan[1]["pool_rewrite"] is not None) == blocky and res.plan[2]["pool_rewrite"] == [2, 2]
    # odd input size: the explicit-padding path of the rewrite
    shape = (4, 7, 7)
    w = np.repeat(np.repeat(rng.integers(-30, 31, size=(2, 4, 3, 3)), 2, axis=2), 2, axis=3)
    c = conv_core(rng, "c", 4, 2, (6, 6), (7, 7), stride=(2, 2), pad=(1, 2), vth=40, w=w, pool=(2, 2))
    assert_matches_reference(graph_of([c, out_core(rng, c.output_shape)], shape), random_spikes(rng, 5, 3, shape))


def test_current_wrap_and_voltage_saturation():
    """The wrap24 path runs only where a core's bound says a current can pass 2**23."""
    _, res = assert_matches_reference(*CASES["current_wrap_and_saturation"]())
    assert res.plan[0]["wrap"] and res.layers[0].max_abs_input * 64 > 2 ** 23
    assert (res.output == fx.V_MAX).any()
    _, res = assert_matches_reference(*CASES["largest_threshold"]())
    assert not res.plan[0]["wrap"] and res.layers[0].spikes > 0


def test_conv_wrap_24bit_and_float64_fallback():
    rng = np.random.default_rng(5)
    # sum |w| = 8192 * 9 * 127 > 2**23: the conv output wraps modulo 2**24 (float32 still exact)
    c1 = conv_core(rng, "c1", 8192, 1, (3, 3), (3, 3), vth=7, w=np.full((1, 8192, 3, 3), 127))
    g = graph_of([c1, out_core(rng, (1, 1, 1))], (8192, 3, 3), timesteps=2)
    spikes = np.ones((2, 2, 8192, 3, 3), dtype=np.int8)
    spikes[:, 1] = -1
    _, res = assert_matches_reference(g, spikes)
    assert res.plan[0]["conv_wrap"] and res.plan[0]["dtype"] == "float32"
    assert res.layers[0].max_abs_input == 2 ** 24 - 8192 * 9 * 127
    # sum |w| >= 2**24: float32 would not be exact any more -> the core runs in float64
    w = np.full((1, 8200, 4, 4), -128)
    w[0, :9, 0, 0] = 127
    c2 = conv_core(rng, "c2", 8200, 1, (4, 4), (4, 4), vth=7, w=w)
    g = graph_of([c2, out_core(rng, (1, 1, 1))], (8200, 4, 4), timesteps=2)
    spikes = random_spikes(rng, 2, 3, (8200, 4, 4), p=0.9)
    spikes[:, 0] = 1
    _, res = assert_matches_reference(g, spikes)
    assert res.plan[0]["dtype"] == "float64"


def test_chunking_blocking_and_sparse_paths_agree():
    rng = np.random.default_rng(6)
    shape = (3, 6, 6)
    c1 = conv_core(rng, "c1", 3, 6, (3, 3), (6, 6), pad=(1, 1), vth=30)
    c1.weights[:, 1] = 0                      # a silent input channel... and
    h = Core("h", "dense", dense_w(rng, 9, 216), c1.output_shape, (9,), vth=50)
    h.weights[2:] = 0                         # 7 of 9 neurons silent: the next dense core is compacted
    h2 = Core("h2", "dense", dense_w(rng, 5, 9), (9,), (5,), vth=10)
    g = graph_of([c1, h, h2, out_core(rng, (5,))], shape, timesteps=9)
    spikes = random_spikes(rng, 9, 7, shape, p=0.3)
    spikes[:, :, 1:] = 0                      # ...input channels 1 and 2 never spike (sparse path)
    base = simulate(g, spikes, record_spikes=True, options=SimOptions(chunk=7, steps_per_block=9, sparse=False))
    ref = fx.run_reference(g, spikes)
    np.testing.assert_array_equal(base.output, ref.output)
    for kw in ({"chunk": 1, "steps_per_block": 1}, {"chunk": 3, "steps_per_block": 4, "sparse": True},
               {"chunk": 2, "steps_per_block": 5, "recurrence_threads": None},
               {"chunk": 4, "steps_per_block": 3, "conv_impl": "gemm", "sparse": False}):
        r = simulate(g, spikes, record_spikes=True, options=SimOptions(**kw))
        np.testing.assert_array_equal(r.output, base.output)
        for a, b in zip(r.spike_trains, base.spike_trains):
            np.testing.assert_array_equal(a, b)
        assert [l.synaptic_events for l in r.layers] == [l.synaptic_events for l in base.layers]
        assert [l.active_neuron_updates for l in r.layers] == [l.active_neuron_updates for l in base.layers]
        np.testing.assert_array_equal(r.layers[0].spikes_per_sample, base.layers[0].spikes_per_sample)


def test_counts_are_consistent():
    rng = np.random.default_rng(7)
    shape = (2, 5, 6)
    c1 = conv_core(rng, "c1", 2, 3, (3, 3), (5, 6), pad=(1, 1), vth=20)
    h = Core("h", "dense", dense_w(rng, 8, 90), c1.output_shape, (8,), vth=40)
    g = graph_of([c1, h, out_core(rng, (8,))], shape)
    spikes = random_spikes(rng, 6, 5, shape)
    res = simulate(g, spikes, record_spikes=True)
    trains = [np.abs(spikes)] + res.spike_trains
    for i, (core, layer) in enumerate(zip(g.cores, res.layers)):
        s = trains[i].astype(np.int64)
        # synaptic events = sum over input spikes of the spiking neuron's fan-out
        assert layer.synaptic_events == int((s.sum(axis=(0, 1)) * core.fan_out_per_input).sum())
        assert layer.neuron_updates == layer.neurons * 6 * 5
        # active neuron updates = neuron-steps with a non-zero synaptic input
        src = spikes if i == 0 else trains[i]
        act = sum(int(np.count_nonzero(fx.synaptic_input(core, src[t]))) for t in range(6))
        assert layer.active_neuron_updates == act
        if layer.spiking:
            assert layer.spikes == int(res.spike_trains[i].sum())
            np.testing.assert_array_equal(layer.spikes_per_sample, res.spike_trains[i].sum(axis=(0, 2, 3, 4)
                                                                                          if i == 0 else (0, 2)))
            assert layer.avg_spikes_per_neuron * layer.neurons * res.samples == pytest.approx(layer.spikes)
    assert res.input_spikes == int(np.abs(spikes).sum())
    assert res.spikes == sum(int(t.sum()) for t in res.spike_trains)


@pytest.mark.parametrize("event_density", [0.0, math.inf])
def test_shortcut_events_are_counted_per_synapse_group(event_density):
    """A core with shortcuts receives its own synapse's events plus, per shortcut, its
    source's spikes times the shortcut's fan-out (the synaptic-operation energy)."""
    graph, spikes = CASES["residual_identity_and_projection"]()
    res = simulate(graph, spikes, record_spikes=True, options=SimOptions(event_density=event_density))
    trains = {"input": np.abs(spikes).astype(np.int64)}
    trains.update({c.name: t.astype(np.int64) for c, t in zip(graph.spiking_cores, res.spike_trains)})
    prev = "input"
    for core, layer in zip(graph.cores, res.layers):
        want = int((trains[prev].sum(axis=(0, 1)) * core.fan_out_per_input).sum())
        for sc in core.shortcuts:
            want += int((trains[sc.source].sum(axis=(0, 1)) * sc.fan_out_per_input(core.output_shape)).sum())
        assert layer.synaptic_events == want, core.name
        prev = core.name
    assert sum(len(c.shortcuts) for c in graph.cores) == 3


def test_graph_file_round_trip_with_shortcuts_and_version_2_files_load(tmp_path):
    graph, _ = CASES["residual_identity_and_projection"]()
    back = load_graph(save_graph(graph, tmp_path / "g.npz"))
    assert back.edges == graph.edges and ("c1", "c3") in back.edges and ("input", "c2") in back.edges
    for a, b in zip(graph.cores, back.cores):
        assert [sc.header() for sc in a.shortcuts] == [sc.header() for sc in b.shortcuts]
        for x, y in zip(a.shortcuts, b.shortcuts):
            np.testing.assert_array_equal(x.weights, y.weights)
    chain, _ = CASES["folded_pools"]()                      # a chain written as version 2 wrote it
    path = save_graph(chain, tmp_path / "v2.npz")
    with np.load(path) as data:
        arrays = dict(data)
    head = json.loads(bytes(arrays["__graph__"]))
    head["version"] = 2
    for core in head["cores"]:
        del core["shortcuts"]
    arrays["__graph__"] = np.frombuffer(json.dumps(head).encode(), dtype=np.uint8)
    np.savez(path, **arrays)
    assert [c.name for c in load_graph(path).cores] == [c.name for c in chain.cores]


def test_graph_file_round_trip_with_biases_and_biases_that_do_not_fit_are_refused(tmp_path):
    graph, _ = CASES["neuron_biases"]()
    back = load_graph(save_graph(graph, tmp_path / "g.npz"))
    for a, b in zip(graph.cores, back.cores):
        assert a.bias_exp == b.bias_exp and (a.bias is None) == (b.bias is None), a.name
        if a.bias is not None:
            np.testing.assert_array_equal(a.bias, b.bias)
    core = graph.cores[0]
    for bias, exp, match in (([4096, 0, 0, 0], 0, "outside \\[-4096, 4095\\]"), ([1, 2], 0, "one per output channel"),
                             ([1, 2, 3, 4], 8, "bias_exp=8 outside 0..7"), ([0.5, 0, 0, 0], 0, "must be integers")):
        with pytest.raises(GraphError, match=match):
            Core(core.name, "conv", core.weights, core.input_shape, core.output_shape, vth=core.vth,
                 padding=core.padding, bias=np.array(bias), bias_exp=exp)


def test_shortcuts_that_do_not_fit_are_refused():
    graph, _ = CASES["residual_identity_and_projection"]()
    c3 = graph.cores[2]
    with pytest.raises(GraphError, match="shortcut source 'c4' is not the input or a spiking core before it"):
        c3.shortcuts[0].source = "c4"
        graph.edges = graph.dag_edges()
        graph.validate()
    from export.graph import Shortcut
    with pytest.raises(GraphError, match="multiples of 2"):
        Shortcut("c1", "identity", [35], (4, 6, 5))
    with pytest.raises(GraphError, match="identity shortcut maps"):
        Core("x", "conv", np.ones((4, 4, 1, 1), int), (4, 6, 5), (4, 6, 5), vth=1,
             shortcuts=[Shortcut("c1", "identity", [36], (4, 3, 5))])


def test_same_seed_same_numbers_and_encoding_is_graph_input_encode():
    rng = np.random.default_rng(8)
    shape = (1, 6, 6)
    c1 = conv_core(rng, "c1", 1, 3, (3, 3), (6, 6), pad=(1, 1), vth=20)
    g = graph_of([c1, out_core(rng, c1.output_shape)], shape, timesteps=5)
    images = rng.integers(0, 256, size=(11, *shape), dtype=np.uint8)
    a = simulate(g, (images, 3), options=SimOptions(chunk=4))
    b = simulate(g, (images, 3), options=SimOptions(chunk=3, steps_per_block=2))
    c = simulate(g, g.input.encode(images, 5, 3))
    for r in (b, c):
        np.testing.assert_array_equal(r.output, a.output)
        assert [l.spikes for l in r.layers] == [l.spikes for l in a.layers]
    d = simulate(g, (images, 4))
    assert d.input_spikes != a.input_spikes or not np.array_equal(d.output, a.output)
    with pytest.raises(SimError):
        simulate(g, (images[:, :, :5], 3))


@pytest.mark.parametrize("rule", ["poisson", "integrate"])
@pytest.mark.parametrize("options", [SimOptions(chunk=4, steps_per_block=3), SimOptions(event_density=0.0),
                                     SimOptions(event_density=math.inf, chunk=5)])
def test_readouts_equal_shorter_simulations(rule, options):
    """What simulate reads out after t steps of a longer run is what a run of t steps gives,
    on every path: the accuracy-vs-T sweep costs one simulation of its largest T."""
    rng = np.random.default_rng(9)
    shape = (2, 6, 6)
    c1 = conv_core(rng, "c1", 2, 4, (3, 3), (6, 6), pad=(1, 1), vth=15, dv=300)
    h = Core("h", "dense", dense_w(rng, 7, 144), c1.output_shape, (7,), vth=30, bias=rng.integers(-5, 6, 7))
    g = graph_of([c1, h, out_core(rng, (7,), dv=100)], shape, timesteps=12,
                 encoding=InputEncoding.of(shape, [0.5, 0.4], [0.3, 0.5], rule=rule))
    images = rng.integers(0, 256, size=(9, *shape), dtype=np.uint8)
    long = simulate(g, (images, 5), timesteps=12, options=options, readouts=(1, 5, 7, 11))
    assert sorted(long.readouts) == [1, 5, 7, 11]
    labels = rng.integers(0, 3, 9)
    for t, read in long.readouts.items():
        short = simulate(g, (images, 5), timesteps=t, options=options)
        np.testing.assert_array_equal(read.output, short.output)
        np.testing.assert_array_equal(read.spikes_per_sample, sum(l.spikes_per_sample for l in short.layers))
        assert (read.timesteps, read.samples, read.spikes) == (t, 9, short.spikes)
        assert read.accuracy(labels) == short.accuracy(labels)
    assert long.spikes > long.readouts[11].spikes > long.readouts[1].spikes
    np.testing.assert_array_equal(long.output, simulate(g, (images, 5), timesteps=12, options=options).output)
    for bad in ((0,), (12,), (2.5,), (True,)):
        with pytest.raises(SimError, match="readouts"):
            simulate(g, (images, 5), timesteps=12, readouts=bad)


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def test_inputs_file_round_trip_and_rejects(tmp_path):
    rng = np.random.default_rng(9)
    inp = InputSet(rng.integers(0, 256, size=(4, 1, 3, 3), dtype=np.uint8), [0, 1, 2, 1], seed=5, timesteps=7,
                   dataset="digits", class_names=["a", "b", "c"])
    path = save_inputs(tmp_path / "in.npz", inp)
    back = load_inputs(path)
    np.testing.assert_array_equal(back.images, inp.images)
    assert back.labels.tolist() == [0, 1, 2, 1] and (back.seed, back.timesteps, back.dataset) == (5, 7, "digits")
    assert [p.name for p in tmp_path.iterdir()] == ["in.npz"]          # no temporary left behind
    # newer version
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    header = json.loads(bytes(arrays["__inputs__"]).decode())
    header["version"] = 2
    arrays["__inputs__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(tmp_path / "new.npz", **arrays)
    with pytest.raises(InputsError, match=r"new\.npz.*newer"):
        load_inputs(tmp_path / "new.npz")
    # tampered arrays
    header["version"] = 1
    arrays["__inputs__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    arrays["images"] = arrays["images"] ^ 1
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputsError, match=r"bad\.npz.*checksum"):
        load_inputs(tmp_path / "bad.npz")
    # corrupt bytes / missing file
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(InputsError, match=r"junk\.npz.*corrupt"):
        load_inputs(tmp_path / "junk.npz")
    with pytest.raises(InputsError, match="no such"):
        load_inputs(tmp_path / "missing.npz")
