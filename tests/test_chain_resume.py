"""A chain run again after a kill (or to completion) keeps what it finished: the ANN and the
fine-tuning resume from their checkpoints, the conversion of the same ANN with the same
settings is kept with the evaluations recorded in it."""
import dataclasses
import time

import pytest

import trainer.chain as chain_steps
from records.timesteps import TimeSteps
from trainer.chain import ChainConfig, ConvertConfig, DataConfig, chain, record_eval
from trainer.checkpoint import load_checkpoint
from trainer.recipe import OptimConfig, Runtime, SNNTrainConfig


def small_chain(tmp_path) -> ChainConfig:
    return ChainConfig(data=DataConfig("digits", train_subset=300, test_subset=60),
                       ann_optim=OptimConfig(epochs=6, lr=0.05),
                       snn=SNNTrainConfig(OptimConfig(epochs=1, lr=1e-3, optimizer="adam")),
                       timesteps=TimeSteps(reduced=4, large=16), scratch=False, runs=str(tmp_path), name="r",
                       eval_samples=30, large_eval_samples=20)


def test_a_rerun_chain_keeps_the_conversion_and_its_evaluations(tmp_path, monkeypatch):
    cfg, quiet = small_chain(tmp_path), Runtime(progress=False)
    _, first = chain(cfg, quiet)
    assert [(a.stage, a.timesteps, a.samples) for a in first.accuracies] == [
        ("ann", None, 60), ("converted", 16, 20), ("converted", 4, 30), ("stdb", 4, 30)]

    def redone(*_args, **_kw):
        raise AssertionError("redone")
    monkeypatch.setattr(chain_steps, "convert", redone)
    monkeypatch.setattr(chain_steps, "evaluate", redone)
    _, again = chain(cfg, quiet)
    assert again.accuracies == first.accuracies

    # other conversion settings: converted again (and the evaluations with it)
    other = dataclasses.replace(cfg, convert=ConvertConfig(scaling_factor=0.8))
    with pytest.raises(AssertionError, match="redone"):
        chain(other, quiet)


def test_the_large_t_is_evaluated_with_the_thresholds_before_the_scaling_factor(tmp_path, monkeypatch):
    """The paper's conversion column is the balanced network; 0.7 adjusts it for the reduced T only."""
    seen, evaluate = {}, chain_steps.evaluate

    def spy(ckpt, bundle, timesteps, rt, samples=None, thresholds=None):
        seen[timesteps] = thresholds or ckpt.snn.thresholds
        return evaluate(ckpt, bundle, timesteps, rt, samples, thresholds)
    monkeypatch.setattr(chain_steps, "evaluate", spy)
    cfg = dataclasses.replace(small_chain(tmp_path), snn=SNNTrainConfig(OptimConfig(epochs=1, lr=1e-3,
                                                                                    optimizer="adam")))
    run, _ = chain(cfg, Runtime(progress=False))
    converted = chain_steps.load_checkpoint(run.checkpoint("converted"))
    assert seen[16] == converted.metrics["balance"]["unscaled"]
    assert seen[4] == converted.snn.thresholds == pytest.approx([0.7 * v for v in seen[16]])


def test_a_resumed_budget_keeps_the_recorded_tests_time_out_of_the_fine_tuning(tmp_path, monkeypatch):
    """Under a budget the fine-tuning stops early enough for its net's test on the images the
    converted net was tested on; a resumed chain kept that evaluation, so its recorded time
    stands in for the one measured."""
    class Clock:
        end = time.monotonic() + 1e4

        def deadline(self, stage):
            return self.end

        def done(self, stage):
            pass

    cfg, quiet = small_chain(tmp_path), Runtime(progress=False)
    run, _ = chain(cfg, quiet, Clock())            # budgeted both times: the same fine-tuning's checks
    converted = run.checkpoint("converted")
    record_eval(converted, 4, {**load_checkpoint(converted).metrics["test_T4"], "seconds": 500.0})

    deadlines, real = {}, chain_steps.fine_tune

    def spy(init, bundle, stage, timesteps, snn_cfg, surrogate, out, rt, eval_samples=None, teacher=None):
        deadlines[stage] = rt.deadline
        return real(init, bundle, stage, timesteps, snn_cfg, surrogate, out, rt, eval_samples, teacher)
    monkeypatch.setattr(chain_steps, "fine_tune", spy)
    chain(cfg, quiet, Clock())
    assert deadlines["stdb"] == Clock.end - 500.0
