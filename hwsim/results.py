"""THE hwsim results format (the one definition; ``reports/`` reads it).

``results.json``::

    {"format": "hybrid-snn-hwsim-results", "version": 1, "created": ISO time,
     "dataset", "arch", "samples", "seed", "timesteps", "inputs_file", "device",
     "energy_model": {"name", "source", "description", "path", "parameters": {...}},
     "networks": [{
        "label", "graph", "accuracy", "timesteps", "latency_steps", "samples", "seconds",
        "input":  {"neurons", "spikes", "avg_spikes_per_neuron"},
        "layers": [{"index", "name", "op", "neurons", "spiking", "float_threshold", "vth",
                    "spikes", "avg_spikes_per_neuron", "synaptic_events", "neuron_updates",
                    "active_neuron_updates", "max_abs_input", "energy"}],
        "totals": {"spikes", "spikes_per_image", "avg_spikes_per_neuron", "synaptic_events",
                   "neuron_updates", "active_neuron_updates", "energy", "energy_total",
                   "delay", "edp"}}],
     "ann_baseline": {"macs_per_layer", "macs", "macs_source", "model", "e_mac", "energy", "energy_unit"},
     "ratios": [{"numerator", "denominator", "spikes", "synaptic_events", "energy", "edp"}],
     "snn_vs_ann": {"model", "energy_unit", "ann_energy", "networks": {label: {"energy", "ratio"}}},
     "notes": [str],
     "sweep": [{"network", "timesteps", "accuracy", "spikes_per_image"}]}   (optional: accuracy vs T)

Units and conventions: counts (spikes, synaptic_events, neuron updates) are totals over
all T steps and samples; ``spikes_per_image`` = spikes / samples; ``avg_spikes_per_neuron``
is the paper's Fig. 3 quantity (all spikes of a layer over T steps / its neurons, averaged
over the samples); ``energy`` (layer and total), ``delay`` and ``edp`` are per image in
the model's ``energy_unit`` / ``delay_unit`` (``energy_total`` = all samples). Network
spikes exclude the input's spikes (identical for every network fed the same inputs; they
are listed under ``input``). ``ratios`` divide the first network by each other one (e.g.
converted / stdb); ``snn_vs_ann`` divides each network's energy by the ANN baseline's.

Beside it: ``layers.csv`` (one row per network x layer) and ``summary.csv`` (one row per
network plus one for the ANN). All three are written atomically, together.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from export import fixedpoint as fx

FORMAT = "hybrid-snn-hwsim-results"
VERSION = 1
RESULTS_NAME, LAYERS_NAME, SUMMARY_NAME = "results.json", "layers.csv", "summary.csv"

LAYER_COLUMNS = ["network", "index", "name", "op", "neurons", "spiking", "float_threshold", "vth", "spikes",
                 "avg_spikes_per_neuron", "synaptic_events", "neuron_updates", "active_neuron_updates",
                 "max_abs_input", "energy", "energy_unit"]
SUMMARY_COLUMNS = ["network", "kind", "graph", "accuracy", "timesteps", "latency_steps", "samples", "spikes",
                   "spikes_per_image", "avg_spikes_per_neuron", "synaptic_events", "macs", "energy",
                   "energy_unit", "delay", "delay_unit", "edp", "energy_vs_ann"]


class ResultsError(ValueError):
    """A results file that is missing, corrupt, of another format or a newer version."""


@dataclass
class NetworkRun:
    """One simulated network: what ``build_results`` needs."""
    label: str
    graph_path: str
    graph: object            # export.graph.CoreGraph
    sim: object              # hwsim.core.SimResult
    labels: object           # true labels (N,)


def _ratio(a, b):
    return None if b in (0, None) or a is None else float(a) / float(b)


def network_entry(run: NetworkRun, model) -> dict:
    sim, graph = run.sim, run.graph
    n = max(sim.samples, 1)
    energy = model.evaluate(sim)
    layers = []
    for i, (l, e) in enumerate(zip(sim.layers, energy["layers"])):
        layers.append({"index": i, "name": l.name, "op": l.op, "neurons": l.neurons, "spiking": l.spiking,
                       "float_threshold": float(l.float_threshold), "vth": int(l.vth), "spikes": int(l.spikes),
                       "avg_spikes_per_neuron": l.avg_spikes_per_neuron,
                       "synaptic_events": int(l.synaptic_events), "neuron_updates": int(l.neuron_updates),
                       "active_neuron_updates": int(l.active_neuron_updates),
                       "max_abs_input": int(l.max_abs_input), "energy": float(e)})
    spiking_neurons = sum(l.neurons for l in sim.layers if l.spiking)
    totals = {"spikes": sim.spikes, "spikes_per_image": sim.spikes / n,
              "avg_spikes_per_neuron": sim.spikes / (spiking_neurons * n) if spiking_neurons else 0.0,
              "synaptic_events": sim.synaptic_events,
              "neuron_updates": int(sum(l.neuron_updates for l in sim.layers)),
              "active_neuron_updates": int(sum(l.active_neuron_updates for l in sim.layers)),
              "energy": energy["energy"], "energy_total": energy["energy_total"],
              "delay": energy["delay"], "edp": energy["edp"]}
    return {"label": run.label, "graph": str(run.graph_path),
            "accuracy": sim.accuracy(run.labels) if sim.samples else None,
            "timesteps": sim.timesteps, "latency_steps": fx.latency_steps(graph), "samples": sim.samples,
            "seconds": round(float(sim.seconds), 3), "device": sim.device,
            "input": {"neurons": sim.input_neurons, "spikes": sim.input_spikes,
                      "avg_spikes_per_neuron": sim.input_spikes / (sim.input_neurons * n)},
            "layers": layers, "totals": totals}


def sweep_point(label: str, sim, labels) -> dict:
    """One point of the optional accuracy-vs-T sweep."""
    return {"network": label, "timesteps": sim.timesteps,
            "accuracy": sim.accuracy(labels) if sim.samples else None,
            "spikes_per_image": sim.spikes / max(sim.samples, 1)}


def build_results(runs: list[NetworkRun], model, *, dataset: str = "", arch: str = "", seed: int = 0,
                  inputs_file: str | None = None, ann_model=None, notes: list[str] | None = None,
                  sweep: list[dict] | None = None) -> dict:
    """Assemble the results document. ``ann_model``: the model for the SNN/ANN comparison
    when ``model`` has no MAC energy (default: the cmos45nm preset). ``sweep``: optional
    ``sweep_point``s (the same inputs at other T)."""
    from hwsim.energy import ANN_REFERENCE_MODEL, ann_macs, load_energy_model

    if not runs:
        raise ResultsError("no networks to report")
    nets = [network_entry(r, model) for r in runs]
    notes = list(notes or [])
    macs, macs_source = ann_macs(runs[0].graph)
    cmp_model = model if model.e_mac is not None else (ann_model or load_energy_model(ANN_REFERENCE_MODEL))
    if cmp_model is not model:
        notes.append(f"energy model {model.name!r} has no MAC energy: the SNN/ANN comparison uses "
                     f"{cmp_model.name!r}")
    if macs_source == "cores":
        notes.append("ANN MACs computed from the cores (the graph's provenance has no 'ann_macs'); "
                     "folded pools counted at the ANN's unfolded size")
    ann_energy = cmp_model.ann_energy(sum(macs))
    ann = {"macs_per_layer": macs, "macs": int(sum(macs)), "macs_source": macs_source, "model": cmp_model.name,
           "e_mac": cmp_model.e_mac, "energy": ann_energy, "energy_unit": cmp_model.energy_unit}
    snn_vs_ann = {"model": cmp_model.name, "energy_unit": cmp_model.energy_unit, "ann_energy": ann_energy,
                  "networks": {}}
    for r, net in zip(runs, nets):
        e = net["totals"]["energy"] if cmp_model is model else cmp_model.evaluate(r.sim)["energy"]
        snn_vs_ann["networks"][r.label] = {"energy": e, "ratio": _ratio(e, ann_energy)}
    ratios = []
    for other in nets[1:]:
        a, b = nets[0]["totals"], other["totals"]
        ratios.append({"numerator": nets[0]["label"], "denominator": other["label"],
                       **{k: _ratio(a[k], b[k]) for k in ("spikes", "synaptic_events", "energy", "edp")}})
    first = runs[0].sim
    for net in nets:
        for l in net["layers"]:
            if l["max_abs_input"] >= 2 ** (fx.HW_INPUT_BITS - 1):
                notes.append(f"{net['label']}: layer {l['name']} received a synaptic input of "
                             f"{l['max_abs_input']}, outside the {fx.HW_INPUT_BITS}-bit range of real Loihi "
                             "hardware (Lava does not enforce it)")
    doc = {"format": FORMAT, "version": VERSION,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "dataset": dataset, "arch": arch, "samples": first.samples, "seed": int(seed),
           "timesteps": first.timesteps, "inputs_file": None if inputs_file is None else str(inputs_file),
           "device": first.device, "energy_model": model.to_json(), "networks": nets, "ann_baseline": ann,
           "ratios": ratios, "snn_vs_ann": snn_vs_ann, "notes": notes}
    if sweep:
        doc["sweep"] = sorted(sweep, key=lambda p: ([r.label for r in runs].index(p["network"])
                                                    if p["network"] in [r.label for r in runs] else len(runs),
                                                    p["timesteps"]))
    return doc


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
_NUM = (int, float)
_TOP = {"format": str, "version": int, "created": str, "dataset": str, "arch": str, "samples": int, "seed": int,
        "timesteps": int, "device": str, "energy_model": dict, "networks": list, "ann_baseline": dict,
        "ratios": list, "snn_vs_ann": dict, "notes": list}
_NET = {"label": str, "graph": str, "timesteps": int, "latency_steps": int, "samples": int, "input": dict,
        "layers": list, "totals": dict}
_LAYER = {"index": int, "name": str, "op": str, "neurons": int, "spiking": bool, "float_threshold": _NUM,
          "vth": int, "spikes": int, "avg_spikes_per_neuron": _NUM, "synaptic_events": int,
          "neuron_updates": int, "active_neuron_updates": int, "max_abs_input": int, "energy": _NUM}
_TOTALS = {"spikes": int, "spikes_per_image": _NUM, "avg_spikes_per_neuron": _NUM, "synaptic_events": int,
           "neuron_updates": int, "active_neuron_updates": int, "energy": _NUM, "energy_total": _NUM,
           "delay": _NUM, "edp": _NUM}
_ANN = {"macs_per_layer": list, "macs": int, "macs_source": str, "model": str}
_SWEEP = {"network": str, "timesteps": int, "accuracy": _NUM, "spikes_per_image": _NUM}


def _check(d, spec: dict, where: str) -> None:
    if not isinstance(d, dict):
        raise ResultsError(f"{where} must be an object")
    for k, t in spec.items():
        if k not in d:
            raise ResultsError(f"{where}: missing {k!r}")
        v = d[k]
        bad = isinstance(v, bool) and t is not bool
        if bad or not isinstance(v, t) or (isinstance(v, float) and not math.isfinite(v)):
            raise ResultsError(f"{where}: {k!r} has the wrong type or value ({v!r})")


def validate_results(doc) -> dict:
    if not isinstance(doc, dict):
        raise ResultsError("not a JSON object")
    if doc.get("format") != FORMAT:
        raise ResultsError(f"format {doc.get('format')!r} is not {FORMAT!r}")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultsError(f"version {version!r} is not an integer")
    if version > VERSION:
        raise ResultsError(f"version {version} is newer than this reader ({VERSION}); upgrade hwsim")
    if version < 1:
        raise ResultsError(f"unknown version {version}")
    _check(doc, _TOP, "results")
    if not doc["networks"]:
        raise ResultsError("results: no networks")
    for i, net in enumerate(doc["networks"]):
        _check(net, _NET, f"networks[{i}]")
        acc = net.get("accuracy")
        if acc is not None and (isinstance(acc, bool) or not isinstance(acc, _NUM) or not 0 <= acc <= 1):
            raise ResultsError(f"networks[{i}]: accuracy {acc!r} is not in [0, 1]")
        _check(net["totals"], _TOTALS, f"networks[{i}].totals")
        for j, layer in enumerate(net["layers"]):
            _check(layer, _LAYER, f"networks[{i}].layers[{j}]")
    _check(doc["ann_baseline"], _ANN, "ann_baseline")
    if "sweep" in doc:
        if not isinstance(doc["sweep"], list):
            raise ResultsError("results: 'sweep' must be a list")
        for i, point in enumerate(doc["sweep"]):
            _check(point, _SWEEP, f"sweep[{i}]")
    return doc


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate ``results.json`` (or a folder holding it); errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise ResultsError(f"{path}: no such results file")
    try:
        return validate_results(json.loads(path.read_text()))
    except ResultsError as exc:
        raise ResultsError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: corrupt results file ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def layer_rows(doc: dict) -> list[dict]:
    unit = doc["energy_model"]["parameters"]["energy_unit"]
    return [{"network": net["label"], **{k: l[k] for k in LAYER_COLUMNS[1:-1]}, "energy_unit": unit}
            for net in doc["networks"] for l in net["layers"]]


def summary_rows(doc: dict) -> list[dict]:
    p = doc["energy_model"]["parameters"]
    cmp = doc["snn_vs_ann"]
    rows = []
    for net in doc["networks"]:
        t = net["totals"]
        rows.append({"network": net["label"], "kind": "snn", "graph": net["graph"], "accuracy": net["accuracy"],
                     "timesteps": net["timesteps"], "latency_steps": net["latency_steps"],
                     "samples": net["samples"], "spikes": t["spikes"], "spikes_per_image": t["spikes_per_image"],
                     "avg_spikes_per_neuron": t["avg_spikes_per_neuron"], "synaptic_events": t["synaptic_events"],
                     "macs": "", "energy": t["energy"], "energy_unit": p["energy_unit"], "delay": t["delay"],
                     "delay_unit": p["delay_unit"], "edp": t["edp"],
                     "energy_vs_ann": cmp["networks"].get(net["label"], {}).get("ratio")})
    ann = doc["ann_baseline"]
    rows.append({"network": "ann", "kind": "ann", "graph": "", "accuracy": "", "timesteps": "",
                 "latency_steps": "", "samples": doc["samples"], "spikes": "", "spikes_per_image": "",
                 "avg_spikes_per_neuron": "", "synaptic_events": "", "macs": ann["macs"], "energy": ann["energy"],
                 "energy_unit": ann.get("energy_unit", ""), "delay": "", "delay_unit": "", "edp": "",
                 "energy_vs_ann": 1.0 if ann["energy"] else ""})
    return rows


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def write_files_atomically(files: dict[Path, str | bytes]) -> None:
    """Write every file to a temporary sibling first, then rename them all: a failure
    before the renames leaves nothing behind."""
    tmps = []
    try:
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            tmps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
        for tmp, path in tmps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in tmps:
            Path(tmp).unlink(missing_ok=True)
        raise


def save_results(out_dir: str | os.PathLike, doc: dict,
                 extra: dict[str, tuple[str, str | bytes]] | None = None) -> dict[str, Path]:
    """Validate, then write results.json, layers.csv and summary.csv (and ``extra``
    files: key -> (file name, content)) into ``out_dir``, all or nothing."""
    validate_results(doc)
    out = Path(out_dir)
    paths = {"results": out / RESULTS_NAME, "layers": out / LAYERS_NAME, "summary": out / SUMMARY_NAME}
    files = {paths["results"]: json.dumps(doc, indent=1) + "\n",
             paths["layers"]: _csv_text(layer_rows(doc), LAYER_COLUMNS),
             paths["summary"]: _csv_text(summary_rows(doc), SUMMARY_COLUMNS)}
    for key, (name, content) in (extra or {}).items():
        paths[key] = out / name
        files[paths[key]] = content
    write_files_atomically(files)
    return paths
