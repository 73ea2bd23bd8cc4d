"""The benchmarks' one measuring loop (benchmarks/interleave.py): every method once per
round, in an order that moves from round to round."""
import pytest

from benchmarks.interleave import interleaved, items_per_second, round_order


def test_rotation_puts_every_method_in_every_position():
    names = ["a", "b", "c"]
    orders = [round_order(names, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]


def test_shuffle_is_a_seeded_permutation_per_round():
    names = [f"m{i}" for i in range(6)]
    orders = [round_order(names, r, "shuffle", seed=3) for r in range(4)]
    assert all(sorted(o) == names for o in orders)
    assert orders == [round_order(names, r, "shuffle", seed=3) for r in range(4)]
    assert len({tuple(o) for o in orders}) > 1
    with pytest.raises(ValueError, match="order"):
        round_order(names, 0, "random")


def test_interleaved_measures_every_method_once_per_round_in_that_order():
    calls = []
    values = interleaved(["x", "y"], 3, lambda name: calls.append(name) or len(calls))
    assert calls == ["x", "y", "y", "x", "x", "y"]
    assert values == {"x": [1, 4, 5], "y": [2, 3, 6]}


def test_items_per_second_counts_every_call_and_waits_for_the_device():
    events = []
    rate = items_per_second(lambda: events.append("call"), 4, 10, lambda: events.append("sync"))
    assert events == ["sync"] + ["call"] * 4 + ["sync"] and rate > 0
