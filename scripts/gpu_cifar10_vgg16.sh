#!/usr/bin/env bash
# The paper's setting in one GPU run: CIFAR-10, VGG16, T = 100, the whole chain (ANN ->
# conversion -> STDB -> export -> hwsim -> report) inside one time budget (docs/gpu.md), by
# CIFAR's default recipe, the calibrated one (add --recipe paper for the paper's own settings).
#
#   scripts/gpu_cifar10_vgg16.sh DATA_DIR RESULTS_DIR [MINUTES [PIPELINE OPTIONS...]]
#
# DATA_DIR holds cifar10-jpg.tar.gz; RESULTS_DIR receives the small files worth keeping
# (report, figures, CSVs, JSON summaries, the log) as results.tar.gz; checkpoints, graphs and
# inputs stay in the scratch run folder. Run from the repository root; no install needed
# (python3 with torch, numpy, pandas, matplotlib, tqdm, scikit-learn, pillow, onnx, nir optional).
set -euo pipefail
data=${1:?DATA_DIR (holding cifar10-jpg.tar.gz)}
results=${2:?RESULTS_DIR}
minutes=${3:-22}
shift $(( $# < 3 ? $# : 3 ))
runs=${RUNS:-/tmp/hybrid-snn-runs}
name=cifar10-vgg16
mkdir -p "$runs" "$results"
export PYTHONUNBUFFERED=1
status=0
python3 -m pipeline --dataset cifar10 --arch vgg16 --device cuda --budget-minutes "$minutes" \
    --data-root "$data" --runs "$runs" --name "$name" --quiet "$@" 2>&1 | tee "$runs/$name.log" || status=$?
cp "$runs/$name.log" "$runs/$name/pipeline.log" 2>/dev/null || true
tar czf "$results/results.tar.gz" -C "$runs" --exclude='*.pt' --exclude='*.npz' --exclude='*.onnx' \
    --exclude='*.nir' --exclude='.*' "$name"
exit "$status"
