# after chain2.sh: the 64-epoch ReLU ANN converted as the paper does (balanced at T = 100), at T = 2500 with the
# balanced thresholds on the first 128 test images and at T = 100 on the first 500. Run from the repository root.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
while pgrep -f "chain2.sh" > /dev/null; do sleep 20; done
date
[ $(date +%s) -lt $(date -d '08:12' +%s) ] || { echo 'no time left'; exit 0; }
$PY -m trainer eval $R/ann64.pt --eval-samples 128 --quiet
$PY -m trainer eval $R/ann64.pt --eval-samples 500 --quiet
$PY -m trainer convert $R/ann64.pt --timesteps 100 --statistic percentile --percentile 99.9 \
  --scaling-factor 0.7 --balance-batches 4 --out $R/converted64_T100.pt --quiet
date
$PY -m trainer eval $R/converted64_T100.pt --timesteps 100 --eval-samples 500 --quiet
date
[ $(date +%s) -lt $(date -d '08:15' +%s) ] || { echo 'no time left for T = 2500'; exit 0; }
$PY -m trainer eval $R/converted64_T100.pt --timesteps 2500 --unscaled --eval-samples 128 --quiet
date
echo "chain3 done"
