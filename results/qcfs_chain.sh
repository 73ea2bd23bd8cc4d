#!/bin/bash
# The low-latency chain for one architecture at one T, on the CPU, from nothing to a Fig. 3 report:
# a QCFS ANN with batch norm and L = T levels (bf16 synapses, channels-last), its biases calibrated at T,
# one STDB epoch at T on the core's 8-bit weight grid, both networks exported at T, hwsim on the first
# 1,500 test images (seed 0, cmos45nm), the ANN on the same images, and the report.
#   NAME   run folder under runs/ (required); ARCH (vgg9); T (4); EPOCHS of the ANN (16);
#   SUBSET a seeded training subset for the STDB epoch (default: the whole training set).
# Every step resumes or is skipped when its output exists, so the script can be run again after a kill.
set -e
cd "$(dirname "$0")/.."      # the repository root
: "${NAME:?NAME: the run folder under runs/}"
ARCH=${ARCH:-vgg9}
T=${T:-4}
EPOCHS=${EPOCHS:-16}
R=runs/$NAME
PY=.venv/bin/python
. results/lowlat_steps.sh
stamp() { echo "== $(date -u +%FT%TZ) $*"; }
stamp start; lscpu | grep "Model name"; nproc; git rev-parse --short HEAD
ann_lowlat "$ARCH" "$T" "$EPOCHS" ann
stamp ann done
[ -f $R/calibrated.pt ] || $PY -m trainer convert $R/ann.pt --timesteps "$T" --calibrate-biases 256 \
  --out $R/calibrated.pt --quiet
stamp calibrated
stdb_epoch calibrated stdb "$T" 3e-4 "" "$SUBSET"
stamp stdb done
export_at "$T" calibrated stdb
stamp exported
hwsim_pair "$T" hwsim calibrated=calibrated stdb=stdb
$PY -m reports $R
stamp end
