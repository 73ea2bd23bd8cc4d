"""Lava side of the exporter: the 3.11 compat shim, and Lava fixed_pt == export.fixedpoint bit for bit.

Every Lava run starts a handful of OS processes (~0.3 s); graphs, T and N are small.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("lava") is None:
    pytest.skip("lava-nc is not installed (install.sh installs lava-nc 0.10.0)", allow_module_level=True)

from export import fixedpoint as fx  # noqa: E402
from export.graph import Core, CoreGraph, GraphError  # noqa: E402
from records.encoding import InputEncoding  # noqa: E402
from export.lava.compat import import_lava  # noqa: E402

import_lava()
from export.lava.builder import build_lava_network, lava_conv_weight, run_lava  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_compat_shim_imports_lava_processes_in_a_fresh_interpreter():
    script = ("from export.lava.compat import import_lava; import_lava(); import_lava(); import numpy as np\n"
              "from lava.proc.dense.process import Dense; from lava.proc.lif.process import LIF\n"
              "from lava.proc.conv.process import Conv\n"
              "Dense(weights=np.ones((2, 3))); LIF(shape=(2,))\n"
              "Conv(weight=np.ones((1, 3, 3, 1)), input_shape=(4, 4, 1))\n"
              "import dataclasses; from lava.magma.compiler.var_model import ByteEncoder\n"
              "assert dataclasses.dataclass.__module__ == 'dataclasses' and hash(ByteEncoder()) is not None\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def dense_weights(rng, n_out, n_in, low=-128, high=128):
    """Random weights on Lava's 8-bit mixed-sign grid (even values in [-256, 254])."""
    return rng.integers(low, high, (n_out, n_in)) * 2


def encoded_input(shape, steps, samples, seed=0):
    """Signed spike trains (T, N, C, H, W) from InputEncoding, with mean 0.5 so inputs take both signs."""
    enc = InputEncoding.of(shape, [0.5] * shape[0], std=[0.5] * shape[0])
    images = np.random.default_rng(seed).integers(0, 256, (samples, *shape), dtype=np.uint8)
    return enc, enc.encode(images, steps, seed=seed)


def graph_of(enc, cores):
    classes = int(np.prod(cores[-1].output_shape))
    return CoreGraph(input=enc, cores=cores, timesteps=8, class_names=[str(i) for i in range(classes)])


def assert_lava_matches_reference(graph, spikes_in):
    ref = fx.run_reference(graph, spikes_in)
    got = run_lava(graph, spikes_in, progress=False)
    assert len(got["spikes"]) == len(ref["spikes"]) == len(graph.spiking_cores)
    for core, lava_spikes, ref_spikes in zip(graph.spiking_cores, got["spikes"], ref["spikes"]):
        assert ref_spikes.sum() > 0, f"core {core.name} never spikes: the test would prove little"
        assert lava_spikes.shape == ref_spikes.shape
        mismatch = np.argwhere(lava_spikes != ref_spikes)
        assert mismatch.size == 0, f"core {core.name}: spikes differ first at (t, n, ...) {mismatch[:1]}"
    assert got["output"].dtype == np.int64
    np.testing.assert_array_equal(got["output"], ref["output"].reshape(len(ref["output"]), -1))
    assert np.any(got["output"] != 0)
    assert got["seconds_per_image_step"] > 0
    return ref


def test_dense_chain_bit_exact():
    rng = np.random.default_rng(1)
    enc, spikes = encoded_input((1, 4, 5), steps=10, samples=2)
    cores = [Core("fc1", "dense", dense_weights(rng, 16, 20), (20,), (16,), vth=150),
             Core("out", "dense", dense_weights(rng, 10, 16), (16,), (10,), vth=1, spiking=False)]
    assert_lava_matches_reference(graph_of(enc, cores), spikes)


def test_conv_layout_flip_and_folded_pool_bit_exact():
    """Non-symmetric kernels, non-square maps and unequal padding catch a wrong transpose,
    a missing flip or swapped x/y geometry."""
    rng = np.random.default_rng(2)
    enc, spikes = encoded_input((2, 5, 7), steps=10, samples=1)
    conv1 = Core("conv1", "conv", rng.integers(-128, 128, (3, 2, 3, 3)), (2, 5, 7), (3, 5, 9),
                 vth=120, padding=(1, 2))
    # a 2x2 average pool folded into the next 3x3 conv: 6x6 kernel, stride 2, padding 2
    conv2 = Core("conv2", "conv", rng.integers(-40, 60, (4, 3, 6, 6)), (3, 5, 9), (4, 2, 4),
                 vth=100, stride=(2, 2), padding=(2, 2))
    out = Core("out", "dense", dense_weights(rng, 5, 32), (4, 2, 4), (5,), vth=1, spiking=False)
    graph = graph_of(enc, [conv1, conv2, out])
    kernel = graph.cores[0].weights
    assert not np.array_equal(kernel, kernel[..., ::-1, :]) and not np.array_equal(kernel, kernel[..., ::-1])
    assert_lava_matches_reference(graph, spikes)


def test_leak_signed_input_and_24_bit_overflow_bit_exact():
    """dv > 0 and signed input; weight_exp = 7 layers that saturate v (so vth = VTH_MAX is
    crossed) and wrap the output's 24-bit current both ways (rows of +254 and of -256)."""
    rng = np.random.default_rng(3)
    enc, spikes = encoded_input((1, 3, 4), steps=8, samples=2)
    hidden = Core("leaky", "dense", dense_weights(rng, 12, 12), (12,), (12,), vth=60, dv=700)
    loud_weights = np.zeros((6, 12), dtype=np.int64)
    loud_weights[:, :4] = 254           # at most 4 inputs: 4 * 254 << 13 stays below 2**23
    loud = Core("loud", "dense", loud_weights, (12,), (6,), vth=fx.VTH_MAX, dv=100, weight_exp=7)
    out_weights = np.repeat([[254], [254], [-256], [-256]], 6, axis=1)
    out = Core("out", "dense", out_weights, (6,), (4,), vth=1, spiking=False, weight_exp=7)
    graph = graph_of(enc, [hidden, loud, out])
    ref = assert_lava_matches_reference(graph, spikes)
    assert np.all(ref["output"][:, :2] < 0) and np.all(ref["output"][:, 2:] > 0)   # wrapped both ways
    assert ref["output"].max() == fx.V_MAX and ref["output"].min() == -fx.V_MAX     # and saturated


def test_all_negative_dense_keeps_minus_256():
    """Lava picks INHIBITORY mode for a matrix with no positive weight and clips -256 to -255
    unless the builder says MIXED; the output voltage shows the difference."""
    enc, spikes = encoded_input((1, 2, 3), steps=4, samples=1)
    weights = np.zeros((2, 6), dtype=np.int64)
    weights[0] = -256
    graph = graph_of(enc, [Core("out", "dense", weights, (6,), (2,), vth=1, spiking=False)])
    assert np.any(spikes == -1)
    assert_lava_matches_reference(graph, spikes)


def test_conv_sum_wraps_in_24_bit_like_lava():
    """Lava's Conv 'signed_clamp' wraps modulo 2**24; a 67,200-input sum of 127s crosses 2**23."""
    channels = 4200
    enc = InputEncoding.of((channels, 4, 4), [0.0] * channels, [1.0] * channels)
    weights = np.full((1, channels, 4, 4), 127)
    graph = graph_of(enc, [Core("out", "conv", weights, (channels, 4, 4), (1, 1, 1), vth=1, spiking=False)])
    spikes = np.ones((2, 1, channels, 4, 4), dtype=np.int8)
    assert fx.synaptic_input(graph.cores[0], spikes[0]).item() == 127 * channels * 16 - 2 ** 24
    got = run_lava(graph, spikes, record_spikes=False, progress=False)
    np.testing.assert_array_equal(got["output"], fx.run_reference(graph, spikes)["output"].reshape(1, 1))
    assert got["spikes"] == []


def test_conv_weight_layout_matches_lava_convolution():
    """lava_conv_weight undoes exactly Lava's flip and transpose (checked without running Lava)."""
    from lava.proc.conv import utils

    rng = np.random.default_rng(4)
    x = rng.integers(-1, 2, (2, 5, 7))                  # (C, H, W)
    w = rng.integers(-5, 6, (3, 2, 3, 2))               # (C_out, C_in, kh, kw), non-square kernel
    ours = fx.conv2d_int(x[None], w, stride=(2, 1), padding=(1, 0))[0]
    lava = utils.conv(x.transpose(2, 1, 0).astype(np.int32), lava_conv_weight(w).astype(np.int32),
                      (2, 3), (1, 2), (0, 1), (1, 1), 1)
    np.testing.assert_array_equal(lava.transpose(2, 1, 0), ours)


def test_input_spikes_of_the_wrong_shape_are_refused():
    rng = np.random.default_rng(5)
    enc, spikes = encoded_input((1, 2, 2), steps=2, samples=1)
    graph = graph_of(enc, [Core("out", "dense", dense_weights(rng, 2, 4), (4,), (2,), vth=1, spiking=False)])
    with pytest.raises(ValueError, match="input spikes"):
        run_lava(graph, spikes[:, :, :, :1], progress=False)


def test_unmappable_cores_are_graph_errors_naming_the_core():
    enc = InputEncoding.of((1, 1, 128), [0.0], [1.0])
    wide = Core("wide", "conv", np.ones((1, 1, 1, 128), dtype=np.int64), (1, 1, 128), (1, 1, 1),
                vth=1, spiking=False)
    with pytest.raises(GraphError, match="core wide: .*int8 geometry"):
        build_lava_network(graph_of(enc, [wide]))
    enc = InputEncoding.of((1, 1, 67000), [0.0], [1.0])
    loud = Core("loud", "dense", np.full((1, 67000), 254), (67000,), (1,), vth=1, spiking=False, weight_exp=7)
    with pytest.raises(GraphError, match="core loud: .*int32"):
        build_lava_network(graph_of(enc, [loud]))
