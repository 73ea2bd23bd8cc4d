"""The run layout: every path of a run folder and the stage names, defined once.

::

    runs/<name>/                       RunLayout(root)
        ann.pt converted.pt stdb.pt scratch.pt          checkpoint(stage)
        spikebp.pt bncurrent.pt                          (the baselines of --methods)
        qcfs_ann.pt qcfs_converted.pt qcfs.pt            (the low-latency recipe of --methods)
        metrics_<stage>.csv                              metrics(checkpoint path)
        trainer_summary.json                             trainer_summary
        export/<stage>/coregraph.npz ...                 export_dir(stage), graph(stage)
        hwsim/results.json layers.csv summary.csv inputs.npz   hwsim_dir, hwsim_file(...)
        report.md, report/*.png *.csv                    REPORT_FILE, report_dir
        stage_times.csv                                  STAGE_TIMES_FILE (python -m pipeline)

    <folder>/<name>.nir -> <folder>/<name>_core/coregraph.npz ...   nir_import_dir (export.to_lava x.nir)

A checkpoint's run folder is the folder it lies in; a graph's is found by
``RunLayout.of_graph``. Nothing outside this module builds or parses a run path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STAGES = ("ann", "converted", "stdb", "scratch", "spikebp", "bncurrent", "qcfs_ann", "qcfs_converted", "qcfs")
SNN_STAGES = ("converted", "stdb", "scratch", "spikebp", "bncurrent", "qcfs_converted", "qcfs")
ANN_STAGES = ("ann", "qcfs_ann")                 # the paper's ANN, the low-latency recipe's (trainer.qcfs)
CONVERTED_STAGES = ("converted", "qcfs_converted")
# The training methods ``python -m pipeline --methods`` compares, and the stage each one's network comes from:
# the hybrid (conversion + STDB), Lee 2020's spike-based BP, batch norm on input currents (trainer.methods),
# the low-latency recipe (a QCFS ANN with batch norm, converted, then STDB: trainer.qcfs).
BASELINE_STAGES = {"spikebp": "spikebp", "bncurrent": "bncurrent"}    # the hybrid's baselines (trainer.methods)
METHOD_STAGES = {"hybrid": "stdb", **BASELINE_STAGES, "qcfs": "qcfs"}
COMPARED_STAGES = ("converted", "stdb")        # what hwsim compares by default (converted / STDB)

GRAPH_FILE = "coregraph.npz"
QUANTIZATION_REPORT_FILE = "quantization_report.csv"
EXPORT_SUMMARY_FILE = "export_summary.json"
ONNX_FILE = "model.onnx"
NIR_FILE = "model.nir"
RESULTS_FILE, LAYERS_FILE, SUMMARY_FILE, INPUTS_FILE = "results.json", "layers.csv", "summary.csv", "inputs.npz"
PREDICTIONS_FILE = "predictions.csv"            # hwsim: per network and image, the class and output voltages
TRAINER_SUMMARY_FILE = "trainer_summary.json"
REPORT_FILE, REPORT_DIR = "report.md", "report"
STAGE_TIMES_FILE = "stage_times.csv"            # the pipeline's wall time per stage (and its budget)


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
    return stage


def nir_import_dir(nir_file: str | os.PathLike) -> Path:
    """Where ``python -m export.to_lava model.nir`` writes by default: ``<folder>/model_core/``."""
    nir_file = Path(nir_file)
    return nir_file.with_name(f"{nir_file.stem}_core")


def metrics_path(checkpoint: str | os.PathLike) -> Path:
    """The per-epoch metrics CSV written beside a checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"metrics_{checkpoint.stem}.csv")


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def named(cls, runs: str | os.PathLike, dataset: str, arch: str, name: str | None = None) -> "RunLayout":
        """``runs/<name>``, by default ``runs/<dataset>-<arch>``."""
        return cls(Path(runs) / (name or f"{dataset}-{arch}"))

    @classmethod
    def of_checkpoint(cls, path: str | os.PathLike) -> "RunLayout":
        return cls(Path(path).parent)

    @classmethod
    def of_graph(cls, path: str | os.PathLike) -> "RunLayout | None":
        """The run a graph file belongs to (``<run>/export/<stage>/coregraph.npz``), else None."""
        path = Path(path).resolve()
        if len(path.parents) < 3:
            return None
        run = cls(path.parents[2])
        stage = path.parent.name
        return run if stage in STAGES and run.graph(stage) == path else None

    @classmethod
    def latest(cls, runs: str | os.PathLike, stages=COMPARED_STAGES) -> "RunLayout | None":
        """The most recently changed run folder under ``runs`` with a graph for every stage."""
        found = [cls(d) for d in Path(runs).glob("*/") if d.is_dir()]
        found = [r for r in found if all(r.graph(s).is_file() for s in stages)]
        return max(found, key=lambda r: r.root.stat().st_mtime) if found else None

    def checkpoint(self, stage: str) -> Path:
        return self.root / f"{check_stage(stage)}.pt"

    @property
    def trainer_summary(self) -> Path:
        return self.root / TRAINER_SUMMARY_FILE

    def export_dir(self, stage: str) -> Path:
        return self.root / "export" / check_stage(stage)

    def graph(self, stage: str) -> Path:
        return self.export_dir(stage) / GRAPH_FILE

    @property
    def hwsim_dir(self) -> Path:
        return self.root / "hwsim"

    @property
    def results(self) -> Path:
        return self.hwsim_dir / RESULTS_FILE

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR
