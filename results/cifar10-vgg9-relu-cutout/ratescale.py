"""T = 100 accuracy of converted64_T100 (the 64-epoch ANN balanced on the 99.9th percentile) with uniform scaling
(the first threshold x alpha: every layer's rate x 1/alpha) on the first 500 test images. Run from a worktree whose
runs/ holds the run (2026-12-07, Intel Xeon with AMX, 2 cores, at fc2736a):
.venv/bin/python results/cifar10-vgg9-relu-cutout/ratescale.py 0.7 0.8 0.9"""
import json, sys, time
from trainer.checkpoint import load_checkpoint
from trainer.chain import evaluate
from trainer.recipe import Runtime
from trainer.data import load_dataset
ck = load_checkpoint("runs/cifar10-vgg9-relu-cutout/converted64_T100.pt")
un = ck.metrics["balance"]["unscaled"]
print("unscaled", un, "ck", ck.snn.thresholds, flush=True)
from trainer.__main__ import data_of
bundle = data_of(ck, None)
rt = Runtime(device="cpu", seed=0, progress=False)
for a in [float(v) for v in sys.argv[1:]]:
    th = [un[0] * a] + list(un[1:])
    t0 = time.time()
    r = evaluate(ck, bundle, 100, rt, 500, thresholds=th)
    print(json.dumps({"alpha": a, "accuracy": r["accuracy"], "s": round(time.time() - t0)}), flush=True)
