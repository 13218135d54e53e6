#!/usr/bin/env bash
# Organization scale against moto (issue #17, point 6): a release keywarden reading ACCOUNTS
# member accounts (default 50) x REGIONS regions (default 2) through assumed roles, PER secrets
# (default 1,000) in each account and region (100,000 in all by default), discovered by name
# prefix. benches/org_scale.py seeds moto through the launcher's control API (roles with
# /_keywarden/roles, secrets with /_keywarden/seed-secrets), starts the daemon and reports, per
# steady metadata cycle, the AWS calls (ListSecrets pages, AssumeRole; from
# keywarden_aws_requests_total and from moto's own count), the cycle time
# (keywarden_poll_duration_seconds), the scrape time with and without gzip, and VmRSS / VmHWM.
# Usage: benches/org_scale.sh [ACCOUNTS] [REGIONS] [PER] [CYCLES]
# The binary is ${CARGO_TARGET_DIR:-target}/release/keywarden (built here if out of date).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$KW_ROOT"
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
"$KW_VENV/bin/python" -u benches/org_scale.py "http://127.0.0.1:$port" "$(realpath "$bin")" "$work" \
  "${1:-50}" "${2:-2}" "${3:-1000}" "${4:-4}" "$moto_pid"
