"""records.heap: freed memory stays in the process after reuse_freed_memory, and
release_freed_memory (which the memory checks call) hands it back. Each case runs in its
own interpreter: the settings are process-wide."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import numpy as np
from records.heap import reuse_freed_memory
from records.sizing import available_memory

def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096

reuse = sys.argv[1] == 'reuse'
took = reuse_freed_memory() if reuse else None
base = rss()
a = np.ones(256 << 20, dtype=np.uint8)         # 256 MiB, its pages touched
del a
freed = rss() - base
available_memory()                              # a memory check: hands the freed memory back
after = rss() - base
print(json.dumps({"took": took, "kept": freed, "after_check": after}))
"""


def run(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_freed_memory_is_kept_for_reuse_and_released_for_a_memory_check():
    plain, reused = run("default"), run("reuse")
    mib = 1 << 20
    assert plain["kept"] < 16 * mib                       # glibc unmaps a large block on free
    assert reused["took"] is True
    assert reused["kept"] > 200 * mib                     # kept: the next allocation reuses its pages
    assert reused["after_check"] < 16 * mib               # the check counted it as available
