"""``render_report``: read the result files, render every figure, table and report.md
in memory, then write them all at once (temporary files, then ``os.replace``)."""
from __future__ import annotations

import os
from pathlib import Path

from records.atomic import write_together
from records.layout import REPORT_DIR as FIGURE_DIR, REPORT_FILE as REPORT_NAME
from reports import figures
from reports.methods import METHODS_COLUMNS, METHODS_CSV, methods_figure, methods_rows
from reports.common import Inputs, load_inputs
from reports.markdown import TABLE1_CSV, report_markdown
from records.table import csv_text
from reports.tables import TABLE1_COLUMNS, table1_rows



def _shown(path: Path | None, base: Path) -> str | None:
    """A path as shown in report.md: relative to the report's folder when possible."""
    if path is None:
        return None
    try:
        rel = Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:       # another drive
        return str(path.resolve())
    return str(path.resolve()) if rel.startswith("..") else rel


def build_report(inputs: Inputs, out: Path) -> dict[Path, str | bytes]:
    """Every output file of the report (path -> content), nothing written yet."""
    res, summ = inputs.results, inputs.summary
    fig_dir = out / FIGURE_DIR
    contents: dict[str, str | bytes] = {}
    contents.update(figures.fig3_spikes_per_layer(res, summ))
    contents.update(figures.energy_figure(res, summ))
    contents.update(figures.accuracy_vs_timesteps(res, summ) or {})
    contents.update(methods_figure(res, summ))
    rows, compared = table1_rows(res, summ), methods_rows(res, summ)
    contents[TABLE1_CSV] = csv_text(rows, TABLE1_COLUMNS)
    if compared:
        contents[METHODS_CSV] = csv_text(compared, METHODS_COLUMNS)
    links = {name: f"{FIGURE_DIR}/{name}" for name in contents}
    md = report_markdown(res, summ, links,
                         {"results": _shown(inputs.results_path, out), "summary": _shown(inputs.summary_path, out)},
                         rows, compared)
    files: dict[Path, str | bytes] = {fig_dir / name: c for name, c in contents.items()}
    files[out / REPORT_NAME] = md
    return files


def render_report(run_dir, results_path=None, summary_path=None, out=None) -> Path:
    """Render the report of a run folder and return the path of ``report.md``.

    Inputs default to ``RUN_DIR/hwsim/results.json`` and ``RUN_DIR/trainer_summary.json``
    (optional); ``report.md`` goes to ``out`` (default ``RUN_DIR``), figures and CSVs to
    ``out/report/``. Raises :class:`reports.common.ReportError` on a missing or invalid
    input, before anything is written."""
    inputs = load_inputs(run_dir, results_path, summary_path)
    out = Path(out) if out is not None else Path(run_dir)
    files = build_report(inputs, out)
    write_together(files, index=out / REPORT_NAME)
    return out / REPORT_NAME
