"""Every fixed-point backend (``hwsim.backends``) against the reference, on the same cases
(``tests/fixedpoint_cases.py``) and on the trained digits networks: the spikes of every
spiking core at every step and the output voltage, bit for bit."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from export import fixedpoint as fx
from export.graph import GraphError
from fixedpoint_cases import CASES
from hwsim.backends import BACKENDS, run_graph

OTHERS = [b for b in BACKENDS if b != "reference"]
HAS_LAVA = importlib.util.find_spec("lava") is not None
# (backend, case) -> what the backend says instead of a wrong answer
REFUSED = {("lava", "wide_conv_beyond_float32"): "float32 convolution is no longer exact"}


def assert_same(got: fx.CoreRun, ref: fx.CoreRun, graph) -> None:
    assert len(got.spikes) == len(ref.spikes) == len(graph.spiking_cores)
    for core, a, b in zip(graph.spiking_cores, got.spikes, ref.spikes):
        assert a.dtype == np.uint8 and a.shape == b.shape, core.name
        bad = np.argwhere(a != b)
        assert bad.size == 0, f"core {core.name}: spikes differ first at (t, n, ...) = {bad[0]}"
    assert got.output.dtype == np.int64 and got.output.shape == ref.output.shape
    np.testing.assert_array_equal(got.output, ref.output)
    if got.max_abs_input is not None:
        assert got.max_abs_input == ref.max_abs_input


@pytest.fixture(scope="module")
def references():
    """Each case's graph, spikes and reference run, made once."""
    out = {}
    for name, make in CASES.items():
        graph, spikes = make()
        out[name] = graph, spikes, fx.run_reference(graph, spikes)
    return out


def test_cases_exercise_what_they_claim(references):
    for name, (graph, _, ref) in references.items():
        assert np.any(ref.output != 0), f"{name}: the output never moves"
        for core, s in zip(graph.spiking_cores, ref.spikes):
            assert s.sum() > 0, f"{name}: core {core.name} never spikes, the case would prove little"
    assert (references["current_wrap_and_saturation"][2].output == fx.V_MAX).any()
    out = references["leak_signed_input_24bit_overflow"][2].output
    assert np.all(out[:, :2] < 0) and np.all(out[:, 2:] > 0)          # wrapped both ways
    assert out.max() == fx.V_MAX and out.min() == -fx.V_MAX             # and saturated
    _, _, ref = references["conv_sum_wraps_24bit"]
    assert ref.max_abs_input[0] == 2 ** 24 - 127 * 4200 * 16
    residual = ("residual_identity_and_projection", "residual_after_pool_dense")
    shortcuts = [sc for name in residual for c in references[name][0].cores for sc in c.shortcuts]
    assert {sc.op for sc in shortcuts} == {"conv", "identity"}
    assert any(sc.source == "input" for sc in shortcuts) and any(sc.weight_exp < 0 for sc in shortcuts)
    for name in residual:
        graph, spikes, ref = references[name]
        for core in graph.cores:                      # each shortcut changes what its core does
            for k in range(len(core.shortcuts)):
                kept = core.shortcuts.pop(k)
                alone = fx.run_reference(graph, spikes)
                core.shortcuts.insert(k, kept)
                assert not np.array_equal(alone.output, ref.output), f"{name}: {core.name}'s shortcut is idle"
    graph, spikes, ref = references["neuron_biases"]
    assert graph.cores[1].bias.min() << graph.cores[1].bias_exp == -2 ** 19     # the most negative bias
    for core in graph.cores:                          # each bias changes what its core does
        kept, core.bias = core.bias, None
        alone = fx.run_reference(graph, spikes)
        core.bias = kept
        assert not np.array_equal(alone.output, ref.output), f"neuron_biases: {core.name}'s bias is idle"
    assert ref.spikes[0][:, :, 2].all()               # bias 4095 << 2 > vth << 6: fires at every step
    graph, spikes, ref = references["initial_potentials"]
    assert graph.input.rule == "integrate"
    for k, core in enumerate(graph.spiking_cores):    # each initial potential changes its core's spikes
        kept, core.v_init = core.v_init, 0
        alone = fx.run_reference(graph, spikes)
        core.v_init = kept
        assert not np.array_equal(alone.spikes[k], ref.spikes[k]), f"initial_potentials: {core.name}'s v_init is idle"


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("case", list(CASES))
def test_backend_matches_reference(backend, case, references):
    if backend == "lava" and not HAS_LAVA:
        pytest.skip("lava-nc is not installed")
    graph, spikes, ref = references[case]
    if (backend, case) in REFUSED:
        with pytest.raises(GraphError, match=REFUSED[backend, case]):
            run_graph(backend, graph, spikes)
        return
    assert_same(run_graph(backend, graph, spikes), ref, graph)


@pytest.mark.parametrize("backend", OTHERS)
def test_backend_matches_reference_on_trained_digits(backend, trained_digits):
    """The converted and fine-tuned digits networks, quantized by the exporter."""
    if backend == "lava" and not HAS_LAVA:
        pytest.skip("lava-nc is not installed")
    for graph, spikes in trained_digits:
        ref = fx.run_reference(graph, spikes)
        assert all(s.sum() > 0 for s in ref.spikes)
        assert_same(run_graph(backend, graph, spikes), ref, graph)


@pytest.mark.parametrize("backend", OTHERS)
def test_backend_matches_reference_on_a_trained_residual_net(backend, trained_residual):
    """resnet_tiny, converted and fine-tuned: 1x1 projections (one with the pool folded in)
    summed with the blocks' second convs."""
    if backend == "lava" and not HAS_LAVA:
        pytest.skip("lava-nc is not installed")
    for graph, spikes in trained_residual:
        assert sum(len(c.shortcuts) for c in graph.cores) == 2
        ref = fx.run_reference(graph, spikes)
        assert all(s.sum() > 0 for s in ref.spikes)
        assert_same(run_graph(backend, graph, spikes), ref, graph)
