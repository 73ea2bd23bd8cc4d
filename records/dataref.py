"""Where a network's data came from: enough to reload the same test split anywhere.

Recorded in every checkpoint (inside its ``data`` record) and every core graph, so that
export and hwsim reload the trainer's own split without re-deriving it from paths.
"""
from __future__ import annotations

from dataclasses import dataclass

from records.header import RecordError


@dataclass(frozen=True)
class DataRef:
    dataset: str                    # a trainer.data.DATASETS name
    root: str | None = None         # the folder or archive it was read from (None: the default)
    seed: int = 0                   # the seed of the split and subsets
    image_size: int | None = None   # the resize of a "folder" data set (None: not resized)

    def __post_init__(self):
        if not isinstance(self.dataset, str) or not self.dataset:
            raise RecordError(f"data reference needs a data set name, got {self.dataset!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise RecordError(f"data reference: seed must be an integer, got {self.seed!r}")
        if self.image_size is not None and (not isinstance(self.image_size, int) or self.image_size < 1):
            raise RecordError(f"data reference: image_size must be a positive integer, got {self.image_size!r}")

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "root": self.root, "seed": self.seed, "image_size": self.image_size}

    @classmethod
    def from_dict(cls, d: dict) -> "DataRef":
        try:
            return cls(dataset=d["dataset"], root=d.get("root"), seed=d.get("seed", 0),
                       image_size=d.get("image_size"))
        except (KeyError, TypeError, AttributeError):
            raise RecordError(f"malformed data reference {d!r}") from None
