# after chain8.sh: the hybrid at T = 100 as far as 35 minutes of 2 cores go - STDB from the calibrated conversion
# (calibrated100) against the 64-epoch ANN's outputs on the 8-bit weight grid, one pass over a seeded subset of
# 5,000 training images (2.6 images/s at T = 100 in a probe), validated on 500 test images; then exported and run
# by hwsim beside the calibrated conversion on the same 1,500 test images as chain8.sh, and reported. Run from the
# repository root.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
. results/lowlat_steps.sh
date
$PY -m trainer stdb $R/calibrated100.pt --distill $R/ann64.pt --timesteps 100 --train-subset 5000 --test-subset 500 \
  --epochs 1 --lr 1e-4 --seed 3 --optimizer adam --batch-size 32 --warmup-epochs 0.05 --schedule cosine \
  --surrogate linear --precision bf16 --channels-last --weight-bits 8 --out $R/stdb100.pt > $R/stdb100.log 2>&1
echo "rc=$?"; tail -3 $R/stdb100.log; date
[ $(date +%s) -lt $(date -d '10:50' +%s) ] || { echo 'no time left for hwsim'; exit 0; }
export_at 100 stdb100
date
hwsim_pair 100 hwsim_T100_stdb calibrated=calibrated100 stdb=stdb100
$PY results/ann_on_inputs.py $R/ann64.pt $R/hwsim_T100_stdb/inputs.npz
date
$PY -m reports $R --results $R/hwsim_T100_stdb/results.json --out $R/report_T100_stdb
date
echo "chain9 done"
