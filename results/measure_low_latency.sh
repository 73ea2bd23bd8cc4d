#!/bin/bash
# The low-latency measurement of a run folder after its QCFS ANN (RUN_FOLDER/ann.pt): convert at T = 8 and T = 4,
# each plain and with its biases calibrated at that T (256 training images), export each at its T, hwsim on
# 1,500 test images (plain and calibrated side by side per T), the ANN on the same images.
set -e
cd "$(dirname "$0")/.."      # the repository root
R=${1:?usage: results/measure_low_latency.sh RUN_FOLDER (holding ann.pt)}
PY=.venv/bin/python
date
lscpu | grep "Model name"
for T in 8 4; do
  $PY -m trainer convert $R/ann.pt --timesteps $T --out $R/plain_T$T.pt --quiet
  $PY -m trainer convert $R/ann.pt --timesteps $T --calibrate-biases 256 --out $R/calibrated_T$T.pt --quiet
  date
  for N in plain calibrated; do
    $PY -m export.to_lava $R/${N}_T$T.pt --timesteps $T --eval-samples 0 --calibration-samples 64 --no-nir \
      --out $R/export/${N}_T$T
  done
  $PY -m hwsim.run --edp --graph plain=$R/export/plain_T$T/coregraph.npz \
    --graph calibrated=$R/export/calibrated_T$T/coregraph.npz --timesteps $T --samples 1500 \
    --energy-model cmos45nm --out $R/hwsim_T$T --no-progress
  date
done
$PY results/ann_on_inputs.py $R/ann.pt $R/hwsim_T8/inputs.npz
date
