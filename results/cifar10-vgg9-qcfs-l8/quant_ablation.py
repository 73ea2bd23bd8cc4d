"""Where the float SNN -> fixed point loss comes from: the float SNN of a checkpoint on the
images of an hwsim inputs file, with its weights (and biases, thresholds) snapped to the
export's grids one part at a time.
``python results/cifar10-vgg9-qcfs-l8/quant_ablation.py CKPT INPUTS.npz T``"""
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from export.quantize import _mantissa_scale  # noqa: E402
from records.inputs import load_inputs  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.snn import SNN  # noqa: E402

torch.set_num_threads(2)
path, inputs, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
inp = load_inputs(inputs)


def accuracy(ck) -> float:
    snn = SNN.of_checkpoint(ck).eval()
    x = ck.normalisation.apply(torch.from_numpy(inp.images))
    with torch.no_grad():
        pred = torch.cat([snn(x[i:i + 100], T).argmax(1) for i in range(0, len(x), 100)])
    return float((pred.numpy() == inp.labels).mean() * 100)


def snapped(ck, bits: int, which: set) -> None:
    """Weights on the per-layer grid of `bits`-bit mantissas (the export's scale rule; pool folds
    divide a layer uniformly, so the grid relative to its own largest weight is the same)."""
    for name, w in ck.state_dict.items():
        if name.endswith(".weight") and w.ndim in (2, 4) and "weights" in which:
            s = _mantissa_scale(w.double().numpy(), bits)
            ck.state_dict[name] = (torch.round(w.double() * s) / s).to(w.dtype)


base = load_checkpoint(path)
print(f"{path} on {len(inp.labels)} images of {inputs}, T = {T}")
print(f"float SNN: {accuracy(base):.2f} %")
for bits in ():
    ck = load_checkpoint(path)
    snapped(ck, bits, {"weights"})
    print(f"weights on the {bits}-bit grid: {accuracy(ck):.2f} %")
first = sorted(n for n in base.state_dict if n.endswith(".weight"))[0]
for label, keep in (("conv0 only", lambda n: n == "layers.0.weight"), ("all but conv0", lambda n: n != "layers.0.weight")):
    ck = load_checkpoint(path)
    for name, w in list(ck.state_dict.items()):
        if name.endswith(".weight") and w.ndim in (2, 4) and keep(name):
            s = _mantissa_scale(w.double().numpy(), 8)
            ck.state_dict[name] = (torch.round(w.double() * s) / s).to(w.dtype)
    print(f"weights on the 8-bit grid, {label}: {accuracy(ck):.2f} %")
