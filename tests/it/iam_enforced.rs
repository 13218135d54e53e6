//! The policy `keywarden iam-policy` prints, proven under IAM enforcement (issue #19, point 2):
//! moto enforces IAM (`--initial-no-auth-action-count 3`, with the launcher's corrections so
//! that Resource ARNs and `ResourceTag` conditions count as on AWS); a user holds exactly the
//! printed policy and keywarden runs with that user's keys. Every feature of the configuration
//! works; removing any one statement breaks exactly its feature, keywarden keeps running, and
//! its log and `/readyz` name the refused action and resource.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::databases::{PG_ADMIN_PW, PG_CANARY, Pg, REDIS_ADMIN_PW, REDIS_CANARY, RedisServer};
use super::elasticache::{Backing, CANARY as EC_CANARY, back};
use crate::support::{Daemon, Moto, free_port, http, keywarden_command, venv_python};

const TOKEN: &str = "iam-enforced-admin-token-0123456789abcdef";

/// Runs boto3 against `moto` with `keys` (None: the unchecked default keys); `script` reads
/// `ARGS` (JSON) and `c(service)` makes a client; its stdout is JSON.
fn boto(moto: &Moto, keys: Option<&(String, String)>, script: &str, args: &Value) -> Value {
    let (id, secret) = keys
        .cloned()
        .unwrap_or_else(|| ("test".into(), "test".into()));
    let prelude = format!(
        "import json, sys, boto3\nARGS = json.loads(sys.argv[1])\n\
         def c(s): return boto3.client(s, endpoint_url={:?}, region_name='us-east-1', \
         aws_access_key_id={id:?}, aws_secret_access_key={secret:?})\n",
        moto.endpoint()
    );
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .arg(args.to_string())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "boto3 script failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

const GROUP: &str = "event-service-redis";
const REMINDERS: &str = "arn:aws:sns:us-east-1:123456789012:reminders";
const SECURITY: &str = "arn:aws:sns:us-east-1:123456789012:security";

/// Every feature the policy covers: monitor, access events, reminders (RANDOM's lead is longer
/// than its interval, so each of its rotations is followed by a reminder), compromise, and a
/// rotation of each strategy that runs here (`lambda` needs a Lambda runtime moto lacks).
fn config(moto: &Moto, ca: &std::path::Path) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\naccess_every = \"1s\"\n\
         [access]\nlog_group = \"trail\"\n\
         [reminders]\nlead = [\"14d\"]\nsns_topic_arn = \"{REMINDERS}\"\n\
         [incident]\nsns_topic_arn = \"{SECURITY}\"\nreport_dir = \"{{dir}}/reports\"\naudit_lookback = \"1d\"\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"RANDOM\"\nid = \"app/random\"\nrotate_every = \"7d\"\nrotation = {{ strategy = \"random\" }}\n\n\
         [[secret]]\nname = \"JWT\"\nid = \"app/jwt\"\nrotate_every = \"90d\"\nrotation = {{ strategy = \"dual-key\", grace = \"0s\" }}\n\n\
         [[secret]]\nname = \"WATCHED\"\nid = \"app/watched\"\nrotate_every = \"90d\"\n\n\
         [[secret]]\nname = \"PG\"\nid = \"db/app\"\n\
         rotation = {{ strategy = \"postgres\", grace = \"0s\", master_secret = \"db/master\", tls = \"disable\" }}\n\n\
         [[secret]]\nname = \"REDIS\"\nid = \"cache/events\"\n\
         rotation = {{ strategy = \"redis\", grace = \"0s\", master_secret = \"cache/master\", tls = \"disable\" }}\n\n\
         [[secret]]\nname = \"EC\"\nid = \"ec/token\"\n\
         rotation = {{ strategy = \"elasticache\", replication_group = \"{GROUP}\", grace = \"0s\", ca_file = \"{}\", timeout = \"60s\" }}\n",
        moto.endpoint(),
        ca.display()
    )
}

/// The secrets that rotate, one per strategy.
const ROTATED: [&str; 5] = ["RANDOM", "JWT", "PG", "REDIS", "EC"];

/// `keywarden iam-policy` for `config`.
fn printed_policy(config_text: &str) -> Value {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("k.toml");
    let text = config_text
        .replace("{listen}", "127.0.0.1:9717")
        .replace("{state}", &dir.path().join("s.db").display().to_string());
    std::fs::write(&path, text).expect("write");
    let out = keywarden_command()
        .args(["iam-policy", "--account", "123456789012", "--config"])
        .arg(&path)
        .output()
        .expect("run iam-policy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("policy JSON")
}

fn without(policy: &Value, sid: &str) -> Value {
    let mut p = policy.clone();
    if let Some(a) = p["Statement"].as_array_mut() {
        a.retain(|s| s["Sid"] != sid);
    }
    p
}

const PUT_POLICY: &str = "c('iam').put_user_policy(UserName='keywarden', PolicyName='kw', \
                          PolicyDocument=json.dumps(ARGS))\nprint('null')\n";

async fn readyz(d: &Daemon) -> (u16, String) {
    d.get("/readyz").await
}

async fn wait_readyz(d: &Daemon, want: impl Fn(u16, &str) -> bool, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readyz(d).await;
        if want(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never {what}: {status} {body}\nlog:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn rotate(d: &Daemon, secret: &str) -> String {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url(&format!("/rotate/{secret}")),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 202, "rotate {secret}: {body}\nlog:\n{}", d.log());
    let v: Value = serde_json::from_str(&body).expect("json");
    v["rotation_id"].as_str().expect("id").to_string()
}

/// Starts a rotation of each of `secrets` at once and waits until all are `done`.
async fn rotate_all(d: &Daemon, secrets: &[&str]) {
    let mut ids = Vec::new();
    for secret in secrets {
        ids.push(rotate(d, secret).await);
    }
    for id in ids {
        d.wait_rotation(&id, &["done"], Duration::from_secs(60))
            .await;
    }
}

/// Opens an incident for `secret`; its id.
async fn compromise(d: &Daemon, secret: &str) -> String {
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url(&format!("/compromised/{secret}")),
        &[("authorization", &auth)],
        Some("{\"reason\":\"iam test\"}".to_string()),
    )
    .await;
    assert_eq!(
        status,
        202,
        "compromised {secret}: {body}\nlog:\n{}",
        d.log()
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    v["incident_id"].as_str().expect("incident_id").to_string()
}

/// Waits until incident `id` satisfies `want`; its document.
async fn wait_incident(d: &Daemon, id: &str, want: impl Fn(&Value) -> bool, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inc: Value =
            serde_json::from_str(&d.get(&format!("/incidents/{id}")).await.1).unwrap_or_default();
        if want(&inc) {
            return inc;
        }
        assert!(
            Instant::now() < deadline,
            "incident never {what}: {inc:#}\nlog:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn step_state<'a>(inc: &'a Value, step: &str) -> &'a str {
    inc["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == step)
        .and_then(|s| s["state"].as_str())
        .unwrap_or("")
}

/// The SNS notices queue `queue` received since the last call (deleted once read), as the
/// administrator: each as its `kind` attribute and `secret` attribute.
fn drain(moto: &Moto, admin: &(String, String), queue: &str) -> Vec<(String, String)> {
    let v = boto(
        moto,
        Some(admin),
        "sqs = c('sqs')\nurl = sqs.get_queue_url(QueueName=ARGS)['QueueUrl']\nout = []\n\
         while True:\n\
         \x20   r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get('Messages', [])\n\
         \x20   if not r: break\n\
         \x20   for m in r:\n\
         \x20       a = json.loads(m['Body']).get('MessageAttributes', {})\n\
         \x20       out.append([a.get('kind', {}).get('Value', ''), a.get('secret', {}).get('Value', '')])\n\
         \x20       sqs.delete_message(QueueUrl=url, ReceiptHandle=m['ReceiptHandle'])\n\
         print(json.dumps(out))\n",
        &Value::String(queue.into()),
    );
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p[0].as_str().unwrap_or("").to_string(),
                p[1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Waits until queue `queue` has received a notice for `secret`; all it received.
async fn wait_notice(
    d: &Daemon,
    moto: &Moto,
    admin: &(String, String),
    queue: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    loop {
        got.extend(drain(moto, admin, queue));
        if got.iter().any(|(_, s)| s == secret) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "no notice for {secret} on {queue}: {got:?}\nlog:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every feature works: both pollers succeed (readiness), each strategy rotates to `done`, the
/// reminder that follows RANDOM's rotation reaches the reminders topic, and a compromise
/// rotates, audits, notifies the security topic and resolves.
async fn all_features_work(d: &Daemon, moto: &Moto, admin: &(String, String)) {
    wait_readyz(d, |s, _| s == 200, "ready").await;
    rotate_all(d, &ROTATED).await;
    let reminders = wait_notice(d, moto, admin, "reminders-q", "RANDOM").await;
    assert!(
        reminders.iter().all(|(k, _)| k == "reminder"),
        "{reminders:?}"
    );
    let id = compromise(d, "JWT").await;
    let inc = wait_incident(d, &id, |i| i["status"] != "open" && !i.is_null(), "closed").await;
    assert_eq!(inc["status"], "resolved", "{inc:#}\nlog:\n{}", d.log());
    let notices = wait_notice(d, moto, admin, "security-q", "JWT").await;
    assert!(
        notices.iter().any(|(k, _)| k == "incident_opened"),
        "{notices:?}"
    );
    let (status, body) = readyz(d).await;
    assert_eq!(status, 200, "{body}");
}

/// What removing one statement must break, and only that.
struct Case {
    sid: &'static str,
    /// What `/readyz` and the log must name: `action on resource`.
    named: String,
    /// The secret whose rotation must fail, if any.
    broken: Option<&'static str>,
    /// The case's own trigger: a rotation of RANDOM that must succeed (ListSecretVersionIds
    /// runs when a secret's AWSCURRENT version changes), or a compromise of JWT.
    trigger: Trigger,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    None,
    Compromise,
}

#[tokio::test]
async fn printed_policy_suffices_and_each_statement_is_needed_by_exactly_its_feature() {
    let started = Instant::now();
    let moto = Moto::start_enforcing(3);
    // The 3 unchecked requests: an administrator and its keys.
    let admin = boto(
        &moto,
        None,
        "iam = c('iam')\niam.create_user(UserName='admin')\n\
         iam.put_user_policy(UserName='admin', PolicyName='all', PolicyDocument=json.dumps(\
         {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))\n\
         k = iam.create_access_key(UserName='admin')['AccessKey']\n\
         print(json.dumps([k['AccessKeyId'], k['SecretAccessKey']]))\n",
        &Value::Null,
    );
    let admin = (
        admin[0].as_str().expect("id").to_string(),
        admin[1].as_str().expect("key").to_string(),
    );
    // Enforcement is on: the default keys are refused.
    let refused = Command::new(venv_python())
        .arg("-c")
        .arg(format!(
            "import boto3\nboto3.client('secretsmanager', endpoint_url={:?}, region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test').list_secrets()",
            moto.endpoint()
        ))
        .output()
        .expect("python");
    assert!(!refused.status.success(), "moto did not enforce IAM");

    // The backing systems: PostgreSQL and redis-server for their strategies, a redis-server
    // behind the ElastiCache replication group.
    let pg = Pg::start().await;
    pg.prepare().await;
    let rs = RedisServer::start().await;
    let backing = Backing::start().await;

    // The world, as the administrator: tagged secrets, the CloudTrail log group, the topics
    // (each with a queue to read what reached it), the replication group, the user.
    let text = config(&moto, &backing.certs.ca);
    let policy = printed_policy(&text);
    let keys = boto(
        &moto,
        Some(&admin),
        "sm = c('secretsmanager')\n\
         def tagged(name, value, strategy):\n\
         \x20   sm.create_secret(Name=name, SecretString=value, Tags=[{'Key': 'keywarden:rotation', 'Value': strategy}])\n\
         tagged('app/random', 'r0', 'random')\n\
         tagged('app/jwt', json.dumps({'current': 'k0'}), 'dual-key')\n\
         sm.create_secret(Name='app/watched', SecretString='w')\n\
         tagged('app/random-admin', 'not for keywarden', 'random')\n\
         tagged('db/app', json.dumps(ARGS['pg_app']), 'postgres')\n\
         sm.create_secret(Name='db/master', SecretString=json.dumps(ARGS['pg_master']))\n\
         tagged('cache/events', json.dumps(ARGS['redis_app']), 'redis')\n\
         sm.create_secret(Name='cache/master', SecretString=json.dumps(ARGS['redis_master']))\n\
         tagged('ec/token', ARGS['ec_token'], 'elasticache')\n\
         c('elasticache').create_replication_group(ReplicationGroupId=ARGS['group'], \
         ReplicationGroupDescription='keywarden iam test', AuthToken=ARGS['ec_token'], TransitEncryptionEnabled=True)\n\
         c('logs').create_log_group(logGroupName='trail')\n\
         sns, sqs = c('sns'), c('sqs')\n\
         for t in ('reminders', 'security'):\n\
         \x20   arn = sns.create_topic(Name=t)['TopicArn']\n\
         \x20   sqs.create_queue(QueueName=t + '-q')\n\
         \x20   sns.subscribe(TopicArn=arn, Protocol='sqs', Endpoint='arn:aws:sqs:us-east-1:123456789012:' + t + '-q')\n\
         iam = c('iam')\niam.create_user(UserName='keywarden')\n\
         iam.put_user_policy(UserName='keywarden', PolicyName='kw', PolicyDocument=json.dumps(ARGS['policy']))\n\
         k = iam.create_access_key(UserName='keywarden')['AccessKey']\n\
         print(json.dumps([k['AccessKeyId'], k['SecretAccessKey']]))\n",
        &json!({
            "policy": policy,
            "group": GROUP,
            "ec_token": EC_CANARY,
            "pg_app": {"username": "app", "password": PG_CANARY, "host": "127.0.0.1",
                       "port": pg.port, "dbname": "appdb", "engine": "postgres"},
            "pg_master": {"username": "kwadmin", "password": PG_ADMIN_PW, "dbname": "postgres",
                          "host": "127.0.0.1", "port": pg.port},
            "redis_app": {"username": "events", "password": REDIS_CANARY, "host": "127.0.0.1",
                          "port": rs.port},
            "redis_master": {"username": "kwadmin", "password": REDIS_ADMIN_PW,
                             "host": "127.0.0.1", "port": rs.port},
        }),
    );
    back(&moto, GROUP, &backing, true).await;
    let (key_id, key_secret) = (
        keys[0].as_str().expect("id").to_string(),
        keys[1].as_str().expect("key").to_string(),
    );

    let dir = tempfile::tempdir().expect("dir");
    let d = Daemon::start_in_env(
        dir,
        free_port(),
        &text,
        &[
            ("KW_TEST_TOKEN", TOKEN),
            ("AWS_ACCESS_KEY_ID", &key_id),
            ("AWS_SECRET_ACCESS_KEY", &key_secret),
        ],
    )
    .await;
    all_features_work(&d, &moto, &admin).await;
    // The rotations really changed the backing systems' credentials.
    let pg_now: Value = serde_json::from_str(
        boto(
            &moto,
            Some(&admin),
            "print(json.dumps(c('secretsmanager').get_secret_value(SecretId='db/app')['SecretString']))\n",
            &Value::Null,
        )
        .as_str()
        .expect("db/app value"),
    )
    .expect("db/app JSON");
    let (user, pw) = (
        pg_now["username"].as_str().expect("username"),
        pg_now["password"].as_str().expect("password"),
    );
    assert_ne!(pw, PG_CANARY, "the postgres password rotated");
    assert!(
        pg.login(user, pw, "appdb").await.is_ok(),
        "the rotated postgres login works"
    );
    assert!(
        !backing.accepts(EC_CANARY).await,
        "the first ElastiCache token is gone"
    );
    println!("setup and every feature: {:?}", started.elapsed());

    // The policy is least privilege where moto can show it: the same user may not read a
    // secret outside its statements, even one carrying the rotation tag.
    let probe = Command::new(venv_python())
        .arg("-c")
        .arg(format!(
            "import boto3\nboto3.client('secretsmanager', endpoint_url={:?}, region_name='us-east-1', \
             aws_access_key_id={key_id:?}, aws_secret_access_key={key_secret:?}).get_secret_value(SecretId='app/random-admin')",
            moto.endpoint()
        ))
        .output()
        .expect("python");
    assert!(
        String::from_utf8_lossy(&probe.stderr).contains("AccessDenied"),
        "GetSecretValue outside the policy was not refused: {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // Each statement removed alone: its feature breaks, named by /readyz and the log; every
    // other feature keeps working (each other strategy rotates meanwhile, and no other
    // permission is refused).
    let case = |sid, named: &str, broken, trigger| Case {
        sid,
        named: named.to_string(),
        broken,
        trigger,
    };
    // Every secret whose version changed meanwhile is named, each by its ARN.
    let sm_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:";
    let cases = [
        case(
            "Monitor",
            "secretsmanager:ListSecrets on *",
            None,
            Trigger::None,
        ),
        case(
            "Events",
            "logs:FilterLogEvents on trail",
            None,
            Trigger::None,
        ),
        case(
            "MonitorVersions",
            &format!("secretsmanager:ListSecretVersionIds on {sm_arn}"),
            None,
            Trigger::None,
        ),
        case(
            "RotateRandom",
            "secretsmanager:DescribeSecret on app/random",
            Some("RANDOM"),
            Trigger::None,
        ),
        case(
            "RotateDualKey",
            "secretsmanager:DescribeSecret on app/jwt",
            Some("JWT"),
            Trigger::None,
        ),
        case(
            "RotatePostgres",
            "secretsmanager:DescribeSecret on db/app",
            Some("PG"),
            Trigger::None,
        ),
        case(
            "PostgresMaster",
            "secretsmanager:GetSecretValue on db/master",
            Some("PG"),
            Trigger::None,
        ),
        case(
            "RotateRedis",
            "secretsmanager:DescribeSecret on cache/events",
            Some("REDIS"),
            Trigger::None,
        ),
        case(
            "RedisMaster",
            "secretsmanager:GetSecretValue on cache/master",
            Some("REDIS"),
            Trigger::None,
        ),
        case(
            "RotateElasticache",
            "secretsmanager:DescribeSecret on ec/token",
            Some("EC"),
            Trigger::None,
        ),
        case(
            "ElastiCacheGroups",
            &format!("elasticache:DescribeReplicationGroups on {GROUP}"),
            Some("EC"),
            Trigger::None,
        ),
        case(
            "NotifyReminders",
            &format!("sns:Publish on {REMINDERS}"),
            None,
            Trigger::None,
        ),
        case(
            "NotifyIncident",
            &format!("sns:Publish on {SECURITY}"),
            None,
            Trigger::Compromise,
        ),
    ];
    let sids: std::collections::BTreeSet<String> = policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["Sid"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        sids,
        cases.iter().map(|c| c.sid.to_string()).collect(),
        "one removal case per statement of the printed policy"
    );
    for c in &cases {
        let case_started = Instant::now();
        drain(&moto, &admin, "reminders-q");
        boto(&moto, Some(&admin), PUT_POLICY, &without(&policy, c.sid));
        let broken_id = match c.broken {
            Some(secret) => Some(rotate(&d, secret).await),
            None => None,
        };
        let incident = match c.trigger {
            Trigger::Compromise => Some(compromise(&d, "JWT").await),
            Trigger::None => None,
        };
        // Every other strategy rotates meanwhile (RANDOM's rotation is followed by a reminder).
        let others: Vec<&str> = ROTATED
            .into_iter()
            .filter(|s| Some(*s) != c.broken && !(incident.is_some() && *s == "JWT"))
            .collect();
        rotate_all(&d, &others).await;
        let named = c.named.as_str();
        let body = wait_readyz(
            &d,
            |s, b| s == 503 && b.contains(&format!("AWS denied {named}")),
            &format!("named {named} without {}", c.sid),
        )
        .await;
        // Exactly its feature: no other permission is refused.
        let refused: Vec<&str> = body
            .split("AWS denied ")
            .skip(1)
            .map(|p| p.split([';', '\n']).next().unwrap_or(p))
            .collect();
        assert!(
            refused.iter().all(|r| r.starts_with(named)),
            "without {}, another permission is refused: {body}",
            c.sid
        );
        assert!(
            d.log().contains(&format!("AWS denied {named}")),
            "the log does not name {named}:\n{}",
            d.log()
        );
        if let Some(id) = &incident {
            // The compromise rotates and audits; only its notices are refused.
            let inc = wait_incident(
                &d,
                id,
                |i| step_state(i, "rotate") == "done" && step_state(i, "audit") == "done",
                "rotated and audited",
            )
            .await;
            assert_ne!(step_state(&inc, "notify"), "done", "{inc:#}");
        }
        // Restore; keywarden never stopped and recovers on its own.
        boto(&moto, Some(&admin), PUT_POLICY, &policy);
        if let (Some(secret), Some(id)) = (c.broken, &broken_id) {
            d.wait_rotation(id, &["done", "failed"], Duration::from_secs(90))
                .await;
            rotate_all(&d, &[secret]).await;
        }
        if let Some(id) = &incident {
            // The notify step's next attempt goes through.
            let inc = wait_incident(&d, id, |i| i["status"] != "open", "closed").await;
            assert_eq!(inc["status"], "resolved", "{inc:#}\nlog:\n{}", d.log());
            wait_notice(&d, &moto, &admin, "security-q", "JWT").await;
        }
        if c.sid == "NotifyReminders" {
            // The refused reminder is kept and sent once allowed.
            wait_notice(&d, &moto, &admin, "reminders-q", "RANDOM").await;
        }
        wait_readyz(&d, |s, _| s == 200, &format!("ready again after {}", c.sid)).await;
        println!("without {}: {:?}", c.sid, case_started.elapsed());
    }
    println!("total: {:?}", started.elapsed());
}
