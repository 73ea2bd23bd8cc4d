"""Train a small spiking conv net in SpikingJelly, export it to NIR with SpikingJelly's own
exporter, and deploy the file through the core with ``python -m export.to_lava``.

    python examples/nir_from_spikingjelly.py OUT_DIR [--dataset digits|mnist] [--epochs 8] [--timesteps 6]

The net (conv 3x3 -> IF -> 2x2 average pool -> flatten -> linear readout, no biases) trains
with surrogate gradients on the same Poisson spikes the core sees, with reset by subtraction
(``v_reset=None``). SpikingJelly 2.0.0 exports hard reset only ("NIR does not distinguish soft
reset"), so the file is written from a copy with ``v_reset=0`` and imported with
``--subtract-reset``. Writes OUT_DIR/spikingjelly.nir and the export folder
OUT_DIR/spikingjelly_core/ (core graph, quantization report, float-vs-fixed summary, ONNX, NIR).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from records.encoding import InputEncoding  # noqa: E402
from trainer.data import load_dataset  # noqa: E402


def build(input_shape, classes: int, v_reset):
    from spikingjelly.activation_based import layer, neuron, surrogate
    c, h, w = input_shape
    return torch.nn.Sequential(layer.Conv2d(c, 8, 3, padding=1, bias=False),
                               neuron.IFNode(v_reset=v_reset, surrogate_function=surrogate.ATan()),
                               layer.AvgPool2d(2), layer.Flatten(),
                               layer.Linear(8 * (h // 2) * (w // 2), classes, bias=False))


def train(bundle, timesteps: int, epochs: int, seed: int = 0):
    """(trained soft-reset net, its NIR graph written by SpikingJelly, test spikes, test predictions)."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.nir_exchange import export_to_nir
    torch.manual_seed(seed)
    enc = InputEncoding(bundle.input_shape, bundle.normalisation)
    net = build(bundle.input_shape, bundle.num_classes, None)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for epoch in range(epochs):
        xs = torch.from_numpy(enc.encode(bundle.train_x.numpy(), timesteps, seed + 1 + epoch).astype(np.float32))
        perm = torch.randperm(xs.shape[1])
        for i in range(0, len(perm), 50):
            idx = perm[i:i + 50]
            functional.reset_net(net)
            out = sum(net(xs[t, idx]) for t in range(timesteps))
            loss = torch.nn.functional.cross_entropy(out, bundle.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    test = enc.encode(bundle.test_x.numpy(), timesteps, seed)
    with torch.no_grad():
        functional.reset_net(net)
        xt = torch.from_numpy(test.astype(np.float32))
        pred = sum(net(xt[t]) for t in range(timesteps)).argmax(1).numpy()
    hard = build(bundle.input_shape, bundle.num_classes, 0.0)
    hard.load_state_dict(net.state_dict())
    return net, export_to_nir(hard, torch.zeros(1, *bundle.input_shape)), test, pred


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder")
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=6)
    p.add_argument("--train-subset", type=int, default=None, help="training images (default all)")
    args = p.parse_args(argv)
    import nir
    from export.to_lava import main as to_lava
    bundle = load_dataset(args.dataset, train_subset=args.train_subset)
    _, graph, _, pred = train(bundle, args.timesteps, args.epochs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nir.write(out / "spikingjelly.nir", graph)
    accuracy = 100 * np.mean(pred == bundle.test_y.numpy())
    print(f"SpikingJelly, {args.dataset}, T = {args.timesteps}: test accuracy {accuracy:.2f} % "
          f"({len(pred)} images); wrote {out / 'spikingjelly.nir'}")
    return to_lava([str(out / "spikingjelly.nir"), "--dataset", args.dataset, "--timesteps", str(args.timesteps),
                    "--subtract-reset", "--eval-samples", str(len(pred))])


if __name__ == "__main__":
    sys.exit(main())
