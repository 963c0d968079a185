"""Run in a network namespace of its own (`unshare -n`, so Ray binds nothing but loopback): start a
local Ray head, a hub whose trainers run as Ray jobs, post one training job, wait for its end, and
write what the hub and Ray each say about it to OUT/result.json. tests/test_ray_jobs.py reads it.

    unshare -n python tests/ray_hub_job.py ROOT DATA OUT
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgeloop.procs import Service
from edgeloop.shared.hubclient import HubClient

DASHBOARD = "http://127.0.0.1:8265"
TOKEN = "ray-test-token"


def ray(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # `ray` beside this Python: the head, its workers and the job's entrypoint use the same environment.
    exe = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=180, check=check,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"})


def main(root: Path, data: Path, out: Path) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    hub = None
    try:
        head = ray("start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
                   "--num-cpus", "1", "--disable-usage-stats", check=False)
        result["ray_start"] = {"returncode": head.returncode, "tail": (head.stdout + head.stderr)[-2000:]}
        if head.returncode != 0:
            return 1
        hub = Service.edgeloop("hub-ray", ["hub", "serve", "--data", str(data), "--port", "0", "--token", TOKEN,
                                           "--runner", f"ray:{DASHBOARD}"], root / "logs", ready=True).start()
        url = hub.wait_ready(timeout=60)["url"]
        client = HubClient(url, token=TOKEN)
        t0 = time.monotonic()
        try:
            result["train"] = client.train({"epochs": 2})
        except Exception as exc:  # the test reads the job from the hub either way
            result["train_error"] = f"{type(exc).__name__}: {exc}"
        result["seconds"] = round(time.monotonic() - t0, 1)
        result["jobs"] = client.get("/api/v1/jobs")["jobs"]
        from ray.job_submission import JobSubmissionClient

        result["ray_jobs"] = [{"submission_id": j.submission_id, "status": str(j.status), "entrypoint": j.entrypoint,
                               "metadata": j.metadata} for j in JobSubmissionClient(DASHBOARD).list_jobs()]
        return 0
    finally:
        if hub is not None:
            hub.stop()
        ray("stop", "--force", check=False)
        (out / "result.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main(*map(Path, sys.argv[1:4])))
