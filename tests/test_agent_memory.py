"""The agent's allocator setting: frame-sized buffers freed go back to the system."""

import json
import subprocess
import sys

import pytest

# A process that, like the agent, has freed one big block (raising glibc's dynamic threshold), then
# holds 40 frame-sized buffers and frees every other one: what is resident after that?
PROBE = """
import json, sys
import numpy as np
if sys.argv[1] == "held":
    from edgeloop.agent.memory import hold_mmap_threshold
    assert hold_mmap_threshold()
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
big = np.ones(8 << 20, np.uint8); del big
frames = [np.ones(1 << 20, np.uint8) for _ in range(40)]
before = rss_mb()
del frames[::2]
print(json.dumps({"returned_mb": before - rss_mb()}))
"""


def returned_mb(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["returned_mb"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc: Linux only")
def test_holding_the_mmap_threshold_returns_freed_frames_to_the_system():
    held, floating = returned_mb("held"), returned_mb("floating")
    assert held >= 18  # the 20 freed 1 MB buffers, less the odd page
    assert floating <= 2  # glibc's default: kept in the heap between the buffers still alive
