#!/usr/bin/env python3
"""Read-only probes of the demo's emulator for ``scripts/demo --check``.

Usage::

    .venv/bin/python scripts/demo_probe.py --endpoint URL current SECRET_ID
    .venv/bin/python scripts/demo_probe.py --endpoint URL values --out PATH

``current`` prints the version id labelled AWSCURRENT (never a value). ``values`` writes every
value of every version of every secret the emulator holds (the seeded ones and those keywarden's
rotations generated), plus the secret-bearing fields of JSON values, one a line, to PATH (mode
0600), for the demo's leak scan; it prints only how many it wrote. Like ``seed_demo.py`` it
accepts only a loopback endpoint, so it can never read real AWS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import boto3

from seed_demo import REGION, loopback_endpoint

# JSON fields that describe where a credential is used, not the credential: they legitimately
# appear in logs (hosts, user names), so the leak scan does not look for them alone.
NOT_SECRET_FIELDS = {"username", "user", "host", "port", "dbname", "engine"}

# Shorter strings are not searched alone (they could match by chance); whole values always are.
MIN_FIELD_LEN = 12


def client(endpoint: str):
    """A Secrets Manager client on the emulator with dummy credentials."""
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    ).client("secretsmanager", endpoint_url=endpoint)


def current_version(sm, secret_id: str) -> str:
    """The version id labelled AWSCURRENT."""
    versions = sm.list_secret_version_ids(SecretId=secret_id, IncludeDeprecated=True)["Versions"]
    for v in versions:
        if "AWSCURRENT" in v.get("VersionStages", []):
            return v["VersionId"]
    raise SystemExit(f"{secret_id}: no version is labelled AWSCURRENT")


def secret_strings(value: str) -> list[str]:
    """The whole value, and for a JSON object its string fields that hold secret material."""
    found = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        return found
    if isinstance(parsed, dict):
        for key, field in parsed.items():
            if key not in NOT_SECRET_FIELDS and isinstance(field, str) and len(field) >= MIN_FIELD_LEN:
                found.append(field)
    return found


def every_value(sm) -> list[str]:
    """Every value of every version of every secret, with their secret fields."""
    out: list[str] = []
    for page in sm.get_paginator("list_secrets").paginate():
        for secret in page["SecretList"]:
            arn = secret["ARN"]
            versions = sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True)["Versions"]
            for v in versions:
                try:
                    got = sm.get_secret_value(SecretId=arn, VersionId=v["VersionId"])
                except sm.exceptions.ResourceNotFoundException:
                    continue
                if got.get("SecretString"):
                    out.extend(secret_strings(got["SecretString"]))
    return sorted(set(out))


def main(argv: list[str] | None = None) -> int:
    """Runs one probe."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, type=loopback_endpoint)
    sub = parser.add_subparsers(dest="probe", required=True)
    cur = sub.add_parser("current", help="print the AWSCURRENT version id of a secret")
    cur.add_argument("secret_id")
    val = sub.add_parser("values", help="write every stored value to a 0600 file")
    val.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    sm = client(args.endpoint)
    if args.probe == "current":
        print(current_version(sm, args.secret_id))
        return 0
    values = every_value(sm)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for value in values:
            f.write(value + "\n")
    print(f"{len(values)} stored values and secret fields written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
