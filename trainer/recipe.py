"""How a stage trains: the optimiser's recipe (``OptimConfig``), the SNN stages' options
(``SNNTrainConfig``), where and how it runs (``Runtime``), and the learning-rate schedule."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from records.cli import require
from trainer.distill import Distillation
from trainer.distributed import Group
from trainer.lif import Surrogate
from trainer.weight_grid import MAX_BITS, MIN_BITS


SCHEDULES = ("cosine", "step", "step0.2", "onecycle", "none")
LOSSES = ("ce", "mse")
PRECISIONS = ("fp32", "bf16")


@dataclass
class OptimConfig:
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"          # sgd or adam
    lr: float = 0.01
    momentum: float = 0.9           # sgd's
    weight_decay: float = 5e-4
    schedule: str = "cosine"        # cosine, step (x0.1 at 50 % and 75 %), step0.2 (x0.2 at 70, 100 and 125
    #                                 of 150 epochs: Lee 2020), onecycle (linear to 0), none
    warmup_epochs: float = 0.0      # linear warm-up from 10 % of lr
    grad_clip: float = 0.0          # max gradient norm, 0 = off
    label_smoothing: float = 0.0
    cutout: int = 0                 # side of the square Cutout masks in each training image (trainer.data), 0 = off
    precision: str = "fp32"         # bf16: convolutions and matmuls under autocast; neuron state stays fp32
    channels_last: bool = False     # NHWC layout for the convolutions (the fast one on GPUs)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        require(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a finite number > 0")
        for name in ("weight_decay", "warmup_epochs", "grad_clip", "label_smoothing", "momentum"):
            v = getattr(self, name)
            require(math.isfinite(v) and v >= 0, name, v, "a finite number >= 0")
        require(self.optimizer in ("sgd", "adam"), "optimizer", self.optimizer, "sgd or adam")
        require(self.schedule in SCHEDULES, "schedule", self.schedule, ", ".join(SCHEDULES))
        require(self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "a number in [0, 1)")
        require(self.precision in PRECISIONS, "precision", self.precision, " or ".join(PRECISIONS))
        require(self.cutout >= 0, "cutout", self.cutout, "an integer >= 0")

    def to_dict(self) -> dict:
        """The fields; cutout only where set (the configurations of runs before the option)."""
        d = dataclasses.asdict(self)
        if not d["cutout"]:
            del d["cutout"]
        return d


def recipe(opt: OptimConfig) -> str:
    """The training recipe in the options' words, for messages."""
    return (f"--optimizer {opt.optimizer} --lr {opt.lr:g} --batch-size {opt.batch_size} --schedule {opt.schedule} "
            f"--warmup-epochs {opt.warmup_epochs:g} --grad-clip {opt.grad_clip:g}")


@dataclass
class SNNTrainConfig:
    """How an SNN stage trains: STDB fine-tuning or training from scratch.

    ``window`` = t0 of truncated BPTT (loss every ``window`` steps, gradients summed, one
    step); ``surrogate`` and ``leak`` default to the initial checkpoint's;
    ``keep_best=False`` with ``rollback_drop=inf`` and no clipping/warm-up is the plain recipe.
    ``loss``: "ce" (cross-entropy) or "mse" (squared error against the one-hot label, summed
    over classes: Lee 2020's); ``current_norm``: batch norm on input currents, folded into
    the weights and biases of every checkpoint written (``trainer.norms``); ``weight_bits``:
    train on the export's weight grid (``trainer.weight_grid``; default: the initial
    checkpoint's grid, float weights if it has none); ``distill``: the loss against an ANN
    teacher's outputs (``trainer.distill``; None: the labels alone).
    """
    optim: OptimConfig
    surrogate: Surrogate | None = None
    leak: float | None = None
    window: int | None = None
    backend: str = "auto"
    rollback_drop: float = 10.0
    keep_best: bool = True
    val_fraction: float = 0.1
    val_samples: int | None = None  # validation images per check (None: the whole split)
    eval_window: int = 50
    loss: str = "ce"
    current_norm: bool = False
    weight_bits: int | None = None
    distill: Distillation | None = None

    def __post_init__(self) -> None:
        require(self.distill is None or self.loss == "ce", "loss", self.loss, "ce with distillation")
        if self.weight_bits is not None:
            require(MIN_BITS <= self.weight_bits <= MAX_BITS, "weight_bits", self.weight_bits,
                    f"an integer in {MIN_BITS}..{MAX_BITS}")
            require(not self.current_norm, "weight_bits", self.weight_bits,
                    "float weights (None) with current_norm: the norms fold into the weights after training")
        require(self.loss in LOSSES, "loss", self.loss, " or ".join(LOSSES))
        if self.leak is not None:
            require(math.isfinite(self.leak) and 0 < self.leak <= 1, "leak", self.leak, "a number in (0, 1]")
        if self.window is not None:
            require(self.window >= 1, "bptt_window", self.window, "an integer >= 1")
        require(self.rollback_drop >= 0, "rollback_drop", self.rollback_drop, "a number >= 0")
        require(0 <= self.val_fraction < 1, "val_fraction", self.val_fraction, "a number in [0, 1)")
        require(self.val_samples is None or self.val_samples >= 1, "val_samples", self.val_samples,
                "an integer >= 1")

    def to_dict(self) -> dict:
        """What decides the result of a run (resume refuses to continue under another)."""
        d = dataclasses.asdict(self)
        del d["optim"]
        d.update(self.optim.to_dict())
        d["surrogate"] = self.surrogate.to_dict() if self.surrogate is not None else None
        for name in ("weight_bits", "distill"):    # unset: the configurations of runs before the option
            if d[name] is None:
                del d[name]
        return d


@dataclass
class Runtime:
    """Where and how a stage runs: device, seed, progress bars, the command recorded in
    checkpoints, and the process group under torchrun."""
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    command: list[str] | None = None
    ranks: Group = field(default_factory=Group)
    restart: bool = False            # start over where an output holds a run of another configuration
    deadline: float | None = None    # time.monotonic() by which a stage stops, keeping its best (a budget)

    @property
    def shows_progress(self) -> bool:
        return self.progress and self.ranks.is_main

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def seconds_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()


def make_optimizer(params, opt: OptimConfig):
    """The recipe's optimizer; on the CPU in torch's fused form, one kernel per parameter for
    the whole update, where the default (foreach) makes a pass over every weight per operation:
    VGG9's 32.1 M weights at every step (``benchmarks/weights_speed.py``). The same update
    within rounding (tests/test_train.py)."""
    params = list(params)
    form = {"fused": True} if params and all(p.device.type == "cpu" for p in params) else {}
    if opt.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, **form)
    if opt.optimizer == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay, **form)
    raise ValueError(f"unknown optimizer {opt.optimizer!r} (sgd or adam)")


def lr_factor(opt: OptimConfig, progress: float, span: float | None = None) -> float:
    """Learning-rate multiplier at a point of training measured in epochs (float), for a
    schedule over ``span`` epochs (default: the recipe's; a deadline's plan may end inside
    an epoch, ``trainer.fit.StepPlanner``)."""
    epochs = opt.epochs if span is None else span
    if opt.warmup_epochs > 0 and progress < opt.warmup_epochs:
        return 0.1 + 0.9 * progress / opt.warmup_epochs
    frac = progress / max(epochs, 1e-9)
    if opt.schedule == "onecycle":       # after the warm-up, straight down to zero at the last step
        rest = max(epochs - opt.warmup_epochs, 1e-9)
        return max(0.0, 1.0 - (progress - opt.warmup_epochs) / rest)
    if opt.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))
    if opt.schedule == "step":
        return 0.01 if frac >= 0.75 else 0.1 if frac >= 0.5 else 1.0
    if opt.schedule == "step0.2":
        return 0.2 ** sum(frac >= f for f in (70 / 150, 100 / 150, 125 / 150))
    if opt.schedule == "none":
        return 1.0
    raise ValueError(f"unknown schedule {opt.schedule!r} ({', '.join(SCHEDULES)})")


def native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively: CUDA, or a CPU with AVX-512 BF16
    or AMX. Elsewhere oneDNN emulates them (an AVX2 EPYC: VGG9 at 2 images/s in bf16 against
    71 in fp32), so the fast recipes train in fp32 there."""
    if torch.device(device).type == "cuda":
        return True
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def fast_precision(device) -> str:
    """The fast recipes' precision on ``device``: bf16 where it is native (``native_bf16``), else fp32."""
    return "bf16" if native_bf16(device) else "fp32"


def autocast(device, precision: str):
    """bf16 autocast of convolutions and matmuls where ``precision`` asks for it."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
