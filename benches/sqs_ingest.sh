#!/usr/bin/env bash
# SQS ingestion (issue #17, point 6): N EventBridge events (default 100,000) through a release
# keywarden with [access] source = "sqs", next to a plain boto3 receive+delete loop on the same
# moto, in the same command (benches/sqs_ingest.py does the work and prints the figures).
# The queues are filled through the launcher (/_keywarden/sqs-messages) and moto's SQS runs with
# patch 9 (receive, delete and send cost the same whatever the queue's depth).
# Usage: benches/sqs_ingest.sh [N]
# The binary is ${CARGO_TARGET_DIR:-target}/release/keywarden (built here if out of date).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$KW_ROOT"
n="${1:-100000}"
kw_ensure_venv
cargo build --release --locked --quiet --bin keywarden
bin="${CARGO_TARGET_DIR:-target}/release/keywarden"
[ -x "$bin" ] || { echo "no binary at $bin after cargo build --release" >&2; exit 1; }
work="$(mktemp -d)"
moto_pid=""
cleanup() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
kw_start_moto port moto_pid "$work/moto.log"
"$KW_VENV/bin/python" benches/sqs_ingest.py "http://127.0.0.1:$port" "$n" "$(realpath "$bin")" "$work"
