"""A training run's state on disk: what it resumes from, saved and read in one place.

Every epoch's checkpoint (``trainer.checkpoint.Checkpoint``) holds the best weights so far
and, in its ``train_state``, a ``TrainingState``: the epoch reached, the latest weights and
optimizer, the best metric (and the best weights where the deployed ones differ), the
per-epoch metrics, the learning-rate scale of roll-backs, the epochs a deadline planned,
and the run's configuration (``run_config``), which a resumed run must match. Random
draws are seeded per epoch from the run's seed (shuffling, dropout, Poisson inputs), so
the epoch number restores them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from records.atomic import atomic_file
from records.table import csv_text
from trainer.checkpoint import Checkpoint, load_checkpoint
from trainer.data import DatasetBundle
from trainer.models import ArchConfig


@dataclass
class TrainingState:
    """Where a training loop stands after ``epoch`` finished epochs."""
    epoch: int = 0
    best_metric: float = -1.0
    best_state: dict | None = None       # None: the checkpoint's own weights are the best
    history: list = field(default_factory=list)
    last_state: dict | None = None       # the trainable modules' weights after the last epoch
    optimizer: dict | None = None
    config: dict | None = None
    lr_scale: float = 1.0                # halved by each roll-back
    planned_epochs: float | None = None  # the epochs a deadline fits (None: the recipe's; fine-tuning's
    #                                      plan may end inside an epoch)

    def to_dict(self, keep_best_state: bool) -> dict:
        """The checkpoint's ``train_state``; ``keep_best_state`` where the best weights are
        not the checkpoint's own (the deployed ones are folded)."""
        d = {"epoch": self.epoch, "last_state_dict": self.last_state, "optimizer": self.optimizer,
             "best_metric": self.best_metric, "history": self.history, "lr_scale": self.lr_scale,
             "config": self.config}
        if self.planned_epochs is not None:
            d["planned_epochs"] = self.planned_epochs
        if keep_best_state:
            d["best_state_dict"] = self.best_state
        return d

    @classmethod
    def of_checkpoint(cls, ckpt: Checkpoint) -> "TrainingState":
        ts = ckpt.train_state
        return cls(epoch=ts["epoch"], best_metric=ts["best_metric"], best_state=ts.get("best_state_dict", ckpt.state_dict),
                   history=ts["history"], last_state=ts["last_state_dict"], optimizer=ts["optimizer"],
                   config=ts["config"], lr_scale=ts.get("lr_scale", 1.0), planned_epochs=ts.get("planned_epochs"))


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


def resume(out: Path, config: dict, model: torch.nn.Module, optimizer, restart: bool = False
           ) -> TrainingState | None:
    """Load an interrupted (or finished) run from ``out`` into ``model`` and ``optimizer``
    when it was started with the same ``config``; None when there is none (or ``restart``).
    A run of another configuration is refused, naming the settings that differ."""
    if restart or not out.exists():
        return None
    ckpt, wanted = load_checkpoint(out), config
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
    state = dataclasses.replace(TrainingState.of_checkpoint(ckpt), config=wanted)
    model.load_state_dict(state.last_state)
    optimizer.load_state_dict(state.optimizer)
    return state


def _short(v) -> str:
    text = json.dumps(v) if isinstance(v, (dict, list)) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def snapshot(module: torch.nn.Module) -> dict:
    """A CPU copy of the weights, unaffected by later optimizer steps."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


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
