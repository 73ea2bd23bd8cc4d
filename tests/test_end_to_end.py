"""The training chain on the embedded digits set: the relations the method promises."""
import json
import math

import pytest

from trainer import __main__ as trainer_cli
from trainer.checkpoint import load_checkpoint
from trainer.data import load_dataset
from trainer.snn import SNN, Surrogate
from trainer.train import OptimConfig, evaluate_snn, train_snn


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    args = trainer_cli.build_parser().parse_args(["chain", "--quiet", "--runs", str(runs), "--name", "digits"])
    report = trainer_cli.cmd_chain(args)
    return runs / "digits", report


def test_chain_relations(chain_run):
    run, report = chain_run
    acc = report["accuracy"]
    t_large, t_small = report["timesteps_large"], report["timesteps"]
    ann, large, small = acc["ann"], acc[f"converted_T{t_large}"], acc[f"converted_T{t_small}"]
    stdb, scratch = acc[f"stdb_T{t_small}"], acc[f"scratch_T{t_small}"]
    assert ann > 90.0
    assert abs(large - ann) <= 3.0, "converted SNN at large T should be within a few points of the ANN"
    assert small <= large - 2.0, "at a small T the converted SNN should lose accuracy"
    assert stdb >= small + 0.5 * (large - small), "fine-tuning should win most of the loss back"
    assert stdb > scratch, "hybrid training should beat training from scratch at the same T and epochs"
    assert json.loads((run / "trainer_summary.json").read_text())["accuracy"] == acc
    for stage in ("ann", "converted", "stdb", "scratch"):
        ckpt = load_checkpoint(run / f"{stage}.pt")
        assert ckpt.stage == stage
    assert load_checkpoint(run / "stdb.pt").snn.thresholds == load_checkpoint(run / "converted.pt").snn.thresholds
    assert (run / "metrics_ann.csv").read_text().count("\n") == 31  # header + one row per epoch


def test_resume_continues_from_last_epoch(chain_run, tmp_path):
    run, _ = chain_run
    bundle = load_dataset("digits")
    init = load_checkpoint(run / "converted.pt")
    opt = OptimConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0)
    out = tmp_path / "stdb.pt"
    train_snn(bundle, init, "stdb", 4, opt, out, progress=False)
    opt.epochs = 2  # as if a 2-epoch run had been interrupted after its first epoch
    resumed = train_snn(bundle, init, "stdb", 4, opt, out, progress=False)
    assert resumed.train_state["epoch"] == 2
    assert [int(r["epoch"]) for r in resumed.train_state["history"]] == [1, 2]


def test_guarded_stdb_does_not_collapse_where_plain_recipe_does(chain_run, tmp_path):
    """A too-large learning rate: the plain recipe ends below its start, the guarded one does not."""
    run, _ = chain_run
    bundle = load_dataset("digits")
    init = load_checkpoint(run / "converted.pt")
    start = evaluate_snn(SNN(init.model(), init.snn.thresholds), bundle, 4)["accuracy"]
    results = {}
    for name, opt, extra in (
            ("plain", OptimConfig(epochs=3, lr=1e-2, optimizer="adam", weight_decay=0.0),
             {"rollback_drop": math.inf, "keep_best": False}),
            ("guarded", OptimConfig(epochs=3, lr=1e-2, optimizer="adam", weight_decay=0.0, warmup_epochs=0.5,
                                    grad_clip=1.0), {})):
        ckpt = train_snn(bundle, init, "stdb", 4, opt, tmp_path / f"{name}.pt", surrogate=Surrogate("stdb"),
                         progress=False, **extra)
        results[name] = evaluate_snn(SNN(ckpt.model(), ckpt.snn.thresholds), bundle, 4)["accuracy"]
    assert results["plain"] < start - 2.0
    assert results["guarded"] >= start - 0.5
