"""Seeded Poisson inputs and the inputs file that replays them.

The spike trains are a pure function of (images, seed, T) and the graph's input
encoding (``export.graph.InputEncoding.encode``, the one definition of the rule), so
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
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.files import atomic_file

FORMAT = "hybrid-snn-hwsim-inputs"
VERSION = 1


class InputsError(ValueError):
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
        self.seed, self.timesteps = int(self.seed), int(self.timesteps)
        if self.timesteps < 1:
            raise InputsError(f"timesteps must be >= 1, got {self.timesteps}")
        self.class_names = [str(c) for c in self.class_names]

    @property
    def samples(self) -> int:
        return len(self.images)

    def digest(self) -> str:
        h = hashlib.sha256()
        for a in (self.images, self.labels):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def spikes(self, graph, first: int = 0, count: int | None = None) -> np.ndarray:
        """Spike trains (T, n, C, H, W) int8 of samples [first, first + count)."""
        stop = self.samples if count is None else min(self.samples, first + count)
        return encode(graph, self.images[first:stop], self.timesteps, self.seed, first_index=first)


def encode(graph, images: np.ndarray, timesteps: int, seed: int, first_index: int = 0) -> np.ndarray:
    """Seeded Poisson trains of ``images``: exactly ``graph.input.encode`` (sample i of the
    whole set uses the generator ``[seed, first_index + i]``, so chunking never changes a train)."""
    return graph.input.encode(np.asarray(images, dtype=np.uint8), int(timesteps), int(seed), first_index)


def inputs_to_bytes(inputs: InputSet) -> bytes:
    """The inputs file's content (for writers that place it atomically with other files)."""
    header = {"format": FORMAT, "version": VERSION, "seed": inputs.seed, "timesteps": inputs.timesteps,
              "samples": inputs.samples, "image_shape": list(inputs.images.shape[1:]),
              "dataset": inputs.dataset, "class_names": inputs.class_names, "sha256": inputs.digest()}
    buf = io.BytesIO()
    np.savez_compressed(buf, __inputs__=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
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
    path = Path(path)
    if not path.is_file():
        raise InputsError(f"{path}: no such inputs file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "__inputs__" not in data.files:
                raise InputsError("not an hwsim inputs file (no __inputs__ header)")
            header = json.loads(bytes(data["__inputs__"]).decode())
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise InputsError(f"format {header.get('format') if isinstance(header, dict) else None!r} "
                                  f"is not {FORMAT!r}")
            version = header.get("version")
            if not isinstance(version, int) or isinstance(version, bool):
                raise InputsError(f"version {version!r} is not an integer")
            if version > VERSION:
                raise InputsError(f"version {version} is newer than this reader ({VERSION}); upgrade hwsim")
            if version < 1:
                raise InputsError(f"unknown version {version}")
            for key in ("images", "labels"):
                if key not in data.files:
                    raise InputsError(f"array {key!r} is missing")
            inputs = InputSet(images=data["images"], labels=data["labels"], seed=header["seed"],
                              timesteps=header["timesteps"], dataset=header.get("dataset", ""),
                              class_names=header.get("class_names", []))
            if header.get("samples") != inputs.samples or header.get("image_shape") != list(inputs.images.shape[1:]):
                raise InputsError("header does not match the arrays (samples / image shape)")
            if header.get("sha256") != inputs.digest():
                raise InputsError("checksum mismatch: the arrays are corrupt")
            return inputs
    except InputsError as exc:
        raise InputsError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, TypeError, EOFError,
            json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputsError(f"{path}: corrupt or foreign inputs file ({type(exc).__name__}: {exc})") from None
