"""The training stages: the ANN, and the SNN (STDB fine-tuning of a converted net, from
scratch, or a baseline of ``trainer.methods``), each as its step and guards in the one
loop of ``trainer.fit``.

Both checkpoint after every epoch into their output file (atomic write), holding the best
weights so far (by accuracy on a validation split carved from the training set) plus the
``TrainingState`` (``trainer.train_state``), so an interrupted run resumes from its last
finished epoch. Metrics go to a CSV, one row per epoch.

STDB fine-tuning is fragile (docs/method.md: a plain run fell silent and collapsed to
chance in its second epoch). The SNN stage therefore watches per-layer firing rates and
the gradient norm, clips gradients, warms the learning rate up, keeps the best
checkpoint, and rolls back to it with a halved learning rate when the validation
accuracy collapses or a layer falls silent (``fit.Rollback``).
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from records.layout import ANN_STAGES, SNN_STAGES
from trainer.checkpoint import Checkpoint, CheckpointError, SNNParams, load_checkpoint, provenance, save_checkpoint
from trainer.data import DatasetBundle, batches, data_record, validation_split
from trainer.evaluate import evaluate_ann, evaluate_snn, firing_rates, is_silent
from trainer.fit import (DeadNetwork, Deadline, EpochPlanner, FitParts, Rollback, SilenceGuard, StepPlanner,
                         check_loss, fit)
from trainer.lif import Surrogate
from trainer.models import ANN, ArchConfig
from trainer.norms import CurrentNorms, fold_norms
from trainer.qcfs import init_thresholds as qcfs_init
from trainer.recipe import OptimConfig, Runtime, SNNTrainConfig, autocast, make_optimizer, recipe
from trainer.snn import SNN, require_training_memory
from trainer.train_state import TrainingState, resume, run_config, snapshot, weights_digest


def check_learned(ckpt: Checkpoint, opt: OptimConfig, where) -> None:
    """Stop a chain whose ANN is still near chance: conversion would carry chance forward."""
    chance = 100.0 / ckpt.arch.num_classes
    acc = ckpt.metrics["test_acc"]
    if acc <= 1.5 * chance:
        raise DeadNetwork(f"{where}: the ANN reaches {acc:.1f} % on the test set, chance is {chance:.1f} %: the "
                          f"recipe ({recipe(opt)}, --epochs {opt.epochs}) did not train {ckpt.arch.name}; change it "
                          "and pass --restart")


def _save_stage(out, stage, arch, state_dict, bundle, snn_params, metrics, command, train_state, seed):
    ckpt = Checkpoint(stage=stage, arch=arch, state_dict=state_dict, data=data_record(bundle, seed), snn=snn_params,
                      metrics=metrics, provenance=provenance(command), train_state=train_state)
    return save_checkpoint(ckpt, out)


def snn_loss(kind: str, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy, or Lee 2020's squared error against the one-hot label (summed over
    classes, averaged over the batch)."""
    if kind == "mse":
        return (logits - F.one_hot(y, logits.shape[1]).to(logits.dtype)).pow(2).sum(1).mean()
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)


class ANNStep:
    """The ANN's step: cross-entropy on the logits, SGD or Adam; dropout's draws seeded per
    epoch, so a resumed run draws the same."""

    def __init__(self, ann: ANN, opt: OptimConfig, val_part: DatasetBundle, rt: Runtime):
        self.label, self.trainable, self.opt, self.val_part, self.rt = "ANN", ann, opt, val_part, rt
        self.optimizer = make_optimizer(ann.parameters(), opt)

    def begin_epoch(self, epoch: int) -> None:
        self.trainable.train()
        torch.manual_seed(self.rt.seed * 1000 + epoch)

    def step(self, x, y, where):
        ranks, device, opt = self.rt.ranks, self.rt.device, self.opt
        x, y = ranks.shard(x).to(device), ranks.shard(y).to(device)
        if opt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, opt.precision):
            logits = self.trainable(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=opt.label_smoothing)
        check_loss(loss, where)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ranks.average_gradients(self.trainable.parameters())
        if opt.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), opt.grad_clip)
        self.optimizer.step()
        return float(loss.detach()), logits, y, {}

    def epoch_fields(self, trained: int) -> tuple[dict, dict]:
        return {}, {}

    def validate(self) -> float:
        return evaluate_ann(self.trainable, self.val_part, device=self.rt.device)


class BPTTStep:
    """The SNN's step: backpropagation through the T steps (or truncated windows), the
    gradient clipped, a non-finite one skipped; the epoch's firing rates and gradient norms
    (per parameter, before clipping: where a gradient grows) are its metrics. With a
    ``teacher`` ANN the loss is ``cfg.distill``'s against its outputs (``trainer.distill``)."""

    def __init__(self, snn: SNN, trainable: torch.nn.Module, label: str, timesteps: int, cfg: SNNTrainConfig,
                 val_part: DatasetBundle, rt: Runtime, teacher: ANN | None = None):
        self.snn, self.trainable, self.label, self.timesteps, self.cfg = snn, trainable, label, timesteps, cfg
        self.val_part, self.rt, self.teacher = val_part, rt, teacher
        self.optimizer = make_optimizer(trainable.parameters(), cfg.optim)
        self.generator = torch.Generator(device=rt.device)
        self.rates = np.zeros(len(snn.neurons))

    def begin_epoch(self, epoch: int) -> None:
        self.snn.train()
        self.generator.manual_seed(self.rt.seed * 1000 + epoch)
        self.rates, self.layer_grads, self.grad_norms = np.zeros(len(self.snn.neurons)), {}, []

    def step(self, x, y, where):
        ranks, device, opt = self.rt.ranks, self.rt.device, self.cfg.optim
        x, y = x.to(device), ranks.shard(y).to(device)
        self.optimizer.zero_grad(set_to_none=True)
        loss_value = 0.0
        with autocast(device, opt.precision):
            target = self._teacher_logits(ranks.shard(x))
            for _, logits in self.snn.run(x, self.timesteps, window=self.cfg.window, generator=self.generator,
                                          shard=ranks.shard):
                loss = (snn_loss(self.cfg.loss, logits.float(), y, opt.label_smoothing) if target is None
                        else self.cfg.distill.loss(logits.float(), target, y, opt.label_smoothing))
                check_loss(loss, where)
                loss.backward()
                loss_value = float(loss.detach())
        ranks.average_gradients(self.trainable.parameters())
        for name, param in self.trainable.named_parameters():
            if param.grad is not None:
                self.layer_grads[name] = max(self.layer_grads.get(name, 0.0), float(param.grad.norm()))
        norm = torch.nn.utils.clip_grad_norm_(self.trainable.parameters(),
                                              opt.grad_clip if opt.grad_clip > 0 else math.inf)
        self.grad_norms.append(float(norm))
        if math.isfinite(float(norm)):
            self.optimizer.step()
        self.rates += np.asarray(firing_rates(self.snn, len(y), self.timesteps))
        return loss_value, logits, y, {"gnorm": f"{norm:.2g}"}

    @torch.no_grad()
    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        if self.cfg.optim.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.teacher(x).float()

    def epoch_fields(self, trained: int) -> tuple[dict, dict]:
        ranks = self.rt.ranks
        self.rates = np.asarray(ranks.sum(list(self.rates / max(trained, 1)))) / ranks.world
        head = {"grad_norm_mean": float(np.mean(self.grad_norms)), "grad_norm_max": float(np.max(self.grad_norms))}
        tail = {f"rate_l{k}": float(r) for k, r in enumerate(self.rates)}
        tail.update({f"grad_max_{name}": v for name, v in self.layer_grads.items()})
        return head, tail

    def fell_silent(self) -> bool:
        return min(self.rates) < 1e-5

    def validate(self) -> float:
        return evaluate_snn(self.snn, self.val_part, self.timesteps, window=self.cfg.eval_window, seed=self.rt.seed,
                            device=self.rt.device, samples=self.cfg.val_samples)["accuracy"]


def init_weights(ann: ANN, init: Checkpoint) -> set[str]:
    """Load ``init``'s weights into ``ann``, whose architecture must be init's but for QCFS's
    levels and input levels (an ANN fine-tuned to another L or input, or a ReLU ANN turned into a
    QCFS one); returns the
    parameters init lacks (QCFS's thresholds, for a ReLU init). Raises CheckpointError."""
    if init.stage not in ANN_STAGES:
        raise CheckpointError(f"stage {init.stage!r}; an ANN starts from an ANN checkpoint ({', '.join(ANN_STAGES)})")
    levels_aside = dict(quant_levels=None, input_levels=None)
    if dataclasses.replace(init.arch, **levels_aside) != dataclasses.replace(ann.cfg, **levels_aside):
        mine, its = ann.cfg.to_dict(), init.arch.to_dict()
        differ = [k for k in mine if k not in ("layers", *levels_aside) and mine[k] != its.get(k)]
        differ += [f"layer {i} ({a.kind}: {a.to_dict()} here, {b.to_dict()} there)"
                   for i, (a, b) in enumerate(zip(ann.cfg.layers, init.arch.layers)) if a != b][:1]
        if len(ann.cfg.layers) != len(init.arch.layers):
            differ.append(f"{len(init.arch.layers)} layers, not {len(ann.cfg.layers)}")
        raise CheckpointError(f"its architecture is not this run's but for --quant-levels and --input-levels: "
                              f"{'; '.join(differ)}")
    keys = ann.load_state_dict(init.state_dict, strict=False)
    if set(keys.missing_keys) - {"act_thresholds"} or set(keys.unexpected_keys) - {"act_thresholds"}:
        raise CheckpointError(f"its weights do not fit: missing {keys.missing_keys}, unexpected {keys.unexpected_keys}")
    return set(keys.missing_keys)


def train_ann(bundle: DatasetBundle, arch: ArchConfig, opt: OptimConfig, out: Path, rt: Runtime = Runtime(), *,
              val_fraction: float = 0.1, stage: str = "ann", init: Checkpoint | None = None) -> Checkpoint:
    """Train the constrained ANN; resumes from ``out`` if a previous run was interrupted.
    ``init``: start from this ANN checkpoint's weights (``init_weights``) instead of random ones.

    ``opt.batch_size`` is the global batch; under torchrun each rank trains on its slice.
    Under a deadline (``rt.deadline``) the first epochs are timed and the schedule is laid
    over the epochs that fit (``fit.EpochPlanner``); a run that still overruns stops after
    the epoch in hand, keeping its best weights.
    """
    out = Path(out)
    seed, device, ranks = rt.seed, rt.device, rt.ranks
    torch.manual_seed(seed)
    train_part, val_part = validation_split(bundle, val_fraction)
    ann = ANN(arch).to(device)
    if opt.channels_last:
        ann = ann.to(memory_format=torch.channels_last)
    step = ANNStep(ann, opt, val_part, rt)
    more = {} if init is None else {"init": weights_digest(init)}
    config = run_config(stage, arch, {**opt.to_dict(), "val_fraction": val_fraction}, bundle, seed, **more)
    state = resume(out, config, ann, step.optimizer, rt.restart)
    if state is None:
        state = TrainingState(config=config)
        missing = set() if init is None else init_weights(ann, init)
        if "act_thresholds" in missing or (init is None and arch.quant_levels is not None):
            # a QCFS ANN: its thresholds from the first batch (trainer.qcfs)
            x, _ = next(batches(train_part, "train", opt.batch_size, shuffle=True, seed=seed, epoch=0))
            qcfs_init(ann, ranks.shard(x).to(device))

    def save(s: TrainingState) -> None:
        _save_stage(out, stage, arch, s.best_state, bundle, None, {"best_val_acc": s.best_metric}, rt.command,
                    s.to_dict(keep_best_state=False), seed)

    def silent_message(epoch: int, val_acc: float) -> str:
        return (f"{out}: after epoch {epoch + 1} the ANN's outputs are silent (every class scored alike for every "
                f"input; validation accuracy {val_acc:.1f} %, chance {100 / arch.num_classes:.1f} %): the recipe "
                f"({recipe(opt)}) does not train {arch.name} on {bundle.name}; try a smaller --lr or "
                "--warmup-epochs (nothing of this epoch was saved)")

    state = fit(step, state, FitParts(
        out, opt, rt, train_part, save, (EpochPlanner if rt.deadline is not None else Deadline)(rt, opt),
        silence=SilenceGuard(lambda: is_silent(ann, val_part, device), silent_message)))
    final = load_checkpoint(out)
    best_ann = final.model().to(device)
    final.metrics = {"best_val_acc": state.best_metric, "test_acc": evaluate_ann(best_ann, bundle, device=device),
                     "epochs": state.epoch}
    if ranks.is_main:
        save_checkpoint(final, out)
    ranks.barrier()
    return final


def train_snn(bundle: DatasetBundle, init: Checkpoint, stage: str, timesteps: int, cfg: SNNTrainConfig, out: Path,
              rt: Runtime = Runtime(), teacher: Checkpoint | None = None) -> Checkpoint:
    """STDB (``stage='stdb'``, from a converted checkpoint) or from scratch (``'scratch'``, and
    the baselines' ``'spikebp'`` and ``'bncurrent'``, ``trainer.methods``) at T steps.
    ``teacher``: the ANN whose outputs ``cfg.distill`` fine-tunes against (both or neither).
    Under ``rt.deadline`` the schedule is laid over the training that fits (``fit.StepPlanner``)
    and the epoch in hand ends where the plan or the deadline does: validated, saved, and the
    stage stops."""
    if stage == "converted" or stage not in SNN_STAGES:
        raise ValueError(f"stage must be a trained one of {', '.join(SNN_STAGES)}, got {stage!r}")
    if init.snn is None:
        raise ValueError("initial checkpoint has no SNN parameters (convert it first)")
    if (teacher is None) != (cfg.distill is None):
        raise ValueError("distillation needs both a teacher checkpoint and its settings (cfg.distill)")
    out = Path(out)
    opt, seed, device = cfg.optim, rt.seed, rt.device
    surrogate = cfg.surrogate or Surrogate(**init.snn.surrogate)
    leak = init.snn.leak if cfg.leak is None else float(cfg.leak)
    if cfg.weight_bits is None and init.snn.weight_bits is not None:     # the initial checkpoint's grid
        cfg = dataclasses.replace(cfg, weight_bits=init.snn.weight_bits)
    bits = cfg.weight_bits
    params = SNNParams(thresholds=list(init.snn.thresholds), leak=leak, timesteps=timesteps,
                       surrogate=surrogate.to_dict(), v_init=init.snn.v_init, encoding=init.snn.encoding,
                       weight_bits=bits)
    require_training_memory(init.arch, timesteps, opt.batch_size, cfg.window, device,
                            f"--timesteps {timesteps}, --batch-size {opt.batch_size}",
                            "fewer time steps, a smaller --batch-size or truncated BPTT (--bptt-window N) need less")
    torch.manual_seed(seed)
    train_part, val_part = validation_split(bundle, cfg.val_fraction)
    ann = init.model().to(device)
    norms = CurrentNorms(init.arch).to(device) if cfg.current_norm else None
    snn = SNN(ann, params.thresholds, leak=leak, surrogate=surrogate, backend=cfg.backend, norms=norms,
              v_init=params.v_init, encoding=params.encoding, weight_bits=bits, channels_last=opt.channels_last)
    trainable = ann if norms is None else torch.nn.ModuleDict({"ann": ann, "norms": norms})
    teacher_ann = None
    if teacher is not None:
        teacher_ann = teacher.model().to(device).eval().requires_grad_(False)
        if opt.channels_last:
            teacher_ann = teacher_ann.to(memory_format=torch.channels_last)
    step = BPTTStep(snn, trainable, stage.upper(), timesteps, cfg, val_part, rt, teacher_ann)
    more = {} if teacher is None else {"teacher": weights_digest(teacher)}
    config = run_config(stage, init.arch, {**cfg.to_dict(), "surrogate": surrogate.to_dict(), "leak": leak},
                        bundle, seed, timesteps=int(timesteps), init=weights_digest(init), **more)
    state = resume(out, config, trainable, step.optimizer, rt.restart)
    check_seconds = 0.0                 # the initial validation's time: what the plan's last check will take
    if state is None:
        t = time.monotonic()
        state = TrainingState(best_metric=step.validate(), best_state=snapshot(trainable), config=config)
        check_seconds = time.monotonic() - t

    def save(s: TrainingState) -> None:
        kept = s.best_state if cfg.keep_best else snapshot(trainable)
        arch, kept = (init.arch, kept) if norms is None else fold_norms(init.arch, kept)   # what deploys
        _save_stage(out, stage, arch, kept, bundle, params, {"best_val_acc": s.best_metric}, rt.command,
                    s.to_dict(keep_best_state=norms is not None), seed)

    fit(step, state, FitParts(out, opt, rt, train_part, save,
                              StepPlanner(rt, opt, stage.upper(), check_seconds) if rt.deadline is not None
                              else Deadline(rt, opt),
                              rollback=Rollback(cfg.rollback_drop, opt), ties_keep_later=True,
                              progress_label=f" T={timesteps}"))
    return load_checkpoint(out)
