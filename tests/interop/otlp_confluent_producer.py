"""A Python producer's own spans, exported over OTLP, join the run's forest.

`kafka-trace-harness broker` in one process, `kafka-trace-harness run
--services processor,api --otlp-receiver` in another, and this script as a
producer instrumented the usual way: `confluent-kafka` wrapped by
`opentelemetry-instrumentation-confluent-kafka`
(`ConfluentKafkaInstrumentor().instrument_producer`), its spans exported by
the OpenTelemetry SDK's OTLP/HTTP exporter to the run's receiver. The
instrumentation starts a PRODUCER span per record and writes its context as
a `traceparent` header; the harness's processor continues the trace. After
SIGTERM the script reads the run's `--spans-out` file and checks that one
forest holds both programs' spans: each Python send span is the parent of
the processor's `process stockapp.trades` span, and joined trades link the
Python send span of their user. The instrumentation names its spans after
an older convention ("stockapp.trades send"), so the checks go by ids,
kinds and service names, not span names.

Usage: python3 tests/interop/otlp_confluent_producer.py PATH_TO_BINARY
Needs: confluent-kafka, fastavro, opentelemetry-sdk,
opentelemetry-exporter-otlp-proto-http,
opentelemetry-instrumentation-confluent-kafka (PyPI).
"""
import os
import re
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Producer
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.confluent_kafka import ConfluentKafkaInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

# The helpers of the first Python interop test: process output with
# deadlines, schema registration, the Confluent wire format, the API poll.
from otel_trade_producer import (
    EXIT, ROWS, STARTUP, TRADES, USERS, Lines, confluent_value, register, spans_by_service,
    stop, wait_for_api_totals,
)

SERVICE = "python-confluent-producer"
EXPORT = 10  # deadline of the OTLP export, seconds
PRODUCER_KIND = 4  # OTLP span kind
USERS_SENT = [("User_1", "94403"), ("User_2", "92617"), ("User_3", "94301")]
# (symbol, userid, quantity, price in cents): every one joins a user.
TRADES_SENT = [
    ("ZVZZT", "User_1", 10, 125),
    ("ZXZZT", "User_2", 3, 999),
    ("ZWZZT", "User_3", 40, 50),
    ("ZJZZT", "User_1", 2, 777),
    ("ZVZZT", "User_2", 1, 100),
    ("ZXZZT", "User_3", 7, 310),
]
RECEIVER_LINE = re.compile(r"(http://\S+) \(HTTP\) and (http://\S+) \(gRPC\)")


class Recording(SpanExporter):
    """The OTLP exporter, keeping each export's outcome so a failure is named."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append((len(spans), result))
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def traceparent_ids(headers):
    """(trace id, span id) of the send span, read from the injected header."""
    for key, value in headers:
        if key == "traceparent":
            _, trace_id, span_id, _ = value.decode().split("-")
            return trace_id, span_id
    raise AssertionError(f"the instrumentation injected no traceparent: {headers}")


def main(binary):
    with tempfile.TemporaryDirectory(prefix="otlp-confluent-producer-") as tmp:
        return run_scenario(binary, os.path.join(tmp, "spans.json"))


def run_scenario(binary, spans_out):
    broker = subprocess.Popen([binary, "broker", "--port", "0"], stdout=subprocess.PIPE, text=True)
    run = None
    try:
        bootstrap = Lines(broker.stdout).wait_for("", STARTUP)
        run = subprocess.Popen(
            [binary, "run", "--bootstrap", bootstrap, "--services", "processor,api",
             "--otlp-receiver", "--schema-registry-port", "0", "--http-port", "0",
             "--trades", str(len(TRADES_SENT)), "--show-traces", "1", "--spans-out", spans_out],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        run_stdout = Lines(run.stdout)
        run_stderr = Lines(run.stderr)
        receiver = run_stderr.wait_for("OTLP receiver on ", STARTUP)
        endpoints = RECEIVER_LINE.fullmatch(receiver)
        assert endpoints, f"unexpected receiver line: {receiver!r}"
        http_endpoint = endpoints.group(1)
        registry_url = run_stderr.wait_for("schema registry on ", STARTUP)
        api_url = run_stderr.wait_for("api-1 serves its rows on ", STARTUP)
        run_stderr.wait_for("processing records from ", STARTUP)

        trade_id, trade_schema = register(registry_url, TRADES, "stock_trades.avsc")
        user_id, user_schema = register(registry_url, USERS, "users.avsc")

        exporter = Recording(OTLPSpanExporter(endpoint=f"{http_endpoint}/v1/traces", timeout=EXPORT))
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        producer = ConfluentKafkaInstrumentor().instrument_producer(
            Producer({"bootstrap.servers": bootstrap}), tracer_provider=provider)
        now_ms = int(time.time() * 1000)

        def send(topic, key, value):
            headers = []  # the instrumentation appends traceparent here
            producer.produce(topic, value=value, key=key, headers=headers, timestamp=now_ms)
            return traceparent_ids(headers)

        user_sends, zips = {}, {}
        for i, (userid, zipcode) in enumerate(USERS_SENT):
            user = {
                "registertime": 1500000000000 + i, "userid": userid, "regionid": f"Region_{i + 1}",
                "gender": "OTHER", "interests": ["Game"],
                "contactinfo": {"zipcode": zipcode, "city": "Somewhere", "state": "CA"},
            }
            user_sends[userid] = send(USERS, userid, confluent_value(user_id, user_schema, user))
            zips[userid] = zipcode
        assert producer.flush(10) == 0, "users left unacknowledged"

        trade_sends, expected_cents = [], {}
        for symbol, userid, quantity, price in TRADES_SENT:
            trade = {"side": "BUY", "quantity": quantity, "symbol": symbol, "price": price,
                     "account": "ABC123", "userid": userid}
            ids = send(TRADES, symbol, confluent_value(trade_id, trade_schema, trade))
            trade_sends.append((ids, userid))
            zipcode = zips[userid]
            expected_cents[zipcode] = expected_cents.get(zipcode, 0) + price * quantity
        assert producer.flush(10) == 0, "trades left unacknowledged"
        producer = None  # closes its connections before the broker stops

        # The Python spans go to the run's receiver now, over OTLP/HTTP.
        assert provider.force_flush(EXPORT * 1000), f"OTLP export not done within {EXPORT} s"
        provider.shutdown()
        exported = sum(n for n, _ in exporter.results)
        failed_exports = [r for _, r in exporter.results if r != SpanExportResult.SUCCESS]
        assert not failed_exports and exported == len(USERS_SENT) + len(TRADES_SENT), (
            f"exports to {http_endpoint}: {exporter.results}")

        wait_for_api_totals(api_url, expected_cents)
        assert stop(run, "the run command") == 0, f"run failed: {run_stderr.drain()}"
        summary = run_stdout.wait_for("traces ", EXIT)
        spans = spans_by_service(spans_out)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait(EXIT)
        broker_exit = stop(broker, "the broker")
    assert broker_exit == 0, f"the broker exited with {broker_exit}"

    by_id = {(s["traceId"], s["spanId"]): s for s in spans}
    python_spans = [s for s in spans if s["service"] == SERVICE]
    processes = [s for s in spans if s["name"] == f"process {TRADES}"]
    checks = []

    def check(name):
        def register_check(f):
            checks.append((name, f))
            return f
        return register_check

    @check("the Python send spans reached the run over OTLP, with their service name")
    def _():
        sent = list(user_sends.values()) + [ids for ids, _ in trade_sends]
        assert len(python_spans) == len(sent), (len(python_spans), len(sent))
        for ids in sent:
            span = by_id.get(ids)
            assert span is not None, f"Python send span {ids} is not in the run's spans"
            assert span["service"] == SERVICE and span["kind"] == PRODUCER_KIND, span
            assert span.get("parentSpanId", "") == "", span

    @check("each Python send span is the parent of the processor's process span")
    def _():
        for (trace_id, span_id), _ in trade_sends:
            mine = [s for s in processes if s["traceId"] == trace_id]
            assert len(mine) == 1, (trace_id, mine)
            assert mine[0]["parentSpanId"] == span_id, mine[0]
            assert mine[0]["service"] == "stock-processor", mine[0]

    @check("one tree per trade: Python producer, processor and API, no orphan")
    def _():
        for (trace_id, _), _ in trade_sends:
            trace = [s for s in spans if s["traceId"] == trace_id]
            services = {s["service"] for s in trace}
            assert SERVICE in services and "stock-processor" in services, services
            assert any(s["service"].startswith("api-") and s["name"] == f"process {ROWS}"
                       for s in trace), services
            for s in trace:
                parent = s.get("parentSpanId", "")
                assert parent == "" or (trace_id, parent) in by_id, f"orphan: {s}"
            roots = [s for s in trace if s.get("parentSpanId", "") == ""]
            assert [r["service"] for r in roots] == [SERVICE], roots

    @check("joined trades link the Python send span of their user, also in the forest")
    def _():
        for (trace_id, _), userid in trade_sends:
            process = next(s for s in processes if s["traceId"] == trace_id)
            links = [(link["traceId"], link["spanId"]) for link in process.get("links", [])]
            assert user_sends[userid] in links, (links, user_sends[userid])
            assert by_id[user_sends[userid]]["service"] == SERVICE

    passed = failed = 0
    for name, f in checks:
        try:
            f()
            passed += 1
        except Exception as e:  # every check runs and reports
            failed += 1
            print(f"FAILED: {name}: {e!r}")
    print(f"otlp confluent producer interop: {len(python_spans)} Python spans received over OTLP, "
          f"{len(processes)} processed; run summary: traces {summary}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
