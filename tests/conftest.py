"""Test-session settings."""
import os
from pathlib import Path

# Spinning OpenMP threads stall torch when another process holds a core (2-core machines);
# passive waiting costs nothing measurable. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

# Without a GPU, Triton kernels (the fused LIF backend) run in Triton's interpreter on CPU
# tensors; it must be on before trainer.lif_fused is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from export.quantize import quantize_checkpoint  # noqa: E402
from trainer.checkpoint import Checkpoint, SNNParams, load_checkpoint, save_checkpoint  # noqa: E402
from trainer.convert import balance_thresholds  # noqa: E402
from trainer.data import batches, load_dataset  # noqa: E402
from trainer.models import ANN, build_config  # noqa: E402
from trainer.recipe import OptimConfig, Runtime, SNNTrainConfig  # noqa: E402
from trainer.train import train_snn  # noqa: E402


@pytest.fixture
def conv_input_layouts():
    """``record(run)``: whether each conv's input was channels-last, call by call, while
    ``run()`` runs (any conv, whoever built it)."""
    def record(run) -> list[bool]:
        seen = []

        def hook(module, args):
            if isinstance(module, torch.nn.Conv2d):
                seen.append(args[0].is_contiguous(memory_format=torch.channels_last))

        handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        try:
            run()
        finally:
            handle.remove()
        return seen
    return record


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits", train_subset=300, test_subset=60)


def _convert_random(digits, arch_name: str, folder: Path) -> Path:
    """A converted checkpoint made by the trainer's own functions (random weights, balanced thresholds)."""
    torch.manual_seed(0)
    arch = build_config(arch_name, digits.input_shape, digits.num_classes)
    ann = ANN(arch)
    calib = lambda: (x for x, _ in batches(digits, "train", 64, shuffle=False))  # noqa: E731
    thresholds = balance_thresholds(ann, calib, 6, progress=False)
    data = {"dataset": "digits", "data_root": None, "normalisation": digits.normalisation.to_dict(),
            "class_names": digits.class_names, "input_shape": list(digits.input_shape)}
    ckpt = Checkpoint("converted", arch, ann.state_dict(), data, SNNParams(thresholds, 1.0, 6))
    return save_checkpoint(ckpt, folder / "converted.pt")


def _fine_tune(converted: Path, digits) -> Path:
    """One STDB epoch on ``converted``, saved beside it as stdb.pt."""
    out = converted.with_name("stdb.pt")
    train_snn(digits, load_checkpoint(converted), "stdb", 6,
              SNNTrainConfig(OptimConfig(epochs=1, lr=1e-3, optimizer="adam")), out, Runtime(progress=False))
    return out


@pytest.fixture(scope="session")
def converted(digits, tmp_path_factory) -> Path:
    return _convert_random(digits, "vgg_tiny", tmp_path_factory.mktemp("ck"))


@pytest.fixture(scope="session")
def stdb(converted, digits) -> Path:
    return _fine_tune(converted, digits)


@pytest.fixture(scope="session")
def trained_digits(converted, stdb, digits):
    """(graph, input spikes of two test images) of both checkpoints, quantized by the exporter."""
    out = []
    for path in (converted, stdb):
        graph, _ = quantize_checkpoint(load_checkpoint(path))
        out.append((graph, graph.input.encode(digits.test_x[:2].numpy(), graph.timesteps, seed=3)))
    return out


@pytest.fixture(scope="session")
def converted_residual(digits, tmp_path_factory) -> Path:
    return _convert_random(digits, "resnet_tiny", tmp_path_factory.mktemp("res"))


@pytest.fixture(scope="session")
def trained_residual(converted_residual, digits):
    """(graph, input spikes of six test images over 12 steps, where every block fires) of a
    converted resnet_tiny (balanced thresholds on its pre-processing convs, Section 4.2) and of
    it after one STDB epoch, quantized."""
    stdb = _fine_tune(converted_residual, digits)
    out = []
    for path in (converted_residual, stdb):
        graph, _ = quantize_checkpoint(load_checkpoint(path))
        out.append((graph, graph.input.encode(digits.test_x[:6].numpy(), 12, seed=3)))
    return out
