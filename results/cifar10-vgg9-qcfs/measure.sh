#!/bin/bash
# The CIFAR-10 VGG9 low-latency measurement, after the ANN: convert, export, hwsim at T = 4 and 8 (1,500 images),
# the ANN on the same images.
set -e
cd "$(dirname "$0")/../.."      # the repository root
R=runs/cifar10-vgg9-qcfs          # its ann.pt: python -m trainer ann ... (RESULTS.md)
PY=.venv/bin/python
date
lscpu | grep "Model name"
$PY -m trainer convert $R/ann.pt --timesteps 8 --out $R/qcfs_converted.pt --quiet
$PY -m export.to_lava $R/qcfs_converted.pt --timesteps 8 --calibration-timesteps 16 --eval-samples 0 --calibration-samples 64 --no-nir --out $R/export/qcfs_converted
date
$PY -m hwsim.run --edp --graph qcfs_converted=$R/export/qcfs_converted/coregraph.npz --timesteps 8 --sweep 4,8 --samples 1500 --energy-model cmos45nm --out $R/hwsim --no-progress
date
$PY results/ann_on_inputs.py $R/ann.pt $R/hwsim/inputs.npz
date
