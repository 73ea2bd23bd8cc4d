"""Figures, tables and a Markdown summary from hwsim's and the trainer's result files
(``python -m reports RUN_DIR``); reads files only, never torch or checkpoints."""


def render_report(run_dir, results_path=None, summary_path=None, out=None):
    """See :func:`reports.render.render_report` (imported lazily: matplotlib is slow to load)."""
    from reports.render import render_report as _render
    return _render(run_dir, results_path, summary_path, out)
