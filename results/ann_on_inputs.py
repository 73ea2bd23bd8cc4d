"""An ANN checkpoint's accuracy on the images of an hwsim inputs file (the same images the
SNNs were simulated on), and on their first N for each N given (the trainer's test images
of an evaluation on N samples are those, in the same order):
``python results/ann_on_inputs.py ANN.pt INPUTS.npz [N ...]``."""
import sys

from ann_predict import accuracy, load, predictions

ck, inp, x = load(sys.argv[1], sys.argv[2])
pred = predictions(ck.model(), x)
print(f"ANN on the same {len(x)} images: {accuracy(pred, inp.labels):.2f} %  (test set: "
      f"{ck.metrics.get('test_acc')} %, epochs {ck.metrics.get('epochs')})")
for n in map(int, sys.argv[3:]):
    print(f"ANN on the first {n} images: {accuracy(pred[:n], inp.labels[:n]):.2f} %")
if "act_thresholds" in ck.state_dict:
    print("act thresholds", [round(float(v), 3) for v in ck.state_dict["act_thresholds"]])
