"""``python results/ann_unquantized_finetune.py trainer ann --init ANN.pt --quant-levels L ...``:
``python -m trainer`` with the QCFS ANN's input quantization turned off (the input in float),
the measurement behind docs/method.md's cost of the input's levels (RESULTS.md,
cifar10-vgg9-ann46). The checkpoint it writes still records the input levels of its
arguments: it is a measurement, not an ANN to convert."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trainer.qcfs as qcfs  # noqa: E402

qcfs.quantize_input = lambda x, levels: x
from trainer.__main__ import main  # noqa: E402

if sys.argv[1:2] != ["trainer"]:
    sys.exit("usage: python results/ann_unquantized_finetune.py trainer ann ...")
sys.exit(main(sys.argv[2:]))
