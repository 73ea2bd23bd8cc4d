"""Progress in a log file: lines, not a bar's redraws (records.progress)."""
import io

import records.progress as progress_mod
from records.progress import LineProgress, progress


def test_a_log_gets_one_line_per_loop_with_count_rate_and_postfix():
    log = io.StringIO()                          # not a terminal
    bar = progress(range(5), desc="ANN epoch 1/3", unit="step", file=log)
    assert isinstance(bar, LineProgress)
    for i in bar:
        bar.set_postfix(loss=f"{1.0 / (i + 1):.3f}")
    lines = log.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ANN epoch 1/3: 5/5 step in ") and "step/s" in lines[0] and "loss=0.200" in lines[0]


def test_a_loop_left_early_still_says_how_far_it_got():
    log = io.StringIO()
    bar = progress(range(10), desc="SNN eval T=8", unit="batch", file=log)
    for i in bar:
        if i == 2:
            break
    del bar
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("SNN eval T=8: 2/10 batch in ")     # as tqdm counts: 2 done


def test_a_long_loop_says_its_rate_and_eta_now_and_then(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(progress_mod, "LINE_SECONDS", 0.0)
    bar = progress(total=4, desc="hwsim stdb T=4", unit="img", file=log)
    bar.update(2)
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "ETA" in lines[0] and lines[1].startswith("hwsim stdb T=4: 2/4 img in ")


def test_a_loop_that_prints_its_own_summary_gets_no_end_line():
    log = io.StringIO()
    assert list(progress(range(3), desc="ANN epoch 1/2", file=log, end_line=False)) == [0, 1, 2]
    assert log.getvalue() == ""


def test_nothing_when_disabled():
    log = io.StringIO()
    assert list(progress(range(3), desc="x", enabled=False, file=log)) == [0, 1, 2] and log.getvalue() == ""
