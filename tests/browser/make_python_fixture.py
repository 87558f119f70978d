"""Writes fixtures/otlp/python-sdk.jsonl: spans recorded by OpenTelemetry's
Python SDK, encoded by its OTLP exporter's encoder and written with
protobuf's own JSON mapping (MessageToJson), one request per line. That is
what a Python service's file export looks like: ids in base64, enums by
name, 64-bit integers as strings.

The traces: an order sent by `checkout` (Python) and processed by
`billing`, whose process span links to the send; a `billing` span with
error status; a `shipping` consumer whose parent was never captured
(context lost on the way); and a batch consumer in `audit` that links to
a send never captured.

Run once to regenerate (needs opentelemetry-sdk and
opentelemetry-exporter-otlp-proto-common); the output is committed.
"""

import sys
from pathlib import Path

from google.protobuf.json_format import MessageToJson
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags


def service(name):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("fixture.python"), exporter


def main(out):
    checkout, checkout_spans = service("checkout")
    billing, billing_spans = service("billing")
    shipping, shipping_spans = service("shipping")
    audit, audit_spans = service("audit")

    for order in range(3):
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": "orders",
            "messaging.kafka.message.key": f"order-{order}",
        }
        with checkout.start_as_current_span("send orders", kind=SpanKind.PRODUCER, attributes=attributes) as send:
            sent = send.get_span_context()
        parent = trace.set_span_in_context(NonRecordingSpan(sent))
        with billing.start_as_current_span(
            "process orders",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=[Link(sent, {"messaging.kafka.message.key": f"order-{order}"})],
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.destination.name": "orders"},
        ) as process:
            if order == 2:
                process.set_status(Status(StatusCode.ERROR, "card declined"))
                process.add_event("payment failed", {"reason": "card declined"})

    # A consumer whose parent (from another process) was never captured.
    lost = SpanContext(trace_id=0x5EED0000000000000000000000000001, span_id=0x00000000DEADBEEF,
                       is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with shipping.start_as_current_span(
        "process shipments", context=trace.set_span_in_context(NonRecordingSpan(lost)), kind=SpanKind.CONSUMER,
        attributes={"messaging.system": "kafka", "messaging.destination.name": "shipments"},
    ):
        pass

    # A batch consumer linking to a send that no service recorded.
    missing = SpanContext(trace_id=0x5EED0000000000000000000000000002, span_id=0x00000000CAFEF00D,
                          is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with audit.start_as_current_span("process audit-log", kind=SpanKind.CONSUMER, links=[Link(missing)],
                                     attributes={"messaging.system": "kafka", "messaging.batch.message_count": 1}):
        pass

    lines = []
    for exporter in (checkout_spans, billing_spans, shipping_spans, audit_spans):
        request = encode_spans(exporter.get_finished_spans())
        lines.append(MessageToJson(request, indent=None))
    Path(out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fixtures/otlp/python-sdk.jsonl")
