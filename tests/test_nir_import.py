"""NIR graphs from other frameworks deployed through the core (export/nir_import.py,
``python -m export.to_lava model.nir``).

The foreign network is trained and exported by SpikingJelly 2.0.0 inside the test (its
``export_to_nir``; snnTorch 1.0.0's and Norse 1.1.0's exporters fail on a conv net, see
docs/interop.md), imported, quantized by the checkpoint's rules and run on the integer core."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nir
import numpy as np
import pytest

from export import fixedpoint as fx
from export.graph import Core
from export.nir_export import build_nir, export_nir
from export.nir_import import NIRImportError, quantize_nir, read_nir
from fixedpoint_cases import conv_core, dense_w, graph_of, out_core, random_spikes
from records.encoding import InputEncoding

ROOT = Path(__file__).resolve().parents[1]
T = 6


@pytest.fixture(scope="module")
def spikingjelly_net(digits):
    """(SpikingJelly net trained with soft reset, the NIR graph SpikingJelly writes of it, test
    spikes, its test predictions): examples/nir_from_spikingjelly.py's training."""
    pytest.importorskip("spikingjelly.activation_based")
    spec = importlib.util.spec_from_file_location("nir_from_spikingjelly",
                                                  ROOT / "examples" / "nir_from_spikingjelly.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.train(digits, T, epochs=8)


def test_spikingjelly_network_deploys_on_the_core(spikingjelly_net, digits):
    _, graph, spikes, sj_pred = spikingjelly_net
    labels = digits.test_y.numpy()
    assert (sj_pred == labels).mean() > 0.6                 # it learned (chance: 0.1)
    net = read_nir(graph, subtract_reset=True)
    scores, peak, float_spikes = net.run_float(spikes)
    assert (scores.argmax(1) == sj_pred).mean() == 1.0      # the import's float model is SpikingJelly's network
    core, report = quantize_nir(net, InputEncoding(digits.input_shape, digits.normalisation), digits.class_names, T,
                                output_peak=peak)
    assert [c.op for c in core.cores] == ["conv", "dense"] and core.cores[1].pool == (2, 2)
    ref = fx.run_reference(core, spikes)
    assert (ref.predictions == scores.argmax(1)).mean() >= 0.95
    assert ref.spikes_per_neuron == pytest.approx(float_spikes, rel=0.05)


def test_hard_reset_needs_the_users_word(spikingjelly_net):
    with pytest.raises(NIRImportError, match=r"node _1: NIR's IF resets to v_reset.*--subtract-reset"):
        read_nir(spikingjelly_net[1])


def test_own_export_reads_back_to_the_same_integers(trained_digits):
    for graph, spikes in trained_digits:
        net = read_nir(build_nir(graph))
        back, _ = quantize_nir(net, graph.input, graph.class_names, graph.timesteps)
        for a, b in zip(graph.cores, back.cores):
            np.testing.assert_array_equal(a.weights * 2.0 ** a.weight_exp, b.weights * 2.0 ** b.weight_exp)
            assert (a.vth, a.dv, a.op, a.stride, a.padding) == (b.vth, b.dv, b.op, b.stride, b.padding)
        np.testing.assert_array_equal(fx.run_reference(back, spikes).spikes[-1],
                                      fx.run_reference(graph, spikes).spikes[-1])


def test_biases_read_back_to_the_same_integers():
    """A chain with neuron biases (conv per channel, dense per neuron, output) through NIR
    (``Conv2d``'s bias, ``Affine``) and back: the same mantissas x 2**exponent, spikes and
    output, and the imported float network computes the same output."""
    rng = np.random.default_rng(5)
    shape = (2, 6, 6)
    c1 = conv_core(rng, "c1", 2, 4, (3, 3), (6, 6), pad=(1, 1), vth=40)
    c1.bias, c1.bias_exp = np.array([700, -900, 4095, 0]), 2
    h1 = Core("h1", "dense", dense_w(rng, 5, 4 * 36), c1.output_shape, (5,), vth=30,
              bias=rng.integers(-3000, 3001, size=5), bias_exp=1)
    out = out_core(rng, (5,))
    out.bias = np.array([-300, 0, 2200])
    for core, full_scale in ((c1, 127), (h1, 254), (out, 254)):     # full-range weights: the import's scale is 1
        core.weights.flat[0] = full_scale
        core.__post_init__()
    graph = graph_of([c1, h1, out], shape, timesteps=8)
    spikes = random_spikes(rng, 8, 3, shape, p=0.3)
    net = read_nir(build_nir(graph))
    back, _ = quantize_nir(net, graph.input, graph.class_names, graph.timesteps)
    for a, b in zip(graph.cores, back.cores):
        np.testing.assert_array_equal(a.bias.astype(np.int64) << a.bias_exp, b.bias.astype(np.int64) << b.bias_exp)
    ref, got = fx.run_reference(graph, spikes), fx.run_reference(back, spikes)
    for a, b in zip(ref.spikes, got.spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref.output, got.output)
    # the float reference (calibration, float-vs-fixed) adds the biases too: without leak it is exact
    np.testing.assert_array_equal(net.run_float(spikes)[0] * 2 ** fx.ACT_SHIFT, ref.output)


def test_initial_voltages_and_the_input_rule_read_back():
    """Initial voltages (NIR's neurons have none: node metadata) and the integrate input rule
    (graph metadata) through NIR and back: the same integers, spikes and output; a v_init
    beyond the threshold in the metadata is refused naming the node."""
    rng = np.random.default_rng(6)
    shape = (2, 6, 6)
    c1 = conv_core(rng, "c1", 2, 4, (3, 3), (6, 6), pad=(1, 1), vth=40)
    h1 = Core("h1", "dense", dense_w(rng, 5, 4 * 36), c1.output_shape, (5,), vth=32)
    out = out_core(rng, (5,))
    for core, full_scale in ((c1, 127), (h1, 254), (out, 254)):
        core.weights.flat[0] = full_scale
    c1.v_init, h1.v_init = 40 << 5, (32 << 6) - 64
    for core in (c1, h1, out):
        core.__post_init__()
    graph = graph_of([c1, h1, out], shape, timesteps=8,
                     encoding=InputEncoding.of(shape, [0.5, 0.5], [0.5, 0.5], rule="integrate"))
    spikes = random_spikes(rng, 8, 3, shape, p=0.3)
    nir_graph = build_nir(graph)
    net = read_nir(nir_graph)
    assert net.input_rule == "integrate"
    back, _ = quantize_nir(net, graph.input, graph.class_names, graph.timesteps)
    assert [c.v_init for c in back.cores] == [c.v_init for c in graph.cores]
    ref, got = fx.run_reference(graph, spikes), fx.run_reference(back, spikes)
    np.testing.assert_array_equal(ref.output, got.output)
    np.testing.assert_array_equal(net.run_float(spikes)[0] * 2 ** fx.ACT_SHIFT, ref.output)
    name = next(n for n, node in nir_graph.nodes.items() if isinstance(node, nir.IF))
    nir_graph.nodes[name].metadata["v_init"] = 1e9
    with pytest.raises(NIRImportError, match=f"node {name}: metadata v_init"):
        read_nir(nir_graph)


def _chain(*nodes) -> nir.NIRGraph:
    names = ["input"] + [f"n{i}" for i in range(len(nodes))] + ["output"]
    shapes = {"input": nir.Input(input_type=np.array([1, 4, 4]))}
    out = nir.Output(output_type=np.array([3]))
    return nir.NIRGraph(nodes={**shapes, **{f"n{i}": n for i, n in enumerate(nodes)}, "output": out},
                        edges=list(zip(names[:-1], names[1:])), type_check=False)


def _conv(**kw):
    args = dict(input_shape=(4, 4), weight=np.ones((2, 1, 3, 3), np.float32), stride=1, padding=1, dilation=1,
                groups=1, bias=np.zeros(2, np.float32))
    return nir.Conv2d(**{**args, **kw})


def _if(shape=(2, 4, 4), **kw):
    args = dict(r=np.full(shape, 1e4), v_threshold=np.full(shape, 1.0), v_reset=np.zeros(shape))
    return nir.IF(**{**args, **kw})


def _tail():
    return [nir.Flatten(input_type=np.array([2, 4, 4]), start_dim=0), nir.Linear(weight=np.ones((3, 32), np.float32))]


BAD = {
    "bias shape": (lambda: _chain(_conv(bias=np.ones(3, np.float32)), _if(), *_tail()),
                   r"node n0: bias of shape \(3,\); the core has one per output channel \(2\)"),
    "bias not finite": (lambda: _chain(_conv(bias=np.array([1.0, np.nan], np.float32)), _if(), *_tail()),
                        "node n0: bias is not all finite"),
    "threshold per neuron": (lambda: _chain(_conv(), _if(v_threshold=np.arange(32.0).reshape(2, 4, 4) + 1),
                                            *_tail()), "node n1: v_threshold differs between neurons"),
    "delay": (lambda: _chain(_conv(), _if(), nir.Delay(delay=np.ones((2, 4, 4))), *_tail()),
              "node n2: Delay has no counterpart"),
    "two synapses": (lambda: _chain(_conv(), _conv(weight=np.ones((2, 2, 3, 3), np.float32)), _if(), *_tail()),
                     "node n1: follows synapse n0 with no neuron"),
    "pool padding": (lambda: _chain(_conv(), _if(), nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                                                   padding=np.array([1, 1])), *_tail()),
                     "node n2: pool kernel"),
    "synaptic current": (lambda: _chain(_conv(), nir.CubaLIF(tau_syn=np.full((2, 4, 4), 5e-3),
                                                            tau_mem=np.full((2, 4, 4), 1e-2),
                                                            r=np.full((2, 4, 4), 100.0), v_leak=np.zeros((2, 4, 4)),
                                                            v_threshold=np.ones((2, 4, 4)), w_in=np.ones((2, 4, 4))),
                                         *_tail()), "node n1: tau_syn = 0.005 keeps the synaptic current"),
    "zero time constant": (lambda: _chain(_conv(), nir.LIF(tau=np.zeros((2, 4, 4)), r=np.ones((2, 4, 4)),
                                                           v_leak=np.zeros((2, 4, 4)), v_threshold=np.ones((2, 4, 4))),
                                          *_tail()), "node n1: tau = 0 must be > 0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_what_the_core_cannot_represent_names_the_node(case):
    make, message = BAD[case]
    with pytest.raises(NIRImportError, match=message):
        read_nir(make(), subtract_reset=True)


def test_branches_are_named():
    g = _chain(_conv(), _if(), *_tail())
    g.edges.append(("n1", "output"))
    with pytest.raises(NIRImportError, match="node n1: 2 outgoing edges"):
        read_nir(g, subtract_reset=True)


def test_cli_imports_and_hwsim_runs_it(tmp_path, spikingjelly_net):
    """``python -m export.to_lava net.nir --dataset digits --source spikingjelly`` (subtract reset
    implied, SpikingJelly's own neurons compared), then hwsim on the result; a bad file is one
    line and exit code 2."""
    nir.write(tmp_path / "sj.nir", spikingjelly_net[1])
    run = lambda *a: subprocess.run([sys.executable, "-m", *a], cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                    timeout=300)
    done = run("export.to_lava", str(tmp_path / "sj.nir"), "--dataset", "digits", "--timesteps", str(T),
               "--source", "spikingjelly", "--eval-samples", "50", "--calibration-samples", "64")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "note: SpikingJelly (v_reset=None) fires at v >= theta" in done.stdout
    assert "against SpikingJelly (v_reset=None)'s own neurons (float)" in done.stdout
    out = tmp_path / "sj_core"
    assert sorted(p.name for p in out.iterdir()) == ["coregraph.npz", "export_summary.json", "model.nir",
                                                     "model.onnx", "quantization_report.csv"]
    assert "predictions agree on" in done.stdout
    hw = run("hwsim.run", "--graph", f"sj={out / 'coregraph.npz'}", "--samples", "20", "--out", str(tmp_path / "hw"),
             "--no-progress")
    assert hw.returncode == 0, hw.stderr[-2000:]
    assert (tmp_path / "hw" / "results.json").is_file()
    bad = run("export.to_lava", str(tmp_path / "sj.nir"), "--dataset", "digits", "--timesteps", "6")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--subtract-reset" in bad.stderr
    (tmp_path / "junk.nir").write_bytes(b"not hdf5")
    junk = run("export.to_lava", str(tmp_path / "junk.nir"), "--dataset", "digits", "--timesteps", "6")
    assert junk.returncode == 2 and junk.stderr.count("\n") == 1 and "junk.nir" in junk.stderr
    assert not (tmp_path / "junk_core").exists()                 # nothing is created for a bad file


def test_export_writes_an_importable_file(tmp_path, trained_digits):
    graph = trained_digits[0][0]
    path = export_nir(graph, tmp_path / "net.nir")
    net = read_nir(path)
    assert net.dt == pytest.approx(1e-4) and len(net.layers) == len(graph.cores)


def test_a_graph_that_does_not_fit_the_data_set_is_named_before_it_runs():
    net = read_nir(_chain(_conv(), _if(), *_tail()), subtract_reset=True)
    with pytest.raises(NIRImportError, match=r"reads \(1, 4, 4\) inputs, the data set gives \(1, 28, 28\)"):
        net.check_input((1, 28, 28))


def test_a_file_nir_cannot_read_is_one_error(tmp_path):
    """An HDF5 file with a node type nir does not know: NIR's reader fails its own way; the
    importer names the file."""
    import h5py
    with h5py.File(tmp_path / "odd.nir", "w") as f:
        node = f.create_group("node").create_group("nodes").create_group("n0")
        node["type"] = "QuantumNeuron"
    with pytest.raises(NIRImportError, match="odd.nir: not a readable NIR file"):
        read_nir(tmp_path / "odd.nir")


def _leaky_graph(w1: np.ndarray, w2: np.ndarray, tau_steps: float) -> nir.NIRGraph:
    """Linear -> LIF (tau = tau_steps * dt, r = 1, threshold 1) -> Linear readout, on 16 inputs."""
    n = w1.shape[0]
    lif = nir.LIF(tau=np.full(n, tau_steps * 1e-4), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                  v_reset=np.zeros(n))
    nodes = {"input": nir.Input(input_type=np.array([w1.shape[1]])), "fc1": nir.Linear(weight=w1), "lif": lif,
             "fc2": nir.Linear(weight=w2), "output": nir.Output(output_type=np.array([w2.shape[0]]))}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc1"), ("fc1", "lif"), ("lif", "fc2"), ("fc2", "output")],
                        type_check=False)


def test_the_source_frameworks_own_neurons_are_simulated_and_named():
    """A leaky SpikingJelly network (LIFNode, tau 2, v_reset=None) imported from NIR: the
    importer's SpikingJelly rule reproduces SpikingJelly's own outputs, the core's rule does
    not (the reset decays with the leak there), and both differences are named."""
    pytest.importorskip("spikingjelly.activation_based")
    import torch
    from spikingjelly.activation_based import functional, neuron

    from export.neuron_semantics import SEMANTICS

    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(0, 0.8, (20, 16)), rng.normal(0, 1, (5, 20))
    spikes = (rng.random((12, 40, 16)) < 0.4).astype(np.float64)
    lif = neuron.LIFNode(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=None)
    functional.reset_net(lif)
    with torch.no_grad():
        x = torch.from_numpy(spikes)
        own = sum(torch.from_numpy(w2) @ lif(x[t] @ torch.from_numpy(w1).T).T for t in range(len(x))).T.numpy()
    net = read_nir(_leaky_graph(w1, w2, 2.0), subtract_reset=True)
    assert net.layers[0].leak == pytest.approx(0.5)
    as_sj = net.run_float(spikes, SEMANTICS["spikingjelly"])[0]
    np.testing.assert_allclose(as_sj, own, atol=1e-9)
    as_core = net.run_float(spikes)[0]
    assert not np.allclose(as_core, own)                       # the rules differ, and it shows
    differences = SEMANTICS["spikingjelly"].differences([lay.leak for lay in net.layers[:-1]])
    assert len(differences) == 2 and "before the leak" in differences[0] and ">= theta" in differences[1]
    assert SEMANTICS["spikingjelly"].differences([1.0]) == [differences[1]]       # no leak: the order is moot
    assert SEMANTICS["snntorch"].differences([0.5]) == []
