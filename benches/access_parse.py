#!/usr/bin/env python3
"""Plain Python reference of keywarden's access counting, for benches/access_compare.sh.

Usage: access_parse.py FILE [REPEAT] [--in-memory] [--counts OUT]

Streams FILE (one CloudTrail record per line) and does what benches/access_parse.rs does with
the json module and dicts: parse, keep eventSource secretsmanager.amazonaws.com, map secretId or
secretIdList entries (name, full ARN, partial ARN) to the 20 watched secrets, label the event and
the outcome, count per (secret, event, outcome). Prints events/s and the peak resident memory.

With --in-memory the file's lines are read into a list first, outside the timing, so that only
parse + classify + count is timed (benches/access_parse.rs does the same with
KEYWARDEN_ACCESS_MEMORY=1).

With --counts OUT every counter is written to OUT, one "secret event outcome count" line each,
sorted, then the records and skipped lines: the format of access_parse.rs's
KEYWARDEN_ACCESS_COUNTS, which benches/access_compare.sh diffs against this.
"""

import json
import resource
import sys
import time

EVENTS = {
    "GetSecretValue", "BatchGetSecretValue", "DescribeSecret", "PutSecretValue", "UpdateSecret",
    "UpdateSecretVersionStage", "RotateSecret", "DeleteSecret", "RestoreSecret",
}
SM = "secretsmanager.amazonaws.com"


def strip_suffix(arn):
    head, sep, suffix = arn.rpartition("-")
    if sep and len(suffix) == 6 and suffix.isascii() and suffix.isalnum():
        return head
    return None


def build_index():
    index = {}
    for i in range(20):
        name = f"svc/secret-{i:02d}"
        arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbC{i:03d}"
        for key in (name, arn, strip_suffix(arn)):
            index.setdefault(key, i)
    return index


def resolve(index, secret_id):
    hit = index.get(secret_id)
    if hit is not None or not secret_id.startswith("arn:"):
        return hit
    _, sep, resource_part = secret_id.partition(":secret:")
    if not sep:
        return None
    partial = strip_suffix(secret_id)
    if partial is not None and partial in index:
        return index[partial]
    if resource_part in index:
        return index[resource_part]
    name = strip_suffix(resource_part)
    return index.get(name) if name is not None else None


def outcome(code):
    if not code:
        return "success"
    if "AccessDenied" in code or code.startswith("Unauthorized") or code.startswith("Client.Unauthorized") or code == "NotAuthorized":
        return "denied"
    return "error"


def count(path, index, lines=None):
    """One pass over the file, or over `lines` when given: (seconds, counts, records, skipped)."""
    if lines is not None:
        return count_lines(lines, index)
    with open(path, encoding="utf-8") as f:
        return count_lines(f, index)


def count_lines(lines, index):
    counts = {}
    records = skipped = 0
    started = time.perf_counter()
    for line in lines:
        records += 1
        try:
            r = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in ("eventID", "eventSource", "eventName")) or not r["eventID"]:
            skipped += 1
            continue
        if r["eventSource"] != SM:
            continue
        name = r["eventName"]
        label = name if name in EVENTS else "other"
        result = outcome(r.get("errorCode"))
        params = r.get("requestParameters") or {}
        ids = []
        if params.get("secretId"):
            ids.append(params["secretId"])
        ids.extend(params.get("secretIdList") or [])
        for secret_id in ids:
            i = resolve(index, secret_id)
            if i is not None:
                key = (i, label, result)
                counts[key] = counts.get(key, 0) + 1
    return time.perf_counter() - started, counts, records, skipped


def write_counts(path, counts, records, skipped):
    lines = sorted(f"{i} {event} {result} {n}" for (i, event, result), n in counts.items())
    lines += [f"records {records}", f"skipped {skipped}"]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    argv = sys.argv[1:]
    counts_path = None
    if "--counts" in argv:
        at = argv.index("--counts")
        counts_path = argv[at + 1]
        del argv[at:at + 2]
    args = [a for a in argv if a != "--in-memory"]
    in_memory = len(args) != len(argv)
    path = args[0]
    repeat = int(args[1]) if len(args) > 1 else 3
    index = build_index()
    lines = None
    if in_memory:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    # The fastest of `repeat` passes (the machine is shared).
    runs = [count(path, index, lines) for _ in range(max(1, repeat))]
    secs, counts, records, skipped = min(runs, key=lambda r: r[0])
    total = sum(counts.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mode = "in memory" if in_memory else "streamed"
    print(f"python ({mode}): {records} records, {total} counted, {skipped} skipped in {secs:.3f}s: "
          f"{records / secs:.0f} events/s (best pass), peak RSS {peak} KiB")
    print(f"python: counters {len(counts)} series, total {total}, skipped {skipped}")
    if counts_path is not None:
        write_counts(counts_path, counts, records, skipped)


if __name__ == "__main__":
    main()
