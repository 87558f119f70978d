"""A librdkafka client (Python confluent-kafka) against `kafka-trace-harness broker`.

Starts the standalone broker, produces records with binary headers, consumes
them back through a consumer group, and checks keys, values and headers.
Usage: python3 tests/interop/librdkafka_client.py PATH_TO_BINARY
"""
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer

HEADERS = [
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("binary", bytes(range(256))),
]


def main(binary):
    broker = subprocess.Popen([binary, "broker", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        bootstrap = broker.stdout.readline().strip()
        producer = Producer({"bootstrap.servers": bootstrap})
        for i in range(5):
            producer.produce("interop", key=f"k{i}", value=f"v{i}", headers=HEADERS, partition=0)
        assert producer.flush(10) == 0, "records left unacknowledged"

        consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "interop",
            "auto.offset.reset": "earliest",
        })
        subscribed = time.monotonic()
        consumer.subscribe(["interop"])
        got = []
        for _ in range(100):  # bounded: at most 100 polls of 0.2 s
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                if not got:
                    # Goal ≤ 0.3 s (README); the bound only catches a held join.
                    waited = time.monotonic() - subscribed
                    print(f"librdkafka: first record {waited:.3f} s after subscribing")
                    assert waited < 5, f"librdkafka: first record only after {waited:.1f} s"
                got.append(message)
            if len(got) == 5:
                break
        consumer.close()
        assert [m.key() for m in got] == [f"k{i}".encode() for i in range(5)], got
        assert [m.value() for m in got] == [f"v{i}".encode() for i in range(5)]
        assert all(m.headers() == HEADERS for m in got), "headers changed"
        print("librdkafka interop: 1 passed, 0 failed")
    finally:
        broker.terminate()
        assert broker.wait(10) == 0, "the broker did not exit cleanly on SIGTERM"


if __name__ == "__main__":
    main(sys.argv[1])
