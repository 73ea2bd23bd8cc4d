#!/bin/bash
# MNIST, the low-latency recipe at the data set's default T = 6 (L = 6), vgg_tiny as the pipeline builds it
# (batch norms, dropout 0.2 / 0.5): the ANN for 3 epochs, converted (plain and with biases calibrated at T on
# 256 training images), exported, hwsim on the first 1,500 test images; the ANN on the same images.
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/mnist-qcfs
PY=.venv/bin/python
date
lscpu | grep "Model name"
$PY -m trainer ann --dataset mnist --batch-norm --quant-levels 6 --epochs 3 --out $R/ann.pt --quiet
date
$PY -m trainer convert $R/ann.pt --timesteps 6 --out $R/plain.pt --quiet
$PY -m trainer convert $R/ann.pt --timesteps 6 --calibrate-biases 256 --out $R/calibrated.pt --quiet
for N in plain calibrated; do
  $PY -m export.to_lava $R/$N.pt --timesteps 6 --eval-samples 0 --no-nir --out $R/export/$N
done
$PY -m hwsim.run --edp --graph plain=$R/export/plain/coregraph.npz --graph calibrated=$R/export/calibrated/coregraph.npz \
  --timesteps 6 --samples 1500 --energy-model cmos45nm --out $R/hwsim --no-progress
$PY results/ann_on_inputs.py $R/ann.pt $R/hwsim/inputs.npz
date
