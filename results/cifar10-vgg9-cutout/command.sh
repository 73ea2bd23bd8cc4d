# run from the repository root (2026-12-07, Intel Xeon, 2 cores, at 9bfa4a5)
python -m trainer ann --dataset cifar10 --arch vgg9 --device cpu --batch-norm --quant-levels 4 \
  --input-levels 8 --cutout 16 --conv-dropout 0 --fc-dropout 0 --epochs 40 --optimizer sgd --lr 0.05 \
  --batch-size 128 --schedule cosine --warmup-epochs 0.3 --weight-decay 5e-4 --precision bf16 --channels-last \
  --out runs/cifar10-vgg9-cutout/ann.pt
echo "exit $?"
