//! The policy `keywarden iam-policy` prints, proven under IAM enforcement (issue #19, point 2):
//! moto enforces IAM (`--initial-no-auth-action-count 3`, with the launcher's corrections so
//! that Resource ARNs and `ResourceTag` conditions count as on AWS); a user holds exactly the
//! printed policy and keywarden runs with that user's keys. Every feature of the configuration
//! works; removing any one statement breaks exactly its feature, keywarden keeps running, and
//! its log and `/readyz` name the refused action and resource.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

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

fn config(moto: &Moto) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\naccess_every = \"1s\"\n\
         [access]\nlog_group = \"trail\"\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"RANDOM\"\nid = \"app/random\"\nrotate_every = \"90d\"\nrotation = {{ strategy = \"random\" }}\n\n\
         [[secret]]\nname = \"JWT\"\nid = \"app/jwt\"\nrotate_every = \"90d\"\nrotation = {{ strategy = \"dual-key\", grace = \"0s\" }}\n\n\
         [[secret]]\nname = \"WATCHED\"\nid = \"app/watched\"\nrotate_every = \"90d\"\n",
        moto.endpoint()
    )
}

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

/// Every feature works: both pollers succeed (readiness), both strategies rotate to `done`.
async fn all_features_work(d: &Daemon) {
    wait_readyz(d, |s, _| s == 200, "ready").await;
    for secret in ["RANDOM", "JWT"] {
        let id = rotate(d, secret).await;
        d.wait_rotation(&id, &["done"], Duration::from_secs(20))
            .await;
    }
    let (status, body) = readyz(d).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn printed_policy_suffices_and_each_statement_is_needed_by_exactly_its_feature() {
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

    // The world, as the administrator: tagged secrets, the CloudTrail log group, the user.
    let text = config(&moto);
    let policy = printed_policy(&text);
    let keys = boto(
        &moto,
        Some(&admin),
        "sm = c('secretsmanager')\n\
         sm.create_secret(Name='app/random', SecretString='r0', Tags=[{'Key': 'keywarden:rotation', 'Value': 'random'}])\n\
         sm.create_secret(Name='app/jwt', SecretString=json.dumps({'current': 'k0'}), Tags=[{'Key': 'keywarden:rotation', 'Value': 'dual-key'}])\n\
         sm.create_secret(Name='app/watched', SecretString='w')\n\
         sm.create_secret(Name='app/random-admin', SecretString='not for keywarden', Tags=[{'Key': 'keywarden:rotation', 'Value': 'random'}])\n\
         c('logs').create_log_group(logGroupName='trail')\n\
         iam = c('iam')\niam.create_user(UserName='keywarden')\n\
         iam.put_user_policy(UserName='keywarden', PolicyName='kw', PolicyDocument=json.dumps(ARGS))\n\
         k = iam.create_access_key(UserName='keywarden')['AccessKey']\n\
         print(json.dumps([k['AccessKeyId'], k['SecretAccessKey']]))\n",
        &policy,
    );
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
    all_features_work(&d).await;

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

    // Each statement removed alone: its feature breaks, named by /readyz and the log.
    // (statement, what /readyz must name, the rotation that must fail or None)
    let cases: [(&str, &str, Option<&str>); 5] = [
        ("Monitor", "secretsmanager:ListSecrets on *", None),
        ("Events", "logs:FilterLogEvents on trail", None),
        (
            "RotateRandom",
            "secretsmanager:DescribeSecret on app/random",
            Some("RANDOM"),
        ),
        (
            "RotateDualKey",
            "secretsmanager:DescribeSecret on app/jwt",
            Some("JWT"),
        ),
        (
            "MonitorVersions",
            "secretsmanager:ListSecretVersionIds on arn:aws:secretsmanager:us-east-1:123456789012:secret:app/",
            None,
        ),
    ];
    for (sid, named, broken_rotation) in cases {
        boto(&moto, Some(&admin), PUT_POLICY, &without(&policy, sid));
        if sid == "MonitorVersions" {
            // ListSecretVersionIds runs when a secret's AWSCURRENT version changes.
            let id = rotate(&d, "RANDOM").await;
            d.wait_rotation(&id, &["done"], Duration::from_secs(20))
                .await;
        }
        if let Some(secret) = broken_rotation {
            let _ = rotate(&d, secret).await;
        }
        let body = wait_readyz(
            &d,
            |s, b| s == 503 && b.contains(&format!("AWS denied {named}")),
            &format!("named {named} without {sid}"),
        )
        .await;
        // Exactly its feature: no other action is refused.
        let action = named.split(' ').next().unwrap_or(named);
        let refused: std::collections::BTreeSet<&str> = body
            .split("AWS denied ")
            .skip(1)
            .filter_map(|p| p.split(' ').next())
            .collect();
        assert_eq!(
            refused,
            [action].into_iter().collect(),
            "without {sid}, another permission is refused: {body}"
        );
        // The other strategy still rotates while one is refused.
        for other in ["RANDOM", "JWT"] {
            if Some(other) != broken_rotation {
                let id = rotate(&d, other).await;
                d.wait_rotation(&id, &["done"], Duration::from_secs(20))
                    .await;
            }
        }
        assert!(
            d.log().contains(&format!("AWS denied {action} on")),
            "the log does not name {action}:\n{}",
            d.log()
        );
        // Restore; keywarden never stopped and recovers on its own.
        boto(&moto, Some(&admin), PUT_POLICY, &policy);
        if let Some(secret) = broken_rotation {
            let rows: Value = serde_json::from_str(&d.get("/rotations").await.1).expect("json");
            for r in rows["rotations"].as_array().into_iter().flatten() {
                if r["secret"] == secret
                    && let Some(id) = r["rotation_id"].as_str().or(r["id"].as_str())
                {
                    d.wait_rotation(id, &["done", "failed"], Duration::from_secs(60))
                        .await;
                }
            }
        }
        all_features_work(&d).await;
    }
}
