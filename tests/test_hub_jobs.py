"""Training jobs at a real hub process: a team's own trainer behind the contract (a script outside the
package) continues a model registered from outside with no manifest; trainers that fail, write junk,
never end or change the classes are refused with the reason on the job and the fleet keeps its model;
a hub killed mid-job shows the job failed when it comes back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

import hubdb
from edgeloop.procs import Service
from factories import HUB_TOKEN
from test_hub_labeling import jcall
from trainset import CLASSES, make_project, trainer_command

pytestmark = pytest.mark.e2e


def edgeloop(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeloop", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def serve(root, data, name="hub"):
    svc = Service.edgeloop(name, ["hub", "serve", "--data", str(data), "--port", "0", "--token", HUB_TOKEN,
                                  *hubdb.args(data)], root / "logs", ready=True).start()
    return svc, svc.wait_ready(timeout=60)["url"]


def init_hub(root, data):
    """`hub init` from the bare seed model, its checkpoint and the team's trainer; the seed frames labeled."""
    init = edgeloop("hub", "init", "--data", data, "--model", root / "yolo.onnx", "--checkpoint", root / "ckpt",
                    "--golden", root / "golden.npz", "--trainer", trainer_command(data / "mode"), *hubdb.args(data))
    assert init.returncode == 0, init.stderr
    assert "inferred from the ONNX metadata" in init.stdout and "registered v0" in init.stdout
    from edgeloop.hub.training.golden import load_detection_set
    from edgeloop.hub.training.rounds import import_detection_set

    store = hubdb.store(data)
    import_detection_set(store, load_detection_set(root / "seed.npz"))
    store.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    made = make_project(root)
    init_hub(root, root / "data")
    return {"root": root, "data": root / "data", **made}


@pytest.fixture(scope="module")
def hub(project):
    svc, url = serve(project["root"], project["data"])
    yield url
    svc.stop()


def wait_job(url, job_id, timeout=300, until=("succeeded", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = jcall(url, "GET", f"/api/v1/jobs/{job_id}")[1]
        if job["state"] in until or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def train(url, project, mode: str, **settings) -> dict:
    (project["data"] / "mode").write_text(mode)
    status, job = jcall(url, "POST", "/api/v1/train", {"epochs": 2, **settings})
    assert status == 202 and job["state"] == "queued", job
    return wait_job(url, job["job_id"])


def test_the_project_is_the_models_three_classes(hub):
    status, proj = jcall(hub, "GET", "/api/v1/project")
    assert status == 200 and proj["task"] == "detect" and tuple(proj["classes"]) == CLASSES


@pytest.mark.parametrize("mode, settings, says", [
    ("exit", {}, "exited with status 3"),
    ("broken", {}, "not a model the hub can run"),
    ("hang", {"timeout_s": 3}, "ran past its timeout"),
    ("classes", {}, "not in the project: truck"),
])
def test_a_trainer_that_gives_no_model_of_the_project_is_refused(hub, project, mode, settings, says):
    before = jcall(hub, "GET", "/api/v1/desired")[1]
    models = {m["version"] for m in jcall(hub, "GET", "/api/v1/models")[1]["models"]}
    job = train(hub, project, mode, **settings)
    assert job["state"] == "failed", job
    assert says in job["error"], job["error"]
    assert any("contract_trainer: mode" in line for line in job["log"]), job["log"]
    assert jcall(hub, "GET", "/api/v1/desired")[1] == before
    assert {m["version"] for m in jcall(hub, "GET", "/api/v1/models")[1]["models"]} == models


def test_the_teams_trainer_continues_its_model_and_the_hub_judges_it(hub, project):
    job = train(hub, project, "good")
    assert job["state"] == "succeeded", job
    assert job["progress"]["epoch"] == job["progress"]["of"] == 2
    result = job["result"]
    assert result["parent"] == "v0" and result["labels_total"] == len(project["seed"])
    assert {"map50", "per_slice"} <= set(result["metrics"])
    card = jcall(hub, "GET", f"/api/v1/models/{result['version']}/card")[1]
    assert card["gate"]["parent"] == "v0"
    # The lineage: which labels, which trainer, which parent.
    lineage = next(m for m in jcall(hub, "GET", "/api/v1/models")[1]["models"]
                   if m["version"] == result["version"])
    assert lineage["version"] == result["version"]


def test_a_job_cannot_be_lost_to_a_hub_killed_mid_job(project):
    root, data = project["root"], project["root"] / "data-killed"  # a hub of its own: no other runner
    init_hub(root, data)
    svc, url = serve(root, data, name="hub-killed")
    (data / "mode").write_text("slow")
    job = jcall(url, "POST", "/api/v1/train", {"epochs": 2})[1]
    running = wait_job(url, job["job_id"], timeout=120, until=("running",))
    assert running["state"] == "running"
    deadline = time.monotonic() + 120
    while jcall(url, "GET", f"/api/v1/jobs/{job['job_id']}")[1]["progress"] is None and time.monotonic() < deadline:
        time.sleep(0.3)
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait(timeout=30)
    again, url2 = serve(root, data, name="hub-again")
    try:
        after = wait_job(url2, job["job_id"], timeout=60, until=("failed", "succeeded"))
        assert after["state"] == "failed" and "stopped mid-job" in after["error"], after
    finally:
        again.stop()
