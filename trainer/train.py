"""Training loops: the ANN, and the SNN (STDB fine-tuning of a converted net, or from scratch).

Both loops checkpoint after every epoch into their output file (atomic write), holding
the best weights so far (by accuracy on a validation split carved from the training set)
plus a ``train_state`` with the latest weights and optimizer, so an interrupted run
resumes from its last finished epoch. Metrics go to a CSV, one row per epoch.

STDB fine-tuning is fragile (docs/method.md: a plain run fell silent and collapsed to
chance in its second epoch). The SNN loop therefore watches per-layer firing rates and
the gradient norm, clips gradients, warms the learning rate up, keeps the best
checkpoint, and rolls back to it with a halved learning rate when the validation
accuracy collapses or a layer falls silent.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from records.atomic import atomic_file
from records.cli import require
from records.layout import SNN_STAGES, metrics_path
from records.progress import progress as progress_bar
from records.table import csv_text
from trainer.checkpoint import Checkpoint, SNNParams, load_checkpoint, provenance, save_checkpoint
from trainer.data import DatasetBundle, batches, data_record, num_batches
from trainer.distributed import Group
from trainer.lif import Surrogate
from trainer.models import ANN, ArchConfig
from trainer.norms import CurrentNorms, fold_norms
from trainer.qcfs import init_thresholds as qcfs_init
from trainer.snn import SNN, require_training_memory


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class TrainingDiverged(ValueError):
    """A non-finite loss or weight: the run stops, and the last good epoch stays on disk."""


class DeadNetwork(ValueError):
    """An ANN that says nothing about its input: silent outputs (``is_silent``; no further
    epoch revives it) or, at the end, accuracy near chance (``check_learned``). Conversion
    would only carry it forward, or fail much later."""


def recipe(opt: OptimConfig) -> str:
    """The training recipe in the options' words, for messages."""
    return (f"--optimizer {opt.optimizer} --lr {opt.lr:g} --batch-size {opt.batch_size} --schedule {opt.schedule} "
            f"--warmup-epochs {opt.warmup_epochs:g} --grad-clip {opt.grad_clip:g}")


def check_learned(ckpt: Checkpoint, opt: OptimConfig, where) -> None:
    """Stop a chain whose ANN is still near chance: conversion would carry chance forward."""
    chance = 100.0 / ckpt.arch.num_classes
    acc = ckpt.metrics["test_acc"]
    if acc <= 1.5 * chance:
        raise DeadNetwork(f"{where}: the ANN reaches {acc:.1f} % on the test set, chance is {chance:.1f} %: the "
                          f"recipe ({recipe(opt)}, --epochs {opt.epochs}) did not train {ckpt.arch.name}; change it "
                          "and pass --restart")


SILENT_LOGITS = 0.01    # class scores this close: softmax uniform, loss ln K to 1e-4


@torch.no_grad()
def is_silent(ann: ANN, bundle: DatasetBundle, device="cpu", samples: int = 256) -> bool:
    """True when, for every one of the test split's first images, the ANN scores all classes
    within SILENT_LOGITS of each other: it says nothing about its input. (A freshly
    initialised net scores them O(1) apart; on CIFAR-10, VGG5 at lr 0.05 got here in its
    first epoch, its third conv layer silent.)"""
    ann.eval()
    x, _ = next(batches(bundle, "test", min(samples, len(bundle.test_y)), shuffle=False))
    out = ann(x.to(device)).float()
    return bool((out - out.mean(1, keepdim=True)).abs().max() < SILENT_LOGITS)


@dataclass
class SNNTrainConfig:
    """How an SNN stage trains: STDB fine-tuning or training from scratch.

    ``window`` = t0 of truncated BPTT (loss every ``window`` steps, gradients summed, one
    step); ``surrogate`` and ``leak`` default to the initial checkpoint's;
    ``keep_best=False`` with ``rollback_drop=inf`` and no clipping/warm-up is the plain recipe.
    ``loss``: "ce" (cross-entropy) or "mse" (squared error against the one-hot label, summed
    over classes: Lee 2020's); ``current_norm``: batch norm on input currents, folded into
    the weights and biases of every checkpoint written (``trainer.norms``).
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

    def __post_init__(self) -> None:
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
        d.update(d.pop("optim"))
        d["surrogate"] = self.surrogate.to_dict() if self.surrogate is not None else None
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


def validation_split(bundle: DatasetBundle, fraction: float, seed: int) -> tuple[DatasetBundle, DatasetBundle]:
    """(training part, validation part); the validation part's test split is held-out training data."""
    if not 0.0 < fraction < 1.0:
        return bundle, bundle
    n = len(bundle.train_y)
    order = np.random.default_rng([seed, 7]).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    dev = bundle.train_x.device
    val_idx, train_idx = torch.from_numpy(order[:n_val]).to(dev), torch.from_numpy(order[n_val:]).to(dev)
    train = dataclasses.replace(bundle, train_x=bundle.train_x[train_idx], train_y=bundle.train_y[train_idx])
    val = dataclasses.replace(bundle, test_x=bundle.train_x[val_idx], test_y=bundle.train_y[val_idx])
    return train, val


def snapshot(module: torch.nn.Module) -> dict:
    """A CPU copy of the weights, unaffected by later optimizer steps."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def make_optimizer(params, opt: OptimConfig):
    if opt.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    if opt.optimizer == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    raise ValueError(f"unknown optimizer {opt.optimizer!r} (sgd or adam)")


def lr_factor(opt: OptimConfig, progress: float) -> float:
    """Learning-rate multiplier at a point of training measured in epochs (float)."""
    if opt.warmup_epochs > 0 and progress < opt.warmup_epochs:
        return 0.1 + 0.9 * progress / opt.warmup_epochs
    frac = progress / max(opt.epochs, 1)
    if opt.schedule == "onecycle":       # after the warm-up, straight down to zero at the last step
        rest = max(opt.epochs - opt.warmup_epochs, 1e-9)
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


def epoch_line(stage: str, row: dict, epochs: int, images: int) -> None:
    """One line per finished epoch (a terminal's bar or a log file alike): accuracy, rate, ETA."""
    seconds, done = row["seconds"], row["epoch"]
    print(f"{stage} epoch {done}/{epochs}: train {row['train_acc']:.2f} %, val {row['val_acc']:.2f} %, "
          f"{seconds:.0f} s ({images / max(seconds, 1e-9):.1f} images/s), ETA {(epochs - done) * seconds:.0f} s",
          flush=True)


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


class MetricsCSV:
    """Append-only per-epoch metrics; rewritten atomically so a crash never leaves half a row."""

    def __init__(self, path: Path, rows: list[dict] | None = None, write: bool = True):
        self.path, self.rows, self.write = path, list(rows or []), write
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        """Written after the epoch's checkpoint, so a failed save leaves no row it lacks."""
        if self.write:
            with atomic_file(self.path, "w") as f:
                f.write(csv_text(self.rows))


@torch.no_grad()
def evaluate_ann(ann: ANN, bundle: DatasetBundle, *, batch_size: int = 256, device="cpu") -> float:
    ann.eval()
    correct = total = 0
    for x, y in batches(bundle, "test", batch_size, shuffle=False):
        correct += int((ann(x.to(device)).argmax(1) == y.to(device)).sum())
        total += len(y)
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def evaluate_snn(snn: SNN, bundle: DatasetBundle, timesteps: int, *, batch_size: int = 128,
                 samples: int | None = None, window: int | None = 50, seed: int = 0, device="cpu",
                 progress: bool = False, deadline: float | None = None) -> dict:
    """Accuracy at T and average spikes per neuron per layer (Fig. 3's definition), on the test split.
    Past ``deadline`` (time.monotonic()) it stops after the batch in hand; ``samples`` says how many counted."""
    snn.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    correct = total = 0
    spikes = np.zeros(len(snn.neurons))
    neurons = [0] * len(snn.neurons)
    n_batches = num_batches(bundle, "test", batch_size)
    if samples is not None:                      # the bar's total (and ETA) for the images asked for
        n_batches = min(n_batches, math.ceil(samples / batch_size))
    bar = progress_bar(batches(bundle, "test", batch_size, shuffle=False), total=n_batches, enabled=progress,
                       desc=f"SNN eval T={timesteps}", unit="batch", leave=False)
    for x, y in bar:
        if (samples is not None and total >= samples) or (deadline is not None and total and
                                                           time.monotonic() > deadline):
            break
        if samples is not None:
            x, y = x[:samples - total], y[:samples - total]
        logits = snn(x.to(device), timesteps, window=window, generator=generator)
        correct += int((logits.argmax(1) == y.to(logits.device)).sum())
        total += len(y)
        spikes += np.asarray(snn.spike_counts)
        neurons = snn.neuron_counts
    return {"accuracy": 100.0 * correct / max(total, 1), "samples": total, "timesteps": timesteps,
            "spikes_per_neuron": [float(s / (n * total)) if n else 0.0 for s, n in zip(spikes, neurons)],
            "total_spikes_per_sample": float(spikes.sum() / max(total, 1))}


@dataclass
class Progress:
    """Where a training loop stands: what it resumes from and checkpoints after every epoch."""
    start: int = 0
    best: float = -1.0
    best_state: dict | None = None
    history: list = field(default_factory=list)
    train_state: dict = field(default_factory=dict)


def run_config(stage: str, arch: ArchConfig, settings: dict, bundle: DatasetBundle, seed: int, **more) -> dict:
    """Everything that decides a training run's result, as recorded in its checkpoint: the
    data too, by a digest of the training images and labels (another folder of the same
    data set's name is another run)."""
    config = {"stage": stage, "arch": arch.to_dict(), **settings, "seed": int(seed), "dataset": bundle.name,
              "classes": list(bundle.class_names), "train_images": int(len(bundle.train_y)),
              "train_data": data_digest(bundle), **more}
    return json.loads(json.dumps(config))        # as it reads back from the checkpoint (lists, not tuples)


def data_digest(bundle: DatasetBundle) -> str:
    """SHA-256 (16 hex digits) of the training split's images and labels."""
    h = hashlib.sha256()
    for t in (bundle.train_x, bundle.train_y):
        h.update(str(tuple(t.shape)).encode() + t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def weights_digest(ckpt: Checkpoint) -> str:
    """Identifies an initial checkpoint's weights and thresholds (a resumed run must start from the same)."""
    h = hashlib.sha256()
    for k in sorted(ckpt.state_dict):
        h.update(k.encode() + ckpt.state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    if ckpt.snn is not None:
        h.update(json.dumps(ckpt.snn.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def resume(out: Path, config: dict, model: torch.nn.Module, optimizer, restart: bool = False) -> Progress | None:
    """Load an interrupted (or finished) run from ``out`` into ``model`` and ``optimizer``
    when it was started with the same ``config``; None when there is none (or ``restart``).
    A run of another configuration is refused, naming the settings that differ."""
    if restart or not out.exists():
        return None
    ckpt = load_checkpoint(out)
    old = (ckpt.train_state or {}).get("config")
    if old is not None and "train_data" not in old:       # recorded before the data digest: the name alone
        config = {k: v for k, v in config.items() if k != "train_data"}
    if old is None:
        raise ValueError(f"{out}: holds a {ckpt.stage} checkpoint that is not a resumable run of this version; "
                         "pass --restart to overwrite it, or choose another output")
    if old != config:
        keys = list(config) + [k for k in old if k not in config]
        diff = "; ".join(f"{k}: {_short(old.get(k))} there, {_short(config.get(k))} now"
                         for k in keys if old.get(k) != config.get(k))
        raise ValueError(f"{out}: holds a run with another configuration ({diff}); pass --restart to start over, "
                         "or choose another output")
    ts = ckpt.train_state
    model.load_state_dict(ts["last_state_dict"])
    optimizer.load_state_dict(ts["optimizer"])
    return Progress(ts["epoch"], ts["best_metric"], ts.get("best_state_dict", ckpt.state_dict), ts["history"], ts)


def _short(v) -> str:
    text = json.dumps(v) if isinstance(v, (dict, list)) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


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


def train_ann(bundle: DatasetBundle, arch: ArchConfig, opt: OptimConfig, out: Path, rt: Runtime = Runtime(), *,
              val_fraction: float = 0.1, stage: str = "ann") -> Checkpoint:
    """Train the constrained ANN; resumes from ``out`` if a previous run was interrupted.

    ``opt.batch_size`` is the global batch; under torchrun each rank trains on its slice.
    Under a deadline (``rt.deadline``) the first epochs are timed and the schedule is laid
    over the epochs that fit (``plan_epochs``); a run that still overruns stops after the
    epoch in hand, keeping its best weights.
    """
    out = Path(out)
    seed, device, ranks = rt.seed, rt.device, rt.ranks
    torch.manual_seed(seed)
    train_part, val_part = validation_split(bundle, val_fraction, seed)
    ann = ANN(arch).to(device)
    if opt.channels_last:
        ann = ann.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(ann.parameters(), opt)
    config = run_config(stage, arch, {**opt.to_dict(), "val_fraction": val_fraction}, bundle, seed)
    state = resume(out, config, ann, optimizer, rt.restart)
    if state is None:
        state = Progress()
        if arch.quant_levels is not None:        # a QCFS ANN: its thresholds from the first batch (trainer.qcfs)
            x, _ = next(batches(train_part, "train", opt.batch_size, shuffle=True, seed=seed, epoch=0))
            qcfs_init(ann, ranks.shard(x).to(device))
    start, best, best_state = state.start, state.best, state.best_state
    sched = dataclasses.replace(opt, epochs=state.train_state.get("planned_epochs", opt.epochs))
    metrics = MetricsCSV(metrics_path(out), state.history, write=ranks.is_main)
    steps_per_epoch = num_batches(train_part, "train", opt.batch_size)

    def save(done: int) -> float:
        """The checkpoint after ``done`` epochs; returns the seconds it took."""
        t = time.time()
        if ranks.is_main:
            planned = {"planned_epochs": sched.epochs} if rt.deadline is not None else {}
            _save_stage(out, stage, arch, best_state, bundle, None, {"best_val_acc": best}, rt.command,
                        {"epoch": done, "last_state_dict": ann.state_dict(), "optimizer": optimizer.state_dict(),
                         "best_metric": best, "history": metrics.rows, "config": config, **planned}, seed)
            metrics.flush()
        return time.time() - t

    epoch, saved, saved_at, save_seconds = start, True, -math.inf, 0.0
    while epoch < sched.epochs and not (epoch > start and rt.out_of_time()):
        ann.train()
        torch.manual_seed(seed * 1000 + epoch)     # dropout's draws: per epoch, so a resumed run draws the same
        t0, loss_sum, correct, seen, t_warm = time.time(), 0.0, 0, 0, None
        bar = progress_bar(batches(train_part, "train", opt.batch_size, shuffle=True, seed=seed, epoch=epoch),
                           total=steps_per_epoch, desc=f"ANN epoch {epoch + 1}/{sched.epochs}", unit="step",
                           enabled=rt.shows_progress, end_line=False)
        for step, (x, y) in enumerate(bar):
            if step == WARM_STEPS:
                t_warm = time.time()
            for group in optimizer.param_groups:
                group["lr"] = opt.lr * lr_factor(sched, epoch + step / steps_per_epoch)
            x, y = ranks.shard(x).to(device), ranks.shard(y).to(device)
            if opt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, opt.precision):
                logits = ann(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=opt.label_smoothing)
            check_loss(loss, f"{out}: epoch {epoch + 1}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            ranks.average_gradients(ann.parameters())
            if opt.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(ann.parameters(), opt.grad_clip)
            optimizer.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}")
        t_train = time.time()
        loss_sum, correct, seen = ranks.sum([loss_sum, correct, seen])
        check_weights(ann, f"{out}: end of epoch {epoch + 1}")
        val_acc = evaluate_ann(ann, val_part, device=device)
        if is_silent(ann, val_part, device):
            raise DeadNetwork(f"{out}: after epoch {epoch + 1} the ANN's outputs are silent (every class scored "
                              f"alike for every input; validation accuracy {val_acc:.1f} %, chance "
                              f"{100 / arch.num_classes:.1f} %): the recipe ({recipe(opt)}) does not train "
                              f"{arch.name} on {bundle.name}; try a smaller --lr or --warmup-epochs "
                              "(nothing of this epoch was saved)")
        if val_acc > best:
            best, best_state = val_acc, snapshot(ann)
        t_val = time.time()
        metrics.add({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                     "train_acc": 100 * correct / max(seen, 1), "val_acc": val_acc,
                     "lr": optimizer.param_groups[0]["lr"], "seconds": t_val - t0})
        if rt.shows_progress:
            epoch_line("ANN", metrics.rows[-1], sched.epochs, seen)

        # Every epoch is saved; under a deadline, where epochs are short, at most once per
        # CHECKPOINT_SECONDS (VGG16's 0.5 GB took longer than its 1.5 s epoch on an H100) and last.
        saved = (rt.deadline is None or epoch + 1 >= sched.epochs or rt.out_of_time()
                 or t_val - saved_at >= CHECKPOINT_SECONDS)           # saved_at starts at -inf: the first is saved
        if saved:
            save_seconds, saved_at = save(epoch + 1), time.time()
        # Planned after the first epoch and again after each warm-up epoch (their learning
        # rate does not depend on the total, and the first carries one-off costs).
        if rt.deadline is not None and (epoch == start or epoch + 1 <= opt.warmup_epochs):
            steady = ((t_train - t_warm) * steps_per_epoch / (steps_per_epoch - WARM_STEPS) if t_warm
                      else t_train - t0) + (t_val - t_train)
            per_epoch = steady + save_seconds * min(1.0, steady / CHECKPOINT_SECONDS)
            sched = dataclasses.replace(opt, epochs=plan_epochs(opt.epochs, epoch + 1, per_epoch, rt.seconds_left()))
            if ranks.is_main:
                print(f"ANN: {per_epoch:.1f} s per epoch; the budget fits {sched.epochs} epochs "
                      f"(at most {opt.epochs})", flush=True)
            if epoch + 1 >= sched.epochs:      # the plan ends here: saved with the plan recorded
                save(epoch + 1)
                saved = True
        ranks.barrier()
        epoch += 1
    if not saved:                # stopped by the deadline after epochs not yet saved
        save(epoch)
        ranks.barrier()
    final = load_checkpoint(out)
    best_ann = final.model().to(device)
    final.metrics = {"best_val_acc": best, "test_acc": evaluate_ann(best_ann, bundle, device=device),
                     "epochs": epoch}
    if ranks.is_main:
        save_checkpoint(final, out)
    ranks.barrier()
    return final


WARM_STEPS = 10      # steps of an epoch not timed for the plan (cuDNN's search, allocator warm-up)
PLAN_STEPS = 3       # fine-tuning steps timed, after the first, to fit its warm-up to a deadline
CHECKPOINT_SECONDS = 60.0   # under a deadline, the ANN is saved at most this often (and at the end)


def fit_warmup(opt: OptimConfig, progress: float, step_seconds: float, seconds_left: float,
               steps_per_epoch: int) -> OptimConfig:
    """The recipe with its warm-up cut to a tenth of the training a deadline leaves (in
    epochs from 0): a CPU that fits a few dozen fine-tuning steps would otherwise spend
    them all at a tenth of the rate."""
    fits = progress + seconds_left / max(step_seconds, 1e-9) / steps_per_epoch
    return dataclasses.replace(opt, warmup_epochs=min(opt.warmup_epochs, 0.1 * fits))


def plan_epochs(most: int, done: int, epoch_seconds: float, seconds_left: float) -> int:
    """How many epochs in all fit a budget with ``seconds_left`` after ``done`` epochs of
    ``epoch_seconds`` each (at least ``done``, at most ``most``)."""
    fit = int(seconds_left // epoch_seconds) if epoch_seconds > 0 else most
    return max(done, min(most, done + fit))


def _save_stage(out, stage, arch, state_dict, bundle, snn_params, metrics, command, train_state, seed):
    ckpt = Checkpoint(stage=stage, arch=arch, state_dict=state_dict, data=data_record(bundle, seed), snn=snn_params,
                      metrics=metrics, provenance=provenance(command), train_state=train_state)
    return save_checkpoint(ckpt, out)


def firing_rates(snn: SNN, batch_size: int, timesteps: int) -> list[float]:
    """Spikes per neuron per step of each neuron layer in the last run."""
    return [s / (n * batch_size * timesteps) if n else 0.0 for s, n in zip(snn.spike_counts, snn.neuron_counts)]


def snn_loss(kind: str, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy, or Lee 2020's squared error against the one-hot label (summed over
    classes, averaged over the batch)."""
    if kind == "mse":
        return (logits - F.one_hot(y, logits.shape[1]).to(logits.dtype)).pow(2).sum(1).mean()
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)


def train_snn(bundle: DatasetBundle, init: Checkpoint, stage: str, timesteps: int, cfg: SNNTrainConfig, out: Path,
              rt: Runtime = Runtime()) -> Checkpoint:
    """STDB (``stage='stdb'``, from a converted checkpoint) or from scratch (``'scratch'``, and
    the baselines' ``'spikebp'`` and ``'bncurrent'``, ``trainer.methods``) at T steps.
    Past ``rt.deadline`` the epoch in hand ends early: validated, saved, and the stage stops."""
    if stage == "converted" or stage not in SNN_STAGES:
        raise ValueError(f"stage must be a trained one of {', '.join(SNN_STAGES)}, got {stage!r}")
    if init.snn is None:
        raise ValueError("initial checkpoint has no SNN parameters (convert it first)")
    out = Path(out)
    opt, seed, device, ranks = cfg.optim, rt.seed, rt.device, rt.ranks
    surrogate = cfg.surrogate or Surrogate(**init.snn.surrogate)
    leak = init.snn.leak if cfg.leak is None else float(cfg.leak)
    params = SNNParams(thresholds=list(init.snn.thresholds), leak=leak, timesteps=timesteps,
                       surrogate=surrogate.to_dict(), v_init=init.snn.v_init, encoding=init.snn.encoding)
    require_training_memory(init.arch, timesteps, opt.batch_size, cfg.window, device,
                            f"--timesteps {timesteps}, --batch-size {opt.batch_size}",
                            "fewer time steps, a smaller --batch-size or truncated BPTT (--bptt-window N) need less")
    torch.manual_seed(seed)
    train_part, val_part = validation_split(bundle, cfg.val_fraction, seed)
    ann = init.model().to(device)
    norms = CurrentNorms(init.arch).to(device) if cfg.current_norm else None
    snn = SNN(ann, params.thresholds, leak=leak, surrogate=surrogate, backend=cfg.backend, norms=norms,
              v_init=params.v_init, encoding=params.encoding)
    trainable = ann if norms is None else torch.nn.ModuleDict({"ann": ann, "norms": norms})
    optimizer = make_optimizer(trainable.parameters(), opt)
    config = run_config(stage, init.arch, {**cfg.to_dict(), "surrogate": surrogate.to_dict(), "leak": leak},
                        bundle, seed, timesteps=int(timesteps), init=weights_digest(init))
    state = resume(out, config, trainable, optimizer, rt.restart)
    if state is None:
        start_eval = evaluate_snn(snn, val_part, timesteps, window=cfg.eval_window, seed=seed, device=device,
                                  samples=cfg.val_samples)
        state = Progress(best=start_eval["accuracy"], best_state=snapshot(trainable))
    start, best, best_state = state.start, state.best, state.best_state
    lr_scale = state.train_state.get("lr_scale", 1.0)
    metrics = MetricsCSV(metrics_path(out), state.history, write=ranks.is_main)
    steps_per_epoch = num_batches(train_part, "train", opt.batch_size)
    generator = torch.Generator(device=device)
    sched, t_plan = opt, None           # under a deadline the warm-up is fitted to the steps that fit
    for epoch in range(start, opt.epochs):
        snn.train()
        generator.manual_seed(seed * 1000 + epoch)
        t0, loss_sum, correct, seen, grad_norms = time.time(), 0.0, 0, 0, []
        rates, layer_grads = np.zeros(len(snn.neurons)), {}       # per parameter: largest gradient norm
        bar = progress_bar(batches(train_part, "train", opt.batch_size, shuffle=True, seed=seed, epoch=epoch),
                           total=steps_per_epoch, desc=f"{stage.upper()} epoch {epoch + 1}/{opt.epochs} T={timesteps}",
                           unit="step", enabled=rt.shows_progress, end_line=False)
        stopped, trained = False, 0
        for step, (x, y) in enumerate(bar):
            if step and rt.out_of_time():
                stopped = True
                break
            if rt.deadline is not None and epoch == start and step in (1, 1 + PLAN_STEPS):
                if step == 1:
                    t_plan = time.time()
                else:
                    sched = fit_warmup(opt, epoch + step / steps_per_epoch, (time.time() - t_plan) / PLAN_STEPS,
                                       rt.seconds_left(), steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = opt.lr * lr_scale * lr_factor(sched, epoch + step / steps_per_epoch)
            x, y = x.to(device), ranks.shard(y).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss_value = 0.0
            with autocast(device, opt.precision):
                for _, logits in snn.run(x, timesteps, window=cfg.window, generator=generator, shard=ranks.shard):
                    loss = snn_loss(cfg.loss, logits.float(), y, opt.label_smoothing)
                    check_loss(loss, f"{out}: epoch {epoch + 1}, step {step + 1}")
                    loss.backward()
                    loss_value = float(loss.detach())
            ranks.average_gradients(trainable.parameters())
            for name, param in trainable.named_parameters():      # before clipping: where a gradient grows
                if param.grad is not None:
                    layer_grads[name] = max(layer_grads.get(name, 0.0), float(param.grad.norm()))
            norm = torch.nn.utils.clip_grad_norm_(trainable.parameters(),
                                                  opt.grad_clip if opt.grad_clip > 0 else math.inf)
            grad_norms.append(float(norm))
            if math.isfinite(float(norm)):
                optimizer.step()
            rates += np.asarray(firing_rates(snn, len(y), timesteps))
            trained += 1
            loss_sum += loss_value * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}", gnorm=f"{norm:.2g}")
        rates = np.asarray(ranks.sum(list(rates / max(trained, 1)))) / ranks.world
        loss_sum, correct, seen = ranks.sum([loss_sum, correct, seen])
        val = evaluate_snn(snn, val_part, timesteps, window=cfg.eval_window, seed=seed, device=device,
                           samples=cfg.val_samples)
        lr_used, event = optimizer.param_groups[0]["lr"], ""
        # A tie keeps the later, further-trained weights: on digits' 144 validation images STDB tied
        # its start in 4 of 8 epochs, and keeping the start kept 86.9 % (test) over the last epoch's 93.9 %.
        if val["accuracy"] >= best:
            best, best_state = val["accuracy"], snapshot(trainable)
            event = "best"
        elif math.isfinite(cfg.rollback_drop) and (val["accuracy"] < best - cfg.rollback_drop or min(rates) < 1e-5):
            # Collapse guard: back to the best weights, half the learning rate.
            trainable.load_state_dict(best_state)
            optimizer = make_optimizer(trainable.parameters(), opt)
            lr_scale *= 0.5
            event = "rollback"
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": 100 * correct / max(seen, 1),
               "val_acc": val["accuracy"], "lr": lr_used, "grad_norm_mean": float(np.mean(grad_norms)),
               "grad_norm_max": float(np.max(grad_norms)), "event": event, "seconds": time.time() - t0,
               "images": seen}
        row.update({f"rate_l{k}": float(r) for k, r in enumerate(rates)})
        row.update({f"grad_max_{name}": v for name, v in layer_grads.items()})
        metrics.add(row)
        if rt.shows_progress:
            epoch_line(stage.upper(), row, opt.epochs, seen)
        kept = best_state if cfg.keep_best else snapshot(trainable)
        arch, kept = (init.arch, kept) if norms is None else fold_norms(init.arch, kept)   # what deploys
        if ranks.is_main:
            _save_stage(out, stage, arch, kept, bundle, params, {"best_val_acc": best}, rt.command,
                        {"epoch": epoch + 1, "last_state_dict": trainable.state_dict(),
                         "optimizer": optimizer.state_dict(),
                         "best_metric": best, "history": metrics.rows, "lr_scale": lr_scale, "config": config,
                         **({} if norms is None else {"best_state_dict": best_state})}, seed)
            metrics.flush()
        ranks.barrier()
        if stopped:
            if ranks.is_main:
                print(f"{stage.upper()}: the stage's time is spent after {seen} images of epoch {epoch + 1}; "
                      f"keeping the best (validation {best:.2f} %)", flush=True)
            break
    return load_checkpoint(out)
