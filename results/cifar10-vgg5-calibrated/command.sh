# run from the repository root (2026-12-07, Intel Xeon, 2 cores)
cd /work/runner
echo "commit $(git rev-parse --short HEAD)"; date
.venv/bin/python -m pipeline --dataset cifar10 --arch vgg5 --recipe calibrated --budget-minutes 110 \
  --device cpu --runs runs --name cifar10-vgg5-calibrated
echo "exit $?"; date
