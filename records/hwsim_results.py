"""hwsim's results: the one definition of the format that ``reports/`` reads.

``results.json``::

    {"format": "hybrid-snn-hwsim-results", "version": 2, "created": ISO time,
     "dataset", "arch", "samples", "seed", "timesteps", "inputs_file", "device",
     "energy_model": {"name", "source", "description", "path", "parameters": {...}},
     "networks": [{
        "label", "stage", "graph", "accuracy", "timesteps", "latency_steps", "samples", "seconds",
        "input":  {"neurons", "spikes", "avg_spikes_per_neuron"},
        "layers": [{"index", "name", "op", "neurons", "spiking", "float_threshold", "vth",
                    "spikes", "avg_spikes_per_neuron", "synaptic_events", "neuron_updates",
                    "active_neuron_updates", "max_abs_input", "energy"}],
        "totals": {"spikes", "spikes_per_image", "avg_spikes_per_neuron", "synaptic_events",
                   "neuron_updates", "active_neuron_updates", "energy", "energy_total",
                   "delay", "edp"}}],
     "ann_baseline": {"macs_per_layer", "macs", "model", "e_mac", "energy", "energy_unit"},
     "ratios": [{"numerator", "denominator", "spikes", "synaptic_events", "energy", "edp"}],
     "snn_vs_ann": {"model", "energy_unit", "ann_energy", "networks": {label: {"energy", "ratio"}}},
     "notes": [str],
     "sweep": [{"network", "timesteps", "accuracy", "spikes_per_image"}],   (optional: accuracy vs T)
     "paired": [{"first", "other", "first_only", "other_only", "p_value"}]}  (optional)

``stage`` is the trainer stage the network's graph came from (null for a graph made by
hand); ``macs`` and ``energy`` of the ANN baseline are null when a graph does not record
its ANN's MACs. Units and conventions: counts (spikes, synaptic_events, neuron updates) are totals over
all T steps and samples; ``spikes_per_image`` = spikes / samples; ``avg_spikes_per_neuron``
is the paper's Fig. 3 quantity (all spikes of a layer over T steps / its neurons, averaged
over the samples); ``energy`` (layer and total), ``delay`` and ``edp`` are per image in
the model's ``energy_unit`` / ``delay_unit`` (``energy_total`` = all samples). Network
spikes exclude the input's spikes (identical for every network fed the same inputs; they
are listed under ``input``). ``ratios`` divide the first network by each other one (e.g.
converted / stdb); ``snn_vs_ann`` divides each network's energy by the ANN baseline's.
``paired`` compares the first network with each other one image by image on the same
inputs: ``first_only`` images the first classifies right and the other wrong,
``other_only`` the reverse (their difference over ``samples`` is the accuracy
difference), and ``p_value`` the exact two-sided sign test of the two counts
(``sign_test_p``): the chance of a split at least this uneven if either network were as
likely to win each disagreement. On 1,500 images a point of accuracy is 15 images.

Beside it: ``layers.csv`` (one row per network x layer), ``summary.csv`` (one row per
network plus one for the ANN) and ``predictions.csv`` (one row per network x image:
``network, sample, label, predicted, v0..v{C-1}``, ``sample`` the image's index in the
inputs hwsim ran -- the test split's order, ``inputs.npz`` -- and ``v`` the integer output
voltages after T steps, whose argmax, lowest class on ties, is ``predicted``), so that any
other simulator can be compared image by image. All are written atomically, together.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from records.atomic import write_together
from records.header import RecordError, check_header, finite_number, read_json_record
from records.layout import LAYERS_FILE, PREDICTIONS_FILE, RESULTS_FILE, SNN_STAGES, SUMMARY_FILE
from records.table import csv_text

FORMAT = "hybrid-snn-hwsim-results"
VERSION = 2              # 2: per-network stage; ANN MACs may be unknown (null)
OLDEST_READABLE = 2

LAYER_COLUMNS = ["network", "index", "name", "op", "neurons", "spiking", "float_threshold", "vth", "spikes",
                 "avg_spikes_per_neuron", "synaptic_events", "neuron_updates", "active_neuron_updates",
                 "max_abs_input", "energy", "energy_unit"]
SUMMARY_COLUMNS = ["network", "kind", "stage", "graph", "accuracy", "timesteps", "latency_steps", "samples",
                   "spikes", "spikes_per_image", "avg_spikes_per_neuron", "synaptic_events", "macs", "energy",
                   "energy_unit", "delay", "delay_unit", "edp", "energy_vs_ann"]


class ResultsError(RecordError):
    """A results file that is missing, corrupt, of another format or a newer version."""


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
_NUM = (int, float)
_TOP = {"format": str, "version": int, "created": str, "dataset": str, "arch": str, "samples": int, "seed": int,
        "timesteps": int, "device": str, "energy_model": dict, "networks": list, "ann_baseline": dict,
        "ratios": list, "snn_vs_ann": dict, "notes": list}
_NET = {"label": str, "stage": (str, type(None)), "graph": str, "timesteps": int, "latency_steps": int, "samples": int,
        "input": dict, "layers": list, "totals": dict}
_LAYER = {"index": int, "name": str, "op": str, "neurons": int, "spiking": bool, "float_threshold": _NUM,
          "vth": int, "spikes": int, "avg_spikes_per_neuron": _NUM, "synaptic_events": int,
          "neuron_updates": int, "active_neuron_updates": int, "max_abs_input": int, "energy": _NUM}
_TOTALS = {"spikes": int, "spikes_per_image": _NUM, "avg_spikes_per_neuron": _NUM, "synaptic_events": int,
           "neuron_updates": int, "active_neuron_updates": int, "energy": _NUM, "energy_total": _NUM,
           "delay": _NUM, "edp": _NUM}
_ANN = {"macs_per_layer": (list, type(None)), "macs": (int, type(None)), "model": str}
_SWEEP = {"network": str, "timesteps": int, "accuracy": _NUM, "spikes_per_image": _NUM}
_PAIRED = {"first": str, "other": str, "first_only": int, "other_only": int, "p_value": _NUM}


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign test: P(a split of ``wins + losses`` fair coin tosses at least as
    uneven as this one); 1 for no disagreement."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _check(d, spec: dict, where: str) -> None:
    if not isinstance(d, dict):
        raise ResultsError(f"{where} must be an object")
    for k, t in spec.items():
        if k not in d:
            raise ResultsError(f"{where}: missing {k!r}")
        v = d[k]
        bad = isinstance(v, bool) and t is not bool
        if bad or not isinstance(v, t) or (isinstance(v, float) and not finite_number(v)):
            raise ResultsError(f"{where}: {k!r} has the wrong type or value ({v!r})")


def _same(a: float, b: float) -> bool:
    """Equal up to the rounding of sums taken in another order."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _agree(where: str, what: str, got, want) -> None:
    if not _same(got, want):
        raise ResultsError(f"{where}: {what} is {got!r} but its parts give {want!r} (an edited or corrupt file?)")


def _non_negative(d: dict, spec: dict, where: str) -> None:
    for k, t in spec.items():
        if t in (int, _NUM) and not isinstance(d[k], bool) and d[k] < 0:
            raise ResultsError(f"{where}: {k!r} is negative ({d[k]!r})")


def _check_network(net: dict, where: str, doc: dict) -> None:
    """Types and ranges, then the identities that hold by construction (hwsim.results):
    totals are the sums of the layers, per-image and per-neuron values divide by the
    samples and neurons, and EDP = energy x delay."""
    _check(net, _NET, where)
    if net["stage"] is not None and net["stage"] not in SNN_STAGES:
        raise ResultsError(f"{where}: stage {net['stage']!r} is not one of {', '.join(SNN_STAGES)}")
    if net["label"] in SNN_STAGES and net["stage"] is not None and net["label"] != net["stage"]:
        raise ResultsError(f"{where}: labelled {net['label']!r}, a trainer stage, but its graph is of the "
                           f"{net['stage']!r} network")
    acc = net.get("accuracy")
    if acc is not None and (isinstance(acc, bool) or not isinstance(acc, _NUM) or not 0 <= acc <= 1):
        raise ResultsError(f"{where}: accuracy {acc!r} is not in [0, 1]")
    n = net["samples"]
    if n < 1 or net["timesteps"] < 1 or net["latency_steps"] < 0:
        raise ResultsError(f"{where}: samples and timesteps must be >= 1, latency_steps >= 0")
    if n != doc["samples"] or net["timesteps"] != doc["timesteps"]:
        raise ResultsError(f"{where}: {n} samples at T={net['timesteps']}, the results' header says "
                           f"{doc['samples']} at T={doc['timesteps']}")
    t, layers = net["totals"], net["layers"]
    _check(t, _TOTALS, f"{where}.totals")
    _non_negative(t, _TOTALS, f"{where}.totals")
    if not layers:
        raise ResultsError(f"{where}: no layers")
    for j, layer in enumerate(layers):
        lw = f"{where}.layers[{j}]"
        _check(layer, _LAYER, lw)
        _non_negative(layer, _LAYER, lw)
        if layer["neurons"] < 1:
            raise ResultsError(f"{lw}: 'neurons' must be >= 1, got {layer['neurons']}")
        if layer["active_neuron_updates"] > layer["neuron_updates"]:
            raise ResultsError(f"{lw}: more active neuron updates than updates")
        _agree(lw, "avg_spikes_per_neuron", layer["avg_spikes_per_neuron"], layer["spikes"] / (layer["neurons"] * n))
    spiking = [l for l in layers if l["spiking"]]
    for key in ("synaptic_events", "neuron_updates", "active_neuron_updates"):
        _agree(f"{where}.totals", key, t[key], sum(l[key] for l in layers))
    _agree(f"{where}.totals", "spikes", t["spikes"], sum(l["spikes"] for l in spiking))
    _agree(f"{where}.totals", "spikes_per_image", t["spikes_per_image"], t["spikes"] / n)
    neurons = sum(l["neurons"] for l in spiking)
    _agree(f"{where}.totals", "avg_spikes_per_neuron", t["avg_spikes_per_neuron"],
           t["spikes"] / (neurons * n) if neurons else 0.0)
    if t["energy"] < sum(l["energy"] for l in layers) * (1 - 1e-6) - 1e-9:
        raise ResultsError(f"{where}.totals: energy {t['energy']!r} is below the sum of its layers' energies")
    _agree(f"{where}.totals", "energy_total", t["energy_total"], t["energy"] * n)
    _agree(f"{where}.totals", "edp", t["edp"], t["energy"] * t["delay"])


def _ratio_of(a, b):
    return None if a is None or b in (None, 0) else a / b


def _ratio_agrees(got, want) -> bool:
    """A recorded ratio matches its parts' (both absent, or equal up to rounding)."""
    if want is None or got is None:
        return want is None and got is None
    return finite_number(got) and _same(got, want)


def _check_comparisons(doc: dict) -> None:
    totals = {net["label"]: net["totals"] for net in doc["networks"]}
    if len(totals) != len(doc["networks"]):
        raise ResultsError("results: network labels are not unique")
    ann = doc["ann_baseline"]
    _check(ann, _ANN, "ann_baseline")
    if ann["macs_per_layer"] is not None:
        if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in ann["macs_per_layer"]):
            raise ResultsError("ann_baseline: 'macs_per_layer' must be counts >= 0")
        if ann["macs"] != sum(ann["macs_per_layer"]):
            raise ResultsError(f"ann_baseline: macs {ann['macs']} is not the sum of macs_per_layer")
    for i, r in enumerate(doc["ratios"]):
        if not isinstance(r, dict) or r.get("numerator") not in totals or r.get("denominator") not in totals:
            raise ResultsError(f"ratios[{i}]: must name two of the networks")
        a, b = totals[r["numerator"]], totals[r["denominator"]]
        for k in ("spikes", "synaptic_events", "energy", "edp"):
            want, got = _ratio_of(a[k], b[k]), r.get(k)
            if not _ratio_agrees(got, want):
                raise ResultsError(f"ratios[{i}]: {k} ratio {got!r} disagrees with the networks' totals ({want!r})")
    cmp = doc["snn_vs_ann"]
    if not isinstance(cmp.get("networks"), dict) or set(cmp["networks"]) != set(totals):
        raise ResultsError("snn_vs_ann: 'networks' must list every network")
    ann_e = cmp.get("ann_energy")
    if ann_e is not None and (not finite_number(ann_e) or ann_e < 0):
        raise ResultsError(f"snn_vs_ann: ann_energy {ann_e!r} must be a finite number >= 0")
    for label, v in cmp["networks"].items():
        e = v.get("energy") if isinstance(v, dict) else None
        if not finite_number(e) or e < 0:
            raise ResultsError(f"snn_vs_ann.networks[{label!r}]: energy {e!r} must be a finite number >= 0")
        want, got = _ratio_of(e, ann_e), v.get("ratio")
        if not _ratio_agrees(got, want):
            raise ResultsError(f"snn_vs_ann.networks[{label!r}]: ratio {got!r} is not energy / ann_energy")


def validate_results(doc) -> dict:
    check_header(doc, FORMAT, VERSION, OLDEST_READABLE, ResultsError, rerun="re-run hwsim")
    _check(doc, _TOP, "results")
    if doc["samples"] < 1 or doc["timesteps"] < 1 or doc["seed"] < 0:
        raise ResultsError("results: samples and timesteps must be >= 1, seed >= 0")
    if not doc["networks"]:
        raise ResultsError("results: no networks")
    for i, net in enumerate(doc["networks"]):
        _check_network(net, f"networks[{i}]", doc)
    _check_comparisons(doc)
    if "sweep" in doc:
        if not isinstance(doc["sweep"], list):
            raise ResultsError("results: 'sweep' must be a list")
        labels = {net["label"] for net in doc["networks"]}
        for i, point in enumerate(doc["sweep"]):
            _check(point, _SWEEP, f"sweep[{i}]")
            if point["network"] not in labels or point["timesteps"] < 1 or not 0 <= point["accuracy"] <= 1 \
                    or point["spikes_per_image"] < 0:
                raise ResultsError(f"sweep[{i}]: needs a listed network, T >= 1, accuracy in [0, 1] and "
                                   "spikes >= 0")
    if "paired" in doc:
        _check_paired(doc)
    return doc


def _check_paired(doc: dict) -> None:
    if not isinstance(doc["paired"], list):
        raise ResultsError("results: 'paired' must be a list")
    nets = {net["label"]: net for net in doc["networks"]}
    for i, pair in enumerate(doc["paired"]):
        _check(pair, _PAIRED, f"paired[{i}]")
        first, other = nets.get(pair["first"]), nets.get(pair["other"])
        if first is None or other is None or first is other:
            raise ResultsError(f"paired[{i}]: must name two of the networks")
        a, b, n = pair["first_only"], pair["other_only"], doc["samples"]
        if a < 0 or b < 0 or a + b > n:
            raise ResultsError(f"paired[{i}]: first_only {a} and other_only {b} must be counts summing to at "
                               f"most the {n} samples")
        if first.get("accuracy") is not None and other.get("accuracy") is not None \
                and abs((first["accuracy"] - other["accuracy"]) * n - (a - b)) > 1e-6 * n:
            raise ResultsError(f"paired[{i}]: first_only - other_only = {a - b} images disagrees with the "
                               "networks' accuracies")
        if not _same(pair["p_value"], sign_test_p(a, b)):
            raise ResultsError(f"paired[{i}]: p_value {pair['p_value']!r} is not the sign test of {a} and {b}")


def load_results(path: str | os.PathLike) -> dict:
    """Read and validate ``results.json`` (or a folder holding it); errors name the file."""
    path = Path(path)
    return read_json_record(path / RESULTS_FILE if path.is_dir() else path, "results", ResultsError,
                            validate_results)


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
        rows.append({"network": net["label"], "kind": "snn", "stage": net["stage"], "graph": net["graph"],
                     "accuracy": net["accuracy"],
                     "timesteps": net["timesteps"], "latency_steps": net["latency_steps"],
                     "samples": net["samples"], "spikes": t["spikes"], "spikes_per_image": t["spikes_per_image"],
                     "avg_spikes_per_neuron": t["avg_spikes_per_neuron"], "synaptic_events": t["synaptic_events"],
                     "macs": "", "energy": t["energy"], "energy_unit": p["energy_unit"], "delay": t["delay"],
                     "delay_unit": p["delay_unit"], "edp": t["edp"],
                     "energy_vs_ann": cmp["networks"].get(net["label"], {}).get("ratio")})
    ann = doc["ann_baseline"]
    rows.append({"network": "ann", "kind": "ann", "stage": "ann", "graph": "", "accuracy": "", "timesteps": "",
                 "latency_steps": "", "samples": doc["samples"], "spikes": "", "spikes_per_image": "",
                 "avg_spikes_per_neuron": "", "synaptic_events": "", "macs": ann["macs"], "energy": ann["energy"],
                 "energy_unit": ann.get("energy_unit", ""), "delay": "", "delay_unit": "", "edp": "",
                 "energy_vs_ann": 1.0 if ann["energy"] else ""})
    return rows


def prediction_rows(outputs: list[tuple[str, object, object]]) -> list[dict]:
    """``predictions.csv``'s rows from (network label, output voltages (N, C) ints, labels (N,))."""
    rows = []
    for label, voltages, truth in outputs:
        for i, (v, y) in enumerate(zip(voltages, truth)):
            v = [int(x) for x in v]
            rows.append({"network": label, "sample": i, "label": int(y), "predicted": v.index(max(v)),
                         **{f"v{c}": x for c, x in enumerate(v)}})
    return rows


def save_results(out_dir: str | os.PathLike, doc: dict, predictions: list[dict] | None = None,
                 extra: dict[str, tuple[str, str | bytes]] | None = None) -> dict[str, Path]:
    """Validate, then write results.json, layers.csv, summary.csv, predictions.csv (when
    given) and ``extra`` files (key -> (file name, content)) into ``out_dir``, all or
    nothing, results.json last."""
    validate_results(doc)
    out = Path(out_dir)
    paths = {"results": out / RESULTS_FILE, "layers": out / LAYERS_FILE, "summary": out / SUMMARY_FILE}
    files = {paths["results"]: json.dumps(doc, indent=1) + "\n",
             paths["layers"]: csv_text(layer_rows(doc), LAYER_COLUMNS),
             paths["summary"]: csv_text(summary_rows(doc), SUMMARY_COLUMNS)}
    if predictions is not None:
        paths["predictions"] = out / PREDICTIONS_FILE
        files[paths["predictions"]] = csv_text(predictions)
    for key, (name, content) in (extra or {}).items():
        paths[key] = out / name
        files[paths[key]] = content
    write_together(files, index=paths["results"])
    return paths
