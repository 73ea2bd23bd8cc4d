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
