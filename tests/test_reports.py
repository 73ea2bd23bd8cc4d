"""Tests for reports/: rendering from a hand-made results.json (following the schema in
records/hwsim_results.py's docstring) and trainer_summary.json; CSV contents, Markdown links,
and the CLI's handling of bad input."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from records.hwsim_results import FORMAT, VERSION, load_results, sign_test_p
from records.trainer_summary import FORMAT as SUMMARY_FORMAT, VERSION as SUMMARY_VERSION
from reports.common import ReportError
from reports.render import render_report

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# name, op, neurons, spiking, fan-out (synaptic events per spike)
LAYERS = [("conv0", "conv", 2048, True, 576), ("conv3", "conv", 1024, True, 1152),
          ("fc7", "dense", 128, True, 10), ("fc9", "dense", 10, False, 0)]
SAMPLES, T = 50, 20
INPUT_NEURONS, INPUT_SPIKES = 64, 50 * 400
SPIKES = {"converted": [40_960, 30_720, 6_400, 0], "stdb": [30_720, 20_480, 4_000, 0]}
THRESHOLDS = {"converted": [2.0845, 1.5662, 0.7310, 0.0], "stdb": [2.0845, 1.4200, 0.7310, 0.0]}
ACCURACY = {"converted": 0.90, "stdb": 0.92}
MACS = [73_728, 294_912, 131_072, 1_280]
E_MAC, E_ADD = 4.6, 0.9


def make_network(label: str) -> dict:
    layers, prev_spikes, prev_fanout = [], INPUT_SPIKES, 144
    for i, ((name, op, neurons, spiking, fanout), spikes, thr) in enumerate(
            zip(LAYERS, SPIKES[label], THRESHOLDS[label])):
        syn = prev_spikes * prev_fanout
        layers.append({"index": i, "name": name, "op": op, "neurons": neurons, "spiking": spiking,
                       "float_threshold": thr, "vth": int(round(thr * 100)), "spikes": spikes,
                       "avg_spikes_per_neuron": spikes / (neurons * SAMPLES), "synaptic_events": syn,
                       "neuron_updates": neurons * T * SAMPLES, "active_neuron_updates": neurons * T * SAMPLES // 2,
                       "max_abs_input": 1000 + i, "energy": spikes / SAMPLES})   # first-order: 1 unit per spike
        prev_spikes, prev_fanout = spikes, fanout
    spikes = sum(SPIKES[label])
    spiking_neurons = sum(l[2] for l in LAYERS if l[3])
    energy = spikes / SAMPLES
    totals = {"spikes": spikes, "spikes_per_image": spikes / SAMPLES,
              "avg_spikes_per_neuron": spikes / (spiking_neurons * SAMPLES),
              "synaptic_events": sum(l["synaptic_events"] for l in layers),
              "neuron_updates": sum(l["neuron_updates"] for l in layers),
              "active_neuron_updates": sum(l["active_neuron_updates"] for l in layers),
              "energy": energy, "energy_total": energy * SAMPLES, "delay": float(T), "edp": energy * T}
    return {"label": label, "stage": label, "graph": f"runs/x/export/{label}/coregraph.npz", "accuracy": ACCURACY[label],
            "timesteps": T, "latency_steps": 4, "samples": SAMPLES, "seconds": 1.5, "device": "cpu",
            "input": {"neurons": INPUT_NEURONS, "spikes": INPUT_SPIKES,
                      "avg_spikes_per_neuron": INPUT_SPIKES / (INPUT_NEURONS * SAMPLES)},
            "layers": layers, "totals": totals}


def make_results(dataset="digits", arch="vgg_tiny", sweep=True) -> dict:
    nets = [make_network("converted"), make_network("stdb")]
    ann_energy = sum(MACS) * E_MAC
    cmp = {}
    for n in nets:
        e = E_ADD * n["totals"]["synaptic_events"] / SAMPLES
        cmp[n["label"]] = {"energy": e, "ratio": e / ann_energy}
    a, b = nets[0]["totals"], nets[1]["totals"]
    doc = {"format": FORMAT, "version": VERSION, "created": "2025-01-01T00:00:00+00:00",
           "dataset": dataset, "arch": arch, "samples": SAMPLES, "seed": 0, "timesteps": T,
           "inputs_file": None, "device": "cpu",
           "energy_model": {"name": "first_order", "source": "Rathi et al., ICLR 2020, Section 7",
                            "description": "every spike costs one unit", "path": "hwsim/presets/first_order.json",
                            "parameters": {"energy_unit": "spike", "delay_unit": "step", "e_spike": 1.0,
                                           "e_synaptic_event": 0.0, "e_neuron_update": 0.0,
                                           "e_active_neuron_update": None, "e_spike_hop": 0.0,
                                           "e_time_step": 0.0, "t_step": 1.0, "include_input_spikes": False,
                                           "e_mac": None, "e_mac_source": None}},
           "networks": nets,
           "ann_baseline": {"macs_per_layer": MACS, "macs": sum(MACS),
                            "model": "cmos45nm", "e_mac": E_MAC, "energy": ann_energy, "energy_unit": "pJ"},
           "ratios": [{"numerator": "converted", "denominator": "stdb",
                       **{k: a[k] / b[k] for k in ("spikes", "synaptic_events", "energy", "edp")}}],
           "snn_vs_ann": {"model": "cmos45nm", "energy_unit": "pJ", "ann_energy": ann_energy, "networks": cmp},
           "notes": ["energy model 'first_order' has no MAC energy: the SNN/ANN comparison uses 'cmos45nm'"],
           "paired": [{"first": "converted", "other": "stdb", "first_only": 2, "other_only": 3,   # 46 vs 45 of 50
                       "p_value": sign_test_p(2, 3)}]}
    if sweep:
        doc["sweep"] = [{"network": lab, "timesteps": t, "accuracy": acc, "spikes_per_image": spi}
                        for lab, base, f in (("converted", 0.80, 1.0), ("stdb", 0.85, 0.7))
                        for t, acc, spi in ((5, base - 0.2, 400.0 * f), (10, base - 0.05, 900.0 * f),
                                            (20, base + 0.1, 1500.0 * f), (40, base + 0.12, 2900.0 * f))]
    return doc


ACCURACY_ROWS = {"ann": 95.0, "converted_T200": 95.3, f"converted_T{T}": 91.9, f"stdb_T{T}": 92.8,
                 f"scratch_T{T}": 70.3}
SUMMARY = {"format": SUMMARY_FORMAT, "version": SUMMARY_VERSION, "dataset": "digits", "arch": "vgg_tiny",
           "surrogate": "stdb", "timesteps": {"reduced": T, "large": 200, "sweep": [5, 10, 20, 40]},
           "accuracy": [{"stage": "ann", "timesteps": None, "accuracy": 95.0},
                        {"stage": "converted", "timesteps": 200, "accuracy": 95.3},
                        {"stage": "converted", "timesteps": T, "accuracy": 91.9},
                        {"stage": "stdb", "timesteps": T, "accuracy": 92.8},
                        {"stage": "scratch", "timesteps": T, "accuracy": 70.3}],
           "seconds": {"ann": 8.8, "convert": 0.1, "stdb": 24.5, "scratch": 11.9}}


def make_run(root: Path, results: dict | None = None, summary: dict | None = SUMMARY) -> Path:
    run = root / "run"
    (run / "hwsim").mkdir(parents=True)
    (run / "hwsim" / "results.json").write_text(json.dumps(results or make_results()))
    if summary is not None:
        (run / "trainer_summary.json").write_text(json.dumps(summary))
    return run


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("reports"))
    md = render_report(run)
    return run, md


# --------------------------------------------------------------------------------------
def test_fixture_is_valid_results():
    doc = make_results()
    assert load_results_from(doc)["networks"][1]["label"] == "stdb"


def load_results_from(doc):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "results.json"
        p.write_text(json.dumps(doc))
        return load_results(p)


def test_files_exist_and_pngs(rendered):
    run, md = rendered
    assert md == run / "report.md" and md.stat().st_size > 0
    out = run / "report"
    for name in ("fig3_spikes_per_layer", "energy", "accuracy_vs_timesteps"):
        png = (out / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000
        assert (out / f"{name}.csv").stat().st_size > 0
    assert (out / "table1.csv").stat().st_size > 0
    assert not [p for p in files_under(run) if p.name.endswith(".tmp")]


def test_fig3_csv_holds_the_fixture(rendered):
    run, _ = rendered
    doc = make_results()
    rows = read_csv(run / "report" / "fig3_spikes_per_layer.csv")
    assert [r["layer"] for r in rows] == ["conv0", "conv3", "fc7", "total"]     # spiking layers only
    for net in doc["networks"]:
        lab = net["label"]
        for r, lay in zip(rows[:-1], [l for l in net["layers"] if l["spiking"]], strict=True):
            assert float(r[f"{lab}_avg_spikes_per_neuron"]) == pytest.approx(lay["avg_spikes_per_neuron"], rel=1e-12)
            assert float(r[f"{lab}_float_threshold"]) == pytest.approx(lay["float_threshold"])
            assert int(r[f"{lab}_vth"]) == lay["vth"]
            assert float(r[f"{lab}_spikes_per_image"]) == pytest.approx(lay["spikes"] / SAMPLES)
        assert float(rows[-1][f"{lab}_avg_spikes_per_neuron"]) == pytest.approx(net["totals"]["avg_spikes_per_neuron"])
    col = "spike_ratio_converted/stdb"
    assert float(rows[-1][col]) == pytest.approx(doc["ratios"][0]["spikes"], rel=1e-12)
    assert float(rows[-1][col]) == pytest.approx(sum(SPIKES["converted"]) / sum(SPIKES["stdb"]))
    assert float(rows[0][col]) == pytest.approx(SPIKES["converted"][0] / SPIKES["stdb"][0])


def test_energy_csv_holds_the_fixture(rendered):
    run, _ = rendered
    doc = make_results()
    rows = read_csv(run / "report" / "energy.csv")
    get = {(r["network"], r["layer"], r["quantity"]): r for r in rows}
    for net in doc["networks"]:
        for lay in net["layers"]:
            r = get[(net["label"], lay["name"], "energy_per_image")]
            assert float(r["value"]) == pytest.approx(lay["energy"]) and r["unit"] == "spike"
        for q, k in (("energy_per_image", "energy"), ("delay", "delay"), ("edp", "edp")):
            assert float(get[(net["label"], "total", q)]["value"]) == pytest.approx(net["totals"][k])
        assert float(get[(net["label"], "total", "energy_ratio_to_ann")]["value"]) == pytest.approx(
            doc["snn_vs_ann"]["networks"][net["label"]]["ratio"])
    assert float(get[("ann", "total", "energy_per_image_vs_ann_model")]["value"]) == pytest.approx(sum(MACS) * E_MAC)
    assert get[("ann", "total", "energy_per_image_vs_ann_model")]["unit"] == "pJ"
    assert float(get[("converted/stdb", "total", "edp_ratio")]["value"]) == pytest.approx(doc["ratios"][0]["edp"])


def test_table1_and_sweep_csv(rendered):
    run, _ = rendered
    rows = {r["row"]: r for r in read_csv(run / "report" / "table1.csv")}
    assert list(rows) == ["ann", "converted_T200", f"converted_T{T}", f"stdb_T{T}", f"scratch_T{T}"]
    for key, v in ACCURACY_ROWS.items():
        assert float(rows[key]["float_accuracy"]) == pytest.approx(v)
    assert float(rows[f"converted_T{T}"]["fixed_point_accuracy"]) == pytest.approx(90.0)
    assert float(rows[f"stdb_T{T}"]["fixed_point_accuracy"]) == pytest.approx(92.0)
    assert rows["converted_T200"]["fixed_point_accuracy"] == "" and rows["ann"]["paper_accuracy"] == ""
    sweep = read_csv(run / "report" / "accuracy_vs_timesteps.csv")
    pts = [r for r in sweep if r["timesteps"]]
    assert len(pts) == 8
    src = {(p["network"], p["timesteps"]): p for p in make_results()["sweep"]}
    for r in pts:
        p = src[(r["network"], int(r["timesteps"]))]
        assert float(r["accuracy_percent"]) == pytest.approx(100 * p["accuracy"])
        assert float(r["spikes_per_image"]) == pytest.approx(p["spikes_per_image"])
    assert [float(r["accuracy_percent"]) for r in sweep if r["network"] == "ann (float)"] == [95.0]


def test_markdown_links_resolve_and_numbers(rendered):
    run, md = rendered
    text = md.read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) >= 7
    for link in links:
        assert (md.parent / link).is_file(), link
    names = {Path(l).name for l in links}
    assert {"fig3_spikes_per_layer.png", "fig3_spikes_per_layer.csv", "energy.png", "energy.csv",
            "accuracy_vs_timesteps.png", "table1.csv"} <= names
    ratio = sum(SPIKES["converted"]) / sum(SPIKES["stdb"])
    assert f"fires {ratio:.2f}x fewer spikes" in text
    assert "+2.0 points" in text                        # 92 % vs 90 %, fixed point
    assert ("`stdb` alone is right on 3 images and `converted` alone on 2 (exact sign test p = 1: within chance)"
            in text)
    assert "| ANN |" in text and "95.00" in text and "70.30" in text
    assert "No row of the paper's Table 1 matches" in text
    assert "Rathi et al., ICLR 2020, Section 7" in text   # the energy model's source


def test_no_sweep_and_no_summary_with_paper_row(tmp_path):
    run = make_run(tmp_path, make_results(dataset="cifar10", arch="vgg16", sweep=False), summary=None)
    out = tmp_path / "elsewhere"
    md = render_report(run, out=out)
    assert md == out / "report.md"
    assert not (out / "report" / "accuracy_vs_timesteps.png").exists()
    text = md.read_text()
    assert "no `sweep`" in text
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (md.parent / link).is_file(), link
    rows = read_csv(out / "report" / "table1.csv")
    assert [r["network"] for r in rows] == ["converted", "stdb"]
    assert float(rows[0]["paper_accuracy"]) == 90.20 and rows[0]["paper_timesteps"] == "100"
    assert float(rows[1]["paper_accuracy"]) == 91.13
    assert "paper, VGG16, CIFAR-10" in text
    assert not (run / "report.md").exists()


def test_render_report_raises_report_error(tmp_path):
    with pytest.raises(ReportError):
        render_report(tmp_path / "missing")


def test_cli_subprocess(tmp_path):
    p = subprocess.run([sys.executable, "-m", "reports", str(tmp_path / "none")], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "no such results file" in p.stderr
    run = make_run(tmp_path)
    code = ("import sys; from reports.__main__ import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, str(run), "--out", str(tmp_path / "o")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = p.stdout.strip().splitlines()
    assert Path(out[0]) == tmp_path / "o" / "report.md" and out[1] == "False"    # no torch imported


def test_single_network_without_accuracy_renders(tmp_path):
    doc = make_results(sweep=False)
    doc["networks"] = doc["networks"][:1]
    doc["networks"][0]["accuracy"] = None
    doc["ratios"], doc["paired"] = [], []
    doc["snn_vs_ann"]["networks"] = {"converted": doc["snn_vs_ann"]["networks"]["converted"]}
    run = make_run(tmp_path, doc, summary=None)
    md = render_report(run)
    text = md.read_text()
    assert "Only one network (`converted`)" in text
    for link in re.findall(r"\]\(([^)]+)\)", text):
        assert (md.parent / link).is_file(), link
    rows = read_csv(run / "report" / "fig3_spikes_per_layer.csv")
    assert rows[-1]["layer"] == "total" and not any(k.startswith("spike_ratio") for k in rows[0])
    t1 = read_csv(run / "report" / "table1.csv")
    assert [r["network"] for r in t1] == ["converted"] and t1[0]["fixed_point_accuracy"] == ""


def test_fine_tuning_surrogate_named_in_table1(tmp_path):
    run = make_run(tmp_path, summary={**SUMMARY, "surrogate": "linear"})
    render_report(run)
    rows = read_csv(run / "report" / "table1.csv")
    assert "hybrid (fine-tuned, linear surrogate)" in [r["network"] for r in rows]


def test_float_accuracies_on_different_subsets_say_how_many_images(tmp_path):
    """A version-2 summary records each evaluation's images; where they differ, Table 1 says so."""
    accuracy = [dict(a, samples=n) for a, n in zip(SUMMARY["accuracy"], (1797, 64, 360, 360, 360))]
    run = make_run(tmp_path, summary={**SUMMARY, "version": 2, "accuracy": accuracy})
    md = render_report(run).read_text()
    assert "(64 imgs)" in md and "(1,797 imgs)" in md
    rows = read_csv(run / "report" / "table1.csv")
    assert [r["float_samples"] for r in rows][:2] == ["1797", "64"]
