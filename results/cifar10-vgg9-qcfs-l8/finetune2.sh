#!/bin/bash
# Longer STDB fine-tuning of the calibrated networks (measure.sh): at T = 8 two epochs of a seeded 20,000-image
# training subset (18,000 trained, 2,000 validated), started by hand before this script:
#   python -m trainer stdb runs/cifar10-vgg9-qcfs-l8/calibrated_T8.pt --timesteps 8 --train-subset 20000
#     --test-subset 500 --epochs 2 --lr 3e-4 --optimizer adam --batch-size 32 --warmup-epochs 0.05
#     --surrogate linear --channels-last --out runs/cifar10-vgg9-qcfs-l8/stdb2_T8.pt
# This script waits for it (pid $1, if given), exports it and runs hwsim on the same 1,500 test images as
# measure.sh's T = 8 run (its inputs file); then the same at T = 4 for one epoch, and its export and hwsim.
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs-l8
PY=.venv/bin/python
if [ -n "$1" ]; then while kill -0 "$1" 2>/dev/null; do sleep 20; done; fi
date
lscpu | grep "Model name"
$PY -m export.to_lava $R/stdb2_T8.pt --timesteps 8 --eval-samples 0 --calibration-samples 64 --no-nir \
  --out $R/export/stdb2_T8
$PY -m hwsim.run --edp --graph calibrated=$R/export/calibrated_T8/coregraph.npz \
  --graph stdb=$R/export/stdb2_T8/coregraph.npz --inputs $R/hwsim_T8/inputs.npz --timesteps 8 \
  --energy-model cmos45nm --out $R/hwsim_stdb2_T8 --no-progress
date
$PY -m trainer stdb $R/calibrated_T4.pt --timesteps 4 --train-subset 20000 --test-subset 500 --epochs 1 --lr 3e-4 \
  --optimizer adam --batch-size 32 --warmup-epochs 0.05 --surrogate linear --channels-last --out $R/stdb_T4.pt
date
$PY -m export.to_lava $R/stdb_T4.pt --timesteps 4 --eval-samples 0 --calibration-samples 64 --no-nir \
  --out $R/export/stdb_T4
$PY -m hwsim.run --edp --graph calibrated=$R/export/calibrated_T4/coregraph.npz \
  --graph stdb=$R/export/stdb_T4/coregraph.npz --inputs $R/hwsim_T4/inputs.npz --timesteps 4 \
  --energy-model cmos45nm --out $R/hwsim_stdb_T4 --no-progress
date
