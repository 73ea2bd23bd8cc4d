"""What the scripts that score an ANN on hwsim's images share: the checkpoint and the inputs
file loaded, the images normalised as the trainer does, and the predictions in batches."""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from records.inputs import load_inputs  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402


def load(ann_path: str, inputs_path: str):
    """(checkpoint, inputs, the inputs' images normalised for the ANN)."""
    ck = load_checkpoint(ann_path)
    inp = load_inputs(inputs_path)
    return ck, inp, ck.normalisation.apply(torch.from_numpy(inp.images))


def predictions(ann: torch.nn.Module, x: torch.Tensor, batch: int = 250) -> np.ndarray:
    """The class each image of ``x`` is given by ``ann`` in eval mode."""
    ann.eval()
    with torch.no_grad():
        return torch.cat([ann(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)]).numpy()


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float((pred == labels).mean() * 100)
