"""shared/mqtt.Connection against a real mosquitto."""

import threading

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
