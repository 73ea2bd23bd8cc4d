"""ONNX export (metadata, float32-exact fan-in groups; that it runs bit-exactly is
tests/test_conformance.py's job) and NIR export (exact round trip)."""
from __future__ import annotations

import json
import math

import nir
import numpy as np
import onnx
import pytest

from export import fixedpoint as fx
from export.graph import VERSION as GRAPH_VERSION, Core, CoreGraph
from records.encoding import InputEncoding
from export.nir_export import DT, export_nir
from export.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx, fan_in_groups
from fixedpoint_cases import CASES


def _enc(shape):
    return InputEncoding.of(shape, np.full(shape[0], 0.5), std=np.full(shape[0], 0.25))


def _dense_w(rng, n_out, n_in, lo=-40, hi=60):
    return (rng.integers(lo, hi, size=(n_out, n_in)) * 2).clip(-256, 254)


def _conv_w(rng, shape, lo=-30, hi=50):
    return rng.integers(lo, hi, size=shape)


def _calibrate(cores, enc, spikes, fraction=0.3):
    """Threshold balancing in miniature: each layer's vth from the max current it receives."""
    for k in range(len(cores)):
        g = CoreGraph(input=enc, cores=cores, timesteps=spikes.shape[0],
                      class_names=[str(i) for i in range(math.prod(cores[-1].output_shape))])
        max_abs = fx.run_reference(g, spikes).max_abs_input[k]
        if cores[k].spiking:
            cores[k].vth = max(1, int(fraction * max_abs))
    return CoreGraph(input=enc, cores=cores, timesteps=spikes.shape[0],
                     class_names=[f"class{i}" for i in range(math.prod(cores[-1].output_shape))],
                     provenance={"test": "tests/test_onnx_nir.py"})


def dense_graph(rng, spikes):
    enc = _enc((1, 4, 5))
    # weight_exp = -3: dense weights are even, so -1 would never round; -3 exercises the floor
    cores = [Core("fc1", "dense", _dense_w(rng, 16, 20), (1, 4, 5), (16,), vth=1, weight_exp=-3),
             Core("fc2", "dense", _dense_w(rng, 12, 16), (16,), (12,), vth=1, weight_exp=1),
             Core("out", "dense", _dense_w(rng, 3, 12), (12,), (3,), vth=0, spiking=False)]
    return _calibrate(cores, enc, spikes)


def conv_graph(rng, spikes, dv=(0, 0, 0), kw=2):
    """Non-symmetric 3 x kw kernel on a non-square 7x9 input, a stride-2 6x6 conv (a folded pool), dense out."""
    enc = _enc((2, 7, 9))
    w1 = 10 - kw
    w2 = (w1 + 4 - 6) // 2 + 1
    cores = [Core("conv1", "conv", _conv_w(rng, (4, 2, 3, kw)), (2, 7, 9), (4, 7, w1), vth=1, dv=dv[0],
                  padding=(1, 0)),
             Core("conv2", "conv", _conv_w(rng, (5, 4, 6, 6), -10, 20), (4, 7, w1), (5, 3, w2), vth=1, dv=dv[1],
                  stride=(2, 2), padding=(2, 2)),
             Core("out", "dense", _dense_w(rng, 3, 15 * w2), (5, 3, w2), (3,), vth=0, dv=dv[2], spiking=False)]
    return _calibrate(cores, enc, spikes)


def test_wide_fan_in_splits_into_float32_exact_groups():
    """A running sum beyond 2**24 would round in one float32 accumulation: the exporter splits
    the fan-in (tests/fixedpoint_cases.py's wide_conv_beyond_float32 runs it bit-exactly)."""
    graph, _ = CASES["wide_conv_beyond_float32"]()
    assert len(fan_in_groups(np.abs(graph.cores[0].weights).sum(axis=(2, 3)))) > 1


def test_onnx_checker_and_metadata(tmp_path):
    rng = np.random.default_rng(4)
    spikes = (rng.random((4, 1, 2, 7, 9)) < 0.4).astype(np.int8)
    graph = conv_graph(rng, spikes, dv=(0, 20, 0))
    path = export_onnx(graph, tmp_path / "sub" / "net.onnx")
    assert not [p for p in path.parent.iterdir() if p.name != "net.onnx"], "temp file left behind"
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: json.loads(p.value) for p in model.metadata_props}      # every value is JSON
    assert props["timesteps"] == graph.timesteps
    assert props["class_names"] == graph.class_names
    assert props["graph_version"] == GRAPH_VERSION and props["graph_format"] == "hybrid-snn-coregraph"
    assert props["input_encoding"]["mean"] == pytest.approx(list(graph.input.normalisation.mean))
    assert props["provenance"] == graph.provenance
    for k, (c, h) in enumerate(zip(graph.cores, props["cores"])):
        assert (h["name"], h["vth"], h["dv"], h["du"], h["weight_exp"], h["weight_bits"], h["reset"]) == \
            (c.name, c.vth, c.dv, c.du, c.weight_exp, c.weight_bits, "subtract")
        assert tuple(h["output_shape"]) == c.output_shape and tuple(h["stride"]) == c.stride
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    assert names_in == [INPUT_NAME, "v_0", "o_0", "v_1", "o_1", "v_2"] == props["inputs"]
    assert names_out == [OUTPUT_NAME, "spikes_0", "spikes_1", "v_0_next", "v_1_next", "v_2_next"] == props["outputs"]


def _plain(x):
    """Metadata values as they compare after HDF5 (numpy scalars/arrays -> Python)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


@pytest.mark.parametrize("kw", [3, 2])
def test_nir_round_trip(tmp_path, kw):
    rng = np.random.default_rng(5)
    spikes = (rng.random((4, 1, 2, 7, 9)) < 0.4).astype(np.int8)
    graph = conv_graph(rng, spikes, dv=(0, 512, 0), kw=kw)
    if kw == 3:
        path = export_nir(graph, tmp_path / "net.nir")
        back = nir.read(path)
    else:   # nir sizes conv outputs with weight.shape[2] for both dims: no type check for non-square kernels
        with pytest.warns(UserWarning, match="non-square"):
            path = export_nir(graph, tmp_path / "net.nir")
        back = nir.read(path, type_check=False)
    assert [p.name for p in tmp_path.iterdir()] == ["net.nir"]
    assert bool(back.metadata["nir_type_check"]) == (kw == 3)
    assert {k: type(v).__name__ for k, v in back.nodes.items()} == {
        "input": "Input", "conv1": "Conv2d", "conv1_neuron": "IF", "conv2": "Conv2d", "conv2_neuron": "LIF",
        "out_flatten": "Flatten", "out": "Linear", "output": "Output"}
    assert sorted(back.edges) == sorted([
        ("input", "conv1"), ("conv1", "conv1_neuron"), ("conv1_neuron", "conv2"), ("conv2", "conv2_neuron"),
        ("conv2_neuron", "out_flatten"), ("out_flatten", "out"), ("out", "output")])
    c1, c2, out = graph.cores
    np.testing.assert_array_equal(back.nodes["conv1"].weight, c1.weights)
    np.testing.assert_array_equal(back.nodes["conv2"].weight, c2.weights)
    np.testing.assert_array_equal(back.nodes["out"].weight, out.weights)
    assert tuple(back.nodes["conv2"].stride) == (2, 2) and tuple(back.nodes["conv1"].padding) == (1, 0)
    assert tuple(back.nodes["conv1"].input_shape) == (7, 9)
    assert np.all(back.nodes["conv1_neuron"].v_threshold == c1.vth)
    assert back.nodes["conv1_neuron"].v_threshold.shape == c1.output_shape
    assert np.allclose(back.nodes["conv1_neuron"].r * DT, 1.0)                 # Euler at dt: v += u
    lif = back.nodes["conv2_neuron"]
    assert np.all(lif.v_threshold == c2.vth) and np.allclose(lif.tau / DT, 4096 / 512) and np.allclose(lif.r * DT, lif.tau)
    assert np.all(lif.v_leak == 0) and np.all(lif.v_reset == 0)
    assert back.nodes["output"].output_type["output"].tolist() == [3]
    for node_name, core in [("conv1", c1), ("conv2_neuron", c2), ("out", out)]:
        m = _plain(back.nodes[node_name].metadata)
        assert (m["core"], m["vth"], m["dv"], m["weight_exp"], m["weight_bits"], m["reset"]) == \
            (core.name, core.vth, core.dv, core.weight_exp, core.weight_bits, "subtract")
        assert (m["act_shift"], m["vth_shift"], m["vth_shifted"]) == (6, 6, core.vth << 6)
        assert m["weight_scale"] == core.weight_scale and m["output_shape"] == list(core.output_shape)
    meta = _plain(back.metadata)
    assert meta["timesteps"] == graph.timesteps and json.loads(meta["class_names"]) == graph.class_names
    assert json.loads(meta["provenance"]) == graph.provenance and meta["reset"] == "subtract"
    assert json.loads(meta["input_encoding"])["shape"] == list(graph.input.shape)


def test_nir_dense_leaky_output(tmp_path):
    rng = np.random.default_rng(6)
    spikes = rng.integers(-1, 2, size=(3, 1, 1, 4, 5)).astype(np.int8)
    graph = dense_graph(rng, spikes)
    graph.cores[0].dv = 100
    graph.cores[-1].dv = 4095
    back = nir.read(export_nir(graph, tmp_path / "d.nir"))
    assert type(back.nodes["fc1_neuron"]).__name__ == "LIF" and "out_readout" not in back.nodes
    assert np.isclose(float(back.metadata["readout_leak"]), 1 / 4096)                     # the output core's leak
    np.testing.assert_array_equal(back.nodes["fc1"].weight, graph.cores[0].weights / 8)    # weight_exp = -3
    np.testing.assert_array_equal(back.nodes["fc2"].weight, graph.cores[1].weights * 2)    # weight_exp = +1
    assert back.nodes["fc1_flatten"].output_type["output"].tolist() == [20]
