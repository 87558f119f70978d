#!/usr/bin/env bash
# Soak: random fault schedules against whole stockapp pipeline runs, run
# after run, for at least SOAK_SECS seconds and at least SOAK_MIN_TRADES
# trades, checking after every run the chaos property of tests/chaos.rs
# (nothing acknowledged lost, duplicates only as marked or explained,
# every broken trace explained by a fault, each run within its bound).
# Prints the figures at the end; exits non-zero at the first violation,
# naming the run's seed and fault schedule. Release build; honours
# CARGO_TARGET_DIR.
#
#   scripts/soak.sh                                  # 10 min, >= 1M trades
#   SOAK_SECS=60 SOAK_MIN_TRADES=100000 scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_SOAK_SECS=${SOAK_SECS:-600}
export CHAOS_SOAK_MIN_TRADES=${SOAK_MIN_TRADES:-1000000}
# Trades per run and the rate each run offers them at: a run lasts about
# RUN_TRADES / RATE seconds, and its faults start within that time.
export CHAOS_SOAK_RUN_TRADES=${SOAK_RUN_TRADES:-20000}
export CHAOS_SOAK_RATE=${SOAK_RATE:-10000}

echo "== building the chaos test (release)" >&2
cargo test --release --locked -p kafka-trace-harness --features stockapp,proptest \
    --test chaos --no-run >&2
echo "== soak: ${CHAOS_SOAK_SECS} s and ${CHAOS_SOAK_MIN_TRADES} trades at least," \
    "${CHAOS_SOAK_RUN_TRADES} trades per run at ${CHAOS_SOAK_RATE}/s" >&2
cargo test --release --locked -p kafka-trace-harness --features stockapp,proptest \
    --test chaos -- --ignored --exact soak_random_fault_schedules --nocapture
