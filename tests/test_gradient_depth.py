"""STDB's gradient through depth at the paper's long T (the divergence of VGG16 at T = 100).

With the soft reset detached (the paper's code), an IF neuron that has spiked passes back
about alpha * (T - t) / theta per step, so the gradient grows by about alpha * T / 2 per
layer towards the input (RESULTS.md: VGG16 at T = 100, 4e8 from the last layer to the
first). Through the reset (the default) it stays near the count's own 1 / theta per layer.
A deep narrow net at T = 100 shows both in a second.
"""
import torch
from torch.nn import functional as F

from trainer.convert import balance_thresholds
from trainer.layers import Flatten, Linear
from trainer.lif import Surrogate
from trainer.models import ANN, ArchConfig
from trainer.snn import SNN

DEPTH, WIDTH, T = 10, 64, 100


def layer_gradient_norms(through_reset: bool, backend: str = "multistep") -> list[float]:
    """Per hidden layer, the weight gradient's norm after one STDB backward at T, input first."""
    torch.manual_seed(0)
    layers = [Flatten()] + [Linear(WIDTH)] * DEPTH
    ann = ANN(ArchConfig("deep_mlp", (1, 8, 8), 10, layers + [Linear(10)]))
    x = torch.rand(32, 1, 8, 8) * 2 - 1
    thresholds = balance_thresholds(ann, lambda: [x], T, progress=False)
    snn = SNN(ann, thresholds, surrogate=Surrogate("stdb", through_reset=through_reset), backend=backend).train()
    logits = snn(x[:8], T, generator=torch.Generator().manual_seed(1))
    F.cross_entropy(logits, torch.arange(8)).backward()
    return [float(m.weight.grad.norm()) for m in list(ann.layers)[1:1 + DEPTH]]


def test_gradient_stays_bounded_through_depth():
    norms = layer_gradient_norms(through_reset=True)
    assert all(n > 0 for n in norms)
    assert max(norms) / min(norms) < 10


def test_detached_reset_explodes_towards_the_input():
    """The failure the default avoids: detached, the first layer's gradient is orders above the last's."""
    norms = layer_gradient_norms(through_reset=False)
    assert norms[0] / norms[-1] > 1e4
