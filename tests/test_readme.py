"""The README's hand-written ONNX state loop runs as printed and predicts what hwsim does."""
import re
from pathlib import Path

import numpy as np
import pytest

from export.onnx_export import export_onnx
from fixedpoint_cases import CASES
from hwsim.simulate import simulate

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("case", ["conv_nonsymmetric_nonsquare_leak", "initial_potentials"])
def test_readme_onnx_loop_matches_hwsim(tmp_path, case):
    """Poisson input from rest, and (initial_potentials) the integrate rule with charged neurons."""
    code = re.search(r"## Driving the ONNX step model by hand.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    graph, _ = CASES[case]()
    path = export_onnx(graph, tmp_path / "model.onnx")
    images = np.random.default_rng(0).integers(0, 256, (5, *graph.input.shape), dtype=np.uint8)
    code = code.replace("runs/digits-vgg_tiny/export/stdb/model.onnx", str(path))
    assert "images = ..." in code
    scope = {"images_given": images}
    exec(code.replace("images = ...", "images = images_given"), scope)   # noqa: S102 - the README's own code
    sim = simulate(graph, (images, 0))
    np.testing.assert_array_equal(scope["out"]["output"], sim.output)
    np.testing.assert_array_equal(scope["prediction"], sim.predictions)
