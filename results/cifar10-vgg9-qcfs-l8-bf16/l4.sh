#!/bin/bash
# T = 4 from an ANN with as many levels as steps: chain.sh's L = 8 ANN fine-tuned to L = 4 (trainer ann --init)
# for EPOCHS epochs (default 2), then the T = 4 steps of chain.sh from it: biases calibrated at T = 4, one STDB
# epoch at T = 4 on the 8-bit weight grid over the whole training set (SUBSET: a seeded subset instead), export,
# hwsim on the same 1,500 test images (seed 0) beside chain.sh's T = 4 network, and both ANNs on those images.
# Every step resumes or is skipped when its output exists.
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs-l8-bf16
EPOCHS=${EPOCHS:-2}
PY=.venv/bin/python
date; lscpu | grep "Model name"; git rev-parse --short HEAD
$PY -m trainer ann --dataset cifar10 --arch vgg9 --batch-norm --quant-levels 4 --conv-dropout 0 --fc-dropout 0 \
  --init $R/ann.pt --lr 0.005 --batch-size 128 --epochs $EPOCHS --schedule cosine --warmup-epochs 0.1 \
  --weight-decay 5e-4 --precision bf16 --channels-last --out $R/ann_l4.pt
date
[ -f $R/l4_calibrated_T4.pt ] || $PY -m trainer convert $R/ann_l4.pt --timesteps 4 --calibrate-biases 256 \
  --out $R/l4_calibrated_T4.pt --quiet
date
$PY -m trainer stdb $R/l4_calibrated_T4.pt --timesteps 4 ${SUBSET:+--train-subset $SUBSET} --test-subset 500 \
  --epochs 1 --lr 3e-4 --optimizer adam --batch-size 32 --warmup-epochs 0.05 --surrogate linear --precision bf16 \
  --channels-last --weight-bits 8 --out $R/l4_stdb_T4.pt
date
for N in l4_calibrated_T4 l4_stdb_T4; do
  [ -f $R/export/$N/coregraph.npz ] || $PY -m export.to_lava $R/$N.pt --timesteps 4 \
    --eval-samples 0 --calibration-samples 64 --no-nir --out $R/export/$N
done
[ -f $R/hwsim_l4_T4/results.json ] || $PY -m hwsim.run --edp --graph stdb_T4=$R/export/stdb_T4/coregraph.npz \
  --graph l4_calibrated_T4=$R/export/l4_calibrated_T4/coregraph.npz --graph l4_stdb_T4=$R/export/l4_stdb_T4/coregraph.npz \
  --timesteps 4 --samples 1500 --seed 0 --energy-model cmos45nm --out $R/hwsim_l4_T4 --no-progress
$PY results/ann_on_inputs.py $R/ann_l4.pt $R/hwsim_l4_T4/inputs.npz
$PY results/ann_at_levels.py $R/ann.pt $R/hwsim_l4_T4/inputs.npz 4
date
