//! Organization scale (issue #17 points 1, 2 and 5) against moto: several accounts read through
//! roles assumed with an ExternalId, two regions, one account whose trust policy refuses
//! keywarden. moto maps assumed-role credentials to the role's account; the launcher makes
//! AssumeRole honour the trust policy (patch 8), as AWS does.
//!
//! What must hold: the same secret name in four places is four series told apart by `account`
//! and `region`; the refused account never stops the others and shows in
//! `keywarden_account_up`, below `/readyz`'s verdict and once in the log; AssumeRole is cached
//! (one call per account and region, not per cycle); `/secrets`, `keywarden status` and
//! `keywarden consumers` name the account and region; a CloudTrail call on a plain name counts
//! for the secret of the account and region called.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_cloudwatchlogs as logs;
use aws_sdk_secretsmanager as sm;
use serde_json::json;

use crate::support::{Daemon, Moto, Scrape, keywarden_command, now};

const CENTRAL: &str = "123456789012";
const A: &str = "111111111111";
const B: &str = "222222222222";
const DENIED: &str = "333333333333";
const EXTERNAL_ID: &str = "kw-ext-4a7c";
const GROUP: &str = "/aws/cloudtrail/organization";

/// Creates a role in `account` that the central account may assume, with an ExternalId
/// condition when `external_id` is given.
async fn role(moto: &Moto, account: &str, name: &str, external_id: Option<&str>) {
    let mut statement = json!({
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{CENTRAL}:root")},
        "Action": "sts:AssumeRole",
    });
    if let Some(id) = external_id {
        statement["Condition"] = json!({"StringEquals": {"sts:ExternalId": id}});
    }
    let (status, answer) = moto
        .control(
            "POST",
            "roles",
            json!({"account_id": account, "role_name": name,
                   "trust_policy": {"Version": "2012-10-17", "Statement": [statement]}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

/// A Secrets Manager client of `account` in `region`, through its `setup` role.
async fn client_in(moto: &Moto, account: &str, region: &str) -> sm::Client {
    let base = moto.sdk_config().await;
    if account == CENTRAL {
        return sm::Client::from_conf(
            sm::config::Builder::from(&base)
                .region(sm::config::Region::new(region.to_string()))
                .build(),
        );
    }
    let provider =
        aws_config::sts::AssumeRoleProvider::builder(format!("arn:aws:iam::{account}:role/setup"))
            .session_name("setup")
            .configure(&base)
            .build()
            .await;
    let conf = base
        .to_builder()
        .region(aws_config::Region::new(region.to_string()))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(provider),
        )
        .build();
    sm::Client::new(&conf)
}

async fn create(client: &sm::Client, name: &str) -> String {
    let out = client
        .create_secret()
        .name(name)
        .secret_string("CANARY-accounts-value")
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    out.arn.unwrap_or_default()
}

/// A CloudTrail record of `principal` reading `secret_id` in `account`/`region`.
fn read(id: &str, t: i64, account: &str, region: &str, secret_id: &str, principal: &str) -> String {
    json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "AssumedRole", "principalId": "AROAX:s",
                         "arn": format!("arn:aws:sts::{account}:assumed-role/{principal}/s"),
                         "accountId": account,
                         "sessionContext": {"sessionIssuer": {"type": "Role",
                             "arn": format!("arn:aws:iam::{account}:role/{principal}")}}},
        "eventTime": chrono::DateTime::from_timestamp_millis(t).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "eventSource": "secretsmanager.amazonaws.com", "eventName": "GetSecretValue",
        "awsRegion": region, "sourceIPAddress": "10.0.1.1", "userAgent": "aws-sdk-rust",
        "requestParameters": {"secretId": secret_id}, "responseElements": null,
        "requestID": format!("r-{id}"), "eventID": id, "readOnly": true,
        "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": account,
    })
    .to_string()
}

fn config(moto: &Moto, external_id_file: &str, access: bool) -> String {
    let access = if access {
        format!(
            "[access]\nlog_group = \"{GROUP}\"\nbaseline = \"1d\"\noverlap = \"1h\"\n[poll]\nmetadata_every = \"1s\"\naccess_every = \"1s\"\n"
        )
    } else {
        "[poll]\nmetadata_every = \"1s\"\n".to_string()
    };
    format!(
        r#"[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[server]
listen = "{{listen}}"
[state]
path = "{{state}}"
{access}
[discovery]
name_prefixes = ["shared/"]

[[account]]
id = "{A}"
role_arn = "arn:aws:iam::{A}:role/keywarden-read"
external_id_env = "KW_EXTERNAL_ID"
regions = ["us-east-1", "eu-west-1"]

[[account]]
id = "{B}"
role_arn = "arn:aws:iam::{B}:role/keywarden-read"
external_id_file = "{external_id_file}"
regions = ["us-east-1"]

[[account]]
id = "{DENIED}"
role_arn = "arn:aws:iam::{DENIED}:role/keywarden-read"
external_id_env = "KW_EXTERNAL_ID"
regions = ["us-east-1"]

[[secret]]
name = "payments-api-key"
id = "payments/api-key"
account = "{A}"
region = "eu-west-1"
rotate_every = "30d"
severity = "critical"
consumers = ["arn:aws:sts::{A}:assumed-role/payments/*"]
"#,
        endpoint = moto.endpoint()
    )
}

/// The four places that hold `shared/db`, and the one keywarden may not read.
const READABLE: [(&str, &str); 4] = [
    (CENTRAL, "us-east-1"),
    (A, "us-east-1"),
    (A, "eu-west-1"),
    (B, "us-east-1"),
];

async fn estate(moto: &Moto) {
    for account in [A, B, DENIED] {
        role(moto, account, "setup", None).await;
    }
    role(moto, A, "keywarden-read", Some(EXTERNAL_ID)).await;
    role(moto, B, "keywarden-read", Some(EXTERNAL_ID)).await;
    // The denied account's trust policy asks for another ExternalId (a confused-deputy guard
    // keywarden does not satisfy).
    role(moto, DENIED, "keywarden-read", Some("another-customer")).await;
    for (account, region) in READABLE.iter().chain([(DENIED, "us-east-1")].iter()) {
        let c = client_in(moto, account, region).await;
        create(&c, "shared/db").await;
    }
    let a_west = client_in(moto, A, "eu-west-1").await;
    create(&a_west, "payments/api-key").await;
}

/// A daemon on `cfg` with the ExternalId in `KW_EXTERNAL_ID` (the configurations' variable).
async fn start_with_external_id(cfg: &str) -> Daemon {
    Daemon::start_in_env(
        tempfile::tempdir().expect("dir"),
        crate::support::free_port(),
        cfg,
        &[("KW_EXTERNAL_ID", EXTERNAL_ID)],
    )
    .await
}

/// `/readyz` stays 200 (an unreadable account does not make keywarden unready) and names
/// `detail` below its verdict.
async fn ready_naming(d: &Daemon, detail: &str) {
    let (status, body) = d.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(detail), "{detail:?} not in\n{body}");
}

fn place<'a>(account: &'a str, region: &'a str) -> [(&'static str, &'a str); 2] {
    [("account", account), ("region", region)]
}

#[tokio::test]
async fn several_accounts_and_regions_one_denied() {
    let moto = Moto::start();
    estate(&moto).await;
    // Reads in the organization trail's log group (central account): each account's principal
    // reads its own `shared/db` by name; the payments role reads the payments key by name.
    let logs_client = logs::Client::new(&moto.sdk_config().await);
    logs_client
        .create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .expect("log group");
    logs_client
        .create_log_stream()
        .log_group_name(GROUP)
        .log_stream_name("s")
        .send()
        .await
        .expect("stream");
    let t0 = now() * 1000 - 600_000;
    let lines = [
        read(
            "e-central",
            t0,
            CENTRAL,
            "us-east-1",
            "shared/db",
            "central-app",
        ),
        read("e-a-east-1", t0 + 1, A, "us-east-1", "shared/db", "a-app"),
        read("e-a-east-2", t0 + 2, A, "us-east-1", "shared/db", "a-app"),
        read(
            "e-a-west",
            t0 + 3,
            A,
            "eu-west-1",
            "shared/db",
            "a-west-app",
        ),
        read("e-b", t0 + 4, B, "us-east-1", "shared/db", "b-app"),
        read(
            "e-pay",
            t0 + 5,
            A,
            "eu-west-1",
            "payments/api-key",
            "payments",
        ),
    ];
    let events: Vec<logs::types::InputLogEvent> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            logs::types::InputLogEvent::builder()
                .timestamp(t0 + i as i64)
                .message(l)
                .build()
                .unwrap()
        })
        .collect();
    logs_client
        .put_log_events()
        .log_group_name(GROUP)
        .log_stream_name("s")
        .set_log_events(Some(events))
        .send()
        .await
        .expect("put");

    let dir = tempfile::tempdir().expect("dir");
    let id_file = dir.path().join("external-id");
    std::fs::write(&id_file, format!("{EXTERNAL_ID}\n")).expect("write");
    let cfg = config(&moto, &id_file.display().to_string(), true);
    let d = start_with_external_id(&cfg).await;

    // Four series of the same name, one per account and region.
    let s = d
        .wait_for("shared/db in four places", Duration::from_secs(60), |s| {
            READABLE.iter().all(|(a, r)| {
                s.get(
                    "keywarden_secret_present",
                    &[("secret", "shared/db"), ("account", a), ("region", r)],
                ) == Some(1.0)
            })
        })
        .await;
    let places: BTreeSet<(String, String)> = s
        .samples
        .iter()
        .filter(|x| {
            x.name == "keywarden_secret_present"
                && x.labels.get("secret").map(String::as_str) == Some("shared/db")
        })
        .map(|x| (x.labels["account"].clone(), x.labels["region"].clone()))
        .collect();
    assert_eq!(places.len(), 4, "{places:?}");
    assert!(!places.iter().any(|(a, _)| a == DENIED), "{places:?}");
    // The inventory secret of a member account carries its account and region.
    let info = [
        ("secret", "payments-api-key"),
        ("account", A),
        ("region", "eu-west-1"),
    ];
    assert_eq!(s.get("keywarden_secret_present", &info), Some(1.0));
    // Account health: the refused one is 0, the others 1; the daemon stays ready.
    for (a, r) in READABLE {
        assert_eq!(
            s.get("keywarden_account_up", &place(a, r)),
            Some(1.0),
            "{a} {r}"
        );
    }
    assert_eq!(
        s.get("keywarden_account_up", &place(DENIED, "us-east-1")),
        Some(0.0)
    );
    ready_naming(
        &d,
        &format!("account {DENIED} region us-east-1: cannot be read"),
    )
    .await;

    // Access counted per place: a plain name counts for the account and region called.
    let s = d
        .wait_for("access counted", Duration::from_secs(60), |s| {
            s.sum(
                "keywarden_secret_access_events_total",
                &[("secret", "payments-api-key")],
            ) >= 1.0
        })
        .await;
    for ((a, r), n) in READABLE.iter().zip([1.0, 2.0, 1.0, 1.0]) {
        assert_eq!(
            s.sum(
                "keywarden_secret_access_events_total",
                &[("secret", "shared/db"), ("account", a), ("region", r)],
            ),
            n,
            "{a} {r}"
        );
    }

    // Several cycles later: AssumeRole was made once per readable account and region (the
    // identity cache answers the rest), the refusal is logged once.
    d.let_polls_pass(4.0).await;
    let s: Scrape = d.scrape().await;
    let assumed = s.sum(
        "keywarden_aws_requests_total",
        &[
            ("service", "sts"),
            ("operation", "AssumeRole"),
            ("outcome", "ok"),
        ],
    );
    assert_eq!(assumed, 3.0, "one AssumeRole per member account and region");
    let log = d.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("Cannot read this account and region") && l.contains(DENIED))
        .count();
    assert_eq!(refusals, 1, "{log}");
    assert!(!log.contains("CANARY-accounts-value"));
    assert!(!log.contains(EXTERNAL_ID), "the ExternalId is never logged");

    // /secrets names the account and region.
    let (status, body) = d.get("/secrets").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let entries = v["secrets"].as_array().expect("secrets");
    let pay = entries
        .iter()
        .find(|e| e["name"] == "payments-api-key")
        .expect("payments-api-key");
    assert_eq!(
        (pay["account"].as_str(), pay["region"].as_str()),
        (Some(A), Some("eu-west-1"))
    );
    let b_db = format!("{B}:us-east-1:shared/db");
    assert!(
        entries
            .iter()
            .any(|e| e["name"] == b_db.as_str() && e["account"] == B),
        "{body}"
    );

    // The refused account becomes readable: it comes up, its secret appears, logged once.
    role(&moto, DENIED, "keywarden-read", Some(EXTERNAL_ID)).await;
    d.wait_for(
        "the denied account readable",
        Duration::from_secs(30),
        |s| {
            s.get("keywarden_account_up", &place(DENIED, "us-east-1")) == Some(1.0)
                && s.get(
                    "keywarden_secret_present",
                    &[("secret", "shared/db"), ("account", DENIED)],
                ) == Some(1.0)
        },
    )
    .await;
    let log = d.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("readable again") && l.contains(DENIED))
            .count(),
        1,
        "{log}"
    );

    // keywarden status: one row per place, with account and region columns.
    let cfg_path = dir.path().join("status.toml");
    std::fs::write(
        &cfg_path,
        cfg.replace("{listen}", "127.0.0.1:1")
            .replace("{state}", &dir.path().join("s.db").display().to_string()),
    )
    .expect("write");
    let out = keywarden_command()
        .env("KW_EXTERNAL_ID", EXTERNAL_ID)
        .args(["status", "--config"])
        .arg(&cfg_path)
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("ACCOUNT") && h.contains("REGION")),
        "{table}"
    );
    for (a, r) in READABLE.iter().chain([(DENIED, "us-east-1")].iter()) {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("shared/db ") && l.contains(a) && l.contains(r)),
            "no row for shared/db in {a} {r}:\n{table}"
        );
    }

    // keywarden consumers of a member account's secrets: only that place's readers.
    let consumers = |secret: &str| {
        let out = keywarden_command()
            .env("KW_EXTERNAL_ID", EXTERNAL_ID)
            .args(["consumers", "--since", "1d", "--config"])
            .arg(&cfg_path)
            .arg(secret)
            .output()
            .expect("consumers");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let table = consumers("payments-api-key");
    assert!(
        table.lines().any(
            |l| l.starts_with(&format!("arn:aws:sts::{A}:assumed-role/payments/s"))
                && l.trim_end().ends_with("yes")
        ),
        "{table}"
    );
    assert!(!table.contains("a-app"), "{table}");
    let table = consumers(&format!("{A}:us-east-1:shared/db"));
    assert!(table.contains("a-app"), "{table}");
    for other in ["central-app", "a-west-app", "b-app"] {
        assert!(
            !table.contains(other),
            "{other} read another place's shared/db:\n{table}"
        );
    }
    drop(d);
}

/// Writes `cfg` in `dir` and runs `keywarden <command> --config` on it: success and stderr.
fn run_with(dir: &std::path::Path, cfg: &str, command: &str) -> (bool, String) {
    let path = dir.join("k.toml");
    std::fs::write(&path, cfg).expect("write");
    let out = keywarden_command()
        .args([command, "--config"])
        .arg(&path)
        .output()
        .expect("keywarden");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_member_account_secret_is_watched_read_only() {
    // Rotation of a member account's secret is refused at load time: the member role is
    // read-only (deploy/cloudformation/member-account.yaml).
    let moto = Moto::start();
    let cfg = config(&moto, "/nonexistent", false)
        .replace("{listen}", "127.0.0.1:1")
        .replace("{state}", "/nonexistent/state.db")
        .replace(
        "consumers = [",
        "[secret.rotation]\nstrategy = \"random\"\n[[secret]]\nname = \"x\"\nid = \"x\"\nconsumers = [",
    );
    let dir = tempfile::tempdir().expect("dir");
    let (ok, err) = run_with(dir.path(), &cfg, "check-config");
    assert!(!ok);
    assert!(
        err.contains("rotation.strategy") && err.contains("read-only"),
        "{err}"
    );
}

#[tokio::test]
async fn organization_accounts_minus_suspended_and_excluded() {
    use aws_sdk_organizations as org;
    let moto = Moto::start();
    let client = org::Client::new(&moto.sdk_config().await);
    client
        .create_organization()
        .feature_set(org::types::OrganizationFeatureSet::All)
        .send()
        .await
        .expect("create organization");
    let mut members = Vec::new();
    for i in 0..3 {
        let out = client
            .create_account()
            .email(format!("member{i}@example.com"))
            .account_name(format!("member{i}"))
            .send()
            .await
            .expect("create account");
        let id = out
            .create_account_status
            .and_then(|s| s.account_id)
            .expect("account id");
        role(&moto, &id, "setup", None).await;
        role(&moto, &id, "keywarden-read", None).await;
        create(&client_in(&moto, &id, "us-east-1").await, "shared/db").await;
        members.push(id);
    }
    let (active, suspended, excluded) = (&members[0], &members[1], &members[2]);
    client
        .close_account()
        .account_id(suspended)
        .send()
        .await
        .expect("close account");
    create(&client_in(&moto, CENTRAL, "us-east-1").await, "shared/db").await;
    // The management account in its other region is read with the daemon's own credentials
    // (no member role there).
    create(&client_in(&moto, CENTRAL, "eu-west-1").await, "shared/db").await;
    let cfg = format!(
        r#"[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
[server]
listen = "{{listen}}"
[state]
path = "{{state}}"
[poll]
metadata_every = "1s"
[discovery]
name_prefixes = ["shared/"]
[organization]
role_name = "keywarden-read"
regions = ["us-east-1", "eu-west-1"]
exclude = ["{excluded}"]
"#,
        endpoint = moto.endpoint()
    );
    let d = Daemon::start(&cfg).await;
    let s = d
        .wait_for("the organization read", Duration::from_secs(60), |s| {
            [
                (CENTRAL, "us-east-1"),
                (CENTRAL, "eu-west-1"),
                (active.as_str(), "us-east-1"),
            ]
            .iter()
            .all(|(a, r)| {
                s.get(
                    "keywarden_secret_present",
                    &[("secret", "shared/db"), ("account", a), ("region", r)],
                ) == Some(1.0)
            })
        })
        .await;
    let accounts: BTreeSet<&str> = s
        .samples
        .iter()
        .filter(|x| x.name == "keywarden_account_up")
        .map(|x| x.labels["account"].as_str())
        .collect();
    assert_eq!(
        accounts,
        BTreeSet::from([CENTRAL, active.as_str()]),
        "the suspended ({suspended}) and excluded ({excluded}) accounts are not read"
    );
    for gone in [suspended, excluded] {
        assert!(
            !s.samples
                .iter()
                .any(|x| x.labels.get("account") == Some(gone)),
            "{gone} has series:\n{}",
            s.text
        );
    }
    assert_eq!(
        s.get("keywarden_account_up", &place(CENTRAL, "eu-west-1")),
        Some(1.0)
    );
    assert_eq!(
        s.get("keywarden_account_up", &place(active, "eu-west-1")),
        Some(1.0)
    );
    let listed = s.sum(
        "keywarden_aws_requests_total",
        &[("service", "organizations"), ("operation", "ListAccounts")],
    );
    assert_eq!(
        listed, 1.0,
        "ListAccounts once per refresh_every (15m by default)"
    );
}

#[tokio::test]
async fn a_missing_external_id_stops_the_start_with_a_clear_error() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(
        &moto,
        &dir.path().join("absent").display().to_string(),
        false,
    )
    .replace(
        "{listen}",
        &format!("127.0.0.1:{}", crate::support::free_port()),
    )
    .replace("{state}", &dir.path().join("s.db").display().to_string());
    // KW_EXTERNAL_ID is not set: account[0] cannot be read.
    let (ok, err) = run_with(dir.path(), &cfg, "run");
    assert!(!ok, "{err}");
    assert!(
        err.contains("account[0]") && err.contains("KW_EXTERNAL_ID is not set"),
        "{err}"
    );
}

/// Point 1: throttled AssumeRole (STS answers `Throttling` for a while) never stops the home
/// account; the member accounts show down with kind `throttled`, then come back, each logged
/// once per change.
#[tokio::test]
async fn throttled_assume_role_never_stops_the_others() {
    let moto = Moto::start();
    estate(&moto).await;
    // Enough throttles for several cycles of every member account and the SDK's retries.
    let (status, answer) = moto
        .control(
            "POST",
            "faults",
            json!({"throttle": {"sts:AssumeRole": 30}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let dir = tempfile::tempdir().expect("dir");
    let id_file = dir.path().join("external-id");
    std::fs::write(&id_file, EXTERNAL_ID).expect("write");
    let cfg = config(&moto, &id_file.display().to_string(), false);
    let d = start_with_external_id(&cfg).await;
    let s = d
        .wait_for(
            "the home account read while members are throttled",
            Duration::from_secs(30),
            |s| {
                s.get(
                    "keywarden_secret_present",
                    &[("secret", "shared/db"), ("account", CENTRAL)],
                ) == Some(1.0)
                    && s.get("keywarden_account_up", &place(A, "us-east-1")) == Some(0.0)
            },
        )
        .await;
    assert_eq!(
        s.get("keywarden_account_up", &place(CENTRAL, "us-east-1")),
        Some(1.0)
    );
    ready_naming(
        &d,
        &format!("account {A} region us-east-1: cannot be read (throttled)"),
    )
    .await;
    // The throttling ends: every readable member comes up.
    d.wait_for(
        "members up after throttling",
        Duration::from_secs(60),
        |s| {
            READABLE
                .iter()
                .all(|(a, r)| s.get("keywarden_account_up", &place(a, r)) == Some(1.0))
        },
    )
    .await;
    let log = d.log();
    for (a, r) in &READABLE[1..] {
        let of = |needle: &str| {
            log.lines()
                .filter(|l| l.contains(needle) && l.contains(a) && l.contains(r))
                .count()
        };
        assert_eq!(
            of("Cannot read this account and region"),
            1,
            "{a} {r}\n{log}"
        );
        assert_eq!(of("readable again"), 1, "{a} {r}\n{log}");
    }
}

/// More accounts and regions than the SDK's shared identity cache holds (64 credential
/// providers, evicted arbitrarily beyond): each target has its own cache, so AssumeRole is still
/// made once per account and region, not again every cycle (it was about 3.7 times per target
/// and cycle at 100 targets, see docs/performance.md "Organization scale").
#[tokio::test]
async fn more_than_64_accounts_and_regions_assume_each_role_once() {
    let moto = Moto::start();
    let members: Vec<String> = (0..35)
        .map(|a| format!("{:012}", 400_000_000_000u64 + a))
        .collect();
    let mut cfg = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[server]\nlisten = \"{{listen}}\"\n\
         [state]\npath = \"{{state}}\"\n[poll]\nmetadata_every = \"1s\"\n",
        moto.endpoint()
    );
    for account in &members {
        role(&moto, account, "keywarden-read", Some(EXTERNAL_ID)).await;
        cfg.push_str(&format!(
            "[[account]]\nid = \"{account}\"\nrole_arn = \"arn:aws:iam::{account}:role/keywarden-read\"\n\
             external_id_env = \"KW_EXTERNAL_ID\"\nregions = [\"us-east-1\", \"eu-west-1\"]\n"
        ));
    }
    let targets = (members.len() * 2) as f64;
    let d = start_with_external_id(&cfg).await;
    d.wait_for(
        "every account and region up",
        Duration::from_secs(60),
        |s| s.sum("keywarden_account_up", &[]) >= targets + 1.0,
    )
    .await;
    d.let_polls_pass(3.0).await;
    let s = d.scrape().await;
    let assumed = s.sum(
        "keywarden_aws_requests_total",
        &[("service", "sts"), ("operation", "AssumeRole")],
    );
    assert_eq!(
        assumed, targets,
        "one AssumeRole per member account and region"
    );
    let (status, served) = moto.control("GET", "requests", json!({})).await;
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["sts:AssumeRole"].as_f64(), Some(targets), "{served}");
}

/// Point 1: assumed-role credentials are refreshed before they expire. The launcher caps
/// AssumeRole sessions at 20 s and refuses requests signed with expired credentials, as AWS
/// does (patch 10; a request made here with expired credentials shows the refusal). keywarden,
/// polling a member account every second for 50 s, assumes the role again before each
/// session ends: several AssumeRole calls, none of its requests refused, no poll error, the
/// account up throughout.
#[tokio::test]
async fn assumed_credentials_are_refreshed_before_they_expire() {
    const SESSION: u64 = 20;
    let moto = Moto::start();
    role(&moto, A, "setup", None).await;
    role(&moto, A, "keywarden-read", Some(EXTERNAL_ID)).await;
    create(&client_in(&moto, A, "us-east-1").await, "shared/db").await;
    let (status, answer) = moto
        .control("POST", "sts", json!({"max_session_seconds": SESSION}))
        .await;
    assert_eq!(status, 200, "{answer}");

    // The control: credentials of a 20 s session, used once at once and once after expiry.
    let control = async {
        let base = moto.sdk_config().await;
        let sts = aws_sdk_sts::Client::new(&base);
        let c = sts
            .assume_role()
            .role_arn(format!("arn:aws:iam::{A}:role/setup"))
            .role_session_name("expiry-control")
            .send()
            .await
            .expect("assume role")
            .credentials
            .expect("credentials");
        let creds = aws_credential_types::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "expiry-control",
        );
        let client = sm::Client::from_conf(
            sm::config::Builder::from(&base)
                .credentials_provider(creds)
                .build(),
        );
        client
            .list_secrets()
            .send()
            .await
            .expect("fresh credentials");
        tokio::time::sleep(Duration::from_secs(SESSION + 2)).await;
        let e = client
            .list_secrets()
            .send()
            .await
            .expect_err("expired credentials are refused");
        let code = e.as_service_error().and_then(|e| {
            use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
            e.code().map(str::to_string)
        });
        assert_eq!(code.as_deref(), Some("ExpiredTokenException"), "{e:?}");
        c.access_key_id().to_string()
    };

    let daemon = async {
        let cfg = format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[server]\nlisten = \"{{listen}}\"\n\
             [state]\npath = \"{{state}}\"\n[poll]\nmetadata_every = \"1s\"\n\
             [discovery]\nname_prefixes = [\"shared/\"]\n\
             [[account]]\nid = \"{A}\"\nrole_arn = \"arn:aws:iam::{A}:role/keywarden-read\"\n\
             external_id_env = \"KW_EXTERNAL_ID\"\nregions = [\"us-east-1\"]\n",
            moto.endpoint()
        );
        let d = start_with_external_id(&cfg).await;
        let member = place(A, "us-east-1");
        d.wait_for("the member account up", Duration::from_secs(30), |s| {
            s.get("keywarden_account_up", &member) == Some(1.0)
        })
        .await;
        // Two and a half sessions, sampled every second: the account never goes down.
        for second in 1..=(SESSION * 5 / 2) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s = d.scrape().await;
            assert_eq!(
                s.get("keywarden_account_up", &member),
                Some(1.0),
                "account down after {second} s\n{}",
                d.log()
            );
        }
        let s = d.scrape().await;
        let assumed = s.sum(
            "keywarden_aws_requests_total",
            &[("service", "sts"), ("operation", "AssumeRole")],
        );
        assert!(
            assumed >= 3.0,
            "{assumed} AssumeRole in {} s of {SESSION} s sessions: not refreshed",
            SESSION * 5 / 2
        );
        assert_eq!(
            s.sum("keywarden_poll_errors_total", &[("source", "metadata")]),
            0.0,
            "{}",
            d.log()
        );
        assert_eq!(
            s.get(
                "keywarden_secret_present",
                &[("secret", "shared/db"), ("account", A)]
            ),
            Some(1.0)
        );
        assumed
    };
    let (control_key, assumed) = tokio::join!(control, daemon);
    // Only the control's expired credentials were ever refused.
    let (status, sts) = moto.control("GET", "sts", json!({})).await;
    assert_eq!(status, 200, "{sts}");
    let refused: Vec<&str> = sts["refused"]
        .as_array()
        .expect("refused list")
        .iter()
        .filter_map(|r| r["access_key_id"].as_str())
        .collect();
    assert_eq!(refused, [control_key.as_str()], "{sts}");
    let (_, served) = moto.control("GET", "requests", json!({})).await;
    assert!(
        served["sts:AssumeRole"].as_f64() >= Some(assumed + 1.0),
        "{served}"
    );
}
