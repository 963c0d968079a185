"""`edgeloop bench rollout` for real on a small fleet: the JSON it promises, one artifact per relay
from the hub, and a run into the folder of an earlier run starting from nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e
AGENTS, RELAYS = 8, 2


def test_the_rollout_bench_writes_its_figures_and_starts_from_nothing(tmp_path):
    # What an earlier run leaves behind: its hub database already holds v1 and a finished rollout.
    stale = tmp_path / "box" / "hub" / "hub.sqlite"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's database")
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "bench", "rollout", "--agents", str(AGENTS),
                           "--relays", str(RELAYS), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads((tmp_path / "rollout.json").read_text())
    assert {"agents", "relays", "artifact_bytes", "hub_egress_bytes", "relay_egress_bytes",
            "seconds_to_full"} <= set(fig)
    assert (fig["agents"], fig["relays"], fig["model"]) == (AGENTS, RELAYS, "v1")
    assert fig["artifact_bytes"] > 0 and fig["seconds_to_full"] > 0
    # The hub sends each relay the artifact once; each agent fetches it at least once from its relay.
    assert fig["hub_egress_bytes"] == RELAYS * fig["artifact_bytes"]
    assert fig["relay_egress_bytes"] >= AGENTS * fig["artifact_bytes"]
    assert list(fig["stage_started_at_s"]) == ["shadow:10%", "canary:10%", "full"]
    # A quick sibling of v0 rolls out whatever its training gate said, and the verdict is recorded.
    assert isinstance(fig["training_gate"]["passed"], bool)
    assert "1.00 artifact(s) per relay" in proc.stdout
