"""The time-step counts of a run, decided once and handed to every stage.

``python -m pipeline`` builds one ``TimeSteps`` from its command line (or the data set's
defaults): the trainer fine-tunes and tests at ``reduced`` and evaluates the conversion
at ``large``; export quantizes for ``reduced`` and sizes the output accumulator for
``calibration`` (the largest T hwsim will run); hwsim runs at ``reduced`` and at every
point of ``sweep``; the trainer summary records it, and the report reads it from there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from records.header import RecordError

# The most steps any command runs: 40 times the paper's largest T (2,500). Larger asks for
# hours per image before anything is written, so every option and file is checked against it.
MAX_TIMESTEPS = 100_000


def check_timesteps(value, where: str, error: type[ValueError] = RecordError) -> int:
    """``value`` as a T: an integer (Python's or numpy's, never a bool or a float) in
    1..MAX_TIMESTEPS, returned as an int, else ``error`` naming ``where``. Every T of an
    option, a checkpoint, a graph, an inputs file or a sweep passes here."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or not 1 <= value <= MAX_TIMESTEPS:
        raise error(f"{where}: T must be an integer in 1..{MAX_TIMESTEPS:,}, got {value!r}")
    return int(value)


def default_sweep(reduced: int, large: int) -> tuple[int, ...]:
    """Powers of two below the large T, plus both Ts: the accuracy-vs-T trade-off."""
    return tuple(sorted({reduced, large} | {2 ** k for k in range(12) if 2 ** k < large}))


@dataclass(frozen=True)
class TimeSteps:
    reduced: int                     # T of fine-tuning, export and hwsim (the paper's "reduced T")
    large: int                       # T at which the converted network is also evaluated
    sweep: tuple[int, ...] = ()      # T values of the accuracy-vs-T sweep (default: default_sweep)

    def __post_init__(self):
        for name in ("reduced", "large"):
            check_timesteps(getattr(self, name), f"timesteps: {name}")
        sweep = tuple(self.sweep) or default_sweep(self.reduced, self.large)
        for t in sweep:
            check_timesteps(t, "timesteps: sweep")
        object.__setattr__(self, "sweep", tuple(sorted(set(sweep))))

    @property
    def calibration(self) -> int:
        """The largest T any stage runs the exported graph at."""
        return max((self.reduced, *self.sweep))

    def with_reduced(self, reduced: int) -> "TimeSteps":
        """These steps with a lower reduced T; the sweep's points above it, up to the old
        one, go with it (a budget's sweep ends at the reduced T)."""
        if not 1 <= reduced <= self.reduced:
            raise ValueError(f"a lowered reduced T must be in 1..{self.reduced}, got {reduced}")
        sweep = {t for t in self.sweep if t < reduced or t > self.reduced} | {reduced}
        return TimeSteps(reduced=reduced, large=self.large, sweep=tuple(sweep))

    def to_dict(self) -> dict:
        return {"reduced": self.reduced, "large": self.large, "sweep": list(self.sweep)}

    @classmethod
    def from_dict(cls, d: dict) -> "TimeSteps":
        try:
            return cls(reduced=d["reduced"], large=d["large"], sweep=tuple(d.get("sweep") or ()))
        except (KeyError, TypeError, AttributeError):
            raise RecordError(f"malformed time steps {d!r}") from None
