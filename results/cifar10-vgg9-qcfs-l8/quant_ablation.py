"""Where the float SNN -> fixed point loss comes from: the float SNN of a checkpoint on the
images of an hwsim inputs file, with the weights of all layers, of the first only or of all
but the first on the export's grid (trainer.weight_grid); "float" means the float weights even
for a checkpoint fine-tuned on a grid (its recorded grid is set aside).
``python results/cifar10-vgg9-qcfs-l8/quant_ablation.py CKPT INPUTS.npz T``"""
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from records.inputs import load_inputs  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.snn import SNN  # noqa: E402
from trainer.weight_grid import on_grid  # noqa: E402

path, inputs, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
inp = load_inputs(inputs)


def accuracy(bits: int | None = None, which=lambda name: True) -> float:
    ck = load_checkpoint(path)
    ck.snn = dataclasses.replace(ck.snn, weight_bits=None)
    if bits is not None:
        for name, w in ck.state_dict.items():
            if name.endswith(".weight") and w.ndim in (2, 4) and which(name):
                ck.state_dict[name] = on_grid(w, bits)
    snn = SNN.of_checkpoint(ck).eval()
    x = ck.normalisation.apply(torch.from_numpy(inp.images))
    with torch.no_grad():
        pred = torch.cat([snn(x[i:i + 100], T).argmax(1) for i in range(0, len(x), 100)])
    return float((pred.numpy() == inp.labels).mean() * 100)


first = "layers.0.weight"
print(f"{path} on {len(inp.labels)} images of {inputs}, T = {T}")
print(f"float SNN: {accuracy():.2f} %")
for bits in (8, 7, 6):
    print(f"weights on the {bits}-bit grid: {accuracy(bits):.2f} %")
print(f"weights on the 8-bit grid, the first layer only: {accuracy(8, lambda n: n == first):.2f} %")
print(f"weights on the 8-bit grid, all but the first layer: {accuracy(8, lambda n: n != first):.2f} %")
