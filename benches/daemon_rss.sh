#!/usr/bin/env bash
# Measures the resident memory of a release keywarden daemon watching N secrets (default 10,000)
# in the local AWS emulator, with the access poller on (5,000 CloudTrail records in CloudWatch
# Logs) and /metrics scraped all the time, with and without gzip, in both formats. VmRSS is
# sampled after each confirmed poll cycle (a new keywarden_last_successful_poll_timestamp_seconds
# of either poller) until CYCLES metadata cycles (default 4) have run after the access poller's
# first cycle that counted events; the script prints every sample, their maximum and the peak
# (VmHWM), and exits 1 if the daemon dies, a cycle does not come within 2 minutes, the access
# poller counts no event within 3 minutes or a gzip scrape is not gzip. (VmRSS and VmHWM come
# from counters the kernel updates lazily, so the last sample can exceed the peak by a little.)
# Usage: benches/daemon_rss.sh [N] [CYCLES]
# The binary is ${CARGO_TARGET_DIR:-target}/release/keywarden (built here if out of date).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$KW_ROOT"
n="${1:-10000}"
cycles="${2:-4}"
records=5000
kw_ensure_venv
cargo build --release --locked --quiet --bin keywarden
bin="${CARGO_TARGET_DIR:-target}/release/keywarden"
[ -x "$bin" ] || { echo "no binary at $bin after cargo build --release" >&2; exit 1; }
work="$(mktemp -d)"
moto_pid=""; kw_pid=""; scraper_pid=""
cleanup() {
  [ -n "$scraper_pid" ] && kill "$scraper_pid" 2>/dev/null
  [ -n "$kw_pid" ] && kill "$kw_pid" 2>/dev/null
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
kw_start_moto port moto_pid "$work/moto.log"
endpoint="http://127.0.0.1:$port"
listen_port=$("$KW_VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$KW_VENV/bin/python" - "$endpoint" "$n" "$work/keywarden.toml" "$listen_port" "$records" <<'PY'
import json, random, sys, time, boto3
from concurrent.futures import ThreadPoolExecutor
endpoint, n, path, port, records = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
session = dict(endpoint_url=endpoint, region_name="us-east-1",
               aws_access_key_id="bench", aws_secret_access_key="bench")
client = boto3.client("secretsmanager", **session)
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
# CloudTrail records of the last ten minutes (inside the access poller's first window): reads by
# each secret's consumer role, some denied, some by an unknown principal.
logs = boto3.client("logs", **session)
group, stream = "/aws/cloudtrail", "123456789012_CloudTrail_us-east-1"
logs.create_log_group(logGroupName=group)
logs.create_log_stream(logGroupName=group, logStreamName=stream)
rng = random.Random(7)
start_ms = int(time.time() * 1000) - 600_000
events = []
for k in range(records):
    i = rng.randrange(n)
    who = f"service-{i}-task" if k % 10 else "intruder"
    record = {
        "eventVersion": "1.09", "eventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ms / 1000 + k * 0.1)),
        "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "GetSecretValue" if k % 7 else "DescribeSecret",
        "awsRegion": "us-east-1", "sourceIPAddress": f"10.0.{i % 250}.{k % 250}",
        "userIdentity": {"type": "AssumedRole", "principalId": f"AROA:{who}",
                         "arn": f"arn:aws:sts::123456789012:assumed-role/{who}/i-{k % 97}",
                         "accountId": "123456789012"},
        "requestParameters": {"secretId": f"fleet/service-{i:05}"},
        "eventID": f"bench-{k}", "readOnly": True, "eventType": "AwsApiCall",
        "recipientAccountId": "123456789012",
    }
    if k % 13 == 0:
        record["errorCode"] = "AccessDenied"
    events.append({"timestamp": start_ms + k * 100, "message": json.dumps(record, separators=(",", ":"))})
for at in range(0, len(events), 500):
    rejected = logs.put_log_events(logGroupName=group, logStreamName=stream,
                                   logEvents=events[at:at + 500]).get("rejectedLogEventsInfo")
    if rejected:
        raise SystemExit(f"PutLogEvents rejected events: {rejected}")
with open(path, "w") as f:
    f.write(f'[server]\nlisten = "127.0.0.1:{port}"\n'
            '[poll]\nmetadata_every = "5s"\naccess_every = "5s"\n'
            f'[access]\nlog_group = "{group}"\n'
            '[state]\npath = "%s/state.db"\n' % path.rsplit("/", 1)[0])
    for i in range(n):
        f.write(f'[[secret]]\nname = "SECRET_{i:05}"\nid = "fleet/service-{i:05}"\nrotate_every = "90d"\n'
                f'severity = "high"\nimpact = "Service {i} credentials"\n'
                f'consumers = ["arn:aws:sts::123456789012:assumed-role/service-{i}-*/*"]\n')
print(f"created {n} secrets and {records} CloudTrail records", file=sys.stderr)
PY
AWS_ENDPOINT_URL="$endpoint" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true KEYWARDEN_LOG=warn \
  "$bin" run --config "$work/keywarden.toml" 2>"$work/keywarden.log" &
kw_pid=$!
base="http://127.0.0.1:$listen_port"
alive() { [ -e "/proc/$kw_pid" ] || { cat "$work/keywarden.log" >&2; echo "keywarden exited" >&2; exit 1; }; }

# status FIELD : a field of /proc/<pid>/status in KiB.
status() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$kw_pid/status"; }

# The last successful cycle of each poller and the access events counted, from one plain scrape.
read_polls() {
  curl -fsS "$base/metrics" 2>/dev/null | awk '
    /^keywarden_last_successful_poll_timestamp_seconds\{source="metadata"\}/ { m = $2 }
    /^keywarden_last_successful_poll_timestamp_seconds\{source="access"\}/ { a = $2 }
    /^keywarden_secret_access_events_total\{/ { e += $2 }
    END { print (m == "" ? 0 : m), (a == "" ? 0 : a), e + 0 }'
}

om='Accept: application/openmetrics-text; version=1.0.0'
# Scrapes /metrics back to back until the daemon stops: OpenMetrics with gzip (what Prometheus
# asks for: the cached gzip bytes), OpenMetrics and text format 0.0.4 without (decompressed per
# scrape), and text with Accept-Encoding gzip (answered plain: gzip is OpenMetrics only).
scraper() {
  while [ -e "/proc/$kw_pid" ]; do
    curl -fsS -o /dev/null -H "$om" -H 'Accept-Encoding: gzip' "$base/metrics" && echo gzip
    curl -fsS -o /dev/null -H "$om" "$base/metrics" && echo plain
    curl -fsS -o /dev/null "$base/metrics" && echo plain
    curl -fsS -o /dev/null -H 'Accept-Encoding: gzip' "$base/metrics" && echo plain
  done >>"$work/scrapes" 2>/dev/null
}

# Ready: /readyz answers once both pollers have succeeded (the first metadata cycle looks up
# every secret's versions, one ListSecretVersionIds each): up to a minute plus 120 ms a secret
# (21 minutes for 10,000: on a loaded 2-core machine moto took more than 6).
ready=false
ready_deadline=$(( $(date +%s) + 60 + n * 12 / 100 ))
while [ "$(date +%s)" -lt "$ready_deadline" ]; do
  alive
  curl -fsS "$base/readyz" >/dev/null 2>&1 && { ready=true; break; }
  sleep 0.5
done
$ready || { echo "keywarden did not become ready: $(curl -sS "$base/readyz")" >&2; tail -3 "$work/keywarden.log" >&2; exit 1; }
headers=$(curl -fsS -D - -o "$work/metrics.gz" -H "$om" -H 'Accept-Encoding: gzip' "$base/metrics")
grep -qi '^content-encoding: *gzip' <<<"$headers" && gzip -t "$work/metrics.gz" \
  || { echo "a scrape with Accept-Encoding: gzip did not answer gzip" >&2; exit 1; }
scraper &
scraper_pid=$!

# One sample after each confirmed cycle of either poller (a new last-success timestamp), until
# $cycles metadata cycles have run with the access poller on (after its first cycle that counted
# events; that first cycle reads the whole overlap window, rate-limited). A cycle every 5 s:
# each must come within 2 minutes.
# The access poller must have counted events within 3 minutes of readiness.
access_deadline=$(( $(date +%s) + 180 ))
max_rss=0; samples=(); last_meta=0; last_access=0; steady=0
while [ "$steady" -lt "$cycles" ]; do
  if [ "$steady" -eq 0 ] && [ "$(date +%s)" -ge "$access_deadline" ]; then
    echo "the access poller counted no event within 3 minutes" >&2; tail "$work/keywarden.log" >&2; exit 1
  fi
  deadline=$(( $(date +%s) + 120 ))
  while :; do
    alive
    read -r meta access events < <(read_polls)
    meta=${meta%.*}; access=${access%.*}
    { [ "$meta" != "$last_meta" ] || [ "$access" != "$last_access" ]; } && [ "$meta" != 0 ] && break
    [ "$(date +%s)" -lt "$deadline" ] || { echo "no poll cycle within 2 minutes" >&2; tail "$work/keywarden.log" >&2; exit 1; }
    sleep 0.2
  done
  rss=$(status VmRSS)
  which=()
  [ "$meta" != "$last_meta" ] && which+=(metadata)
  [ "$access" != "$last_access" ] && which+=(access)
  if [ "$meta" != "$last_meta" ] && [ "$access" != 0 ] && [ "${events%.*}" -gt 0 ]; then
    steady=$((steady + 1))
  fi
  last_meta=$meta; last_access=$access
  samples+=("$rss")
  [ "$rss" -gt "$max_rss" ] && max_rss=$rss
  echo "after ${which[*]} cycle: rss_kib=$rss peak_kib=$(status VmHWM) access_events=$events scrapes=$(wc -l <"$work/scrapes") (metadata cycles with access on: $steady)"
done
hwm=$(status VmHWM); anon=$(status RssAnon); file=$(status RssFile)
plain=$(grep -c '^plain$' "$work/scrapes" || true); gz=$(grep -c '^gzip$' "$work/scrapes" || true)
lists=$(curl -fsS "$endpoint/_keywarden/requests")
echo "secrets=$n cycles=${#samples[@]} max_rss_kib=$max_rss peak_kib=$hwm samples_kib=${samples[*]}" \
  "(at the end: heap and other anonymous ${anon} KiB, binary and libraries ${file} KiB)" \
  "scrapes: $plain plain, $gz gzip; access events counted $events; requests=$lists"
