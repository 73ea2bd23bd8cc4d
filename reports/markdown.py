"""``report.md``: what was run, the Table 1-style table, the Fig. 3 observation, energy
and EDP, with relative links to the figures and CSVs. Every number printed here is
read from the input files (or is a ratio / difference of two of them), except the
paper's reference numbers, which are labelled as the paper's."""
from __future__ import annotations

from reports.common import (ann_comparison, dataset_arch, edp_ratio, fmt, layer_names, model_name,
                            network_accuracy, norm_name, paired_sentence, ratio, spike_ratio, units)
from reports.figures import ENERGY_CSV, ENERGY_PNG, FIG3_CSV, FIG3_PNG, SWEEP_CSV, SWEEP_PNG
from reports.methods import METHODS_CSV, METHODS_PNG, methods_markdown
from reports.tables import KIND_NAMES, markdown_table, paper_row, paper_rows_text, table1_markdown

TABLE1_CSV = "table1.csv"
PAPER_FIG3 = ("the paper reports ~1.5x fewer spikes for STDB than for the converted network at higher "
              "accuracy (VGG16, CIFAR-10, T = 100, Section 7)")


def _sentence(s: str) -> str:
    return s if s.endswith((".", "!", "?", ")")) else s + "."


def _link(text: str, target: str) -> str:
    return f"[{text}]({target})"


def fig3_observation(results: dict, summary: dict | None) -> str:
    """One or two sentences comparing the first two networks' spikes and accuracies."""
    nets = results["networks"]
    if len(nets) < 2:
        n = nets[0]
        return (f"Only one network (`{n['label']}`) was simulated: {fmt(n['totals']['spikes_per_image'])} spikes "
                f"per image, {fmt(n['totals']['avg_spikes_per_neuron'])} spikes per neuron on average.")
    a, b = nets[0], nets[1]
    r = spike_ratio(results, a, b)
    if r is None:
        what = f"`{a['label']}` fires no spikes, so no spike ratio can be formed"
    elif r > 1:
        what = f"`{b['label']}` fires {r:.2f}x fewer spikes than `{a['label']}`"
    elif r < 1:
        what = f"`{b['label']}` fires {1 / r:.2f}x more spikes than `{a['label']}`"
    else:
        what = f"`{b['label']}` and `{a['label']}` fire the same number of spikes"
    (acc_a, src_a), (acc_b, src_b) = network_accuracy(a, summary), network_accuracy(b, summary)
    if acc_a is not None and acc_b is not None and src_a == src_b:
        what += (f" at {acc_b - acc_a:+.1f} points accuracy ({acc_b:.1f} % vs {acc_a:.1f} %, {src_a}"
                 f"{', ' + format(b['samples'], ',') + ' samples' if src_a == 'fixed point' else ''})")
    s = (f"{what}: {fmt(b['totals']['spikes_per_image'])} vs {fmt(a['totals']['spikes_per_image'])} spikes per "
         f"image, {fmt(b['totals']['avg_spikes_per_neuron'])} vs {fmt(a['totals']['avg_spikes_per_neuron'])} "
         f"spikes per neuron on average, same inputs and T = {results['timesteps']}.")
    paired = paired_sentence(results, a, b) if src_a == src_b == "fixed point" else ""
    if paired:
        s += " " + paired
    if (a["stage"], b["stage"]) == ("converted", "stdb"):
        s += f" For comparison, {PAPER_FIG3}."
    return s


def _fig3_table(results: dict) -> str:
    nets = results["networks"]
    names = layer_names(results, spiking_only=True)
    header = ["layer"] + [f"{n['label']}: spikes/neuron" for n in nets] + [f"{n['label']}: v" for n in nets]
    if len(nets) > 1:
        header.append(f"{nets[0]['label']}/{nets[1]['label']}")
    body = []
    for name in names:
        lays = [next((l for l in n["layers"] if l["name"] == name), None) for n in nets]
        row = [name] + [fmt(l["avg_spikes_per_neuron"]) if l else "—" for l in lays]
        row += [fmt(l["float_threshold"]) if l else "—" for l in lays]
        if len(nets) > 1:
            row.append(fmt(ratio(lays[0]["avg_spikes_per_neuron"], lays[1]["avg_spikes_per_neuron"]))
                       if lays[0] and lays[1] else "—")
        body.append(row)
    total = ["**total**"] + [fmt(n["totals"]["avg_spikes_per_neuron"]) for n in nets] + [""] * len(nets)
    if len(nets) > 1:
        total.append(fmt(spike_ratio(results, nets[0], nets[1])))
    body.append(total)
    return markdown_table(header, body)


def report_markdown(results: dict, summary: dict | None, files: dict[str, str], inputs: dict[str, str],
                    table1_rows: list[dict], method_rows: list[dict] = ()) -> str:
    """``files``: file name -> link relative to report.md (only files that exist);
    ``inputs``: 'results' / 'summary' -> path as shown; ``method_rows``: the training
    methods compared (``reports.methods``), none: no such section."""
    nets = results["networks"]
    dataset, arch = dataset_arch(results, summary)
    em = results.get("energy_model") or {}
    eu, du = units(results)
    cmp = ann_comparison(results)
    out = [f"# Hybrid SNN report: {dataset} / {arch}", ""]

    # ---- what was run ---------------------------------------------------------------
    out += ["## What was run", ""]
    out.append(f"- Data set **{dataset}**, architecture **{arch}**.")
    if summary is not None:
        t_small, t_large = summary.timesteps.reduced, summary.timesteps.large
        t_txt = f"SNNs evaluated at T = {t_large} and T = {t_small} (STDB fine-tuning at T = {t_small})"
        sec_txt = ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items())
        extra = [KIND_NAMES[s] for s in ("scratch", "spikebp", "bncurrent")
                 if any(a.stage == s for a in summary.accuracies)]
        out.append("- Trainer (float): ANN, converted, STDB" + "".join(f", {e}" for e in extra)
                   + (f"; {t_txt}" if t_txt else "") + (f"; wall time: {sec_txt}" if sec_txt else "") + ".")
    else:
        out.append("- Trainer summary: none found, so the table has no float accuracies.")
    out.append(f"- hwsim (integer LIF core, fixed point): {len(nets)} network(s) — "
               + ", ".join(f"`{n['label']}` (`{n['graph']}`)" for n in nets)
               + f"; T = {results['timesteps']}, {results['samples']:,} test samples, Poisson seed "
               f"{results['seed']}, device {results['device']}, created {results.get('created', '?')}.")
    lat = sorted({n["latency_steps"] for n in nets})
    if lat and lat != [0]:
        out.append(f"- Pipeline latency: {', '.join(map(str, lat))} step(s) (each synaptic layer delays its "
                   f"output by one step, as in Lava); the delay D below is T x the model's time per step.")
    desc = em.get("description", "").strip()
    src = str(em.get("source") or "").strip()
    out.append(f"- Energy model **{model_name(results)}** (energy in {eu}, delay in {du})"
               + (f": {_sentence(desc)}" if desc else ".") + (f" Source: {_sentence(src)}" if src else ""))
    if cmp["model"] and cmp["model"] != model_name(results):
        out.append(f"- SNN vs ANN energy compared under the **{cmp['model']}** model ({cmp['energy_unit']}).")
    out.append(f"- Inputs: `{inputs['results']}`" + (f", `{inputs['summary']}`" if inputs.get("summary") else "")
               + ".")
    out.append("")

    # ---- table 1 --------------------------------------------------------------------
    out += ["## Accuracy (Table 1 style)", "", table1_markdown(table1_rows, results, summary), ""]
    notes = ["*float*: the trainer's evaluation of the float network; *fixed point*: hwsim's integer core on "
             f"{results['samples']:,} test samples."]
    paper = paper_row(dataset, arch)
    if paper:
        notes.append(f"*paper*: Table 1 of Rathi et al. (ICLR 2020) for {paper[0]}, at the paper's own T.")
    else:
        notes.append(f"No row of the paper's Table 1 matches {dataset} / {arch} (the paper has "
                     f"{paper_rows_text()}), "
                     "so there is no reference column.")
    out += [" ".join(notes), ""]
    if TABLE1_CSV in files:
        out += [f"Data: {_link(TABLE1_CSV, files[TABLE1_CSV])}", ""]

    # ---- training methods -----------------------------------------------------------
    if method_rows:
        out += ["## Training methods compared", "",
                f"Each method's network at T = {results['timesteps']} on the same {results['samples']:,} test "
                "samples and Poisson trains (hwsim); training time is the trainer's wall time for all the steps "
                "that make the network (the hybrid: ANN, conversion and STDB).", "",
                methods_markdown(method_rows, results), ""]
        if METHODS_PNG in files:
            out += [f"![Training methods compared]({files[METHODS_PNG]})", ""]
        if METHODS_CSV in files:
            out += [f"Data: {_link(METHODS_CSV, files[METHODS_CSV])}", ""]

    # ---- fig 3 ----------------------------------------------------------------------
    out += ["## Spikes per neuron per layer (Fig. 3)", ""]
    if FIG3_PNG in files:
        out += [f"![Average spikes per neuron per layer]({files[FIG3_PNG]})", ""]
    out += [fig3_observation(results, summary), "", _fig3_table(results), ""]
    out += [f"Data: {_link(FIG3_CSV, files[FIG3_CSV])}" if FIG3_CSV in files else "", ""]

    # ---- energy ---------------------------------------------------------------------
    out += ["## Energy and energy-delay product", ""]
    if ENERGY_PNG in files:
        out += [f"![Energy and EDP]({files[ENERGY_PNG]})", ""]
    for n in nets:
        t = n["totals"]
        out.append(f"- `{n['label']}`: energy {fmt(t['energy'])} {eu} per image, delay {fmt(t['delay'])} {du}, "
                   f"EDP {fmt(t['edp'])} {eu}·{du} (model {model_name(results)}).")
    for o in nets[1:]:
        a = nets[0]
        out.append(f"- `{a['label']}` / `{o['label']}`: energy ratio "
                   f"{fmt(ratio(a['totals']['energy'], o['totals']['energy']))}x, "
                   f"**EDP ratio {fmt(edp_ratio(results, a, o))}x**.")
    if cmp["ann_energy"] is not None:
        mac = (f" ({fmt(cmp['macs'])} MACs x {fmt(cmp['e_mac'])} {cmp['energy_unit']})"
               if cmp["macs"] is not None and cmp["e_mac"] is not None else "")
        parts = []
        for n in nets:
            c = cmp["networks"][n["label"]]
            if c["ratio"] is not None:
                parts.append(f"`{n['label']}` {fmt(c['energy'])} {cmp['energy_unit']} = **{fmt(c['ratio'])}x** "
                             "the ANN's")
        out.append(f"- SNN / ANN energy under {cmp['model']}: ANN {fmt(cmp['ann_energy'])} {cmp['energy_unit']} per "
                   f"image{mac}; " + ("; ".join(parts) if parts else "no SNN energy under this model") + ".")
    else:
        out.append("- No ANN baseline energy in results.json.")
    out += ["", f"Data: {_link(ENERGY_CSV, files[ENERGY_CSV])}" if ENERGY_CSV in files else "", ""]

    # ---- sweep ----------------------------------------------------------------------
    out += ["## Accuracy vs time steps", ""]
    if SWEEP_PNG in files:
        out += [f"![Accuracy vs time steps]({files[SWEEP_PNG]})", "",
                f"Data: {_link(SWEEP_CSV, files[SWEEP_CSV])}", ""]
    else:
        out += ["Skipped: results.json has no `sweep` (accuracy of each network at several T).", ""]

    # ---- notes ----------------------------------------------------------------------
    notes = list(results.get("notes") or [])
    if summary is not None:
        for key in ("dataset", "arch"):
            a, b = results.get(key), getattr(summary, key)
            if a and b and norm_name(a) != norm_name(b):
                notes.append(f"the trainer summary's {key} ({b}) differs from results.json's ({a})")
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out).rstrip() + "\n"
