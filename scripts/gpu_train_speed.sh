#!/usr/bin/env bash
# The fused LIF backend on a GPU: its conformance tests on CUDA, then the training-speed
# and threshold-balancing benchmarks (docs/gpu.md, "Training speed").
#
#   scripts/gpu_train_speed.sh RESULTS_DIR [WHEELS_DIR]
#
# WHEELS_DIR may hold pytest (and its dependencies) and spikingjelly + loguru wheels; they
# are installed into a scratch folder with --no-deps (never another torch). Run from the
# repository root; no install of the project needed.
set -uo pipefail
results=${1:?RESULTS_DIR}
wheels=${2:-}
mkdir -p "$results"
export PYTHONUNBUFFERED=1
if [ -n "$wheels" ] && ls "$wheels"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
status=0
python3 -m pytest -q -p no:cacheprovider tests/test_lif_backends.py 2>&1 | tee "$results/lif_backends_cuda.txt" \
    || status=$?
python3 benchmarks/train_speed.py 2>&1 | tee "$results/train_speed.txt" || status=$?
python3 benchmarks/balance_speed.py --arch vgg16 --timesteps 100 --batch 64 2>&1 \
    | tee "$results/balance_speed.txt" || status=$?
exit "$status"
