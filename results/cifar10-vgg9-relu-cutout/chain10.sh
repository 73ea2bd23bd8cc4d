# after chain9.sh: does bias calibration rescue the paper's own settings at T = 100? The 64-epoch ANN balanced on the
# maximum, every threshold times 0.7 (the trainer's defaults; 39.2 % at T = 100 without calibration, chain5.sh),
# its biases calibrated at T = 100 on 256 training images, evaluated on the first 500 test images. Run from the
# repository root.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
date
$PY -m trainer convert $R/ann64.pt --timesteps 100 --statistic max --scaling-factor 0.7 --balance-batches 4 \
  --calibrate-biases 256 --out $R/calibrated100max.pt --quiet
date
$PY -m trainer eval $R/calibrated100max.pt --timesteps 100 --eval-samples 500 --quiet
date
echo "chain10 done"
