"""Driver of benches/sqs_ingest.sh: fills two identical SQS queues in moto (through the
launcher's /_keywarden/sqs-messages route) with N EventBridge events (each `detail` a
CloudTrail record of a watched secret, unique eventIDs), drains the first with a plain boto3 receive+delete loop, then the second with a release keywarden
([access] source = "sqs"), and prints both throughputs, keywarden's CPU time per event and its
resident memory as the events go through. Exits 1 when keywarden does not count every event
exactly once or does not drain the queue.

Usage: python sqs_ingest.py ENDPOINT N BINARY WORKDIR
Environment: SQS_INGEST_OVERLAP sets `[access] overlap` (how long eventIDs are remembered).
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import boto3

endpoint, n, binary, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
session = dict(endpoint_url=endpoint, region_name="us-east-1",
               aws_access_key_id="bench", aws_secret_access_key="bench")
sm = boto3.client("secretsmanager", **session)
sqs = boto3.client("sqs", **session)
ACCOUNT = "123456789012"
SECRETS = 20
for i in range(SECRETS):
    sm.create_secret(Name=f"bench/secret-{i:02}", SecretString="x")


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


now = int(time.time())


def body(i):
    t = now - 600 + (i % 590)
    detail = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "AssumedRole", "principalId": "AROAX:i",
                         "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/app-{i % 7}/i-{i % 13}",
                         "accountId": ACCOUNT},
        "eventTime": iso(t), "eventSource": "secretsmanager.amazonaws.com",
        "eventName": "GetSecretValue", "awsRegion": "us-east-1",
        "sourceIPAddress": f"10.0.{i % 200}.{i % 250}", "userAgent": "aws-sdk-java",
        "requestParameters": {"secretId": f"bench/secret-{i % SECRETS:02}"},
        "responseElements": None, "requestID": f"req-{i:08}",
        "eventID": f"0a1b2c3d-0000-4000-8000-{i:012}", "readOnly": True,
        "eventType": "AwsApiCall", "managementEvent": True, "recipientAccountId": ACCOUNT,
        "eventCategory": "Management", "tlsDetails": {"tlsVersion": "TLSv1.3"},
    }
    return json.dumps({
        "version": "0", "id": f"6a7e8feb-b491-4cf7-a9f1-{i:012}",
        "detail-type": "AWS API Call via CloudTrail", "source": "aws.secretsmanager",
        "account": ACCOUNT, "time": iso(t), "region": "us-east-1", "resources": [],
        "detail": detail,
    })


def fill(name):
    # Straight into moto's queue through the launcher (/_keywarden/sqs-messages), 2,000 bodies a
    # request: SendMessageBatch over HTTP costs milliseconds a message here.
    for start in range(0, n, 2000):
        bodies = [body(i) for i in range(start, min(n, start + 2000))]
        req = urllib.request.Request(
            f"{endpoint}/_keywarden/sqs-messages", method="POST",
            data=json.dumps({"account_id": ACCOUNT, "region": "us-east-1", "queue_name": name,
                             "bodies": bodies}).encode())
        with urllib.request.urlopen(req, timeout=600) as r:
            sent = json.loads(r.read())["sent"]
        assert sent == len(bodies), f"{name}: sent {sent} of {len(bodies)}"


def depth(url):
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


urls = {}
for name in ("bench-boto3", "bench-keywarden"):
    urls[name] = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "120"})["QueueUrl"]
t = time.monotonic()
for name in urls:
    fill(name)
for name, url in urls.items():
    assert depth(url) == n, f"{name} holds {depth(url)} messages, not {n}"
print(f"filled 2 queues with {n} events each in {time.monotonic() - t:.1f} s", flush=True)

# 1. The reference: a plain boto3 receive + delete loop.
url = urls["bench-boto3"]
got = 0
t0 = time.perf_counter()
while True:
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    if not msgs:
        break
    got += len(msgs)
    sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(msgs)])
boto_s = time.perf_counter() - t0 - 1.0  # the last, empty long poll
assert got == n, f"boto3 loop received {got} of {n}"
print(f"boto3 receive+delete loop: {n} events in {boto_s:.2f} s = {n / boto_s:.0f} events/s", flush=True)

# 2. keywarden on the second queue.
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
config = os.path.join(work, "keywarden.toml")
with open(config, "w") as f:
    f.write(f'[aws]\nregion = "us-east-1"\nendpoint_url = "{endpoint}"\n'
            f'[server]\nlisten = "127.0.0.1:{port}"\n'
            f'[poll]\nmetadata_every = "60s"\naccess_every = "5s"\n'
            f'[access]\nsource = "sqs"\nqueue_url = "{urls["bench-keywarden"]}"\n'
            + (f'overlap = "{os.environ["SQS_INGEST_OVERLAP"]}"\n'
               if os.environ.get("SQS_INGEST_OVERLAP") else "")
            +
            f'[state]\npath = "{work}/state.db"\n')
    for i in range(SECRETS):
        f.write(f'[[secret]]\nname = "S{i:02}"\nid = "bench/secret-{i:02}"\n')
env = dict(PATH=os.environ.get("PATH", ""), AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
           AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", KEYWARDEN_LOG="warn")
log = open(os.path.join(work, "keywarden.log"), "w")
t0 = time.perf_counter()
proc = subprocess.Popen([binary, "run", "--config", config], env=env, stdout=log, stderr=log)
tick = os.sysconf("SC_CLK_TCK")


def cpu_s():
    with open(f"/proc/{proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def rss_kib():
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def counted():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return -1
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith("keywarden_secret_access_events_total{"))


samples = []  # (events counted, RSS KiB)
deadline = time.monotonic() + max(120, n / 50)
done_at = None
while time.monotonic() < deadline:
    if proc.poll() is not None:
        sys.exit(f"keywarden exited with {proc.returncode}; see {work}/keywarden.log")
    c = counted()
    samples.append((c, rss_kib()))
    if c == n and depth(urls["bench-keywarden"]) == 0:
        done_at = time.perf_counter()
        break
    if c > n:
        sys.exit(f"keywarden counted {c} events of {n}: some twice")
    time.sleep(0.25)
if done_at is None:
    sys.exit(f"keywarden did not count {n} events and drain the queue in time (last count {samples[-1][0]})")
kw_s = done_at - t0
cpu = cpu_s()
peak = 0
with open(f"/proc/{proc.pid}/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1])
proc.terminate()
proc.wait(timeout=30)
print(f"keywarden: {n} events in {kw_s:.2f} s (from process start to all counted and deleted)"
      f" = {n / kw_s:.0f} events/s; {kw_s and (n / kw_s) / (n / boto_s):.2f}x the boto3 loop", flush=True)
print(f"keywarden CPU: {cpu:.2f} s user+system = {cpu / n * 1e6:.1f} us per event", flush=True)
marks = []
for q in (0.1, 0.25, 0.5, 0.75, 1.0):
    s = next((x for x in samples if x[0] >= q * n), samples[-1])
    marks.append(f"{int(q * n)} events: {s[1] / 1024:.1f} MiB")
print("keywarden RSS as events went through: " + ", ".join(marks) + f"; peak {peak / 1024:.1f} MiB"
      f" ({len(samples)} samples, every 0.25 s)", flush=True)
