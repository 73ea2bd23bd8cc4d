# the ReLU ANN (48 epochs) given 16 more under a fresh cosine at lr 0.02, then the low-latency chain at T = 8:
# a QCFS L = 4 fine-tune (input at 8 levels, 3 epochs), its conversion at T = 8 with biases calibrated, one
# distilled STDB epoch on the 8-bit weight grid, export + hwsim on 1,500 test images, the Fig. 3 report.
# Run from the repository root.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
. results/lowlat_steps.sh
date; lscpu | grep 'Model name'; git rev-parse --short HEAD
$PY -m trainer ann --dataset cifar10 --arch vgg9 --device cpu --batch-norm --init $R/ann.pt --cutout 16 \
  --conv-dropout 0 --fc-dropout 0 --epochs 16 --optimizer sgd --lr 0.02 --batch-size 128 --schedule cosine \
  --warmup-epochs 0.3 --weight-decay 5e-4 --label-smoothing 0.1 --precision bf16 --channels-last \
  --out $R/ann64.pt > $R/ann64.log 2>&1; echo "rc=$?"
tail -2 $R/ann64.log; date
$PY -m trainer ann --dataset cifar10 --arch vgg9 --device cpu --batch-norm --quant-levels 4 --input-levels 8 \
  --init $R/ann64.pt --cutout 16 --conv-dropout 0 --fc-dropout 0 --epochs 3 --optimizer sgd --lr 0.01 \
  --batch-size 128 --schedule cosine --warmup-epochs 0 --weight-decay 5e-4 --label-smoothing 0.1 \
  --precision bf16 --channels-last --out $R/qcfs_l4.pt > $R/qcfs_l4.log 2>&1; echo "rc=$?"
tail -2 $R/qcfs_l4.log; date
$PY -m trainer convert $R/qcfs_l4.pt --timesteps 8 --calibrate-biases 256 --out $R/calibrated_T8.pt --quiet
date
[ $(date +%s) -lt $(date -d '07:55' +%s) ] || { echo 'no time left for STDB'; exit 0; }
$PY -m trainer stdb $R/calibrated_T8.pt --distill $R/qcfs_l4.pt --timesteps 8 --test-subset 500 --epochs 1 \
  --lr 1e-4 --seed 3 --optimizer adam --batch-size 32 --warmup-epochs 0.05 --schedule cosine --surrogate linear \
  --precision bf16 --channels-last --weight-bits 8 --out $R/stdb_T8kd.pt > $R/stdb_T8kd.log 2>&1; echo "rc=$?"
tail -3 $R/stdb_T8kd.log; date
[ $(date +%s) -lt $(date -d '08:20' +%s) ] || { echo 'no time left for hwsim'; exit 0; }
export_at 8 calibrated_T8 stdb_T8kd
date
hwsim_pair 8 hwsim_T8kd converted=calibrated_T8 stdb=stdb_T8kd
$PY results/ann_on_inputs.py $R/ann64.pt $R/hwsim_T8kd/inputs.npz
$PY results/ann_on_inputs.py $R/qcfs_l4.pt $R/hwsim_T8kd/inputs.npz
date
$PY -m reports $R --results $R/hwsim_T8kd/results.json --out $R/report_T8kd
date
echo "chain2 done"
