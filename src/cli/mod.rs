//! The command line (clap): `keywarden run | check-config | status | consumers | rotate |
//! rollback | compromised | incidents | iam-policy`.
//!
//! Exit codes: 0 ok, 1 failure, 64 usage or configuration error.
//!
//! Owns the command line: `status.rs` (the table), `remote.rs` (the client of the action
//! routes, speaking `http::api` types). The binary's edge: nothing imports `cli` but `main.rs`.

pub mod iam;
mod planned;
pub mod remote;
pub mod status;
pub mod store;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, ConfigError};
use crate::domain::view::SharedView;
use crate::telemetry::Metrics;

/// Exit code of a usage or configuration error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// keywarden: the secret-rotation watchdog for AWS Secrets Manager.
#[derive(Debug, Parser)]
#[command(name = "keywarden", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "KEYWARDEN_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KEYWARDEN_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of reporting commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// An aligned table.
    Table,
    /// JSON.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll, export metrics, serve the HTTP API.
    Run,
    /// Validate the configuration file and exit (0 valid, 64 invalid).
    CheckConfig,
    /// Poll Secrets Manager once and show every watched secret, with the running daemon's
    /// anomaly counts when one answers.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// The daemon asked for anomaly counts; default http://<server.listen of the configuration>.
        #[arg(long, env = "KEYWARDEN_SERVER")]
        server: Option<String>,
    },
    /// Read the CloudTrail log group once and list who read a secret.
    Consumers {
        /// Inventory name or Secrets Manager name/ARN of the secret.
        secret: String,
        /// How far back to look, such as "30d" or "12h".
        #[arg(long, default_value = "30d")]
        since: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Rotate a secret now through a running daemon and follow it step by step
    /// (token from KEYWARDEN_ADMIN_TOKEN).
    Rotate {
        /// Inventory name or Secrets Manager name.
        secret: String,
        /// The daemon's URL; default http://<server.listen of the configuration>.
        #[arg(long, env = "KEYWARDEN_SERVER")]
        server: Option<String>,
        /// Start even when a pre-flight verify check fails.
        #[arg(long)]
        force: bool,
    },
    /// Declare a secret compromised through a running daemon: rotate it at once with no grace,
    /// audit who read it, notify the security team, write the report; shows each step as it
    /// completes (token from KEYWARDEN_ADMIN_TOKEN). Exit 0 when the incident resolved.
    Compromised {
        /// Inventory name or Secrets Manager name.
        secret: String,
        /// Why the secret is believed compromised (goes into the report and the notice).
        #[arg(long)]
        reason: String,
        /// Who reported it; default $USER.
        #[arg(long)]
        reported_by: Option<String>,
        /// The daemon's URL; default http://<server.listen of the configuration>.
        #[arg(long, env = "KEYWARDEN_SERVER")]
        server: Option<String>,
    },
    /// List the daemon's compromise incidents, newest first.
    Incidents {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// The daemon's URL; default http://<server.listen of the configuration>.
        #[arg(long, env = "KEYWARDEN_SERVER")]
        server: Option<String>,
    },
    /// Move AWSCURRENT back to the AWSPREVIOUS version through a running daemon
    /// (token from KEYWARDEN_ADMIN_TOKEN).
    Rollback {
        /// Inventory name or Secrets Manager name.
        secret: String,
        /// The daemon's URL; default http://<server.listen of the configuration>.
        #[arg(long, env = "KEYWARDEN_SERVER")]
        server: Option<String>,
        /// Roll back even while a compromise incident on the secret is open.
        #[arg(long)]
        force: bool,
    },
    /// Create the configured state store: the DynamoDB table of `[state] table` (pk/sk,
    /// on-demand, TTL on `expires`), or the SQLite file. An existing one is left unchanged.
    InitStore,
    /// Copy the SQLite store of `[state] path` into the DynamoDB table of `[state] table`
    /// (every rotation, incident, reminder, access checkpoint, event id and reader). Stop the
    /// daemon writing the file first.
    MigrateStore {
        /// The backend copied from (only `sqlite`).
        #[arg(long, value_enum)]
        from: StoreKind,
        /// The backend copied to (only `dynamodb`).
        #[arg(long, value_enum)]
        to: StoreKind,
    },
    /// Print the least-privilege IAM policy the configuration needs (the union of the features
    /// it uses, ARNs filled in). Offline: region and account come from flags.
    IamPolicy {
        /// Account id in the ARNs; default any.
        #[arg(long, default_value = "*")]
        account: String,
        /// Region in the ARNs; default `[aws] region` of the configuration, else any.
        #[arg(long)]
        region: Option<String>,
        /// Partition in the ARNs.
        #[arg(long, default_value = "aws")]
        partition: String,
        /// Print the generic document of one feature instead (what deploy/iam/ ships).
        #[arg(long, value_enum)]
        feature: Option<IamFeature>,
    },
}

/// `iam-policy`: the configuration's policy, or with `--feature` the generic shipped document.
fn iam_policy(
    cli_config: &std::path::Path,
    feature: Option<IamFeature>,
    scope: iam::Scope,
) -> ExitCode {
    let policy = match feature {
        Some(f) => iam::feature_policy(f.into(), &scope),
        None => match load_config(cli_config) {
            Ok(config) => iam::config_policy(&config, &scope),
            Err(code) => return code,
        },
    };
    match serde_json::to_string_pretty(&policy) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keywarden: cannot encode the policy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A state store backend, as `migrate-store` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// The embedded SQLite file.
    Sqlite,
    /// A DynamoDB table.
    Dynamodb,
}

/// `iam-policy --feature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IamFeature {
    /// ListSecrets, ListSecretVersionIds.
    Monitor,
    /// Rotation of every strategy, tag-conditioned.
    Rotator,
    /// sns:Publish.
    Notify,
    /// logs:FilterLogEvents, or sqs:ReceiveMessage and sqs:DeleteMessage.
    Events,
    /// The DynamoDB state store's item reads and writes on its table.
    Store,
    /// organizations:ListAccounts and sts:AssumeRole (organization scale, not used yet).
    Organization,
}

impl From<IamFeature> for iam::Feature {
    fn from(f: IamFeature) -> Self {
        match f {
            IamFeature::Monitor => iam::Feature::Monitor,
            IamFeature::Rotator => iam::Feature::Rotator,
            IamFeature::Notify => iam::Feature::Notify,
            IamFeature::Events => iam::Feature::Events,
            IamFeature::Store => iam::Feature::Store,
            IamFeature::Organization => iam::Feature::Organization,
        }
    }
}

/// The daemon URL: `--server`, else the configured listen address.
fn server_url(cli_config: &std::path::Path, server: Option<String>) -> Result<String, ExitCode> {
    if let Some(s) = server {
        return Ok(s.trim_end_matches('/').to_string());
    }
    let config = load_config(cli_config)?;
    Ok(format!("http://{}", config.server.listen))
}

/// The admin token from KEYWARDEN_ADMIN_TOKEN.
fn admin_token() -> Result<String, ExitCode> {
    match std::env::var("KEYWARDEN_ADMIN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            eprintln!("keywarden: set KEYWARDEN_ADMIN_TOKEN to the daemon's admin token");
            Err(ExitCode::from(EXIT_USAGE))
        }
    }
}

async fn remote_action(cli: &Cli) -> ExitCode {
    let (secret, server, force, rotate) = match &cli.command {
        Command::Rotate {
            secret,
            server,
            force,
        } => (secret, server, *force, true),
        Command::Rollback {
            secret,
            server,
            force,
        } => (secret, server, *force, false),
        _ => return ExitCode::from(EXIT_USAGE),
    };
    let server = match server_url(&cli.config, server.clone()) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let token = match admin_token() {
        Ok(t) => t,
        Err(code) => return code,
    };
    let result = if rotate {
        crate::cli::remote::rotate(&server, &token, secret, force).await
    } else {
        crate::cli::remote::rollback(&server, &token, secret, force).await
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("keywarden: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("keywarden: {e}");
        match e {
            ConfigError::Read { .. } | ConfigError::Invalid { .. } => ExitCode::from(EXIT_USAGE),
        }
    })
}

/// Runs the parsed command line.
pub async fn dispatch(cli: Cli) -> ExitCode {
    if matches!(
        cli.command,
        Command::Rotate { .. } | Command::Rollback { .. }
    ) {
        return remote_action(&cli).await;
    }
    if let Command::Compromised {
        secret,
        reason,
        reported_by,
        server,
    } = &cli.command
    {
        let server = match server_url(&cli.config, server.clone()) {
            Ok(s) => s,
            Err(code) => return code,
        };
        let token = match admin_token() {
            Ok(t) => t,
            Err(code) => return code,
        };
        let reported_by = reported_by
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "(not given)".into());
        return match crate::cli::remote::compromised(&server, &token, secret, reason, &reported_by)
            .await
        {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("keywarden: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::IamPolicy {
        account,
        region,
        partition,
        feature,
    } = &cli.command
    {
        let region = match (region, feature) {
            (Some(r), _) => r.clone(),
            (None, Some(_)) => "*".into(),
            (None, None) => match load_config(&cli.config) {
                Ok(c) => c.aws.region.clone().unwrap_or_else(|| "*".into()),
                Err(code) => return code,
            },
        };
        let scope = iam::Scope {
            partition: partition.clone(),
            region,
            account: account.clone(),
        };
        return iam_policy(&cli.config, *feature, scope);
    }
    if let Command::Incidents { output, server } = &cli.command {
        let server = match server_url(&cli.config, server.clone()) {
            Ok(s) => s,
            Err(code) => return code,
        };
        // Optional here: without it the list lacks reasons (anonymous summary).
        let token = std::env::var("KEYWARDEN_ADMIN_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        return match crate::cli::remote::incidents(&server, token.as_deref()).await {
            Ok((200, body)) => {
                let list = match crate::cli::remote::incident_list(&server, body) {
                    Ok(list) => list,
                    Err(e) => {
                        eprintln!("keywarden: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match output {
                    Output::Table => print!("{}", crate::cli::remote::render_incidents(&list)),
                    Output::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into())
                    ),
                }
                ExitCode::SUCCESS
            }
            Ok((status, body)) => {
                eprintln!("keywarden: {server}/incidents: {status}: {body}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("keywarden: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match load_config(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.command {
        Command::CheckConfig => {
            println!(
                "{}: ok ({} secrets in the inventory{})",
                cli.config.display(),
                config.secrets.len(),
                if config.discovery.is_some() {
                    ", discovery on"
                } else {
                    ""
                }
            );
            for line in account_lines(&config) {
                println!("{line}");
            }
            for line in grace_lines(&config) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Command::Run => match crate::daemon::run(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keywarden: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Status { output, server } => status(config, output, server).await,
        Command::InitStore => store::init_store(&config),
        Command::MigrateStore { from, to } => {
            if (from, to) != (StoreKind::Sqlite, StoreKind::Dynamodb) {
                eprintln!("keywarden: migrate-store copies --from sqlite --to dynamodb only");
                return ExitCode::from(EXIT_USAGE);
            }
            store::migrate_store(&config)
        }
        Command::Consumers {
            secret,
            since,
            output,
        } => consumers(config, &secret, &since, output).await,
        Command::Rotate { .. } | Command::Rollback { .. } => remote_action(&cli).await,
        Command::Compromised { .. } | Command::Incidents { .. } | Command::IamPolicy { .. } => {
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// What `check-config` says about the accounts read (pure): one line per `[[account]]`, or the
/// organization's role and regions; nothing for a single account.
fn account_lines(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for a in &config.accounts {
        out.push(format!(
            "account {} in {} through {}{}",
            a.id,
            a.regions.join(", "),
            a.role_arn,
            if a.external_id.is_some() {
                " (with an ExternalId)"
            } else {
                ""
            }
        ));
    }
    if let Some(o) = &config.organization {
        out.push(format!(
            "organization: every active account (ListAccounts every {}) in {} through role {}{}{}",
            crate::schedule::format_duration(o.refresh_every),
            o.regions.join(", "),
            o.role_name,
            if o.exclude.is_empty() {
                String::new()
            } else {
                format!(", except {}", o.exclude.join(", "))
            },
            if o.external_id.is_some() {
                " (with an ExternalId)"
            } else {
                ""
            }
        ));
    }
    out
}

async fn consumers(config: Config, secret: &str, since: &str, output: Output) -> ExitCode {
    use crate::access::poller::{RateLimiter, scan};
    use crate::cloudtrail::{self, SecretIndex};

    let since = match crate::schedule::parse_duration(since) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("keywarden: --since {since:?}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let Some((access, log_group)) = config
        .access
        .clone()
        .and_then(|a| a.log_group.clone().map(|g| (a, g)))
    else {
        eprintln!(
            "keywarden: {}: [access] log_group is not configured; consumers reads CloudTrail from it",
            config.source.display()
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let spec = config
        .secrets
        .iter()
        .find(|s| s.name == secret || s.id == secret);
    // Where the secret lives: an inventory entry's account and region, or the qualifier of a
    // discovered secret's key (`account:region:name`).
    let place: Option<(String, String)> = match spec {
        Some(s) => {
            crate::inventory::spec_place(&config, s).map(|(a, r)| (a.to_string(), r.to_string()))
        }
        None => crate::domain::targets::split_key(secret)
            .map(|(a, r, _)| (a.to_string(), r.to_string())),
    };
    let (label, id, declared) = match spec {
        Some(s) => (s.name.clone(), s.id.clone(), s.consumer_set.clone()),
        None if place.is_some() => {
            let name = crate::domain::targets::label_of_key(secret).to_string();
            eprintln!(
                "keywarden: {secret} is not in the inventory: no consumers are declared, every reader shows as undeclared."
            );
            (name.clone(), name, crate::config::ConsumerPatterns::empty())
        }
        None => {
            eprintln!(
                "keywarden: {secret} is not in the inventory: no consumers are declared, every reader shows as undeclared."
            );
            (
                secret.to_string(),
                secret.to_string(),
                crate::config::ConsumerPatterns::empty(),
            )
        }
    };
    let metrics = Arc::new(Metrics::new());
    let sdk = crate::aws::client::load(&config.aws).await;
    // With several accounts a plain name is ambiguous: the home account (STS) tells the
    // daemon's own secrets from a member account's of the same name.
    let mut index = if config.multi_account() {
        use crate::aws::accounts::AccountsApi as _;
        let home = crate::aws::accounts::Accounts::new(&sdk, metrics.clone())
            .caller_account()
            .await
            .unwrap_or_default();
        let region = sdk.region().map_or("", |r| r.as_ref()).to_string();
        SecretIndex::with_home(&home, &region)
    } else {
        SecretIndex::new()
    };
    index.add_at(
        &label,
        &id,
        None,
        place.as_ref().map(|(a, r)| (a.as_str(), r.as_str())),
    );
    if let Some((account, region)) = &place {
        eprintln!("keywarden: {label} lives in account {account}, region {region}.");
    }
    let api = crate::aws::cloudwatchlogs::CloudWatchLogs::new(&sdk, metrics);
    let mut limiter = RateLimiter::new(access.max_requests_per_second);
    let end = Utc::now().timestamp_millis();
    let start = end - i64::try_from(since.as_millis()).unwrap_or(i64::MAX / 4);
    eprintln!(
        "keywarden: reading {} from {} for reads of {label}...",
        log_group,
        crate::schedule::format_duration(since)
    );
    let mut found = crate::access::consumers::Consumers::new();
    let (mut events, mut pages, mut skipped) = (0usize, 0usize, 0usize);
    let result = scan(&api, &mut limiter, &log_group, start, end, |page| {
        pages += 1;
        events += page.len();
        for ev in &page {
            match cloudtrail::parse(&ev.message) {
                Ok(r) => {
                    if r.event_source == cloudtrail::SECRETS_MANAGER
                        && r.secret_ids().any(|i| {
                            index
                                .resolve_index_at(
                                    i,
                                    r.recipient_account.as_deref(),
                                    r.aws_region.as_deref(),
                                )
                                .is_some()
                        })
                    {
                        found.add(&r, ev.timestamp_ms, &declared);
                    }
                }
                Err(_) => skipped += 1,
            }
        }
        if pages % 10 == 0 {
            eprintln!("keywarden: {pages} pages, {events} log events read...");
        }
    })
    .await;
    if let Err(e) = result {
        eprintln!("keywarden: {e}");
        return ExitCode::FAILURE;
    }
    let rows = found.list();
    eprintln!(
        "keywarden: {events} log events in {pages} page(s), {skipped} skipped as malformed; {} principal(s) read {label}.",
        rows.iter().filter(|r| r.reads > 0).count()
    );
    match output {
        Output::Table => print!("{}", crate::access::consumers::render_table(&rows)),
        Output::Json => match serde_json::to_string_pretty(&rows) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("keywarden: cannot encode the list: {e}");
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}

async fn status(config: Config, output: Output, server: Option<String>) -> ExitCode {
    let server = server.map_or_else(
        || format!("http://{}", config.server.listen),
        |s| s.trim_end_matches('/').to_string(),
    );
    let metrics = Arc::new(Metrics::new());
    let sdk = crate::aws::client::load(&config.aws).await;
    let config = Arc::new(config);
    let view = SharedView::with_targets(Arc::new(crate::domain::targets::Targets::new(
        sdk.region().map_or("", |r| r.as_ref()),
    )));
    let mut fleet =
        match crate::daemon::accounts::fleet_poller(config.clone(), &sdk, view.clone(), metrics)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                eprintln!("keywarden: {e}");
                return ExitCode::FAILURE;
            }
        };
    if config.organization.is_some() {
        eprintln!("keywarden: listing the organization's accounts...");
        fleet.refresh_accounts().await;
    }
    let mut poller = fleet.into_inner();
    eprintln!("keywarden: listing secrets in Secrets Manager...");
    let now = Utc::now();
    let (polled, anomalies) = tokio::join!(
        poller.statuses_once(now),
        crate::cli::status::fetch_anomalies(&server)
    );
    let anomalies = anomalies
        .inspect_err(|e| {
            eprintln!(
                "keywarden: no anomaly counts from the daemon ({e}): the ANOMALIES column is empty"
            )
        })
        .ok();
    match polled {
        Ok((report, statuses)) => {
            eprintln!(
                "keywarden: {} secrets watched ({} listed in {} page(s), {} account/region(s)).",
                report.watched, report.listed, report.pages, report.targets
            );
            for (id, kind) in &view.read().accounts_down {
                let l = view.targets().labels(*id);
                eprintln!(
                    "keywarden: account {} region {} cannot be read ({kind}): its secrets are not shown",
                    l.account, l.region
                );
            }
            let planned_text = planned::render_planned(&statuses, &config.secrets, now.timestamp());
            let rows = crate::cli::status::rows(
                statuses,
                anomalies.as_deref(),
                view.targets(),
                now.timestamp(),
            );
            match output {
                Output::Table => print!(
                    "{}{}",
                    crate::cli::status::render_table(&rows, now.timestamp()),
                    planned_text
                ),
                Output::Json => match serde_json::to_string_pretty(&rows) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("keywarden: cannot encode the status: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keywarden: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line per rotating secret: its effective grace, where it comes from, and what it means.
fn grace_lines(config: &Config) -> Vec<String> {
    use crate::domain::Strategy;
    config
        .secrets
        .iter()
        .filter(|s| s.rotation.strategy != Strategy::None)
        .map(|s| {
            let r = &s.rotation;
            let source = if r.grace_is_default {
                format!("default for {}", r.strategy.as_str())
            } else {
                "configured".to_string()
            };
            let meaning = if r.grace.is_zero() {
                if r.strategy.keeps_two_keys() || r.strategy.old_credential_dies_at_finalize() {
                    "0: finalize runs right after finish, so the previous value stops working at once"
                } else {
                    "0: finalize (only its hooks for this strategy) runs right after finish"
                }
            } else {
                "the previous value keeps working this long after finish, then finalize"
            };
            format!(
                "  {}: grace {} ({source}); {meaning}",
                s.name,
                crate::schedule::format_duration(r.grace)
            )
        })
        .collect()
}
