#!/bin/bash
# STDB fine-tuning of the calibrated T = 8 network (measure.sh) on 4,000 training images for one epoch, then
# its export and hwsim on the same 1,500 test images as measure.sh's T = 8 run (its inputs file).
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs2
PY=.venv/bin/python
date
lscpu | grep "Model name"
$PY -m trainer stdb $R/calibrated_T8.pt --timesteps 8 --train-subset 4000 --test-subset 500 --epochs 1 --lr 1e-4 \
  --optimizer adam --batch-size 32 --warmup-epochs 0.1 --surrogate linear --channels-last --out $R/stdb_T8.pt --quiet
date
$PY -m export.to_lava $R/stdb_T8.pt --timesteps 8 --eval-samples 0 --calibration-samples 64 --no-nir \
  --out $R/export/stdb_T8
$PY -m hwsim.run --edp --graph calibrated=$R/export/calibrated_T8/coregraph.npz \
  --graph stdb=$R/export/stdb_T8/coregraph.npz --inputs $R/hwsim_T8/inputs.npz --timesteps 8 \
  --energy-model cmos45nm --out $R/hwsim_stdb_T8 --no-progress
date
