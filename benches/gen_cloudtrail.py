#!/usr/bin/env python3
"""Writes N realistic CloudTrail records, one JSON object per line, for the access benchmark.

Usage: gen_cloudtrail.py N OUT [--seed S]

Deterministic for a given N and seed. About 75% are Secrets Manager calls (mostly
GetSecretValue; some DescribeSecret, BatchGetSecretValue and writes; about 10% AccessDenied)
naming 25 secrets by name, full ARN or partial ARN (20 of them watched by the benchmark), every
userIdentity type; about 24% are other event sources; about 1% are truncated or non-JSON lines.
"""

import argparse
import json
import random
import uuid
from datetime import datetime, timezone

ACCOUNT = "123456789012"
REGION = "us-east-1"


def identity(rng: random.Random) -> dict:
    """A userIdentity of a random type, weighted like a service fleet."""
    kind = rng.choices(
        ["AssumedRole", "IAMUser", "AWSService", "Root", "FederatedUser", "AWSAccount"],
        weights=[80, 8, 6, 1, 2, 3],
    )[0]
    if kind == "AssumedRole":
        role = rng.choice(["event-service-app", "event-service-worker", "batch-etl", "lambda-rotator"])
        session = f"i-0{rng.randrange(16**8):08x}"
        return {
            "type": "AssumedRole",
            "principalId": f"AROA{rng.randrange(10**12):012d}:{session}",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{session}",
            "accountId": ACCOUNT,
            "accessKeyId": f"ASIA{rng.randrange(10**12):016d}",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": f"AROA{rng.randrange(10**12):012d}",
                    "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}",
                    "accountId": ACCOUNT,
                    "userName": role,
                },
                "attributes": {"creationDate": "2024-05-01T10:00:00Z", "mfaAuthenticated": "false"},
            },
        }
    if kind == "IAMUser":
        user = rng.choice(["deploy", "ops-alice", "ci"])
        return {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
                "accountId": ACCOUNT, "accessKeyId": "AKIAEXAMPLE", "userName": user}
    if kind == "AWSService":
        return {"type": "AWSService", "invokedBy": "secretsmanager.amazonaws.com"}
    if kind == "Root":
        return {"type": "Root", "principalId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:root", "accountId": ACCOUNT}
    if kind == "FederatedUser":
        return {"type": "FederatedUser", "principalId": f"{ACCOUNT}:bob",
                "arn": f"arn:aws:sts::{ACCOUNT}:federated-user/bob", "accountId": ACCOUNT}
    return {"type": "AWSAccount", "principalId": "AIDAOTHER", "accountId": "111122223333"}


def secret_ref(rng: random.Random) -> str:
    """A secretId: name, full ARN or partial ARN of one of 25 secrets."""
    i = rng.randrange(25)
    name = f"svc/secret-{i:02d}"
    form = rng.random()
    if form < 0.6:
        return name
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}"
    return f"{arn}-AbC{i:03d}" if form < 0.9 else arn


def record(rng: random.Random, t: int) -> str:
    """One line."""
    when = datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    roll = rng.random()
    if roll < 0.01:
        full = json.dumps({"eventID": str(uuid.UUID(int=rng.getrandbits(128))), "eventTime": when,
                           "eventSource": "secretsmanager.amazonaws.com"})
        return full[: rng.randrange(1, len(full) - 1)] if rng.random() < 0.7 else "CloudTrail digest: not JSON"
    event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    base = {
        "eventVersion": "1.09",
        "userIdentity": identity(rng),
        "eventTime": when,
        "awsRegion": REGION,
        "sourceIPAddress": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "userAgent": "aws-sdk-java/2.25.0 Linux/6.1 OpenJDK_64-Bit_Server_VM/17",
        "requestID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "eventID": event_id,
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                       "clientProvidedHostHeader": f"secretsmanager.{REGION}.amazonaws.com"},
    }
    if roll < 0.25:
        source, name = rng.choice([("kms.amazonaws.com", "Decrypt"), ("sts.amazonaws.com", "AssumeRole"),
                                   ("s3.amazonaws.com", "GetObject")])
        base.update({"eventSource": source, "eventName": name,
                     "requestParameters": {"keyId": "alias/aws/secretsmanager"}, "responseElements": None})
        return json.dumps(base)
    name = rng.choices(
        ["GetSecretValue", "DescribeSecret", "BatchGetSecretValue", "PutSecretValue",
         "UpdateSecretVersionStage", "ListSecrets", "TagResource"],
        weights=[85, 8, 2, 2, 1, 1, 1],
    )[0]
    params: dict = {}
    if name == "BatchGetSecretValue":
        params["secretIdList"] = [secret_ref(rng) for _ in range(rng.randrange(1, 4))]
    elif name != "ListSecrets":
        params["secretId"] = secret_ref(rng)
        if name == "GetSecretValue" and rng.random() < 0.2:
            params["versionStage"] = rng.choice(["AWSCURRENT", "AWSPREVIOUS"])
    base.update({"eventSource": "secretsmanager.amazonaws.com", "eventName": name,
                 "requestParameters": params or None, "responseElements": None})
    err = rng.random()
    if err < 0.10:
        base["errorCode"] = "AccessDenied"
        base["errorMessage"] = "User is not authorized to perform this operation"
    elif err < 0.11:
        base["errorCode"] = "ResourceNotFoundException"
        base["errorMessage"] = "Secrets Manager can't find the specified secret."
    return json.dumps(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int)
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    t = 1_714_521_600
    with open(args.out, "w", encoding="utf-8") as f:
        for i in range(args.n):
            f.write(record(rng, t + i // 50))
            f.write("\n")


if __name__ == "__main__":
    main()
