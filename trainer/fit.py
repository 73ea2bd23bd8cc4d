"""One training loop for every method (``fit``): epochs of mini-batch steps, a validation
after each, the best weights kept, a checkpoint per epoch, resume from the last one.

What differs between methods comes in as parts:

- the **step** (``trainer.train``'s ``ANNStep`` and ``BPTTStep``): one mini-batch's
  forward, backward and update, the epoch's own metrics, the validation;
- a **deadline**: ``EpochPlanner`` lays the ANN's schedule over the epochs a budget fits
  (shrinking it where the machine slows) and saves at most once a minute;
  ``StepPlanner`` lays fine-tuning's schedule over the training a budget fits, a fraction
  of an epoch allowed, and stops mid-epoch where it ends; ``Deadline`` itself is no deadline;
- **guards** after each validation: ``SilenceGuard`` (an ANN whose outputs fell silent
  stops), ``Rollback`` (a collapsed SNN goes back to its best weights at half the rate);
  a non-finite loss or weight stops every method (``check_loss``, ``check_weights``);
- **save**, which writes the checkpoint from the ``TrainingState`` (the deployed weights:
  the best or the last, batch norms folded).
"""
from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch

from records.layout import metrics_path
from records.progress import progress as progress_bar
from trainer.data import DatasetBundle, batches, check_cutout, num_batches
from trainer.recipe import OptimConfig, Runtime, lr_factor, make_optimizer
from trainer.train_state import MetricsCSV, TrainingState, snapshot

WARM_STEPS = 10      # steps of an epoch not timed for the plan (cuDNN's search, allocator warm-up)
PLAN_STEPS = 10      # fine-tuning steps timed, after the first, to lay its schedule over a deadline
CHECKPOINT_SECONDS = 60.0   # under a deadline, the ANN is saved at most this often (and at the end)


class TrainingDiverged(ValueError):
    """A non-finite loss or weight: the run stops, and the last good epoch stays on disk."""


class DeadNetwork(ValueError):
    """An ANN that says nothing about its input: silent outputs (``SilenceGuard``; no further
    epoch revives it) or, at the end, accuracy near chance (``trainer.train.check_learned``).
    Conversion would only carry it forward, or fail much later."""


def check_loss(loss: torch.Tensor, where: str) -> None:
    """Every step: non-finite weights show here at the next step's forward pass."""
    if not bool(torch.isfinite(loss.detach())):
        raise TrainingDiverged(f"{where}: the loss is {float(loss.detach()):g} (diverged; lower --lr); "
                               "the last finished epoch stays on disk")


def check_weights(model: torch.nn.Module, where: str) -> None:
    """Once per epoch, before it is saved: the last step's update has no next forward pass."""
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())]
    if bad:
        raise TrainingDiverged(f"{where}: {bad[0]} holds non-finite values (diverged; lower --lr); "
                               "the last finished epoch stays on disk")


class Step(Protocol):
    """A method's part of the loop."""
    label: str                              # "ANN", "STDB", ... in progress lines
    trainable: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def begin_epoch(self, epoch: int) -> None: ...
    def step(self, x: torch.Tensor, y: torch.Tensor, where: str) -> tuple[float, torch.Tensor, torch.Tensor, dict]:
        """(loss, logits, the labels on this rank, extra progress fields)."""
    def epoch_fields(self, trained: int) -> tuple[dict, dict]:
        """The epoch's own metrics: columns after ``lr`` and after ``images``."""
    def validate(self) -> float: ...


def fit_warmup(opt: OptimConfig, span: float) -> OptimConfig:
    """The recipe with its warm-up cut to a tenth of a plan of ``span`` epochs: a CPU that
    fits a few dozen fine-tuning steps would otherwise spend them all at a tenth of the rate."""
    return dataclasses.replace(opt, warmup_epochs=min(opt.warmup_epochs, 0.1 * span))


def plan_epochs(most: int, done: int, epoch_seconds: float, seconds_left: float) -> int:
    """How many epochs in all fit a budget with ``seconds_left`` after ``done`` epochs of
    ``epoch_seconds`` each (at least ``done``, at most ``most``)."""
    fit = int(seconds_left // epoch_seconds) if epoch_seconds > 0 else most
    return max(done, min(most, done + fit))


class Deadline:
    """No deadline: every epoch runs to its end and is saved."""

    def __init__(self, rt: Runtime, opt: OptimConfig):
        self.rt, self.opt = rt, opt

    def schedule(self, state: TrainingState) -> OptimConfig:
        return self.opt

    def span(self, sched: OptimConfig) -> float:
        """The epochs the schedule spans (its learning rate reaches its end there)."""
        return sched.epochs

    def another_epoch(self, epoch: int, start: int) -> bool:
        return True

    def stop_before(self, epoch: int, step: int, steps_per_epoch: int) -> str | None:
        """Why the epoch in hand ends before this step (None: it goes on)."""
        return None

    def at_step(self, sched: OptimConfig, state: TrainingState, epoch: int, start: int, step: int,
                steps_per_epoch: int) -> OptimConfig:
        return sched

    def save_due(self, epoch: int, sched: OptimConfig, since_save: float) -> bool:
        """Whether the epoch just validated is saved, ``since_save`` seconds after the last save."""
        return True

    def after_epoch(self, sched, state, epoch, start, times, steps_per_epoch) -> tuple[OptimConfig, str | None]:
        """(the schedule from here, why the plan ends here and must be saved now; None: it goes on)."""
        return sched, None


def plan_ends(epochs: int | float) -> str:
    """Why a deadline's plan stops the training: its epochs are done (a whole number for the
    ANN's plan, a fraction to two places for fine-tuning's)."""
    return f"the plan of {epochs if isinstance(epochs, int) else format(epochs, '.2f')} epochs ends"


class StepPlanner(Deadline):
    """Fine-tuning under a deadline, where a CPU fits an epoch or two: steps 2 to
    1 + PLAN_STEPS of the first epoch are timed and the recipe is laid over the training
    that fits, in epochs, a fraction allowed: its schedule ends at the plan's end, where
    the stage stops and keeps its best, and its warm-up is cut to a tenth of the plan
    (``fit_warmup``). A constant rate up to the deadline leaves the weights in the noise of
    the peak rate (RESULTS.md: VGG9's STDB at T = 4 gained 1.0 point in 1.7 epochs at a
    constant rate, 6.8 in 2.1 epochs annealed to zero). After each epoch the plan shrinks where the
    epoch's measured time (steps, validation, saving) says it no longer fits; it never
    grows. The plan is recorded in the state: a resumed run goes on with it. The plan made
    inside the first epoch keeps ``check_seconds`` for the validation and save at its end
    (the initial validation's time: at T = 75 VGG5's took 5 minutes, and a plan without it
    overran its stage by as much)."""

    def __init__(self, rt: Runtime, opt: OptimConfig, label: str = "fine-tuning", check_seconds: float = 0.0):
        super().__init__(rt, opt)
        self.label, self.planned, self.t_plan, self.check_seconds = label, None, None, check_seconds

    def schedule(self, state):
        self.planned = state.planned_epochs
        return self.opt if self.planned is None else fit_warmup(self.opt, self.planned)

    def span(self, sched):
        return sched.epochs if self.planned is None else self.planned

    def another_epoch(self, epoch, start):
        return self.planned is None or epoch < self.planned

    def stop_before(self, epoch, step, steps_per_epoch):
        if step > 0 and self.rt.out_of_time():
            return "the stage's time is spent"
        if self.planned is not None and epoch + step / steps_per_epoch >= self.planned:
            return plan_ends(float(self.planned))
        return None

    def at_step(self, sched, state, epoch, start, step, steps_per_epoch):
        if self.planned is not None or epoch != start:
            return sched
        if step == 1:
            self.t_plan = time.time()
        elif step == 1 + PLAN_STEPS:
            step_seconds = (time.time() - self.t_plan) / PLAN_STEPS
            sched = self._plan(state, epoch + step / steps_per_epoch, step_seconds * steps_per_epoch,
                               self.rt.seconds_left() - self.check_seconds, f"{step_seconds:.2f} s per step")
        return sched

    def after_epoch(self, sched, state, epoch, start, times, steps_per_epoch):
        t0, t_train, t_val, save_seconds = times
        done, train_seconds, check_seconds = epoch + 1, t_train - t0, t_val - t_train + save_seconds
        if self.planned is None:               # an epoch shorter than the timed steps: planned from it
            sched = self._plan(state, done, train_seconds, self.rt.seconds_left() - check_seconds,
                               f"{train_seconds:.1f} s per epoch")
        else:                                  # one validation (and save) at each epoch's end and the plan's
            left = self.rt.seconds_left() - math.ceil(self.planned - done) * check_seconds
            fits = done + max(left, 0.0) / max(train_seconds, 1e-9)
            if fits < self.planned:
                sched = self._plan(state, done, train_seconds, left, f"{train_seconds:.1f} s per epoch now")
        return sched, plan_ends(float(self.planned)) if done >= self.planned else None

    def _plan(self, state, progress, epoch_seconds, seconds_left, pace):
        """The recipe laid over the epochs that fit from ``progress`` (at most the recipe's,
        never more than a plan already made), recorded in ``state`` and said."""
        fits = progress + max(seconds_left, 0.0) / max(epoch_seconds, 1e-9)
        self.planned = state.planned_epochs = min(fits, self.opt.epochs, self.planned or math.inf)
        if self.rt.ranks.is_main:
            print(f"{self.label}: {pace}; the budget fits {self.planned:.2f} epochs (at most {self.opt.epochs})",
                  flush=True)
        return fit_warmup(self.opt, self.planned)


class EpochPlanner(Deadline):
    """The ANN under a deadline: the first epoch (and each warm-up epoch) is timed and the
    schedule laid over the epochs that fit (``plan_epochs``); it stops between epochs, and
    saves at most once per CHECKPOINT_SECONDS (VGG16's 0.5 GB took longer than its 1.5 s
    epoch on an H100) and at the end."""

    def __init__(self, rt: Runtime, opt: OptimConfig):
        super().__init__(rt, opt)
        self.t_warm = None

    def schedule(self, state):
        return dataclasses.replace(self.opt, epochs=state.planned_epochs or self.opt.epochs)

    def another_epoch(self, epoch, start):
        return not (epoch > start and self.rt.out_of_time())

    def at_step(self, sched, state, epoch, start, step, steps_per_epoch):
        if step == 0:
            self.t_warm = None
        elif step == WARM_STEPS:
            self.t_warm = time.time()
        return sched

    def save_due(self, epoch, sched, since_save):
        return epoch + 1 >= sched.epochs or self.rt.out_of_time() or since_save >= CHECKPOINT_SECONDS

    def after_epoch(self, sched, state, epoch, start, times, steps_per_epoch):
        # Planned after the first epoch and again after each warm-up epoch (their learning
        # rate does not depend on the total, and the first carries one-off costs).
        if not (epoch == start or epoch + 1 <= self.opt.warmup_epochs):
            return self._keep_up(sched, state, epoch)
        t0, t_train, t_val, save_seconds = times
        steady = ((t_train - self.t_warm) * steps_per_epoch / (steps_per_epoch - WARM_STEPS) if self.t_warm
                  else t_train - t0) + (t_val - t_train)
        per_epoch = steady + save_seconds * min(1.0, steady / CHECKPOINT_SECONDS)
        return self._planned(state, epoch, plan_epochs(self.opt.epochs, epoch + 1, per_epoch, self.rt.seconds_left()),
                             f"{per_epoch:.1f} s per epoch", f" (at most {self.opt.epochs})")

    def _planned(self, state, epoch, epochs, pace, note=""):
        """(the recipe laid over ``epochs``, recorded in ``state`` and said, why the plan
        ends after ``epoch`` or None)."""
        state.planned_epochs = epochs
        if self.rt.ranks.is_main:
            print(f"ANN: {pace}; the budget fits {epochs} epochs{note}", flush=True)
        ends = plan_ends(epochs) if epoch + 1 >= epochs else None
        return dataclasses.replace(self.opt, epochs=epochs), ends

    def _keep_up(self, sched, state, epoch):
        """After the plan: on a machine that slowed (another job on its cores) the deadline
        would stop the schedule before its rate anneals, so the plan shrinks to the epochs
        that still fit at the median of the last three epochs' times, allowing half an epoch
        over (an epoch begun before the deadline runs to its end); before three epochs have run
        it waits (the median of two is their mean, and one slow epoch is not a slowed machine:
        a test run beside VGG9's second epoch cut its plan from 27 epochs to 24). It never
        grows: the rate would rise again."""
        if len(state.history) < 3:
            return sched, None
        per_epoch = statistics.median(row["seconds"] for row in state.history[-3:])
        fits = plan_epochs(sched.epochs, epoch + 1, per_epoch, self.rt.seconds_left() + per_epoch / 2)
        if fits >= sched.epochs:
            return sched, None
        return self._planned(state, epoch, fits, f"{per_epoch:.1f} s per epoch now")


class SilenceGuard:
    """An ANN whose outputs fell silent stops: no further epoch revives it."""

    def __init__(self, is_silent: Callable[[], bool], message: Callable[[int, float], str]):
        self.is_silent, self.message = is_silent, message

    def check(self, epoch: int, val: float) -> None:
        if self.is_silent():
            raise DeadNetwork(self.message(epoch, val))


class Rollback:
    """Collapse guard: validation more than ``drop`` points below the best, or a layer
    fallen silent (``step.fell_silent()``), sends the weights back to the best at half the
    learning rate, with a fresh optimizer."""

    def __init__(self, drop: float, opt: OptimConfig):
        self.drop, self.opt = drop, opt

    def due(self, step, state: TrainingState, val: float) -> bool:
        return math.isfinite(self.drop) and (val < state.best_metric - self.drop or step.fell_silent())

    def apply(self, step, state: TrainingState) -> None:
        step.trainable.load_state_dict(state.best_state)
        step.optimizer = make_optimizer(step.trainable.parameters(), self.opt)
        state.lr_scale *= 0.5


@dataclass
class FitParts:
    out: Path
    opt: OptimConfig
    rt: Runtime
    train: DatasetBundle                        # the training part (its validation part is the step's)
    save: Callable[[TrainingState], None]       # write the checkpoint of this state (main rank only)
    deadline: Deadline
    silence: SilenceGuard | None = None
    rollback: Rollback | None = None
    ties_keep_later: bool = False               # a tie with the best keeps the later weights
    progress_label: str = ""                    # appended to the progress bar's description


def epoch_line(stage: str, row: dict, epochs: float, images: int) -> None:
    """One line per finished epoch (a terminal's bar or a log file alike): accuracy, rate, ETA."""
    seconds, done = row["seconds"], row["epoch"]
    print(f"{stage} epoch {done}/{epochs:.3g}: train {row['train_acc']:.2f} %, val {row['val_acc']:.2f} %, "
          f"{seconds:.0f} s ({images / max(seconds, 1e-9):.1f} images/s), ETA {max(epochs - done, 0) * seconds:.0f} s",
          flush=True)


def fit(step: Step, state: TrainingState, parts: FitParts) -> TrainingState:
    """Train from ``state.epoch`` to the schedule's end (or the deadline); the state after
    every saved epoch is on disk. Returns the last state."""
    opt, rt, out, ranks = parts.opt, parts.rt, parts.out, parts.rt.ranks
    check_cutout(parts.train, opt.cutout)
    metrics = MetricsCSV(metrics_path(out), state.history, write=ranks.is_main)
    state.history = metrics.rows
    steps_per_epoch = num_batches(parts.train, "train", opt.batch_size)
    deadline = parts.deadline
    sched = deadline.schedule(state)

    def save(done: int) -> float:
        """The checkpoint after ``done`` epochs; returns the seconds it took."""
        t = time.time()
        state.epoch = done
        state.last_state, state.optimizer = step.trainable.state_dict(), step.optimizer.state_dict()
        if ranks.is_main:
            parts.save(state)
            metrics.flush()
        return time.time() - t

    start = epoch = state.epoch
    saved, saved_at, save_seconds = True, -math.inf, 0.0
    while epoch < sched.epochs and deadline.another_epoch(epoch, start):
        step.begin_epoch(epoch)
        t0, loss_sum, correct, seen, trained, stopped = time.time(), 0.0, 0, 0, 0, None
        def desc() -> str:
            return f"{step.label} epoch {epoch + 1}/{deadline.span(sched):.3g}" + parts.progress_label

        bar = progress_bar(batches(parts.train, "train", opt.batch_size, shuffle=True, seed=rt.seed, epoch=epoch,
                                   cutout=opt.cutout),
                           total=steps_per_epoch, desc=desc(), unit="step", enabled=rt.shows_progress,
                           end_line=False)
        for i, (x, y) in enumerate(bar):
            stopped = deadline.stop_before(epoch, i, steps_per_epoch)
            if stopped:
                break
            span = deadline.span(sched)
            sched = deadline.at_step(sched, state, epoch, start, i, steps_per_epoch)
            if deadline.span(sched) != span:        # a plan made in this epoch: the bar shows it
                bar.set_description(desc())
            for group in step.optimizer.param_groups:
                group["lr"] = (opt.lr * state.lr_scale
                               * lr_factor(sched, epoch + i / steps_per_epoch, deadline.span(sched)))
            loss, logits, y, extra = step.step(x, y, f"{out}: epoch {epoch + 1}, step {i + 1}")
            trained += 1
            loss_sum += loss * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}", **extra)
        t_train = time.time()
        head, tail = step.epoch_fields(trained)
        loss_sum, correct, seen = ranks.sum([loss_sum, correct, seen])
        check_weights(step.trainable, f"{out}: end of epoch {epoch + 1}")
        lr_used = step.optimizer.param_groups[0]["lr"]
        val, event = step.validate(), ""
        if parts.silence is not None:              # a silent ANN stops here, before anything is kept
            parts.silence.check(epoch, val)
        if val > state.best_metric or (parts.ties_keep_later and val >= state.best_metric):
            state.best_metric, state.best_state, event = val, snapshot(step.trainable), "best"
        elif parts.rollback is not None and parts.rollback.due(step, state, val):
            parts.rollback.apply(step, state)
            event = "rollback"
        t_val = time.time()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": 100 * correct / max(seen, 1),
               "val_acc": val, "lr": lr_used, **head, "event": event, "seconds": t_val - t0, "images": seen, **tail}
        metrics.add(row)
        if rt.shows_progress:
            epoch_line(step.label, row, deadline.span(sched), seen)
        saved = deadline.save_due(epoch, sched, t_val - saved_at)     # saved_at starts at -inf: the first is saved
        if saved:
            save_seconds, saved_at = save(epoch + 1), time.time()
        sched, plan_over = deadline.after_epoch(sched, state, epoch, start, (t0, t_train, t_val, save_seconds),
                                                steps_per_epoch)
        if plan_over:                              # the plan ends here: saved with the plan recorded
            save(epoch + 1)
            saved, stopped = True, stopped or plan_over
        ranks.barrier()
        epoch += 1
        if stopped:
            if ranks.is_main:
                print(f"{step.label}: {stopped} after {seen} images of epoch {epoch}; "
                      f"keeping the best (validation {state.best_metric:.2f} %)", flush=True)
            break
    if not saved:                # stopped by the deadline after epochs not yet saved
        save(epoch)
        ranks.barrier()
    return state
