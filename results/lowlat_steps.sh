# The steps the low-latency CPU scripts share (qcfs_chain.sh, stdb_more.sh, cifar10-vgg9-qcfs-l8-bf16/chain.sh),
# sourced by them with PY (the python) and R (the run folder) set. Each step is skipped when its output exists;
# trainer stdb resumes its own checkpoint.

# ann_lowlat ARCH LEVELS EPOCHS NAME: the low-latency recipe's ANN (a QCFS ANN with batch norm and LEVELS
# levels, no dropout, SGD 0.05 at batch 128, a 0.3-epoch warm-up and a cosine over EPOCHS, weight decay 5e-4,
# bf16 synapses, channels-last) on CIFAR-10 into $R/NAME.pt; trainer ann resumes its own checkpoint.
ann_lowlat() {
  $PY -m trainer ann --dataset cifar10 --arch "$1" --batch-norm --quant-levels "$2" --conv-dropout 0 \
    --fc-dropout 0 --lr 0.05 --batch-size 128 --epochs "$3" --schedule cosine --warmup-epochs 0.3 \
    --weight-decay 5e-4 --precision bf16 --channels-last --out "$R/$4.pt"
}

# stdb_epoch FROM NAME T LR [SEED] [SUBSET]: one STDB epoch at T from $R/FROM.pt to $R/NAME.pt, on the core's
# 8-bit weight grid (Adam, batch 32, a 5 % warm-up, the linear surrogate, bf16 synapses, channels-last),
# validated on 500 test images; SUBSET a seeded training subset (default: the whole training set).
stdb_epoch() {
  $PY -m trainer stdb "$R/$1.pt" --timesteps "$3" ${6:+--train-subset $6} --test-subset 500 --epochs 1 \
    --lr "$4" ${5:+--seed $5} --optimizer adam --batch-size 32 --warmup-epochs 0.05 --surrogate linear \
    --precision bf16 --channels-last --weight-bits 8 --out "$R/$2.pt"
}

# export_at T NAME...: each checkpoint $R/NAME.pt exported at T into $R/export/NAME (no NIR, no evaluation).
export_at() {
  local t=$1 n
  shift
  for n in "$@"; do
    [ -f "$R/export/$n/coregraph.npz" ] || $PY -m export.to_lava "$R/$n.pt" --timesteps "$t" \
      --eval-samples 0 --calibration-samples 64 --no-nir --out "$R/export/$n"
  done
}

# hwsim_pair T OUT LABEL=NAME LABEL=NAME: hwsim on the first 1,500 test images (seed 0, cmos45nm) through the two
# exported graphs into $R/OUT, then the ANN ($R/ann.pt) on the same inputs.
hwsim_pair() {
  local a=${3%%=*} an=${3#*=} b=${4%%=*} bn=${4#*=}
  [ -f "$R/$2/results.json" ] || $PY -m hwsim.run --edp --graph "$a=$R/export/$an/coregraph.npz" \
    --graph "$b=$R/export/$bn/coregraph.npz" --timesteps "$1" --samples 1500 --seed 0 \
    --energy-model cmos45nm --out "$R/$2" --no-progress
  $PY results/ann_on_inputs.py "$R/ann.pt" "$R/$2/inputs.npz"
}
