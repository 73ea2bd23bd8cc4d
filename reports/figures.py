"""The report's figures, each as PNG bytes plus the CSV of the numbers it shows.

Every function takes the loaded ``results`` (hwsim) and ``summary`` (trainer, or
None) and returns ``{file name: content}``; nothing here touches the disk (the
caller writes all files at once, atomically). Matplotlib's Agg canvas is used
directly (no pyplot, no global backend switch, no global rcParams change).
"""
from __future__ import annotations

import io
import math

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from reports.common import (ann_comparison, dataset_arch, edp_ratio, fmt, layer_names, model_name, percent,
                            network_accuracy, ratio, sci, spike_ratio, units)
from records.table import csv_text

FIG3_PNG, FIG3_CSV = "fig3_spikes_per_layer.png", "fig3_spikes_per_layer.csv"
ENERGY_PNG, ENERGY_CSV = "energy.png", "energy.csv"
SWEEP_PNG, SWEEP_CSV = "accuracy_vs_timesteps.png", "accuracy_vs_timesteps.csv"
DPI = 120
LOG_SCALE_SPAN = 30.0          # a bar chart goes log scale when its values differ by more than this

STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9,
         "ytick.labelsize": 9, "legend.fontsize": 9, "figure.titlesize": 12, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "axes.grid.axis": "y", "grid.alpha": 0.3,
         "axes.axisbelow": True}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
ANN_COLOR = "#7f7f7f"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _net_label(net: dict, summary) -> str:
    acc, source = network_accuracy(net, summary)
    if acc is None:
        return net["label"]
    return f"{net['label']} ({acc:.1f} %{', float' if source == 'float' else ''})"


def _xticks(ax, names: list[str]) -> None:
    ax.set_xticks(range(len(names)))
    long = len(names) > 8 or max((len(n) for n in names), default=0) > 10
    ax.set_xticklabels(names, rotation=40 if long else 0, ha="right" if long else "center",
                       rotation_mode="anchor" if long else "default")


def _tick(v, _pos=None) -> str:
    if v == 0:
        return "0"
    return sci(v) if abs(v) >= 1e6 else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:g}"


def _bar_scale(ax, values) -> str:
    """Log scale when the positive values span more than LOG_SCALE_SPAN (and none is 0);
    else linear ticks, scaled by a power of 1000 from 10^6 up (no '1e6' offset text).
    Returns what the axis label must add: ', log scale', ', ×10^k' or ''."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if vals and min(vals) > 0 and max(vals) / min(vals) > LOG_SCALE_SPAN:
        ax.set_yscale("log")
        return ", log scale"
    top = max((abs(v) for v in vals), default=0.0)
    if top >= 1e6:
        exp = 3 * int(math.floor(math.log10(top) / 3))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v / 10 ** exp:g}"))
        return rf", $\times10^{{{exp}}}$"
    ax.yaxis.set_major_formatter(FuncFormatter(_tick))
    return ""


def _layer_values(net: dict, names: list[str], key: str) -> list:
    by = {l["name"]: l for l in net["layers"]}
    return [by[n][key] if n in by else None for n in names]


def _grouped_bars(ax, names, series, labels) -> list:
    k = max(len(series), 1)
    width = 0.8 / k
    containers = []
    for i, (vals, label) in enumerate(zip(series, labels)):
        xs = [j + (i - (k - 1) / 2) * width for j in range(len(names))]
        ys = [math.nan if v is None else v for v in vals]
        containers.append(ax.bar(xs, ys, width, label=label, color=_color(i), edgecolor="white", linewidth=0.5))
    return containers


def _title_context(results: dict, summary) -> str:
    dataset, arch = dataset_arch(results, summary)
    return f"{dataset} / {arch}, T = {results['timesteps']}, {results['samples']:,} test samples"


def _spike_ratios(results: dict) -> list[tuple[dict, dict, float | None]]:
    nets = results["networks"]
    return [(nets[0], other, spike_ratio(results, nets[0], other)) for other in nets[1:]]


# --------------------------------------------------------------------------------------
# Fig. 3: average spikes per neuron per layer
# --------------------------------------------------------------------------------------
def _thr_label(thresholds: list) -> str:
    vals = [v for v in thresholds if v is not None]
    if not vals:
        return ""
    if all(math.isclose(v, vals[0], rel_tol=1e-6, abs_tol=1e-12) for v in vals):
        return f"v={vals[0]:.3g}"
    return "v=" + " / ".join("–" if v is None else f"{v:.3g}" for v in thresholds)


def fig3_csv_rows(results: dict) -> tuple[list[dict], list[str]]:
    nets = results["networks"]
    names = layer_names(results, spiking_only=True)
    labels = [n["label"] for n in nets]
    ratio_cols = [f"spike_ratio_{labels[0]}/{o}" for o in labels[1:]]
    cols = (["layer", "index", "op", "neurons"] + [f"{l}_avg_spikes_per_neuron" for l in labels]
            + [f"{l}_spikes_per_image" for l in labels] + [f"{l}_float_threshold" for l in labels]
            + [f"{l}_vth" for l in labels] + ratio_cols)
    rows = []
    for name in names:
        row = {"layer": name}
        layers = []
        for net in nets:
            lay = next((l for l in net["layers"] if l["name"] == name), None)
            layers.append(lay)
            if lay is None:
                continue
            row.update(index=lay["index"], op=lay["op"], neurons=lay["neurons"])
            row[f"{net['label']}_avg_spikes_per_neuron"] = lay["avg_spikes_per_neuron"]
            row[f"{net['label']}_spikes_per_image"] = lay["spikes"] / max(net["samples"], 1)
            row[f"{net['label']}_float_threshold"] = lay["float_threshold"]
            row[f"{net['label']}_vth"] = lay["vth"]
        for col, lay in zip(ratio_cols, layers[1:]):
            if layers[0] is not None and lay is not None:
                row[col] = ratio(layers[0]["avg_spikes_per_neuron"], lay["avg_spikes_per_neuron"])
        rows.append(row)
    total = {"layer": "total", "neurons": sum(l["neurons"] for l in nets[0]["layers"] if l["spiking"])}
    for net in nets:
        total[f"{net['label']}_avg_spikes_per_neuron"] = net["totals"]["avg_spikes_per_neuron"]
        total[f"{net['label']}_spikes_per_image"] = net["totals"]["spikes_per_image"]
    for col, (_, _, r) in zip(ratio_cols, _spike_ratios(results)):
        total[col] = r
    rows.append(total)
    return rows, cols


def fig3_spikes_per_layer(results: dict, summary: dict | None = None) -> dict[str, bytes | str]:
    """Grouped bars: average spikes per neuron (over T steps) of each spiking layer, one
    bar per network, each layer labelled with its threshold(s)."""
    nets = results["networks"]
    names = layer_names(results, spiking_only=True)
    rows, cols = fig3_csv_rows(results)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(9, 5.2), layout="constrained")
        ax = fig.add_subplot()
        series = [_layer_values(n, names, "avg_spikes_per_neuron") for n in nets]
        _grouped_bars(ax, names, series, [_net_label(n, summary) for n in nets])
        top = max([v for s in series for v in s if v is not None] + [0.0])
        many = len(names) > 8
        thresholds = [_layer_values(n, names, "float_threshold") for n in nets]
        for j in range(len(names)):
            label = _thr_label([t[j] for t in thresholds])
            height = max([s[j] for s in series if s[j] is not None] + [0.0])
            ax.annotate(label, (j, height), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=8 if many else 9, rotation=90 if many else 0, color="#333333")
        ax.set_ylim(0, (top or 1.0) * (1.45 if many else 1.18))
        _xticks(ax, names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        order = " / ".join(n["label"] for n in nets)
        ax.set_xlabel("spiking layer — label: firing threshold v of the float network"
                      + (f" ({order} where they differ)" if len(nets) > 1 else ""))
        ax.set_ylabel(f"average spikes per neuron\n(all spikes over T = {results['timesteps']} steps / neurons)")
        parts = [f"total spikes {a['label']} / {b['label']} = {fmt(r)}x" for a, b, r in _spike_ratios(results)]
        ax.set_title(f"Average spikes per neuron per layer (cf. the paper's Fig. 3)\n{_title_context(results, summary)}"
                     + (f"\n{'; '.join(parts)}" if parts else ""))
        fig.legend(loc="outside lower center", ncols=min(len(nets), 4), frameon=False,
                   title="network (test accuracy, hwsim fixed point unless marked float)")
        png = _png(fig)
    return {FIG3_PNG: png, FIG3_CSV: csv_text(rows, cols)}


# --------------------------------------------------------------------------------------
# energy and EDP
# --------------------------------------------------------------------------------------
ENERGY_COLUMNS = ["network", "layer", "quantity", "value", "unit", "model"]


def energy_csv_rows(results: dict) -> list[dict]:
    model = model_name(results)
    eu, du = units(results)
    cmp = ann_comparison(results)
    rows = []
    for net in results["networks"]:
        for l in net["layers"]:
            rows.append({"network": net["label"], "layer": l["name"], "quantity": "energy_per_image",
                         "value": l["energy"], "unit": eu, "model": model})
        t = net["totals"]
        rows += [{"network": net["label"], "layer": "total", "quantity": q, "value": t[k], "unit": u, "model": model}
                 for q, k, u in (("energy_per_image", "energy", eu), ("delay", "delay", du),
                                 ("edp", "edp", f"{eu}*{du}"))]
        c = cmp["networks"][net["label"]]
        rows.append({"network": net["label"], "layer": "total", "quantity": "energy_per_image_vs_ann_model",
                     "value": c["energy"], "unit": cmp["energy_unit"], "model": cmp["model"]})
        rows.append({"network": net["label"], "layer": "total", "quantity": "energy_ratio_to_ann",
                     "value": c["ratio"], "unit": "x", "model": cmp["model"]})
    rows.append({"network": "ann", "layer": "total", "quantity": "macs_per_image", "value": cmp["macs"],
                 "unit": "MAC", "model": ""})
    rows.append({"network": "ann", "layer": "total", "quantity": "energy_per_image_vs_ann_model",
                 "value": cmp["ann_energy"], "unit": cmp["energy_unit"], "model": cmp["model"]})
    nets = results["networks"]
    for other in nets[1:]:
        pair = f"{nets[0]['label']}/{other['label']}"
        rows.append({"network": pair, "layer": "total", "quantity": "energy_ratio",
                     "value": ratio(nets[0]["totals"]["energy"], other["totals"]["energy"]), "unit": "x",
                     "model": model})
        rows.append({"network": pair, "layer": "total", "quantity": "edp_ratio",
                     "value": edp_ratio(results, nets[0], other), "unit": "x", "model": model})
    return rows


def _label_bars(ax, container, texts) -> None:
    ax.bar_label(container, labels=texts, padding=2, fontsize=8)


def energy_figure(results: dict, summary: dict | None = None) -> dict[str, bytes | str]:
    """Per-layer energy per image of each network (top); total energy per image of each
    network and of the ANN baseline under one model (bottom left); EDP (bottom right)."""
    nets = results["networks"]
    model, (eu, du) = model_name(results), units(results)
    cmp = ann_comparison(results)
    names = layer_names(results, spiking_only=False)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 8.5), layout="constrained")
        gs = fig.add_gridspec(2, 2, height_ratios=[1.1, 1])
        ax = fig.add_subplot(gs[0, :])
        series = [_layer_values(n, names, "energy") for n in nets]
        _grouped_bars(ax, names, series, [n["label"] for n in nets])
        scale = _bar_scale(ax, [v for s in series for v in s if v])
        for j in range(len(names)):
            if scale != ", log scale" and all(s[j] == 0 for s in series if s[j] is not None):
                ax.annotate("0", (j, 0), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                            fontsize=8, color="#333333")
        _xticks(ax, names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"energy per image ({eu}{scale})")
        ax.set_title(f"Energy per layer and image — model '{model}'")
        ax.legend(frameon=False)

        # total energy, SNNs vs the ANN baseline (one model, one unit)
        ax = fig.add_subplot(gs[1, 0])
        labels = [n["label"] for n in nets] + ["ANN"]
        vals = [cmp["networks"][n["label"]]["energy"] for n in nets] + [cmp["ann_energy"]]
        colors = [_color(i) for i in range(len(nets))] + [ANN_COLOR]
        xs = list(range(len(labels)))
        bars = ax.bar(xs, [math.nan if v is None else v for v in vals], 0.6, color=colors)
        scale = _bar_scale(ax, vals)
        log = scale == ", log scale"
        texts = [fmt(v) for v in vals]
        for i, n in enumerate(nets):
            r = cmp["networks"][n["label"]]["ratio"]
            if r is not None:
                texts[i] += f"\n({fmt(r)}x ANN)"
        _label_bars(ax, bars, texts)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
        ax.margins(y=0.35 if log else 0.2)
        if log:
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi * 8)
        ax.set_ylabel(f"energy per image ({cmp['energy_unit']}{scale})")
        mac = f"\nANN: {fmt(cmp['macs'])} MACs x {fmt(cmp['e_mac'])} {cmp['energy_unit']}" \
            if cmp["macs"] is not None and cmp["e_mac"] is not None else ""
        ax.set_title(f"SNN vs ANN energy per image — model '{cmp['model']}'{mac}", fontsize=10)

        # EDP
        ax = fig.add_subplot(gs[1, 1])
        xs = list(range(len(nets)))
        edps = [n["totals"]["edp"] for n in nets]
        bars = ax.bar(xs, edps, 0.6, color=[_color(i) for i in xs])
        scale = _bar_scale(ax, edps)
        _label_bars(ax, bars, [f"{fmt(e)}\n(E {fmt(n['totals']['energy'])} x D {fmt(n['totals']['delay'])})"
                               for e, n in zip(edps, nets)])
        ax.set_xticks(xs)
        ax.set_xticklabels([n["label"] for n in nets])
        ax.margins(y=0.3)
        ax.set_ylabel(f"EDP per image ({eu} x {du}{scale})")
        parts = [f"{nets[0]['label']} / {o['label']} = {fmt(edp_ratio(results, nets[0], o))}x" for o in nets[1:]]
        ax.set_title("Energy-delay product" + (f": {'; '.join(parts)}" if parts else ""), fontsize=10)
        fig.suptitle(f"Energy and EDP — {_title_context(results, summary)}")
        png = _png(fig)
    return {ENERGY_PNG: png, ENERGY_CSV: csv_text(energy_csv_rows(results), ENERGY_COLUMNS)}


# --------------------------------------------------------------------------------------
# accuracy vs T (optional "sweep" in results.json)
# --------------------------------------------------------------------------------------
SWEEP_COLUMNS = ["network", "timesteps", "accuracy_percent", "spikes_per_image"]


def sweep_points(results: dict) -> list[dict] | None:
    """The valid points of ``results["sweep"]`` (accuracy in percent), or None when the
    file has no sweep. Accuracies follow results.json's convention (fractions in
    [0, 1]); a sweep whose accuracies exceed 1 is taken to be in percent already."""
    sweep = results.get("sweep")
    if not isinstance(sweep, list) or not sweep:
        return None
    pts = []
    for p in sweep:
        if not isinstance(p, dict) or not isinstance(p.get("network"), str) \
                or not isinstance(p.get("timesteps"), int) or not isinstance(p.get("accuracy"), (int, float)):
            continue
        spi = p.get("spikes_per_image")
        pts.append({"network": p["network"], "timesteps": p["timesteps"], "accuracy": float(p["accuracy"]),
                    "spikes_per_image": float(spi) if isinstance(spi, (int, float)) else None})
    if not pts:
        return None
    if all(p["accuracy"] <= 1.0 for p in pts):
        for p in pts:
            p["accuracy"] = percent(p["accuracy"])
    pts.sort(key=lambda p: (p["network"], p["timesteps"]))
    return pts


def accuracy_vs_timesteps(results: dict, summary: dict | None = None) -> dict[str, bytes | str] | None:
    """Accuracy (left) and spikes per image (right) against T, a line per network, the
    ANN's float accuracy as a horizontal line. None when results.json has no sweep."""
    pts = sweep_points(results)
    if pts is None:
        return None
    order = [n["label"] for n in results["networks"]]
    labels = sorted({p["network"] for p in pts}, key=lambda l: (order.index(l) if l in order else len(order), l))
    ann = summary.accuracy("ann") if summary is not None else None
    has_spikes = any(p["spikes_per_image"] is not None for p in pts)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(11, 4.8) if has_spikes else (7, 4.8), layout="constrained")
        axes = fig.subplots(1, 2 if has_spikes else 1, squeeze=False)[0]
        ts = sorted({p["timesteps"] for p in pts})
        for i, label in enumerate(labels):
            mine = [p for p in pts if p["network"] == label]
            axes[0].plot([p["timesteps"] for p in mine], [p["accuracy"] for p in mine], "o-", color=_color(i),
                         label=label)
            if has_spikes:
                sp = [p for p in mine if p["spikes_per_image"] is not None]
                axes[1].plot([p["timesteps"] for p in sp], [p["spikes_per_image"] for p in sp], "o-",
                             color=_color(i), label=label)
        if ann is not None:
            axes[0].axhline(ann, color=ANN_COLOR, ls="--", lw=1.2, label=f"ANN, float ({ann:.1f} %)")
        for ax in axes:
            if ts[-1] / max(ts[0], 1) > 20:
                ax.set_xscale("log")
            ax.set_xlabel("time steps T")
            ax.grid(True, axis="both", alpha=0.3)
            ax.legend(frameon=False)
        axes[0].set_ylabel("test accuracy (%), fixed point")
        axes[0].set_title("Accuracy vs time steps")
        if has_spikes:
            axes[1].set_ylabel("spikes per image")
            axes[1].yaxis.set_major_formatter(FuncFormatter(_tick))
            axes[1].set_title("Spikes per image vs time steps")
        dataset, arch = dataset_arch(results, summary)
        fig.suptitle(f"{dataset} / {arch}, {results['samples']:,} test samples (hwsim, fixed point)")
        png = _png(fig)
    rows = [{"network": p["network"], "timesteps": p["timesteps"], "accuracy_percent": p["accuracy"],
             "spikes_per_image": p["spikes_per_image"]} for p in pts]
    if ann is not None:
        rows.append({"network": "ann (float)", "timesteps": None, "accuracy_percent": float(ann),
                     "spikes_per_image": None})
    return {SWEEP_PNG: png, SWEEP_CSV: csv_text(rows, SWEEP_COLUMNS)}
