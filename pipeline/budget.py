"""A wall-clock budget for the whole chain (``python -m pipeline --budget-minutes M``).

GPU time comes in single runs of fixed length, so the chain must finish, report and all,
inside one. The budget is split over the stages in fixed shares; each stage's deadline is
the start plus the budget's cumulative share up to and including that stage, so time a
stage leaves unused flows to the stages after it. The training stages stop at their
deadline keeping their best checkpoint (``trainer.train``), the evaluations count the
samples they reached; the steps after them (export, hwsim, the report) are sized to fit
their share by the profile that asks for a budget (``pipeline.__main__``).
"""
from __future__ import annotations

import itertools
import time

# Shares of the budget, in the order the chain runs them.
STAGE_SHARES = (("data", 0.03), ("ann", 0.38), ("convert", 0.03), ("evaluate converted", 0.08),
                ("stdb", 0.26), ("export", 0.05), ("hwsim", 0.12), ("report", 0.05))
STAGES = tuple(name for name, _ in STAGE_SHARES)
# A stage's deadline: the start plus this fraction of the budget (its share and all before it).
_DEADLINE_SHARE = dict(zip(STAGES, itertools.accumulate(share for _, share in STAGE_SHARES)))


class StageClock:
    """Times the chain's stages, prints each one's wall time, and, under a budget of
    ``seconds``, gives each stage its deadline (``time.monotonic()``; None without one)."""

    def __init__(self, seconds: float | None = None):
        if seconds is not None and not seconds > 0:
            raise ValueError(f"--budget-minutes: must be > 0, got {seconds / 60:g}")
        self.seconds = seconds
        self.start = self._t = time.monotonic()
        self.spent: dict[str, float] = {}

    def deadline(self, stage: str) -> float | None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
        if self.seconds is None:
            return None
        return self.start + _DEADLINE_SHARE[stage] * self.seconds

    def done(self, stage: str) -> None:
        now = time.monotonic()
        self.spent[stage] = self.spent.get(stage, 0.0) + now - self._t
        self._t = now
        print(f"-- {stage}: {self.spent[stage]:.1f} s wall", flush=True)

    def rows(self) -> list[dict]:
        """One row per stage that ran: its wall time and, under a budget, its share and
        whether it ended by its deadline."""
        rows, ended = [], self.start
        for name, share in STAGE_SHARES:
            if name not in self.spent:
                continue
            ended += self.spent[name]
            row = {"stage": name, "seconds": round(self.spent[name], 2)}
            if self.seconds is not None:
                row.update(share_seconds=round(share * self.seconds, 1),
                           ended_by_deadline=bool(ended <= self.deadline(name) + 1.0))
            rows.append(row)
        return rows
