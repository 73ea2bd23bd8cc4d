"""python -m reports RUN_DIR [--results FILE] [--trainer-summary FILE] [--out DIR]

Render the report of a run from its result files alone: Fig. 3 (average spikes per
neuron per layer), energy and EDP, accuracy vs T (when results.json has a sweep),
a Table 1-style table, and report.md linking them. Defaults: RUN_DIR/hwsim/results.json,
RUN_DIR/trainer_summary.json (optional); report.md in RUN_DIR, figures and CSVs in
RUN_DIR/report/. Exit status 2 on a missing or invalid input (nothing is written).
"""
from __future__ import annotations

import argparse
import sys

from records.cli import OUTPUT_DIR, Parser, run_main, writable_dir
from reports.render import render_report

__all__ = ["main", "render_report"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m reports", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder (e.g. runs/digits-vgg_tiny)")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="hwsim results.json (default: RUN_DIR/hwsim/results.json)")
    p.add_argument("--trainer-summary", default=None, metavar="FILE",
                   help="trainer_summary.json (default: RUN_DIR/trainer_summary.json when present)")
    p.add_argument("--out", type=OUTPUT_DIR, default=None, metavar="DIR",
                   help="output folder for report.md (figures and CSVs go to DIR/report/; default: RUN_DIR)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body():
        out = writable_dir(args.out or args.run_dir, "--out" if args.out else "RUN_DIR")
        print(render_report(args.run_dir, args.results, args.trainer_summary, out))
    return run_main("reports", body)


if __name__ == "__main__":
    sys.exit(main())
