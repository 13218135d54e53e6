#!/usr/bin/env python3
"""Seed a running keywarden moto launcher with the operations runbook's demo state.

Usage::

    .venv/bin/python scripts/seed_demo.py --endpoint http://127.0.0.1:PORT [--seed N]

``--endpoint`` must be a loopback launcher started by ``tests/support/moto_server.py``: the
script needs its ``/_keywarden/`` control API and refuses anything else, so it can never touch
real AWS. Credentials are dummies and the region is us-east-1.

What it creates (nothing here prints a secret value):

* the event-service inventory: ``event-service/jwt-secret`` (85 days old, policy 90d),
  ``event-service/s2s-secret`` (35 days, policy 30d: overdue), ``event-service/database``
  (10 days, AWS rotation enabled with ``rate(30 days)``), ``event-service/redis`` (95 days,
  policy 90d: overdue; the plain AUTH token of an ElastiCache group, backed by a local
  redis-server with ``--elasticache-redis``) and ``event-service/api-key-encryption`` (179 days, policy 180d);
* ``event-service/feature-flags-key``, a secret that is not in the inventory (discovery);
* CloudWatch Logs group ``/aws/secretsmanager`` with one CloudTrail stream holding a few hundred
  Secrets Manager events over the last 10 days, among them an unknown principal reading the
  database secret and the JWT secret and a burst of AccessDenied on the redis secret;
* SNS topics ``secret-rotation-reminders`` and ``security-team``.

Running it again against the same launcher keeps existing secrets and their values, re-applies
the dates, and does not write the CloudTrail events twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import random
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

import boto3
from botocore.exceptions import ClientError

REGION = "us-east-1"
DAY = 86400
LOG_GROUP = "/aws/secretsmanager"
TOPICS = ("secret-rotation-reminders", "security-team")
SERVICE_PREFIX = "event-service/"

APP_ROLE = "event-service-prod"
APP_INSTANCES = (  # (EC2 instance id = role session name, private address)
    ("i-0abc1234def567890", "10.0.1.21"),
    ("i-0abc5678fed123456", "10.0.2.37"),
    ("i-0abc9abc0123def45", "10.0.3.14"),
)
APP_USER_AGENT = "aws-sdk-rust/1.3.9 ua/2.1 api/secretsmanager/1.125.0 os/linux lang/rust/1.85.0"
DEPLOY_USER = "ci-deployer"
DEPLOY_ADDRESS = "10.20.0.5"
OPS_USER = "alice.ops"
OPS_ADDRESS = "10.20.4.18"
UNKNOWN_ROLE = "data-export-job"
UNKNOWN_SESSION = "session"
UNKNOWN_ADDRESS = "203.0.113.50"


@dataclasses.dataclass
class DemoSecret:
    """One secret of the demo and how to fake its history."""

    name: str
    description: str
    make_value: Callable[[], str]
    age_days: int
    policy: str  # for the summary only; the inventory itself lives in keywarden's config
    reads: int  # successful GetSecretValue events by the service over the last 10 days
    in_inventory: bool = True
    aws_rotation: str | None = None  # ScheduleExpression when AWS rotation is enabled
    current_age_days: int | None = None  # current version age when it differs from age_days
    arn: str = ""
    created_now: bool = False


def _json_value(**fields: Any) -> Callable[[], str]:
    """A value factory for a JSON secret; callables in ``fields`` are evaluated per value."""
    return lambda: json.dumps({k: (v() if callable(v) else v) for k, v in fields.items()})


# Every secret value this run generated: the random tokens and the whole values built from
# them. ``--values-out`` writes them so that scripts/demo --check can search keywarden's log
# for each one.
SEEDED_VALUES: list[str] = []


def _token(nbytes: int) -> str:
    """A random URL-safe token, remembered in SEEDED_VALUES."""
    value = secrets.token_urlsafe(nbytes)
    SEEDED_VALUES.append(value)
    return value


def _seeded(make_value: Callable[[], str]) -> str:
    """Calls a value factory and remembers the whole value in SEEDED_VALUES."""
    value = make_value()
    SEEDED_VALUES.append(value)
    return value


def write_seeded_values(path: str) -> None:
    """Writes every seeded value, one per line, readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        for value in SEEDED_VALUES:
            out.write(value + "\n")


def demo_secrets() -> list[DemoSecret]:
    """The runbook's five event-service secrets plus one secret outside the inventory."""
    token = _token
    return [
        DemoSecret(
            name="event-service/jwt-secret",
            description="JWT signing key of the event service",
            make_value=_json_value(current=lambda: token(48)),
            age_days=85, policy="90d", reads=70,
        ),
        DemoSecret(
            name="event-service/s2s-secret",
            description="Shared service-to-service token",
            make_value=lambda: token(32),
            age_days=35, policy="30d", reads=60,
        ),
        DemoSecret(
            name="event-service/database",
            description="PostgreSQL credentials of the event service",
            make_value=_json_value(
                username="event_service",
                password=lambda: token(24),
                host="event-service-db.cluster-c1a2b3c4d5e6.us-east-1.rds.amazonaws.com",
                port=5432,
                dbname="events",
            ),
            age_days=10, policy="AWS rotation rate(30 days)", reads=60,
            aws_rotation="rate(30 days)",
        ),
        DemoSecret(
            name="event-service/redis",
            description="AUTH token of the event service's ElastiCache replication group",
            # As the runbook keeps REDIS_PASSWORD: the plain AUTH token.
            make_value=lambda: token(32),
            age_days=95, policy="90d", reads=45,
        ),
        DemoSecret(
            name="event-service/api-key-encryption",
            description="Key encrypting stored customer API keys",
            make_value=_json_value(primary=lambda: token(32)),
            age_days=179, policy="180d", reads=35,
        ),
        DemoSecret(
            name="event-service/feature-flags-key",
            description="Feature flag service SDK key",
            make_value=lambda: token(32),
            age_days=40, current_age_days=2, policy="none (discovered)", reads=20,
            in_inventory=False,
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Launcher access
# ---------------------------------------------------------------------------------------------


def loopback_endpoint(value: str) -> str:
    """argparse type: an http URL whose host is a loopback address."""
    parsed = urllib.parse.urlparse(value)
    host = parsed.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parsed.scheme != "http" or not loopback or not parsed.port:
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected http://127.0.0.1:PORT of a local launcher"
        )
    return value.rstrip("/")


class Launcher:
    """Talks to the launcher: boto3 clients with dummy credentials, and its control API."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        )
        self.sm = session.client("secretsmanager", endpoint_url=endpoint)
        self.logs = session.client("logs", endpoint_url=endpoint)
        self.sns = session.client("sns", endpoint_url=endpoint)
        self.elasticache = session.client("elasticache", endpoint_url=endpoint)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Calls ``/_keywarden/<path>`` and returns the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.endpoint}/_keywarden/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise SystemExit(f"control API {method} /_keywarden/{path}: {error.code} {detail}")
        except urllib.error.URLError as error:
            raise SystemExit(f"cannot reach the launcher at {self.endpoint}: {error.reason}")

    def set_dates(self, secret_id: str, **fields: Any) -> None:
        """POST /_keywarden/secret-dates for one secret."""
        self.control("POST", "secret-dates", {"secret_id": secret_id, **fields})


# ---------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------


def create_secret(launcher: Launcher, secret: DemoSecret) -> None:
    """Creates the secret with a fresh random value, or adopts it when it already exists."""
    try:
        response = launcher.sm.create_secret(
            Name=secret.name,
            Description=secret.description,
            SecretString=_seeded(secret.make_value),
            Tags=[{"Key": "service", "Value": "event-service"},
                  {"Key": "environment", "Value": "demo"}],
        )
        secret.arn = response["ARN"]
        secret.created_now = True
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceExistsException":
            raise
        secret.arn = launcher.sm.describe_secret(SecretId=secret.name)["ARN"]


def versions_by_stage(launcher: Launcher, secret_id: str) -> dict[str, str]:
    """Maps each staging label to its version id."""
    versions = launcher.sm.list_secret_version_ids(SecretId=secret_id)["Versions"]
    return {stage: v["VersionId"] for v in versions for stage in v["VersionStages"]}


def has_current_value(launcher: Launcher, secret_id: str) -> bool:
    """Whether GetSecretValue(AWSCURRENT) returns a value (the value itself is discarded)."""
    try:
        response = launcher.sm.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    except ClientError:
        return False
    return bool(response.get("SecretString") or response.get("SecretBinary"))


def enable_aws_rotation(launcher: Launcher, secret: DemoSecret) -> None:
    """Turns on AWS rotation and leaves the secret in a clean post-rotation state.

    moto 5.2.5 has no rotation Lambda to run, so RotateSecret moves AWSCURRENT to a new, empty
    version (GetSecretValue then fails) and the old value becomes AWSPREVIOUS. Repair that the
    way a successful rotation would have ended: put a new value as AWSCURRENT, then give
    AWSPREVIOUS back to the original version so the empty one carries no label.
    """
    description = launcher.sm.describe_secret(SecretId=secret.arn)
    if description.get("RotationEnabled"):
        return
    original = versions_by_stage(launcher, secret.arn)["AWSCURRENT"]
    launcher.sm.rotate_secret(
        SecretId=secret.arn, RotationRules={"ScheduleExpression": secret.aws_rotation}
    )
    if has_current_value(launcher, secret.arn):
        return
    empty = versions_by_stage(launcher, secret.arn)["AWSCURRENT"]
    launcher.sm.put_secret_value(SecretId=secret.arn, SecretString=_seeded(secret.make_value))
    launcher.sm.update_secret_version_stage(
        SecretId=secret.arn,
        VersionStage="AWSPREVIOUS",
        RemoveFromVersionId=empty,
        MoveToVersionId=original,
    )
    if not has_current_value(launcher, secret.arn):
        raise SystemExit(f"{secret.name}: AWSCURRENT still has no value after rotation")


def apply_dates(
    launcher: Launcher, secret: DemoSecret, now: int, last_read: int | None
) -> None:
    """Ages the secret through the control API (whole seconds)."""
    created = now - secret.age_days * DAY
    current = now - (secret.current_age_days or secret.age_days) * DAY
    fields: dict[str, Any] = {
        "created": created,
        "current_version_created": current,
        "last_changed": current,
    }
    if last_read is not None:
        # AWS reports LastAccessedDate truncated to the day (UTC).
        fields["last_accessed"] = last_read - last_read % DAY
    if secret.aws_rotation:
        stages = versions_by_stage(launcher, secret.arn)
        if "AWSPREVIOUS" in stages:
            # Rotation was enabled when the secret was created, and AWS rotates immediately.
            fields["version_created"] = {stages["AWSPREVIOUS"]: created}
        period = _rate_days(secret.aws_rotation)
        fields["last_rotated"] = current
        fields["rotation"] = {
            "enabled": True,
            "schedule_expression": secret.aws_rotation,
            "next_rotation": current + period * DAY if period else None,
        }
    launcher.set_dates(secret.arn, **fields)


def _rate_days(expression: str) -> int | None:
    """N of ``rate(N days)``."""
    words = expression.removeprefix("rate(").removesuffix(")").split()
    if len(words) == 2 and words[0].isdigit() and words[1].startswith("day"):
        return int(words[0])
    return None


# ---------------------------------------------------------------------------------------------
# CloudTrail
# ---------------------------------------------------------------------------------------------


class TrailWriter:
    """Builds realistic CloudTrail records of Secrets Manager calls."""

    def __init__(self, rng: random.Random, account: str):
        self.rng = rng
        self.account = account
        self.access_keys: dict[str, str] = {}

    def _key(self, who: str, prefix: str) -> str:
        """A stable fake access key id per principal (not a credential of anything)."""
        if who not in self.access_keys:
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
            self.access_keys[who] = prefix + "".join(self.rng.choices(alphabet, k=16))
        return self.access_keys[who]

    def assumed_role(self, role: str, session: str, when: int) -> dict[str, Any]:
        """userIdentity of an assumed-role session."""
        role_id = "AROA" + uuid.uuid5(uuid.NAMESPACE_DNS, role).hex[:17].upper()
        return {
            "type": "AssumedRole",
            "principalId": f"{role_id}:{session}",
            "arn": f"arn:aws:sts::{self.account}:assumed-role/{role}/{session}",
            "accountId": self.account,
            "accessKeyId": self._key(f"{role}/{session}", "ASIA"),
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": f"arn:aws:iam::{self.account}:role/{role}",
                    "accountId": self.account,
                    "userName": role,
                },
                "attributes": {
                    "creationDate": _iso(when - when % 3600),
                    "mfaAuthenticated": "false",
                },
            },
        }

    def iam_user(self, user: str) -> dict[str, Any]:
        """userIdentity of an IAM user with access keys."""
        return {
            "type": "IAMUser",
            "principalId": "AIDA" + uuid.uuid5(uuid.NAMESPACE_DNS, user).hex[:17].upper(),
            "arn": f"arn:aws:iam::{self.account}:user/{user}",
            "accountId": self.account,
            "accessKeyId": self._key(user, "AKIA"),
            "userName": user,
        }

    @staticmethod
    def aws_service(service: str) -> dict[str, Any]:
        """userIdentity of a call made by an AWS service."""
        return {"type": "AWSService", "invokedBy": service}

    def record(
        self,
        when: int,
        event_name: str,
        identity: dict[str, Any],
        source: str,
        user_agent: str,
        secret_id: str,
        error: str | None = None,
        response: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One CloudTrail record."""
        request: dict[str, Any] = {"secretId": secret_id}
        if event_name == "PutSecretValue":
            request["clientRequestToken"] = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        record: dict[str, Any] = {
            "eventVersion": "1.09",
            "userIdentity": identity,
            "eventTime": _iso(when),
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": event_name,
            "awsRegion": REGION,
            "sourceIPAddress": source,
            "userAgent": user_agent,
        }
        if error:
            record["errorCode"] = error
            record["errorMessage"] = (
                f"User: {identity.get('arn')} is not authorized to perform: "
                f"secretsmanager:{event_name} on resource: {secret_id} because no "
                f"identity-based policy allows the secretsmanager:{event_name} action"
            )
        record.update(
            {
                "requestParameters": request,
                "responseElements": response,
                "requestID": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "eventID": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
                "readOnly": event_name != "PutSecretValue",
                "eventType": "AwsApiCall",
                "managementEvent": True,
                "recipientAccountId": self.account,
                "eventCategory": "Management",
                "tlsDetails": {
                    "tlsVersion": "TLSv1.3",
                    "cipherSuite": "TLS_AES_128_GCM_SHA256",
                    "clientProvidedHostHeader": f"secretsmanager.{REGION}.amazonaws.com",
                },
            }
        )
        return record


def _iso(epoch: int) -> str:
    """ISO 8601 UTC with a Z, to the second, as CloudTrail writes eventTime."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass
class TrailSummary:
    """What the generated trail contains, for the printed summary and LastAccessedDate."""

    records: list[tuple[int, dict[str, Any]]]
    last_read: dict[str, int]
    unknown_reads: list[tuple[int, str]]  # (time, secret name)
    denied_burst: list[int]


def build_trail(
    demo: list[DemoSecret], now: int, rng: random.Random, account: str
) -> TrailSummary:
    """Generates the CloudTrail records of the last 10 days, sorted by time."""
    trail = TrailWriter(rng, account)
    by_name = {s.name: s for s in demo}
    records: list[tuple[int, dict[str, Any]]] = []
    last_read: dict[str, int] = {}
    window_start = now - 10 * DAY + 300
    window_end = now - 120  # CloudTrail delivers a few minutes late

    def secret_ref(secret: DemoSecret) -> str:
        """Callers name a secret by name mostly, by ARN sometimes."""
        return secret.arn if rng.random() < 0.3 else secret.name

    # The service reads every secret it uses from its three instances.
    for secret in demo:
        for _ in range(secret.reads):
            when = rng.randint(window_start, window_end)
            instance, address = rng.choice(APP_INSTANCES)
            identity = trail.assumed_role(APP_ROLE, instance, when)
            records.append((when, trail.record(
                when, "GetSecretValue", identity, address, APP_USER_AGENT, secret_ref(secret)
            )))
            last_read[secret.name] = max(last_read.get(secret.name, 0), when)

    # Deploys describe the inventory secrets.
    inventory = [s for s in demo if s.in_inventory]
    for _ in range(15):
        when = rng.randint(window_start, window_end)
        secret = rng.choice(inventory)
        records.append((when, trail.record(
            when, "DescribeSecret", trail.iam_user(DEPLOY_USER), DEPLOY_ADDRESS,
            "aws-cli/2.17.20 md/awscrt#0.20.11 ua/2.0 os/linux#6.1", secret_ref(secret),
        )))

    # Secrets Manager checks the database secret's rotation configuration.
    database = by_name["event-service/database"]
    for _ in range(10):
        when = rng.randint(window_start, window_end)
        records.append((when, trail.record(
            when, "DescribeSecret", trail.aws_service("secretsmanager.amazonaws.com"),
            "secretsmanager.amazonaws.com", "secretsmanager.amazonaws.com", database.arn,
        )))

    # An operator replaced the feature-flags key two days ago.
    flags = by_name["event-service/feature-flags-key"]
    when = now - (flags.current_age_days or flags.age_days) * DAY
    records.append((when, trail.record(
        when, "PutSecretValue", trail.iam_user(OPS_USER), OPS_ADDRESS,
        "aws-cli/2.17.20 md/awscrt#0.20.11 ua/2.0 os/macos#23.5", flags.name,
        response={"arn": flags.arn, "versionStages": ["AWSCURRENT"]},
    )))

    # An unknown principal, from outside the VPC, reads the database credentials, then the JWT
    # signing key (the compromise the demo walks through: its report names this reader).
    unknown_reads = []
    start = now - 6 * 3600 + rng.randint(0, 1800)
    jwt = by_name["event-service/jwt-secret"]
    for i, target in enumerate((database, database, database, database, jwt, jwt)):
        when = start + i * rng.randint(200, 900)
        identity = trail.assumed_role(UNKNOWN_ROLE, UNKNOWN_SESSION, when)
        records.append((when, trail.record(
            when, "GetSecretValue", identity, UNKNOWN_ADDRESS,
            "Boto3/1.34.131 md/Botocore#1.34.131 ua/2.0 os/linux lang/python#3.12.4",
            secret_ref(target),
        )))
        unknown_reads.append((when, target.name))
        last_read[target.name] = max(last_read[target.name], when)

    # A burst of denied reads on the redis secret: 6 within 90 seconds.
    redis = by_name["event-service/redis"]
    instance, address = APP_INSTANCES[1]
    burst_start = now - 3 * 3600 - rng.randint(0, 3600)
    denied_burst = sorted(burst_start + rng.randint(0, 90) for _ in range(6))
    for when in denied_burst:
        identity = trail.assumed_role(APP_ROLE, instance, when)
        records.append((when, trail.record(
            when, "GetSecretValue", identity, address, APP_USER_AGENT, redis.name,
            error="AccessDenied",
        )))

    records.sort(key=lambda item: item[0])
    return TrailSummary(records, last_read, unknown_reads, denied_burst)


def write_trail(launcher: Launcher, stream: str, trail: TrailSummary) -> bool:
    """Writes the records to the log group, oldest first, unless the stream already has events.

    Returns whether events were written.
    """
    try:
        launcher.logs.create_log_group(logGroupName=LOG_GROUP)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceAlreadyExistsException":
            raise
    streams = launcher.logs.describe_log_streams(
        logGroupName=LOG_GROUP, logStreamNamePrefix=stream
    )["logStreams"]
    existing = next((s for s in streams if s["logStreamName"] == stream), None)
    if existing is None:
        launcher.logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    elif existing.get("storedBytes") or existing.get("lastEventTimestamp"):
        return False
    events = [
        {"timestamp": when * 1000, "message": json.dumps(record, separators=(",", ":"))}
        for when, record in trail.records
    ]
    # PutLogEvents wants each batch in time order, at most 10,000 events and ~1 MB.
    for start in range(0, len(events), 500):
        response = launcher.logs.put_log_events(
            logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[start:start + 500]
        )
        rejected = response.get("rejectedLogEventsInfo")
        if rejected:
            raise SystemExit(f"PutLogEvents rejected events: {rejected}")
    return True


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def create_topics(launcher: Launcher) -> list[str]:
    """Creates the SNS topics (CreateTopic is idempotent) and returns their ARNs."""
    return [launcher.sns.create_topic(Name=name)["TopicArn"] for name in TOPICS]


ELASTICACHE_GROUP = "event-service-redis"


def back_elasticache_group(launcher: Launcher, ports: str) -> None:
    """Creates the ElastiCache replication group of REDIS_PASSWORD (in-transit encryption on, its
    AUTH token the secret's current value) and backs it with the local redis-server the demo
    started (``PORT:TLS_PORT``), so rotations really change which tokens Redis accepts."""
    try:
        port, tls_port = (int(p) for p in ports.split(":"))
    except ValueError as error:
        raise SystemExit(f"--elasticache-redis wants PORT:TLS_PORT, not {ports!r}") from error
    token = launcher.sm.get_secret_value(
        SecretId="event-service/redis", VersionStage="AWSCURRENT"
    )["SecretString"]
    groups = launcher.elasticache.describe_replication_groups()["ReplicationGroups"]
    if not any(g["ReplicationGroupId"] == ELASTICACHE_GROUP for g in groups):
        launcher.elasticache.create_replication_group(
            ReplicationGroupId=ELASTICACHE_GROUP,
            ReplicationGroupDescription="event-service Redis (demo: a local redis-server)",
            TransitEncryptionEnabled=True,
            AuthToken=token,
        )
    launcher.control("POST", "elasticache-backing", {
        "replication_group_id": ELASTICACHE_GROUP,
        "redis": {"host": "127.0.0.1", "port": port},
        "endpoint": {"address": "localhost", "port": tls_port},
        "modify_seconds": 1.0,
    })


def account_of(arn: str) -> str:
    """The account id field of an ARN."""
    return arn.split(":")[4]


def print_summary(
    endpoint: str,
    demo: list[DemoSecret],
    trail: TrailSummary,
    trail_written: bool,
    stream: str,
    topics: list[str],
) -> None:
    """Prints what was created: names, ARNs, ages, counts. Never a secret value."""
    print(f"Seeded {endpoint} (region {REGION})")
    print("Secrets:")
    for secret in demo:
        state = "created" if secret.created_now else "existing"
        age = secret.current_age_days or secret.age_days
        role = "inventory" if secret.in_inventory else "NOT in inventory"
        print(f"  {secret.name:36} {state:8} current value {age:3}d old, "
              f"policy {secret.policy} [{role}]")
        print(f"  {'':36} {secret.arn}")
    if trail_written:
        reads = sum(1 for _, r in trail.records
                    if r["eventName"] == "GetSecretValue" and "errorCode" not in r)
        print(f"CloudTrail: {LOG_GROUP} / {stream}: {len(trail.records)} events "
              f"({reads} successful GetSecretValue) from {_iso(trail.records[0][0])} "
              f"to {_iso(trail.records[-1][0])}")
        read_secrets = sorted({name for _, name in trail.unknown_reads})
        print(f"  unknown principal arn:aws:sts::{account_of(demo[0].arn)}:assumed-role/"
              f"{UNKNOWN_ROLE}/{UNKNOWN_SESSION} from {UNKNOWN_ADDRESS}: "
              f"{len(trail.unknown_reads)} reads of {' and '.join(read_secrets)}, "
              f"{_iso(trail.unknown_reads[0][0])} to {_iso(trail.unknown_reads[-1][0])}")
        print(f"  AccessDenied burst: {len(trail.denied_burst)} on event-service/redis "
              f"between {_iso(trail.denied_burst[0])} and {_iso(trail.denied_burst[-1])}")
    else:
        print(f"CloudTrail: {LOG_GROUP} / {stream} already had events; left unchanged")
    print("SNS topics:")
    for arn in topics:
        print(f"  {arn}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, type=loopback_endpoint,
                        help="the launcher, e.g. http://127.0.0.1:5000")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the CloudTrail layout (values are always random)")
    parser.add_argument("--values-out", default=None,
                        help="write every seeded secret value to this file (mode 0600), one a "
                             "line, for the demo's leak scan")
    parser.add_argument("--elasticache-redis", default=None, metavar="PORT:TLS_PORT",
                        help="create the REDIS_PASSWORD replication group and back it with the "
                             "redis-server on these loopback ports")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Seeds the launcher and prints a summary."""
    args = parse_args(argv)
    launcher = Launcher(args.endpoint)
    launcher.control("GET", "health")  # exits unless this is a keywarden launcher
    rng = random.Random(args.seed)
    now = int(time.time())

    demo = demo_secrets()
    for secret in demo:
        create_secret(launcher, secret)
        if secret.aws_rotation:
            enable_aws_rotation(launcher, secret)

    account = account_of(demo[0].arn)
    stream = f"{account}_CloudTrail_{REGION}"
    trail = build_trail(demo, now, rng, account)
    trail_written = write_trail(launcher, stream, trail)
    for secret in demo:
        last_read = trail.last_read.get(secret.name) if trail_written else None
        apply_dates(launcher, secret, now, last_read)

    if args.elasticache_redis:
        back_elasticache_group(launcher, args.elasticache_redis)
    topics = create_topics(launcher)
    print_summary(args.endpoint, demo, trail, trail_written, stream, topics)
    if args.values_out:
        write_seeded_values(args.values_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
