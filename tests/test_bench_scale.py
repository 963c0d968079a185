"""`edgeloop bench scale`: the parts run end to end on small sizes and account for everything they
sent (figures are printed, never asserted), and the sizing model's arithmetic."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from edgeloop.bench import scale_sizing


def test_sizing_follows_the_measured_rates():
    p = scale_sizing.plan(10_000, relay_per_s=100.0, hub_per_s={"sqlite": 50.0, "postgresql": None},
                          agent_fps=20.0, index_bytes_per_sample=200.0)
    cand = 10_000 * scale_sizing.PER_HOUR / 3600
    assert p["candidates_per_s"] == pytest.approx(cand)
    assert p["relays"] == math.ceil(cand / (100.0 * scale_sizing.UTILISATION))
    assert p["hub_processes"] == {"sqlite": math.ceil(cand / (50.0 * scale_sizing.UTILISATION)), "postgresql": None}
    assert p["agent_cpu_share"] == pytest.approx(scale_sizing.FPS / 20.0)
    assert p["index_gb_retained"] == pytest.approx(p["samples_retained"] * 200.0 / 1e9)
    assert len(scale_sizing.lines([p])) == 1 and "PER_HOUR" not in scale_sizing.ASSUMPTIONS


def _bench(tmp_path, *args) -> dict:
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "bench", "scale", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "scale.json").read_text())
    assert report["lines"] and all(line in proc.stdout for line in report["lines"])
    return report


def test_search_and_selection_parts_run_and_report(tmp_path):
    report = _bench(tmp_path, "--parts", "search", "--sizes", "1500", "--ks", "20,50")
    (size,) = report["search"]
    assert [s["chosen"] for s in size["selection"]] == [20, 50]
    assert report["sizing"]["fleets"][0]["cameras"] == 1000


@pytest.mark.e2e
def test_the_relay_part_stores_every_candidate_it_was_sent(tmp_path):
    report = _bench(tmp_path, "--parts", "relay", "--messages", "60")
    r = report["relay"]
    assert r["relay_received"] == 60 and r["relay_stored"] == 60
    assert len(r["broker_raw_runs_per_s"]) == 2  # the bare subscriber before and after the relay
    assert r["broker_raw_per_s"] == pytest.approx(2 / sum(1 / x for x in r["broker_raw_runs_per_s"]))
    # how busy the box was in each pass (None only where a pass fell between two readings)
    assert set(r["box"]) == {"raw_before", "relay", "raw_after"}
    assert all(u is None or 0 <= u["steal"] <= u["busy"] <= 1 for u in r["box"].values())
    # the relay's own share of it (its arithmetic: tests/test_cpu_use.py); a 60-message pass may
    # fall between two readings
    assert r["relay_box_share"] is None or r["relay_box_share"] >= 0
    assert report["sizing"]["fleets"][1]["relays"] >= 1


@pytest.mark.e2e
def test_the_hub_part_posts_to_a_hub_process_and_says_how_busy_the_box_was(tmp_path):
    from edgeloop.bench.scale_hub import hub_ingest, hub_lines

    r = hub_ingest(300, tmp_path, engines=("sqlite",))  # PostgreSQL's arms: the full bench, not the suite
    e = r["sqlite"]
    assert e["hub_per_s"] > 0 and e["hub_raw_per_s"] > 0 and "postgresql" not in r
    assert set(e["box"]) == {"raw", "one"}
    assert all(u is None or 0 <= u["steal"] <= u["busy"] <= 1 for u in e["box"].values())
    (line,) = hub_lines(r, {"hub_sqlite_x_raw": 0.5, "two_hubs_x_one": 1.5})
    assert line.startswith("hub ingest sqlite: hub/raw") and "with the bare store" in line


def test_an_unknown_part_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "bench", "scale", "--parts", "nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown part" in proc.stderr
