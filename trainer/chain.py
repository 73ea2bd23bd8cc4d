"""The trainer's steps as functions of typed configurations (the CLI and the pipeline
both call these): train the ANN, convert it, fine-tune (STDB) or train from scratch,
evaluate, and ``chain`` = all of them into one run folder (``records.layout``), each
writing the checkpoint of its stage (a stage is always a checkpoint's kind,
``records.layout.STAGES``). The per-data-set defaults they fall back on are
``trainer.defaults``'.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import operator
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch

from records.cli import require
from records.layout import CONVERTED_STAGES, RunLayout
from records.timesteps import TimeSteps
from records.trainer_summary import StageAccuracy, TrainerSummary, save_trainer_summary
from trainer.checkpoint import Checkpoint, CheckpointError, SNNParams, load_checkpoint, save_checkpoint
from trainer.calibrate import calibrate_biases
from trainer.convert import SCALINGS, STATISTICS, balance_thresholds, qcfs_snn, rescale_biases, scale_thresholds
from trainer.defaults import ANN_RECIPES, DEFAULT_ARCH, DEFAULT_SURROGATE, default_timesteps
from trainer.data import DatasetBundle, batches, data_record, load_dataset
from trainer.distributed import setup as setup_ranks
from trainer.lif import Surrogate
from trainer.methods import BASELINES, baseline_config
from trainer import qcfs
from trainer.models import ANN, ArchConfig, build_config, neuron_layers
from trainer.norms import fold_ann_norms
from trainer.snn import SNN, require_training_memory, timesteps_that_fit
from trainer.evaluate import evaluate_snn
from trainer.fit import DeadNetwork
from trainer.recipe import OptimConfig, Runtime, SNNTrainConfig
from trainer.train import check_learned, train_ann, train_snn
from trainer.train_state import weights_digest

@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    root: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    image_size: int | None = None


@dataclass(frozen=True)
class ArchChoice:
    name: str | None = None          # None: the data set's default
    conv_dropout: float = 0.2
    fc_dropout: float = 0.5
    norm: bool = False                 # batch norm after every conv (folded at conversion)
    quant_levels: int | None = None    # QCFS activations with L levels (trainer.qcfs); None: ReLU
    input_levels: int | None = None    # the QCFS ANN's input levels (None: L; trainer.models)

    def config(self, bundle: DatasetBundle) -> ArchConfig:
        return build_config(self.name or DEFAULT_ARCH[bundle.name], bundle.input_shape, bundle.num_classes,
                            conv_dropout=self.conv_dropout, fc_dropout=self.fc_dropout, norm=self.norm,
                            quant_levels=self.quant_levels, input_levels=self.input_levels)


@dataclass(frozen=True)
class ConvertConfig:
    statistic: str = "max"
    percentile: float = 99.9
    scaling_factor: float = 0.7
    balance_batches: int = 4
    batch_size: int = 64
    leak: float = 1.0
    bias_calibration: int = 0      # the conversion's bias calibration at T on this many images (0: none)
    scaling: str = "compound"      # how the scaling factor enters (trainer.convert.SCALINGS)

    def __post_init__(self) -> None:
        require(self.statistic in STATISTICS, "statistic", self.statistic, f"one of {', '.join(STATISTICS)}")
        require(math.isfinite(self.percentile) and 0 < self.percentile <= 100, "percentile", self.percentile,
                "a number in (0, 100]")
        require(math.isfinite(self.scaling_factor) and self.scaling_factor > 0, "scaling_factor",
                self.scaling_factor, "a finite number > 0")
        require(self.balance_batches >= 1, "balance_batches", self.balance_batches, "an integer >= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        require(math.isfinite(self.leak) and 0 < self.leak <= 1, "leak", self.leak, "a number in (0, 1]")
        require(0 <= self.bias_calibration <= 100000, "bias_calibration", self.bias_calibration,
                "an integer in 0..100000")
        require(self.scaling in SCALINGS, "scaling", self.scaling, f"one of {', '.join(SCALINGS)}")


@dataclass(frozen=True)
class SurrogateChoice:
    kind: str | None = None          # None: the data set's default (DEFAULT_SURROGATE)
    alpha: float = 0.3
    beta: float = 0.01
    through_reset: bool = True       # False: the reset detached, as the paper's code (trainer.lif)

    def for_dataset(self, dataset: str) -> Surrogate:
        return Surrogate(self.kind or DEFAULT_SURROGATE[dataset], self.alpha, self.beta, self.through_reset)


@dataclass
class ChainConfig:
    """Everything ``chain`` needs; ``timesteps`` None: the data set's defaults."""
    data: DataConfig = field(default_factory=DataConfig)
    arch: ArchChoice = field(default_factory=ArchChoice)
    ann_optim: OptimConfig | None = None          # None: the data set's recipe (ANN_RECIPES)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    snn: SNNTrainConfig = field(default_factory=lambda: SNNTrainConfig(OptimConfig(
        epochs=8, lr=1e-3, optimizer="adam", weight_decay=0.0, warmup_epochs=0.5, grad_clip=1.0)))
    surrogate: SurrogateChoice = field(default_factory=SurrogateChoice)
    timesteps: TimeSteps | None = None
    fit_timesteps: bool = False                   # lower a reduced T whose STDB would not fit in memory (a budget's)
    scratch: bool = True
    runs: str = "runs"
    name: str | None = None
    eval_samples: int | None = None               # test images of the SNN evaluations (None: all, or the deadline's)
    large_eval_samples: int | None = None         # of the large-T evaluation (None: as eval_samples)
    baselines: tuple[str, ...] = ()               # trainer.methods.BASELINES, or "qcfs", to train beside the hybrid
    baseline_epochs: int | None = None            # None: as many as the ANN's
    qcfs_levels: int | None = None                # L of the low-latency recipe's ANN (None: the reduced T)


def load_data(data: DataConfig, seed: int) -> DatasetBundle:
    return load_dataset(data.dataset, data.root, train_subset=data.train_subset, test_subset=data.test_subset,
                        seed=seed, image_size=data.image_size)


def balance_record(ann_ckpt: Checkpoint, cfg: ConvertConfig, timesteps: int, seed: int) -> dict:
    """What decides a conversion's thresholds, as its checkpoint records it (``metrics.balance``):
    the balancing's settings, or for a QCFS ANN (``trainer.qcfs``) its trained thresholds."""
    if ann_ckpt.arch.quant_levels is not None:
        return {"thresholds_from": "qcfs", "leak": cfg.leak, "timesteps": timesteps, "ann": weights_digest(ann_ckpt),
                **({"bias_calibration": cfg.bias_calibration, "seed": seed} if cfg.bias_calibration else {})}
    return {"statistic": cfg.statistic, "percentile": cfg.percentile, "scaling_factor": cfg.scaling_factor,
            "scaling": cfg.scaling,
            "batches": cfg.balance_batches, "batch_size": cfg.batch_size, "leak": cfg.leak, "timesteps": timesteps,
            "seed": seed, "ann": weights_digest(ann_ckpt),
            **({"bias_calibration": cfg.bias_calibration} if cfg.bias_calibration else {})}


def converted_already(ann_ckpt: Checkpoint, cfg: ConvertConfig, timesteps: int, out, seed: int) -> Checkpoint | None:
    """The conversion ``out`` holds when it was made from these weights with these settings
    (a chain resumed after a kill keeps it and the evaluations recorded in it), else None."""
    try:
        ckpt = load_checkpoint(out)
    except (CheckpointError, OSError):
        return None
    found = ckpt.metrics.get("balance") or {}
    want = balance_record(ann_ckpt, cfg, timesteps, seed)
    return ckpt if ckpt.stage in CONVERTED_STAGES and all(found.get(k) == v for k, v in want.items()) else None


def evaluated(ckpt: Checkpoint, path, bundle: DatasetBundle, timesteps: int, rt: Runtime, samples: int | None,
              thresholds: list[float] | None = None) -> tuple[dict, Checkpoint]:
    """The checkpoint's test at T: the one its metrics hold (written after its last save) on
    as many images as asked for (any number when a deadline set the count), else ``evaluate``
    recorded in the file at ``path``; (result, checkpoint as it now is)."""
    found = ckpt.metrics.get(f"test_T{timesteps}")
    if (isinstance(found, dict) and "samples" in found
            and (samples is None or found["samples"] >= min(samples, len(bundle.test_y)))):
        return found, ckpt
    result = evaluate(ckpt, bundle, timesteps, rt, samples, thresholds=thresholds)
    return result, record_eval(path, timesteps, result)


def convert(ann_ckpt: Checkpoint, bundle: DatasetBundle, cfg: ConvertConfig, timesteps: int, out, rt: Runtime,
            stage: str = "converted") -> Checkpoint:
    """The ANN's batch norms folded (``trainer.norms``), then its SNN written to ``out``.
    A QCFS ANN (``trainer.qcfs``) takes its trained thresholds (each layer's weights scaled
    by the threshold feeding it), every layer starting at half of its threshold, and the
    integrate input encoding. Any other is balanced (Algorithm 1) at T: the thresholds scaled
    for the reduced T, and the unscaled ones, for the large T, in
    ``metrics["balance"]["unscaled"]``. With ``cfg.bias_calibration`` either has its biases
    calibrated at T (``trainer.calibrate``); the large T keeps them."""
    arch, state = fold_ann_norms(ann_ckpt.arch, ann_ckpt.state_dict)
    record = balance_record(ann_ckpt, cfg, timesteps, rt.seed)
    if arch.quant_levels is not None:
        arch, state, thresholds = qcfs_snn(arch, state)
        params = SNNParams(thresholds=thresholds, leak=cfg.leak, timesteps=timesteps,
                           v_init=[qcfs.SNN_V_INIT] * len(thresholds), encoding="integrate")
        unscaled = scales = thresholds                   # a rate of 1 stands for lambda
    else:
        ann = ANN(arch).to(rt.device)
        ann.load_state_dict(state)

        def calibration():
            for b, (x, _) in enumerate(batches(bundle, "train", cfg.batch_size, shuffle=True, augment=False,
                                               seed=rt.seed)):
                if b >= cfg.balance_batches:
                    break
                yield x.to(rt.device)

        unscaled = balance_thresholds(ann, calibration, timesteps, statistic=cfg.statistic,
                                      percentile=cfg.percentile, scaling_factor=1.0, leak=cfg.leak, window=50,
                                      seed=rt.seed, progress=rt.progress)
        params = SNNParams(thresholds=scale_thresholds(ann, unscaled, cfg.scaling_factor, cfg.scaling),
                           leak=cfg.leak, timesteps=timesteps)
        state = rescale_biases(arch, state, None, params.thresholds)      # biases in the SNN's units
        scales = list(itertools.accumulate(params.thresholds, operator.mul))   # a rate of 1: the thresholds' product
    metrics = {}
    if cfg.bias_calibration:
        x = next(batches(bundle, "train", cfg.bias_calibration, shuffle=True, augment=False, seed=rt.seed))[0]
        arch, state, shifts = calibrate_biases(ann_ckpt.model().to(rt.device), arch, state, params.thresholds,
                                               params.v_init, x.to(rt.device), timesteps, scales=scales,
                                               encoding=params.encoding, seed=rt.seed)
        metrics["bias_calibration"] = {"timesteps": timesteps, "samples": len(x), "mean_abs_shift": shifts}
    ckpt = Checkpoint(stage=stage, arch=arch, state_dict=state, data=ann_ckpt.data,
                      snn=params, metrics={"balance": {**record, "unscaled": unscaled}, **metrics})
    save_checkpoint(ckpt, out)
    return load_checkpoint(out)


def evaluate(ckpt: Checkpoint, bundle: DatasetBundle, timesteps: int, rt: Runtime,
             samples: int | None = None, thresholds: list[float] | None = None) -> dict:
    """Accuracy (percent) and spikes per layer of an SNN checkpoint at T on the test split
    (the first ``samples`` images, or as many as ``rt.deadline`` leaves time for), with its
    own thresholds or the given ones (its biases moved to their units: ``trainer.convert``)."""
    if thresholds is not None:
        ckpt = dataclasses.replace(ckpt, state_dict=rescale_biases(ckpt.arch, ckpt.state_dict, ckpt.snn.thresholds,
                                                                   thresholds))
    snn = SNN.of_checkpoint(ckpt, thresholds).to(rt.device)
    return evaluate_snn(snn, bundle, timesteps, samples=samples, seed=rt.seed, device=rt.device,
                        progress=rt.progress, deadline=rt.deadline)


def record_eval(path, timesteps: int, result: dict) -> Checkpoint:
    """Add an evaluation at T to a checkpoint's metrics (rewrites the file atomically)."""
    ckpt = load_checkpoint(path)
    ckpt.metrics = {**ckpt.metrics, f"test_T{timesteps}": result}
    save_checkpoint(ckpt, path)
    return ckpt


def fine_tune(init: Checkpoint, bundle: DatasetBundle, stage: str, timesteps: int, cfg: SNNTrainConfig,
              surrogate: SurrogateChoice, out, rt: Runtime, eval_samples: int | None = None,
              teacher: Checkpoint | None = None) -> dict | None:
    """STDB fine-tuning or from-scratch training at T (against ``teacher``'s outputs where
    ``cfg.distill`` is set), then (main process) the test at T, recorded in the checkpoint.
    Under torchrun every process trains its slice."""
    cfg = dataclasses.replace(cfg, surrogate=surrogate.for_dataset(bundle.name))
    return _train_and_test(init, bundle, stage, timesteps, cfg, out, rt, eval_samples, teacher)


def _train_and_test(init: Checkpoint, bundle: DatasetBundle, stage: str, timesteps: int, cfg: SNNTrainConfig, out,
                    rt: Runtime, eval_samples: int | None, teacher: Checkpoint | None = None) -> dict | None:
    """``train_snn`` (under torchrun on every process's slice), then the main process's test
    at T, recorded in the checkpoint."""
    rt = dataclasses.replace(rt, ranks=setup_ranks(rt.device))
    trained = train_snn(bundle, init, stage, timesteps, cfg, out, rt, teacher)
    if not rt.ranks.is_main:
        return None
    return evaluated(trained, out, bundle, timesteps, dataclasses.replace(rt, deadline=None), eval_samples)[0]


def scratch_init(arch: ArchConfig, bundle: DatasetBundle, leak: float, timesteps: int, seed: int,
                 stage: str = "scratch") -> Checkpoint:
    """Random weights (He-normal) and unit thresholds: where the from-scratch runs start. The
    ANN recipe's batch norms and QCFS activations (the low-latency recipe's) have no part in
    it: the SNN of the same layers, as the paper trains it from scratch."""
    arch = dataclasses.replace(arch, quant_levels=None, input_levels=None, layers=tuple(
        dataclasses.replace(layer, norm=False) if getattr(layer, "norm", False) else layer for layer in arch.layers))
    torch.manual_seed(seed)
    return Checkpoint(stage=stage, arch=arch, state_dict=ANN(arch).state_dict(), data=data_record(bundle, seed),
                      snn=SNNParams(thresholds=[1.0] * len(neuron_layers(arch)), leak=leak, timesteps=timesteps))


def train_baseline(method: str, arch: ArchConfig, bundle: DatasetBundle, timesteps: int, epochs: int, out,
                   rt: Runtime, leak: float = 1.0, eval_samples: int | None = None) -> dict | None:
    """One of the hybrid's baselines (``trainer.methods``) from scratch at T, then (main
    process) its test at T, recorded in the checkpoint."""
    cfg = baseline_config(method, epochs, leak)
    init = scratch_init(arch, bundle, cfg.leak, timesteps, rt.seed, stage=method)
    return _train_and_test(init, bundle, method, timesteps, cfg, out, rt, eval_samples)


def check_converted(init: Checkpoint, path) -> None:
    if init.stage not in CONVERTED_STAGES + ("stdb", "qcfs"):
        raise CheckpointError(f"{path}: stage {init.stage!r}; STDB starts from a converted checkpoint")


class Clock(Protocol):
    """What ``chain`` asks of a stage clock (``pipeline.budget.StageClock``)."""

    def deadline(self, stage: str) -> float | None: ...

    def done(self, stage: str) -> None: ...


class _NoClock:
    def deadline(self, stage: str) -> None:
        return None

    def done(self, stage: str) -> None:
        pass


def train_ann_in_time(bundle: DatasetBundle, arch: ArchConfig, opt: OptimConfig, out, rt: Runtime,
                      stage: str = "ann") -> Checkpoint:
    """``train_ann``; under a deadline a net that falls silent is trained once more at half
    the learning rate (a budgeted run has no second chance to change the recipe)."""
    try:
        return train_ann(bundle, arch, opt, out, rt, stage=stage)
    except DeadNetwork as exc:
        if rt.deadline is None:
            raise
        retry = dataclasses.replace(opt, lr=opt.lr / 2)
        print(f"{exc}\nretrying once at --lr {retry.lr:g}", flush=True)
        return train_ann(bundle, arch, retry, out, dataclasses.replace(rt, restart=True), stage=stage)


def low_latency(cfg: ChainConfig, bundle: DatasetBundle, arch_name: str, timesteps: int, run: RunLayout,
                rt: Runtime, accuracies: list, seconds: dict) -> None:
    """The low-latency recipe (``trainer.qcfs``) in ``run``: the chain's ANN with batch norm
    after every conv and QCFS activations of L levels (default: L = T), its input of T levels, trained
    by the chain's ANN recipe (qcfs_ann.pt); converted with its own thresholds, every layer
    starting at half of them, the integrate encoding (qcfs_converted.pt); fine-tuned at T as
    the hybrid is (qcfs.pt). Appends its accuracies and wall times."""
    levels = cfg.qcfs_levels or timesteps
    arch = dataclasses.replace(cfg.arch, name=arch_name, norm=True, quant_levels=levels,
                               input_levels=timesteps).config(bundle)
    optim = cfg.ann_optim or ANN_RECIPES[bundle.name]
    t = time.time()
    ann = train_ann_in_time(bundle, arch, optim, run.checkpoint("qcfs_ann"), rt, stage="qcfs_ann")
    check_learned(ann, optim, run.checkpoint("qcfs_ann"))
    accuracies.append(StageAccuracy("qcfs_ann", None, ann.metrics["test_acc"], len(bundle.test_y)))
    seconds["qcfs_ann"] = time.time() - t
    t = time.time()
    path = run.checkpoint("qcfs_converted")
    converted = (converted_already(ann, cfg.convert, timesteps, path, rt.seed)
                 or convert(ann, bundle, cfg.convert, timesteps, path, rt, stage="qcfs_converted"))
    result, converted = evaluated(converted, path, bundle, timesteps, dataclasses.replace(rt, deadline=None),
                                  cfg.eval_samples)
    accuracies.append(StageAccuracy("qcfs_converted", timesteps, result["accuracy"], result["samples"]))
    seconds["qcfs_convert"] = time.time() - t
    t = time.time()
    result = fine_tune(converted, bundle, "qcfs", timesteps, cfg.snn, cfg.surrogate, run.checkpoint("qcfs"), rt,
                       result["samples"], teacher=ann if cfg.snn.distill is not None else None)
    accuracies.append(StageAccuracy("qcfs", timesteps, result["accuracy"], result["samples"]))
    seconds["qcfs"] = time.time() - t


FITTED_T_STEP = 10      # a reduced T lowered to fit is a multiple of this (a resume mostly finds the same one)


def fitted_timesteps(steps: TimeSteps, most: int, arch_name: str, batch: int) -> TimeSteps:
    """``steps``, its reduced T lowered (to a multiple of FITTED_T_STEP where it can be) when
    STDB's full backpropagation through it at ``batch`` images would need more memory than
    ``most`` steps; said in one line. Below one step it is left for the memory check to refuse."""
    if most >= steps.reduced or most < 1:
        return steps
    lowered = most - most % FITTED_T_STEP if most >= FITTED_T_STEP else most
    print(f"reduced T {steps.reduced} does not fit: backpropagation through it at {batch} images of "
          f"{arch_name} needs more memory than is available; T = {lowered} instead (the most that fits, "
          f"rounded down to a multiple of {FITTED_T_STEP})", flush=True)
    return steps.with_reduced(lowered)


def chain(cfg: ChainConfig, rt: Runtime, clock: Clock | None = None) -> tuple[RunLayout, TrainerSummary]:
    """ANN -> conversion -> STDB, the from-scratch baseline and the ``baselines`` of
    ``trainer.methods``, into ``runs/<name>/``.
    ``clock`` times the stages and, under a budget, gives each one its deadline."""
    clock = clock or _NoClock()
    bundle = load_data(cfg.data, rt.seed)
    if torch.device(rt.device).type == "cuda":
        bundle = bundle.to(rt.device)            # decoded once, cropped and flipped on the GPU
    arch = cfg.arch.config(bundle)
    steps = cfg.timesteps or default_timesteps(bundle.name, arch=arch.name)
    # Sized before the ANN trains: fine-tuning at the reduced T is the chain's largest hold.
    batch = max([cfg.snn.optim.batch_size] + [baseline_config(m, 1).optim.batch_size for m in cfg.baselines
                                              if m in BASELINES])
    if cfg.fit_timesteps and cfg.snn.window is None:
        steps = fitted_timesteps(steps, timesteps_that_fit(arch, batch, rt.device), arch.name, batch)
    require_training_memory(arch, steps.reduced, batch, cfg.snn.window, rt.device,
                            f"--timesteps {steps.reduced}", "fewer time steps need less")
    run = RunLayout.named(cfg.runs, bundle.name, arch.name, cfg.name)
    run.root.mkdir(parents=True, exist_ok=True)
    seconds, accuracies = {}, []
    clock.done("data")

    t = time.time()
    ann_optim = cfg.ann_optim or ANN_RECIPES[bundle.name]
    ann = train_ann_in_time(bundle, arch, ann_optim, run.checkpoint("ann"),
                            dataclasses.replace(rt, deadline=clock.deadline("ann")))
    check_learned(ann, ann_optim, run.checkpoint("ann"))
    seconds["ann"] = time.time() - t
    accuracies.append(StageAccuracy("ann", None, ann.metrics["test_acc"], len(bundle.test_y)))
    clock.done("ann")

    # A chain resumed after a kill keeps a conversion of the same ANN and settings, and the
    # evaluations recorded in it; the training stages resume from their own checkpoints.
    t = time.time()
    converted = (converted_already(ann, cfg.convert, steps.reduced, run.checkpoint("converted"), rt.seed)
                 or convert(ann, bundle, cfg.convert, steps.reduced, run.checkpoint("converted"), rt))
    seconds["convert"] = time.time() - t
    clock.done("convert")

    # The reduced T first, within 40 % of the evaluations' time: the STDB net is tested on
    # as many images as it reached, so that both are compared on the same ones.
    t = time.time()
    end = clock.deadline("evaluate converted")
    at_reduced, converted = evaluated(converted, run.checkpoint("converted"), bundle, steps.reduced,
                                      dataclasses.replace(rt, deadline=None if end is None else time.monotonic()
                                                          + 0.4 * (end - time.monotonic())), cfg.eval_samples)
    # what the fine-tuned net's test on the same images will cost (a resumed chain kept this
    # evaluation: its recorded time)
    eval_seconds = at_reduced.get("seconds", time.time() - t)
    # The large T is the conversion's own column: the balanced thresholds without the
    # reduced T's scaling factor (trainer.convert), which saturates deep layers there.
    at_large, converted = evaluated(converted, run.checkpoint("converted"), bundle, steps.large,
                                    dataclasses.replace(rt, deadline=end), cfg.large_eval_samples or cfg.eval_samples,
                                    thresholds=converted.metrics["balance"]["unscaled"])
    for t_eval, result in ((steps.large, at_large), (steps.reduced, at_reduced)):
        accuracies.append(StageAccuracy("converted", t_eval, result["accuracy"], result["samples"]))
    clock.done("evaluate converted")

    # with cfg.snn.distill the hybrid fine-tunes against its own ANN; from scratch there is none
    stages = [("stdb", converted, ann if cfg.snn.distill is not None else None)]
    if cfg.scratch:
        stages.append(("scratch", scratch_init(arch, bundle, cfg.convert.leak, steps.reduced, rt.seed), None))
    end = clock.deadline("stdb")       # the baselines too train within the fine-tuning's deadline
    stage_rt = dataclasses.replace(rt, deadline=None if end is None else end - eval_seconds)
    # Under a budget the fine-tuning's checks take as many validation images as the test at T
    # above reached in its time (VGG5 at T = 75: the whole split, 5,000, took 5 minutes a check).
    tuning = (dataclasses.replace(cfg.snn, val_samples=at_reduced["samples"])
              if end is not None and cfg.snn.val_samples is None else cfg.snn)
    for stage, init, teacher in stages:
        t = time.time()
        snn_cfg = tuning if teacher is not None else dataclasses.replace(tuning, distill=None)
        result = fine_tune(init, bundle, stage, steps.reduced, snn_cfg, cfg.surrogate, run.checkpoint(stage),
                           stage_rt, at_reduced["samples"], teacher=teacher)
        seconds[stage] = time.time() - t
        accuracies.append(StageAccuracy(stage, steps.reduced, result["accuracy"], result["samples"]))
    for method in cfg.baselines:
        if method == "qcfs":
            low_latency(cfg, bundle, arch.name, steps.reduced, run, stage_rt, accuracies, seconds)
            continue
        t = time.time()
        result = train_baseline(method, arch, bundle, steps.reduced, cfg.baseline_epochs or ann_optim.epochs,
                                run.checkpoint(method), stage_rt, cfg.convert.leak, at_reduced["samples"])
        seconds[method] = time.time() - t
        accuracies.append(StageAccuracy(method, steps.reduced, result["accuracy"], result["samples"]))
    clock.done("stdb")
    summary = TrainerSummary(dataset=bundle.name, arch=arch.name, timesteps=steps,
                             surrogate=cfg.surrogate.for_dataset(bundle.name).kind, accuracies=accuracies,
                             seconds=seconds)
    save_trainer_summary(summary, run.trainer_summary)
    return run, summary
