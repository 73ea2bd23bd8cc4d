"""hwsim's results on a terminal: what ``python -m hwsim.run`` and the pipeline print after
a simulation (spikes per layer, accuracy, energy, delay, EDP), from the results document
alone, with the reports' number formatting."""
from __future__ import annotations

import sys

from reports.common import fmt


def print_report(doc: dict, paths: dict, out=None, edp: bool = True) -> None:
    """The results on a terminal: spikes per layer, then per network its accuracy and spikes
    and, with ``edp``, energy, delay, EDP, the ratios and the SNN/ANN energy."""
    out = out or sys.stdout
    em = doc["energy_model"]
    unit, dunit = em["parameters"]["energy_unit"], em["parameters"]["delay_unit"]
    w = out.write
    w(f"\nhwsim: {doc['dataset'] or '?'} {doc['arch'] or ''}, {doc['samples']} samples, T={doc['timesteps']}, "
      f"seed {doc['seed']}, energy model {em['name']} ({unit} per image, delay in {dunit}s)\n")
    nets = doc["networks"]
    names = [l["name"] for l in nets[0]["layers"]]
    same_layers = all([l["name"] for l in n["layers"]] == names for n in nets)
    w("\naverage spikes per neuron per layer (all spikes over T steps / neurons, mean over samples; Fig. 3)\n")
    if same_layers:
        head = f"{'layer':<14}{'neurons':>10}" + "".join(f"{n['label'][:12]:>14}{'thr':>9}" for n in nets)
        w(head + "\n")
        for j, name in enumerate(names):
            row = f"{name[:13]:<14}{nets[0]['layers'][j]['neurons']:>10}"
            for n in nets:
                l = n["layers"][j]
                thr = fmt(l["float_threshold"], 3) if l["spiking"] else "-"
                row += f"{(fmt(l['avg_spikes_per_neuron'], 4) if l['spiking'] else '-'):>14}{thr:>9}"
            w(row + "\n")
    else:
        for n in nets:
            w(f"  {n['label']}: " + ", ".join(f"{l['name']}={fmt(l['avg_spikes_per_neuron'], 4)}"
                                              for l in n["layers"] if l["spiking"]) + "\n")
    w(f"\n{'network':<12}{'accuracy':>9}{'spikes/img':>13}{'syn.ev/img':>13}"
      + (f"{'energy':>12}{'delay':>8}{'EDP':>12}{'SNN/ANN':>9}" if edp else "") + "\n")
    cmp = doc["snn_vs_ann"]
    for n in nets:
        t = n["totals"]
        acc = "n/a" if n["accuracy"] is None else f"{100 * n['accuracy']:.2f}%"
        ratio = cmp["networks"].get(n["label"], {}).get("ratio")
        w(f"{n['label'][:11]:<12}{acc:>9}{fmt(t['spikes_per_image'], 4):>13}"
          f"{fmt(t['synaptic_events'] / max(n['samples'], 1), 4):>13}"
          + (f"{fmt(t['energy'], 4):>12}{fmt(t['delay'], 4):>8}{fmt(t['edp'], 4):>12}{fmt(ratio, 3):>9}" if edp else "")
          + "\n")
    for p in doc.get("paired") or []:
        w(f"image by image: {p['other']} alone right on {p['other_only']}, {p['first']} alone on "
          f"{p['first_only']} (exact sign test p = {p['p_value']:.2g})\n")
    if edp:
        _print_energy(doc, w)
    if doc.get("sweep"):
        def acc(p):
            return "n/a" if p["accuracy"] is None else f"{100 * p['accuracy']:.1f}%"
        w("accuracy vs T: " + "; ".join(f"{p['network']} T={p['timesteps']} {acc(p)}" for p in doc["sweep"]) + "\n")
    for note in doc["notes"]:
        w(f"note: {note}\n")
    w("\nwritten: " + ", ".join(str(p) for p in paths.values()) + "\n")


def _print_energy(doc: dict, w) -> None:
    """The ANN baseline's energy, the ratios between networks and the SNN/ANN energy."""
    em, cmp = doc["energy_model"], doc["snn_vs_ann"]
    ann = doc["ann_baseline"]
    w(f"{'ANN':<12}{'':>9}{'':>13}{'':>13}{fmt(ann['energy'], 4):>12}   ({fmt(ann['macs'], 4)} MACs/img "
      f"of the ANN; {ann['model']}, {ann['energy_unit']})\n")
    for r in doc["ratios"]:
        w(f"\n{r['numerator']} / {r['denominator']}: spikes {fmt(r['spikes'], 3)}x, energy "
          f"{fmt(r['energy'], 3)}x, EDP {fmt(r['edp'], 3)}x")
    if doc["ratios"]:
        w("\n")
    if cmp["model"] != em["name"]:
        w(f"SNN/ANN energy under {cmp['model']} ({cmp['energy_unit']}): "
          + ", ".join(f"{k} {fmt(v['energy'], 4)} vs ANN {fmt(cmp['ann_energy'], 4)}" for k, v in cmp["networks"].items())
          + "\n")
