#!/bin/bash
# The paper's VGG9 ANN (no batch norm, no bias, average pools, dropout 0.2 / 0.5) with the budgeted profile's
# recipe (trainer.defaults.fast_recipe: batch 256, lr 0.02, one-cycle, 2 warm-up epochs, gradients clipped at 5,
# label smoothing 0.1, bf16 synapses, channels-last) for EPOCHS epochs (default 16: the epochs of
# cifar10-vgg9-qcfs-l8-bf16's low-latency ANN, so the two recipes compare at equal budget on the same CPU).
# Resumes where it stopped.
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-paper-bf16
EPOCHS=${EPOCHS:-16}
PY=.venv/bin/python
date; lscpu | grep "Model name"; git rev-parse --short HEAD
$PY -m trainer ann --dataset cifar10 --arch vgg9 --epochs $EPOCHS --batch-size 256 --lr 0.02 --schedule onecycle \
  --warmup-epochs 2 --grad-clip 5 --label-smoothing 0.1 --precision bf16 --channels-last --out $R/ann.pt
date
