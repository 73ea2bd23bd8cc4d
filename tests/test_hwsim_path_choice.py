"""hwsim's choice between the event kernels and the int8 product, core by core, by the costs
measured in the run (``hwsim.path_choice``); that every path gives the same integers is
tests/test_hwsim_events.py's and tests/test_conformance.py's."""
import math

import numpy as np
import torch

from export import fixedpoint as fx
from fixedpoint_cases import CASES
from hwsim.path_choice import EXPLORE, RECHECK, PathCosts
from hwsim.paths import EventPath, Int8Path
from hwsim.plan import make_plans
from hwsim.simulate import SimOptions, simulate


def test_each_path_is_tried_then_the_cheaper_prediction_wins():
    c = PathCosts()
    order = []
    for _ in range(2 * EXPLORE):
        events = c.events(image_steps=10, input_events=100)
        order.append(events)
        c.observe("events" if events else "int8", 1.0, 10, 100)
    assert order == [True] * EXPLORE + [False] * EXPLORE
    # events cost 1e-3 s each, the int8 product 0.05 s per image-step: 100 events (0.1 s) beat
    # 10 image-steps (0.5 s); 1,000 events (1 s) do not
    c.per_event, c.per_image_step = 1e-3, 0.05
    c.blocks = 1
    assert c.events(10, 100) and not c.events(10, 1000)


def test_the_smallest_cost_seen_is_kept_and_silent_blocks_run_event_driven():
    c = PathCosts()
    c.observe("int8", 2.0, 10, 50)          # a warm-up call
    c.observe("int8", 0.5, 10, 50)
    c.observe("int8", 0.9, 10, 50)          # slowed down by another process
    assert c.per_image_step == 0.05
    assert c.events(10, 0) and c.blocks == 0     # nothing to gather: not counted, not observed
    c.observe("events", 0.01, 10, 0)
    assert c.per_event == math.inf and c.tries["events"] == 0


def test_the_other_path_runs_once_every_recheck_blocks():
    c = PathCosts()
    c.tries = {"events": EXPLORE, "int8": EXPLORE}
    c.per_event, c.per_image_step = 1e-6, 1.0          # events always cheaper
    picks = [c.events(10, 100) for _ in range(3 * RECHECK)]
    assert picks.count(False) == 3 and all(not picks[k * RECHECK - 1] for k in (1, 2, 3))


def test_simulate_follows_and_updates_the_plans_costs(monkeypatch):
    """By default on the CPU each core with both paths runs where its plan's costs say, and the
    plans learn: with the int8 product priced as free every block with input events goes there;
    priced out, every block runs event-driven; and a run from fresh costs leaves estimates in
    the plans. The output is the reference's throughout."""
    graph, spikes = CASES["conv_nonsymmetric_nonsquare_leak"]()
    ref = fx.run_reference(graph, spikes)
    runs = {"events": 0, "int8": 0}
    for path in (EventPath, Int8Path):
        def spy(self, *args, run=path.run):
            runs[self.name] += 1
            return run(self, *args)
        monkeypatch.setattr(path, "run", spy)
    plans = make_plans(graph, torch.device("cpu"))
    chosen = [p for p in plans if p.costs is not None]
    assert chosen
    for free in ("int8", "events"):
        for p in chosen:
            p.costs.tries = {"events": EXPLORE, "int8": EXPLORE}
            p.costs.per_event, p.costs.per_image_step = (1.0, 0.0) if free == "int8" else (0.0, 1.0)
            p.costs.blocks = 1
        runs.update(events=0, int8=0)
        got = simulate(graph, spikes, plans=plans, options=SimOptions(steps_per_block=1))
        np.testing.assert_array_equal(got.output, ref.output)
        assert runs[free] > 0, runs
        if free == "events":                  # (with the int8 product free, silent blocks still run events)
            assert runs["int8"] == 0, runs
    fresh = make_plans(graph, torch.device("cpu"))
    simulate(graph, spikes, plans=fresh, options=SimOptions(steps_per_block=1))
    assert any(p.costs.per_event < math.inf and p.costs.per_image_step < math.inf
               for p in fresh if p.costs is not None)
