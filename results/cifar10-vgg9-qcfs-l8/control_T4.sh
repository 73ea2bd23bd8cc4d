#!/bin/bash
# The control of qat.sh's T = 4 run: the same epoch from stdb_T4.pt without the weight grid (float weights),
# exported and run through hwsim on the same 1,500 test images.
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs-l8
PY=.venv/bin/python
date; lscpu | grep "Model name"; git rev-parse --short HEAD
$PY -m trainer stdb $R/stdb_T4.pt --timesteps 4 --train-subset 20000 --test-subset 500 --epochs 1 --lr 1e-4 \
  --optimizer adam --batch-size 32 --warmup-epochs 0.02 --surrogate linear --channels-last --out $R/control_T4.pt
date
$PY -m export.to_lava $R/control_T4.pt --timesteps 4 --eval-samples 0 --calibration-samples 64 --no-nir \
  --out $R/export/control_T4
$PY -m hwsim.run --edp --graph qat=$R/export/qat_T4/coregraph.npz --graph control=$R/export/control_T4/coregraph.npz \
  --inputs $R/hwsim_T4/inputs.npz --timesteps 4 --energy-model cmos45nm --out $R/hwsim_control_T4 --no-progress
$PY -m trainer eval $R/control_T4.pt --timesteps 4 --eval-samples 1500
date
