"""200,000 records of 150 bytes through one partition of `kafka-trace-harness broker`.

librdkafka's mock cluster keeps at most 5 MiB or 100,000 record batches per
partition and deletes the oldest beyond that. A librdkafka client (Python
confluent-kafka) writes 200,000 x 150-byte records (30 MB) to partition 0,
then reads the partition back from offset 0. Either every record comes back,
or the broker's standard error names the topic, the partition and how many
records it deleted, and those numbers match what is missing.
Usage: python3 tests/interop/deleted_records.py PATH_TO_BINARY
"""
import re
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

TOPIC = "deleted-records"
RECORDS = 200_000
VALUE = b"x" * 150
DEADLINE_S = 120
WARNING = re.compile(
    r'deleted (\d+) records of topic "([^"]+)" partition (\d+) \((\d+) in all'
)


def main(binary):
    broker = subprocess.Popen(
        [binary, "broker", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr_lines = []
    reader = threading.Thread(
        target=lambda: stderr_lines.extend(iter(broker.stderr.readline, "")), daemon=True
    )
    reader.start()
    try:
        bootstrap = broker.stdout.readline().strip()
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(RECORDS):
            while True:
                try:
                    producer.produce(TOPIC, value=VALUE, partition=0)
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(DEADLINE_S) == 0, "records left unacknowledged"

        consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": "deleted-records",
            "enable.auto.commit": False,
            # Offset 0 is gone once records were deleted: start at the log
            # start instead of jumping to the end.
            "auto.offset.reset": "earliest",
        })
        low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
        assert high == RECORDS, f"high watermark {high}, expected {RECORDS}"
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        got = 0
        started = time.monotonic()
        while got < high - low and time.monotonic() - started < DEADLINE_S:
            for message in consumer.consume(10_000, 0.5):
                if not message.error():
                    got += 1
        consumer.close()

        missing = RECORDS - got
        if missing == 0:
            print(f"deleted records: all {RECORDS} records came back")
            return
        # Give the broker's watch (a look every 250 ms) a deadline to speak.
        started = time.monotonic()
        while time.monotonic() - started < 10:
            reported = [WARNING.search(line) for line in stderr_lines]
            reported = [m for m in reported if m]
            if reported and int(reported[-1].group(4)) >= missing:
                break
            time.sleep(0.05)
        assert reported, f"{missing} records missing and the broker said nothing: {stderr_lines}"
        last = reported[-1]
        assert last.group(2) == TOPIC and last.group(3) == "0", last.group(0)
        assert int(last.group(4)) == low == missing, (last.group(0), low, missing)
        print(
            f"deleted records: {got} of {RECORDS} came back; the broker named the "
            f"{missing} it deleted from {TOPIC}/0 on standard error"
        )
    finally:
        broker.terminate()
        broker.wait(10)


if __name__ == "__main__":
    main(sys.argv[1])
