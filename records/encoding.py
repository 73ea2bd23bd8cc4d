"""The input encoding, defined once: normalisation and signed rate coding by one of two rules.

    x = clip((pixel / 255 - mean[c]) / std[c], -clip, clip)          (Normalisation.apply)
    "poisson":   at every step a pixel emits sign(x) when a fresh uniform number in [0, 1) is below |x|
    "integrate": a pixel emits sign(x) at step t (0-based) when c(t + 1) > c(t),
                 c(t) = floor(t * |x| + 1/2): the spikes of an IF input neuron of threshold 1
                 that starts at 1/2 and receives |x| per step (a bias-driven input neuron),
                 so that T steps deliver sign(x) * floor(T * |x| + 1/2) spikes, evenly spread

The Poisson rule is the paper's; the integrate rule is deterministic and carries a
pixel's value in few steps with a rounding error of at most 1 / (2T) (the low-latency
recipe, ``trainer.qcfs``). The same rules run in torch (training, conversion:
``poisson_spikes`` with a torch generator, ``integrate_spikes``) and in numpy (export,
hwsim, ONNX users: ``InputEncoding.encode``, where the Poisson rule's uniform numbers of
sample ``i`` come from ``numpy.random.default_rng([seed, i])`` as float32 of shape (T, C, H, W),
so a sample's train does not depend on batching). The integrate rule computes c(t) in
float32 in both (one product, one sum: the same roundings), so both give the same spikes.
Every checkpoint records its ``Normalisation`` (and an SNN its rule); every core graph its
``InputEncoding`` (the normalisation, the input shape and the rule). docs/method.md explains
the choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from records.header import RecordError


RULES = ("poisson", "integrate")


class EncodingError(RecordError):
    """A normalisation or input encoding that cannot be applied (bad numbers or shapes)."""


@dataclass(frozen=True)
class Normalisation:
    """x_norm = clip((x01 - mean[c]) / std[c], -clip, clip), with x01 = pixel / 255."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip: float = 1.0

    def __post_init__(self) -> None:
        try:
            mean = tuple(float(m) for m in np.asarray(self.mean).reshape(-1))
            std = tuple(float(s) for s in np.asarray(self.std).reshape(-1))
            clip = float(self.clip)
        except (TypeError, ValueError) as exc:
            raise EncodingError(f"Normalisation: mean, std and clip must be numbers ({exc})") from None
        if not mean or len(mean) != len(std):
            raise EncodingError(f"Normalisation: mean {mean} and std {std} need the same, non-zero length")
        if not all(math.isfinite(m) for m in mean):
            raise EncodingError(f"Normalisation: mean {mean} must be finite")
        if not all(math.isfinite(s) and s > 0 for s in std):
            raise EncodingError(f"Normalisation: std {std} must be finite and > 0")
        if not (math.isfinite(clip) and clip > 0):
            raise EncodingError(f"Normalisation: clip {clip} must be finite and > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "clip", clip)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def apply(self, x):
        """Normalise (N, C, H, W) images: a numpy array of uint8 pixels (float32 result), or a
        torch tensor of uint8 pixels or floats in [0, 1] (float32 tensor on x's device)."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise EncodingError(f"Normalisation: expected (N, {self.channels}, H, W) input, got {tuple(x.shape)}")
        if isinstance(x, np.ndarray):
            x01 = x.astype(np.float32) / np.float32(255.0)
            mean = np.asarray(self.mean, dtype=np.float32)[None, :, None, None]
            std = np.asarray(self.std, dtype=np.float32)[None, :, None, None]
            return np.clip((x01 - mean) / std, -self.clip, self.clip).astype(np.float32)
        import torch

        x01 = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
        return ((x01 - mean) / std).clamp_(-self.clip, self.clip)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        """Rebuild from ``to_dict`` output (e.g. a checkpoint); validates as the constructor does."""
        try:
            return cls(mean=tuple(d["mean"]), std=tuple(d["std"]), clip=d.get("clip", 1.0))
        except (KeyError, TypeError, AttributeError):
            raise EncodingError(f"Normalisation: need 'mean' and 'std' lists, got {d!r}") from None


def poisson_spikes(x, steps: int, generator=None):
    """torch: (steps, *x.shape) signed spikes of normalised x: sign(x) where uniform < |x|."""
    import torch

    r = torch.rand((steps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return (r < x.abs()).to(x.dtype) * torch.sign(x)


def integrate_spikes(x, t0: int, steps: int):
    """torch: (steps, *x.shape) signed spikes of normalised x at steps t0 .. t0 + steps - 1
    by the integrate rule (module docstring)."""
    import torch

    t = torch.arange(t0, t0 + steps + 1, dtype=torch.float32, device=x.device).view(-1, *([1] * x.dim()))
    counts = torch.floor(t * x.abs().float() + 0.5)
    return ((counts[1:] - counts[:-1]) * torch.sign(x.float())).to(x.dtype)


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise EncodingError(f"unknown input encoding rule {rule!r} (one of {', '.join(RULES)})")
    return rule


@dataclass(frozen=True)
class InputEncoding:
    """What a core graph's input neurons do: the normalisation of a (C, H, W) image and
    the signed rate-coding ``rule`` (module docstring; Poisson with per-sample seeded
    generators, or the deterministic integrate rule)."""

    shape: tuple[int, int, int]
    normalisation: Normalisation
    rule: str = "poisson"

    def __post_init__(self):
        check_rule(self.rule)
        try:
            shape = tuple(int(v) for v in self.shape)
        except (TypeError, ValueError):
            raise EncodingError(f"input shape must be (C, H, W) integers, got {self.shape!r}") from None
        if len(shape) != 3 or min(shape) < 1:
            raise EncodingError(f"input shape must be (C, H, W), got {shape}")
        if self.normalisation.channels != shape[0]:
            raise EncodingError(f"input normalisation has {self.normalisation.channels} channels for "
                                f"{shape[0]} input channels")
        object.__setattr__(self, "shape", shape)

    @classmethod
    def of(cls, shape, mean, std, clip: float = 1.0, rule: str = "poisson") -> "InputEncoding":
        return cls(shape, Normalisation(mean, std, clip), rule)

    def encode(self, images: np.ndarray, timesteps: int, seed: int, first_index: int = 0) -> np.ndarray:
        """Spike trains (T, N, C, H, W) int8 in {-1, 0, 1} of images (N, C, H, W) uint8;
        by the Poisson rule sample j uses the generator ``[seed, first_index + j]``."""
        images = np.asarray(images)
        if images.shape[1:] != self.shape:
            raise EncodingError(f"images of shape {images.shape[1:]} do not fit the input {self.shape}")
        x = self.normalisation.apply(images)
        if self.rule == "integrate":
            t = np.arange(timesteps + 1, dtype=np.float32).reshape(-1, *([1] * x.ndim))
            counts = np.floor(t * np.abs(x) + np.float32(0.5))
            return (np.diff(counts, axis=0) * np.sign(x)).astype(np.int8)
        out = np.empty((timesteps, len(images), *self.shape), dtype=np.int8)
        for j, xi in enumerate(x):
            u = np.random.default_rng([seed, first_index + j]).random((timesteps, *self.shape), dtype=np.float32)
            out[:, j] = (u < np.abs(xi)) * np.sign(xi).astype(np.int8)
        return out

    def to_json(self) -> dict:
        return {"shape": list(self.shape), **self.normalisation.to_dict(), "rule": self.rule}

    @classmethod
    def from_json(cls, d: dict) -> "InputEncoding":
        """Rebuild from ``to_json`` output; a record without "rule" (written before it) is Poisson."""
        try:
            return cls(d["shape"], Normalisation.from_dict(d), d.get("rule", "poisson"))
        except (KeyError, TypeError):
            raise EncodingError(f"input encoding needs 'shape', 'mean' and 'std', got {d!r}") from None
