#!/bin/bash
# Further STDB epochs from chain.sh's checkpoints, each on the whole training set on the 8-bit weight grid, then
# export and hwsim on the same 1,500 test images (seed 0) as chain.sh, beside the checkpoint it started from.
# usage: stdb_more.sh T FROM NAME LR SEED   e.g. stdb_more.sh 4 stdb_T4 stdb2_T4 1e-4 1
# (FROM and NAME are checkpoint names in runs/cifar10-vgg9-qcfs-l8-bf16, without .pt).
# Every step resumes or is skipped when its output exists.
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs-l8-bf16
T=$1 FROM=$2 NAME=$3 LR=$4 SEED=$5
PY=.venv/bin/python
date; lscpu | grep "Model name"; git rev-parse --short HEAD
$PY -m trainer stdb $R/$FROM.pt --timesteps $T --test-subset 500 --epochs 1 --lr $LR --seed $SEED \
  --optimizer adam --batch-size 32 --warmup-epochs 0.05 --surrogate linear --precision bf16 --channels-last \
  --weight-bits 8 --out $R/$NAME.pt
date
for N in $FROM $NAME; do
  [ -f $R/export/$N/coregraph.npz ] || $PY -m export.to_lava $R/$N.pt --timesteps $T \
    --eval-samples 0 --calibration-samples 64 --no-nir --out $R/export/$N
done
[ -f $R/hwsim_$NAME/results.json ] || $PY -m hwsim.run --edp --graph $FROM=$R/export/$FROM/coregraph.npz \
  --graph $NAME=$R/export/$NAME/coregraph.npz --timesteps $T --samples 1500 --seed 0 \
  --energy-model cmos45nm --out $R/hwsim_$NAME --no-progress
$PY results/ann_on_inputs.py $R/ann.pt $R/hwsim_$NAME/inputs.npz
date
