#!/usr/bin/env bash
# Measures the resident memory of a release keywarden daemon watching N secrets (default 10,000)
# in the local AWS emulator: peak (VmHWM) and current (VmRSS) after several poll cycles.
# Usage: benches/daemon_rss.sh [N]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$KW_ROOT"
n="${1:-10000}"
kw_ensure_venv
cargo build --release --locked --quiet --bin keywarden
work="$(mktemp -d)"
moto_pid=""; kw_pid=""
trap '[ -n "$kw_pid" ] && kill "$kw_pid" 2>/dev/null; [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null; rm -rf "$work"' EXIT
kw_start_moto port moto_pid "$work/moto.log"
endpoint="http://127.0.0.1:$port"
"$KW_VENV/bin/python" - "$endpoint" "$n" "$work/keywarden.toml" <<'PY'
import sys, boto3
from concurrent.futures import ThreadPoolExecutor
endpoint, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = boto3.client("secretsmanager", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
def create(i):
    # moto occasionally answers 500 under concurrent writes: retry.
    for attempt in range(5):
        try:
            client.create_secret(Name=f"fleet/service-{i:05}", SecretString="x")
            return
        except client.exceptions.ResourceExistsException:
            return
        except Exception:
            if attempt == 4:
                raise
with ThreadPoolExecutor(4) as pool:
    list(pool.map(create, range(n)))
with open(path, "w") as f:
    f.write('[server]\nlisten = "127.0.0.1:0"\n[poll]\nmetadata_every = "5s"\n[state]\npath = "%s/state.db"\n' % path.rsplit("/", 1)[0])
    for i in range(n):
        f.write(f'[[secret]]\nname = "SECRET_{i:05}"\nid = "fleet/service-{i:05}"\nrotate_every = "90d"\n'
                f'severity = "high"\nimpact = "Service {i} credentials"\n'
                f'consumers = ["arn:aws:sts::123456789012:assumed-role/service-{i}-*/*"]\n')
print(f"created {n} secrets", file=sys.stderr)
PY
AWS_ENDPOINT_URL="$endpoint" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true KEYWARDEN_LOG=warn \
  target/release/keywarden run --config "$work/keywarden.toml" 2>"$work/keywarden.log" &
kw_pid=$!
# Wait for the first cycle (n version lookups) and then four steady-state cycles.
sleep 2
for _ in $(seq 1 600); do
  [ -e "/proc/$kw_pid" ] || { cat "$work/keywarden.log"; exit 1; }
  sleep 0.5
  # The first cycle looks up every secret's versions once; count them at the emulator.
  c=$(curl -fsS "$endpoint/_keywarden/requests" | "$KW_VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin).get("secretsmanager:ListSecretVersionIds",0))')
  [ "$c" -ge "$n" ] && break
done
sleep 25
rss=$(awk '/VmRSS/ {print $2}' "/proc/$kw_pid/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$kw_pid/status")
anon=$(awk '/RssAnon/ {print $2}' "/proc/$kw_pid/status")
file=$(awk '/RssFile/ {print $2}' "/proc/$kw_pid/status")
lists=$(curl -fsS "$endpoint/_keywarden/requests")
echo "secrets=$n rss_kib=$rss peak_kib=$hwm (heap and other anonymous ${anon} KiB, binary and libraries ${file} KiB) requests=$lists"
