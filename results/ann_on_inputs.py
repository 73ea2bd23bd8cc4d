"""An ANN checkpoint's accuracy on the images of an hwsim inputs file (the same images the
SNNs were simulated on): ``python results/ann_on_inputs.py ANN.pt INPUTS.npz``."""
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
if "act_thresholds" in ck.state_dict:
    print("act thresholds", [round(float(v), 3) for v in ck.state_dict["act_thresholds"]])
