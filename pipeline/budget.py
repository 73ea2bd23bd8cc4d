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

# Shares of the budget, in the order the chain runs them: the paper's recipe (T = 100 for
# CIFAR: evaluations, export and hwsim at that T are long)...
STAGE_SHARES = (("data", 0.03), ("ann", 0.38), ("convert", 0.03), ("evaluate converted", 0.08),
                ("stdb", 0.26), ("export", 0.05), ("hwsim", 0.12), ("report", 0.05))
# ... and the low-latency recipe's (T = 4: the ANN and one STDB epoch are nearly all of it;
# VGG9's export and hwsim on 1,500 images took under 3 minutes on 2 CPU cores).
LOW_LATENCY_SHARES = (("data", 0.02), ("ann", 0.55), ("convert", 0.02), ("evaluate converted", 0.05),
                      ("stdb", 0.30), ("export", 0.02), ("hwsim", 0.03), ("report", 0.01))
STAGES = tuple(name for name, _ in STAGE_SHARES)


class StageClock:
    """Times the chain's stages, prints each one's wall time, and, under a budget of
    ``seconds``, gives each stage its deadline (``time.monotonic()``; None without one):
    the start plus the budget's fraction ``shares`` gives that stage and all before it."""

    def __init__(self, seconds: float | None = None, shares=STAGE_SHARES):
        if seconds is not None and not seconds > 0:
            raise ValueError(f"--budget-minutes: must be > 0, got {seconds / 60:g}")
        if tuple(name for name, _ in shares) != STAGES or abs(sum(v for _, v in shares) - 1) > 1e-9:
            raise ValueError(f"stage shares: one per stage of {', '.join(STAGES)}, in that order, summing to 1")
        self.seconds = seconds
        self.shares = shares
        self._deadline_share = dict(zip(STAGES, itertools.accumulate(share for _, share in shares)))
        self.start = self._t = time.monotonic()
        self.spent: dict[str, float] = {}

    def deadline(self, stage: str) -> float | None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
        if self.seconds is None:
            return None
        return self.start + self._deadline_share[stage] * self.seconds

    def done(self, stage: str) -> None:
        now = time.monotonic()
        self.spent[stage] = self.spent.get(stage, 0.0) + now - self._t
        self._t = now
        print(f"-- {stage}: {self.spent[stage]:.1f} s wall", flush=True)

    def rows(self) -> list[dict]:
        """One row per stage that ran: its wall time and, under a budget, its share and
        whether it ended by its deadline."""
        rows, ended = [], self.start
        for name, share in self.shares:
            if name not in self.spent:
                continue
            ended += self.spent[name]
            row = {"stage": name, "seconds": round(self.spent[name], 2)}
            if self.seconds is not None:
                row.update(share_seconds=round(share * self.seconds, 1),
                           ended_by_deadline=bool(ended <= self.deadline(name) + 1.0))
            rows.append(row)
        return rows
