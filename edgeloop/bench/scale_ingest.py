"""`bench scale`'s relay part: candidates per second one relay process stores, against the limit the
broker sets: the same payloads through the same mosquitto to a bare paho subscriber that only counts.

Both arms get the same kind of messages (a SampleBatch of one ~20 KB JPEG candidate, QoS 1, from
DEVICES devices on the site's samples topics), published as fast as one paho client can by the
bench process, on a mosquitto of their own. The bare subscriber runs in a process of its own
(`python -m edgeloop.bench.scale_ingest count ...`) as the relay does, once before the relay and once
after it (on another site's topics, which the stopped relay's session does not queue): the limit is
their mean rate (messages over their total time), since this shared box's load moves a one-second pass
by half (`broker_raw_runs_per_s` has both). A rate is messages divided by
the time from the first publish to the last message counted (the subscriber's clock; for the relay,
the time its journal gives the last candidate it stored). Each arm's CPU seconds per candidate are
read from /proc while it runs (the relay) or told by the process (the subscriber): a figure this
shared box's load moves less than a rate. The relay runs as deployed (`edgeloop relay run`, default
sampling) with its SQLite commit before each PUBACK and its receipt per batch; its hub is
unreachable, so forwarding only retries: the figure is ingest alone. How busy the box was in each
pass (`box`) and the relay's share of it (`relay_box_share`) say whether a pass was bound by the
box's two cores or by the relay process itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from edgeloop.broker import free_port
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.shared import topics
from edgeloop.shared.protocol import SampleBatch, encode

from .cpu_use import BoxMeter, describe, process_ticks
from .scale_data import candidates, jpeg

SITE = "site-s"
RAW_SITE = "site-raw"  # the bare subscriber's topics: none of the relay's
DEVICES = 20
TIMEOUT_S = 600.0


def _payloads(n: int, seed: int, site: str = SITE) -> list[tuple[str, bytes]]:
    image = jpeg(20.0, seed)
    return [(topics.samples(site, dev), encode(SampleBatch(source=dev, site=site, samples=(c,))))
            for dev, c in candidates(n, DEVICES, image, seed, site)]


def _bare_pass(port: int, payloads: list[tuple[str, bytes]]) -> tuple[float, float, float]:
    """Publish to a bare subscriber that only counts -> (wall clock of the first publish, of the last
    message counted, its CPU seconds)."""
    counter = subprocess.Popen([sys.executable, "-m", "edgeloop.bench.scale_ingest", "count", str(port),
                                f"{topics.ROOT}/{RAW_SITE}/+/samples", str(len(payloads))],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert counter.stdout.readline().strip() == "ready"
        t0 = _publish(port, payloads)
        t_last, cpu_s = map(float, counter.stdout.readline().split())
        counter.wait(60)
    finally:
        if counter.poll() is None:
            counter.kill()
    return t0, t_last, cpu_s


def _publish(port: int, payloads: list[tuple[str, bytes]]) -> float:
    """Publish all at QoS 1 from one client -> the wall clock (time.time) of the first publish."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        t0 = time.time()
        infos = [client.publish(topic, body, qos=1) for topic, body in payloads]
        for info in infos:
            info.wait_for_publish(TIMEOUT_S)
        return t0
    finally:
        client.loop_stop()
        client.disconnect()


def _status(url: str) -> dict:
    with urllib.request.urlopen(url + "/status", timeout=10) as resp:
        return json.loads(resp.read())


def relay_ingest(messages: int, work: Path, seed: int = 0) -> dict:
    work = Path(work) / f"relay-{time.time_ns()}"
    logs = work / "logs"
    port = free_port()
    broker = mosquitto_service(port, work / "mosquitto", logs).start()
    services = [broker]
    try:
        with BoxMeter() as meter:  # how busy the box was in each pass
            wait_port(port)
            raw_msgs, relay_msgs = _payloads(messages, seed, RAW_SITE), _payloads(messages, seed)
            raw = [_bare_pass(port, raw_msgs)]  # -- the limit, before the relay (and again after it)
            # -- the relay, as deployed
            relay = Service.edgeloop("relay", ["relay", "run", "--id", "relay-s", "--site", SITE, "--broker",
                                               f"mqtt://127.0.0.1:{port}", "--hub", f"http://127.0.0.1:{free_port()}",
                                               "--token", "bench", "--data", str(work / "relay"), "--port", "0"],
                                     logs, ready=True).start()
            services.append(relay)
            url = relay.wait_ready(60)["url"]
            deadline = time.monotonic() + 60
            while not _status(url)["connected"] and time.monotonic() < deadline:
                time.sleep(0.05)
            meter.follow(relay.proc.pid)
            cpu0 = _cpu_s(relay.proc.pid)
            t0 = _publish(port, relay_msgs)
            deadline = time.monotonic() + TIMEOUT_S
            while (got := _status(url)["counts"]["received"]) < messages and time.monotonic() < deadline:
                time.sleep(0.5)  # /status counts rows: asking often would slow the relay it measures
            relay_cpu_s = _cpu_s(relay.proc.pid) - cpu0  # a little of it the polls' and the retries'
            status = _status(url)
            t_stored = _last_stored(work / "relay" / "relay.sqlite")
            relay.stop()  # not beside the second bare pass
            raw.append(_bare_pass(port, raw_msgs))
    finally:
        for svc in reversed(services):
            svc.stop()
    relay_s = t_stored - t0
    relay_use = meter.use(t0, t_stored, relay.proc.pid)
    raw_per_s = 2 * messages / sum(t1 - t0 for t0, t1, _ in raw)
    return {"messages": messages, "payload_bytes": len(relay_msgs[0][1]), "devices": DEVICES,
            "broker_raw_per_s": raw_per_s, "broker_raw_runs_per_s": [messages / (t1 - t0) for t0, t1, _ in raw],
            "relay_per_s": got / relay_s, "relay_received": got, "relay_stored": status["seen"],
            "ratio": (got / relay_s) / raw_per_s, "relay_cpu_us": relay_cpu_s / max(got, 1) * 1e6,
            "raw_cpu_us": sum(c for _, _, c in raw) / (2 * messages) * 1e6,
            "box": {"raw_before": meter.use(*raw[0][:2]), "relay": relay_use, "raw_after": meter.use(*raw[1][:2])},
            # the relay's share of all the box's cores in its pass (the rest: the publisher, mosquitto)
            "relay_box_share": (relay_use or {}).get("process")}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc (Linux)."""
    ticks = process_ticks(pid)
    if ticks is None:
        raise RuntimeError(f"process {pid} ended during the bench")
    return ticks / os.sysconf("SC_CLK_TCK")


def _last_stored(db: Path) -> float:
    """The wall clock at which the relay stored its last candidate (its journal's `at`)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT MAX(at) FROM seen").fetchone()[0]


def relay_line(r: dict, target: float) -> str:
    ok = "met" if r["ratio"] >= target else "NOT met"
    runs = " and ".join(f"{x:.0f}" for x in r["broker_raw_runs_per_s"])
    box = r.get("box", {})
    return (f"relay ingest: relay/raw {r['ratio']:.2f}x ({r['relay_per_s']:.0f} / {r['broker_raw_per_s']:.0f} "
            f"candidates/s of {r['payload_bytes'] / 1024:.0f} KB, QoS 1, the bare subscriber {runs} before and after; "
            f"target >= {target}x: {ok}); CPU per candidate {r['relay_cpu_us']:.0f} / {r['raw_cpu_us']:.0f} us; "
            f"the box in the relay's pass: {describe(box.get('relay'))} (the relay {_percent(r['relay_box_share'])} "
            f"of all its time); in the bare passes: {describe(box.get('raw_before'))}; {describe(box.get('raw_after'))}")


def _percent(x: float | None) -> str:
    return "?" if x is None else f"{x:.0%}"


def count(port: int, topic: str, n: int) -> None:
    """The bare subscriber: QoS 1, counts; prints `ready`, then the wall clock of the n-th message."""
    import threading

    import paho.mqtt.client as mqtt

    seen, done = [0], threading.Event()

    def on_message(client, userdata, msg):
        seen[0] += 1
        if seen[0] == n:
            print(time.time(), time.process_time() - cpu0, flush=True)
            done.set()
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-count-{time.time_ns()}")
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    subscribed.wait(30)
    cpu0 = time.process_time()
    print("ready", flush=True)
    done.wait(TIMEOUT_S)
    client.loop_stop()


if __name__ == "__main__" and sys.argv[1:2] == ["count"]:
    count(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
