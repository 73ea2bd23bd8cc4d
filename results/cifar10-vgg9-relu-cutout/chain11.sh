# The paper's Fig. 3 pair at T = 100: the conversion with the paper's own settings (the maximum, every threshold
# x 0.7: converted64max_T100, chain5.sh) beside the hybrid of chain9.sh (stdb100), both exported at T = 100 and
# run by hwsim on the same 1,500 test images (seed 0, cmos45nm) as chain8.sh and chain9.sh, then reported. Run
# from the repository root.
set -x
R=runs/cifar10-vgg9-relu-cutout
PY=.venv/bin/python
. results/lowlat_steps.sh
date
export_at 100 converted64max_T100 stdb100
hwsim_pair 100 hwsim_T100_paper paper=converted64max_T100 stdb=stdb100
$PY results/ann_on_inputs.py $R/ann64.pt $R/hwsim_T100_paper/inputs.npz
$PY -m reports $R --results $R/hwsim_T100_paper/results.json --out $R/report_T100_paper
date
echo "chain11 done"
