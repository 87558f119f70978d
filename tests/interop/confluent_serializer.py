"""Confluent's own Avro serializer against the harness's schema registry.

Starts `kafka-trace-harness run --services processor,api
--schema-registry-port 0`, serializes a trade with
confluent_kafka.schema_registry's AvroSerializer (which registers the schema
over the registry's REST API), reads it back with AvroDeserializer (which
fetches the schema by id), and checks the Confluent wire format.
Usage: python3 tests/interop/confluent_serializer.py PATH_TO_BINARY
"""
import re
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

SCHEMA = (Path(__file__).parents[2] / "fixtures" / "stock_trades.avsc").read_text()
TRADE = {"side": "BUY", "quantity": 3, "symbol": "ZVZZT", "price": 250,
         "account": "ABC123", "userid": "User_1"}


def registry_url(process, deadline):
    """The URL the run command prints on stderr once the registry listens."""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"schema registry on (http://\S+)", line)
        if found:
            return found.group(1)
        if not line and process.poll() is not None:
            break
    raise AssertionError("the run command printed no schema registry URL")


def main(binary):
    run = subprocess.Popen(
        [binary, "run", "--services", "processor,api", "--schema-registry-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = SchemaRegistryClient({"url": registry_url(run, time.monotonic() + 60)})
        context = SerializationContext("stockapp.trades", MessageField.VALUE)
        value = AvroSerializer(client, SCHEMA)(TRADE, context)
        assert value[0] == 0, "magic byte"
        schema_id = int.from_bytes(value[1:5], "big")
        assert client.get_latest_version("stockapp.trades-value").schema_id == schema_id
        assert AvroDeserializer(client)(value, context) == TRADE
        print("confluent serializer interop: 1 passed, 0 failed")
    finally:
        run.terminate()
        assert run.wait(30) == 0, "the run command did not exit cleanly on SIGTERM"


if __name__ == "__main__":
    main(sys.argv[1])
