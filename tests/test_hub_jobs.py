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


def test_the_teams_project_labels_its_three_classes_trains_with_its_trainer_and_rolls_out_to_an_agent(hub, project):
    """The whole of it for a project whose v0 is a bare Ultralytics-style ONNX: the page and the API offer
    exactly its classes and refuse another by name; the team's trainer makes a child the hub judges;
    a rollout takes it to a real agent behind a relay and mosquitto."""
    import json
    import urllib.request

    from edgeloop.broker import free_port
    from edgeloop.procs import mosquitto_service, wait_port
    from factories import HUB_TOKEN as TOKEN
    from test_relay_share import get

    req = urllib.request.Request(hub + "/label", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        page = resp.read().decode()
    assert f"data-labels='{json.dumps(list(CLASSES))}'" in page
    sid = jcall(hub, "GET", "/api/v1/labels?source=seed")[1]["labels"][0]["sample_id"]
    status, reply = jcall(hub, "POST", "/api/v1/labels", {"boxes": {sid: [{"class": "truck", "xyxy": [1, 1, 9, 9]}]}})
    assert status == 400 and "'truck' is not one of the project's classes (car, van, person)" in reply["error"], reply

    root, logs = project["root"], project["root"] / "logs"
    port = free_port()
    services = [mosquitto_service(port, root / "site-mosquitto", logs).start()]
    try:
        wait_port(port)
        broker = f"mqtt://127.0.0.1:{port}"
        relay = Service.edgeloop("site-relay", ["relay", "run", "--id", "relay-0", "--site", "site-0", "--broker", broker,
                                                "--hub", hub, "--token", TOKEN, "--data", str(root / "site-relay"),
                                                "--poll", "0.5"], logs, ready=True).start()
        services.append(relay)
        relay_url = relay.wait_ready(timeout=60)["url"]
        services.append(Service.edgeloop("site-agent", [
            "agent", "run", "--device", "dev-0", "--site", "site-0", "--broker", broker, "--source",
            "scenes:cam-000?fps=2", "--max-fps", "2", "--data", str(root / "site-agent"), "--pubkey",
            str(project["data"] / "keys" / "hub.pub"), "--state-interval", "0.5"], logs).start())
        desired = jcall(hub, "GET", "/api/v1/desired")[1]["version"]

        def on(version):
            return lambda: (get(relay_url + "/status")["devices"].get("dev-0") or {}).get("model_version") == version

        wait_job_until(on(desired), f"the agent on the fleet's {desired} (the bare ONNX, signed by the hub)")
        job = train(hub, project, "good")
        assert job["state"] == "succeeded", job
        child, gate = job["result"]["version"], job["result"]["gate"]
        assert gate["parent"] == desired and isinstance(gate["passed"], bool)  # judged by the hub, whatever it says
        status, ro = jcall(hub, "POST", "/api/v1/rollouts", {"model": child, "stages": "full",
                                                               "force": not gate["passed"]})
        assert status == 201, ro
        wait_job_until(on(child), f"the agent on {child}")
    finally:
        for svc in reversed(services):
            svc.stop()


def wait_job_until(cond, what, timeout=180):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_a_train_request_may_ask_for_pseudo_labels_as_a_flag_and_nothing_else():
    from edgeloop.hub.training.jobs import check_settings

    assert check_settings({"pseudo_labels": True, "epochs": 3}) == {"pseudo_labels": True, "epochs": 3}
    with pytest.raises(ValueError, match="pseudo_labels: expected true or false"):
        check_settings({"pseudo_labels": "yes"})
    with pytest.raises(ValueError, match="pseudo: unknown setting"):
        check_settings({"pseudo": True})
