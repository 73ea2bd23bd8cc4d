# after the ANN (run from the repository root): the ANN on the first images, the conversion
# balanced at T = 100, the large-T column (T = 2500, unscaled thresholds) and T = 100 on subsets,
# then a QCFS L = 4 fine-tune from the ReLU ANN and its conversion at T = 8.
set -x
R=runs/cifar10-vgg9-relu-cutout
while pgrep -f "trainer ann --dataset cifar10" > /dev/null; do sleep 20; done
date
python -m trainer eval $R/ann.pt --eval-samples 64 --quiet
python -m trainer eval $R/ann.pt --eval-samples 500 --quiet
python -m trainer convert $R/ann.pt --timesteps 100 --statistic percentile --percentile 99.9 \
  --scaling-factor 0.7 --balance-batches 4 --out $R/converted_T100.pt --quiet
date
python -m trainer eval $R/converted_T100.pt --timesteps 2500 --unscaled --eval-samples 64 --quiet
date
python -m trainer eval $R/converted_T100.pt --timesteps 100 --eval-samples 500 --quiet
date
[ $(date +%s) -lt $(date -d '05:33' +%s) ] || { echo 'no time left for the QCFS fine-tune'; exit 0; }
python -m trainer ann --dataset cifar10 --arch vgg9 --device cpu --batch-norm --quant-levels 4 --input-levels 8 \
  --init $R/ann.pt --cutout 16 --conv-dropout 0 --fc-dropout 0 --epochs 3 --optimizer sgd --lr 0.01 \
  --batch-size 128 --schedule cosine --warmup-epochs 0 --weight-decay 5e-4 --label-smoothing 0.1 \
  --precision bf16 --channels-last --out $R/qcfs_l4.pt
date
python -m trainer convert $R/qcfs_l4.pt --timesteps 8 --calibrate-biases 256 --out $R/calibrated_T8.pt --quiet
python -m trainer eval $R/calibrated_T8.pt --timesteps 8 --quiet
date
echo "after_ann done"
