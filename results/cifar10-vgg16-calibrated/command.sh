# run from the repository root (2026-12-07, Intel Xeon, 2 cores): the calibrated recipe on VGG16 at T = 100 as one
# command, 140 minutes of budget (it resumes with the same command if the session ends under it)
cd /work/runner
echo "commit $(git rev-parse --short HEAD)"; date
.venv/bin/python -m pipeline --dataset cifar10 --arch vgg16 --recipe calibrated --budget-minutes 140 \
  --device cpu --runs runs --name cifar10-vgg16-calibrated
echo "exit $?"; date
