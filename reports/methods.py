"""The training methods side by side (``python -m pipeline --methods``): the hybrid (STDB
after conversion) and its baselines (``trainer.methods``) at the same T, on hwsim's same
inputs — accuracy, training wall time, spikes per layer, energy and EDP — as a table
(CSV, Markdown) and a figure. Drawn only where hwsim ran a baseline's network."""
from __future__ import annotations

from matplotlib.figure import Figure

from records.layout import METHOD_STAGES
from reports.common import dataset_arch, float_accuracy, fmt, fmt_pct, layer_names, percent, units
from reports.figures import _color, _grouped_bars, _layer_values, _png, _xticks
from reports.tables import markdown_table

METHODS_PNG, METHODS_CSV = "methods.png", "methods.csv"
METHOD_NAMES = {"hybrid": "hybrid (conversion + STDB)", "spikebp": "spike-based BP (Lee 2020)",
                "bncurrent": "BN on input currents (Ledinauskas 2020)",
                "qcfs": "low latency (QCFS ANN + BN, conversion + STDB)"}
METHODS_COLUMNS = ["method", "stage", "timesteps", "float_accuracy", "fixed_point_accuracy", "training_seconds",
                   "spikes_per_neuron", "spikes_per_image", "energy", "delay", "edp"]
# The trainer's wall-time steps that make each method's network.
TRAINING_STEPS = {"hybrid": ("ann", "convert", "stdb"), "spikebp": ("spikebp",), "bncurrent": ("bncurrent",),
                  "qcfs": ("qcfs_ann", "qcfs_convert", "qcfs")}


def _compared(results: dict) -> list[tuple[str, dict]]:
    """(method, hwsim network) for each method hwsim ran, hybrid first."""
    found = []
    for method, stage in METHOD_STAGES.items():
        net = next((n for n in results["networks"] if n["stage"] == stage), None)
        if net is not None:
            found.append((method, net))
    return found


def methods_rows(results: dict, summary) -> list[dict]:
    """One row per method, or none where hwsim ran no baseline."""
    compared = _compared(results)
    if not any(m != "hybrid" for m, _ in compared):
        return []
    seconds = summary.seconds if summary is not None else {}
    rows = []
    for method, net in compared:
        steps = TRAINING_STEPS[method]
        t = net["totals"]
        rows.append({"method": method, "stage": net["stage"], "timesteps": net["timesteps"],
                     "float_accuracy": float_accuracy(summary, net["stage"], net["timesteps"]),
                     "fixed_point_accuracy": percent(net.get("accuracy")),
                     "training_seconds": sum(seconds[s] for s in steps) if all(s in seconds for s in steps)
                     else None,
                     "spikes_per_neuron": t["avg_spikes_per_neuron"], "spikes_per_image": t["spikes_per_image"],
                     "energy": t["energy"], "delay": t["delay"], "edp": t["edp"]})
    return rows


def methods_markdown(rows: list[dict], results: dict) -> str:
    eu, du = units(results)
    header = ["method", "T", "float (%)", "fixed point (%)", "training (s)", "spikes / neuron", "spikes / image",
              f"energy ({eu})", f"EDP ({eu}·{du})"]
    body = [[METHOD_NAMES[r["method"]], r["timesteps"], fmt_pct(r["float_accuracy"]),
             fmt_pct(r["fixed_point_accuracy"]),
             "—" if r["training_seconds"] is None else f"{r['training_seconds']:.1f}",
             fmt(r["spikes_per_neuron"]), fmt(r["spikes_per_image"]), fmt(r["energy"]), fmt(r["edp"])]
            for r in rows]
    return markdown_table(header, body)


def methods_figure(results: dict, summary=None) -> dict[str, bytes]:
    """Spikes per neuron per layer of each method, and each method's EDP against its
    fixed-point accuracy; {} where hwsim ran no baseline."""
    compared = _compared(results)
    if not any(m != "hybrid" for m, _ in compared):
        return {}
    names = layer_names(results, spiking_only=True)
    fig = Figure(figsize=(11, 4.2))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    labels = [METHOD_NAMES[m] for m, _ in compared]
    _grouped_bars(ax, names, [_layer_values(n, names, "avg_spikes_per_neuron") for _, n in compared], labels)
    _xticks(ax, names)
    ax.set_ylabel(f"spikes per neuron over T = {results['timesteps']}")
    ax.legend(fontsize=8)
    eu, du = units(results)
    for i, (method, net) in enumerate(compared):
        acc = percent(net.get("accuracy"))
        ax2.scatter([net["totals"]["edp"]], [acc], color=_color(i), s=60, label=labels[i], zorder=3)
    ax2.set_xlabel(f"EDP per image ({eu}·{du})")
    ax2.set_ylabel("fixed-point accuracy (%)")
    ax2.grid(alpha=0.3)
    dataset, arch = dataset_arch(results, summary)
    fig.suptitle(f"Training methods at the same T: {dataset} / {arch}, T = {results['timesteps']}, "
                 f"{results['samples']:,} test samples (hwsim)", fontsize=10)
    fig.tight_layout()
    return {METHODS_PNG: _png(fig)}
