"""A QCFS ANN's accuracy with its activations (and input) quantized to other level counts L',
on the images of an hwsim inputs file: ``python results/ann_at_levels.py ANN.pt INPUTS.npz L' ...``.

An IF neuron that starts at half its threshold and receives a constant current for T steps
fires floor(x * T / lambda + 1/2) times (clipped to 0..T): its rate times lambda is QCFS's
activation with T levels (trainer.qcfs). So the ANN evaluated with L' = T is the SNN at T
without the error of uneven spike arrival: the accuracy a conversion at T can reach before
fine-tuning moves the weights, and a measure of how much of an SNN's loss at T is the
quantization to T + 1 rates itself."""
import dataclasses
import sys

from ann_predict import accuracy, load, predictions
from trainer.models import ANN

ck, inp, x = load(sys.argv[1], sys.argv[2])
if ck.arch.quant_levels is None:
    sys.exit(f"{sys.argv[1]}: not a QCFS ANN (no quant_levels)")
for levels in [ck.arch.quant_levels] + [int(v) for v in sys.argv[3:]]:
    ann = ANN(dataclasses.replace(ck.arch, quant_levels=levels, input_levels=None))
    ann.load_state_dict(ck.state_dict)
    own = " (its own L)" if levels == ck.arch.quant_levels else ""
    print(f"ANN with L = {levels}{own} on the same {len(x)} images: {accuracy(predictions(ann, x), inp.labels):.2f} %")
