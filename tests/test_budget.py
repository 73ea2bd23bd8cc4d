"""The one-GPU-run profile (``python -m pipeline --budget-minutes``) on the CPU at a tiny
scale: the same code path as the CIFAR-10 VGG16 run, in seconds."""
import dataclasses
import json
import re
import time

import pandas as pd
import torch
import pytest

import records.progress as progress_mod
import trainer.train as train
from pipeline.__main__ import build_parser, main as pipeline_main
from pipeline.budget import LOW_LATENCY_SHARES, STAGES, StageClock
from records.layout import RunLayout
from records.sizing import USABLE_FRACTION
from records.timesteps import TimeSteps
from records.trainer_summary import load_trainer_summary
from trainer.checkpoint import load_checkpoint
from trainer.data import load_dataset
from trainer.models import build_config
from trainer.defaults import (LOW_LATENCY_CALIBRATION, LOW_LATENCY_T, default_recipe, fast_recipe, fast_snn_optim,
                              low_latency_recipe)
from trainer.chain import fitted_timesteps, train_ann_in_time
from trainer.fit import EpochPlanner, StepPlanner, fit_warmup, plan_epochs
from trainer.recipe import OptimConfig, Runtime, SNNTrainConfig, fast_precision
from trainer.train_state import TrainingState
from trainer.train import train_ann, train_snn

QUIET = Runtime(progress=False)


def test_budgeted_pipeline_runs_every_stage(tmp_path, capsys):
    assert pipeline_main(["--budget-minutes", "0.75", "--runs", str(tmp_path), "--name", "b", "--quiet"]) == 0
    run = RunLayout(tmp_path / "b")
    times = pd.read_csv(run.root / "stage_times.csv")
    assert list(times["stage"]) == list(STAGES) and (times["seconds"] >= 0).all()
    assert set(times.columns) >= {"share_seconds", "ended_by_deadline"}
    out = capsys.readouterr().out
    assert "s per epoch; the budget fits" in out and "stage wall times (s): data" in out
    summary = load_trainer_summary(run.trainer_summary)
    assert summary.accuracy("ann") > 85 and summary.accuracy("stdb", 4) > 85
    assert summary.timesteps.sweep == (1, 2, 4)                   # the powers of two below T, and T
    assert not run.checkpoint("scratch").exists()                 # no baseline inside a budget
    ann = load_checkpoint(run.checkpoint("ann"))
    config = ann.train_state["config"]
    assert config["precision"] == fast_precision("cpu") and config["channels_last"]
    # the plan, or fewer where the machine slowed after the timing (the deadline ends the epoch in hand)
    assert 1 <= ann.metrics["epochs"] <= ann.train_state["planned_epochs"] <= 200
    assert (run.root / "report.md").exists() and (run.hwsim_dir / "results.json").exists()
    # the fine-tuning's checks take as many images as the converted network's test at T reached
    tested = load_checkpoint(run.checkpoint("converted")).metrics["test_T4"]["samples"]
    assert load_checkpoint(run.checkpoint("stdb")).train_state["config"]["val_samples"] == tested


def test_the_fine_tuning_warm_up_fits_the_steps_a_deadline_leaves():
    opt = OptimConfig(epochs=20, lr=1e-4, optimizer="adam", warmup_epochs=0.2)
    assert fit_warmup(opt, 24 / 700).warmup_epochs == pytest.approx(0.1 * 24 / 700)   # a plan of 24 steps
    assert fit_warmup(opt, 20.0).warmup_epochs == 0.2      # time to spare: the recipe's


def test_the_fine_tuning_plan_fits_the_time_left_and_only_shrinks():
    opt = OptimConfig(epochs=20, lr=3e-4, optimizer="adam", warmup_epochs=0.05, schedule="cosine")
    planner = StepPlanner(Runtime(progress=False, deadline=time.monotonic() + 35.0), opt)
    state = TrainingState()
    # an epoch of 10 s training and 2 s validation, 35 s left after it: 1 + 33 / 10 epochs
    sched, ends = planner.after_epoch(opt, state, 0, 0, (0.0, 10.0, 12.0, 0.0), 100)
    assert state.planned_epochs == pytest.approx(4.3, abs=0.01) and not ends
    assert planner.span(sched) == state.planned_epochs and sched.warmup_epochs == 0.05
    assert planner.another_epoch(4, 0) and not planner.another_epoch(5, 0)
    assert planner.stop_before(4, 29, 100) is None and "plan" in planner.stop_before(4, 30, 100)
    # the next epoch took 30 s: 34 s left, less the 3 validations of 2 s the plan still holds,
    # at 30 s an epoch
    planner.rt.deadline = time.monotonic() + 34.0
    sched, ends = planner.after_epoch(sched, state, 1, 0, (0.0, 30.0, 32.0, 0.0), 100)
    assert state.planned_epochs == pytest.approx(2 + 28 / 30, abs=0.01) and not ends
    planner.rt.deadline = time.monotonic() + 1e6                       # back to speed: no growth
    sched, ends = planner.after_epoch(sched, state, 2, 0, (0.0, 1.0, 1.1, 0.0), 100)
    assert state.planned_epochs == pytest.approx(2 + 28 / 30, abs=0.01) and ends
    resumed = StepPlanner(planner.rt, opt)                             # a resumed run goes on with the plan
    assert resumed.span(resumed.schedule(state)) == state.planned_epochs


def test_the_first_plan_keeps_the_time_of_its_closing_check(monkeypatch):
    """Planned inside the first epoch, the fine-tuning leaves the initial validation's time for the
    validation at its end (VGG5 at T = 75: two 5-minute checks, one of them not planned for)."""
    import trainer.fit as fit_mod

    opt = OptimConfig(epochs=20, lr=1e-4, optimizer="adam", warmup_epochs=0.05, schedule="cosine")
    clock = None                                   # steps 2 to 1 + PLAN_STEPS take 1 s each
    monkeypatch.setattr(fit_mod.time, "time", lambda: next(clock))
    plans = {}
    for check in (0.0, 20.0):
        planner = StepPlanner(Runtime(progress=False, deadline=time.monotonic() + 100.0), opt, check_seconds=check)
        state = TrainingState()
        clock = iter([0.0, fit_mod.PLAN_STEPS * 1.0])
        planner.at_step(opt, state, 0, 0, 1, 1000)
        planner.at_step(opt, state, 0, 0, 1 + fit_mod.PLAN_STEPS, 1000)
        plans[check] = state.planned_epochs
    # 100 s left at 1,000 s an epoch: 0.1 epochs more; 80 s with the check kept
    assert plans[0.0] == pytest.approx(0.011 + 0.1, abs=0.002)
    assert plans[20.0] == pytest.approx(0.011 + 0.08, abs=0.002)


def test_budgeted_fine_tuning_anneals_by_the_end_of_its_plan(tmp_path, capsys, monkeypatch):
    bundle = load_dataset("digits", train_subset=600, test_subset=60)
    arch = build_config("vgg_tiny", bundle.input_shape, bundle.num_classes)
    ann = train_ann(bundle, arch, OptimConfig(epochs=3, lr=0.05), tmp_path / "ann.pt", QUIET)
    from trainer.chain import convert, ConvertConfig
    conv = convert(ann, bundle, ConvertConfig(balance_batches=1), 4, tmp_path / "conv.pt", QUIET)
    opt = fast_snn_optim("digits", OptimConfig(epochs=3, lr=1e-3, optimizer="adam", batch_size=16), "cpu")
    assert opt.schedule == "cosine" and opt.epochs == 20
    rt = Runtime(progress=True, deadline=time.monotonic() + 6.0)
    monkeypatch.setattr(progress_mod, "LINE_SECONDS", 0.0)            # a progress line after every step
    snn = train_snn(bundle, conv, "stdb", 4, SNNTrainConfig(opt), tmp_path / "stdb.pt", rt)
    captured = capsys.readouterr()
    out = captured.out
    planned = snn.train_state["planned_epochs"]
    first = [line for line in captured.err.splitlines() if line.startswith("STDB epoch 1/")]
    assert first[0].startswith("STDB epoch 1/20 ")                     # before the plan: the recipe's epochs
    first_plan = float(re.search(r"the budget fits ([0-9.]+) epochs", out).group(1))
    shown = float(re.match(r"STDB epoch 1/([0-9.]+) ", first[-1]).group(1))   # after it, in the same epoch:
    assert abs(shown - first_plan) <= 0.06          # the plan (the bar's 3 digits of it; the message's 2 decimals)
    assert "STDB: " in out and f"the budget fits {planned:.2f} epochs" in out
    assert f"the plan of {planned:.2f} epochs ends" in out or "the stage's time is spent" in out
    assert 1 < planned < 20
    rows = pd.read_csv(tmp_path / "metrics_stdb.csv")
    assert len(rows) == int(planned) + 1 or len(rows) == int(planned)   # the last epoch ends inside
    assert rows["lr"].iloc[-1] < 0.1 * opt.lr                          # annealed: the cosine's last tenth


def test_plan_epochs_fits_the_time_left():
    assert plan_epochs(200, 1, 2.0, 100.0) == 51
    assert plan_epochs(200, 1, 0.1, 1000.0) == 200
    assert plan_epochs(200, 3, 10.0, 5.0) == 3            # never fewer than done


def test_a_slowed_machine_shrinks_the_plan_so_the_schedule_still_ends():
    opt = OptimConfig(epochs=200, lr=0.05, schedule="cosine")
    planner = EpochPlanner(Runtime(progress=False, deadline=time.monotonic() + 100.0), opt)
    state = TrainingState(history=[{"seconds": s} for s in (10.0, 10.0, 30.0, 30.0)], planned_epochs=20)
    sched, ends = planner.after_epoch(dataclasses.replace(opt, epochs=20), state, 5, 0, None, 100)
    assert sched.epochs == state.planned_epochs == 9 and not ends       # 6 done + (100 + 15) // 30
    state.history.append({"seconds": 10.0})                               # back to speed: no growth
    sched, _ = planner.after_epoch(sched, state, 6, 0, None, 100)
    assert sched.epochs == 9
    one_slow = TrainingState(history=[{"seconds": 10.0}, {"seconds": 30.0}], planned_epochs=20)
    same, _ = planner.after_epoch(dataclasses.replace(opt, epochs=20), one_slow, 1, 0, None, 100)
    assert same.epochs == 20 and one_slow.planned_epochs == 20            # one slow epoch of two: waits
    quick = TrainingState(history=[{"seconds": 1.0}] * 3, planned_epochs=20)
    same, _ = planner.after_epoch(dataclasses.replace(opt, epochs=20), quick, 5, 0, None, 100)
    assert same.epochs == 20 and quick.planned_epochs == 20


def test_stage_clock_deadlines_are_cumulative():
    clock = StageClock(100.0)
    deadlines = [clock.deadline(s) - clock.start for s in STAGES]
    assert deadlines == sorted(deadlines) and deadlines[-1] == pytest.approx(100.0)
    assert StageClock().deadline("ann") is None
    with pytest.raises(ValueError, match="budget-minutes"):
        StageClock(0.0)


def test_a_spent_deadline_keeps_the_best_and_stops(tmp_path):
    bundle = load_dataset("digits", train_subset=300, test_subset=60)
    arch = build_config("vgg_tiny", bundle.input_shape, bundle.num_classes)
    late = Runtime(progress=False, deadline=time.monotonic() - 1.0)
    ann = train_ann(bundle, arch, OptimConfig(epochs=5, lr=0.05), tmp_path / "ann.pt", late)
    assert ann.metrics["epochs"] == 1 and ann.train_state["planned_epochs"] == 1
    from trainer.chain import convert, ConvertConfig
    conv = convert(ann, bundle, ConvertConfig(balance_batches=1), 4, tmp_path / "conv.pt", QUIET)
    base = OptimConfig(epochs=3, lr=1e-3, optimizer="adam", batch_size=32)
    cfg = SNNTrainConfig(fast_snn_optim("digits", base, "cuda"))          # the GPU's recipe: bf16
    snn = train_snn(bundle, conv, "stdb", 4, cfg, tmp_path / "stdb.pt", late)
    rows = pd.read_csv(tmp_path / "metrics_stdb.csv")
    assert len(rows) == 1 and rows["images"].iloc[0] == 32                 # one bf16 step, then stop
    assert snn.train_state["config"]["precision"] == "bf16"


def test_a_silent_ann_is_retried_once_at_half_the_rate(tmp_path, monkeypatch):
    calls = []
    real = train.is_silent

    def silent_first(*args, **kwargs):
        calls.append(1)
        return True if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(train, "is_silent", silent_first)
    bundle = load_dataset("digits", train_subset=300, test_subset=60)
    arch = build_config("vgg_tiny", bundle.input_shape, bundle.num_classes)
    opt = OptimConfig(epochs=2, lr=0.05)
    with pytest.raises(train.DeadNetwork, match="silent"):
        train_ann_in_time(bundle, arch, opt, tmp_path / "a.pt", QUIET)           # no budget: no retry
    calls.clear()
    budget = Runtime(progress=False, deadline=time.monotonic() + 600)
    ann = train_ann_in_time(bundle, arch, opt, tmp_path / "b.pt", budget)
    assert ann.train_state["config"]["lr"] == 0.025


def test_fast_recipe_scales_the_rate_with_the_batch():
    fast = fast_recipe("cifar10", "cuda")
    assert (fast.batch_size, fast.lr, fast.schedule, fast.precision) == (256, 0.04, "onecycle", "bf16")
    assert fast_recipe("cifar10", "cpu").precision == fast_precision("cpu")
    assert fast.channels_last and fast.warmup_epochs == 3.0
    base = OptimConfig(epochs=8, lr=1e-3, optimizer="adam")
    assert fast_snn_optim("cifar10", base, "cpu").lr == 1e-4 and fast_snn_optim("digits", base, "cpu").lr == 1e-3


def test_the_low_latency_recipe_as_the_chains_own(tmp_path):
    """``--recipe low-latency``: the chain's ANN is a QCFS ANN with batch norm and L = T = 4,
    converted with its biases calibrated, fine-tuned on the 8-bit grid, under that recipe's
    stage shares; the stages and the report stay the hybrid's."""
    assert pipeline_main(["--recipe", "low-latency", "--budget-minutes", "0.6", "--runs", str(tmp_path),
                          "--name", "ll", "--quiet"]) == 0
    run = RunLayout(tmp_path / "ll")
    ann = load_checkpoint(run.checkpoint("ann"))
    assert ann.arch.quant_levels == 4 and ann.arch.normed
    assert ann.train_state["config"]["lr"] == low_latency_recipe("digits").lr
    converted = load_checkpoint(run.checkpoint("converted"))
    assert converted.metrics["bias_calibration"]["samples"] == LOW_LATENCY_CALIBRATION
    assert converted.snn.encoding == "integrate"
    stdb = load_checkpoint(run.checkpoint("stdb")).train_state["config"]
    assert stdb["weight_bits"] == 8 and stdb["surrogate"]["kind"] == "linear" and stdb["optimizer"] == "adam"
    summary = load_trainer_summary(run.trainer_summary)
    assert (summary.timesteps.reduced, summary.timesteps.large) == LOW_LATENCY_T[::-1]
    assert summary.accuracy("stdb", 4) > 80
    times = pd.read_csv(run.root / "stage_times.csv")
    assert list(times["share_seconds"]) == [round(v * 36.0, 1) for _, v in LOW_LATENCY_SHARES]
    assert (run.root / "report.md").exists()


def test_a_data_set_of_long_t_takes_the_calibrated_recipe():
    """CIFAR (the paper's T of 75 to 250) takes the calibrated recipe, on any device, with a
    budget or without (the paper's settings collapse there at depth); digits and MNIST, whose
    paper T is a few steps, the paper's."""
    assert default_recipe("cifar10") == default_recipe("cifar100") == "calibrated"
    assert default_recipe("digits") == default_recipe("mnist") == "paper"
    from pipeline.__main__ import recipe_of
    assert recipe_of(build_parser().parse_args(["--dataset", "cifar10", "--budget-minutes", "60"])) == "calibrated"
    assert recipe_of(build_parser().parse_args(["--dataset", "cifar10", "--recipe", "paper"])) == "paper"
    assert recipe_of(build_parser().parse_args(["--dataset", "cifar10", "--arch", "resnet20"])) == "calibrated"


def test_stage_shares_must_cover_every_stage_once():
    with pytest.raises(ValueError, match="stage shares"):
        StageClock(60.0, shares=LOW_LATENCY_SHARES[:-1])
    with pytest.raises(ValueError, match="stage shares"):
        StageClock(60.0, shares=tuple((n, v * 2) for n, v in LOW_LATENCY_SHARES))


def test_images_that_fit_probe_then_pace():
    from trainer.evaluate import PROBE_IMAGES, images_that_fit

    assert images_that_fit(128, 100.0, None, False) == PROBE_IMAGES        # nothing timed yet: a probe
    assert images_that_fit(120, 10.0, 0.5, True) == 20                     # the pace so far
    assert images_that_fit(120, 1000.0, 0.5, True) == 120                  # at most the batch's rest
    assert images_that_fit(120, -1.0, 0.5, True) == 0                      # spent: stop
    assert images_that_fit(128, -1.0, None, False) == 1                    # but an evaluation counts an image


class _SlowSNN(torch.nn.Module):
    """An SNN stand-in whose every image takes ``seconds``: the class is the image's first pixel's sign."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.neurons, self.spike_counts, self.neuron_counts = seconds, [None], [0], [1]

    def forward(self, x, timesteps, window=None, generator=None):
        time.sleep(self.seconds * len(x))
        self.spike_counts = [len(x)]
        return torch.nn.functional.one_hot((x.flatten(1)[:, 0] > 0).long(), 10).float()


def test_an_evaluation_under_a_deadline_stops_inside_a_batch():
    """A batch that would take 2.6 s is cut where a 0.5 s deadline falls (VGG5 at T = 2,500:
    one batch of 128 took 547 s, past its stage's share); without a deadline the whole batch runs."""
    from trainer.evaluate import evaluate_snn

    bundle = load_dataset("digits", test_subset=128)
    t = time.monotonic()
    result = evaluate_snn(_SlowSNN(0.02), bundle, 4, deadline=time.monotonic() + 0.5)
    assert 8 <= result["samples"] < 64 and time.monotonic() - t < 1.5
    assert evaluate_snn(_SlowSNN(0.0), bundle, 4, deadline=None)["samples"] == 128


def test_a_reduced_t_lowered_to_fit_takes_its_sweep_along():
    steps = TimeSteps(reduced=250, large=2500, sweep=(1, 2, 4, 8, 16, 32, 64, 128, 250))
    assert steps.with_reduced(110) == TimeSteps(reduced=110, large=2500, sweep=(1, 2, 4, 8, 16, 32, 64, 110))
    plain = TimeSteps(reduced=100, large=2500)                    # the default sweep runs past T to the large T
    assert plain.with_reduced(50).sweep == (1, 2, 4, 8, 16, 32, 50, 128, 256, 512, 1024, 2048, 2500)
    for bad in (0, 251):
        with pytest.raises(ValueError, match="1..250"):
            steps.with_reduced(bad)


def test_the_fitted_t_is_the_most_that_fits_rounded_down(capsys):
    steps = TimeSteps(reduced=250, large=2500, sweep=(1, 2, 4, 8, 16, 32, 64, 128, 250))
    assert fitted_timesteps(steps, 118, "resnet20", 32).reduced == 110
    assert "reduced T 250 does not fit" in capsys.readouterr().out
    assert fitted_timesteps(steps, 250, "resnet20", 32) is steps
    assert fitted_timesteps(steps, 0, "resnet20", 32) is steps       # not one step: the memory check refuses
    assert fitted_timesteps(TimeSteps(reduced=8, large=200), 7, "vgg_tiny", 32).reduced == 7


def test_the_steps_that_fit_follow_the_available_memory(monkeypatch):
    import trainer.snn as snn
    cfg = build_config("vgg_tiny", (1, 8, 8), 10)
    per_step = snn.training_window_memory(cfg, 1, 32)
    monkeypatch.setattr(snn, "available_memory", lambda device="cpu": int(per_step * 37.5 / USABLE_FRACTION))
    assert snn.timesteps_that_fit(cfg, 32, "cpu") == 37


def test_a_budget_lowers_a_reduced_t_that_does_not_fit(tmp_path, monkeypatch, capsys):
    """Under --budget-minutes without --timesteps, a reduced T whose STDB would not fit in
    memory is lowered (ResNet20's T = 250 on 24 GiB); every stage after runs at the new T."""
    import trainer.chain as chain_mod
    monkeypatch.setattr(chain_mod, "timesteps_that_fit", lambda cfg, batch, device: 3)
    assert pipeline_main(["--budget-minutes", "0.75", "--runs", str(tmp_path), "--name", "b", "--quiet",
                          "--methods", "hybrid"]) == 0
    assert "reduced T 4 does not fit" in capsys.readouterr().out
    run = RunLayout(tmp_path / "b")
    summary = load_trainer_summary(run.trainer_summary)
    assert summary.timesteps.reduced == 3 and summary.timesteps.sweep == (1, 2, 3)
    assert load_checkpoint(run.checkpoint("stdb")).snn.timesteps == 3
    assert json.loads((run.hwsim_dir / "results.json").read_text())["timesteps"] == 3
