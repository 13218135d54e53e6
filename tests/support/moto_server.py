#!/usr/bin/env python3
"""keywarden's AWS emulator for tests: moto 5.2.5 in-process, plus a small control API.

Usage::

    .venv/bin/python tests/support/moto_server.py [--host 127.0.0.1] [--port 0] [--quiet]

The server binds to a loopback address only (``--port 0`` picks a free port) with SO_REUSEADDR,
so a test can stop it and start it again on the same port. Once it accepts connections it
prints exactly one line on stdout and flushes::

    KEYWARDEN-MOTO-READY port=<port>

Everything else (request log, moto's own chatter) goes to stderr. SIGTERM and SIGINT stop it
cleanly with exit status 0.

This file is the ONE place where moto's differences from AWS are corrected. Every patch is in
``apply_moto_patches`` and says which AWS behaviour it restores.

The same port also serves a control API under ``/_keywarden/`` (JSON in and out):

``GET    /_keywarden/health``        liveness and versions.
``POST   /_keywarden/secret-dates``  set the stored dates and rotation state of a secret.
``GET    /_keywarden/requests``      ``{"<service>:<Operation>": count}`` of AWS requests served.
``DELETE /_keywarden/requests``      reset those counts.
``POST   /_keywarden/reset``         reset all moto state (like ``POST /moto-api/reset``), counts
                                    and faults.
``GET    /_keywarden/faults``        the injected faults and what they did so far.
``POST   /_keywarden/faults``        inject faults (below); only the keys present change.
``DELETE /_keywarden/faults``        remove every fault and forget what they did.
``POST   /_keywarden/elasticache-backing``  back a replication group with a real redis-server.
``POST   /_keywarden/roles``         create (or update) an IAM role in any account:
                                    ``{"account_id", "role_name", "trust_policy": {...},
                                    "policy": {...}}``; AssumeRole honours its trust policy and
                                    ``sts:ExternalId`` condition (patch 8).
``GET    /_keywarden/sts``           temporary credentials: ``{"max_session_seconds", "sessions",
                                    "refused": [{"access_key_id", "operation"}]}``; a request
                                    signed with expired AssumeRole credentials is refused with
                                    ExpiredToken, as on AWS (patch 10).
``POST   /_keywarden/sts``           ``{"max_session_seconds": n | null}``: cap the duration of
                                    the credentials AssumeRole issues from now on (tests of
                                    refresh before expiry; AWS's minimum is 900 s).
``POST   /_keywarden/seed-secrets``  create many secrets in one account and region straight in
                                    moto's backend (benchmarks: 100,000 over HTTP take hours):
                                    ``{"account_id", "region", "count", "prefix": "fleet/service-",
                                    "start": 0, "value": true}``; names are ``<prefix><i:05>`` for
                                    ``start <= i < start + count``, each with one AWSCURRENT version
                                    (none with ``"value": false``). Answers ``{"created": n}``;
                                    existing names are left alone (not counted).
``POST   /_keywarden/sqs-messages``  put message bodies straight into a queue (benchmarks):
                                    ``{"account_id", "region", "queue_name", "bodies": [str]}``,
                                    each as SendMessage would. Answers ``{"sent": n}``, 404 for an
                                    unknown queue. Neither route is counted in ``requests``.

``--initial-no-auth-action-count N`` turns on moto's IAM enforcement after the first N AWS
requests (use them to create a user with full rights and its keys); see ``apply_iam_patches`` for
what is corrected so that Resource and ResourceTag conditions count as on AWS.

Every other path goes to moto unchanged.

``secret-dates`` body (epochs are integer seconds; only the keys present change)::

    {"secret_id": "<name, ARN or partial ARN>",
     "created": 1700000000,                 # CreatedDate of the secret
     "current_version_created": 1700000000, # CreatedDate of the AWSCURRENT version
     "last_rotated": 1700000000 | null,     # LastRotatedDate
     "last_accessed": 1700000000 | null,    # LastAccessedDate (secret and AWSCURRENT version)
     "last_changed": 1700000000,            # LastChangedDate (extension)
     "version_created": {"<version id>": 1700000000},
     "rotation": {"enabled": true, "automatically_after_days": 90 | null,
                  "schedule_expression": "rate(30 days)" | null, "duration": "3h" | null,
                  "next_rotation": 1700000000 | null},
     "region": "us-east-1", "account_id": "123456789012"}   # only to disambiguate a name

It answers 200 with the secret's DescribeSecret view, 400 for a malformed body (nothing is
changed), 404 for an unknown secret or version, 409 when a name matches several regions.

``faults`` body (AWS does all of this to a client; moto never does)::

    {"throttle": {"secretsmanager:PutSecretValue": 6},  # answer the next 6 calls of that
                                                        # operation with ThrottlingException
     "filter_log_events_page_size": 3 | null,  # FilterLogEvents returns at most 3 events per
                                               # page (a smaller request limit is kept), so a
                                               # reader must follow nextToken
     "list_secrets_lag_seconds": 20 | null}    # ListSecrets shows each secret as it was 20 s
                                               # ago (AWS: "may lag changes by up to 5 minutes")

Throttle counts add up per operation; a throttled call is counted in ``/_keywarden/requests``
like any other. ``GET`` answers ``{"throttle": {op: remaining}, "throttled": {op: answered},
"filter_log_events_page_size": n, "filter_log_events_next_token_requests": n,
"list_secrets_lag_seconds": n}``. With a lag, a secret created within the lag is not listed
yet and a listed secret shows its entry as of the lag ago (a deleted secret disappears at once);
the past is recorded from the moment the lag is set.

``elasticache-backing`` body (the group must exist: CreateReplicationGroup first)::

    {"replication_group_id": "event-service-redis",
     "redis": {"host": "127.0.0.1", "port": 6390},      # a redis-server the TEST started, its
                                                        # plaintext port (the launcher's own
                                                        # control connection)
     "endpoint": {"address": "localhost", "port": 6391},  # what DescribeReplicationGroups
                                                        # reports as NodeGroups[0].PrimaryEndpoint
                                                        # (the TLS port when the group has
                                                        # TransitEncryptionEnabled)
     "modify_seconds": 1.0,                             # how long a change shows "modifying"
     "status": "snapshotting",                          # optional: hold the group in a status
                                                        # ("available" releases it)
     "region": "us-east-1", "account_id": "123456789012"}

On registration the launcher creates its own ACL user on that redis (AWS's control plane) and
gives the ``default`` user exactly the group's current AUTH tokens (the ``AuthToken`` of
CreateReplicationGroup). Only ``status`` may be sent again alone. It answers 200 with
``{"replication_group_id", "status", "tokens": <how many are valid>}``, 404 for an unknown group.
See ``apply_elasticache_patches`` for what ModifyReplicationGroup then does.
"""

from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import io
import ipaddress
import json
import logging
import re
import secrets
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

LOG = logging.getLogger("keywarden.moto")

READY_LINE = "KEYWARDEN-MOTO-READY port={port}"
CONTROL_PREFIX = "/_keywarden/"

# Services keywarden talks to: their Flask apps are built before READY so the first request of a
# test does not pay for it.
PREWARMED_SERVICES = (
    "secretsmanager", "logs", "sns", "sqs", "sts", "elasticache", "organizations", "iam",
)

# Attributes this launcher stores on moto's objects. Prefixed so they never collide with moto's.
SECRET_LAST_ACCESSED = "_kw_last_accessed"  # on FakeSecret: epoch seconds or None
SECRET_SCHEDULE_EXPRESSION = "_kw_schedule_expression"  # on FakeSecret: str or None
SECRET_ROTATION_DURATION = "_kw_rotation_duration"  # on FakeSecret: str or None
VERSION_LAST_ACCESSED = "_kw_last_accessed"  # key in a moto version dict: epoch seconds
SNS_FIFO_DEDUP = "_kw_fifo_dedup"  # on a FIFO Topic: {dedup key: (monotonic time, message id)}

AWSCURRENT = "AWSCURRENT"
AWSPENDING = "AWSPENDING"

_RATE_RE = re.compile(r"^rate\(\s*(\d+)\s+(day|days|hour|hours)\s*\)$")


# ---------------------------------------------------------------------------------------------
# Request accounting
# ---------------------------------------------------------------------------------------------


class RequestCounter:
    """Thread-safe count of AWS requests served, keyed ``"<service>:<Operation>"``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, key: str) -> None:
        """Counts one request."""
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        """Returns a copy of the counts, sorted by key."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    def reset(self) -> None:
        """Forgets every count."""
        with self._lock:
            self._counts.clear()


# Per-request slot in which the call_action hook records the operation moto resolved.
_REQUEST_CONTEXT = threading.local()


def _record_moto_operation(service: str | None, action: str | None) -> None:
    """Stores moto's own ``service:Action`` for the request being served on this thread."""
    slot = getattr(_REQUEST_CONTEXT, "slot", None)
    if slot is not None and slot.get("op") is None and service and action:
        slot["op"] = f"{service}:{action}"


# X-Amz-Target prefixes that name a service differently from its SigV4 signing name.
_TARGET_PREFIX_SERVICES = {
    "logs_20140328": "logs",
    "amazonsqs": "sqs",
    "amazonssm": "ssm",
    "trent": "kms",
}


def derive_operation(environ: dict[str, Any]) -> str:
    """Works out ``service:Operation`` of a raw AWS request the way moto routes it.

    Service: the SigV4 credential scope of ``Authorization``, else the ``X-Amz-Target`` prefix,
    else the first label of ``Host``. Operation: ``X-Amz-Target`` (``secretsmanager.ListSecrets``,
    ``Logs_20140328.FilterLogEvents``), else the ``Action`` query or form parameter (SNS, query
    SQS), else ``METHOD /path``. Used only when moto did not resolve the action itself.
    """
    target = environ.get("HTTP_X_AMZ_TARGET") or ""
    service = None
    auth = environ.get("HTTP_AUTHORIZATION") or ""
    match = re.search(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request", auth)
    if match:
        service = match.group(1).lower()
    elif target:
        prefix = target.split(".", 1)[0].lower()
        service = _TARGET_PREFIX_SERVICES.get(prefix, prefix)
    else:
        host = (environ.get("HTTP_HOST") or "").split(":", 1)[0]
        service = host.split(".", 1)[0] if host and not host[0].isdigit() else "unknown"

    if target:
        return f"{service}:{target.rsplit('.', 1)[-1]}"
    action = _action_parameter(environ)
    if action:
        return f"{service}:{action}"
    return f"{service}:{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO', '/')}"


def _action_parameter(environ: dict[str, Any]) -> str | None:
    """Returns the ``Action`` of a query-protocol request (query string or form body).

    A form body is read and put back, so moto still sees it.
    """
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if query.get("Action"):
        return query["Action"][0]
    content_type = environ.get("CONTENT_TYPE", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if length <= 0 or length > 10 * 1024 * 1024:
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    form = parse_qs(body.decode("utf-8", errors="replace"))
    return form["Action"][0] if form.get("Action") else None


# ---------------------------------------------------------------------------------------------
# Injected faults (``/_keywarden/faults``)
# ---------------------------------------------------------------------------------------------


class Faults:
    """Thread-safe set of injected faults: throttling, FilterLogEvents paging, ListSecrets lag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Removes every fault and forgets what they did."""
        with self._lock:
            self._throttle: collections.Counter[str] = collections.Counter()
            self._throttled: collections.Counter[str] = collections.Counter()
            self._page_size: int | None = None
            self._next_token_requests = 0
            self._lag: float = 0.0
            # (monotonic time, {ARN: ListSecrets entry}) oldest first, while a lag is set.
            self._history: list[tuple[float, dict[str, Any]]] = []

    def snapshot(self) -> dict[str, Any]:
        """The state ``GET /_keywarden/faults`` answers."""
        with self._lock:
            return {
                "throttle": {k: v for k, v in sorted(self._throttle.items()) if v > 0},
                "throttled": dict(sorted(self._throttled.items())),
                "filter_log_events_page_size": self._page_size,
                "filter_log_events_next_token_requests": self._next_token_requests,
                "list_secrets_lag_seconds": self._lag or None,
            }

    def configure(self, body: Any) -> None:
        """Applies ``POST /_keywarden/faults``: validates everything first, then changes only
        the keys present."""
        if not isinstance(body, dict):
            raise ControlError(400, "expected a JSON object")
        unknown = sorted(set(body) - {"throttle", "filter_log_events_page_size",
                                      "list_secrets_lag_seconds"})
        if unknown:
            raise ControlError(400, f"unknown keys: {', '.join(unknown)}")
        throttle = body.get("throttle", {})
        if not isinstance(throttle, dict) or not all(
            isinstance(op, str) and re.match(r"^[a-z0-9-]+:[A-Za-z0-9]+$", op)
            and isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for op, n in throttle.items()
        ):
            raise ControlError(400, 'throttle: expected {"<service>:<Operation>": count >= 0}')
        page_size = body.get("filter_log_events_page_size")
        if page_size is not None and (
            isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1
        ):
            raise ControlError(400, "filter_log_events_page_size: expected an integer >= 1 or null")
        lag = body.get("list_secrets_lag_seconds")
        if lag is not None and (
            isinstance(lag, bool) or not isinstance(lag, (int, float)) or lag < 0
        ):
            raise ControlError(400, "list_secrets_lag_seconds: expected seconds >= 0 or null")
        record_now = False
        with self._lock:
            for op, n in throttle.items():
                self._throttle[op] += n
            if "filter_log_events_page_size" in body:
                self._page_size = page_size
            if "list_secrets_lag_seconds" in body:
                self._lag = float(lag or 0)
                self._history = []
                record_now = self._lag > 0
        if record_now:
            self.record_secrets()

    def take_throttle(self, op: str) -> bool:
        """Whether this call of ``op`` is to be throttled (uses up one)."""
        with self._lock:
            if self._throttle.get(op, 0) > 0:
                self._throttle[op] -= 1
                self._throttled[op] += 1
                return True
            return False

    def page_size(self, has_next_token: bool) -> int | None:
        """The FilterLogEvents page size, counting a request that follows a nextToken."""
        with self._lock:
            if self._page_size is not None and has_next_token:
                self._next_token_requests += 1
            return self._page_size

    def lagging(self) -> bool:
        """Whether a ListSecrets lag is set."""
        with self._lock:
            return self._lag > 0

    def record_secrets(self) -> None:
        """Records every secret's ListSecrets entry now, while a lag is set."""
        if not self.lagging():
            return
        entries = _list_secrets_entries()
        now = time.monotonic()
        with self._lock:
            if self._lag <= 0:
                return
            self._history.append((now, entries))
            # Keep the newest record older than the lag and everything after it.
            cutoff = now - self._lag
            while len(self._history) > 1 and self._history[1][0] <= cutoff:
                self._history.pop(0)

    def lagged_entries(self) -> dict[str, Any] | None:
        """Every secret's ListSecrets entry as of the lag ago (the oldest record when the lag
        was set more recently than that); None without a lag."""
        with self._lock:
            if self._lag <= 0 or not self._history:
                return None
            cutoff = time.monotonic() - self._lag
            chosen = self._history[0][1]
            for when, entries in self._history:
                if when <= cutoff:
                    chosen = entries
            return chosen


FAULTS = Faults()


def _list_secrets_entries() -> dict[str, Any]:
    """{ARN: ListSecrets entry} of every secret in every account and region (deep copies)."""
    from moto.secretsmanager.models import secretsmanager_backends

    out: dict[str, Any] = {}
    for _account, _region, backend in secretsmanager_backends.iter_backends():
        for secret in list(backend.secrets.values()):
            entry = copy.deepcopy(secret.to_dict())
            out[entry.get("ARN") or secret.arn] = entry
    return out


def _throttled_response(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The error AWS sends a throttled call: ThrottlingException (JSON protocols) or a
    Throttling error document (query protocols), HTTP 400."""
    if environ.get("HTTP_X_AMZ_TARGET"):
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"),
                   ("x-amzn-ErrorType", "ThrottlingException")]
    else:
        body = (b'<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>'
                b'<Message>Rate exceeded</Message></Error>'
                b'<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>')
        headers = [("Content-Type", "text/xml")]
    headers.append(("Content-Length", str(len(body))))
    start_response("400 Bad Request", headers)
    return [body]



class StsSessions:
    """Expiry of the credentials AssumeRole issued (patch 10), and the refusals it caused."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.max_session_seconds: int | None = None
        self.expiry: dict[str, Any] = {}
        self.refused: list[dict[str, Any]] = []

    def issued(self, access_key_id: str, expiration: Any) -> None:
        with self.lock:
            self.expiry[access_key_id] = expiration

    def expired(self, environ: dict[str, Any]) -> str | None:
        """The access key id of a request signed with expired temporary credentials."""
        match = re.search(r"Credential=([A-Z0-9]+)/", environ.get("HTTP_AUTHORIZATION", ""))
        if match is None:
            return None
        from moto.core.utils import utcnow

        key = match.group(1)
        with self.lock:
            expiration = self.expiry.get(key)
            if expiration is None or utcnow() < expiration:
                return None
            self.refused.append({"access_key_id": key, "operation": derive_operation(environ)})
        return key

    def configure(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or set(body) - {"max_session_seconds"}:
            raise ControlError(400, 'expected {"max_session_seconds": <seconds> | null}')
        cap = body.get("max_session_seconds")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise ControlError(400, "max_session_seconds must be a positive integer or null")
        with self.lock:
            self.max_session_seconds = cap
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"max_session_seconds": self.max_session_seconds,
                    "sessions": len(self.expiry), "refused": list(self.refused)}

    def clear(self) -> None:
        with self.lock:
            self.max_session_seconds = None
            self.expiry.clear()
            self.refused.clear()


STS_SESSIONS = StsSessions()


def _expired_response(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """What AWS answers a request signed with expired credentials: ExpiredTokenException (JSON
    protocols, HTTP 400) or an ExpiredToken error document (query protocols, HTTP 403)."""
    message = "The security token included in the request is expired"
    if environ.get("HTTP_X_AMZ_TARGET"):
        body = json.dumps({"__type": "ExpiredTokenException", "message": message}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"),
                   ("x-amzn-ErrorType", "ExpiredTokenException")]
        status = "400 Bad Request"
    else:
        body = (b'<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code>'
                b'<Message>' + message.encode() + b'</Message></Error>'
                b'<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>')
        headers = [("Content-Type", "text/xml")]
        status = "403 Forbidden"
    headers.append(("Content-Length", str(len(body))))
    start_response(status, headers)
    return [body]

def _keep_form_body(environ: dict[str, Any]) -> bytes:
    """The raw body of a form-encoded (query protocol: SNS, ElastiCache) request, kept for the IAM
    signature check (``apply_iam_patches``); ``wsgi.input`` is restored for moto."""
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return b""
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    return raw


def _limit_filter_log_events(environ: dict[str, Any]) -> None:
    """Caps the ``limit`` of a FilterLogEvents request at the injected page size."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        request = json.loads(raw or b"{}")
    except ValueError:
        request = None
    if isinstance(request, dict):
        size = FAULTS.page_size(bool(request.get("nextToken")))
        if size is not None:
            request["limit"] = min(int(request.get("limit") or 10000), size)
            raw = json.dumps(request).encode("utf-8")
    environ["wsgi.input"] = io.BytesIO(raw)
    environ["CONTENT_LENGTH"] = str(len(raw))


# ---------------------------------------------------------------------------------------------
# moto patches: each one restores an AWS behaviour moto 5.2.5 gets wrong
# ---------------------------------------------------------------------------------------------


def _rate_days(expression: str | None) -> int | None:
    """Days of a ``rate(N days)`` schedule expression; None for hours, cron or nothing."""
    if not expression:
        return None
    match = _RATE_RE.match(expression.strip())
    if match and match.group(2).startswith("day"):
        return int(match.group(1))
    return None


def _rate_seconds(expression: str | None) -> int | None:
    """Seconds of a ``rate(N days|hours)`` schedule expression; None for cron or nothing."""
    if not expression:
        return None
    match = _RATE_RE.match(expression.strip())
    if not match:
        return None
    unit = 86400 if match.group(2).startswith("day") else 3600
    return int(match.group(1)) * unit


def _current_version_id(secret: Any) -> str | None:
    """The id of the version that carries AWSCURRENT, if any."""
    for version_id, version in secret.versions.items():
        if AWSCURRENT in version["version_stages"]:
            return version_id
    return None


def apply_moto_patches() -> None:
    """Patches moto's Secrets Manager and SNS models and responses, and hooks request accounting.

    Patches are applied to classes, so they survive ``/moto-api/reset`` and ``/_keywarden/reset``.
    """
    from moto.core.responses import BaseResponse
    from moto.secretsmanager.exceptions import (
        InvalidParameterException,
        InvalidRequestException,
        ResourceExistsException,
        SecretNotFoundException,
    )
    from moto.secretsmanager.models import FakeSecret, SecretsManagerBackend
    from moto.secretsmanager.responses import SecretsManagerResponse

    # --- Accounting hook (not an AWS fix) ----------------------------------------------------
    # Every moto service that answers through BaseResponse.call_action resolves its operation
    # here; record it so /_keywarden/requests counts exactly what moto dispatched.
    original_call_action = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        try:
            _record_moto_operation(self.service_name, self._get_action())
        except Exception:  # accounting must never break a request
            pass
        return original_call_action(self)

    BaseResponse.call_action = call_action

    # --- Patch 1: ListSecretVersionIds (hook: SecretsManagerResponse.list_secret_version_ids) -
    # AWS returns each version's own CreatedDate; moto returns "now" for every version, and "now"
    # as LastAccessedDate too. AWS also returns the secret's real ARN (moto returns its name),
    # omits NextToken on the last page (moto sends ""), pages with MaxResults/NextToken, leaves
    # out versions without staging labels unless IncludeDeprecated=true, and answers an unknown
    # secret with ResourceNotFoundException (moto fails with HTTP 500).
    def list_secret_version_ids(self: Any) -> str:
        secret_id = self._get_param("SecretId", if_none="")
        max_results = self._get_int_param("MaxResults")
        next_token = self._get_param("NextToken")
        include_deprecated = self._get_bool_param("IncludeDeprecated", False)
        backend = self.backend
        if not secret_id or secret_id not in backend.secrets:
            raise SecretNotFoundException()
        secret = backend.secrets[secret_id]
        versions = []
        for version_id, version in secret.versions.items():
            if not version["version_stages"] and not include_deprecated:
                continue
            entry: dict[str, Any] = {
                "VersionId": version_id,
                "VersionStages": list(version["version_stages"]),
                "CreatedDate": version["createdate"],
            }
            if version.get(VERSION_LAST_ACCESSED) is not None:
                entry["LastAccessedDate"] = version[VERSION_LAST_ACCESSED]
            versions.append(entry)
        start = int(next_token) if next_token and str(next_token).isdigit() else 0
        end = len(versions) if not max_results else start + int(max_results)
        response: dict[str, Any] = {
            "ARN": secret.arn,
            "Name": secret.name,
            "Versions": versions[start:end],
        }
        if end < len(versions):
            response["NextToken"] = str(end)
        return json.dumps(response)

    SecretsManagerResponse.list_secret_version_ids = list_secret_version_ids

    # --- Patches 2 and 3: DescribeSecret / ListSecrets entries (hook: FakeSecret.to_dict; ------
    # ReplicaSecret.to_dict delegates to it).
    # 2. AWS returns LastAccessedDate once the secret has been read; moto always sends null.
    #    Here it is whatever /_keywarden/secret-dates stored (AWS itself truncates it to the day).
    # 3. AWS keeps RotationRules.ScheduleExpression and Duration as given to RotateSecret, and
    #    reports AutomaticallyAfterDays calculated from a rate(N days) schedule; moto only knows
    #    AutomaticallyAfterDays (0 when a schedule was given).
    # Also: AWS returns LastRotatedDate whenever the secret has been rotated (moto only after a
    # RotateSecret call in this process), lists in VersionIdsToStages only versions that carry
    # a staging label, and omits absent fields instead of sending null.
    original_to_dict = FakeSecret.to_dict

    def to_dict(self: Any) -> dict[str, Any]:
        data = original_to_dict(self)
        data["LastAccessedDate"] = getattr(self, SECRET_LAST_ACCESSED, None)
        if self.rotation_requested:
            schedule = getattr(self, SECRET_SCHEDULE_EXPRESSION, None)
            duration = getattr(self, SECRET_ROTATION_DURATION, None)
            days = self.auto_rotate_after_days or _rate_days(schedule)
            rules: dict[str, Any] = {}
            if days:
                rules["AutomaticallyAfterDays"] = days
            if schedule:
                rules["ScheduleExpression"] = schedule
            if duration:
                rules["Duration"] = duration
            data["RotationRules"] = rules
            if not self.rotation_lambda_arn:
                data.pop("RotationLambdaARN", None)
        data["LastRotatedDate"] = self.last_rotation_date
        labelled = {
            version_id: list(version["version_stages"])
            for version_id, version in self.versions.items()
            if version["version_stages"]
        }
        for key in ("VersionIdsToStages", "SecretVersionsToStages"):
            if key in data:
                data[key] = labelled
        return {key: value for key, value in data.items() if value is not None}

    FakeSecret.to_dict = to_dict

    # --- Patch 3 (continued) and 5: RotateSecret (hook: SecretsManagerBackend.rotate_secret) --
    # 3. Keep ScheduleExpression and Duration, and treat a schedule as enabling rotation the way
    #    AWS does (moto enables rotation only for AutomaticallyAfterDays > 0). AWS refuses
    #    AutomaticallyAfterDays together with ScheduleExpression.
    # 5. AWS's in-progress check: RotateSecret fails with "A previous rotation isn't complete"
    #    when AWSPENDING is on a version other than AWSCURRENT, and succeeds when AWSPENDING sits
    #    on the AWSCURRENT version (a finished rotation). moto 5.2.5 has it the other way round.
    original_rotate_secret = SecretsManagerBackend.rotate_secret

    def rotate_secret(
        self: Any,
        secret_id: str,
        client_request_token: str | None = None,
        rotation_lambda_arn: str | None = None,
        rotation_rules: dict[str, Any] | None = None,
        rotate_immediately: bool = True,
    ) -> str:
        rules = rotation_rules or {}
        schedule = rules.get("ScheduleExpression")
        if "AutomaticallyAfterDays" in rules and schedule:
            raise InvalidParameterException(
                "You cannot specify both AutomaticallyAfterDays and ScheduleExpression."
            )
        if schedule is not None and not re.match(r"^\s*(rate|cron)\(.*\)\s*$", schedule):
            raise InvalidParameterException("Invalid ScheduleExpression.")
        secret = self.secrets.get(secret_id)
        if secret is not None and hasattr(secret, "rotation_requested"):
            current = _current_version_id(secret)
            for version_id, version in secret.versions.items():
                if AWSPENDING not in version["version_stages"]:
                    continue
                if version_id == current:
                    version["version_stages"].remove(AWSPENDING)
                else:
                    raise InvalidRequestException(
                        "A previous rotation isn't complete. That rotation will be reattempted."
                    )
        result = original_rotate_secret(
            self,
            secret_id,
            client_request_token=client_request_token,
            rotation_lambda_arn=rotation_lambda_arn,
            rotation_rules=rotation_rules,
            rotate_immediately=rotate_immediately,
        )
        secret = self.secrets[secret_id]
        if rotation_rules:
            setattr(secret, SECRET_SCHEDULE_EXPRESSION, schedule)
            setattr(secret, SECRET_ROTATION_DURATION, rules.get("Duration"))
            if schedule:
                secret.rotation_enabled = True
                period = _rate_seconds(schedule)
                secret.next_rotation_date = int(time.time()) + period if period else None
        return result

    SecretsManagerBackend.rotate_secret = rotate_secret

    # --- Patch 4: UpdateSecretVersionStage (hook: SecretsManagerBackend.update_secret_version_stage)
    # In AWS, the version carrying AWSCURRENT *is* the current version: GetSecretValue without
    # VersionId/VersionStage returns it, and the next PutSecretValue demotes it to AWSPREVIOUS.
    # moto keeps a separate default_version_id that this call does not move, so after a
    # rotation-style label move GetSecretValue returns the old value and a later PutSecretValue
    # leaves two versions labelled AWSCURRENT.
    original_update_stage = SecretsManagerBackend.update_secret_version_stage

    def update_secret_version_stage(
        self: Any,
        secret_id: str,
        version_stage: str,
        remove_from_version_id: str,
        move_to_version_id: str,
    ) -> tuple[str, str]:
        result = original_update_stage(
            self, secret_id, version_stage, remove_from_version_id, move_to_version_id
        )
        if version_stage == AWSCURRENT:
            secret = self.secrets[secret_id]
            current = _current_version_id(secret)
            if current is not None and hasattr(secret, "set_default_version_id"):
                secret.set_default_version_id(current)
        return result

    SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage

    # --- Patch 7: PutSecretValue with an existing ClientRequestToken (hook: -------------------
    # SecretsManagerBackend.put_secret_value). AWS: a version can never be changed. Reusing the
    # token of an existing version with the same SecretString/SecretBinary is an idempotent
    # success that returns that version and changes nothing (not even its staging labels);
    # reusing it with a different value fails with ResourceExistsException. moto 5.2.5
    # overwrites the value silently while the version carries AWSPENDING, which hides a resume
    # that regenerates the pending value under the same token.
    original_put_secret_value = SecretsManagerBackend.put_secret_value

    def put_secret_value(
        self: Any,
        secret_id: str,
        secret_string: str | None,
        secret_binary: str | None,
        client_request_token: str | None,
        version_stages: list[str],
    ) -> str:
        secret = self.secrets.get(secret_id) if self._is_valid_identifier(secret_id) else None
        versions = getattr(secret, "versions", None)
        if client_request_token and versions and client_request_token in versions:
            version = versions[client_request_token]
            if (
                version.get("secret_string") == secret_string
                and version.get("secret_binary") == secret_binary
            ):
                return secret.to_short_dict(
                    include_version_stages=True, version_id=client_request_token
                )
            raise ResourceExistsException(
                f"You can't use ClientRequestToken {client_request_token} because that value "
                f"is already in use for a version of secret {secret.arn}."
            )
        return original_put_secret_value(
            self,
            secret_id=secret_id,
            secret_string=secret_string,
            secret_binary=secret_binary,
            client_request_token=client_request_token,
            version_stages=version_stages,
        )

    SecretsManagerBackend.put_secret_value = put_secret_value

    # --- Fault hook (not an AWS fix): ListSecrets lag (hook: SecretsManagerResponse.list_secrets)
    # AWS: "ListSecrets is eventually consistent ... may lag changes by up to five minutes".
    # With /_keywarden/faults list_secrets_lag_seconds set, each listed secret is shown as it
    # was that long ago, and secrets that did not exist then are left out.
    original_list_secrets = SecretsManagerResponse.list_secrets

    def list_secrets(self: Any) -> str:
        body = original_list_secrets(self)
        lagged = FAULTS.lagged_entries()
        if lagged is None:
            return body
        data = json.loads(body)
        data["SecretList"] = [
            lagged[entry["ARN"]]
            for entry in data.get("SecretList", [])
            if entry.get("ARN") in lagged
        ]
        return json.dumps(data)

    SecretsManagerResponse.list_secrets = list_secrets

    # --- Patch 6: SNS FIFO deduplication (hook: moto.sns.models.Topic.publish) ---------------
    # AWS: a FIFO topic accepts a message whose MessageDeduplicationId (or, with
    # ContentBasedDeduplication, whose body hash) was already published within the last five
    # minutes, but does not deliver it again. moto only drops a duplicate inside an SQS FIFO
    # queue while the first copy is still in that queue, so a subscriber that already deleted
    # the first copy receives the second one.
    from moto.sns.models import Topic

    original_topic_publish = Topic.publish
    fifo_window_seconds = 300

    def topic_publish(
        self: Any,
        message: str,
        subject: str | None = None,
        message_attributes: dict[str, Any] | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        message_structure: str | None = None,
    ) -> str:
        if not getattr(self, "fifo_topic", False):
            return original_topic_publish(
                self,
                message,
                subject=subject,
                message_attributes=message_attributes,
                group_id=group_id,
                deduplication_id=deduplication_id,
                message_structure=message_structure,
            )
        key = deduplication_id
        if key is None and getattr(self, "content_based_deduplication", False):
            key = "sha256:" + hashlib.sha256(message.encode("utf-8")).hexdigest()
        seen: dict[str, tuple[float, str]] = self.__dict__.setdefault(
            SNS_FIFO_DEDUP, {}
        )
        now = time.monotonic()
        for old_key in [k for k, (t, _) in seen.items() if now - t >= fifo_window_seconds]:
            del seen[old_key]
        if key is not None and key in seen:
            return seen[key][1]
        message_id = original_topic_publish(
            self,
            message,
            subject=subject,
            message_attributes=message_attributes,
            group_id=group_id,
            deduplication_id=deduplication_id,
            message_structure=message_structure,
        )
        if key is not None:
            seen[key] = (now, message_id)
        return message_id

    Topic.publish = topic_publish

    # --- Patch 8: AssumeRole honours the role's trust policy (hook: TokenResponse.assume_role)
    # moto 5.2.5 assumes any role ARN, whether the role exists or not, whatever its trust policy
    # and ExternalId ("the role does not need to exist"). AWS answers AccessDenied when the role
    # does not exist, when no Allow statement of its trust policy names the caller's account
    # (or "*"), and when the statement's ``sts:ExternalId`` condition is not met by the
    # request's ExternalId (missing or different): the confused-deputy guard member accounts
    # rely on. Roles are created with ``/_keywarden/roles`` (a test cannot assume into an
    # account to create one there, exactly as on AWS).
    from moto.sts.exceptions import STSClientError
    from moto.sts.responses import TokenResponse

    original_assume_role = TokenResponse.assume_role

    def assume_role(self: Any) -> Any:
        role_arn = self._get_param("RoleArn") or ""
        external_id = self._get_param("ExternalId")
        caller = self.current_account
        why = _assume_role_refusal(role_arn, caller, external_id)
        if why is not None:
            LOG.info("STS: AssumeRole of %s by %s refused: %s", role_arn, caller, why)
            raise STSClientError(
                "AccessDenied",
                f"User: arn:aws:iam::{caller}:user/caller is not authorized to perform: "
                f"sts:AssumeRole on resource: {role_arn}",
            )
        return original_assume_role(self)

    TokenResponse.assume_role = assume_role

    # --- Patch 9: SQS receive and delete in constant time per message (hooks: Queue.messages,
    # Queue.delete_message) ------------------------------------------------------------------
    # moto 5.2.5 builds the list of every visible message of the queue on each ReceiveMessage
    # (two clock reads per message) and rebuilds the whole message list on each DeleteMessage
    # (twice over), so a queue of N messages costs O(N) per call and draining it O(N^2): a
    # 100,000-message queue takes hours to drain. AWS's cost per call does not depend on the
    # queue's depth. Receive now walks the messages lazily and stops at the batch size; delete
    # removes the one message holding the receipt handle. Same results, same errors.
    from moto.sqs.exceptions import ReceiptHandleIsInvalid
    from moto.sqs.models import Queue

    class _VisibleMessages:
        """The visible, non-delayed messages of a queue, walked on demand (a snapshot of the
        list's order is taken when the walk starts)."""

        __slots__ = ("queue",)

        def __init__(self, queue: Any) -> None:
            self.queue = queue

        def __iter__(self) -> Any:
            for message in list(self.queue._messages):
                if message.visible and not message.delayed:
                    yield message

        def __bool__(self) -> bool:
            return any(True for _ in self)

        def __len__(self) -> int:
            return sum(1 for _ in self)

    Queue.messages = property(lambda self: _VisibleMessages(self))  # type: ignore[assignment]
    sqs_delete_lock = threading.Lock()

    def delete_message(self: Any, receipt_handle: str) -> None:
        with sqs_delete_lock:
            if receipt_handle in self.deleted_messages:
                return  # already deleted: AWS accepts it again
            for index, message in enumerate(self._messages):
                if message.had_receipt_handle(receipt_handle):
                    break
            else:
                raise ReceiptHandleIsInvalid()
            del self._messages[index]
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)

    Queue.delete_message = delete_message  # type: ignore[assignment]

    # moto also computes every queue attribute, ApproximateNumberOfMessages* included (a walk
    # of the whole queue reading the clock twice per message), for each SendMessage (to read
    # ContentBasedDeduplication) and twice for each message received (to read
    # MessageRetentionPeriod). Those two paths now skip the counts, which they never read;
    # GetQueueAttributes still counts.
    from moto.sqs.models import SQSBackend

    counts_skipped = threading.local()
    for count_name in ("approximate_number_of_messages",
                       "approximate_number_of_messages_not_visible",
                       "approximate_number_of_messages_delayed"):
        counted = getattr(Queue, count_name)

        def count(self: Any, counted: Any = counted) -> int:
            if getattr(counts_skipped, "on", False):
                return 0
            return counted.fget(self)

        setattr(Queue, count_name, property(count))
    original_send_message = SQSBackend.send_message

    def send_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts_skipped.on = True
        try:
            return original_send_message(self, *args, **kwargs)
        finally:
            counts_skipped.on = False

    SQSBackend.send_message = send_message  # type: ignore[assignment]

    def is_message_valid_based_on_retention_period(
        self: Any, queue_name: str, message: Any
    ) -> bool:
        queue = self.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return retain_until > time.time()

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[assignment]
        is_message_valid_based_on_retention_period
    )


    # --- Patch 10: temporary credentials expire (hooks: STSBackend.assume_role, and the WSGI
    # middleware) -----------------------------------------------------------------------------
    # moto 5.2.5 accepts the credentials AssumeRole issued forever; AWS refuses a request signed
    # with them once their Expiration has passed (ExpiredTokenException). Every assumed role's
    # access key id is remembered with its expiry, and ``KeywardenApp`` answers such a request
    # as AWS does (see ``_expired_response``). ``/_keywarden/sts`` can cap the session length
    # (``max_session_seconds``) below AWS's 900 s minimum, so that a test sees credentials
    # expire and be refreshed within seconds.
    from moto.sts.models import STSBackend

    original_backend_assume_role = STSBackend.assume_role

    def backend_assume_role(self: Any, *args: Any, **kwargs: Any) -> Any:
        cap = STS_SESSIONS.max_session_seconds
        if cap is not None and "duration" in kwargs:
            kwargs["duration"] = min(int(kwargs["duration"]), cap)
        role = original_backend_assume_role(self, *args, **kwargs)
        STS_SESSIONS.issued(role.access_key_id, role.expiration)
        return role

    STSBackend.assume_role = backend_assume_role  # type: ignore[assignment]

def _iam_role(role_arn: str) -> Any:
    """The moto IAM role an ARN names, or None."""
    from moto.iam.models import iam_backends

    m = re.match(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:.*/)?([^/]+)$", role_arn)
    if m is None:
        return None
    partition, account, name = m.groups()
    backend = iam_backends[account][partition]
    for role in backend.roles.values():
        if role.name == name:
            return role
    return None


def _assume_role_refusal(role_arn: str, caller: str, external_id: str | None) -> str | None:
    """Why AWS would refuse ``caller`` assuming ``role_arn`` (None: allowed)."""
    role = _iam_role(role_arn)
    if role is None:
        return "the role does not exist"
    try:
        document = json.loads(role.assume_role_policy_document)
    except (TypeError, ValueError):
        return "the trust policy is not JSON"
    for st in _as_list(document.get("Statement", [])):
        if st.get("Effect") != "Allow":
            continue
        if not any(a in ("sts:AssumeRole", "sts:*", "*") for a in _as_list(st.get("Action", []))):
            continue
        principals = st.get("Principal", {})
        aws = _as_list(principals.get("AWS", [])) if isinstance(principals, dict) else _as_list(principals)
        if not any(
            p == "*" or p == caller or p == f"arn:aws:iam::{caller}:root"
            or str(p).startswith(f"arn:aws:iam::{caller}:")
            for p in aws
        ):
            continue
        wanted = (
            st.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId")
        )
        if wanted is not None and external_id not in _as_list(wanted):
            continue
        return None
    return "no statement of the trust policy allows this caller with this ExternalId"


def create_role(body: Any) -> dict[str, Any]:
    """``/_keywarden/roles``: a role in any account, with its trust policy and inline policy."""
    from moto.iam.models import iam_backends

    if not isinstance(body, dict):
        raise ControlError(400, "expected a JSON object")
    account = body.get("account_id")
    name = body.get("role_name")
    trust = body.get("trust_policy")
    if not (isinstance(account, str) and re.fullmatch(r"\d{12}", account)):
        raise ControlError(400, "account_id: expected a 12-digit account id")
    if not isinstance(name, str) or not name:
        raise ControlError(400, "role_name: expected a role name")
    if not isinstance(trust, dict):
        raise ControlError(400, "trust_policy: expected a policy document (a JSON object)")
    backend = iam_backends[account]["aws"]
    role = _iam_role(f"arn:aws:iam::{account}:role/{name}")
    if role is None:
        role = backend.create_role(
            role_name=name,
            assume_role_policy_document=json.dumps(trust),
            path="/",
            permissions_boundary=None,
            description="",
            tags=[],
            max_session_duration=None,
        )
    else:
        role.assume_role_policy_document = json.dumps(trust)
    policy = body.get("policy")
    if isinstance(policy, dict):
        backend.put_role_policy(name, "keywarden", json.dumps(policy))
    return {"arn": role.arn}


def seed_secrets(body: Any) -> dict[str, Any]:
    """``/_keywarden/seed-secrets``: many secrets in one account and region, straight in moto."""
    from moto.secretsmanager.models import secretsmanager_backends

    if not isinstance(body, dict):
        raise ControlError(400, "expected a JSON object")
    account, region = body.get("account_id"), body.get("region")
    count, start = body.get("count"), body.get("start", 0)
    prefix, value = body.get("prefix", "fleet/service-"), body.get("value", True)
    if not (isinstance(account, str) and re.fullmatch(r"\d{12}", account)):
        raise ControlError(400, "account_id: expected a 12-digit account id")
    if not (isinstance(region, str) and re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region)):
        raise ControlError(400, "region: expected a region name such as eu-west-1")
    if not (isinstance(count, int) and 0 <= count <= 1_000_000):
        raise ControlError(400, "count: expected an integer from 0 to 1000000")
    if not (isinstance(start, int) and start >= 0):
        raise ControlError(400, "start: expected a non-negative integer")
    if not (isinstance(prefix, str) and prefix and isinstance(value, bool)):
        raise ControlError(400, "prefix: expected a non-empty string; value: a boolean")
    backend = secretsmanager_backends[account][region]
    created = 0
    for i in range(start, start + count):
        name = f"{prefix}{i:05}"
        if name in backend.secrets.keys():
            continue
        backend.create_secret(
            name=name, secret_string="x" if value else None, secret_binary=None,
            description=None, tags=None, kms_key_id=None, client_request_token=None,
            replica_regions=[], force_overwrite=False,
        )
        created += 1
    return {"created": created}


def put_sqs_messages(body: Any) -> dict[str, Any]:
    """``/_keywarden/sqs-messages``: message bodies straight into a queue, as SendMessage."""
    from moto.sqs.exceptions import QueueDoesNotExist
    from moto.sqs.models import sqs_backends

    if not isinstance(body, dict):
        raise ControlError(400, "expected a JSON object")
    account, region = body.get("account_id", "123456789012"), body.get("region", "us-east-1")
    queue, bodies = body.get("queue_name"), body.get("bodies")
    if not isinstance(queue, str) or not queue:
        raise ControlError(400, "queue_name: expected a queue name")
    if not (isinstance(bodies, list) and all(isinstance(b, str) and b for b in bodies)):
        raise ControlError(400, "bodies: expected a list of non-empty strings")
    backend = sqs_backends[account][region]
    try:
        for text in bodies:
            backend.send_message(queue, text)
    except QueueDoesNotExist:
        raise ControlError(404, f"no queue {queue} in {account} {region}") from None
    return {"sent": len(bodies)}


# ---------------------------------------------------------------------------------------------
# ElastiCache AUTH tokens backed by a real redis-server
# ---------------------------------------------------------------------------------------------

EC_TOKENS = "_kw_auth_tokens"  # on ReplicationGroup: the valid AUTH tokens, oldest first
EC_BACKING = "_kw_backing"  # on ReplicationGroup: dict(host, port, password, modify_seconds)
EC_HELD_STATUS = "_kw_held_status"  # on ReplicationGroup: a status the test holds it in
EC_ADMIN_USER = "kw-emulator"  # the launcher's own ACL user on a backing redis
EC_LOCK = threading.Lock()
_EC_TOKEN_RE = re.compile(r'^[\x21-\x7e]{16,128}$')


def _resp_encode(args: list[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode("utf-8")
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


def _resp_read(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n").decode("utf-8", "replace")
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.split(' ', 1)[0]}")  # never echo the arguments
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise RuntimeError(f"redis: unexpected reply {line[:20]!r}")


def _redis_commands(backing: dict[str, Any], commands: list[list[str]], auth: bool = True) -> None:
    """Runs commands on a backing redis as the launcher's own user."""
    with socket.create_connection((backing["host"], backing["port"]), timeout=5) as conn:
        f = conn.makefile("rb")
        if auth:
            conn.sendall(_resp_encode(["AUTH", EC_ADMIN_USER, backing["password"]]))
            _resp_read(f)
        for cmd in commands:
            conn.sendall(_resp_encode(cmd))
            _resp_read(f)


def _apply_tokens(backing: dict[str, Any], tokens: list[str]) -> None:
    """The default user accepts exactly ``tokens`` (no password at all when there is none)."""
    passwords = [f">{t}" for t in tokens] if tokens else ["nopass"]
    _redis_commands(backing, [["ACL", "SETUSER", "default", "on", "resetpass", *passwords]])


def _find_group(group_id: str, region: str | None, account_id: str | None) -> Any:
    from moto.elasticache.models import elasticache_backends

    found = []
    for account, regions in elasticache_backends.items():
        if account_id and account != account_id:
            continue
        for name, backend in regions.items():
            if region and name != region:
                continue
            group = backend.replication_groups.get(group_id)
            if group is not None:
                found.append(group)
    if not found:
        raise ControlError(404, f"no replication group {group_id}")
    if len(found) > 1:
        raise ControlError(409, f"replication group {group_id} exists in several regions")
    return found[0]


def register_elasticache_backing(body: Any) -> dict[str, Any]:
    """Serves ``POST /_keywarden/elasticache-backing``."""
    if not isinstance(body, dict) or not isinstance(body.get("replication_group_id"), str):
        raise ControlError(400, "expected {\"replication_group_id\": ..., ...}")
    group = _find_group(
        body["replication_group_id"], body.get("region"), body.get("account_id")
    )
    with EC_LOCK:
        if "redis" in body:
            redis = body["redis"]
            endpoint = body.get("endpoint") or {}
            try:
                host, port = str(redis["host"]), int(redis["port"])
                address, ep_port = str(endpoint["address"]), int(endpoint["port"])
                modify_seconds = float(body.get("modify_seconds", 1.0))
            except (KeyError, TypeError, ValueError) as error:
                raise ControlError(400, f"bad redis or endpoint: {error}") from error
            backing = {
                "host": host,
                "port": port,
                "password": secrets.token_hex(24),
                "modify_seconds": modify_seconds,
            }
            # A fresh redis-server: the default user has no password yet, so the launcher's own
            # user is created first, then the default user gets the group's tokens.
            _redis_commands(
                backing,
                [["ACL", "SETUSER", EC_ADMIN_USER, "on", f">{backing['password']}",
                  "~*", "&*", "+@all"]],
                auth=False,
            )
            _apply_tokens(backing, getattr(group, EC_TOKENS, []))
            setattr(group, EC_BACKING, backing)
            node_group = group.node_groups[0]
            node_group["primary_endpoint"] = {"address": address, "port": ep_port}
            node_group["primary_endpoint_address"] = address
            node_group["port"] = ep_port
        if "status" in body:
            status = str(body["status"])
            if status == "available":
                setattr(group, EC_HELD_STATUS, None)
            else:
                setattr(group, EC_HELD_STATUS, status)
            group.status = status
        return {
            "replication_group_id": group.replication_group_id,
            "status": group.status,
            "tokens": len(getattr(group, EC_TOKENS, [])),
        }


def apply_elasticache_patches() -> None:
    """Makes ModifyReplicationGroup change AUTH tokens as ElastiCache does.

    AWS behaviour restored (moto 5.2.5 accepts AuthToken and AuthTokenUpdateStrategy and ignores
    both; nothing checks a token):
    - CreateReplicationGroup's AuthToken is the group's one valid token (kept by the launcher).
    - ModifyReplicationGroup with AuthToken: refused with InvalidReplicationGroupState unless the
      group is ``available``; with InvalidParameterValue when the group has no in-transit
      encryption, the strategy is missing a token, or the token breaks the rule (16 to 128
      printable characters, none of ``@ " /``). Otherwise the group shows ``modifying`` with
      PendingModifiedValues.AuthTokenStatus ``ROTATING``/``SETTING`` for ``modify_seconds``;
      then the change is applied and the group is ``available`` again.
    - ROTATE adds the token and keeps the current one valid (at most two: a ROTATE while two
      are valid drops the older one); SET keeps only the given token.
    - On a group registered with ``/_keywarden/elasticache-backing`` the valid tokens are
      exactly the backing redis-server's ``default`` user passwords, and
      NodeGroups[0].PrimaryEndpoint is that redis.
    """
    from moto.core.utils import utcnow
    from moto.elasticache.exceptions import ElastiCacheException, ReplicationGroupNotFound
    from moto.elasticache.models import ElastiCacheBackend
    from moto.elasticache.responses import ElastiCacheResponse

    class InvalidReplicationGroupState(ElastiCacheException):
        code = "InvalidReplicationGroupState"

    class InvalidParameterValue(ElastiCacheException):
        code = "InvalidParameterValue"

    original_create = ElastiCacheBackend.create_replication_group

    def create_replication_group(self: Any, *args: Any, **kwargs: Any) -> Any:
        group = original_create(self, *args, **kwargs)
        token = kwargs.get("auth_token")
        setattr(group, EC_TOKENS, [token] if token else [])
        return group

    ElastiCacheBackend.create_replication_group = create_replication_group

    def finish(group: Any, tokens: list[str]) -> None:
        with EC_LOCK:
            backing = getattr(group, EC_BACKING, None)
            if backing is not None:
                try:
                    _apply_tokens(backing, tokens)
                except Exception:  # the test's redis may be gone; the group still settles
                    LOG.exception("cannot apply AUTH tokens to %s", group.replication_group_id)
            setattr(group, EC_TOKENS, tokens)
            group.auth_token_enabled = bool(tokens)
            group.auth_token_last_modified_date = utcnow()
            if hasattr(group, "pending_modified_values"):
                del group.pending_modified_values
            group.status = getattr(group, EC_HELD_STATUS, None) or "available"

    original_modify = ElastiCacheResponse.modify_replication_group

    def modify_replication_group(self: Any) -> Any:
        token = self._get_param("AuthToken")
        strategy = self._get_param("AuthTokenUpdateStrategy")
        if token is None and strategy is None:
            return original_modify(self)
        group_id = self._get_param("ReplicationGroupId")
        group = self.elasticache_backend.replication_groups.get(group_id)
        if group is None:
            raise ReplicationGroupNotFound(group_id)
        strategy = strategy or "ROTATE"
        with EC_LOCK:
            if group.status != "available":
                raise InvalidReplicationGroupState(
                    f"Replication group {group_id} must be in available state, "
                    f"but is in {group.status} state."
                )
            if not group.transit_encryption_enabled:
                raise InvalidParameterValue(
                    "The AUTH token can only be set or rotated on a replication group with "
                    "in-transit encryption enabled (TransitEncryptionEnabled)."
                )
            if strategy not in ("ROTATE", "SET"):
                raise InvalidParameterValue(
                    f"AuthTokenUpdateStrategy {strategy} is not supported here."
                )
            if not token:
                raise InvalidParameterValue(f"AuthToken is required with {strategy}.")
            if not _EC_TOKEN_RE.match(token) or any(c in token for c in '@"/'):
                raise InvalidParameterValue(
                    "Invalid AuthToken: it must be 16 to 128 printable characters "
                    "without '@', '\"' or '/'."
                )
            tokens = list(getattr(group, EC_TOKENS, []))
            if strategy == "ROTATE":
                tokens = ([t for t in tokens if t != token] + [token])[-2:]
            else:
                tokens = [token]
            group.status = "modifying"
            group.pending_modified_values = {
                "AuthTokenStatus": "ROTATING" if strategy == "ROTATE" else "SETTING"
            }
            seconds = (getattr(group, EC_BACKING, None) or {}).get("modify_seconds", 1.0)
        timer = threading.Timer(seconds, finish, args=(group, tokens))
        timer.daemon = True
        timer.start()
        return original_modify(self)

    ElastiCacheResponse.modify_replication_group = modify_replication_group


# ---------------------------------------------------------------------------------------------
# Control API
# ---------------------------------------------------------------------------------------------


class ControlError(Exception):
    """A control API request that cannot be served; becomes a JSON error response."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_SECRET_DATE_KEYS = {
    "secret_id",
    "region",
    "account_id",
    "created",
    "current_version_created",
    "last_rotated",
    "last_accessed",
    "last_changed",
    "version_created",
    "rotation",
}
_ROTATION_KEYS = {
    "enabled",
    "automatically_after_days",
    "schedule_expression",
    "duration",
    "next_rotation",
}


def _epoch(body: dict[str, Any], key: str, nullable: bool) -> int | None:
    """Validates an epoch-seconds field: a non-negative integer (or null when allowed)."""
    value = body[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        kind = "an integer number of epoch seconds" + (" or null" if nullable else "")
        raise ControlError(400, f"{key}: expected {kind}, found {json.dumps(value)}")
    return value


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    """Validates a string-or-null field."""
    value = body[key]
    if value is not None and not isinstance(value, str):
        raise ControlError(400, f"{key}: expected a string or null, found {json.dumps(value)}")
    return value


def _find_secret(secret_id: str, region: str | None, account_id: str | None) -> Any:
    """Finds a stored secret by name, full or partial ARN, across existing moto backends.

    ``region``/``account_id`` narrow the search; an ARN narrows it by itself. A replica resolves
    to its primary. Raises ControlError 404 when nothing matches, 409 when several secrets do.
    """
    from moto.secretsmanager.models import ReplicaSecret, secretsmanager_backends

    arn = re.match(r"^arn:[^:]+:secretsmanager:([^:]+):(\d{12}):secret:", secret_id)
    if arn:
        region = region or arn.group(1)
        account_id = account_id or arn.group(2)
    found: dict[int, Any] = {}
    for backend_account, backend_region, backend in secretsmanager_backends.iter_backends():
        if account_id and backend_account != account_id:
            continue
        if region and backend_region != region:
            continue
        secret = backend.secrets.get(secret_id)
        if secret is None:
            continue
        if isinstance(secret, ReplicaSecret):
            secret = secret.source
        found[id(secret)] = secret
    if not found:
        raise ControlError(404, f"secret not found: {secret_id}")
    if len(found) > 1:
        raise ControlError(
            409, f"{secret_id} matches secrets in several regions or accounts; pass region"
        )
    return next(iter(found.values()))


def set_secret_dates(body: Any) -> dict[str, Any]:
    """Applies ``POST /_keywarden/secret-dates``: validates everything, then changes only the
    keys present. Returns the secret's DescribeSecret view."""
    if not isinstance(body, dict):
        raise ControlError(400, "expected a JSON object")
    unknown = sorted(set(body) - _SECRET_DATE_KEYS)
    if unknown:
        raise ControlError(400, f"unknown keys: {', '.join(unknown)}")
    secret_id = body.get("secret_id")
    if not isinstance(secret_id, str) or not secret_id:
        raise ControlError(400, "secret_id: expected a secret name or ARN")
    region = _optional_str(body, "region") if "region" in body else None
    account_id = _optional_str(body, "account_id") if "account_id" in body else None

    # Validate every field first so a bad request changes nothing.
    changes: list[Callable[[Any], None]] = []
    if "created" in body:
        created = _epoch(body, "created", nullable=False)
        changes.append(lambda s: setattr(s, "created_date", created))
    if "last_changed" in body:
        last_changed = _epoch(body, "last_changed", nullable=False)
        changes.append(lambda s: setattr(s, "last_changed_date", last_changed))
    if "last_rotated" in body:
        last_rotated = _epoch(body, "last_rotated", nullable=True)
        changes.append(lambda s: setattr(s, "last_rotation_date", last_rotated))
    if "last_accessed" in body:
        last_accessed = _epoch(body, "last_accessed", nullable=True)
        changes.append(lambda s: _set_last_accessed(s, last_accessed))
    version_created: dict[str, int] = {}
    if "version_created" in body:
        raw = body["version_created"]
        if not isinstance(raw, dict):
            raise ControlError(400, "version_created: expected an object {version id: epoch}")
        for version_id in raw:
            version_created[version_id] = _epoch(raw, version_id, nullable=False)  # type: ignore[assignment]
    current_created = None
    if "current_version_created" in body:
        current_created = _epoch(body, "current_version_created", nullable=False)
    rotation = None
    if "rotation" in body:
        rotation = _validate_rotation(body["rotation"])

    secret = _find_secret(secret_id, region, account_id)
    if current_created is not None:
        current = _current_version_id(secret)
        if current is None:
            raise ControlError(409, f"{secret.name} has no version labelled AWSCURRENT")
        version_created[current] = current_created
    missing = sorted(v for v in version_created if v not in secret.versions)
    if missing:
        raise ControlError(404, f"{secret.name} has no version {', '.join(missing)}")

    for change in changes:
        change(secret)
    for version_id, created in version_created.items():
        secret.versions[version_id]["createdate"] = created
    if rotation is not None:
        _apply_rotation(secret, rotation)
    return secret.to_dict()


def _set_last_accessed(secret: Any, when: int | None) -> None:
    """Stores LastAccessedDate on the secret and on its AWSCURRENT version (reads go there)."""
    setattr(secret, SECRET_LAST_ACCESSED, when)
    current = _current_version_id(secret)
    if current is not None:
        secret.versions[current][VERSION_LAST_ACCESSED] = when


def _validate_rotation(raw: Any) -> dict[str, Any]:
    """Validates the ``rotation`` object of secret-dates."""
    if not isinstance(raw, dict):
        raise ControlError(400, "rotation: expected an object")
    unknown = sorted(set(raw) - _ROTATION_KEYS)
    if unknown:
        raise ControlError(400, f"rotation: unknown keys: {', '.join(unknown)}")
    if not isinstance(raw.get("enabled"), bool):
        raise ControlError(400, "rotation.enabled: expected true or false")
    if "automatically_after_days" in raw:
        days = raw["automatically_after_days"]
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 1000
        ):
            raise ControlError(
                400, "rotation.automatically_after_days: expected an integer 1-1000 or null"
            )
    for key in ("schedule_expression", "duration"):
        if key in raw:
            _optional_str(raw, key)
    if "next_rotation" in raw:
        _epoch(raw, "next_rotation", nullable=True)
    return raw


def _apply_rotation(secret: Any, rotation: dict[str, Any]) -> None:
    """Sets the rotation state DescribeSecret/ListSecrets report."""
    secret.rotation_requested = True
    secret.rotation_enabled = rotation["enabled"]
    if "automatically_after_days" in rotation:
        secret.auto_rotate_after_days = rotation["automatically_after_days"] or 0
    if "schedule_expression" in rotation:
        setattr(secret, SECRET_SCHEDULE_EXPRESSION, rotation["schedule_expression"])
    if "duration" in rotation:
        setattr(secret, SECRET_ROTATION_DURATION, rotation["duration"])
    if "next_rotation" in rotation:
        secret.next_rotation_date = rotation["next_rotation"]


def reset_moto() -> None:
    """Resets all moto state, exactly like ``POST /moto-api/reset``."""
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()


# ---------------------------------------------------------------------------------------------
# WSGI
# ---------------------------------------------------------------------------------------------


class KeywardenApp:
    """WSGI middleware: serves ``/_keywarden/`` itself, counts and forwards everything else."""

    def __init__(self, moto_app: Callable[..., Iterable[bytes]], counter: RequestCounter):
        self.moto_app = moto_app
        self.counter = counter
        # Serialises control mutations with each other (moto itself has no locking).
        self.control_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
            return self.control(environ, start_response)
        if path.startswith("/moto-api") or path == "/favicon.ico":
            return self.moto_app(environ, start_response)
        fallback = derive_operation(environ)
        if STS_SESSIONS.expired(environ) is not None:
            self.counter.add(fallback)
            return _expired_response(environ, start_response)
        if FAULTS.take_throttle(fallback):
            self.counter.add(fallback)
            return _throttled_response(environ, start_response)
        if fallback == "logs:FilterLogEvents":
            _limit_filter_log_events(environ)
        slot: dict[str, Any] = {"op": None, "raw_form": _keep_form_body(environ)}
        _REQUEST_CONTEXT.slot = slot
        try:
            return self.moto_app(environ, start_response)
        finally:
            _REQUEST_CONTEXT.slot = None
            op = slot["op"] or fallback
            self.counter.add(op)
            if op.startswith("secretsmanager:") and op != "secretsmanager:ListSecrets":
                FAULTS.record_secrets()

    def control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Serves one control API request."""
        method = environ.get("REQUEST_METHOD", "GET")
        route = environ.get("PATH_INFO", "")[len(CONTROL_PREFIX) :].strip("/")
        try:
            if route == "health" and method == "GET":
                return _json(start_response, 200, _health())
            if route == "requests" and method == "GET":
                return _json(start_response, 200, self.counter.snapshot())
            if route == "requests" and method == "DELETE":
                self.counter.reset()
                return _json(start_response, 200, {"status": "ok"})
            if route == "reset" and method == "POST":
                with self.control_lock:
                    reset_moto()
                    self.counter.reset()
                    FAULTS.clear()
                    STS_SESSIONS.clear()
                return _json(start_response, 200, {"status": "ok"})
            if route == "secret-dates" and method == "POST":
                body = _read_json(environ)
                with self.control_lock:
                    answer = set_secret_dates(body)
                FAULTS.record_secrets()
                return _json(start_response, 200, answer)
            if route == "faults" and method == "GET":
                return _json(start_response, 200, FAULTS.snapshot())
            if route == "faults" and method == "POST":
                FAULTS.configure(_read_json(environ))
                return _json(start_response, 200, FAULTS.snapshot())
            if route == "faults" and method == "DELETE":
                FAULTS.clear()
                return _json(start_response, 200, FAULTS.snapshot())
            if route == "roles" and method == "POST":
                body = _read_json(environ)
                with self.control_lock:
                    answer = create_role(body)
                return _json(start_response, 200, answer)
            if route == "seed-secrets" and method == "POST":
                body = _read_json(environ)
                with self.control_lock:
                    answer = seed_secrets(body)
                FAULTS.record_secrets()
                return _json(start_response, 200, answer)
            if route == "sqs-messages" and method == "POST":
                body = _read_json(environ)
                with self.control_lock:
                    answer = put_sqs_messages(body)
                return _json(start_response, 200, answer)
            if route == "sts" and method == "GET":
                return _json(start_response, 200, STS_SESSIONS.snapshot())
            if route == "sts" and method == "POST":
                return _json(start_response, 200, STS_SESSIONS.configure(_read_json(environ)))
            if route == "elasticache-backing" and method == "POST":
                body = _read_json(environ)
                with self.control_lock:
                    answer = register_elasticache_backing(body)
                return _json(start_response, 200, answer)
            if route in (
                "health", "requests", "reset", "secret-dates", "faults", "elasticache-backing",
                "roles", "seed-secrets", "sqs-messages", "sts",
            ):
                raise ControlError(405, f"method {method} not allowed on /_keywarden/{route}")
            raise ControlError(404, f"no control route /_keywarden/{route}")
        except ControlError as error:
            return _json(start_response, error.status, {"error": error.message})
        except Exception as error:  # report, never crash the server
            LOG.exception("control request failed")
            return _json(start_response, 500, {"error": f"{type(error).__name__}: {error}"})


def _health() -> dict[str, Any]:
    """Liveness body: versions of what is being emulated."""
    import moto

    return {"status": "ok", "moto": moto.__version__}


def _read_json(environ: dict[str, Any]) -> Any:
    """Reads and parses a JSON request body."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError as error:
        raise ControlError(400, "bad Content-Length") from error
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        return json.loads(raw or b"null")
    except ValueError as error:
        raise ControlError(400, f"body is not JSON: {error}") from error


_STATUS_TEXT = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
}


def _json(start_response: Callable[..., Any], status: int, payload: Any) -> list[bytes]:
    """Writes a JSON response."""
    body = json.dumps(payload).encode("utf-8")
    start_response(
        f"{status} {_STATUS_TEXT.get(status, 'Error')}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def build_app(counter: RequestCounter) -> KeywardenApp:
    """Builds moto's dispatcher (with the services keywarden uses pre-built) wrapped in ours."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    dispatcher = DomainDispatcherApplication(create_backend_app)
    for service in PREWARMED_SERVICES:
        dispatcher.app_instances[service] = create_backend_app(service)
    return KeywardenApp(dispatcher, counter)


def make_server(host: str, port: int, app: KeywardenApp) -> Any:
    """Binds a threaded werkzeug server with moto's request handler and SO_REUSEADDR."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import ThreadedWSGIServer

    class Server(ThreadedWSGIServer):
        # SO_REUSEADDR: a restarted launcher can bind the same port while old connections sit
        # in TIME_WAIT. (werkzeug sets it too; stated here because tests rely on it.)
        allow_reuse_address = True
        # Connection threads never keep the process alive after shutdown.
        daemon_threads = True

    return Server(host, port, app, handler=MotoRequestHandler)


# ---------------------------------------------------------------------------------------------
# IAM enforcement (--initial-no-auth-action-count)
# ---------------------------------------------------------------------------------------------

# Services whose calls keywarden makes; their IAM evaluation is replaced below.
_IAM_SERVICES = ("secretsmanager", "sns", "logs", "elasticache")


def _glob(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """IAM wildcard match: ``*`` any run of characters, ``?`` exactly one."""
    rx = "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + "$"
    return re.match(rx, value, re.IGNORECASE if ignore_case else 0) is not None


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _raw_form() -> bytes:
    """The current request's form body as sent (see ``_keep_form_body``)."""
    slot = getattr(_REQUEST_CONTEXT, "slot", None)
    return (slot or {}).get("raw_form") or b""


def _iam_request_params(req: Any) -> dict[str, Any]:
    """The request's parameters: the JSON body (Secrets Manager, Logs) or the form (SNS, ElastiCache)."""
    body = req._body or _raw_form() or b""
    if isinstance(body, str):
        body = body.encode()
    try:
        parsed = json.loads(body) if body.strip().startswith(b"{") else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _iam_resource(req: Any) -> tuple[str, dict[str, str]]:
    """The ARN a call acts on, and that resource's tags (for ``ResourceTag`` conditions)."""
    service, action = req._action.split(":", 1)
    params = _iam_request_params(req)
    region, account = req._region, req.account_id
    if service == "secretsmanager":
        secret_id = params.get("SecretId")
        if not secret_id:
            return "*", {}  # ListSecrets and the other account-wide calls
        from moto.secretsmanager.models import secretsmanager_backends

        secret = secretsmanager_backends[account][region].secrets.get(secret_id)
        if secret is None:
            return f"arn:aws:secretsmanager:{region}:{account}:secret:{secret_id}", {}
        tags = {t["Key"]: t["Value"] for t in (getattr(secret, "tags", None) or [])}
        return secret.arn, tags
    if service == "sns":
        return params.get("TopicArn") or params.get("TargetArn") or "*", {}
    if service == "logs":
        group = params.get("logGroupName")
        return (f"arn:aws:logs:{region}:{account}:log-group:{group}:*" if group else "*"), {}
    if service == "elasticache":
        group = params.get("ReplicationGroupId")
        return (f"arn:aws:elasticache:{region}:{account}:replicationgroup:{group}" if group else "*"), {}
    return "*", {}


def _condition_holds(condition: dict[str, Any], tags: dict[str, str]) -> bool:
    """StringEquals/StringLike on ``aws:ResourceTag/K`` or ``<service>:ResourceTag/K``. Any other
    operator or key is not evaluated here: it fails (a test must not pass on a guess)."""
    for operator, keys in condition.items():
        if operator not in ("StringEquals", "StringLike"):
            return False
        for key, expected in keys.items():
            if "ResourceTag/" not in key:
                return False
            actual = tags.get(key.split("ResourceTag/", 1)[1])
            if actual is None:
                return False
            if operator == "StringEquals" and actual not in _as_list(expected):
                return False
            if operator == "StringLike" and not any(_glob(e, actual) for e in _as_list(expected)):
                return False
    return True


def apply_iam_patches() -> None:
    """moto 5.2.5's IAM enforcement (``INITIAL_NO_AUTH_ACTION_COUNT``) checks only a statement's
    Action for these services: every Secrets Manager, SNS, Logs and ElastiCache call is evaluated
    against ``Resource: "*"`` (so a statement naming ARNs never allows anything), its Condition is
    evaluated with no request context (so ``ResourceTag`` conditions always pass), and a failed
    condition turns an Allow into a Deny. AWS behaviour restored here, for these services only:
    the Resource is matched against the ARN the call acts on (the secret's full ARN, the topic,
    ``log-group:NAME:*``, ``replicationgroup:ID``; ``*`` for ListSecrets), ``ResourceTag``
    conditions are evaluated against the secret's tags, an Allow whose condition fails does not
    apply, an explicit Deny wins, and nothing allowed means AccessDenied (as JSON
    ``AccessDeniedException`` for the JSON-protocol services, as AWS answers them)."""
    from moto.iam.access_control import IAMPolicy, IAMRequest, IAMRequestBase

    # moto hands a form-encoded request's body to IAM as the parsed form (werkzeug consumed
    # the stream) and signs its re-encoding, which differs from the SDK's (an SNS message's
    # spaces and punctuation): every SNS Publish failed SignatureDoesNotMatch. AWS signs the
    # body as sent; so does this.
    original_request = IAMRequestBase._create_aws_request

    def create_aws_request(self: Any) -> Any:
        if not self._body and _raw_form():
            self._body = _raw_form()
        return original_request(self)

    IAMRequestBase._create_aws_request = create_aws_request

    original = IAMRequest.check_action_permitted

    def check_action_permitted(self: Any, resource: str) -> None:
        service = self._action.split(":", 1)[0]
        if service not in _IAM_SERVICES:
            return original(self, resource)
        arn, tags = _iam_resource(self)
        allowed = False
        for policy in self._access_key.collect_policies():
            document = IAMPolicy(policy)._policy_json
            for st in _as_list(document.get("Statement", [])):
                if not any(_glob(a, self._action, ignore_case=True) for a in _as_list(st.get("Action", []))):
                    continue
                if not any(_glob(r, arn) for r in _as_list(st.get("Resource", []))):
                    continue
                if "Condition" in st and not _condition_holds(st["Condition"], tags):
                    continue
                if st.get("Effect") == "Deny":
                    self._raise_access_denied()
                allowed = True
        if not allowed:
            LOG.info("IAM: %s on %s denied", self._action, arn)
            if service in ("secretsmanager", "logs"):
                # AWS answers JSON-protocol services in JSON (moto sends XML the SDK cannot
                # parse), naming the action and the resource.
                from moto.core.exceptions import JsonRESTError

                raise JsonRESTError(
                    "AccessDeniedException",
                    f"User: {self._access_key.arn} is not authorized to perform: "
                    f"{self._action} on resource: {arn} because no identity-based policy "
                    "allows the action",
                )
            # Query-protocol services (SNS, ElastiCache): AWS's error document has one
            # <Error> under <ErrorResponse>; moto's <Errors> wrapper leaves the SDK without a
            # code, so a refusal looked like an unknown service error.
            from moto.core.exceptions import AccessDeniedError

            err = AccessDeniedError(user_arn=self._access_key.arn, action=self._action)
            err.code = 403
            err.description = (
                "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>"
                f"User: {self._access_key.arn} is not authorized to perform: {self._action} "
                f"on resource: {arn}</Message></Error>"
                "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
            )
            raise err

    IAMRequest.check_action_permitted = check_action_permitted


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _loopback_host(value: str) -> str:
    """argparse type: accepts only loopback addresses (and ``localhost``)."""
    if value == "localhost":
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(value).is_loopback:
            return value
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{value!r} is not a loopback address")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", type=_loopback_host, default="127.0.0.1",
                        help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0,
                        help="port to bind; 0 picks a free one (default 0)")
    parser.add_argument("--quiet", action="store_true",
                        help="do not log every request on stderr")
    parser.add_argument("--initial-no-auth-action-count", type=int, default=None, metavar="N",
                        help="enforce IAM after the first N AWS requests (moto's "
                             "INITIAL_NO_AUTH_ACTION_COUNT; see apply_iam_patches)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="stop when stdin reaches EOF (the parent went away)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0-65535")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs the launcher until SIGTERM/SIGINT."""
    args = parse_args(argv)
    ready_stream = sys.stdout
    # Only the READY line belongs on stdout: moto print()s diagnostics, send them to stderr.
    sys.stdout = sys.stderr
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING if args.quiet else logging.INFO)

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        LOG.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    apply_moto_patches()
    apply_elasticache_patches()
    if args.initial_no_auth_action_count is not None:
        from moto import settings

        settings.INITIAL_NO_AUTH_ACTION_COUNT = float(args.initial_no_auth_action_count)
        apply_iam_patches()
    counter = RequestCounter()
    server = make_server(args.host, args.port, build_app(counter))
    port = server.server_port
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="serve", daemon=True
    )
    serving.start()
    LOG.info("moto listening on %s:%d", args.host, port)
    ready_stream.write(READY_LINE.format(port=port) + "\n")
    ready_stream.flush()

    if args.exit_on_stdin_eof:
        def watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            LOG.info("stdin closed, stopping")
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
