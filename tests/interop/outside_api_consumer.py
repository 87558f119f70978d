"""Another program's API consumer is first-class in `kafka-trace-harness run`.

The outside program (this file run with `serve`) is what a team's Go or
Python API service does: a confluent-kafka consumer group reading
`stockapp.dollarsbyzip`, one CONSUMER span per row continuing the trace of
the row's `traceparent` header, named and attributed by the 1.24-era
conventions (`stockapp.dollarsbyzip process`, `messaging.operation`,
`messaging.kafka.consumer.group`), exported by the OpenTelemetry SDK's
OTLP/HTTP exporter at its default batch settings (a batch every 5 s) to the
run's receiver. On SIGTERM it writes the ids of every span it made.

Scenarios, each on a standalone `kafka-trace-harness broker` that outlives
the run and the outside program:
(a) an extra API consumer beside api-1 and api-2, datagen in the run: the
    outside consumer starts first (its topic created through the broker's
    admin channel, the run's receiver on a port chosen here), and the run is
    not told its group: it learns it from the spans;
(b) the only API consumer (`--services datagen,processor,kstream`), started
    after the run, its group named with `--outside-group`;
in both, the run must end by itself, successfully, within its stated bounds
(30 s of waiting at most), with every outside span in `--spans-out` under
the processor's row send span, and the summary counting the outside service
(records per stage, spans received, the API reached, the group caught up);
(c) a consumer group that commits one row and then stops reading: the run
must end non-zero by `--outside-deadline`, naming the group and its lag;
(d) the same, neither named nor traced (no receiver), started before the
    run and committed before it (offset 0): the broker lists the group
    (ListGroups, which the embedded broker's front answers), and the run
    must end non-zero naming it and its lag.

Usage: python3 tests/interop/outside_api_consumer.py PATH_TO_BINARY
Needs: confluent-kafka, opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http (PyPI).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from otel_trade_producer import EXIT, ROWS, STARTUP, Lines, spans_by_service, stop

TRADES = 300
DEADLINE = 30  # --outside-deadline of (a) and (b), seconds: the default
QUIET = 6  # the default --outside-quiet, seconds
STUCK_DEADLINE = 4  # --outside-deadline of (c)
RECEIVER_LINE = re.compile(r"(http://\S+) \(HTTP\) and (http://\S+) \(gRPC\)")
CONSUMER_KIND = 5  # OTLP span kind


def serve(bootstrap, endpoint, group, service, ids_path, stall, committed_first=False):
    """The outside API consumer, until SIGTERM.

    committed_first: before saying it consumes, it waits for its assignment
    and commits offset 0 on it, so that its group has committed on the
    run's topic before the run starts.
    """
    from confluent_kafka import Consumer
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if endpoint != "-":
        # Default batch settings: what a service would run with.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    tracer = provider.get_tracer("outside-api-consumer")
    config = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    if stall:
        config["enable.auto.commit"] = False
    consumer = Consumer(config)
    consumer.subscribe([ROWS])
    made = []
    if committed_first:
        from confluent_kafka import TopicPartition

        until = time.monotonic() + STARTUP
        while not consumer.assignment():
            assert time.monotonic() < until, f"no assignment within {STARTUP} s"
            # The topic is empty: polling only drives the join.
            consumer.poll(0.2)
        consumer.commit(offsets=[TopicPartition(p.topic, p.partition, 0)
                                 for p in consumer.assignment()], asynchronous=False)
    print("consuming", flush=True)
    while not stopping.is_set():
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        headers = {k: v.decode() for k, v in (message.headers() or []) if v is not None}
        parent = TraceContextTextMapPropagator().extract(headers)
        with tracer.start_as_current_span(
            f"{ROWS} process", context=parent, kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation": "process",
                "messaging.destination.name": ROWS,
                "messaging.kafka.consumer.group": group,
                "messaging.kafka.destination.partition": message.partition(),
                "messaging.kafka.message.offset": message.offset(),
            },
        ) as span:
            context = span.get_span_context()
            made.append([format(context.trace_id, "032x"), format(context.span_id, "016x")])
        if stall:
            # One row committed, then never another: the group stays behind.
            consumer.commit(message=message, asynchronous=False)
            while not stopping.is_set():
                stopping.wait(0.2)
    consumer.close()
    provider.shutdown()
    with open(ids_path, "w") as f:
        json.dump(made, f)
    return 0


def start_outside(bootstrap, endpoint, group, service, ids_path, stall=False, first=False):
    mode = ("stall-committed-first" if first else "stall") if stall else "flow"
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "serve", bootstrap, endpoint or "-", group,
         service, ids_path, mode],
        stdout=subprocess.PIPE, text=True,
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_topic(admin, topic, partitions):
    """Through the standalone broker's admin channel (the mock cluster has no CreateTopics)."""
    host, port = admin.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=STARTUP) as conn:
        conn.sendall(f"create {topic} {partitions}\n".encode())
        answer = conn.makefile().readline().strip()
    assert answer == "ok", f"creating {topic}: {answer}"


def scenario(binary, tmp, name, services, group, service, stall=False, outside_first=False):
    """Runs the run and the outside consumer; returns what the checks need.

    outside_first: the outside consumer starts before the run (its topic
    created beforehand, the run's receiver on a port chosen here) and the
    run is not told its group: it learns it from the spans. Otherwise the
    run starts first, told the group by --outside-group, and the outside
    consumer after it. With stall too, the outside consumer is neither
    named nor traced, and commits before the run starts.
    """
    spans_out = os.path.join(tmp, f"{name}-spans.json")
    ids_path = os.path.join(tmp, f"{name}-ids.json")
    # The broker outlives the run and the outside program: the order a team
    # uses, so that the outside consumer can leave its group cleanly.
    broker = subprocess.Popen([binary, "broker", "--port", "0", "--admin-port", "0"],
                              stdout=subprocess.PIPE, text=True)
    broker_lines = Lines(broker.stdout)
    bootstrap = broker_lines.wait_for("", STARTUP)
    args = [binary, "run", "--bootstrap", bootstrap, "--trades", str(TRADES), "--show-traces", "2"]
    if not outside_first:
        args += ["--outside-group", group]
    if services:
        args += ["--services", services]
    endpoint = None
    if stall:
        args += ["--outside-deadline", str(STUCK_DEADLINE)]
    else:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        args += ["--otlp-receiver", "--otlp-receiver-port", str(port), "--spans-out", spans_out]
    outside = None
    run = None
    stdout = stderr = []
    try:
        if outside_first:
            create_topic(broker_lines.wait_for("admin ", STARTUP), ROWS, 1)
            outside = start_outside(bootstrap, endpoint, group, service, ids_path, stall,
                                    first=stall)
            Lines(outside.stdout).wait_for("consuming", STARTUP)
        started = time.monotonic()
        run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_stdout, run_stderr = Lines(run.stdout), Lines(run.stderr)
        if not stall:
            receiver = run_stderr.wait_for("OTLP receiver on ", STARTUP)
            endpoints = RECEIVER_LINE.fullmatch(receiver)
            assert endpoints and endpoints.group(1) == endpoint, f"receiver line: {receiver!r}"
        assert run_stderr.wait_for("broker on ", STARTUP) == bootstrap
        if not outside_first:
            outside = start_outside(bootstrap, endpoint, group, service, ids_path, stall)
            Lines(outside.stdout).wait_for("consuming", STARTUP)
        # The run ends by itself: no signal.
        bound = STARTUP + (STUCK_DEADLINE if stall else DEADLINE)
        try:
            code = run.wait(bound)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name}: the run did not end within {bound} s")
        took = time.monotonic() - started
        run_stdout.wait_for("throughput ", EXIT)
        stdout = run_stdout.drain()
        stderr = run_stderr.drain()
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait(EXIT)
        outside_exit = None if outside is None else stop(outside, "the outside consumer")
        broker_exit = stop(broker, "the broker")
        if outside_exit != 0 or broker_exit != 0:
            print("\n".join(stdout + stderr))
        assert outside_exit == 0, f"{name}: the outside consumer exited {outside_exit}"
        assert broker_exit == 0, f"{name}: the broker exited {broker_exit}"
    with open(ids_path) as f:
        made = [tuple(ids) for ids in json.load(f)]
    spans = [] if stall else spans_by_service(spans_out)
    return code, took, stdout, stderr, made, spans


def check_flow(name, code, took, stdout, stderr, made, spans, service, group, with_api, found_by):
    failures = []

    def check(condition, what):
        if not condition:
            failures.append(f"{name}: {what}")

    text = "\n".join(stdout)
    check(code == 0, f"the run exited {code}: {stderr[-5:]}")
    check(took < STARTUP + DEADLINE, f"the run took {took:.1f} s")
    by_id = {(s["traceId"], s["spanId"]): s for s in spans}
    rows_sent = int(re.search(r"sent (\d+) dollarsbyzip rows", text).group(1))
    check(len(made) == rows_sent, f"the outside consumer made {len(made)} spans for {rows_sent} rows")
    missing = [ids for ids in made if ids not in by_id]
    check(not missing, f"{len(missing)} of {len(made)} outside spans are not in --spans-out")
    for ids in made:
        span = by_id.get(ids)
        if span is None:
            continue
        parent = by_id.get((span["traceId"], span.get("parentSpanId", "")))
        if parent is None or parent["service"] != "stock-processor" or parent["name"] != f"send {ROWS}":
            failures.append(f"{name}: outside span {ids} is not under the processor's row send: {parent}")
            break
        check(span["service"] == service and span["kind"] == CONSUMER_KIND, f"span {span}")
    line = next((l for l in stdout if l.strip().startswith(service)), "")
    check(f"read {rows_sent} {ROWS}" in line, f"records per stage has no line for {service}: {text}")
    check(re.search(rf"spans {re.escape(service)}\s+{len(made)} received over OTLP", text),
          f"the summary does not count {len(made)} spans of {service}: {text}")
    reached = re.search(r"(\d+) trade traces: (\d+) complete, (\d+) broken; (\d+) reached the API", text)
    check(reached and reached.group(3) == "0", f"broken traces: {reached and reached.group(0)}")
    check(reached and int(reached.group(4)) > 0, f"no trade reached the API: {text}")
    check("end-to-end       p50 -" not in text, "no end-to-end figure")
    check(("api-1" in text) == with_api, f"api-1 listed: {'api-1' in text}, expected {with_api}")
    check("datagen          sent" in text, "datagen is not listed")
    waited = re.search(r"other programs   waited ([\d.]+) s", text)
    check(waited and float(waited.group(1)) <= DEADLINE + 1, f"waited: {waited and waited.group(0)}")
    check(re.search(rf"group {re.escape(group)}\s+caught up: .*\({found_by}\)", text),
          f"the group is not reported caught up, {found_by}: {text}")
    return failures


def main(binary):
    binary = os.path.abspath(binary)
    failures = []
    with tempfile.TemporaryDirectory(prefix="outside-api-consumer-") as tmp:
        # (a) beside api-1 and api-2, datagen in the run; the outside
        # consumer runs first and the run learns its group from its spans.
        service = "python-api"
        result = scenario(binary, tmp, "beside", None, "python-api-group", service,
                          outside_first=True)
        failures += check_flow("beside", *result, service=service, group="python-api-group",
                               with_api=True, found_by="named by its spans")
        print(f"(a) beside api-1/api-2: run took {result[1]:.1f} s, {len(result[4])} outside spans")

        # (b) the only API consumer, started after the run, its group named.
        service = "python-only-api"
        result = scenario(binary, tmp, "only", "datagen,processor,kstream", "python-only-group", service)
        failures += check_flow("only", *result, service=service, group="python-only-group",
                               with_api=False, found_by="named by --outside-group")
        print(f"(b) the only API consumer: run took {result[1]:.1f} s, {len(result[4])} outside spans")

        # (c) a group that commits one row and stops reading.
        code, took, stdout, stderr, made, _ = scenario(
            binary, tmp, "stuck", "datagen,processor,kstream", "python-stuck-group",
            "python-stuck-api", stall=True)
        errors = "\n".join(stderr)
        if code == 0:
            failures.append(f"stuck: the run exited 0 with a group behind: {errors}")
        named = re.search(r'outside consumer group "python-stuck-group" did not catch up within '
                          r"--outside-deadline [\d.]+ s: lag (\d+) on stockapp\.dollarsbyzip "
                          r"\(committed 1 of (\d+)\)", errors)
        if not named or int(named.group(1)) != int(named.group(2)) - 1:
            failures.append(f"stuck: the group and its lag are not named: {errors}")
        if took > STARTUP + STUCK_DEADLINE:
            failures.append(f"stuck: the run took {took:.1f} s")
        print(f"(c) a group that never catches up: exit {code} after {took:.1f} s")

        # (d) the same, neither named nor traced: the broker lists it.
        code, took, stdout, stderr, made, _ = scenario(
            binary, tmp, "unnamed", "datagen,processor,kstream", "python-unnamed-group",
            "python-unnamed-api", stall=True, outside_first=True)
        errors = "\n".join(stderr)
        if code == 0:
            failures.append(f"unnamed: the run exited 0 with an unnamed group behind: {errors}")
        named = re.search(r'outside consumer group "python-unnamed-group" did not catch up '
                          r"within --outside-deadline [\d.]+ s: lag (\d+) on "
                          r"stockapp\.dollarsbyzip \(committed ([01]) of (\d+)\)", errors)
        if not named or int(named.group(1)) != int(named.group(3)) - int(named.group(2)):
            failures.append(f"unnamed: the group and its lag are not named: {errors}")
        if "listed by the broker" not in "\n".join(stdout):
            failures.append("unnamed: the summary does not say the broker listed the group")
        if took > STARTUP + STUCK_DEADLINE:
            failures.append(f"unnamed: the run took {took:.1f} s")
        print(f"(d) an unnamed, untraced group that never catches up: exit {code} after "
              f"{took:.1f} s")

    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"outside api consumer interop: {4 - len({f.split(':')[0] for f in failures})} of 4 "
          "scenarios passed")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        sys.exit(serve(*sys.argv[2:7], stall=sys.argv[7] != "flow",
                       committed_first=sys.argv[7] == "stall-committed-first"))
    sys.exit(main(sys.argv[1]))
