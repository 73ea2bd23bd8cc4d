# after the scaling and calibration trials (ratescale.py, calib100.py): the 64-epoch ANN converted at T = 100
# through the CLI, balanced on the 99.9th percentile, (a) without and (b) with its biases calibrated at T = 100 on
# 256 training images, both with the scaling given as $1 (e.g. "--scaling-factor 1.0"); each evaluated in float on
# the first 500 test images, then exported and simulated in fixed point (hwsim, 1,500 test images, cmos45nm) and
# reported (Fig. 3). Run from the repository root.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
SCALE="$1"
. results/lowlat_steps.sh
date
for n in balanced100 calibrated100; do
  [ -f $R/$n.pt ] || $PY -m trainer convert $R/ann64.pt --timesteps 100 --statistic percentile --percentile 99.9 \
    $SCALE --balance-batches 4 $([ $n = calibrated100 ] && echo --calibrate-biases 256) --out $R/$n.pt --quiet
  date
  $PY -m trainer eval $R/$n.pt --timesteps 100 --eval-samples 500 --quiet
  date
done
[ $(date +%s) -lt $(date -d '10:45' +%s) ] || { echo 'no time left for hwsim'; exit 0; }
export_at 100 balanced100 calibrated100
date
hwsim_pair 100 hwsim_T100 converted=balanced100 calibrated=calibrated100
$PY results/ann_on_inputs.py $R/ann64.pt $R/hwsim_T100/inputs.npz
date
$PY -m reports $R --results $R/hwsim_T100/results.json --out $R/report_T100
date
echo "chain8 done"
