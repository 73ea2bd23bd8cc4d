# after chain3.sh: why the converted 64-epoch ANN falls to 34.8 % at T = 100 (thresholds: the 99.9th percentile,
# times 0.7): at T = 100 with the unscaled thresholds, and balanced with the paper's maximum statistic times 0.7;
# then the distilled STDB network in float at T = 8 on the 10,000 test images. Run from the repository root.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
while pgrep -f "chain3.sh" > /dev/null; do sleep 20; done
date
$PY -m trainer eval $R/converted64_T100.pt --timesteps 100 --unscaled --eval-samples 500 --quiet
date
$PY -m trainer convert $R/ann64.pt --timesteps 100 --statistic max --scaling-factor 0.7 --balance-batches 4 \
  --out $R/converted64max_T100.pt --quiet
date
$PY -m trainer eval $R/converted64max_T100.pt --timesteps 100 --eval-samples 500 --quiet
date
[ $(date +%s) -lt $(date -d '08:24' +%s) ] || { echo 'no time left'; exit 0; }
$PY -m trainer eval $R/stdb_T8kd.pt --timesteps 8 --quiet
date
echo "chain5 done"
