"""Driver of benches/org_scale.sh: a release keywarden reading ACCOUNTS member accounts x REGIONS
regions of PER secrets each in moto, through assumed roles (with an ExternalId).

1. Seeds moto through the launcher's control API: one role `keywarden-read` per member account
   that the central account (123456789012) may assume with the ExternalId (`/_keywarden/roles`),
   PER secrets `fleet/service-NNNNN` in each account and region (`/_keywarden/seed-secrets`,
   each with one AWSCURRENT version unless ORG_SCALE_VALUES=0).
2. Starts keywarden with one `[[account]]` per member account and `[discovery]` of `fleet/`.
3. Waits for readiness (the first cycle looks up every secret's versions), then for CYCLES
   metadata cycles, and prints for each: the AWS calls made since the previous one
   (keywarden_aws_requests_total, and moto's own count of what it served), the cycle's duration
   (keywarden_poll_duration_seconds sum/count), VmRSS.
4. Times scrapes with curl (OpenMetrics with gzip, as Prometheus asks; OpenMetrics and text
   without), and prints VmRSS samples (every second through the run), their maximum and VmHWM.

Exits 1 if keywarden dies, is not ready in time, a cycle does not come, or a cycle misses a page.

Usage: python org_scale.py ENDPOINT BINARY WORKDIR ACCOUNTS REGIONS PER CYCLES [MOTO_PID]
Environment: ORG_SCALE_EVERY (metadata_every, default "30s"), ORG_SCALE_VALUES (1).
"""

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

endpoint, binary, work = sys.argv[1], sys.argv[2], sys.argv[3]
accounts, nregions, per, cycles = (int(x) for x in sys.argv[4:8])
moto_pid = int(sys.argv[8]) if len(sys.argv) > 8 else None
every = os.environ.get("ORG_SCALE_EVERY", "30s")
values = os.environ.get("ORG_SCALE_VALUES", "1") != "0"
CENTRAL = "123456789012"
EXTERNAL_ID = "kw-bench-ext"
REGIONS = ["eu-west-1", "us-east-1", "ap-southeast-2", "sa-east-1"][:nregions]
members = [f"{210_000_000_000 + a:012}" for a in range(accounts)]
total = accounts * nregions * per
pages_per_cycle = accounts * nregions * max(1, -(-per // 100)) + 1  # + the home target's page


def control(route, body):
    req = urllib.request.Request(f"{endpoint}/_keywarden/{route}", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def moto_requests():
    with urllib.request.urlopen(f"{endpoint}/_keywarden/requests", timeout=60) as r:
        return json.loads(r.read())


t0 = time.monotonic()
for account in members:
    control("roles", {
        "account_id": account, "role_name": "keywarden-read",
        "trust_policy": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{CENTRAL}:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}}]}})
    for region in REGIONS:
        created = control("seed-secrets", {"account_id": account, "region": region, "count": per,
                                           "prefix": "fleet/service-", "value": values})["created"]
        assert created == per, f"{account} {region}: created {created} of {per}"
print(f"seeded {accounts} accounts x {len(REGIONS)} regions x {per} secrets = {total} secrets"
      f" ({'with' if values else 'without'} a version each) in {time.monotonic() - t0:.1f} s",
      flush=True)
if moto_pid:
    with open(f"/proc/{moto_pid}/status") as f:
        moto_rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    print(f"moto VmRSS after seeding: {moto_rss / 1024:.0f} MiB", flush=True)

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
base = f"http://127.0.0.1:{port}"
config = os.path.join(work, "keywarden.toml")
with open(config, "w") as f:
    f.write(f'[aws]\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\n'
            f'[server]\nlisten = "127.0.0.1:{port}"\n'
            f'[poll]\nmetadata_every = "{every}"\n'
            f'[state]\npath = "{work}/state.db"\n'
            '[discovery]\nname_prefixes = ["fleet/"]\ndefault_rotate_every = "90d"\n')
    regions = ", ".join(f'"{r}"' for r in REGIONS)
    for account in members:
        f.write(f'[[account]]\nid = "{account}"\nrole_arn = "arn:aws:iam::{account}:role/keywarden-read"\n'
                f'external_id_env = "KW_EXTERNAL_ID"\nregions = [{regions}]\n')
env = dict(PATH=os.environ.get("PATH", ""), AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
           AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", KEYWARDEN_LOG="warn",
           KW_EXTERNAL_ID=EXTERNAL_ID)
log = open(os.path.join(work, "keywarden.log"), "w")
moto_before = moto_requests()
started = time.monotonic()
proc = subprocess.Popen([binary, "run", "--config", config], env=env, stdout=log, stderr=log)


def status(field):
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


rss_samples = []  # (seconds since start, VmRSS KiB)
stop = threading.Event()


def sampler():
    while not stop.is_set() and proc.poll() is None:
        try:
            rss_samples.append((time.monotonic() - started, status("VmRSS")))
        except OSError:
            return
        stop.wait(1.0)


threading.Thread(target=sampler, daemon=True).start()


def die(why):
    stop.set()
    if proc.poll() is None:
        proc.terminate()
    log.flush()
    with open(os.path.join(work, "keywarden.log")) as f:
        tail = f.read()[-3000:]
    sys.exit(f"{why}\n--- keywarden log (tail) ---\n{tail}")


SERIES = re.compile(r'^(keywarden_aws_requests_total|keywarden_poll_duration_seconds_(?:sum|count)'
                    r'|keywarden_last_successful_poll_timestamp_seconds|keywarden_account_up)'
                    r'\{([^}]*)\} (\S+)')


def process_metrics():
    """The process series of one gzip scrape: {(name, labels): value}."""
    req = urllib.request.Request(f"{base}/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read()
        if r.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
    out = {}
    for line in raw.decode().splitlines():
        if not line.startswith("keywarden_"):
            continue
        m = SERIES.match(line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def pick(metrics, name, **labels):
    total_ = 0.0
    for (n, l), v in metrics.items():
        if n == name and all(f'{k}="{val}"' in l for k, val in labels.items()):
            total_ += v
    return total_


def aws(metrics, service, operation):
    return pick(metrics, "keywarden_aws_requests_total", service=service, operation=operation)


ready_deadline = time.monotonic() + 120 + total * 0.05
while True:
    if proc.poll() is not None:
        die(f"keywarden exited with {proc.returncode}")
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > ready_deadline:
        die("keywarden did not become ready in time")
    time.sleep(1)
ready_s = time.monotonic() - started
m = process_metrics()
print(f"ready after {ready_s:.1f} s (first cycle: {aws(m, 'secretsmanager', 'ListSecrets'):.0f} ListSecrets,"
      f" {aws(m, 'secretsmanager', 'ListSecretVersionIds'):.0f} ListSecretVersionIds,"
      f" {aws(m, 'sts', 'AssumeRole'):.0f} AssumeRole; VmRSS {status('VmRSS') / 1024:.1f} MiB,"
      f" VmHWM {status('VmHWM') / 1024:.1f} MiB)", flush=True)
up = pick(m, "keywarden_account_up")
if up != accounts * nregions + 1:  # the members and the home account
    die(f"keywarden_account_up sums to {up}, not {accounts * nregions + 1}")


def wait_cycle(last_ts):
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"keywarden exited with {proc.returncode}")
        m = process_metrics()
        ts = pick(m, "keywarden_last_successful_poll_timestamp_seconds", source="metadata")
        if ts != last_ts:
            return m, ts
        time.sleep(2)
    die("no metadata cycle within 10 minutes")


prev = m
prev_ts = pick(m, "keywarden_last_successful_poll_timestamp_seconds", source="metadata")
prev_moto = moto_requests()
rows = []
for c in range(1, cycles + 1):
    m, prev_ts = wait_cycle(prev_ts)
    moto_now = moto_requests()
    rss = status("VmRSS")
    d = lambda service, op: aws(m, service, op) - aws(prev, service, op)  # noqa: E731
    n_cycles = (pick(m, "keywarden_poll_duration_seconds_count", source="metadata")
                - pick(prev, "keywarden_poll_duration_seconds_count", source="metadata"))
    secs = (pick(m, "keywarden_poll_duration_seconds_sum", source="metadata")
            - pick(prev, "keywarden_poll_duration_seconds_sum", source="metadata"))
    md = lambda op: moto_now.get(op, 0) - prev_moto.get(op, 0)  # noqa: E731
    row = dict(cycles=n_cycles, list_secrets=d("secretsmanager", "ListSecrets"),
               assume_role=d("sts", "AssumeRole"),
               versions=d("secretsmanager", "ListSecretVersionIds"),
               moto_list=md("secretsmanager:ListSecrets"), moto_assume=md("sts:AssumeRole"),
               moto_versions=md("secretsmanager:ListSecretVersionIds"),
               seconds=secs / n_cycles if n_cycles else float("nan"), rss=rss)
    rows.append(row)
    print(f"cycle {c}: {n_cycles:.0f} cycle(s) since the last sample; per cycle: ListSecrets"
          f" {row['list_secrets'] / max(n_cycles, 1):.0f} (moto served {row['moto_list'] / max(n_cycles, 1):.0f}),"
          f" AssumeRole {row['assume_role']:.0f} (moto {row['moto_assume']}),"
          f" ListSecretVersionIds {row['versions']:.0f} (moto {row['moto_versions']});"
          f" cycle time {row['seconds']:.2f} s; VmRSS {rss / 1024:.1f} MiB", flush=True)
    prev, prev_moto = m, moto_now

# Scrapes, timed by curl.
hwm_before_scrapes = status("VmHWM")
print(f"VmHWM before the timed scrapes: {hwm_before_scrapes / 1024:.1f} MiB", flush=True)
om = "Accept: application/openmetrics-text; version=1.0.0"
kinds = [("openmetrics+gzip", ["-H", om, "-H", "Accept-Encoding: gzip"]),
         ("openmetrics plain", ["-H", om]), ("text 0.0.4 plain", [])]
scrapes = {}
for name, headers in kinds:
    times, size = [], 0
    for _ in range(5):
        out = subprocess.run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                              *headers, f"{base}/metrics"], capture_output=True, text=True, check=True)
        t, size = out.stdout.split()
        times.append(float(t))
    times.sort()
    scrapes[name] = (times[len(times) // 2], times[0], times[-1], int(size))
    print(f"scrape {name}: median {times[2] * 1000:.0f} ms (min {times[0] * 1000:.0f},"
          f" max {times[-1] * 1000:.0f}), {int(size)} bytes", flush=True)

hwm, anon, file_ = status("VmHWM"), status("RssAnon"), status("RssFile")
stop.set()
proc.terminate()
proc.wait(timeout=60)
peak_sample = max(r for _, r in rss_samples)
steady = rows[1:] if len(rows) > 1 else rows
print(f"RESULT secrets={total} targets={accounts * nregions}+home"
      f" list_secrets_per_cycle={[round(r['list_secrets'] / max(r['cycles'], 1)) for r in steady]}"
      f" (expected {pages_per_cycle}) assume_role_per_cycle={[r['assume_role'] for r in steady]}"
      f" cycle_seconds={[round(r['seconds'], 2) for r in steady]}"
      f" rss_mib_after_cycles={[round(r['rss'] / 1024, 1) for r in rows]}"
      f" max_rss_sample_mib={peak_sample / 1024:.1f} vmhwm_mib={hwm / 1024:.1f}"
      f" (before the timed scrapes {hwm_before_scrapes / 1024:.1f})"
      f" (at the end: anonymous {anon / 1024:.1f} MiB, file {file_ / 1024:.1f} MiB)"
      f" ready_s={ready_s:.0f} rss_samples={len(rss_samples)}", flush=True)
for r in steady:
    if r["cycles"] >= 1 and round(r["list_secrets"] / r["cycles"]) != pages_per_cycle:
        sys.exit(f"a cycle read {r['list_secrets'] / r['cycles']} ListSecrets pages, not {pages_per_cycle}")
