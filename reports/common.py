"""Reading the report's inputs, and the few derived quantities that figures, tables
and the Markdown summary share (so that all of them print the same number).

Inputs, both read from files only (no torch, no retraining):

* ``results.json`` of hwsim, read and validated by ``records.hwsim_results`` (its
  module docstring is the schema). Accuracies there are fractions in [0, 1]; energies,
  delays and EDPs are per image in the energy model's units.
* ``trainer_summary.json`` of ``python -m trainer chain`` (optional), a
  ``records.trainer_summary.TrainerSummary``: float accuracies in percent, matched to
  hwsim's networks by their recorded stage and T.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from records.header import RecordError, finite_number
from records.hwsim_results import load_results
from records.layout import RESULTS_FILE, RunLayout
from records.trainer_summary import TrainerSummary, load_trainer_summary


class ReportError(ValueError):
    """An input the report cannot be made from (missing, corrupt, or of another format)."""


@dataclass
class Inputs:
    results: dict
    summary: TrainerSummary | None
    results_path: Path
    summary_path: Path | None


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------
def load_inputs(run_dir: str | os.PathLike, results_path=None, summary_path=None) -> Inputs:
    """Default inputs: ``RUN_DIR/hwsim/results.json`` (required) and
    ``RUN_DIR/trainer_summary.json`` (used when present; required when named)."""
    run = RunLayout(run_dir)
    rpath = Path(results_path) if results_path is not None else run.results
    spath = Path(summary_path) if summary_path is not None else run.trainer_summary
    try:
        results = load_results(rpath)
        summary = load_trainer_summary(spath) if summary_path is not None or spath.is_file() else None
    except RecordError as exc:
        raise ReportError(str(exc)) from None
    if summary is None:
        spath = None
    if rpath.is_dir():
        rpath = rpath / RESULTS_FILE
    if summary is not None:            # both must describe the same run
        for what, got, want in (("data set", results.get("dataset"), summary.dataset),
                                ("architecture", results.get("arch"), summary.arch)):
            if got and want and norm_name(got) != norm_name(want):
                raise ReportError(f"{spath}: a trainer summary of {want!r}, but {rpath} holds hwsim results of "
                                  f"{got!r} (its {what}): they are not from the same run")
    return Inputs(results, summary, rpath, spath)


# --------------------------------------------------------------------------------------
# shared quantities
# --------------------------------------------------------------------------------------
def percent(acc) -> float | None:
    """A results.json accuracy (fraction in [0, 1]) as a percentage."""
    return None if acc is None else round(100.0 * float(acc), 10)   # no 60.00000000000001


def ratio(a, b) -> float | None:
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def units(results: dict) -> tuple[str, str]:
    p = (results.get("energy_model") or {}).get("parameters") or {}
    return str(p.get("energy_unit") or "energy unit"), str(p.get("delay_unit") or "step")


def model_name(results: dict) -> str:
    return str((results.get("energy_model") or {}).get("name") or "unnamed energy model")


def dataset_arch(results: dict, summary: TrainerSummary | None) -> tuple[str, str]:
    return (results.get("dataset") or (summary.dataset if summary else "") or "unknown data set",
            results.get("arch") or (summary.arch if summary else "") or "unknown architecture")


def norm_name(s: str | None) -> str:
    return re.sub(r"[^a-z0-9]", "", (s or "").lower())


def layer_names(results: dict, spiking_only: bool) -> list[str]:
    """Layer names in the order of the first network, then any others' extra layers."""
    names: list[str] = []
    for net in results["networks"]:
        for l in net["layers"]:
            if (l["spiking"] or not spiking_only) and l["name"] not in names:
                names.append(l["name"])
    return names


def spike_ratio(results: dict, a: dict, b: dict) -> float | None:
    """Total spikes of network ``a`` over network ``b``: the file's ``ratios`` entry
    when it has one, else from the spikes per image."""
    for r in results.get("ratios") or []:
        if isinstance(r, dict) and r.get("numerator") == a["label"] and r.get("denominator") == b["label"] \
                and finite_number(r.get("spikes")):
            return float(r["spikes"])
    return ratio(a["totals"]["spikes_per_image"], b["totals"]["spikes_per_image"])


def paired_sentence(results: dict, a: dict, b: dict) -> str:
    """Network ``b`` against ``a`` image by image (the file's ``paired`` entry), as a sentence;
    "" where the file has none."""
    for p in results.get("paired") or []:
        if p["first"] == a["label"] and p["other"] == b["label"]:
            verdict = "within chance" if p["p_value"] >= 0.05 else "beyond chance at 5 %"
            return (f"Image by image, `{b['label']}` alone is right on {p['other_only']:,} images and "
                    f"`{a['label']}` alone on {p['first_only']:,} (exact sign test p = {p['p_value']:.2g}: "
                    f"{verdict}).")
    return ""


def edp_ratio(results: dict, a: dict, b: dict) -> float | None:
    for r in results.get("ratios") or []:
        if isinstance(r, dict) and r.get("numerator") == a["label"] and r.get("denominator") == b["label"] \
                and finite_number(r.get("edp")):
            return float(r["edp"])
    return ratio(a["totals"]["edp"], b["totals"]["edp"])


def ann_comparison(results: dict) -> dict:
    """Energy per image of the ANN baseline and of each network under one model
    (``snn_vs_ann``; falls back to the main model when the file has none)."""
    cmp = results.get("snn_vs_ann") or {}
    ann = results.get("ann_baseline") or {}
    unit = cmp.get("energy_unit") or ann.get("energy_unit") or units(results)[0]
    ann_e = cmp.get("ann_energy", ann.get("energy"))
    nets = {}
    for net in results["networks"]:
        entry = (cmp.get("networks") or {}).get(net["label"]) or {}
        e = entry.get("energy")
        if e is None and (cmp.get("model") or ann.get("model")) == model_name(results):
            e = net["totals"]["energy"]
        r = entry.get("ratio")
        nets[net["label"]] = {"energy": e if finite_number(e) else None,
                              "ratio": r if finite_number(r) else ratio(e, ann_e) if finite_number(e) else None}
    return {"model": cmp.get("model") or ann.get("model") or "", "energy_unit": unit,
            "ann_energy": ann_e if finite_number(ann_e) else None, "macs": ann.get("macs"),
            "e_mac": ann.get("e_mac"), "networks": nets}


def fmt(v, digits: int = 3) -> str:
    """A number for people: ``digits`` significant digits, thousands separators."""
    if v is None:
        return "n/a"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    v = float(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e6 or abs(v) < 1e-3:
        return sci(v, digits)
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def sci(v: float, digits: int = 3) -> str:
    """``6.45e12`` rather than Python's ``6.45e+12``."""
    m, e = f"{float(v):.{digits - 1}e}".split("e")
    m = m.rstrip("0").rstrip(".") if "." in m else m
    return f"{m}e{int(e)}"


def fmt_pct(v, decimals: int = 2) -> str:
    return "—" if v is None else f"{v:.{decimals}f}"


def float_accuracy(summary: TrainerSummary | None, stage: str | None, timesteps: int | None) -> float | None:
    """The trainer's float accuracy (percent) of a stage at T, when the summary has it."""
    return summary.accuracy(stage, timesteps) if summary is not None and stage else None


def network_accuracy(net: dict, summary: TrainerSummary | None) -> tuple[float | None, str]:
    """The accuracy to show next to a network: hwsim's fixed-point one when it has
    one, else the trainer's float one of its stage at the same T; and which of the two it is."""
    if net.get("accuracy") is not None:
        return percent(net["accuracy"]), "fixed point"
    v = float_accuracy(summary, net["stage"], net["timesteps"])
    return (v, "float") if v is not None else (None, "")
