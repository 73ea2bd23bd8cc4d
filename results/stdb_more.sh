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
. results/lowlat_steps.sh
date; lscpu | grep "Model name"; git rev-parse --short HEAD
stdb_epoch "$FROM" "$NAME" "$T" "$LR" "$SEED" "$SUBSET"
date
export_at "$T" "$FROM" "$NAME"
hwsim_pair "$T" "hwsim_$NAME" "$FROM=$FROM" "$NAME=$NAME"
date
