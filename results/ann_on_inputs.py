"""An ANN checkpoint's accuracy on the images of an hwsim inputs file (the same images the
SNNs were simulated on), and on their first N for each N given (the trainer's test images
of an evaluation on N samples are those, in the same order):
``python results/ann_on_inputs.py ANN.pt INPUTS.npz [N ...]``."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from records.inputs import load_inputs  # noqa: E402
from trainer.checkpoint import load_checkpoint  # noqa: E402

ck = load_checkpoint(sys.argv[1])
inp = load_inputs(sys.argv[2])
ann = ck.model().eval()
with torch.no_grad():
    x = ck.normalisation.apply(torch.from_numpy(inp.images))
    pred = torch.cat([ann(x[i:i + 250]).argmax(1) for i in range(0, len(x), 250)])
acc = float((pred.numpy() == inp.labels).mean() * 100)
print(f"ANN on the same {len(x)} images: {acc:.2f} %  (test set: {ck.metrics.get('test_acc')} %, "
      f"epochs {ck.metrics.get('epochs')})")
for n in map(int, sys.argv[3:]):
    print(f"ANN on the first {n} images: {float((pred[:n].numpy() == inp.labels[:n]).mean() * 100):.2f} %")
if "act_thresholds" in ck.state_dict:
    print("act thresholds", [round(float(v), 3) for v in ck.state_dict["act_thresholds"]])
