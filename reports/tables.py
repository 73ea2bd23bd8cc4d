"""Table 1-style summary (ANN, converted at the large and the reduced T, hybrid/STDB,
from scratch), CSV and Markdown writing."""
from __future__ import annotations

from reports.common import dataset_arch, float_accuracy, fmt_pct, norm_name, percent

# The paper's Table 1 (Rathi et al., ICLR 2020; docs/method.md), CIFAR-10 unless named.
# (dataset, arch) -> {"ann": acc, "converted_large": (acc, T), "converted": (acc, T), "stdb": (acc, T)}
PAPER_TABLE1 = {
    ("cifar10", "vgg5"): {"ann": 87.88, "converted_large": (87.64, 2500), "converted": (84.56, 75),
                          "stdb": (86.91, 75)},
    ("cifar10", "vgg9"): {"ann": 91.45, "converted_large": (90.98, 2500), "converted": (87.31, 100),
                          "stdb": (90.54, 100)},
    ("cifar10", "vgg16"): {"ann": 92.81, "converted_large": (92.48, 2500), "converted": (90.20, 100),
                           "stdb": (91.13, 100)},
    ("cifar10", "resnet20"): {"ann": 93.15, "converted_large": (92.94, 2500), "converted": (91.12, 250),
                              "stdb": (92.22, 250)},
    ("cifar100", "vgg11"): {"ann": 71.21, "converted_large": (70.94, 2500), "converted": (65.52, 125),
                            "stdb": (67.87, 125)},
}
PAPER_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "vgg5": "VGG5", "vgg9": "VGG9",
               "vgg11": "VGG11", "vgg16": "VGG16", "resnet20": "ResNet20"}

TABLE1_COLUMNS = ["row", "network", "timesteps", "float_accuracy", "float_samples", "fixed_point_accuracy",
                  "fixed_point_samples",
                  "hwsim_network", "paper_accuracy", "paper_timesteps"]
KIND_NAMES = {"ann": "ANN", "converted": "converted", "stdb": "hybrid (STDB)", "scratch": "from scratch",
              "spikebp": "spike-based BP (Lee 2020)", "bncurrent": "BN on input currents",
              "qcfs_ann": "low-latency ANN (QCFS + BN)", "qcfs_converted": "low latency: converted",
              "qcfs": "low latency: hybrid (STDB)"}
_KIND_ORDER = {"ann": 0, "converted": 1, "stdb": 2, "scratch": 3, "spikebp": 4, "bncurrent": 5, "qcfs_ann": 6,
               "qcfs_converted": 7, "qcfs": 8}


def paper_rows_text() -> str:
    """The paper's Table 1 rows in words, e.g. 'VGG5, VGG9 on CIFAR-10 and VGG11 on CIFAR-100'."""
    by: dict[str, list[str]] = {}
    for ds, arch in PAPER_TABLE1:
        by.setdefault(PAPER_NAMES[ds], []).append(PAPER_NAMES[arch])
    return " and ".join(f"{', '.join(archs)} on {ds}" for ds, archs in by.items())


def paper_row(dataset: str, arch: str) -> tuple[str, dict] | None:
    """The paper's Table 1 row for this data set and architecture, with its name."""
    key = (norm_name(dataset), norm_name(arch))
    row = PAPER_TABLE1.get(key)
    if row is None:
        return None
    return f"{PAPER_NAMES[key[1]]}, {PAPER_NAMES[key[0]]}", row


def table1_rows(results: dict, summary) -> list[dict]:
    """One row per model: from the trainer summary (float accuracies) where there is
    one, with hwsim's fixed-point accuracy where hwsim ran that stage at that T, and
    the paper's number where the data set and architecture match a Table 1 row.
    hwsim networks with no trainer row get rows of their own. Accuracies in percent."""
    dataset, arch = dataset_arch(results, summary)
    paper = paper_row(dataset, arch)
    paper = paper[1] if paper else {}
    entries = sorted(((a.stage, a.timesteps, a.accuracy, a.samples) for a in (summary.accuracies if summary else [])),
                     key=lambda e: (_KIND_ORDER[e[0]], -(e[1] or 0)))
    rows, used = [], set()
    for kind, t, acc, samples in entries:
        net = next((n for n in results["networks"] if n["label"] not in used and n["stage"] == kind
                    and n["timesteps"] == t), None)
        if net is not None:
            used.add(net["label"])
        if kind == "ann":
            p_acc, p_t = paper.get("ann"), None
        elif kind == "converted" and t == summary.timesteps.large and t != summary.timesteps.reduced:
            p_acc, p_t = paper.get("converted_large", (None, None))
        else:
            p_acc, p_t = paper.get(kind, (None, None))
        name = None
        if kind == "stdb" and summary.surrogate != "stdb":
            name = f"hybrid (fine-tuned, {summary.surrogate} surrogate)"
        rows.append(_row(kind, t, acc, net, p_acc, p_t, name=name, samples=samples))
    for net in results["networks"]:
        if net["label"] not in used:
            kind = net["stage"]
            p_acc, p_t = paper.get(kind, (None, None)) if kind else (None, None)
            rows.append(_row(kind, net["timesteps"], float_accuracy(summary, kind, net["timesteps"]),
                             net, p_acc, p_t, name=net["label"]))
    return rows


def _row(kind, t, acc, net, p_acc, p_t, name=None, samples=None) -> dict:
    display = name or KIND_NAMES.get(kind, kind)
    return {"row": f"{kind}_T{t}" if t is not None else (kind or name), "network": display, "timesteps": t,
            "float_accuracy": acc, "float_samples": samples,
            "fixed_point_accuracy": percent(net.get("accuracy")) if net else None,
            "fixed_point_samples": net["samples"] if net else None,
            "hwsim_network": net["label"] if net else None,
            "paper_accuracy": p_acc, "paper_timesteps": p_t}


def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], body: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def table1_markdown(rows: list[dict], results: dict, summary: dict | None) -> str:
    dataset, arch = dataset_arch(results, summary)
    paper = paper_row(dataset, arch)
    samples = sorted({r["fixed_point_samples"] for r in rows if r["fixed_point_samples"] is not None})
    fx_head = "fixed point, hwsim (%)" + (f", {samples[0]:,} samples" if len(samples) == 1 else "")
    header = ["network", "T", "float, trainer (%)", fx_head]
    if paper:
        header.append(f"paper, {paper[0]} (%)")
    # Evaluations on subsets of different sizes (a budget's deadline, --eval-samples) say how many images.
    counted = len({r["float_samples"] for r in rows if r["float_accuracy"] is not None}) > 1
    body = []
    for r in rows:
        float_cell = fmt_pct(r["float_accuracy"])
        if counted and r["float_accuracy"] is not None and r["float_samples"] is not None:
            float_cell += f" ({r['float_samples']:,} imgs)"
        cells = [r["network"], "—" if r["timesteps"] is None else r["timesteps"], float_cell,
                 fmt_pct(r["fixed_point_accuracy"])]
        if paper:
            p = fmt_pct(r["paper_accuracy"])
            if r["paper_accuracy"] is not None and r["paper_timesteps"] is not None:
                p += f" (T={r['paper_timesteps']})"
            cells.append(p)
        body.append(cells)
    return markdown_table(header, body)
