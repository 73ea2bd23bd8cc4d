"""The one checkpoint format for every stage (ANN, converted, STDB, from-scratch).

A checkpoint is a ``torch.save`` of plain containers and tensors, read back with
``weights_only=True`` so that a file from a colleague cannot execute code:

    format, version, stage, arch (ArchConfig dict), state_dict,
    snn: {thresholds, leak, timesteps, surrogate[, v_init, encoding]} (None for a plain ANN),
    data: {dataset, data_root, normalisation, class_names, input_shape},
    metrics: {...}, provenance: {command, version, created, torch},
    train_state: {epoch, optimizer, scheduler, best_metric, ...} (resume; optional)
"""
from __future__ import annotations

import errno
import math
import os
import pickle
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from records.atomic import WriteError, atomic_file, settle
from records.cli import one_line
from records.dataref import DataRef
from records.encoding import RULES, Normalisation
from records.header import RecordError, check_header, header
from records.layout import ANN_STAGES, STAGES
from records.timesteps import check_timesteps
from trainer.models import ANN, ArchConfig, ArchError, neuron_layers
from trainer.lif import Surrogate
from trainer.weight_grid import MAX_BITS, MIN_BITS

FORMAT = "hybrid-snn-checkpoint"
VERSION = 1
OLDEST_READABLE = 1
PACKAGE_VERSION = "0.1.0"


class CheckpointError(RecordError):
    """A checkpoint that is missing, corrupt, foreign, too new, or inconsistent."""


@dataclass
class SNNParams:
    """Everything beyond the weights that defines the spiking network: thresholds per neuron
    layer, leak, T, the fine-tuning surrogate, each neuron layer's initial potential as a
    fraction of its threshold (``v_init``; None: all start at rest, 0), the input
    encoding's rule (``records.encoding``) and the weight grid the network computes on
    (``weight_bits``, ``trainer.weight_grid``; None: float weights)."""
    thresholds: list[float]
    leak: float = 1.0
    timesteps: int = 100
    surrogate: dict = field(default_factory=lambda: {"kind": "stdb", "alpha": 0.3, "beta": 0.01})
    v_init: list[float] | None = None
    encoding: str = "poisson"
    weight_bits: int | None = None

    def to_dict(self) -> dict:
        d = {"thresholds": [float(v) for v in self.thresholds], "leak": float(self.leak),
             "timesteps": int(self.timesteps), "surrogate": dict(self.surrogate)}
        if self.v_init is not None or self.encoding != "poisson":    # absent: the paper's (files of before them)
            d.update(v_init=None if self.v_init is None else [float(v) for v in self.v_init], encoding=self.encoding)
        if self.weight_bits is not None:                             # absent: float weights (files of before it)
            d["weight_bits"] = int(self.weight_bits)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SNNParams":
        """Read as written: a threshold "1.5", a T of 4.9 or a leak of true is an error
        (ValueError), never converted."""
        def number(name, v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"SNN {name} must be a number, got {v!r}")
            return float(v)

        def numbers(name, vs):
            if not isinstance(vs, (list, tuple)):
                raise ValueError(f"SNN {name} must be a list of numbers, got {vs!r}")
            return [number(name, v) for v in vs]

        t, v_init, encoding, bits = d["timesteps"], d.get("v_init"), d.get("encoding", "poisson"), d.get("weight_bits")
        t = check_timesteps(t, "SNN timesteps", ValueError)
        if not isinstance(encoding, str) or not isinstance(d["surrogate"], dict):
            raise ValueError(f"SNN encoding must be a name and surrogate a dict, got {encoding!r}, "
                             f"{d['surrogate']!r}")
        if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS):
            raise ValueError(f"SNN weight_bits must be an integer in {MIN_BITS}..{MAX_BITS} or absent, got {bits!r}")
        return cls(thresholds=numbers("thresholds", d["thresholds"]), leak=number("leak", d["leak"]),
                   timesteps=t, surrogate=dict(d["surrogate"]),
                   v_init=None if v_init is None else numbers("v_init", v_init), encoding=encoding, weight_bits=bits)


@dataclass
class Checkpoint:
    stage: str
    arch: ArchConfig
    state_dict: dict
    data: dict
    snn: SNNParams | None = None
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    train_state: dict | None = None

    @property
    def normalisation(self) -> Normalisation:
        return Normalisation.from_dict(self.data["normalisation"])

    @property
    def data_ref(self) -> DataRef:
        """Where the training and test data came from (to reload the same split)."""
        return DataRef(dataset=self.data["dataset"], root=self.data.get("data_root"),
                       seed=int(self.data.get("seed", 0)), image_size=self.data.get("image_size"))

    def model(self) -> ANN:
        """The ANN module with these weights (the SNN wraps the same module)."""
        model = ANN(self.arch)
        model.load_state_dict(self.state_dict)
        return model


def provenance(command: list[str] | None = None) -> dict:
    return {"command": " ".join(command if command is not None else sys.argv),
            "version": PACKAGE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "torch": str(torch.__version__)}


def save_checkpoint(ckpt: Checkpoint, path: str | os.PathLike) -> Path:
    """Validate, then write atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    _validate(ckpt, f"{path} (not written)")
    payload = {
        **header(FORMAT, VERSION), "stage": ckpt.stage, "arch": ckpt.arch.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()},
        "snn": ckpt.snn.to_dict() if ckpt.snn is not None else None,
        "data": ckpt.data, "metrics": ckpt.metrics,
        "provenance": ckpt.provenance or provenance(), "train_state": ckpt.train_state,
    }
    try:
        with atomic_file(path) as f:
            torch.save(payload, f)
    except RuntimeError as exc:       # torch's zip writer on a full disk: "[enforce fail at inline_container.cc...]"
        raise WriteError(errno.EIO, f"cannot write ({one_line(str(exc))[:120]}); nothing was changed",
                         str(path)) from None
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate; every problem is a CheckpointError that names the file."""
    path = Path(path)
    settle(path.parent)
    if not path.is_file():
        raise CheckpointError(f"{path}: {'is a folder, not a' if path.is_dir() else 'no such'} checkpoint file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch zip archive: "
                              "a truncated copy, random bytes or another kind of file)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, i.e. running the file's code: never.
        raise CheckpointError(f"{path}: refused: it holds Python objects beyond tensors and plain containers "
                              "(loading them could run code); only checkpoints this toolchain wrote are read"
                              ) from None
    except Exception as exc:  # torch raises many types for corrupt archives
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt archive: {type(exc).__name__})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file (a foreign or plain state_dict checkpoint?)")
    try:
        check_header(raw, FORMAT, VERSION, OLDEST_READABLE, CheckpointError, rerun="re-train it")
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        arch = ArchConfig.from_dict(raw["arch"])
        ckpt = Checkpoint(stage=raw["stage"], arch=arch, state_dict=raw["state_dict"], data=raw["data"],
                          snn=SNNParams.from_dict(raw["snn"]) if raw.get("snn") is not None else None,
                          metrics=raw.get("metrics") or {}, provenance=raw.get("provenance") or {},
                          train_state=raw.get("train_state"))
    except ArchError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: malformed checkpoint ({type(exc).__name__}: {exc})") from None
    _validate(ckpt, str(path))
    return ckpt


def _validate(ckpt: Checkpoint, where: str) -> None:
    if ckpt.stage not in STAGES:
        raise CheckpointError(f"{where}: unknown stage {ckpt.stage!r} (one of {', '.join(STAGES)})")
    with torch.device("meta"):        # shapes only: a config that declares huge layers allocates nothing
        declared = ANN(ckpt.arch).state_dict()
    biases = sorted(k for k in ckpt.state_dict if k.endswith(".bias") and k not in declared)
    if biases:
        raise CheckpointError(f"{where}: {biases[0]} is a bias its layer does not declare; SNN-friendly layers "
                              "are bias-free (only a folded batch norm gives a layer \"bias\": true)")
    norms = sorted(k for k in ckpt.state_dict if "running_mean" in k or "running_var" in k)
    if norms and (ckpt.stage not in ANN_STAGES or norms[0] not in declared):
        raise CheckpointError(f"{where}: {norms[0]} belongs to a batch norm, which the SNN cannot use "
                              "(an ANN's declared batch norms are folded at conversion)")
    for k, v in ckpt.state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: {k} is not a tensor")
        if k.endswith(".num_batches_tracked") and k in declared:
            continue                           # a batch norm's step counter (an integer)
        if not v.is_floating_point():
            raise CheckpointError(f"{where}: {k} holds {v.dtype} values; weights are floating point")
        if not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{where}: {k} holds {bad} non-finite value(s) (a diverged run?)")
    expected = {k: tuple(v.shape) for k, v in declared.items()}
    got = {k: tuple(v.shape) for k, v in ckpt.state_dict.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        detail = "; ".join(s for s in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
            f"shape of {wrong[0]} is {got[wrong[0]]}, config needs {expected[wrong[0]]}" if wrong else "") if s)
        raise CheckpointError(f"{where}: weights do not fit the {ckpt.arch.name} config ({detail})")
    for key in ("dataset", "normalisation", "class_names"):
        if key not in ckpt.data:
            raise CheckpointError(f"{where}: data record lacks {key!r}")
    names = ckpt.data["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{where}: data record's class_names must be a list of strings")
    if len(names) != ckpt.arch.num_classes:
        raise CheckpointError(f"{where}: {len(names)} class names for {ckpt.arch.num_classes} classes")
    try:
        norm = Normalisation.from_dict(ckpt.data["normalisation"])
    except (RecordError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{where}: data record's normalisation: {exc}") from None
    if norm.channels != ckpt.arch.input_shape[0]:
        raise CheckpointError(f"{where}: normalisation has {norm.channels} channels, the network's input "
                              f"{ckpt.arch.input_shape[0]}")
    if ckpt.stage not in ANN_STAGES:
        if ckpt.snn is None:
            raise CheckpointError(f"{where}: stage {ckpt.stage!r} needs SNN parameters (thresholds, leak, T)")
    if ckpt.snn is not None:
        n = len(neuron_layers(ckpt.arch))
        if len(ckpt.snn.thresholds) != n:
            raise CheckpointError(f"{where}: {len(ckpt.snn.thresholds)} thresholds for {n} neuron layers")
        if any(not (0 < v < math.inf) for v in ckpt.snn.thresholds):
            raise CheckpointError(f"{where}: thresholds must be positive and finite, got {ckpt.snn.thresholds}")
        if not 0.0 < ckpt.snn.leak <= 1.0:
            raise CheckpointError(f"{where}: leak must be in (0, 1]")
        check_timesteps(ckpt.snn.timesteps, f"{where}: SNN timesteps", CheckpointError)
        if ckpt.snn.encoding not in RULES:
            raise CheckpointError(f"{where}: unknown input encoding {ckpt.snn.encoding!r} (one of {', '.join(RULES)})")
        if ckpt.snn.v_init is not None and (len(ckpt.snn.v_init) != n or not all(
                math.isfinite(v) and 0 <= v <= 1 for v in ckpt.snn.v_init)):
            raise CheckpointError(f"{where}: v_init needs {n} fractions of the thresholds in [0, 1], got "
                                  f"{ckpt.snn.v_init}")
        try:
            Surrogate(**ckpt.snn.surrogate)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: SNN surrogate {ckpt.snn.surrogate!r}: {exc}") from None
