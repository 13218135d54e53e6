//! `keywarden iam-policy`: the least-privilege IAM policy a configuration needs (pure).
//!
//! A policy is the union of the features the configuration uses, one statement per feature
//! part, each with a fixed `Sid` so a test can remove exactly one:
//!
//! - **monitor** (always): `Monitor` (ListSecrets, which takes only `Resource: "*"`) and
//!   `MonitorVersions` (ListSecretVersionIds on the watched secrets). Never GetSecretValue.
//! - **rotator** (a secret with a strategy other than `none`): `Rotate<Strategy>` per strategy
//!   in use, on the secrets of that strategy and conditioned on their tag
//!   `keywarden:rotation = <strategy>` ([`ROTATION_TAG`]); `<Strategy>Master` (GetSecretValue of
//!   the `master_secret`s of `postgres`/`redis`); `ElastiCacheGroups` (Describe/Modify of the
//!   `elasticache` replication groups).
//! - **notify**: `NotifyReminders` and `NotifyIncident` (sns:Publish on each configured topic).
//! - **events**: `Events` (logs:FilterLogEvents on the `[access] log_group`).
//!
//! - **organization** (`[[account]]` or `[organization]`): `OrganizationAccounts`
//!   (organizations:ListAccounts, `[organization]` only) and `OrganizationAssumeRole`
//!   (sts:AssumeRole on the member roles). The member role's own read-only policy ships in
//!   `deploy/cloudformation/member-account.yaml`.
//!
//! The shipped `deploy/iam/<feature>.json` are [`feature_policy`] with every region, account and
//! name a wildcard (a test keeps them equal).

use serde_json::{Value, json};

use crate::config::{Config, Strategy};

/// The resource tag a secret must carry for the rotator statements to cover it; its value is the
/// strategy name (`random`, `dual-key`, ...).
pub const ROTATION_TAG: &str = "keywarden:rotation";

/// Where the ARNs point: `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: String,
    /// The region, or `*`.
    pub region: String,
    /// The 12-digit account, or `*`.
    pub account: String,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            partition: "aws".into(),
            region: "*".into(),
            account: "*".into(),
        }
    }
}

/// A feature that needs permissions; one shipped document each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// The metadata poller (and `keywarden status`).
    Monitor,
    /// Rotation of every strategy (scheduled, manual, compromise, rollback).
    Rotator,
    /// Reminders and compromise notices over SNS.
    Notify,
    /// CloudTrail access events (the access poller, compromise audit, `keywarden consumers`):
    /// FilterLogEvents on the log group, or ReceiveMessage and DeleteMessage on the SQS queue.
    Events,
    /// Organization scale (`[[account]]`, `[organization]`): ListAccounts, and AssumeRole into
    /// the member accounts' read role (`deploy/cloudformation/member-account.yaml`).
    Organization,
}

impl Feature {
    /// Every feature, in file order.
    pub const ALL: [Feature; 5] = [
        Feature::Monitor,
        Feature::Rotator,
        Feature::Notify,
        Feature::Events,
        Feature::Organization,
    ];

    /// The file name stem under `deploy/iam/`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Monitor => "monitor",
            Feature::Rotator => "rotator",
            Feature::Notify => "notify",
            Feature::Events => "events",
            Feature::Organization => "organization",
        }
    }
}

/// The Secrets Manager actions a rotation of `strategy` calls on its own secret (`None`: no
/// rotation). `lambda` starts the secret's rotation Lambda and waits; rollback moves stages.
pub fn rotation_actions(strategy: Strategy) -> &'static [&'static str] {
    const VALUE: &[&str] = &[
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ];
    const LAMBDA: &[&str] = &[
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:RotateSecret",
        "secretsmanager:UpdateSecretVersionStage",
    ];
    match strategy {
        Strategy::None => &[],
        Strategy::Lambda => LAMBDA,
        Strategy::Random
        | Strategy::DualKey
        | Strategy::PrimarySecondary
        | Strategy::Postgres
        | Strategy::Redis
        | Strategy::Elasticache => VALUE,
    }
}

/// The strategy name in CamelCase followed by `suffix`: `DualKeyMaster` for `dual-key`.
pub fn strategy_sid(strategy: Strategy, suffix: &str) -> String {
    let camel: String = strategy
        .as_str()
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    format!("{camel}{suffix}")
}

/// The ARN of a secret given by name or ARN. A name matches its six-character suffix only
/// (`name-??????`), so `app` never covers `app-admin`.
pub fn secret_arn(scope: &Scope, id: &str) -> String {
    if id.starts_with("arn:") {
        return id.to_string();
    }
    format!(
        "arn:{}:secretsmanager:{}:{}:secret:{id}-??????",
        scope.partition, scope.region, scope.account
    )
}

fn any_secret(scope: &Scope) -> String {
    format!(
        "arn:{}:secretsmanager:{}:{}:secret:*",
        scope.partition, scope.region, scope.account
    )
}

fn topic_arn(scope: &Scope, topic: &str) -> String {
    if topic.starts_with("arn:") {
        topic.to_string()
    } else {
        format!(
            "arn:{}:sns:{}:{}:{topic}",
            scope.partition, scope.region, scope.account
        )
    }
}

fn log_group_arn(scope: &Scope, group: &str) -> String {
    format!(
        "arn:{}:logs:{}:{}:log-group:{group}:*",
        scope.partition, scope.region, scope.account
    )
}

/// The ARN of the queue behind `https://sqs.<region>.amazonaws.com/<account>/<name>` (its own
/// region and account when the URL names them, else the scope's).
fn queue_arn(scope: &Scope, queue_url: &str) -> String {
    let parts: Vec<&str> = queue_url
        .trim_end_matches('/')
        .rsplit('/')
        .take(2)
        .collect();
    let (name, account) = match parts.as_slice() {
        [name, account] if account.chars().all(|c| c.is_ascii_digit()) => (*name, *account),
        [name, ..] => (*name, scope.account.as_str()),
        [] => ("*", scope.account.as_str()),
    };
    let region = queue_url
        .split("://sqs.")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .filter(|r| !r.is_empty())
        .unwrap_or(scope.region.as_str());
    format!("arn:{}:sqs:{region}:{account}:{name}", scope.partition)
}

fn replication_group_arn(scope: &Scope, group: &str) -> String {
    format!(
        "arn:{}:elasticache:{}:{}:replicationgroup:{group}",
        scope.partition, scope.region, scope.account
    )
}

fn statement(sid: &str, actions: &[&str], resources: Vec<String>) -> Value {
    json!({ "Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources })
}

fn rotate_statement(strategy: Strategy, resources: Vec<String>) -> Value {
    let mut s = statement(
        &format!("Rotate{}", strategy_sid(strategy, "")),
        rotation_actions(strategy),
        resources,
    );
    s["Condition"] = json!({
        "StringEquals": { format!("secretsmanager:ResourceTag/{ROTATION_TAG}"): strategy.as_str() }
    });
    s
}

fn document(statements: Vec<Value>) -> Value {
    json!({ "Version": "2012-10-17", "Statement": statements })
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// The generic document of one feature: every resource a wildcard within `scope`, every
/// strategy that rotates. What `deploy/iam/<feature>.json` holds.
pub fn feature_policy(feature: Feature, scope: &Scope) -> Value {
    let any = any_secret(scope);
    let statements = match feature {
        Feature::Monitor => vec![
            statement("Monitor", &["secretsmanager:ListSecrets"], vec!["*".into()]),
            statement(
                "MonitorVersions",
                &["secretsmanager:ListSecretVersionIds"],
                vec![any.clone()],
            ),
        ],
        Feature::Rotator => {
            let mut v: Vec<Value> = Strategy::ALL
                .iter()
                .filter(|s| !rotation_actions(**s).is_empty())
                .map(|s| rotate_statement(*s, vec![any.clone()]))
                .collect();
            for s in [Strategy::Postgres, Strategy::Redis] {
                v.push(statement(
                    &strategy_sid(s, "Master"),
                    &["secretsmanager:GetSecretValue"],
                    vec![any.clone()],
                ));
            }
            v.push(statement(
                "ElastiCacheGroups",
                &[
                    "elasticache:DescribeReplicationGroups",
                    "elasticache:ModifyReplicationGroup",
                ],
                vec![replication_group_arn(scope, "*")],
            ));
            v
        }
        Feature::Notify => vec![statement(
            "Notify",
            &["sns:Publish"],
            vec![topic_arn(scope, "*")],
        )],
        Feature::Events => vec![
            statement(
                "Events",
                &["logs:FilterLogEvents"],
                vec![log_group_arn(scope, "*")],
            ),
            statement(
                "EventsQueue",
                &["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                vec![format!(
                    "arn:{}:sqs:{}:{}:*",
                    scope.partition, scope.region, scope.account
                )],
            ),
        ],
        Feature::Organization => vec![
            statement(
                "OrganizationAccounts",
                &["organizations:ListAccounts"],
                vec!["*".into()],
            ),
            statement(
                "OrganizationAssumeRole",
                &["sts:AssumeRole"],
                vec![format!(
                    "arn:{}:iam::*:role/keywarden-read",
                    scope.partition
                )],
            ),
        ],
    };
    document(statements)
}

/// The exact policy `config` needs: the union of the features it uses, ARNs filled in.
pub fn config_policy(config: &Config, scope: &Scope) -> Value {
    let mut statements = Vec::new();

    // monitor: every watched secret (inventory and discovery prefixes).
    statements.push(statement(
        "Monitor",
        &["secretsmanager:ListSecrets"],
        vec!["*".into()],
    ));
    // Secrets of member accounts are read with the member role, not these credentials.
    let mut watched: Vec<String> = config
        .secrets
        .iter()
        .filter(|s| s.account.is_none())
        .map(|s| secret_arn(scope, &s.id))
        .collect();
    if let Some(d) = &config.discovery {
        watched.extend(d.name_prefixes.iter().map(|p| {
            format!(
                "arn:{}:secretsmanager:{}:{}:secret:{p}*",
                scope.partition, scope.region, scope.account
            )
        }));
    }
    if !watched.is_empty() {
        statements.push(statement(
            "MonitorVersions",
            &["secretsmanager:ListSecretVersionIds"],
            dedup(watched),
        ));
    }

    // rotator: one statement per strategy in use, in vocabulary order.
    for strategy in Strategy::ALL {
        if rotation_actions(strategy).is_empty() {
            continue;
        }
        let of: Vec<_> = config
            .secrets
            .iter()
            .filter(|s| s.rotation.strategy == strategy)
            .collect();
        if of.is_empty() {
            continue;
        }
        statements.push(rotate_statement(
            strategy,
            dedup(of.iter().map(|s| secret_arn(scope, &s.id)).collect()),
        ));
        let masters: Vec<String> = of
            .iter()
            .filter_map(|s| s.rotation.master_secret.as_deref())
            .map(|m| secret_arn(scope, m))
            .collect();
        if !masters.is_empty() {
            statements.push(statement(
                &strategy_sid(strategy, "Master"),
                &["secretsmanager:GetSecretValue"],
                dedup(masters),
            ));
        }
        if strategy == Strategy::Elasticache {
            let groups: Vec<String> = of
                .iter()
                .filter_map(|s| s.rotation.replication_group.as_deref())
                .map(|g| replication_group_arn(scope, g))
                .collect();
            if !groups.is_empty() {
                statements.push(statement(
                    "ElastiCacheGroups",
                    &[
                        "elasticache:DescribeReplicationGroups",
                        "elasticache:ModifyReplicationGroup",
                    ],
                    dedup(groups),
                ));
            }
        }
    }

    // notify.
    if let Some(r) = &config.reminders {
        statements.push(statement(
            "NotifyReminders",
            &["sns:Publish"],
            vec![topic_arn(scope, &r.sns_topic_arn)],
        ));
    }
    if let Some(i) = &config.incident {
        statements.push(statement(
            "NotifyIncident",
            &["sns:Publish"],
            vec![topic_arn(scope, &i.sns_topic_arn)],
        ));
    }

    // events.
    if let Some(a) = &config.access {
        if let Some(group) = &a.log_group {
            statements.push(statement(
                "Events",
                &["logs:FilterLogEvents"],
                vec![log_group_arn(scope, group)],
            ));
        }
        if let crate::config::AccessSource::Sqs { queue_url } = &a.source {
            statements.push(statement(
                "EventsQueue",
                &["sqs:ReceiveMessage", "sqs:DeleteMessage"],
                vec![queue_arn(scope, queue_url)],
            ));
        }
    }

    // organization: the member accounts are read through their own role (its policy ships in
    // deploy/cloudformation/member-account.yaml); the daemon's own credentials only assume it.
    if let Some(o) = &config.organization {
        statements.push(statement(
            "OrganizationAccounts",
            &["organizations:ListAccounts"],
            vec!["*".into()],
        ));
        statements.push(statement(
            "OrganizationAssumeRole",
            &["sts:AssumeRole"],
            vec![format!(
                "arn:{}:iam::*:role/{}",
                scope.partition, o.role_name
            )],
        ));
    } else if !config.accounts.is_empty() {
        statements.push(statement(
            "OrganizationAssumeRole",
            &["sts:AssumeRole"],
            dedup(config.accounts.iter().map(|a| a.role_arn.clone()).collect()),
        ));
    }
    document(statements)
}

/// Every action of a policy document, for comparisons.
pub fn actions_of(policy: &Value) -> std::collections::BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["Action"].as_array().into_iter().flatten())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// An SQS access source needs ReceiveMessage and DeleteMessage on its queue (and
    /// FilterLogEvents only when a log group is also configured).
    #[test]
    fn an_sqs_source_gets_its_queue_statement() {
        let c = config(
            "[access]\nsource = \"sqs\"\nqueue_url = \"https://sqs.eu-west-1.amazonaws.com/210987654321/kw-ct\"\n\
             [[secret]]\nname = \"A\"\nid = \"svc/a\"\n",
        );
        let p = config_policy(&c, &scope());
        let text = p.to_string();
        assert!(
            text.contains("arn:aws:sqs:eu-west-1:210987654321:kw-ct"),
            "{text}"
        );
        assert!(text.contains("sqs:DeleteMessage") && !text.contains("logs:FilterLogEvents"));
        assert_eq!(
            queue_arn(&scope(), "https://queue.example/kw"),
            format!("arn:aws:sqs:{}:{}:kw", scope().region, scope().account)
        );
    }

    fn config(text: &str) -> Config {
        crate::config::parse(text, Path::new("t.toml")).expect("valid test config")
    }

    fn scope() -> Scope {
        Scope {
            partition: "aws".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        }
    }

    fn sids(p: &Value) -> Vec<String> {
        p["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .map(|s| s["Sid"].as_str().expect("sid").to_string())
            .collect()
    }

    fn stmt<'a>(p: &'a Value, sid: &str) -> &'a Value {
        p["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid} in {p}"))
    }

    const MONITOR_ONLY: &str = "[[secret]]\nname = \"a\"\nid = \"svc/a\"\nrotate_every = \"90d\"\n";

    #[test]
    fn monitoring_only_never_reads_a_value() {
        let p = config_policy(&config(MONITOR_ONLY), &scope());
        assert_eq!(sids(&p), ["Monitor", "MonitorVersions"]);
        assert!(!actions_of(&p).contains("secretsmanager:GetSecretValue"));
        assert_eq!(
            stmt(&p, "MonitorVersions")["Resource"],
            json!(["arn:aws:secretsmanager:eu-west-1:123456789012:secret:svc/a-??????"])
        );
        assert_eq!(stmt(&p, "Monitor")["Resource"], json!(["*"]));
    }

    #[test]
    fn every_feature_in_use_gets_its_statements_with_arns_filled_in() {
        let text = r#"
[access]
log_group = "cloudtrail"
[reminders]
lead = ["7d"]
sns_topic_arn = "arn:aws:sns:eu-west-1:123456789012:reminders"
[incident]
sns_topic_arn = "arn:aws:sns:eu-west-1:123456789012:security"
report_dir = "/tmp"
[discovery]
name_prefixes = ["team/"]
[[secret]]
name = "a"
id = "svc/a"
rotate_every = "90d"
rotation = { strategy = "random" }
[[secret]]
name = "jwt"
id = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:svc/jwt-AbCdEf"
rotate_every = "90d"
rotation = { strategy = "dual-key" }
[[secret]]
name = "db"
id = "svc/db"
rotate_every = "90d"
rotation = { strategy = "postgres", master_secret = "svc/db-admin", host = "db", tls = "disable" }
[[secret]]
name = "watched"
id = "svc/watched"
rotate_every = "90d"
"#;
        let p = config_policy(&config(text), &scope());
        assert_eq!(
            sids(&p),
            [
                "Monitor",
                "MonitorVersions",
                "RotateRandom",
                "RotateDualKey",
                "RotatePostgres",
                "PostgresMaster",
                "NotifyReminders",
                "NotifyIncident",
                "Events"
            ]
        );
        let versions = stmt(&p, "MonitorVersions")["Resource"].clone();
        assert_eq!(versions.as_array().map(Vec::len), Some(5), "{versions}");
        assert!(
            versions
                .to_string()
                .contains("arn:aws:secretsmanager:eu-west-1:123456789012:secret:team/*")
        );
        assert_eq!(
            stmt(&p, "RotateDualKey")["Resource"],
            json!(["arn:aws:secretsmanager:eu-west-1:123456789012:secret:svc/jwt-AbCdEf"])
        );
        assert_eq!(
            stmt(&p, "RotateRandom")["Condition"],
            json!({"StringEquals": {"secretsmanager:ResourceTag/keywarden:rotation": "random"}})
        );
        assert_eq!(
            stmt(&p, "PostgresMaster")["Resource"],
            json!(["arn:aws:secretsmanager:eu-west-1:123456789012:secret:svc/db-admin-??????"])
        );
        assert!(stmt(&p, "PostgresMaster").get("Condition").is_none());
        assert_eq!(
            stmt(&p, "Events")["Resource"],
            json!(["arn:aws:logs:eu-west-1:123456789012:log-group:cloudtrail:*"])
        );
        assert_eq!(
            stmt(&p, "NotifyIncident")["Resource"],
            json!(["arn:aws:sns:eu-west-1:123456789012:security"])
        );
        // The monitored-only secret gets no rotation right.
        assert!(!p.to_string().contains("svc/watched-??????\"]"));
        for s in p["Statement"].as_array().expect("statements") {
            if s["Sid"].as_str().is_some_and(|x| x.starts_with("Rotate")) {
                assert!(!s.to_string().contains("svc/watched"), "{s}");
            }
        }
    }

    #[test]
    fn elasticache_gets_its_replication_group_and_lambda_rotate_secret() {
        let text = r#"
[[secret]]
name = "cache"
id = "svc/cache"
rotate_every = "30d"
rotation = { strategy = "elasticache", replication_group = "rg-1" }
[[secret]]
name = "lam"
id = "svc/lam"
rotate_every = "30d"
rotation = { strategy = "lambda" }
"#;
        let p = config_policy(&config(text), &scope());
        assert_eq!(
            sids(&p),
            [
                "Monitor",
                "MonitorVersions",
                "RotateLambda",
                "RotateElasticache",
                "ElastiCacheGroups"
            ]
        );
        assert_eq!(
            stmt(&p, "ElastiCacheGroups")["Resource"],
            json!(["arn:aws:elasticache:eu-west-1:123456789012:replicationgroup:rg-1"])
        );
        assert!(
            stmt(&p, "RotateLambda")["Action"]
                .to_string()
                .contains("secretsmanager:RotateSecret")
        );
        assert!(
            !stmt(&p, "RotateElasticache")["Action"]
                .to_string()
                .contains("RotateSecret")
        );
    }

    /// The shipped documents are the builder's generic output: editing one without the other
    /// fails here.
    #[test]
    fn shipped_deploy_iam_files_equal_the_builder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/iam");
        for f in Feature::ALL {
            let path = dir.join(format!("{}.json", f.name()));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let shipped: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                shipped,
                feature_policy(f, &Scope::default()),
                "{} differs from `feature_policy`: regenerate it with `keywarden iam-policy --feature {}`",
                path.display(),
                f.name()
            );
        }
    }

    /// Every action a configuration can need is in the generic document of its feature.
    #[test]
    fn config_actions_are_covered_by_the_generic_documents() {
        let text = r#"
[access]
log_group = "g"
[reminders]
lead = ["7d"]
sns_topic_arn = "arn:aws:sns:eu-west-1:1:r"
[[secret]]
name = "a"
id = "svc/a"
rotate_every = "90d"
rotation = { strategy = "primary-secondary" }
"#;
        let all: std::collections::BTreeSet<String> = Feature::ALL
            .iter()
            .flat_map(|f| actions_of(&feature_policy(*f, &Scope::default())))
            .collect();
        let used = actions_of(&config_policy(&config(text), &scope()));
        assert!(used.is_subset(&all), "{used:?} not within {all:?}");
        assert!(
            !actions_of(&feature_policy(Feature::Monitor, &Scope::default()))
                .contains("secretsmanager:GetSecretValue")
        );
    }
}
