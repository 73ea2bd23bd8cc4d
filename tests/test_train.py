"""The one training loop (trainer.fit) and its guards, driven by a scripted step: which
weights are kept, roll-back, silence, ties, the checkpoint per epoch and what it holds."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from records.layout import metrics_path
from trainer.checkpoint import load_checkpoint
from trainer.fit import DeadNetwork, Deadline, FitParts, Rollback, SilenceGuard, StepPlanner, fit
from trainer.recipe import OptimConfig, Runtime, make_optimizer
from trainer.train import train_ann
from trainer.train_state import TrainingState


class ScriptedStep:
    """A real SGD step on a linear model of the flattened image; the validation accuracy of
    each epoch comes from a script, and so does a layer falling silent."""

    def __init__(self, opt: OptimConfig, accuracies: list[float], silent_after: set[int] = frozenset()):
        torch.manual_seed(0)
        self.label, self.trainable = "TEST", torch.nn.Linear(64, 10)
        self.optimizer = make_optimizer(self.trainable.parameters(), opt)
        self.accuracies, self.silent_after, self.epoch = list(accuracies), silent_after, -1

    def begin_epoch(self, epoch):
        self.epoch = epoch

    def step(self, x, y, where):
        logits = self.trainable(x.flatten(1))
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), logits, y, {}

    def epoch_fields(self, trained):
        return {}, {"steps": trained}

    def fell_silent(self):
        return self.epoch in self.silent_after

    def validate(self):
        return self.accuracies[self.epoch]


def _fit(tmp_path, digits, step, opt, **parts):
    rt = Runtime(progress=False)
    saved = []
    parts.setdefault("rollback", Rollback(10.0, opt))
    state = fit(step, TrainingState(config={"test": 1}), FitParts(
        tmp_path / "run.pt", opt, rt, digits, lambda s: saved.append(copy.deepcopy(s)), Deadline(rt, opt), **parts))
    return state, saved


def _weights(module_or_state):
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    return {k: v.clone() for k, v in state.items()}


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_collapse_rolls_back_to_the_best_weights_at_half_the_rate(tmp_path, digits):
    opt = OptimConfig(epochs=3, batch_size=64, lr=0.1)
    step = ScriptedStep(opt, [50.0, 60.0, 40.0])
    first_optimizer = step.optimizer
    state, saved = _fit(tmp_path, digits, step, opt)
    assert [r["event"] for r in state.history] == ["best", "best", "rollback"]
    assert state.best_metric == 60.0 and state.lr_scale == 0.5
    assert _equal(_weights(step.trainable), saved[1].best_state)     # back to epoch 2's weights
    assert step.optimizer is not first_optimizer                    # momentum of the collapse is dropped
    assert [s.epoch for s in saved] == [1, 2, 3]
    csv = pd.read_csv(metrics_path(tmp_path / "run.pt"))
    assert list(csv["event"].fillna("")) == ["best", "best", "rollback"] and list(csv["steps"]) == [5, 5, 5]


def test_a_silent_layer_rolls_back_even_when_accuracy_holds(tmp_path, digits):
    opt = OptimConfig(epochs=2, batch_size=64, lr=0.1)
    state, _ = _fit(tmp_path, digits, ScriptedStep(opt, [50.0, 45.0], silent_after={1}), opt)
    assert [r["event"] for r in state.history] == ["best", "rollback"]


def test_no_rollback_without_its_guard_or_within_the_drop(tmp_path, digits):
    opt = OptimConfig(epochs=3, batch_size=64, lr=0.1)
    state, _ = _fit(tmp_path, digits, ScriptedStep(opt, [50.0, 45.0, 10.0]), opt, rollback=None)
    assert [r["event"] for r in state.history] == ["best", "", ""] and state.lr_scale == 1.0
    state, _ = _fit(tmp_path, digits, ScriptedStep(opt, [50.0, 45.0, 41.0]), opt)
    assert [r["event"] for r in state.history] == ["best", "", ""]


@pytest.mark.parametrize("ties_keep_later", [False, True])
def test_a_tie_keeps_the_earlier_or_the_later_weights(tmp_path, digits, ties_keep_later):
    opt = OptimConfig(epochs=2, batch_size=64, lr=0.1)
    step = ScriptedStep(opt, [50.0, 50.0])
    state, saved = _fit(tmp_path, digits, step, opt, ties_keep_later=ties_keep_later)
    kept_epoch = 2 if ties_keep_later else 1
    assert _equal(state.best_state, saved[kept_epoch - 1].last_state)
    assert not _equal(saved[0].last_state, saved[1].last_state)


def test_silence_stops_before_the_epoch_is_kept_or_saved(tmp_path, digits):
    opt = OptimConfig(epochs=3, batch_size=64, lr=0.1)
    step = ScriptedStep(opt, [50.0, 60.0, 70.0])
    guard = SilenceGuard(lambda: step.epoch == 1, lambda epoch, val: f"silent after epoch {epoch + 1} at {val}")
    saved = []
    with pytest.raises(DeadNetwork, match="silent after epoch 2 at 60.0"):
        rt = Runtime(progress=False)
        fit(step, TrainingState(), FitParts(tmp_path / "run.pt", opt, rt, digits,
                                            lambda s: saved.append(copy.deepcopy(s)), Deadline(rt, opt),
                                            silence=guard))
    assert [s.epoch for s in saved] == [1] and saved[0].best_metric == 50.0


def test_a_plan_that_ends_with_an_epoch_says_so(tmp_path, digits, capsys):
    """A fine-tuning plan of a whole number of epochs (here a resumed one) ends where an
    epoch ends, where no step is left to stop before: the log still says why it ended (a
    CI run planned 10.00 epochs and ended without a word)."""
    opt = OptimConfig(epochs=5, batch_size=64, lr=0.1)
    rt = Runtime(progress=False)
    state = fit(ScriptedStep(opt, [50.0, 60.0, 70.0, 80.0, 90.0]), TrainingState(planned_epochs=2.0),
                FitParts(tmp_path / "run.pt", opt, rt, digits, lambda s: None, StepPlanner(rt, opt, "TEST")))
    assert state.epoch == 2 and len(state.history) == 2
    assert "TEST: the plan of 2.00 epochs ends after" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_the_fused_optimizer_takes_the_reference_steps(kind):
    """make_optimizer's fused form on the CPU against torch's one-parameter-at-a-time loop,
    over steps with momentum and weight decay: the same weights within rounding."""
    torch.manual_seed(0)
    opt = OptimConfig(optimizer=kind, lr=0.05 if kind == "sgd" else 1e-3, weight_decay=5e-4)
    fast = [torch.randn(33, 17, requires_grad=True), torch.randn(5, requires_grad=True)]
    slow = [p.detach().clone().requires_grad_() for p in fast]
    start = [p.detach().clone() for p in fast]
    made = make_optimizer(fast, opt)
    assert made.param_groups[0]["fused"] is True
    cls = torch.optim.SGD if kind == "sgd" else torch.optim.Adam
    extra = {"momentum": opt.momentum} if kind == "sgd" else {}
    reference = cls(slow, lr=opt.lr, weight_decay=opt.weight_decay, foreach=False, **extra)
    for _ in range(5):
        for a, b in zip(fast, slow):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        made.step()
        reference.step()
    for a, b, before in zip(fast, slow, start):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert (a - before).abs().max() > 1e-3                     # the steps moved the weights


def test_the_training_state_reads_back_from_the_checkpoint(tmp_path, digits):
    """train_ann's checkpoint holds the state fit left: what a resumed run starts from."""
    out = tmp_path / "ann.pt"
    opt = OptimConfig(epochs=2, batch_size=64, lr=0.05)
    train_ann(digits, _tiny_arch(digits), opt, out, Runtime(progress=False))
    state = TrainingState.of_checkpoint(load_checkpoint(out))
    assert state.epoch == 2 and len(state.history) == 2 and state.lr_scale == 1.0
    assert state.config["stage"] == "ann" and state.config["epochs"] == 2
    assert state.best_metric == max(r["val_acc"] for r in state.history)
    assert set(state.optimizer) == {"state", "param_groups"}


def _tiny_arch(digits):
    from trainer.models import build_config
    return build_config("vgg_tiny", digits.input_shape, digits.num_classes)
