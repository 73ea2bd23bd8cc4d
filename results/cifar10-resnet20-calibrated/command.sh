cd /work/runner
echo "commit $(git rev-parse --short HEAD)"; date; lscpu | grep 'Model name'
.venv/bin/python -m pipeline --dataset cifar10 --arch resnet20 --recipe calibrated --timesteps 100 --budget-minutes 120 --device cpu --runs runs --name cifar10-resnet20-calibrated
echo "exit $?"; date
