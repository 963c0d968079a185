"""shared/mqtt.Connection against a real mosquitto."""

import threading
import time

from edgeloop.broker import free_port
from edgeloop.procs import mosquitto_service, wait_port
from edgeloop.shared.mqtt import Connection


def test_a_handler_that_raises_does_not_end_the_connection(tmp_path, caplog):
    port = free_port()
    broker = mosquitto_service(port, tmp_path / "mosquitto", tmp_path / "logs").start()
    got, second = [], threading.Event()

    def handler(client, userdata, msg):
        got.append(msg.payload)
        if msg.payload == b"bad":
            raise KeyError("a bug in the handler")
        second.set()

    try:
        wait_port(port)
        sub = Connection(f"mqtt://127.0.0.1:{port}", client_id="sub", on_message=handler,
                         subscriptions=[("t/#", 1)]).start()
        pub = Connection(f"mqtt://127.0.0.1:{port}", client_id="pub").start()
        assert sub.wait_connected(20) and pub.wait_connected(20)
        subscribed = threading.Event()
        sub.client.on_subscribe = lambda *a: subscribed.set()
        sub.client.subscribe("t/#", qos=1)
        assert subscribed.wait(20)
        pub.publish("t/1", b"bad").wait_for_publish(10)
        pub.publish("t/2", b"good").wait_for_publish(10)
        assert second.wait(20), got  # the network thread lived through the first handler's error
        assert got[:2] == [b"bad", b"good"]
        assert "unexpected error handling a message on t/1" in caplog.text
        sub.stop()
        pub.stop()
    finally:
        broker.stop()


def _batching_pair(port: int, on_batch, **kwargs) -> tuple[Connection, Connection]:
    """A subscriber to t/# with on_batch, once subscribed, and a publisher, both connected."""
    sub = Connection(f"mqtt://127.0.0.1:{port}", client_id="sub", on_batch=on_batch, subscriptions=[("t/#", 1)],
                     **kwargs)
    subscribed = threading.Event()
    sub.client.on_subscribe = lambda *a: subscribed.set()
    sub.start()
    pub = Connection(f"mqtt://127.0.0.1:{port}", client_id="pub").start()
    assert sub.wait_connected(20) and pub.wait_connected(20) and subscribed.wait(20)
    return sub, pub


def test_messages_that_arrive_together_are_handed_over_together_in_order(tmp_path):
    """on_batch: while the handler is busy (paho's thread is blocked in it), what arrives waits on the
    socket and comes in the next call, many at once and in order; nothing is acked by paho itself."""
    port = free_port()
    broker = mosquitto_service(port, tmp_path / "mosquitto", tmp_path / "logs").start()
    batches, busy, release, done = [], threading.Event(), threading.Event(), threading.Event()

    def on_batch(msgs):
        batches.append([m.payload for m in msgs])
        if len(batches) == 1:
            busy.set()
            release.wait(20)
        for m in msgs:
            sub.client.ack(m.mid, m.qos)
        if sum(map(len, batches)) == 41:
            done.set()

    try:
        wait_port(port)
        sub, pub = _batching_pair(port, on_batch, manual_ack=True)
        pub.publish("t/0", b"0").wait_for_publish(10)
        assert busy.wait(20)
        infos = [pub.publish(f"t/{i % 3}", str(i).encode()) for i in range(1, 41)]
        for info in infos:
            info.wait_for_publish(10)
        time.sleep(0.5)  # let them reach the subscriber's socket while it is busy
        release.set()
        assert done.wait(20), batches
        assert [p for b in batches for p in b] == [str(i).encode() for i in range(41)]
        assert batches[0] == [b"0"] and len(batches[1]) > 1  # those that waited came together
        sub.stop()
        pub.stop()
    finally:
        broker.stop()


def test_a_batch_handler_that_raises_does_not_end_the_connection(tmp_path, caplog):
    port = free_port()
    broker = mosquitto_service(port, tmp_path / "mosquitto", tmp_path / "logs").start()
    got, second = [], threading.Event()

    def on_batch(msgs):
        got.extend(m.payload for m in msgs)
        if b"bad" in got and b"good" in got:
            second.set()
        if msgs[0].payload == b"bad":
            raise KeyError("a bug in the handler")

    try:
        wait_port(port)
        sub, pub = _batching_pair(port, on_batch)
        pub.publish("t/1", b"bad").wait_for_publish(10)
        time.sleep(0.3)
        pub.publish("t/2", b"good").wait_for_publish(10)
        assert second.wait(20), got  # the network thread lived through the handler's error
        assert "unexpected error handling 1 messages (from t/1 on)" in caplog.text
        sub.stop()
        pub.stop()
    finally:
        broker.stop()
