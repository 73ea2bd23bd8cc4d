# the 64-epoch ANN at T = 100 under scaling factors between 0.7 and 1 (99.9th percentile, balanced at T = 100 as
# chain3.sh), on the first 500 test images. Run from the repository root, after the fresh clone's checks.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
while pgrep -f "pytest -q -x|python -m pipeline" > /dev/null; do sleep 15; done
for s in 0.9 0.8; do
  date
  [ $(date +%s) -lt $(date -d '08:40' +%s) ] || { echo 'no time left'; exit 0; }
  $PY -m trainer convert $R/ann64.pt --timesteps 100 --statistic percentile --percentile 99.9 \
    --scaling-factor $s --balance-batches 4 --out $R/converted64_s${s}_T100.pt --quiet
  $PY -m trainer eval $R/converted64_s${s}_T100.pt --timesteps 100 --eval-samples 500 --quiet
done
date
echo "chain7 done"
