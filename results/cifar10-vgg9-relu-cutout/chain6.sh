# after chain5.sh: the converted 64-epoch ANN layer by layer against the ANN at T = 100 (scaled and unscaled
# thresholds) on the first 64 test images. Run from the repository root.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
while pgrep -f "chain5.sh" > /dev/null; do sleep 20; done
date
[ $(date +%s) -lt $(date -d '08:33' +%s) ] || { echo 'no time left'; exit 0; }
$PY -m trainer diagnose $R/converted64_T100.pt --timesteps 100 --samples 64 --out $R/diagnose_T100.csv --quiet
$PY -m trainer diagnose $R/converted64_T100.pt --timesteps 100 --samples 64 --unscaled --out $R/diagnose_T100_unscaled.csv --quiet
date
echo "chain6 done"
