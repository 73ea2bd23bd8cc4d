"""Which path runs a core's block on the CPU: the event-driven kernels or the int8 product,
chosen from what each has cost on this machine so far in the run.

Where the two break even depends on the CPU more than on the network: on a 2-core CPU with
AMX the int8 product of VGG5's convs beats the event kernels above about 0.75 % of inputs
active per step; on a 2-core AVX2 CPU without VNNI (int8 products near 84 G MAC/s) the event
kernels beat it on VGG16 up to about 30 % (``benchmarks/hwsim_vs_lava.py``; the README's
figures).
No fixed density is right for both, so where a core has both paths and the caller did not
fix a density, each core learns its own costs:

* int8: seconds per image-step (its cost does not depend on the rate);
* events: seconds per input event (a block's non-zero inputs), which is the bulk of its
  work; the fixed part per image-step makes this overestimate the cost at low rates,
  where the event path wins by far anyway.

Each estimate is the smallest seen (a path's first call pays its warm-up; another process
on the cores only slows calls down). The first ``EXPLORE`` blocks that have input events run
each path in turn; then the cheaper prediction wins, and the other path runs once every
``RECHECK`` blocks, so that an estimate taken while the machine was busy is revised. Every
path gives the same integers (``tests/test_conformance.py``): the choice changes only the
time.
"""
from __future__ import annotations

import math

EXPLORE = 2       # blocks per path before the costs decide (the first is a warm-up)
RECHECK = 64      # then the other path runs once every this many blocks


class PathCosts:
    """One core's two cost estimates and its choice per block."""

    def __init__(self) -> None:
        self.per_event = math.inf           # event path: seconds per input event
        self.per_image_step = math.inf      # int8 path: seconds per image-step
        self.tries = {"events": 0, "int8": 0}
        self.blocks = 0

    def events(self, image_steps: int, input_events: float) -> bool:
        """Whether this block (``image_steps`` steps x samples, ``input_events`` non-zero
        inputs) should run event-driven."""
        if input_events == 0:
            return True                      # nothing to gather: the event path only updates the neurons
        self.blocks += 1
        for name in ("events", "int8"):
            if self.tries[name] < EXPLORE:
                return name == "events"
        cheaper = self.per_event * input_events <= self.per_image_step * image_steps
        return cheaper != (self.blocks % RECHECK == 0)

    def observe(self, name: str, seconds: float, image_steps: int, input_events: float) -> None:
        """Record what a block cost on path ``name`` ("events" or "int8")."""
        if name == "events":
            if input_events == 0:
                return
            self.per_event = min(self.per_event, seconds / input_events)
        else:
            self.per_image_step = min(self.per_image_step, seconds / image_steps)
        self.tries[name] += 1
