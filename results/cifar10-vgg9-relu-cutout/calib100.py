"""T = 100 accuracy of converted64_T100 with its biases calibrated at T = 100 (trainer.calibrate) on N training
images, under thresholds "mode:alpha" (uniform: the first threshold x alpha; compound: every one), on the first
500 test images. 2026-12-07, Intel Xeon with AMX, 2 cores, at fe75f48 (the third setting, compound:0.7, was
stopped to free the CPU for chain8.sh):
.venv/bin/python results/cifar10-vgg9-relu-cutout/calib100.py 256 uniform:1.0 uniform:0.7 compound:0.7"""
import dataclasses, itertools, json, operator, sys, time
import torch
from trainer.checkpoint import load_checkpoint
from trainer.chain import evaluate
from trainer.calibrate import calibrate_biases
from trainer.convert import rescale_biases
from trainer.data import batches
from trainer.recipe import Runtime
from trainer.__main__ import data_of
R = "runs/cifar10-vgg9-relu-cutout/"
ck = load_checkpoint(R + "converted64_T100.pt")
ann = load_checkpoint(R + "ann64.pt").model()
un = ck.metrics["balance"]["unscaled"]
bundle = data_of(ck, None)
rt = Runtime(device="cpu", seed=0, progress=False)
x = next(batches(bundle, "train", int(sys.argv[1]), shuffle=True, augment=False, seed=0))[0]
for spec in sys.argv[2:]:
    mode, a = spec.split(":"); a = float(a)
    th = [v * a for v in un] if mode == "compound" else [un[0] * a] + list(un[1:])
    state = rescale_biases(ck.arch, ck.state_dict, ck.snn.thresholds, th)
    t0 = time.time()
    arch, state, shifts = calibrate_biases(ann, ck.arch, state, th, None, x, 100, scales=list(itertools.accumulate(th, operator.mul)), encoding="poisson")
    t1 = time.time()
    c2 = dataclasses.replace(ck, arch=arch, state_dict=state, snn=dataclasses.replace(ck.snn, thresholds=th))
    r = evaluate(c2, bundle, 100, rt, 500)
    print(json.dumps({"mode": mode, "alpha": a, "accuracy": r["accuracy"], "calib_s": round(t1 - t0), "eval_s": round(time.time() - t1), "shifts": [round(v, 4) for v in shifts]}), flush=True)
