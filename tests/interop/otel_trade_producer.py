"""Trades traced by another program continue through `kafka-trace-harness run`.

The issue's acceptance scenario: `kafka-trace-harness broker` in one process,
`kafka-trace-harness run --services processor,api` in another, and this
script as the producer the pipeline has never seen. It registers the Avro
schemas through the run's Schema Registry REST API, produces users and trades
with Python `confluent-kafka` in the Confluent wire format, each record in a
`send` span of the Python OpenTelemetry SDK whose context travels as a W3C
`traceparent` header, stops the run with SIGTERM and checks the OTLP JSON it
wrote: the processor's `process stockapp.trades` spans are children of the
Python spans, and joined trades reach the API consumers in the same trace.

Usage: python3 tests/interop/otel_trade_producer.py PATH_TO_BINARY
Needs: confluent-kafka, fastavro, opentelemetry-sdk (PyPI).
"""
import io
import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import fastavro
from confluent_kafka import Producer
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures")
TRADES, USERS, ROWS = "stockapp.trades", "stockapp.users", "stockapp.dollarsbyzip"
STARTUP, PROCESSING, EXIT = 60, 60, 30  # deadlines, seconds

USERS_SENT = [
    # userid, zip code
    ("User_1", "94403"),
    ("User_2", "92617"),
    ("User_3", "94301"),
]
# (symbol, userid, quantity, price in cents, why the processor drops it or None)
TRADES_SENT = [
    ("ZVZZT", "User_9", 7, 300, "unknown_user"),
    ("ZBZX", "User_1", 5, 200, "symbol_not_ending_in_t"),
    ("ZVZZT", "User_1", 10, 125, None),
    ("ZXZZT", "User_2", 3, 999, None),
    ("ZWZZT", "User_3", 40, 50, None),
    ("ZJZZT", "User_1", 2, 777, None),
]


class Lines:
    """A process's output lines, read on a thread so every wait has a deadline."""

    def __init__(self, stream):
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def drain(self):
        """Every line read so far."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return self.seen
            if line is not None:
                self.seen.append(line)

    def wait_for(self, prefix, timeout):
        until = time.monotonic() + timeout
        while True:
            left = until - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line starting {prefix!r} within {timeout} s: {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the process closed its output before {prefix!r}: {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line[len(prefix):].strip()


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/vnd.schemaregistry.v1+json",
    })
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def register(registry_url, topic, schema_file):
    with open(os.path.join(FIXTURES, schema_file)) as f:
        text = f.read()
    answer = http("POST", f"{registry_url}/subjects/{topic}-value/versions", {"schema": text})
    return answer["id"], fastavro.parse_schema(json.loads(text))


def confluent_value(schema_id, schema, record):
    """Magic byte 0, the schema id as 4 big-endian bytes, then the Avro body."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, record)
    return b"\0" + struct.pack(">I", schema_id) + body.getvalue()


def traced_send(producer, tracer, topic, key, value, timestamp_ms):
    """Produces in a `send` span; returns its (trace id, span id) as hex."""
    with tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER) as span:
        carrier = {}
        TraceContextTextMapPropagator().inject(carrier)
        headers = [(k, v.encode()) for k, v in carrier.items()]
        producer.produce(topic, key=key, value=value, headers=headers, timestamp=timestamp_ms)
        context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def stop(process, name):
    """SIGTERM, then wait; kills it if it overruns and reports that."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(EXIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(EXIT)
        raise AssertionError(f"{name} did not exit within {EXIT} s of SIGTERM")


def spans_by_service(path):
    with open(path) as f:
        otlp = json.load(f)
    spans = []
    for resource_spans in otlp["resourceSpans"]:
        service = next(
            kv["value"]["stringValue"]
            for kv in resource_spans["resource"]["attributes"]
            if kv["key"] == "service.name"
        )
        for scope in resource_spans["scopeSpans"]:
            for span in scope["spans"]:
                spans.append(dict(span, service=service))
    return spans


def attribute(span, key):
    for kv in span.get("attributes", []):
        if kv["key"] == key:
            return next(iter(kv["value"].values()))
    return None


def wait_for_api_totals(api_url, expected_cents):
    """Polls api-1's GET / until every zip code has its expected total."""
    until = time.monotonic() + PROCESSING
    while True:
        rows = http("GET", api_url + "/")
        totals = {}
        for row in rows:
            cents = round(float(row["TOTAL_DOLLARS"]) * 100)
            totals[row["ZIPCODE"]] = totals.get(row["ZIPCODE"], 0) + cents
        if totals == expected_cents:
            return
        if time.monotonic() >= until:
            raise AssertionError(f"api-1 rows {rows} never reached {expected_cents}")
        time.sleep(0.05)  # a poll interval: the loop checks a condition


def main(binary):
    with tempfile.TemporaryDirectory(prefix="otel-trade-producer-") as tmp:
        return run_scenario(binary, os.path.join(tmp, "spans.json"))


def run_scenario(binary, spans_out):
    broker = subprocess.Popen([binary, "broker", "--port", "0"], stdout=subprocess.PIPE, text=True)
    run = None
    try:
        bootstrap = Lines(broker.stdout).wait_for("", STARTUP)
        run = subprocess.Popen(
            [binary, "run", "--bootstrap", bootstrap, "--services", "processor,api",
             "--schema-registry-port", "0", "--http-port", "0", "--show-traces", "0",
             "--spans-out", spans_out],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        run_stdout = Lines(run.stdout)
        run_stderr = Lines(run.stderr)
        registry_url = run_stderr.wait_for("schema registry on ", STARTUP)
        api_url = run_stderr.wait_for("api-1 serves its rows on ", STARTUP)
        run_stderr.wait_for("processing records from ", STARTUP)

        trade_id, trade_schema = register(registry_url, TRADES, "stock_trades.avsc")
        user_id, user_schema = register(registry_url, USERS, "users.avsc")
        assert trade_id != user_id, (trade_id, user_id)

        provider = TracerProvider(resource=Resource.create({"service.name": "python-producer"}))
        tracer = provider.get_tracer("otel_trade_producer")
        producer = Producer({"bootstrap.servers": bootstrap})
        now_ms = int(time.time() * 1000)

        user_sends, zips = {}, {}
        for i, (userid, zipcode) in enumerate(USERS_SENT):
            user = {
                "registertime": 1500000000000 + i, "userid": userid, "regionid": f"Region_{i + 1}",
                "gender": "OTHER", "interests": ["Game", "News"],
                "contactinfo": {"zipcode": zipcode, "city": "Somewhere", "state": "CA"},
            }
            value = confluent_value(user_id, user_schema, user)
            user_sends[userid] = traced_send(producer, tracer, USERS, userid, value, now_ms)
            zips[userid] = zipcode
        assert producer.flush(10) == 0, "users left unacknowledged"

        trade_sends, expected_cents = [], {}
        for symbol, userid, quantity, price, dropped in TRADES_SENT:
            trade = {"side": "BUY", "quantity": quantity, "symbol": symbol, "price": price,
                     "account": "ABC123", "userid": userid}
            value = confluent_value(trade_id, trade_schema, trade)
            # One timestamp for all: every trade lands in the same 5-minute window.
            ids = traced_send(producer, tracer, TRADES, symbol, value, now_ms)
            trade_sends.append((ids, userid, dropped))
            if dropped is None:
                zipcode = zips[userid]
                expected_cents[zipcode] = expected_cents.get(zipcode, 0) + price * quantity
            # One at a time: the dropped trades are acknowledged first.
            assert producer.flush(10) == 0, "trades left unacknowledged"
        producer = None  # closes its connections before the broker stops

        wait_for_api_totals(api_url, expected_cents)
        assert stop(run, "the run command") == 0, f"run failed: {run_stderr.drain()}"
        run_stdout.wait_for("traces ", EXIT)
        spans = spans_by_service(spans_out)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
            run.wait(EXIT)
        broker_exit = stop(broker, "the broker")
    assert broker_exit == 0, f"the broker exited with {broker_exit}"

    processes = [s for s in spans if s["name"] == f"process {TRADES}"]
    rows = [s for s in spans if s["name"] == f"process {ROWS}"]
    checks = []

    def process_of(trace_id):
        mine = [s for s in processes if s["traceId"] == trace_id]
        assert mine, f"no process {TRADES} span in trace {trace_id}"
        return mine[0]

    def check(name):
        def register_check(f):
            checks.append((name, f))
            return f
        return register_check

    @check("every Python trade has a process span, child of its Python send span")
    def _():
        for (trace_id, span_id), _, _ in trade_sends:
            mine = [s for s in processes if s["traceId"] == trace_id]
            assert len(mine) == 1, (trace_id, mine)
            assert mine[0]["parentSpanId"] == span_id, mine[0]
            assert mine[0]["service"] == "stock-processor", mine[0]

    @check("joined trades reach process stockapp.dollarsbyzip in the same trace")
    def _():
        for (trace_id, _), _, dropped in trade_sends:
            reached = [s for s in rows if s["traceId"] == trace_id]
            if dropped is None:
                assert reached, f"trace {trace_id} never reached {ROWS}"
                assert all(s["service"].startswith("api-") for s in reached), reached
            else:
                assert not reached, (trace_id, dropped, reached)

    @check("dropped trades say why on their process span")
    def _():
        for (trace_id, _), _, dropped in trade_sends:
            process = process_of(trace_id)
            assert attribute(process, "stockapp.filtered_out") == dropped, process

    @check("joined trades link the Python send span of their user")
    def _():
        for (trace_id, _), userid, dropped in trade_sends:
            if dropped is not None:
                continue
            process = process_of(trace_id)
            user_trace, user_span = user_sends[userid]
            assert attribute(process, "stockapp.joined_userid") == userid, process
            links = [(link["traceId"], link["spanId"]) for link in process.get("links", [])]
            assert (user_trace, user_span) in links, (links, user_sends[userid])

    passed = failed = 0
    for name, f in checks:
        try:
            f()
            passed += 1
        except Exception as e:  # every check runs and reports
            failed += 1
            print(f"FAILED: {name}: {e!r}")
    reached = len({s["traceId"] for s in rows})
    print(f"otel trade producer interop: {len(trade_sends)} Python trades, {len(processes)} "
          f"processed, {reached} reached the API")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
