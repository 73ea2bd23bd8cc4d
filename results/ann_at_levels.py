"""A QCFS ANN's accuracy with its activations (and input) quantized to other level counts L',
on the images of an hwsim inputs file: ``python results/ann_at_levels.py ANN.pt INPUTS.npz L' ...``.

An IF neuron that starts at half its threshold and receives a constant current for T steps
fires floor(x * T / lambda + 1/2) times (clipped to 0..T): its rate times lambda is QCFS's
activation with T levels (trainer.qcfs). So the ANN evaluated with L' = T is the SNN at T
without the error of uneven spike arrival: the accuracy a conversion at T can reach before
fine-tuning moves the weights, and a measure of how much of an SNN's loss at T is the
quantization to T + 1 rates itself."""
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from records.inputs import load_inputs  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.models import ANN  # noqa: E402

ck = load_checkpoint(sys.argv[1])
inp = load_inputs(sys.argv[2])
if ck.arch.quant_levels is None:
    sys.exit(f"{sys.argv[1]}: not a QCFS ANN (no quant_levels)")
x = ck.normalisation.apply(torch.from_numpy(inp.images))
for levels in [ck.arch.quant_levels] + [int(v) for v in sys.argv[3:]]:
    ann = ANN(dataclasses.replace(ck.arch, quant_levels=levels))
    ann.load_state_dict(ck.state_dict)
    ann.eval()
    with torch.no_grad():
        pred = torch.cat([ann(x[i:i + 250]).argmax(1) for i in range(0, len(x), 250)])
    acc = float((pred.numpy() == inp.labels).mean() * 100)
    own = " (its own L)" if levels == ck.arch.quant_levels else ""
    print(f"ANN with L = {levels}{own} on the same {len(x)} images: {acc:.2f} %")
