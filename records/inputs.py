"""hwsim's inputs file: what replays the same Poisson inputs into every network compared.

The spike trains are a pure function of (images, seed, T) and the graph's input
encoding (``records.encoding.InputEncoding.encode``, the one definition of the rule), so
an inputs file stores only those: uint8 test images, their labels, the seed and T.
Every network compared against the same file sees identical trains (iso conditions).

File: one ``.npz`` (no pickle) with a JSON header under ``__inputs__`` (format name,
version, seed, timesteps, shapes, a SHA-256 of the arrays) and the arrays ``images``
(N, C, H, W) uint8 and ``labels`` (N,) int64. Written atomically; ``load_inputs``
validates everything and names the file in every error.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from records.atomic import atomic_file
from records.header import RecordError, header, npz_header, read_npz_record
from records.timesteps import check_timesteps

FORMAT = "hybrid-snn-hwsim-inputs"
VERSION = 1
OLDEST_READABLE = 1


class InputsError(RecordError):
    """An inputs file that is missing, corrupt, of another format or a newer version."""


@dataclass
class InputSet:
    images: np.ndarray          # (N, C, H, W) uint8
    labels: np.ndarray          # (N,) int64
    seed: int
    timesteps: int
    dataset: str = ""
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise InputsError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer) or self.labels.shape != (len(self.images),):
            raise InputsError(f"labels must be {len(self.images)} integers, got {self.labels.dtype} "
                              f"{self.labels.shape}")
        self.labels = self.labels.astype(np.int64)
        self.timesteps = check_timesteps(self.timesteps, "timesteps", InputsError)
        if isinstance(self.seed, (bool, np.bool_)) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputsError(f"seed must be an integer >= 0, got {self.seed!r}")
        self.seed = int(self.seed)
        self.class_names = [str(c) for c in self.class_names]
        if len(self.labels) and (self.labels.min() < 0 or
                                 (self.class_names and self.labels.max() >= len(self.class_names))):
            raise InputsError(f"labels must lie in 0..{len(self.class_names) - 1 if self.class_names else 'N'}, "
                              f"got {self.labels.min()}..{self.labels.max()}")

    @property
    def samples(self) -> int:
        return len(self.images)

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.images, self.labels):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()



def inputs_to_bytes(inputs: InputSet) -> bytes:
    """The inputs file's content (for writers that place it atomically with other files)."""
    head = {**header(FORMAT, VERSION), "seed": inputs.seed, "timesteps": inputs.timesteps,
            "samples": inputs.samples, "image_shape": list(inputs.images.shape[1:]),
            "dataset": inputs.dataset, "class_names": inputs.class_names, "sha256": inputs.digest()}
    buf = io.BytesIO()
    np.savez_compressed(buf, __inputs__=np.frombuffer(json.dumps(head).encode(), dtype=np.uint8),
                        images=np.ascontiguousarray(inputs.images), labels=inputs.labels.astype(np.int64))
    return buf.getvalue()


def save_inputs(path: str | os.PathLike, inputs: InputSet) -> Path:
    """Write atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    content = inputs_to_bytes(inputs)
    with atomic_file(path) as f:
        f.write(content)
    return path


def load_inputs(path: str | os.PathLike) -> InputSet:
    def parse(data) -> InputSet:
        head = npz_header(data, "__inputs__", FORMAT, VERSION, OLDEST_READABLE, InputsError,
                          "an hwsim inputs file", "re-run hwsim")
        for key in ("images", "labels"):
            if key not in data.files:
                raise InputsError(f"array {key!r} is missing")
        inputs = InputSet(images=data["images"], labels=data["labels"], seed=head["seed"],
                          timesteps=head["timesteps"], dataset=head.get("dataset", ""),
                          class_names=head.get("class_names", []))
        if head.get("samples") != inputs.samples or head.get("image_shape") != list(inputs.images.shape[1:]):
            raise InputsError("header does not match the arrays (samples / image shape)")
        if head.get("sha256") != inputs.digest():
            raise InputsError("checksum mismatch: the arrays are corrupt")
        return inputs
    return read_npz_record(path, "inputs file", InputsError, parse)
