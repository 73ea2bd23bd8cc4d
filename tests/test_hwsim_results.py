"""hwsim's results document, energy models and the command line: files written, read back
and refused, and what the terminal shows."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from export.graph import Core, load_graph, save_graph
from hwsim import run as hwrun
from hwsim.energy import load_energy_model
from hwsim.results import NetworkRun, build_results
from hwsim.simulate import simulate
from fixedpoint_cases import CASES, conv_core, graph_of, out_core
from records.dataref import DataRef
from records.energy_model import EnergyModelError
from records.hwsim_results import ResultsError, load_results, save_results, sign_test_p
from records.inputs import InputSet, load_inputs, save_inputs

REPO = Path(__file__).resolve().parents[1]


def _two_graphs(rng, t=5, macs=(None, None), data=None, provenance=None):
    shape = (1, 6, 6)
    base = conv_core(rng, "c1", 1, 3, (3, 3), (6, 6), pad=(1, 1), vth=15)
    base.ann_macs = macs[0]
    out = out_core(rng, base.output_shape)
    out.ann_macs = macs[1]
    quiet = Core(**{**{k: getattr(base, k) for k in ("name", "op", "weights", "input_shape", "output_shape",
                                                     "stride", "padding", "ann_macs")}, "vth": 40})
    mk = lambda c: graph_of([c, out], shape, timesteps=t, data=data, provenance=provenance)   # noqa: E731
    return mk(base), mk(quiet)


def _results_doc(rng):
    g1, g2 = _two_graphs(rng)
    images = rng.integers(0, 256, size=(6, 1, 6, 6), dtype=np.uint8)
    labels = rng.integers(0, 3, size=6)
    runs = [NetworkRun(lbl, f"{lbl}.npz", g, simulate(g, (images, 0)), labels)
            for lbl, g in (("converted", g1), ("stdb", g2))]
    return build_results(runs, load_energy_model("first_order"), dataset="digits", arch="tiny", seed=0), runs


def test_results_round_trip_and_rejects(tmp_path):
    rng = np.random.default_rng(10)
    doc, runs = _results_doc(rng)
    paths = save_results(tmp_path, doc)
    back = load_results(paths["results"])
    assert back == json.loads(json.dumps(doc))
    assert load_results(tmp_path) == back
    conv, stdb = back["networks"]
    assert conv["totals"]["spikes"] > stdb["totals"]["spikes"] > 0     # higher threshold, fewer spikes
    r = back["ratios"][0]
    assert (r["numerator"], r["denominator"]) == ("converted", "stdb")
    assert r["spikes"] == pytest.approx(conv["totals"]["spikes"] / stdb["totals"]["spikes"])
    assert r["edp"] == pytest.approx(r["spikes"])                       # first order: E ~ spikes, same T
    assert back["snn_vs_ann"]["model"] == "cmos45nm" and back["ann_baseline"]["macs"] is None
    assert back["ann_baseline"]["energy"] is None and [n["stage"] for n in back["networks"]] == [None, None]
    layer = conv["layers"][0]
    assert layer["avg_spikes_per_neuron"] * layer["neurons"] * back["samples"] == pytest.approx(layer["spikes"])
    rows = list(csv.DictReader(open(paths["layers"])))
    assert len(rows) == 4 and rows[0]["network"] == "converted" and rows[0]["name"] == "c1"
    summary = list(csv.DictReader(open(paths["summary"])))
    assert [s["network"] for s in summary] == ["converted", "stdb", "ann"]
    # newer version, corrupt, foreign
    newer = dict(back, version=3)
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    with pytest.raises(ResultsError, match=r"newer\.json.*newer"):
        load_results(tmp_path / "newer.json")
    (tmp_path / "corrupt.json").write_text(json.dumps(back)[:-20])
    with pytest.raises(ResultsError, match=r"corrupt\.json.*corrupt"):
        load_results(tmp_path / "corrupt.json")
    broken = json.loads(json.dumps(back))
    del broken["networks"][0]["layers"][0]["spikes"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ResultsError, match=r"broken\.json.*spikes"):
        load_results(tmp_path / "broken.json")
    with pytest.raises(ResultsError, match="format"):
        save_results(tmp_path / "x", dict(doc, format="other"))
    assert not (tmp_path / "x").exists()


def test_the_paired_comparison_counts_the_images_each_network_alone_gets_right(tmp_path):
    rng = np.random.default_rng(10)
    doc, runs = _results_doc(rng)
    right = [r.sim.predictions == r.labels for r in runs]
    pair = doc["paired"][0]
    assert (pair["first"], pair["other"]) == ("converted", "stdb")
    assert (pair["first_only"], pair["other_only"]) == ((right[0] & ~right[1]).sum(), (right[1] & ~right[0]).sum())
    assert pair["p_value"] == sign_test_p(pair["first_only"], pair["other_only"])
    load_results(save_results(tmp_path, doc)["results"])
    for change, match in (({"first_only": pair["first_only"] + 1}, "accuracies"), ({"p_value": 0.5}, "sign test"),
                          ({"other": "ann"}, "two of the networks"), ({"first_only": -1}, "counts")):
        bad = json.loads(json.dumps(doc))
        bad["paired"][0].update(change)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ResultsError, match=match):
            load_results(tmp_path / "bad.json")


def test_the_sign_test_is_the_exact_binomial_tail():
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(5, 5) == 1.0
    assert sign_test_p(0, 5) == pytest.approx(2 / 32) and sign_test_p(8, 2) == pytest.approx(2 * 56 / 1024)
    assert sign_test_p(52, 59) == sign_test_p(59, 52) > 0.5              # 7 images of 111 disagreements: chance
    assert sign_test_p(20, 60) < 1e-4


def test_ann_macs_recorded_in_the_graph_and_loihi_ratio():
    rng = np.random.default_rng(11)
    g1, g2 = _two_graphs(rng, macs=(972, 300), data=DataRef("digits"))     # c1's 3x3 conv: 972 MACs exactly
    images = rng.integers(0, 256, size=(3, 1, 6, 6), dtype=np.uint8)
    runs = [NetworkRun(l, "x", g, simulate(g, (images, 0)), [0, 1, 2]) for l, g in (("a", g1), ("b", g2))]
    model = load_energy_model("loihi")
    doc = build_results(runs, model)
    assert doc["ann_baseline"]["macs"] == 1272 and doc["ann_baseline"]["macs_per_layer"] == [972, 300]
    assert doc["ann_baseline"]["energy"] == pytest.approx(1272 * 4.6)
    e = doc["networks"][0]["totals"]["energy"]
    assert doc["snn_vs_ann"]["networks"]["a"]["ratio"] == pytest.approx(e / (1272 * 4.6))


def test_energy_model_file_validation(tmp_path):
    good = json.loads((REPO / "hwsim" / "presets" / "loihi.json").read_text())
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(dict(good, name="mine", e_synaptic_event=1.5)))
    assert load_energy_model(path).e_synaptic_event == 1.5
    path.write_text(json.dumps(dict(good, e_synaptc_event=1.0)))
    with pytest.raises(EnergyModelError, match=r"mine\.json.*unknown field.*e_synaptc_event"):
        load_energy_model(path)
    bad = dict(good)
    del bad["e_spike_hop"]
    path.write_text(json.dumps(bad))
    with pytest.raises(EnergyModelError, match=r"mine\.json.*missing field.*e_spike_hop"):
        load_energy_model(path)
    path.write_text(json.dumps(dict(good, e_spike="lots")))
    with pytest.raises(EnergyModelError, match=r"mine\.json.*e_spike"):
        load_energy_model(path)
    path.write_text(json.dumps(dict(good, version=9)))
    with pytest.raises(EnergyModelError, match="newer"):
        load_energy_model(path)
    path.write_text("{not json")
    with pytest.raises(EnergyModelError, match=r"mine\.json"):
        load_energy_model(path)
    with pytest.raises(EnergyModelError, match="unknown energy model"):
        load_energy_model("tpu_v9")


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
@pytest.fixture()
def cli_files(tmp_path):
    rng = np.random.default_rng(12)
    g1, g2 = _two_graphs(rng, data=DataRef("digits"), provenance={"arch": "tiny"})
    p1 = save_graph(g1, tmp_path / "runs" / "r1" / "export" / "converted" / "coregraph.npz")
    p2 = save_graph(g2, tmp_path / "runs" / "r1" / "export" / "stdb" / "coregraph.npz")
    inp = InputSet(rng.integers(0, 256, size=(9, 1, 6, 6), dtype=np.uint8), rng.integers(0, 3, size=9), seed=2,
                   timesteps=5, dataset="digits")
    pin = save_inputs(tmp_path / "inputs.npz", inp)
    return tmp_path, p1, p2, pin


def test_cli_two_graphs_writes_results(cli_files, capsys):
    tmp, p1, p2, pin = cli_files
    out = tmp / "out"
    rc = hwrun.main(["--edp", "--graph", f"converted={p1}", "--graph", f"stdb={p2}", "--inputs", str(pin),
                     "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "converted / stdb" in printed and "results.json" in printed
    assert "image by image: stdb alone right on " in printed and "exact sign test p = " in printed
    doc = load_results(out / "results.json")
    assert [n["label"] for n in doc["networks"]] == ["converted", "stdb"]
    assert doc["samples"] == 9 and doc["timesteps"] == 5 and doc["seed"] == 2 and doc["energy_model"]["name"] == \
        "first_order"
    assert doc["networks"][0]["latency_steps"] == 2
    assert (out / "layers.csv").is_file() and (out / "summary.csv").is_file()
    # the replayed run gives the same numbers as the library on the same inputs
    sim = simulate(load_graph(p1), (load_inputs(pin).images, 2), timesteps=5)
    assert doc["networks"][0]["totals"]["spikes"] == sim.spikes
    # per image: the class and the output voltages, for comparison with any other simulator
    rows = pd.read_csv(out / "predictions.csv")
    first = rows[rows["network"] == "converted"]
    assert len(rows) == 18 and first["sample"].tolist() == list(range(9))
    assert (first[[f"v{c}" for c in range(sim.output.shape[1])]].to_numpy() == sim.output).all()
    assert first["predicted"].tolist() == sim.predictions.tolist()
    assert first["label"].tolist() == load_inputs(pin).labels.tolist()
    for n in doc["networks"]:
        mine = rows[rows["network"] == n["label"]]
        assert (mine["predicted"] == mine["label"]).mean() == pytest.approx(n["accuracy"])
    # default discovery: the newest runs/<name>/ with both stages; output in runs/<name>/hwsim;
    # an accuracy-vs-T sweep on the same inputs
    rc = hwrun.main(["--runs", str(tmp / "runs"), "--inputs", str(pin), "--samples", "4", "--no-progress",
                     "--energy-model", "loihi", "--device", "cpu", "--sweep", "2,5"])
    assert rc == 0
    doc2 = load_results(tmp / "runs" / "r1" / "hwsim" / "results.json")
    assert doc2["samples"] == 4 and doc2["energy_model"]["name"] == "loihi"
    assert [(p["network"], p["timesteps"]) for p in doc2["sweep"]] == [("converted", 2), ("converted", 5),
                                                                        ("stdb", 2), ("stdb", 5)]
    at5 = [p for p in doc2["sweep"] if p["timesteps"] == 5]
    assert [p["spikes_per_image"] for p in at5] == [n["totals"]["spikes_per_image"] for n in doc2["networks"]]


def test_sweep_below_at_and_above_the_run_T_equals_separate_runs(cli_files):
    """The sweep's T below the run's are read out of the run, those above it out of one
    longer run: each point is what a simulation of that T gives on the same images."""
    tmp, p1, p2, pin = cli_files
    out = tmp / "sweep"
    rc = hwrun.main(["--graph", f"converted={p1}", "--graph", f"stdb={p2}", "--inputs", str(pin), "--out", str(out),
                     "--sweep", "9,1,3,5,7", "--no-progress", "--device", "cpu"])
    assert rc == 0
    doc = load_results(out / "results.json")
    inputs = load_inputs(pin)
    points = {(p["network"], p["timesteps"]): p for p in doc["sweep"]}
    assert sorted(points) == [(n, t) for n in ("converted", "stdb") for t in (1, 3, 5, 7, 9)]
    for (label, t), point in points.items():
        sim = simulate(load_graph(p1 if label == "converted" else p2), (inputs.images, inputs.seed), timesteps=t)
        assert point["accuracy"] == pytest.approx(sim.accuracy(inputs.labels))
        assert point["spikes_per_image"] == pytest.approx(sim.spikes / 9)


def test_cli_exit_code_in_a_subprocess(cli_files):
    tmp, p1, _, pin = cli_files
    done = subprocess.run([sys.executable, "-m", "hwsim.run", "--edp", "--graph", f"a={tmp / 'missing.npz'}",
                           "--inputs", str(pin), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.npz" in lines[0]


def test_edp_flag_adds_energy_delay_and_edp_to_the_printed_report(tmp_path, capsys):
    """Without --edp the terminal gets accuracy and spikes; with it energy, delay, EDP and the
    SNN/ANN energy too. The files hold everything either way."""
    graph, _ = CASES["initial_potentials"]()
    save_graph(graph, tmp_path / "g.npz")
    images = np.random.default_rng(0).integers(0, 256, (4, *graph.input.shape), dtype=np.uint8)
    save_inputs(tmp_path / "in.npz", InputSet(images, np.zeros(4, dtype=np.int64), 0, graph.timesteps))
    printed = {}
    for flag in ([], ["--edp"]):
        out = tmp_path / f"hw{len(flag)}"
        assert hwrun.main(["--graph", f"a={tmp_path / 'g.npz'}", "--inputs", str(tmp_path / "in.npz"),
                           "--out", str(out), "--no-progress", *flag]) == 0
        printed[bool(flag)] = capsys.readouterr().out
        assert "edp" in json.loads((out / "results.json").read_text())["networks"][0]["totals"]
    assert "EDP" not in printed[False] and "spikes/img" in printed[False]
    assert "EDP" in printed[True] and "SNN/ANN" in printed[True]
