"""Reading the report's inputs, and the few derived quantities that figures, tables
and the Markdown summary share (so that all of them print the same number).

Inputs, both read from files only (no torch, no retraining):

* ``results.json`` of hwsim, read and validated by :func:`hwsim.results.load_results`
  (its module docstring is the schema). Accuracies there are fractions in [0, 1];
  energies, delays and EDPs are per image in the energy model's units.
* ``trainer_summary.json`` of ``python -m trainer chain`` (optional)::

      {"dataset", "arch", "timesteps_large", "timesteps",
       "accuracy": {"ann", "converted_T<large>", "converted_T<T>", "stdb_T<T>", "scratch_T<T>"?},
       "seconds": {...}}

  Accuracies there are percentages (float network, the trainer's evaluation).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hwsim.results import RESULTS_NAME, ResultsError, load_results

SUMMARY_NAME = "trainer_summary.json"


class ReportError(ValueError):
    """An input the report cannot be made from (missing, corrupt, or of another format)."""


@dataclass
class Inputs:
    results: dict
    summary: dict | None
    results_path: Path
    summary_path: Path | None


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------
_ACC_KEY = re.compile(r"^(converted|stdb|scratch)_T(\d+)$")


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_trainer_summary(path: str | os.PathLike) -> dict:
    """Read ``trainer_summary.json`` and check the fields the report uses."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such trainer summary file")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: corrupt trainer summary ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("accuracy"), dict):
        raise ReportError(f"{path}: not a trainer summary (no 'accuracy' object)")
    for k, v in doc["accuracy"].items():
        if not _finite_number(v) or not 0 <= v <= 100:
            raise ReportError(f"{path}: accuracy {k!r} = {v!r} is not a percentage")
    for k in ("dataset", "arch"):
        if k in doc and not isinstance(doc[k], str):
            raise ReportError(f"{path}: {k!r} must be a string")
    for k in ("timesteps", "timesteps_large"):
        if k in doc and (not isinstance(doc[k], int) or isinstance(doc[k], bool) or doc[k] < 1):
            raise ReportError(f"{path}: {k!r} must be a positive integer")
    return doc


def load_inputs(run_dir: str | os.PathLike, results_path=None, summary_path=None) -> Inputs:
    """Default inputs: ``RUN_DIR/hwsim/results.json`` (required) and
    ``RUN_DIR/trainer_summary.json`` (used when present; required when named)."""
    run_dir = Path(run_dir)
    rpath = Path(results_path) if results_path is not None else run_dir / "hwsim" / RESULTS_NAME
    try:
        results = load_results(rpath)
    except ResultsError as exc:
        raise ReportError(str(exc)) from None
    if summary_path is not None:
        spath = Path(summary_path)
        summary = load_trainer_summary(spath)
    else:
        spath = run_dir / SUMMARY_NAME
        summary = load_trainer_summary(spath) if spath.is_file() else None
        if summary is None:
            spath = None
    if rpath.is_dir():
        rpath = rpath / RESULTS_NAME
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


def dataset_arch(results: dict, summary: dict | None) -> tuple[str, str]:
    s = summary or {}
    return (results.get("dataset") or s.get("dataset") or "unknown data set",
            results.get("arch") or s.get("arch") or "unknown architecture")


def norm_name(s: str | None) -> str:
    return re.sub(r"[^a-z0-9]", "", (s or "").lower())


def network_kind(label: str) -> str | None:
    """Which trainer stage an hwsim network label names: converted, stdb or scratch."""
    n = norm_name(label)
    if n.startswith("conv"):
        return "converted"
    if "stdb" in n or "hybrid" in n:
        return "stdb"
    if "scratch" in n:
        return "scratch"
    return None


def spiking_layers(net: dict) -> list[dict]:
    return [l for l in net["layers"] if l["spiking"]]


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
                and _finite_number(r.get("spikes")):
            return float(r["spikes"])
    return ratio(a["totals"]["spikes_per_image"], b["totals"]["spikes_per_image"])


def edp_ratio(results: dict, a: dict, b: dict) -> float | None:
    for r in results.get("ratios") or []:
        if isinstance(r, dict) and r.get("numerator") == a["label"] and r.get("denominator") == b["label"] \
                and _finite_number(r.get("edp")):
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
        nets[net["label"]] = {"energy": e if _finite_number(e) else None,
                              "ratio": r if _finite_number(r) else ratio(e, ann_e) if _finite_number(e) else None}
    return {"model": cmp.get("model") or ann.get("model") or "", "energy_unit": unit,
            "ann_energy": ann_e if _finite_number(ann_e) else None, "macs": ann.get("macs"),
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


def accuracy_keys(summary: dict | None) -> list[tuple[str, int, str]]:
    """(kind, T, key) of the trainer summary's SNN accuracies."""
    out = []
    for k in (summary or {}).get("accuracy", {}):
        m = _ACC_KEY.match(k)
        if m:
            out.append((m.group(1), int(m.group(2)), k))
    return out


def float_accuracy(summary: dict | None, kind: str, timesteps: int) -> float | None:
    acc = (summary or {}).get("accuracy", {})
    v = acc.get(f"{kind}_T{timesteps}")
    return None if v is None else float(v)


def network_accuracy(net: dict, summary: dict | None) -> tuple[float | None, str]:
    """The accuracy to show next to a network: hwsim's fixed-point one when it has
    one, else the trainer's float one at the same T; and which of the two it is."""
    if net.get("accuracy") is not None:
        return percent(net["accuracy"]), "fixed point"
    kind = network_kind(net["label"])
    if kind:
        v = float_accuracy(summary, kind, net["timesteps"])
        if v is not None:
            return v, "float"
    return None, ""
