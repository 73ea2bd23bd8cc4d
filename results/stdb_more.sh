#!/bin/bash
# One more STDB epoch at T from a run's checkpoint, on the 8-bit weight grid, then export and hwsim on the same
# 1,500 test images (seed 0) as the run's chain, beside the checkpoint it started from.
# usage: RUN=runs/<name> stdb_more.sh T FROM NAME LR SEED [SUBSET]   e.g. ... stdb_more.sh 4 stdb stdb2 1e-4 1
# FROM and NAME are checkpoint names in RUN, without .pt; SUBSET a seeded training subset (default: the whole set).
# Every step resumes or is skipped when its output exists.
set -e
cd "$(dirname "$0")/.."      # the repository root
R=${RUN:?RUN: the run folder, e.g. runs/cifar10-vgg16-qcfs-l4-bf16}
T=$1 FROM=$2 NAME=$3 LR=$4 SEED=$5 SUBSET=$6
PY=.venv/bin/python
date; lscpu | grep "Model name"; git rev-parse --short HEAD
$PY -m trainer stdb $R/$FROM.pt --timesteps $T ${SUBSET:+--train-subset $SUBSET} --test-subset 500 --epochs 1 \
  --lr $LR --seed $SEED --optimizer adam --batch-size 32 --warmup-epochs 0.05 --surrogate linear --precision bf16 \
  --channels-last --weight-bits 8 --out $R/$NAME.pt
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
