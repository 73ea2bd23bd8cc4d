"""Exported NIR files run in released third-party simulators (export/nir_consumers.py):
SpikingJelly 2.0.0 and snnTorch 1.0.0 (with nirtorch 2.6), installed pinned by install.sh.

Where NIR's float semantics are exact for the core (IF neurons, hidden currents that need
no floor, no 24-bit wrap), each consumer's per-step output must equal the readout current
of the integer reference bit for bit; the class scores then differ from the core's only by
the output core's per-step floor of a negative weight_exp."""
from __future__ import annotations

import numpy as np
import pytest

from export import fixedpoint as fx
from export.graph import Core, Shortcut
from export.nir_consumers import CONSUMERS, load_spikingjelly, readout_currents, scores
from export.nir_export import export_nir
from fixedpoint_cases import conv_core, dense_flat_after_conv, folded_pool_odd_input, folded_pools, graph_of, \
    out_core, random_spikes, shortcut_w

pytest.importorskip("spikingjelly")
pytest.importorskip("snntorch")


def reference_currents(graph, spikes) -> np.ndarray:
    """(T, B, classes): the exact float current the integer reference's output core receives."""
    return readout_currents(graph, fx.run_reference(graph, spikes))


def nonsquare_stride_padding():
    """Non-symmetric 3x2 kernel, non-square map, unequal stride and padding, IF neurons."""
    rng = np.random.default_rng(12)
    shape = (2, 7, 5)
    c1 = conv_core(rng, "c1", 2, 3, (3, 2), (7, 5), stride=(1, 2), pad=(1, 0), vth=20)
    c2 = conv_core(rng, "c2", 3, 4, (2, 1), c1.output_shape[1:], pad=(0, 1), vth=25)
    return graph_of([c1, c2, out_core(rng, c2.output_shape, exp=-2)], shape), random_spikes(rng, 6, 3, shape)


def leak_exact():
    """dv = 2048 (lambda = 1/2) over 5 steps: the core's round-toward-zero decay is exact in float."""
    rng = np.random.default_rng(13)
    shape = (1, 4, 4)
    c1 = conv_core(rng, "c1", 1, 3, (3, 3), (4, 4), pad=(1, 1), vth=12, dv=2048)
    h = Core("h", "dense", np.random.default_rng(14).integers(-30, 31, (6, 48)) * 2, c1.output_shape, (6,),
             vth=40, dv=2048)
    return graph_of([c1, h, out_core(rng, (6,))], shape, timesteps=5), random_spikes(rng, 5, 4, shape)


def residual_blocks():
    """A DAG: an identity shortcut (NIR Scale), a 1x1 stride-2 projection and one from the
    signed input (NIR Conv2d), each summed into a neuron node with its conv; IF neurons and
    non-negative exponents, where NIR's float semantics are exact."""
    rng = np.random.default_rng(15)
    shape = (2, 6, 6)
    c1 = conv_core(rng, "c1", 2, 4, (3, 3), (6, 6), pad=(1, 1), vth=25)
    w2, from_input = rng.integers(-30, 31, size=(4, 4, 3, 3)), shortcut_w(rng, 4, 2, 1, 1)
    c2 = conv_core(rng, "c2", 4, 4, (3, 3), (6, 6), pad=(1, 1), vth=40, w=w2,
                   shortcuts=[Shortcut("c1", "identity", [40], c1.output_shape, weight_exp=1),
                              Shortcut("input", "conv", from_input, shape)])
    c3 = conv_core(rng, "c3", 4, 6, (3, 3), (6, 6), stride=(2, 2), pad=(1, 1), vth=30)
    w4, projection = rng.integers(-30, 31, size=(6, 6, 3, 3)), shortcut_w(rng, 6, 4, 1, 1)
    c4 = conv_core(rng, "c4", 6, 6, (3, 3), (3, 3), pad=(1, 1), vth=40, w=w4,
                   shortcuts=[Shortcut("c2", "conv", projection, c2.output_shape, weight_exp=2, stride=(2, 2))])
    cores = [c1, c2, c3, c4, out_core(rng, c4.output_shape)]
    return graph_of(cores, shape), random_spikes(rng, 6, 3, shape)


def neuron_biases_exact():
    """Biases on a conv (per channel, one that fires at every step), on a dense core
    (NIR Affine), both signs and exponents, and on the readout: bias / 64 is exact in float."""
    rng = np.random.default_rng(16)
    shape = (2, 5, 5)
    c1 = conv_core(rng, "c1", 2, 3, (3, 3), (5, 5), pad=(1, 1), vth=20)
    c1.bias, c1.bias_exp = np.array([300, -700, 4095]), 1
    h = Core("h", "dense", rng.integers(-30, 31, (6, 75)) * 2, c1.output_shape, (6,), vth=40,
             bias=rng.integers(-4096, 4096, size=6), bias_exp=3)
    out = out_core(rng, (6,))
    out.bias = np.array([-64, 5, 1000])
    for core in (c1, out):
        core.__post_init__()
    return graph_of([c1, h, out], shape), random_spikes(rng, 6, 3, shape)


EXACT = {f.__name__: f for f in (folded_pools, folded_pool_odd_input, dense_flat_after_conv,
                                 nonsquare_stride_padding, residual_blocks, neuron_biases_exact)}


@pytest.mark.filterwarnings("ignore:nir.s shape inference")
@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
@pytest.mark.parametrize("case", sorted(EXACT))
def test_consumer_outputs_equal_the_core(tmp_path, consumer, case):
    graph, spikes = EXACT[case]()
    model = CONSUMERS[consumer](export_nir(graph, tmp_path / "g.nir"))
    np.testing.assert_array_equal(model.run(spikes), reference_currents(graph, spikes))


def test_snntorch_reset_outside_the_leak_is_the_cores(tmp_path):
    """snnTorch's delayed subtract reset is the core's rule (Eq. 2), so a leaky graph is exact
    too; SpikingJelly resets before its leak, so there it only comes close."""
    graph, spikes = leak_exact()
    path = export_nir(graph, tmp_path / "leak.nir")
    exact = reference_currents(graph, spikes)
    np.testing.assert_array_equal(CONSUMERS["snntorch"](path).run(spikes), exact)
    assert not np.array_equal(CONSUMERS["spikingjelly"](path).run(spikes), exact)


def test_spikingjelly_as_written_resets_to_zero(tmp_path):
    """Without the adapter SpikingJelly follows NIR 1.0 (reset to v_reset, fire at >=): the
    file runs, but not as the core; the adapter is what makes it exact."""
    graph, spikes = folded_pools()
    path = export_nir(graph, tmp_path / "g.nir")
    assert not np.array_equal(load_spikingjelly(path, as_written=True).run(spikes), reference_currents(graph, spikes))


def test_trained_networks_agree_with_hwsim(tmp_path, trained_digits, digits):
    """The converted and the fine-tuned digits networks on 60 test images."""
    for k, (graph, _) in enumerate(trained_digits):
        spikes = graph.input.encode(digits.test_x.numpy(), graph.timesteps, seed=5)
        path = export_nir(graph, tmp_path / f"net{k}.nir")
        ref = fx.run_reference(graph, spikes)
        exact = readout_currents(graph, ref)
        for name, load in CONSUMERS.items():
            model = load(path)
            out = model.run(spikes)
            np.testing.assert_array_equal(out, exact, err_msg=name)
            agree = (scores(out, model.readout_leak).argmax(1) == ref.predictions).mean()
            assert agree >= 0.95, (name, agree)


def test_example_script(tmp_path, trained_digits, digits, capsys):
    """examples/nir_consumers.py on an exported graph and the inputs file hwsim replays."""
    import importlib.util
    from pathlib import Path
    from export.graph import save_graph
    from records.inputs import InputSet, save_inputs
    graph = trained_digits[0][0]
    save_graph(graph, tmp_path / "coregraph.npz")
    export_nir(graph, tmp_path / "model.nir")
    labels = digits.test_y[:20].numpy().astype(np.int64)
    save_inputs(tmp_path / "inputs.npz",
                InputSet(digits.test_x[:20].numpy(), labels, seed=5, timesteps=graph.timesteps))
    spec = importlib.util.spec_from_file_location(
        "nir_consumers_example", Path(__file__).resolve().parents[1] / "examples" / "nir_consumers.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main([str(tmp_path / "model.nir"), str(tmp_path / "coregraph.npz"),
                         str(tmp_path / "inputs.npz")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("20 images")
    assert [line.split("outputs equal the core's:")[1].split()[0] for line in lines[1:]] == ["True", "True", "False"]
