"""A QCFS ANN's accuracy with its input quantized to other level counts (its activations
unchanged), on the images of an hwsim inputs file:
``python results/ann_at_input_levels.py ANN.pt INPUTS.npz LEVELS ...``. 1024 levels leave a
rounding error of at most 1/2048 of the input's range: the unquantized input, in effect."""
import dataclasses
import sys

from ann_predict import accuracy, load, predictions
from trainer.models import ANN

ck, inp, x = load(sys.argv[1], sys.argv[2])
if ck.arch.quant_levels is None:
    sys.exit(f"{sys.argv[1]}: not a QCFS ANN (no quant_levels)")
for levels in [ck.arch.input_quant_levels] + [int(v) for v in sys.argv[3:]]:
    ann = ANN(dataclasses.replace(ck.arch, input_levels=levels))
    ann.load_state_dict(ck.state_dict)
    own = " (its own)" if levels == ck.arch.input_quant_levels else ""
    print(f"ANN with its input at {levels} levels{own} on the same {len(x)} images: "
          f"{accuracy(predictions(ann, x), inp.labels):.2f} %")
