"""kafka-python 3 and aiokafka against `kafka-trace-harness broker`.

Both open with an ApiVersions request newer than librdkafka's mock knows
(kafka-python 3: v4); the harness's front answers UNSUPPORTED_VERSION in
the v0 layout and they retry lower. Each client produces records with
binary headers and consumes them back through a consumer group of its own;
keys, values and headers must come back intact. kafka-python's admin
client then lists and describes the group while its member is in it
(ListGroups and DescribeGroups, which the front answers for the mock).
Then a second member (kafka-python, then aiokafka) joins a stable group: each gets one of
the topic's two partitions about one heartbeat later (the mock alone held
that rebalance for the session timeout less 1 s), and every record
produced afterwards reaches the member that holds its partition.
Usage: python3 tests/interop/kafka_python_client.py PATH_TO_BINARY
"""
import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time

HEADERS = [
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("binary", bytes(range(256))),
]
RECORDS = 5
DEADLINE_S = 20  # for each client's whole round trip
# A group member's first record, with default settings: ≤ 1 s is the goal
# (measured in the README); the bound here only catches a held rejoin.
FIRST_RECORD_S = 5
# A second member's assignment: about one heartbeat (3 s) on Kafka; the
# bound here only catches a rebalance held for the session timeout.
SECOND_MEMBER_S = 10


def expected(prefix):
    return [(f"{prefix}-k{i}".encode(), f"{prefix}-v{i}".encode()) for i in range(RECORDS)]


def first_record(name, subscribed):
    """Prints how long a group member waited for its first record, and
    fails past FIRST_RECORD_S: the mock alone held a rejoin for 44 s."""
    waited = time.monotonic() - subscribed
    print(f"{name}: first record {waited:.3f} s after subscribing")
    assert waited < FIRST_RECORD_S, f"{name}: first record only after {waited:.1f} s"


def check(name, got, prefix):
    assert [(m.key, m.value) for m in got] == expected(prefix), f"{name}: {got}"
    for m in got:
        assert list(m.headers) == HEADERS, f"{name}: headers changed: {m.headers}"


def kafka_python(bootstrap, topic):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    sent = [
        producer.send(topic, key=key, value=value, headers=HEADERS, partition=0)
        for key, value in expected("kp")
    ]
    offsets = [future.get(timeout=10).offset for future in sent]
    assert offsets == list(range(RECORDS)), f"kafka-python: produced at offsets {offsets}"
    producer.close(timeout=10)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id="kafka-python",
        auto_offset_reset="earliest",
    )
    # Default settings, no metadata asked first: kafka-python joins before
    # it knows the topic's partitions and rejoins, which the broker's front
    # answers at once (the mock alone held it for 44 s).
    subscribed = time.monotonic()
    consumer.subscribe([topic])
    got = []
    deadline = subscribed + DEADLINE_S
    while len(got) < RECORDS and time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=200)
        for records in batches.values():
            if not got:
                first_record("kafka-python", subscribed)
            got.extend(records)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        listed = {group["group_id"]: group for group in admin.list_groups()}
        described = admin.describe_groups(["kafka-python"])["kafka-python"]
    finally:
        admin.close()
    consumer.close()
    assert len(got) == RECORDS, f"kafka-python: {len(got)} of {RECORDS} records within {DEADLINE_S} s"
    check("kafka-python", got, "kp")
    group = listed.get("kafka-python", {})
    assert (group.get("protocol_type"), group.get("group_state")) == ("consumer", "Stable"), \
        f"kafka-python: the broker lists {listed}"
    members = described["members"]
    assert described["group_state"] == "Stable" and len(members) == 1, \
        f"kafka-python: the broker describes {described}"
    assigned = members[0]["member_assignment"]["assigned_partitions"]
    assert [a["topic"] for a in assigned] == [topic], f"kafka-python: assignment {assigned}"


class Member:
    """A kafka-python group member polled on a thread of its own (a
    member's rejoin happens in its poll, so two members polled from one
    thread could wait on each other)."""

    def __init__(self, bootstrap, group, topic):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.assignment = set()
        self.assigned_at = None
        self.records = []
        self.error = None
        self.subscribed = time.monotonic()
        self.thread = threading.Thread(target=self.run, args=(bootstrap, group, topic))
        self.thread.start()

    def run(self, bootstrap, group, topic):
        from kafka import KafkaConsumer

        try:
            consumer = KafkaConsumer(
                bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
            )
        except Exception as error:
            self.error = error
            return
        try:
            consumer.subscribe([topic])
            while not self.stop.is_set():
                batches = consumer.poll(timeout_ms=100)
                assignment = {tp.partition for tp in consumer.assignment()}
                with self.lock:
                    if assignment and self.assigned_at is None:
                        self.assigned_at = time.monotonic()
                    self.assignment = assignment
                    for tp, records in batches.items():
                        self.records.extend((tp.partition, r.value) for r in records)
        except Exception as error:
            self.error = error
        finally:
            consumer.close()

    def state(self):
        with self.lock:
            if self.error is not None:
                raise AssertionError(f"a member failed: {self.error!r}")
            return set(self.assignment), list(self.records)

    def close(self):
        self.stop.set()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive(), "a member did not close"


def wait_until(what, done):
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_S} s"
        time.sleep(0.05)


def create_topic(admin, topic, partitions):
    """Through the broker's admin channel (the mock has no controller that
    kafka-python's admin client would find)."""
    host, port = admin.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as channel:
        channel.sendall(f"create {topic} {partitions}\n".encode())
        reply = channel.makefile().readline().strip()
    assert reply == "ok", f"creating {topic}: {reply}"


def kafka_python_second_member(bootstrap, admin, topic):
    from kafka import KafkaProducer

    create_topic(admin, topic, 2)
    group = f"{topic}-group"
    first = Member(bootstrap, group, topic)
    second = None
    try:
        wait_until("the first member holds both partitions", lambda: first.state()[0] == {0, 1})
        second = Member(bootstrap, group, topic)

        def split():
            mine, theirs = first.state()[0], second.state()[0]
            return len(mine) == 1 and len(theirs) == 1 and mine | theirs == {0, 1}

        wait_until("each member holds one partition", split)
        waited = second.assigned_at - second.subscribed
        print(f"kafka-python second member: assigned {waited:.3f} s after subscribing")
        assert waited < SECOND_MEMBER_S, f"second member: assigned only after {waited:.1f} s"

        producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        sent = {(p, f"p{p}-{i}".encode()) for p in (0, 1) for i in range(RECORDS)}
        for partition, value in sorted(sent):
            producer.send(topic, value=value, partition=partition).get(timeout=10)
        producer.close(timeout=10)

        def received():
            return {r for m in (first, second) for r in m.state()[1]}

        wait_until("every record reaches a member", lambda: received() >= sent)
        for name, member in (("first", first), ("second", second)):
            assignment, records = member.state()
            strays = {p for p, _ in records} - assignment
            assert not strays, f"{name} member read partitions {strays}, holds {assignment}"
    finally:
        first.close()
        if second is not None:
            second.close()


async def aiokafka_round_trip(bootstrap, topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await producer.start()
    try:
        for key, value in expected("aio"):
            await producer.send_and_wait(topic, key=key, value=value, headers=HEADERS, partition=0)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="aiokafka",
        auto_offset_reset="earliest",
    )
    subscribed = time.monotonic()
    await consumer.start()
    got = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < RECORDS and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                if not got:
                    first_record("aiokafka", subscribed)
                got.extend(records)
    finally:
        await consumer.stop()
    assert len(got) == RECORDS, f"aiokafka: {len(got)} of {RECORDS} records within {DEADLINE_S} s"
    check("aiokafka", got, "aio")


async def aiokafka_second_member(bootstrap, admin, topic):
    """As kafka_python_second_member, with aiokafka (whose members rejoin
    in a background task, so one event loop serves both)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    create_topic(admin, topic, 2)
    group = f"{topic}-group"

    def member():
        return AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
        )

    async def until(what, done, members):
        deadline = time.monotonic() + DEADLINE_S
        while not done():
            assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_S} s"
            for m in members:
                await m.getmany(timeout_ms=20)

    def partitions(m):
        return {tp.partition for tp in m.assignment()}

    first, second = member(), member()
    await first.start()
    try:
        await until("the first member holds both partitions", lambda: partitions(first) == {0, 1}, [first])
        subscribed = time.monotonic()
        await second.start()
        await until(
            "each member holds one partition",
            lambda: len(partitions(first)) == 1 and len(partitions(second)) == 1,
            [first, second],
        )
        waited = time.monotonic() - subscribed
        print(f"aiokafka second member: assigned {waited:.3f} s after start()")
        assert waited < SECOND_MEMBER_S, f"aiokafka second member: assigned only after {waited:.1f} s"
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
        await producer.start()
        try:
            sent = {(p, f"p{p}-{i}".encode()) for p in (0, 1) for i in range(RECORDS)}
            for partition, value in sorted(sent):
                await producer.send_and_wait(topic, value=value, partition=partition)
        finally:
            await producer.stop()
        got = {m: set() for m in (first, second)}
        deadline = time.monotonic() + DEADLINE_S
        while set().union(*got.values()) < sent:
            assert time.monotonic() < deadline, f"aiokafka: records missing after {DEADLINE_S} s"
            for m in (first, second):
                for tp, records in (await m.getmany(timeout_ms=20)).items():
                    got[m].update((tp.partition, r.value) for r in records)
        for name, m in (("first", first), ("second", second)):
            strays = {p for p, _ in got[m]} - partitions(m)
            assert not strays, f"aiokafka {name} member read partitions {strays}"
    finally:
        await second.stop()
        await first.stop()


def on_alarm(_signum, _frame):
    raise TimeoutError(f"no result within {2 * DEADLINE_S} s")


def main(binary):
    # kafka-python's blocking calls have no deadline of their own.
    signal.signal(signal.SIGALRM, on_alarm)
    # The flag's default is 0 already; passing it checks that it parses.
    broker = subprocess.Popen(
        [
            binary,
            "broker",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--group-initial-rebalance-delay-ms",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    passed = failed = 0
    try:
        bootstrap = broker.stdout.readline().strip()
        assert bootstrap, "the broker printed no bootstrap address"
        admin = broker.stdout.readline().strip().removeprefix("admin ")
        assert admin, "the broker printed no admin address"
        for name, run in [
            ("kafka-python", lambda: kafka_python(bootstrap, "interop-kafka-python")),
            (
                "kafka-python second member",
                lambda: kafka_python_second_member(bootstrap, admin, "interop-kafka-python-pair"),
            ),
            ("aiokafka", lambda: asyncio.run(aiokafka_round_trip(bootstrap, "interop-aiokafka"))),
            (
                "aiokafka second member",
                lambda: asyncio.run(
                    aiokafka_second_member(bootstrap, admin, "interop-aiokafka-pair")
                ),
            ),
        ]:
            started = time.monotonic()
            signal.alarm(2 * DEADLINE_S)
            try:
                run()
                passed += 1
                print(f"{name}: ok in {time.monotonic() - started:.2f} s")
            except Exception as error:  # report every client, then fail
                failed += 1
                print(f"{name}: FAILED: {error!r}")
            finally:
                signal.alarm(0)
    finally:
        broker.terminate()
        assert broker.wait(10) == 0, "the broker did not exit cleanly on SIGTERM"
    print(f"kafka-python interop: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1])
