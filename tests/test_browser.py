"""The hub's pages in a real browser: Debian's chromium, headless, driven by playwright (no browser
is downloaded). Each test writes a screenshot to runs/screenshots/ for a person to look at."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgeloop.procs import Service

import hubdb
from test_hub_api import TOKEN
from test_hub_labeling import hub, jcall, queued  # noqa: F401 - hub is a fixture

pytest.importorskip("torch")
pytestmark = pytest.mark.e2e
SHOTS = Path(__file__).resolve().parents[1] / "runs" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("browser tests need Debian's chromium: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium,
                              args=["--headless", "--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()


def signed_in(browser, url: str, path: str):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(url + path)
    assert page.url.startswith(url + "/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(url + path)
    return page


def test_labeling_with_the_keyboard_stores_exactly_those_labels(browser, hub):
    from playwright.sync_api import expect

    url, data = hub
    ids = queued(url, 6, seed=1)
    page = signed_in(browser, url, "/label")
    root = page.locator("#labeler")

    def on(sid):  # the page shows this sample
        expect(root).to_have_attribute("data-current", sid)

    predicted = {it["sample_id"]: it["predicted"] for it in jcall(url, "GET", "/api/v1/label-queue?limit=1000")[1]["items"]}
    on(ids[0])
    page.keyboard.press("3")                      # a label by its digit key
    on(ids[1])
    page.keyboard.press("Enter")                  # confirm the model's prediction
    on(ids[2])
    page.keyboard.press("a")                      # ambiguous
    on(ids[3])
    page.keyboard.press("s")                      # skip: stays in the queue
    on(ids[4])
    page.keyboard.press("7")
    on(ids[5])
    page.keyboard.press("u")                      # undo the 7: the sample is back on screen
    on(ids[4])
    page.keyboard.press("2")
    on(ids[5])
    expect(page.locator("#n-labeled")).to_have_text("3")
    expect(page.locator("#n-ambiguous")).to_have_text("1")
    page.keyboard.press("m")                      # more like this: its neighbours at the hub
    expect(page.locator("#similar")).to_be_visible()
    expect(page.locator("#similar-items figure")).to_have_count(5)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "label.png", full_page=True)

    store = hubdb.store(data)  # what the hub's database holds
    labels = {r["sample_id"]: r["label"] for r in store.labels() if r["sample_id"] in ids}
    ambiguous = [r["sample_id"] for r in store.ambiguous() if r["sample_id"] in ids]
    status = {sid: store.sample(sid)["status"] for sid in ids}
    store.close()
    assert labels == {ids[0]: 3, ids[1]: predicted[ids[1]], ids[4]: 2}
    assert ambiguous == [ids[2]]
    assert status[ids[3]] == status[ids[5]] == "queued"


@pytest.fixture(scope="module")
def demo_hub(tmp_path_factory):
    """One short demo round, then its hub served again for the dashboard."""
    out = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, "-m", "edgeloop", "demo", "--task", "classify", "--rounds", "1", "--agents", "2", "--relays", "1",
                    "--frames", "400", "--labels", "40", "--epochs", "10", "--out", str(out)], check=True,
                   timeout=600, stdout=subprocess.DEVNULL)
    svc = Service.edgeloop("hub", ["hub", "serve", "--data", str(out / "hub"), "--golden",
                                   str(out / "data" / "golden.npz"), "--port", "0", "--token", TOKEN],
                           out / "logs-serve", ready=True).start()
    info = svc.wait_ready(timeout=60)
    yield info["url"], out
    assert svc.stop() == 0


def test_the_dashboard_after_a_demo_round_shows_the_funnel_and_accuracy_per_slice_and_version(browser, demo_hub):
    url, out = demo_hub
    page = signed_in(browser, url, "/")
    models = jcall(url, "GET", "/api/v1/models")[1]["models"]
    assert len(models) == 2  # the seed model and round 1's
    for m in models:
        row = page.locator(f"table.models tr[data-version='{m['version']}']")
        assert row.locator("td[data-slice=overall]").inner_text() == f"{m['metrics']['accuracy']:.3f}"
        for s, acc in m["metrics"]["per_slice"].items():
            assert row.locator(f"td[data-slice='{s}']").inner_text() == f"{acc:.3f}", (m["version"], s)
    assert page.locator("svg.chart polyline").count() == 1 + len(models[0]["metrics"]["per_slice"])

    devices = jcall(url, "GET", "/api/v1/devices")[1]["devices"]
    with sqlite3.connect(out / "hub" / "hub.sqlite") as conn:
        forwarded, selected, labeled = conn.execute(
            "SELECT COUNT(*), SUM(status != 'new'), SUM(status = 'labeled') FROM samples WHERE device_id != 'seed'"
        ).fetchone()
    want = {"seen": sum(d["stats"]["frames_seen"] for d in devices), "kept": sum(d["stats"]["kept"] for d in devices),
            "forwarded": forwarded, "selected": selected, "labeled": labeled}
    got = {k: int(page.locator(f"tr[data-step={k}] td.n").inner_text().replace(",", "")) for k in want}
    assert got == want
    report = json.loads((out / "report.json").read_text())
    assert got["seen"] >= 2 * 400 and got["labeled"] >= report["rounds"][-1]["labels_total"] - 300 > 0
    assert got["seen"] >= got["kept"] >= got["forwarded"] >= got["selected"] >= got["labeled"]
    # Training: no policy here (the demo asked for its round), and the round's job with the model it made.
    assert page.locator("#policy").get_attribute("data-on") == "false"
    jobs = jcall(url, "GET", "/api/v1/jobs")[1]["jobs"]
    assert page.locator("table.jobs tbody tr").count() == len(jobs) >= 1
    row = page.locator(f"table.jobs tr[data-job='{jobs[0]['job_id']}']")
    assert row.get_attribute("data-state") == "succeeded" and models[-1]["version"] in row.inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "dashboard.png", full_page=True)

    # Each version links to its model card: calibration, gate, data.
    latest = models[-1]["version"]
    page.click(f"table.models tr[data-version='{latest}'] a")
    page.wait_for_url(f"{url}/models/{latest}")
    card = jcall(url, "GET", f"/api/v1/models/{latest}/card")[1]
    cal = card["calibration"]
    assert page.inner_text("#ece-before") == f"{cal['ece_before']:.4f}"
    assert page.inner_text("#ece-after") == f"{cal['ece_after']:.4f}"
    assert page.locator("#accuracy td[data-slice=night]").inner_text() == f"{card['metrics']['per_slice']['night']['accuracy']:.3f}"
    assert page.locator("#gate").inner_text().count("passed" if card["gate"]["passed"] else "refused") >= 1
    page.screenshot(path=SHOTS / "model-card.png", full_page=True)
