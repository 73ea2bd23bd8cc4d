"""A user's own PyTorch networks (examples/own_network.py: an nn.Sequential VGG with batch
norms and a ResNet class whose forward adds its shortcuts, none of the project's model
code), trained briefly with a plain loop, imported with ``python -m trainer import``:
the imported ANN computes the module's logits, conversion keeps its accuracy, every
fixed-point backend agrees bit for bit, and what the chain cannot take is one line, exit 2."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from export import fixedpoint as fx
from export.quantize import quantize_checkpoint
from hwsim.backends import BACKENDS, run_graph
from test_conformance import assert_same
from trainer.__main__ import main as trainer_main
from trainer.checkpoint import load_checkpoint
from trainer.data import batches
from trainer.snn import SNN
from trainer.evaluate import evaluate_snn
from trainer.torch_import import ImportRefused, import_module

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_network.py"
HAS_LAVA = importlib.util.find_spec("lava") is not None
DATA = ["--dataset", "digits", "--train-subset", "300", "--test-subset", "60", "--quiet"]


def _example():
    spec = importlib.util.spec_from_file_location("own_network", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def imported(digits, tmp_path_factory):
    """name -> (trained module, imported ANN checkpoint, converted checkpoint) for both example networks."""
    own, folder, out = _example(), tmp_path_factory.mktemp("own"), {}
    x = digits.normalisation.apply(digits.train_x)
    torch.manual_seed(0)
    for name, build in (("vgg", own.vgg), ("ResNet", own.ResNet)):
        module = own.train(build(), x, digits.train_y, epochs=12)
        torch.save(module.state_dict(), folder / f"{name}.pt")
        ann, converted = folder / f"{name}-ann.pt", folder / f"{name}-converted.pt"
        assert trainer_main(["import", f"{EXAMPLE}:{name}", "--weights", str(folder / f"{name}.pt"), *DATA,
                             "--out", str(ann)]) == 0
        assert trainer_main(["convert", str(ann), "--timesteps", "16", "--out", str(converted), "--quiet"]) == 0
        out[name] = module, load_checkpoint(ann), load_checkpoint(converted)
    return out


@pytest.mark.parametrize("name", ["vgg", "ResNet"])
def test_imported_ann_computes_the_modules_logits(name, imported, digits):
    module, ann_ckpt, _ = imported[name]
    x = next(batches(digits, "test", 60, shuffle=False))[0]
    with torch.no_grad():
        torch.testing.assert_close(ann_ckpt.model().eval()(x), module.eval()(x), rtol=1e-5, atol=1e-5)
    kinds = [layer.kind for layer in ann_ckpt.arch.layers]
    assert ("resblock" in kinds) == (name == "ResNet")
    assert ann_ckpt.metrics["test_acc"] == ann_ckpt.metrics["module_test_acc"] > 50


@pytest.mark.parametrize("name", ["vgg", "ResNet"])
def test_converted_import_keeps_its_accuracy(name, imported, digits):
    """The biases (folded batch norms) move to the thresholds' units (``trainer.convert``):
    without that the VGG's conversion sat at chance (9.7 % at T = 16 on 360 images, its ANN 89 %)."""
    _, ann_ckpt, converted = imported[name]
    assert any(key.endswith("bias") for key in converted.state_dict)
    snn = evaluate_snn(SNN.of_checkpoint(converted), digits, 16)["accuracy"]
    assert snn >= ann_ckpt.metrics["test_acc"] - 10.0, (snn, ann_ckpt.metrics)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_every_backend_runs_an_imported_network_bit_for_bit(backend, imported, digits):
    if backend == "lava" and not HAS_LAVA:
        pytest.skip("lava-nc is not installed")
    for name in ("vgg", "ResNet"):
        graph, _ = quantize_checkpoint(imported[name][2])
        assert any(core.bias is not None for core in graph.cores)
        spikes = graph.input.encode(digits.test_x[:4].numpy(), 12, seed=3)
        ref = fx.run_reference(graph, spikes)
        assert all(s.sum() > 0 for s in ref.spikes), name
        assert_same(run_graph(backend, graph, spikes), ref, graph)


REFUSED = {
    "maxpool": ("nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), "
                "nn.Linear(64, 10))", "module '2' (MaxPool2d): not supported: use AvgPool2d"),
    "gelu": ("nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(256, 10))",
             "module '1' (GELU): not supported: use ReLU"),
    "pool_before_relu": ("nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(), "
                         "nn.Linear(64, 10))", "needs a ReLU after it"),
    "relu_after_classifier": ("nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), "
                              "nn.Linear(256, 10), nn.ReLU())", "must end in a Linear classifier"),
    "wrong_classes": ("nn.Sequential(nn.Flatten(), nn.Linear(64, 7))", "7 outputs; the data set has 10 classes"),
    "wrong_input": ("nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))",
                    "does not run on inputs of shape (1, 8, 8)"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unsupported_modules_get_one_line_and_exit_2(case, tmp_path, capsys):
    body, message = REFUSED[case]
    (tmp_path / "net.py").write_text(f"from torch import nn\n\ndef build():\n    return {body}\n")
    out = tmp_path / "ann.pt"
    assert trainer_main(["import", f"{tmp_path / 'net.py'}:build", *DATA, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_a_user_file_that_fails_gets_one_line(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("def build():\n    raise RuntimeError('my bug')\n")
    (tmp_path / "w.pt").write_bytes(b"not a state dict")
    for args, message in (([f"{tmp_path / 'broken.py'}:build"], "building the module failed (RuntimeError: my bug)"),
                          ([f"{tmp_path / 'broken.py'}:missing"], "defines no 'missing'"),
                          ([f"{tmp_path / 'absent.py'}:build"], "not a Python file"),
                          ([f"{EXAMPLE}:vgg", "--weights", str(tmp_path / "w.pt")], "not a readable torch state_dict"),
                          ([f"{EXAMPLE}:ResNet", "--weights", str(tmp_path / "vgg.pt")], "does not fit")):
        if "vgg.pt" in args[-1]:
            torch.save(_example().vgg().state_dict(), tmp_path / "vgg.pt")
        assert trainer_main(["import", *args, *DATA, "--out", str(tmp_path / "ann.pt")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_residual_shapes_the_core_cannot_take_are_refused():
    class Pooled(nn.Module):                     # a shortcut through an average pool: no 1x1 conv to carry it
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 1, 1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            y = torch.relu(self.b(torch.relu(self.a(x))) + nn.functional.avg_pool2d(x, 2))
            return self.fc(y.flatten(1))

    with pytest.raises(ImportRefused, match="shortcut must be the identity or a 1x1 conv"):
        import_module(Pooled(), (1, 8, 8))
    with pytest.raises(ImportRefused, match="cannot trace"):
        class Branchy(nn.Module):
            def forward(self, x):
                return x if x.sum() > 0 else -x
        import_module(Branchy(), (1, 8, 8))
    sys.modules.pop("own_network", None)
