"""Run an exported NIR file in SpikingJelly and snnTorch and compare them with hwsim.

    python examples/nir_consumers.py runs/<name>/export/stdb/model.nir runs/<name>/export/stdb/coregraph.npz \\
        runs/<name>/hwsim/inputs.npz [--samples N]

The inputs file is the one hwsim replays (uint8 images, labels, the Poisson seed and T):
every simulator gets the same input spikes. Per consumer it prints whether its per-step
output equals the readout current of the core (bit for bit), how often its prediction
agrees with hwsim's, and its accuracy; SpikingJelly also as written, without the adapter's
subtract reset and strict threshold (``export.nir_consumers``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.graph import load_graph  # noqa: E402
from export.nir_consumers import CONSUMERS, load_spikingjelly, readout_currents  # noqa: E402
from hwsim.backends import run_graph  # noqa: E402
from records.inputs import load_inputs  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("nir", help="model.nir written by python -m export.to_lava")
    p.add_argument("graph", help="the coregraph.npz exported beside it")
    p.add_argument("inputs", help="inputs.npz written by python -m hwsim.run")
    p.add_argument("--samples", type=int, default=0, help="images to run (default all)")
    args = p.parse_args(argv)
    graph, inputs = load_graph(args.graph), load_inputs(args.inputs)
    n = args.samples or len(inputs.images)
    spikes = graph.input.encode(inputs.images[:n], inputs.timesteps, inputs.seed)
    hw = run_graph("hwsim", graph, spikes)
    exact = readout_currents(graph, hw)
    labels = inputs.labels[:n]
    print(f"{n} images, T = {inputs.timesteps}: hwsim accuracy {100 * np.mean(hw.predictions == labels):.2f} %")
    models = {name: load(args.nir) for name, load in CONSUMERS.items()}
    models["spikingjelly as written"] = load_spikingjelly(args.nir, as_written=True)
    for name, model in models.items():
        started = time.perf_counter()
        out = model.run(spikes)
        seconds = time.perf_counter() - started
        pred = model.scores(spikes).argmax(1)
        print(f"{name:<24} outputs equal the core's: {str(np.array_equal(out, exact)):<5}  "
              f"predictions agree with hwsim {100 * np.mean(pred == hw.predictions):6.2f} %  "
              f"accuracy {100 * np.mean(pred == labels):6.2f} %  ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
