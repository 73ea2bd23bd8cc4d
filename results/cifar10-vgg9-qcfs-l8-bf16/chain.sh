#!/bin/bash
# The low-latency recipe (L = 8 levels) on VGG9 with bf16 synapses, on a CPU with AVX-512 BF16: a longer ANN
# than cifar10-vgg9-qcfs-l8's 7 fp32 epochs, then for T = 4 (the unmet target of issue 30) and T = 8:
# biases calibrated at T, one STDB epoch at T on the core's 8-bit weight grid, export at T, hwsim on 1,500
# test images, the ANN on the same images. Every step resumes or is skipped when its output exists.
# STEPS (default "4 8") picks the T; SUBSET a seeded training subset for the STDB epoch (default: the whole set).
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs-l8-bf16
EPOCHS=${EPOCHS:-16}
STEPS=${STEPS:-4 8}
PY=.venv/bin/python
. results/lowlat_steps.sh
date; lscpu | grep "Model name"; git rev-parse --short HEAD
ann_lowlat vgg9 8 "$EPOCHS" ann
date
for T in $STEPS; do
  [ -f $R/calibrated_T$T.pt ] || $PY -m trainer convert $R/ann.pt --timesteps $T --calibrate-biases 256 \
    --out $R/calibrated_T$T.pt --quiet
  date
  stdb_epoch calibrated_T$T stdb_T$T $T 3e-4 "" "$SUBSET"
  date
  export_at $T calibrated_T$T stdb_T$T
  hwsim_pair $T hwsim_T$T calibrated=calibrated_T$T stdb=stdb_T$T
  date
done
