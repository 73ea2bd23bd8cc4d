"""Assemble hwsim's results document (its format, reader and writer: ``records.hwsim_results``)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from export import fixedpoint as fx
from hwsim.energy import ANN_REFERENCE_MODEL, ann_energy, evaluate, load_energy_model
from records.hwsim_results import FORMAT, VERSION, ResultsError, sign_test_p


@dataclass
class NetworkRun:
    """One simulated network: what ``build_results`` needs."""
    label: str
    graph_path: str
    graph: object            # export.graph.CoreGraph
    sim: object              # hwsim.counters.SimResult
    labels: object           # true labels (N,)


def _ratio(a, b):
    return None if b in (0, None) or a is None else float(a) / float(b)


def network_entry(run: NetworkRun, model) -> dict:
    sim, graph = run.sim, run.graph
    n = max(sim.samples, 1)
    energy = evaluate(model, sim)
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
    return {"label": run.label, "stage": graph.stage, "graph": str(run.graph_path),
            "accuracy": sim.accuracy(run.labels) if sim.samples else None,
            "timesteps": sim.timesteps, "latency_steps": fx.latency_steps(graph), "samples": sim.samples,
            "seconds": round(float(sim.seconds), 3), "device": sim.device,
            "input": {"neurons": sim.input_neurons, "spikes": sim.input_spikes,
                      "avg_spikes_per_neuron": sim.input_spikes / (sim.input_neurons * n)},
            "layers": layers, "totals": totals}


def paired_entry(first: NetworkRun, other: NetworkRun) -> dict:
    """The two networks image by image (``records.hwsim_results``: ``paired``)."""
    right_a = first.sim.predictions == np.asarray(first.labels).reshape(-1)
    right_b = other.sim.predictions == np.asarray(other.labels).reshape(-1)
    a, b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return {"first": first.label, "other": other.label, "first_only": a, "other_only": b,
            "p_value": sign_test_p(a, b)}


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
    if not runs:
        raise ResultsError("no networks to report")
    nets = [network_entry(r, model) for r in runs]
    notes = list(notes or [])
    macs = runs[0].graph.ann_macs
    cmp_model = model if model.e_mac is not None else (ann_model or load_energy_model(ANN_REFERENCE_MODEL))
    if cmp_model is not model:
        notes.append(f"energy model {model.name!r} has no MAC energy: the SNN/ANN comparison uses "
                     f"{cmp_model.name!r}")
    if macs is None:
        notes.append(f"the graph {runs[0].graph_path} does not record its ANN's MACs (not exported from a "
                     "checkpoint): no ANN baseline")
    ann_e = ann_energy(cmp_model, None if macs is None else sum(macs))
    ann = {"macs_per_layer": macs, "macs": None if macs is None else int(sum(macs)), "model": cmp_model.name,
           "e_mac": cmp_model.e_mac, "energy": ann_e, "energy_unit": cmp_model.energy_unit}
    snn_vs_ann = {"model": cmp_model.name, "energy_unit": cmp_model.energy_unit, "ann_energy": ann_e,
                  "networks": {}}
    for r, net in zip(runs, nets):
        e = net["totals"]["energy"] if cmp_model is model else evaluate(cmp_model, r.sim)["energy"]
        snn_vs_ann["networks"][r.label] = {"energy": e, "ratio": _ratio(e, ann_e)}
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
    if first.samples and all(r.sim.samples == first.samples for r in runs):
        doc["paired"] = [paired_entry(runs[0], r) for r in runs[1:]]
    if sweep:
        doc["sweep"] = sorted(sweep, key=lambda p: ([r.label for r in runs].index(p["network"])
                                                    if p["network"] in [r.label for r in runs] else len(runs),
                                                    p["timesteps"]))
    return doc


