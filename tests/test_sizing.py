"""Work sized before it starts (records.sizing): the threshold, the machine's memory as
the kernel and a cgroup state it, and the training estimate's arithmetic."""
from __future__ import annotations

import pytest

from records import sizing
from records.cli import BadInput
from trainer.models import build_config, neuron_count
from trainer.snn import TRAIN_BYTES_PER_NEURON_STEP, training_window_memory


def test_refused_above_the_usable_share_of_what_is_available(monkeypatch):
    monkeypatch.setattr(sizing, "available_memory", lambda device="cpu": 1000)
    sizing.require_memory(800, "--x", "work", "less")
    with pytest.raises(BadInput, match=r"^--x 5: work holds about .* GiB, and .* of memory is available; less$"):
        sizing.require_memory(801, "--x 5", "work", "less")


def test_the_cgroup_limit_bounds_what_is_available(monkeypatch, tmp_path):
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text("3000000\n")
    usage.write_text("1000000\n")
    paths = {"/sys/fs/cgroup/memory.max": limit, "/sys/fs/cgroup/memory.current": usage}
    real = sizing.Path
    monkeypatch.setattr(sizing, "Path", lambda p: real(paths.get(p, tmp_path / "absent")))
    assert sizing._cgroup_room() == 2000000
    limit.write_text("max\n")
    assert sizing._cgroup_room() is None
    assert sizing.available_memory() > 0          # /proc/meminfo absent here: the sysconf fallback


def test_the_training_estimate_counts_every_neuron_per_step_and_image():
    vgg = build_config("vgg_tiny", (1, 8, 8), 10)
    assert neuron_count(vgg) == 32 * 64 + 64 * 16 + 128 + 10           # two convs, hidden and output linears
    per = training_window_memory(vgg, 1, 1)
    assert per == neuron_count(vgg) * TRAIN_BYTES_PER_NEURON_STEP + 64 * 4
    assert training_window_memory(vgg, 6, 4) == 24 * per
    res = build_config("resnet_tiny", (3, 8, 8), 10)
    assert neuron_count(res) == 3 * 16 * 64 + 2 * 32 * 16 + 2 * 32 * 4 + 10   # a residual block: two layers
