"""`kafka-trace-harness datagen --format avro` read back by an independent
reader (fastavro), with every `arg.properties` annotation checked on the
values by code that shares nothing with the generator.

Usage: python3 tests/interop/datagen_fastavro.py PATH/TO/kafka-trace-harness
"""

import datetime
import decimal
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import uuid

import fastavro

ROOT = pathlib.Path(__file__).resolve().parents[2]
COUNT = 1000
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def strip_comments(text):
    """`//` and `/* */` comments outside strings."""
    out, i, in_string = [], 0, False
    while i < len(text):
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def plain(value, logical):
    """fastavro's logical-type objects back to Avro's numbers."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        micros = (value - EPOCH) // datetime.timedelta(microseconds=1)
        return micros // 1000 if logical and logical.endswith("millis") else micros
    if isinstance(value, datetime.date):
        return (value - datetime.date(1970, 1, 1)).days
    if isinstance(value, datetime.time):
        micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
        return micros // 1000 if logical == "time-millis" else micros
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class Checker:
    def __init__(self, name):
        self.name = name
        self.named = {}
        self.checked = {}
        self.iterations = {}

    def fail(self, path, message):
        raise AssertionError(f"{self.name}: {path}: {message}")

    def count(self, annotation):
        self.checked[annotation] = self.checked.get(annotation, 0) + 1

    def check(self, schema, value, path, top_level):
        if isinstance(schema, str):
            if schema in self.named:
                return self.check(self.named[schema], value, path, top_level)
            return
        if isinstance(schema, list):
            # fastavro gives the branch's value; annotations of the branch
            # that fits the value's Python type are checked.
            for branch in schema:
                kind = branch if isinstance(branch, str) else branch.get("type")
                if value is None and kind == "null":
                    return
                if value is not None and kind != "null":
                    try:
                        return self.check(branch, value, path, False)
                    except AssertionError:
                        continue
            return
        kind = schema.get("type")
        if isinstance(kind, (dict, list)):
            return self.check(kind, value, path, top_level)
        if "name" in schema and kind in ("record", "enum", "fixed"):
            self.named[schema["name"]] = schema
            if "namespace" in schema:
                self.named[schema["namespace"] + "." + schema["name"]] = schema
        logical = schema.get("logicalType")
        props = schema.get("arg.properties", {})
        value = plain(value, logical)
        if "options" in props and isinstance(props["options"], list):
            options = props["options"]
            if kind in ("bytes", "fixed") and logical is None:
                options = [o.encode("latin-1") for o in options]
            if logical == "decimal":
                options = [decimal.Decimal(str(o)) for o in options]
            if value not in options:
                self.fail(path, f"{value!r} is not one of the options")
            self.count("options")
            return
        if "range" in props:
            lo, hi = props["range"].get("min"), props["range"].get("max")
            if logical == "decimal":
                lo = None if lo is None else decimal.Decimal(str(lo))
                hi = None if hi is None else decimal.Decimal(str(hi))
            if (lo is not None and value < lo) or (hi is not None and value >= hi):
                self.fail(path, f"{value} is outside [{lo}, {hi})")
            self.count("range")
        if "iteration" in props and top_level:
            self.iterations.setdefault(path, (props["iteration"], kind, []))[2].append(value)
        if kind == "string" and logical is None:
            core = value
            if "prefix" in props:
                if not core.startswith(props["prefix"]):
                    self.fail(path, f"{value!r} lacks prefix {props['prefix']!r}")
                core = core[len(props["prefix"]):]
                self.count("prefix")
            if "suffix" in props:
                if not core.endswith(props["suffix"]):
                    self.fail(path, f"{value!r} lacks suffix {props['suffix']!r}")
                core = core[: len(core) - len(props["suffix"])]
                self.count("suffix")
            if "regex" in props:
                pattern = props["regex"].removeprefix("^").removesuffix("$")
                if not re.fullmatch(pattern, core):
                    self.fail(path, f"{core!r} does not match {props['regex']!r}")
                self.count("regex")
            self.length(props, len(core), path, "regex" in props)
        if kind in ("bytes",) and logical is None:
            self.length(props, len(value), path, False)
        if kind == "boolean" and "odds" in props:
            self.iterations.setdefault(path + "#odds", (props["odds"], "odds", []))[2].append(value)
        if kind == "array":
            self.length(props, len(value), path, False)
            for item in value:
                self.check(schema["items"], item, path + "[]", False)
        if kind == "map":
            self.length(props, len(value), path, False)
            keys = props.get("keys", {})
            for key, item in value.items():
                if keys:
                    self.check({"type": "string", "arg.properties": keys}, key, path + ".keys", False)
                self.check(schema["values"], item, path + "{}", False)
        if kind == "record":
            for field in schema["fields"]:
                field_type = field["type"]
                if "arg.properties" in field and not (isinstance(field_type, dict) and "arg.properties" in field_type):
                    field_type = {"type": field_type, "arg.properties": field["arg.properties"]}
                self.check(field_type, value[field["name"]], f"{path}.{field['name']}", top_level and path.count(".") == 0)

    def length(self, props, n, path, with_regex):
        if "length" not in props:
            return
        length = props["length"]
        if isinstance(length, int):
            ok = n >= length if with_regex else n == length
        else:
            ok = length.get("min", 0) <= n < length["max"]
        if not ok:
            self.fail(path, f"length {n} breaks {length}")
        self.count("length")

    def check_sequences(self):
        for path, (spec, kind, values) in self.iterations.items():
            if kind == "odds":
                share = sum(values) / len(values)
                if abs(share - spec) > 0.05:
                    self.fail(path, f"{share:.3f} true, odds {spec}")
                self.count("odds")
                continue
            if kind == "boolean":
                expected = [spec["start"] if k % 2 == 0 else not spec["start"] for k in range(len(values))]
            else:
                start, restart = spec["start"], spec.get("restart")
                step = spec.get("step", -1 if restart is not None and restart < start else 1)
                current, expected = spec.get("initial", start), []
                for _ in values:
                    expected.append(current)
                    current += step
                    if restart is not None and restart > start:
                        current = start + (current - start) % (restart - start)
                    elif restart is not None:
                        current = start - (start - current) % (start - restart)
            if values != expected:
                self.fail(path, f"iteration gave {values[:5]}…, expected {expected[:5]}…")
            self.count("iteration")


def main():
    binary = sys.argv[1]
    schemas = sorted((ROOT / "fixtures" / "datagen").glob("*.avsc"))
    schemas += [ROOT / "fixtures" / "stock_trades.avsc", ROOT / "fixtures" / "users.avsc"]
    # Confluent's quickstart schema files, kept in the repo.
    reference = sorted((ROOT / "fixtures" / "datagen" / "reference").glob("*.avro"))
    assert len(reference) == 2, f"expected the two quickstart schema files, found {reference}"
    schemas += reference
    totals = {}
    with tempfile.TemporaryDirectory() as tmp:
        for schema_file in schemas:
            out = pathlib.Path(tmp) / (schema_file.stem + ".avro")
            subprocess.run(
                [binary, "datagen", "--schema", str(schema_file), "--count", str(COUNT),
                 "--seed", "7", "--format", "avro", "--out", str(out)],
                check=True,
            )
            schema = json.loads(strip_comments(schema_file.read_text()))
            checker = Checker(schema_file.name)
            with out.open("rb") as f:
                records = list(fastavro.reader(f))
            assert len(records) == COUNT, f"{schema_file.name}: {len(records)} records"
            for record in records:
                checker.check(schema, record, schema["name"], True)
            checker.check_sequences()
            for k, v in checker.checked.items():
                totals[k] = totals.get(k, 0) + v
            print(f"ok {schema_file.name}: {COUNT} records, annotations checked {checker.checked}")
    for annotation in ("options", "range", "regex", "length", "prefix", "suffix", "iteration", "odds"):
        assert totals.get(annotation), f"no schema exercised {annotation}"


if __name__ == "__main__":
    main()
