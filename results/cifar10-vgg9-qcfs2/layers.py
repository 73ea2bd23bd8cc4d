"""Layer by layer, a QCFS-converted SNN's rate x lambda against its ANN's activation on the
first 64 test images: ``python results/cifar10-vgg9-qcfs2/layers.py SNN.pt ANN.pt T[,T...]``
(``trainer diagnose`` compares balanced conversions only)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.checkpoint import load_checkpoint  # noqa: E402
from trainer.data import batches, load_dataset  # noqa: E402
from trainer.diagnose import RecordingSNN, ann_activations  # noqa: E402

snn_ckpt, ann_ckpt = load_checkpoint(sys.argv[1]), load_checkpoint(sys.argv[2])
x, y = next(batches(load_dataset(ann_ckpt.data["dataset"], test_subset=64), "test", 64, shuffle=False))
with torch.no_grad():
    ann = ann_ckpt.model().eval()
    print(f"ANN: {float((ann(x).argmax(1) == y).float().mean()) * 100:.1f} % on {len(y)} images")
    acts = ann_activations(ann, x)
    snn = RecordingSNN(snn_ckpt.model(), snn_ckpt.snn.thresholds, v_init=snn_ckpt.snn.v_init,
                       encoding=snn_ckpt.snn.encoding).eval()
    for t in (int(v) for v in sys.argv[3].split(",")):
        out = snn(x, t)
        print(f"T={t}: SNN {float((out.argmax(1) == y).float().mean()) * 100:.1f} %")
        for k, a in enumerate(acts):
            r = snn.counts[k] / t * snn_ckpt.snn.thresholds[k]
            print(f"  layer {k}: mean activation ANN {float(a.mean()):.4f} SNN {float(r.mean()):.4f}; non-zero ANN "
                  f"{float((a > 0).float().mean()):.3f} SNN {float((r > 0).float().mean()):.3f}; "
                  f"mean |SNN - ANN| / mean ANN {float((r - a).abs().mean() / a.mean()):.3f}")
