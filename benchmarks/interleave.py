"""The one measuring loop of every benchmark's comparison: rounds in which each method is
measured in turn, in an order that changes from round to round, so that a change in the
machine's load (another process, a clock step) spreads over all methods instead of landing
on one; the benchmark reports min and median over the rounds.

Two orders: ``rotate`` (round r starts at method r: every method runs in every position)
and ``shuffle`` (a seeded random permutation per round: a rotation always runs a method
after the same one, whose caches and heap it then inherits).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, TypeVar

import numpy as np

T = TypeVar("T")
ORDERS = ("rotate", "shuffle")


def round_order(names: list[str], r: int, order: str = "rotate", seed: int = 0) -> list[str]:
    """The methods in the order round ``r`` measures them."""
    if order == "rotate":
        k = r % len(names)
        return names[k:] + names[:k]
    if order == "shuffle":
        return [names[i] for i in np.random.default_rng([seed, r]).permutation(len(names))]
    raise ValueError(f"order must be one of {ORDERS}, got {order!r}")


def interleaved(names: Iterable[str], repeats: int, measure: Callable[[str], T], order: str = "rotate",
                seed: int = 0) -> dict[str, list[T]]:
    """``measure(name)`` of every method in each of ``repeats`` rounds: {name: one value per round}."""
    names = list(names)
    values: dict[str, list[T]] = {name: [] for name in names}
    for r in range(repeats):
        for name in round_order(names, r, order, seed):
            values[name].append(measure(name))
    return values


def items_per_second(fn: Callable[[], object], calls: int, items: int, sync: Callable[[], None] = lambda: None
                     ) -> float:
    """Items per second of ``calls`` calls of ``fn``, each handling ``items`` items; ``sync``
    waits for the device before each clock reading (CUDA runs asynchronously)."""
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return calls * items / (time.perf_counter() - start)
