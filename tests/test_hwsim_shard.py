"""hwsim under torchrun (2 CPU processes, gloo) gives one process's results, counts and per-sample arrays alike."""
import json

import numpy as np

from export.graph import save_graph
from hwsim.counters import SimResult
from hwsim.simulate import simulate
from records.inputs import InputSet, save_inputs
from test_distributed import run_module

MACHINE = {"created", "seconds"}       # when it ran and how long it took


def without_timing(value):
    """The results document less the time it was written and the time it took."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in MACHINE}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def hwsim(*args, cwd, procs=1):
    return run_module("hwsim.run", *args, cwd=cwd, procs=procs)


def test_two_processes_match_one(trained_digits, digits, tmp_path):
    graphs = [save_graph(g, tmp_path / f"{label}.npz") for label, (g, _) in zip(("converted", "stdb"), trained_digits)]
    inputs = save_inputs(tmp_path / "inputs.npz", InputSet(digits.test_x[:13].numpy(), digits.test_y[:13].numpy(),
                                                           seed=5, timesteps=6, dataset="digits"))
    args = ["--edp", "--graph", f"converted={graphs[0]}", "--graph", f"stdb={graphs[1]}", "--inputs", str(inputs),
            "--sweep", "3,6", "--no-progress", "--device", "cpu"]
    hwsim(*args, "--out", "one", cwd=tmp_path)
    two = hwsim(*args, "--out", "two", cwd=tmp_path, procs=2)
    assert two.stdout.count("converted / stdb") == 1          # rank 0 reports, rank 1 is silent
    docs = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two")]
    assert without_timing(docs[0]) == without_timing(docs[1])
    assert (tmp_path / "one" / "layers.csv").read_text() == (tmp_path / "two" / "layers.csv").read_text()


def test_merged_parts_equal_the_whole(trained_digits, digits):
    graph = trained_digits[1][0]
    images = digits.test_x[:7].numpy()
    whole = simulate(graph, (images, 4), timesteps=5, record_spikes=True)
    parts = [simulate(graph, (images[a:b], 4), timesteps=5, record_spikes=True, first_index=a)
             for a, b in [(0, 3), (3, 4), (4, 7)]]
    merged = SimResult.merged(parts)
    assert merged.samples == whole.samples and np.array_equal(merged.output, whole.output)
    assert np.array_equal(merged.input_spikes_per_sample, whole.input_spikes_per_sample)
    for a, b in zip(merged.layers, whole.layers):
        assert (a.spikes, a.synaptic_events, a.neuron_updates, a.active_neuron_updates, a.max_abs_input) == \
            (b.spikes, b.synaptic_events, b.neuron_updates, b.active_neuron_updates, b.max_abs_input)
        assert np.array_equal(a.spikes_per_sample, b.spikes_per_sample)
    assert all(np.array_equal(x, y) for x, y in zip(merged.spike_trains, whole.spike_trains))
