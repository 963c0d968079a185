"""A training job through a local Ray head: the hub (`--runner ray:...`) submits the team's trainer
as a Ray job, follows its progress in the job's log, and judges what it wrote. Ray binds the
machine's external interface unless it runs in a network namespace of its own, so the head and the
hub run under `unshare -n` (tests/ray_hub_job.py) with only loopback up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_hub_jobs import init_hub
from trainset import make_project

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
SCRIPT = Path(__file__).parent / "ray_hub_job.py"


def test_a_training_job_runs_on_a_local_ray_head(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("this test needs root and unshare(1) to give Ray a network namespace of loopback only")
    make_project(tmp_path, seed_frames=48, golden_per_condition=6, epochs=2)
    data = tmp_path / "data"
    init_hub(tmp_path, data)
    (data / "mode").write_text("good")
    run = subprocess.run(["unshare", "-n", sys.executable, str(SCRIPT), str(tmp_path), str(data), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=540, cwd=Path(__file__).parent)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:], result.get("ray_start"))

    job = result["jobs"][0]
    assert job["state"] == "succeeded", job
    assert "train" in result and result["train"]["version"] == "v1" and result["train"]["parent"] == "v0"
    assert job["progress"]["epoch"] == job["progress"]["of"] == 2  # read from the Ray job's log
    assert any(line.startswith("ray job edgeloop-train-v1-") for line in job["log"]), job["log"]
    assert any("contract_trainer: mode good" in line for line in job["log"]), job["log"]
    # Ray saw one job: the trainer's own command line, on the hub's job directory.
    (ray_job,) = result["ray_jobs"]
    assert ray_job["status"].endswith("SUCCEEDED") and ray_job["submission_id"].startswith("edgeloop-train-v1-")
    assert "contract_trainer.py" in ray_job["entrypoint"] and f"--data {data}/jobs/" in ray_job["entrypoint"]
    assert ray_job["metadata"] == {"submitted_by": "edgeloop-hub"}
