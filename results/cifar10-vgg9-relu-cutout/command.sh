# run from the repository root (2026-12-07, Intel Xeon, 2 cores, at 448bbf8; the trainer as at 391d217 for after_ann.sh)
python -m trainer ann --dataset cifar10 --arch vgg9 --device cpu --batch-norm --cutout 16 \
  --conv-dropout 0 --fc-dropout 0 --epochs 48 --optimizer sgd --lr 0.05 --batch-size 128 \
  --schedule cosine --warmup-epochs 0.3 --weight-decay 5e-4 --label-smoothing 0.1 \
  --precision bf16 --channels-last --out runs/cifar10-vgg9-relu-cutout/ann.pt
echo "exit $?"
