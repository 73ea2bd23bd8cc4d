#!/bin/bash
# One more epoch on the 8-bit weight grid at T = 4 from qat_T4.pt, on another seeded 20,000-image
# training subset (--seed 1: about 60 % of it new to the network), then export at T = 4 and hwsim on
# the same 1,500 test images as every T = 4 network before (hwsim_T4/inputs.npz).
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs-l8
PY=.venv/bin/python
date; lscpu | grep "Model name"; git rev-parse --short HEAD
$PY -m trainer stdb $R/qat_T4.pt --timesteps 4 --train-subset 20000 --test-subset 500 --epochs 1 --lr 1e-4 \
  --optimizer adam --batch-size 32 --warmup-epochs 0.02 --surrogate linear --channels-last --weight-bits 8 \
  --seed 1 --out $R/qat2_T4.pt
date
$PY -m export.to_lava $R/qat2_T4.pt --timesteps 4 --eval-samples 0 --calibration-samples 64 --no-nir \
  --out $R/export/qat2_T4
$PY -m hwsim.run --edp --graph qat=$R/export/qat_T4/coregraph.npz --graph qat2=$R/export/qat2_T4/coregraph.npz \
  --inputs $R/hwsim_T4/inputs.npz --timesteps 4 --energy-model cmos45nm --out $R/hwsim_qat2_T4 --no-progress
$PY -m trainer eval $R/qat2_T4.pt --timesteps 4 --eval-samples 1500
date
