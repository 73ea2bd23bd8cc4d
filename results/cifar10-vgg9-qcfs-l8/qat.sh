#!/bin/bash
# STDB on the 8-bit weight grid (--weight-bits 8) from the fine-tuned networks, one epoch of the seeded
# 20,000-image subset at T = 8 and then at T = 4; each exported and run through hwsim on the same images.
# Ran at commit 2eb5c94 (a git worktree of it), 2026-12-05 12:35-13:51, AMD EPYC 2 cores; output: qat.log.
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs-l8
PY=.venv/bin/python
date; lscpu | grep "Model name"
for T in 8 4; do
  INIT=$R/stdb2_T8.pt; [ $T = 4 ] && INIT=$R/stdb_T4.pt
  $PY -m trainer stdb $INIT --timesteps $T --train-subset 20000 --test-subset 500 --epochs 1 --lr 1e-4 \
    --optimizer adam --batch-size 32 --warmup-epochs 0.02 --surrogate linear --channels-last --weight-bits 8 \
    --out $R/qat_T$T.pt
  date
  $PY -m export.to_lava $R/qat_T$T.pt --timesteps $T --eval-samples 0 --calibration-samples 64 --no-nir \
    --out $R/export/qat_T$T
  $PY -m hwsim.run --edp --graph calibrated=$R/export/calibrated_T$T/coregraph.npz \
    --graph qat=$R/export/qat_T$T/coregraph.npz --inputs $R/hwsim_T$T/inputs.npz --timesteps $T \
    --energy-model cmos45nm --out $R/hwsim_qat_T$T --no-progress
  $PY -m trainer eval $R/qat_T$T.pt --timesteps $T --eval-samples 1500
  date
done
