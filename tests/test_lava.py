"""Lava side of the exporter: the 3.11 compat shim, the kernel layout, and the builder's
refusals. That Lava fixed_pt computes what export.fixedpoint specifies, bit for bit, is
tests/test_conformance.py's job (backend "lava")."""
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
from export.lava.compat import import_lava  # noqa: E402
from records.encoding import InputEncoding  # noqa: E402

import_lava()
from export.lava.builder import build_lava_network, lava_conv_weight  # noqa: E402
from export.lava.runner import LavaRunner, run_lava  # noqa: E402

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


def graph_of(cores, shape):
    classes = int(np.prod(cores[-1].output_shape))
    return CoreGraph(input=InputEncoding.of(shape, [0.0] * shape[0], [1.0] * shape[0]), cores=cores, timesteps=8,
                     class_names=[str(i) for i in range(classes)])


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
    graph = graph_of([Core("out", "dense", np.full((2, 4), 2), (4,), (2,), vth=1, spiking=False)], (1, 2, 2))
    spikes = np.ones((2, 1, 1, 2, 2), dtype=np.int8)
    with pytest.raises(ValueError, match="input spikes"):
        run_lava(graph, spikes[:, :, :, :1], progress=False)


def test_unmappable_cores_are_graph_errors_naming_the_core():
    wide = Core("wide", "conv", np.ones((1, 1, 1, 128), dtype=np.int64), (1, 1, 128), (1, 1, 1),
                vth=1, spiking=False)
    with pytest.raises(GraphError, match="core wide: .*int8 geometry"):
        build_lava_network(graph_of([wide], (1, 1, 128)))
    loud = Core("loud", "dense", np.full((1, 67000), 254), (67000,), (1,), vth=1, spiking=False, weight_exp=7)
    with pytest.raises(GraphError, match="core loud: .*int32"):
        build_lava_network(graph_of([loud], (1, 1, 67000)))


def test_runner_resets_every_state_between_samples():
    """One network, samples A, B, A: each equals the reference run of that sample alone, so
    nothing (voltages, last spikes, the synapses' delayed outputs) leaks from one to the next."""
    sys.path.insert(0, str(Path(__file__).parent))
    from fixedpoint_cases import CASES
    graph, spikes = CASES["conv_nonsymmetric_nonsquare_leak"]()
    a, b = spikes[:, :1], spikes[:, 1:2]
    with LavaRunner(graph, timesteps=len(spikes)) as runner:
        runs = [runner.run(x[:, 0]) for x in (a, b, a)]
    for (got_spikes, got_v), x in zip(runs, (a, b, a)):
        ref = fx.run_reference(graph, x)
        for got, want in zip(got_spikes, ref.spikes):
            np.testing.assert_array_equal(got, want[:, 0])
        np.testing.assert_array_equal(got_v, ref.output[0])
    assert not np.array_equal(runs[0][1], runs[1][1])      # the samples differ: the check can fail


def test_take_away_example_predicts_what_hwsim_predicts(trained_digits, digits, tmp_path):
    """examples/lava_take_away.py (Lava's own calls on build_lava_network's processes) on an
    exported graph and an inputs file: its predictions are hwsim's on the same images."""
    from export.graph import save_graph
    from hwsim.simulate import simulate
    from records.inputs import InputSet, save_inputs
    graph = trained_digits[1][0]
    images, labels = digits.test_x[:4].numpy(), digits.test_y[:4].numpy().astype(np.int64)
    save_graph(graph, tmp_path / "coregraph.npz")
    save_inputs(tmp_path / "inputs.npz", InputSet(images, labels, seed=5, timesteps=graph.timesteps))
    done = subprocess.run([sys.executable, "examples/lava_take_away.py", str(tmp_path / "coregraph.npz"),
                           str(tmp_path / "inputs.npz"), "--samples", "4"],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.split("predictions:")[1].split()
    want = simulate(graph, (images, 5), timesteps=graph.timesteps).output.argmax(1)
    assert printed == [graph.class_names[k] for k in want]
