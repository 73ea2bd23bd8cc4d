"""The whole chain in one command: ``python -m pipeline [--dataset digits] ...``.

trainer (ANN -> conversion -> STDB, + from-scratch baseline) writes runs/<name>/*.pt;
export quantizes the converted and STDB networks into core graphs (runs/<name>/export/);
hwsim replays the same Poisson inputs through both (runs/<name>/hwsim/, --edp);
reports draws Fig. 3, the energy/EDP figures and the tables (runs/<name>/report.md).
Each step is the step's own command line, called in order; nothing here computes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export import to_lava
from hwsim import run as hwsim_run
from reports import render_report
from trainer import __main__ as trainer_cli
from trainer.data import DATASETS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=DATASETS)
    p.add_argument("--data-root", default=None)
    p.add_argument("--arch", default=None)
    p.add_argument("--timesteps", type=int, default=None, help="reduced T (STDB, export, hwsim)")
    p.add_argument("--timesteps-large", type=int, default=None, help="large T to evaluate the conversion")
    p.add_argument("--epochs", type=int, default=None, help="ANN epochs")
    p.add_argument("--snn-epochs", type=int, default=None, help="STDB / from-scratch epochs")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--name", default=None, help="run folder name under --runs")
    p.add_argument("--runs", default="runs")
    p.add_argument("--samples", type=int, default=None, help="hwsim test samples (default: test set, <= 1500)")
    p.add_argument("--sweep", default=None, help="T values for accuracy vs T, e.g. 2,4,8,16 (default: a range)")
    p.add_argument("--energy-model", default="first_order")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-scratch", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def default_sweep(reduced: int, large: int) -> str:
    """Powers of two up to the large T, plus the reduced T: the accuracy-vs-T trade-off."""
    points = {reduced, large} | {2 ** k for k in range(12) if 2 ** k < large}
    return ",".join(str(t) for t in sorted(points))


def _optional(flag: str, value) -> list[str]:
    return [] if value is None else [flag, str(value)]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    chain = ["chain", "--dataset", args.dataset, "--runs", args.runs, "--seed", str(args.seed),
             "--device", args.device]
    chain += _optional("--data-root", args.data_root) + _optional("--arch", args.arch)
    chain += _optional("--timesteps", args.timesteps) + _optional("--timesteps-large", args.timesteps_large)
    chain += _optional("--epochs", args.epochs) + _optional("--snn-epochs", args.snn_epochs)
    chain += _optional("--train-subset", args.train_subset) + _optional("--test-subset", args.test_subset)
    chain += _optional("--name", args.name)
    chain += ["--no-scratch"] * args.no_scratch + ["--quiet"] * args.quiet
    print("== 1/4 trainer: ANN -> conversion -> STDB", flush=True)
    targs = trainer_cli.build_parser().parse_args(chain)
    try:
        summary = trainer_cli.cmd_chain(targs)
    except trainer_cli.USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run = Path(args.runs) / (args.name or f"{summary['dataset']}-{summary['arch']}")

    sweep = [int(t) for t in (args.sweep or default_sweep(summary["timesteps"], summary["timesteps_large"])).split(",")]
    print("== 2/4 export: quantize the converted and the STDB network", flush=True)
    for stage in ("converted", "stdb"):
        # Size the output accumulator for the largest T of the accuracy-vs-T sweep.
        code = to_lava.main([str(run / f"{stage}.pt"), "--seed", str(args.seed),
                             "--calibration-timesteps", str(max(sweep))] + _optional("--data-root", args.data_root))
        if code:
            return code

    print("== 3/4 hwsim: same inputs through both networks, --edp", flush=True)
    sim = ["--edp", "--graph", f"converted={run / 'export/converted/coregraph.npz'}",
           "--graph", f"stdb={run / 'export/stdb/coregraph.npz'}", "--energy-model", args.energy_model,
           "--device", args.device, "--seed", str(args.seed), "--out", str(run / "hwsim")]
    sim += _optional("--samples", args.samples) + _optional("--data-root", args.data_root)
    sim += ["--sweep", ",".join(map(str, sweep))]
    sim += ["--no-progress"] * args.quiet
    code = hwsim_run.main(sim)
    if code:
        return code

    print("== 4/4 reports", flush=True)
    report = render_report(run)
    print(f"summary: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
