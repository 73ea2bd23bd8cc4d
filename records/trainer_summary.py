"""What ``python -m trainer chain`` measured: ``<run>/trainer_summary.json``.

::

    {"format": "hybrid-snn-trainer-summary", "version": 2,
     "dataset", "arch", "surrogate",
     "timesteps": {"reduced", "large", "sweep"},                   (records.timesteps)
     "accuracy": [{"stage", "timesteps", "accuracy", "samples"}],  float network, percent;
                                                                   timesteps null for the ANN;
                                                                   samples: the test images it
                                                                   was measured on (version 1: none)
     "seconds": {step: wall seconds}}

The report reads the float accuracies from here (beside hwsim's fixed-point ones) and
matches them to hwsim's networks by stage and T, never by label.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from records.header import RecordError, check_header, finite_number, header, read_json_record, write_json_record
from records.layout import ANN_STAGES, STAGES
from records.timesteps import TimeSteps

FORMAT = "hybrid-snn-trainer-summary"
VERSION = 2
OLDEST_READABLE = 1


class SummaryError(RecordError):
    """A trainer summary that is missing, corrupt, of another format or inconsistent."""


@dataclass(frozen=True)
class StageAccuracy:
    stage: str
    timesteps: int | None        # None: the ANN
    accuracy: float              # percent
    samples: int | None = None   # test images it was measured on (None: not recorded)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise SummaryError(f"accuracy of unknown stage {self.stage!r}")
        if (self.stage in ANN_STAGES) != (self.timesteps is None):
            raise SummaryError(f"{self.stage}: the ANN has no T, every SNN stage has one")
        if self.timesteps is not None and (isinstance(self.timesteps, bool) or not isinstance(self.timesteps, int)
                                           or self.timesteps < 1):
            raise SummaryError(f"{self.stage}: T must be an integer >= 1, got {self.timesteps!r}")
        if not finite_number(self.accuracy) or not 0 <= self.accuracy <= 100:
            raise SummaryError(f"{self.stage} T={self.timesteps}: accuracy {self.accuracy!r} is not a percentage")
        if self.samples is not None and (isinstance(self.samples, bool) or not isinstance(self.samples, int)
                                         or self.samples < 1):
            raise SummaryError(f"{self.stage} T={self.timesteps}: samples must be an integer >= 1, "
                               f"got {self.samples!r}")


@dataclass
class TrainerSummary:
    dataset: str
    arch: str
    timesteps: TimeSteps
    surrogate: str
    accuracies: list[StageAccuracy] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for k in ("dataset", "arch", "surrogate"):
            if not isinstance(getattr(self, k), str):
                raise SummaryError(f"{k!r} must be a string")
        if any(not finite_number(v) or v < 0 for v in self.seconds.values()):
            raise SummaryError(f"seconds must be finite and >= 0, got {self.seconds}")

    def accuracy(self, stage: str, timesteps: int | None = None) -> float | None:
        """The float accuracy (percent) of a stage at T (the ANN: no T), or None."""
        for a in self.accuracies:
            if a.stage == stage and a.timesteps == timesteps:
                return a.accuracy
        return None

    def to_dict(self) -> dict:
        return {**header(FORMAT, VERSION), "dataset": self.dataset, "arch": self.arch,
                "surrogate": self.surrogate, "timesteps": self.timesteps.to_dict(),
                "accuracy": [{"stage": a.stage, "timesteps": a.timesteps, "accuracy": a.accuracy,
                              "samples": a.samples} for a in self.accuracies],
                "seconds": dict(self.seconds)}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainerSummary":
        check_header(d, FORMAT, VERSION, OLDEST_READABLE, SummaryError, rerun="re-run `python -m trainer chain`")
        try:
            return cls(dataset=d["dataset"], arch=d["arch"], surrogate=d["surrogate"],
                       timesteps=TimeSteps.from_dict(d["timesteps"]),
                       accuracies=[StageAccuracy(a["stage"], a["timesteps"], a["accuracy"], a.get("samples"))
                                   for a in d["accuracy"]],
                       seconds=dict(d["seconds"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise SummaryError(f"malformed trainer summary ({type(exc).__name__}: {exc})") from None


def save_trainer_summary(summary: TrainerSummary, path: str | os.PathLike) -> Path:
    return write_json_record(summary.to_dict(), path)


def load_trainer_summary(path: str | os.PathLike) -> TrainerSummary:
    """Read and validate; every problem is a SummaryError naming the file."""
    return read_json_record(path, "trainer summary", SummaryError, TrainerSummary.from_dict)
