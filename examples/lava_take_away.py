"""Run an exported core graph in Lava with Lava's own calls, image after image, one network.

    python examples/lava_take_away.py runs/<name>/export/stdb/coregraph.npz runs/<name>/hwsim/inputs.npz
    python examples/lava_take_away.py GRAPH INPUTS --samples 50

The project gives the connected processes (``export.lava.builder.build_lava_network``:
Lava's Dense/Conv and a soft-reset LIF per core, bit-exact to the graph); everything else
here is plain Lava: a ``RingBuffer`` source on the network's input port, ``run`` with
``RunSteps`` under ``Loihi2SimCfg(select_tag="fixed_pt")``, ``Var.get``/``Var.set``
between images on the paused network, ``stop`` at the end. The inputs file is the one
hwsim replays (uint8 images, labels, the Poisson seed and T), so the predictions printed
here are the ones hwsim reports for the same images.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.graph import load_graph  # noqa: E402
from export.lava.builder import build_lava_network  # noqa: E402  (imports Lava through the 3.11 shim)
from lava.magma.core.run_conditions import RunSteps  # noqa: E402
from lava.magma.core.run_configs import Loihi2SimCfg  # noqa: E402
from lava.proc.io.source import RingBuffer  # noqa: E402
from records.inputs import load_inputs  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("graph", help="coregraph.npz written by python -m export.to_lava")
    p.add_argument("inputs", help="inputs.npz written by python -m hwsim.run")
    p.add_argument("--samples", type=int, default=20, help="images to run (default 20)")
    args = p.parse_args(argv)
    graph, inputs = load_graph(args.graph), load_inputs(args.inputs)
    n = min(args.samples, len(inputs.images))
    spikes = graph.input.encode(inputs.images[:n], inputs.timesteps, inputs.seed)      # (T, N, C, H, W)

    network = build_lava_network(graph)
    source = RingBuffer(data=network.input_trains(spikes[:, 0]))
    network.connect_input(source.s_out)
    steps = network.steps(inputs.timesteps)                       # T + one step of delay per core
    run_cfg = Loihi2SimCfg(select_tag="fixed_pt")
    predictions = []
    started = time.perf_counter()
    try:
        for j in range(n):
            if j:                                                 # the network is paused between images
                source.data.set(network.input_trains(spikes[:, j]))
                network.reset()
            source.run(condition=RunSteps(num_steps=steps), run_cfg=run_cfg)
            scores = network.output.v.get()                       # the output core's voltage: class scores
            predictions.append(int(np.argmax(scores)))
    finally:
        source.stop()
    seconds = time.perf_counter() - started
    correct = int(np.sum(np.array(predictions) == inputs.labels[:n]))
    print(f"Lava fixed_pt, one network, {n} images x {steps} steps in {seconds:.1f} s "
          f"({seconds / n:.2f} s per image): {correct}/{n} correct ({100 * correct / n:.1f} %)")
    print("predictions:", " ".join(graph.class_names[k] for k in predictions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
