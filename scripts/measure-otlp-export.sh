#!/usr/bin/env bash
# What live OTLP export costs a run, and whether everything arrives: the
# same run (same seed) without export, exporting over gRPC and over
# HTTP/protobuf to `kafka-trace-harness receive` on this machine,
# interleaved, ROUNDS times per size. Prints per run the wall time, the
# run's own throughput line and the export's span line, then what the
# receiver got. Release build; honours CARGO_TARGET_DIR.
#
#   scripts/measure-otlp-export.sh            # 10k and 100k trades, 3 rounds
#   SIZES="10000" ROUNDS=5 scripts/measure-otlp-export.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"10000 100000"}
ROUNDS=${ROUNDS:-3}
bin="${CARGO_TARGET_DIR:-target}/release/kafka-trace-harness"
cargo build --release --locked -p kafka-trace-harness-cli >&2
work=$(mktemp -d)
trap 'kill "$receiver" 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" receive >"$work/receiver.out" &
receiver=$!
for _ in $(seq 100); do
    [ "$(wc -l <"$work/receiver.out")" -ge 2 ] && break
    sleep 0.1
done
http=$(awk '$1 == "http" {print $2}' "$work/receiver.out")
grpc=$(awk '$1 == "grpc" {print $2}' "$work/receiver.out")

one_run() { # label, trades, then extra arguments
    local label=$1 trades=$2
    shift 2
    local started ended
    started=$(date +%s.%N)
    "$@" run --trades "$trades" >"$work/out" 2>"$work/err"
    ended=$(date +%s.%N)
    printf '%-6s %7s trades  wall %6.2f s  %s  |  %s\n' "$label" "$trades" \
        "$(echo "$ended - $started" | bc)" \
        "$(grep '^throughput' "$work/out" | tr -s ' ')" \
        "$(grep '^OTLP export of spans' "$work/out" | sed 's/.*: //' || true)"
}

for trades in $SIZES; do
    for _ in $(seq "$ROUNDS"); do
        one_run none "$trades" "$bin"
        one_run grpc "$trades" env OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT="$grpc" "$bin"
        one_run http "$trades" env OTEL_EXPORTER_OTLP_ENDPOINT="$http" "$bin"
    done
done

kill -TERM "$receiver"
wait "$receiver" || true
echo "receiver:"
tail -n +3 "$work/receiver.out"
