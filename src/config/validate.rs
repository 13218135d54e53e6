//! From [`RawConfig`] to [`Config`]: one function per table, each error located at
//! `file:line:column` with its key and what was expected.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::raw::*;
use super::*;

/// Turns byte spans into `file:line:column` errors.
pub(super) struct Locator<'a> {
    /// The file's text.
    pub(super) text: &'a str,
    /// The file's name, as messages show it.
    pub(super) file: &'a str,
}

impl Locator<'_> {
    pub(super) fn error(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: String,
    ) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            message,
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.error(spanned.span(), key, message.into())
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

fn positive(
    loc: &Locator<'_>,
    value: &Option<Spanned<i64>>,
    key: &str,
    default: u64,
) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() > 0 => Ok(*v.get_ref() as u64),
        Some(v) => Err(loc.at(
            v,
            key,
            format!("expected a positive integer, found {}", v.get_ref()),
        )),
    }
}

fn positive_f64(
    loc: &Locator<'_>,
    value: &Option<Spanned<f64>>,
    key: &str,
    default: f64,
) -> Result<f64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 => Ok(*v.get_ref()),
        Some(v) => Err(loc.at(
            v,
            key,
            format!("expected a positive number, found {}", v.get_ref()),
        )),
    }
}

fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn validate(
    raw: RawConfig,
    loc: &Locator<'_>,
    path: &Path,
) -> Result<Config, ConfigError> {
    let verify = raw
        .verify
        .map(|v| validate_verify(v, loc))
        .transpose()?
        .unwrap_or_default();
    let accounts = validate_accounts(raw.accounts, loc)?;
    let organization = raw
        .organization
        .map(|o| validate_organization(o, &accounts, loc))
        .transpose()?;
    let text_spans: &[SecretSpans] = &raw
        .secrets
        .iter()
        .map(|s| SecretSpans {
            name: s.name.span(),
            account: s.account.as_ref().map(Spanned::span),
            region: s.region.as_ref().map(Spanned::span),
        })
        .collect::<Vec<_>>();
    Ok(Config {
        source: path.to_path_buf(),
        aws: validate_aws(raw.aws, loc)?,
        server: validate_server(raw.server, loc)?,
        poll: validate_poll(raw.poll, loc)?,
        access: raw.access.map(|a| validate_access(a, loc)).transpose()?,
        reminders: raw
            .reminders
            .map(|r| validate_reminders(r, loc))
            .transpose()?,
        incident: raw
            .incident
            .map(|i| validate_incident(i, loc))
            .transpose()?,
        ha: validate_ha(raw.ha, &raw.state, loc)?,
        state: validate_state(raw.state, loc)?,
        discovery: raw
            .discovery
            .map(|d| validate_discovery(d, loc))
            .transpose()?,
        secrets: {
            let secrets = validate_secrets(raw.secrets, loc, &verify)?;
            check_secret_places(&secrets, &accounts, organization.as_ref(), loc, text_spans)?;
            secrets
        },
        verify,
        accounts,
        organization,
    })
}

/// An optional word checked by `valid` (trimmed), or an error naming `what` was expected.
fn checked_word(
    loc: &Locator<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    valid: fn(&str) -> bool,
    what: &str,
) -> Result<Option<String>, ConfigError> {
    match value {
        Some(v) if !valid(v.get_ref().trim()) => {
            Err(loc.at(v, key, format!("expected {what}, found {:?}", v.get_ref())))
        }
        Some(v) => Ok(Some(v.get_ref().trim().to_string())),
        None => Ok(None),
    }
}

/// A 12-digit AWS account id.
fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A region name such as `eu-west-1` or `us-gov-west-1`: lowercase words and a number.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

fn validate_regions(
    regions: Spanned<Vec<Spanned<String>>>,
    loc: &Locator<'_>,
    key: &str,
) -> Result<Vec<String>, ConfigError> {
    if regions.get_ref().is_empty() {
        return Err(loc.at(
            &regions,
            key,
            "expected at least one region, such as [\"eu-west-1\"]",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for r in regions.into_inner() {
        let name = r.get_ref().trim().to_string();
        if !is_region(&name) {
            return Err(loc.at(
                &r,
                key,
                format!("expected a region name such as \"eu-west-1\", found {name:?}"),
            ));
        }
        if out.contains(&name) {
            return Err(loc.at(&r, key, format!("region {name:?} is listed twice")));
        }
        out.push(name);
    }
    Ok(out)
}

fn validate_external_id(
    env: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    inline: Option<Spanned<toml::Value>>,
    loc: &Locator<'_>,
    table: &str,
) -> Result<Option<ExternalIdSource>, ConfigError> {
    if let Some(v) = inline {
        return Err(loc.at(
            &v,
            &format!("{table}.external_id"),
            "the ExternalId is not written in the configuration: name an environment variable with external_id_env or a file with external_id_file",
        ));
    }
    match (env, file) {
        (Some(e), Some(_)) => Err(loc.at(
            &e,
            &format!("{table}.external_id_env"),
            "give external_id_env or external_id_file, not both",
        )),
        (Some(e), None) => {
            let name = e.get_ref().trim().to_string();
            if !is_env_var_name(&name) {
                return Err(loc.at(
                    &e,
                    &format!("{table}.external_id_env"),
                    format!("expected an environment variable name such as \"KEYWARDEN_EXTERNAL_ID\", found {name:?}"),
                ));
            }
            Ok(Some(ExternalIdSource::Env(name)))
        }
        (None, Some(f)) => {
            let path = f.get_ref().trim();
            if path.is_empty() {
                return Err(loc.at(
                    &f,
                    &format!("{table}.external_id_file"),
                    "expected the path of a file holding the ExternalId",
                ));
            }
            Ok(Some(ExternalIdSource::File(PathBuf::from(path))))
        }
        (None, None) => Ok(None),
    }
}

fn validate_accounts(
    raw: Vec<Spanned<RawAccount>>,
    loc: &Locator<'_>,
) -> Result<Vec<AccountSpec>, ConfigError> {
    let mut out: Vec<AccountSpec> = Vec::with_capacity(raw.len());
    for (i, a) in raw.into_iter().enumerate() {
        let key = |f: &str| format!("account[{i}].{f}");
        let a = a.into_inner();
        let id = a.id.get_ref().trim().to_string();
        if !is_account_id(&id) {
            return Err(loc.at(
                &a.id,
                &key("id"),
                format!("expected a 12-digit AWS account id, found {id:?}"),
            ));
        }
        if let Some(j) = out.iter().position(|o| o.id == id) {
            return Err(loc.at(
                &a.id,
                &key("id"),
                format!("account {id} is already account[{j}]; list its regions there"),
            ));
        }
        let role_arn = a.role_arn.get_ref().trim().to_string();
        let role_account = role_arn
            .strip_prefix("arn:")
            .and_then(|r| r.split(':').nth(3))
            .filter(|_| role_arn.contains(":role/"));
        match role_account {
            None => {
                return Err(loc.at(
                    &a.role_arn,
                    &key("role_arn"),
                    format!("expected an IAM role ARN such as \"arn:aws:iam::{id}:role/keywarden-read\", found {role_arn:?}"),
                ));
            }
            Some(acct) if acct != id => {
                return Err(loc.at(
                    &a.role_arn,
                    &key("role_arn"),
                    format!("the role is in account {acct}, not in account {id}: keywarden reads an account through a role of that account"),
                ));
            }
            Some(_) => {}
        }
        let external_id = validate_external_id(
            a.external_id_env,
            a.external_id_file,
            a.external_id,
            loc,
            &format!("account[{i}]"),
        )?;
        let regions = validate_regions(a.regions, loc, &key("regions"))?;
        out.push(AccountSpec {
            id,
            role_arn,
            external_id,
            regions,
        });
    }
    Ok(out)
}

fn validate_organization(
    o: Spanned<RawOrganization>,
    accounts: &[AccountSpec],
    loc: &Locator<'_>,
) -> Result<OrganizationConfig, ConfigError> {
    if !accounts.is_empty() {
        return Err(loc.at(
            &o,
            "organization",
            "[organization] and [[account]] exclude each other: list accounts by hand or read them from the organization",
        ));
    }
    let o = o.into_inner();
    let role_name = o.role_name.get_ref().trim().to_string();
    if role_name.is_empty()
        || !role_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
    {
        return Err(loc.at(
            &o.role_name,
            "organization.role_name",
            format!("expected an IAM role name such as \"keywarden-read\", found {role_name:?}"),
        ));
    }
    let mut exclude = Vec::with_capacity(o.exclude.len());
    for e in &o.exclude {
        let id = e.get_ref().trim().to_string();
        if !is_account_id(&id) {
            return Err(loc.at(
                e,
                "organization.exclude",
                format!("expected 12-digit AWS account ids, found {id:?}"),
            ));
        }
        exclude.push(id);
    }
    let refresh_every = match o.refresh_every {
        None => Duration::from_secs(15 * 60),
        Some(d) if d.get_ref().0 >= Duration::from_secs(60) => d.get_ref().0,
        Some(d) => {
            return Err(loc.at(
                &d,
                "organization.refresh_every",
                "expected at least 1m: organizations:ListAccounts is rate limited",
            ));
        }
    };
    Ok(OrganizationConfig {
        role_name,
        regions: validate_regions(o.regions, loc, "organization.regions")?,
        exclude,
        external_id: validate_external_id(
            o.external_id_env,
            o.external_id_file,
            o.external_id,
            loc,
            "organization",
        )?,
        refresh_every,
    })
}

/// Checks each secret's `account` and `region` against `[[account]]` / `[organization]`, and
/// that a secret of a member account is watched only (member roles are read-only).
fn check_secret_places(
    secrets: &[SecretSpec],
    accounts: &[AccountSpec],
    organization: Option<&OrganizationConfig>,
    loc: &Locator<'_>,
    spans: &[SecretSpans],
) -> Result<(), ConfigError> {
    for (i, (s, sp)) in secrets.iter().zip(spans).enumerate() {
        let key = |f: &str| format!("secret[{i}].{f}");
        if let (Some(region), None) = (&s.region, &s.account) {
            return Err(loc.error(
                sp.region.clone().unwrap_or(sp.name.clone()),
                &key("region"),
                format!("region {region:?} needs an account: a secret of the daemon's own account is read in the daemon's region ([aws] region)"),
            ));
        }
        let Some(account) = &s.account else { continue };
        let span = sp.account.clone().unwrap_or(sp.name.clone());
        let regions: &[String] = if let Some(a) = accounts.iter().find(|a| &a.id == account) {
            &a.regions
        } else if let Some(o) = organization {
            if o.exclude.contains(account) {
                return Err(loc.error(
                    span,
                    &key("account"),
                    format!("account {account} is in [organization] exclude"),
                ));
            }
            &o.regions
        } else if !accounts.is_empty() {
            return Err(loc.error(
                span,
                &key("account"),
                format!("account {account} is not one of the [[account]] entries"),
            ));
        } else {
            return Err(loc.error(
                span,
                &key("account"),
                "a secret names an account only when keywarden reads several: add an [[account]] entry (or [organization]), or remove the key for the daemon's own account".to_string(),
            ));
        };
        if let Some(region) = &s.region
            && !regions.contains(region)
        {
            return Err(loc.error(
                sp.region.clone().unwrap_or(span),
                &key("region"),
                format!(
                    "region {region:?} is not read in account {account} (regions: {})",
                    regions.join(", ")
                ),
            ));
        }
        if !matches!(s.rotation.strategy, Strategy::None) {
            return Err(loc.error(
                sp.name.clone(),
                &key("rotation.strategy"),
                format!("keywarden rotates secrets of its own account only; secret {:?} in account {account} is watched read-only (the member role cannot write): remove its [secret.rotation]", s.name),
            ));
        }
        if !s.hooks.is_empty() || !s.verify.is_empty() {
            return Err(loc.error(
                sp.name.clone(),
                &key("hooks"),
                format!("secret {:?} in account {account} is watched read-only: hooks and verify checks apply to rotations, which keywarden runs in its own account only", s.name),
            ));
        }
    }
    Ok(())
}

fn validate_aws(a: RawAws, loc: &Locator<'_>) -> Result<AwsConfig, ConfigError> {
    let endpoint_url = match a.endpoint_url {
        Some(url) => {
            let text = url.get_ref().trim();
            if !(text.starts_with("http://") || text.starts_with("https://")) {
                return Err(loc.at(
                    &url,
                    "aws.endpoint_url",
                    format!("expected an http:// or https:// URL, found {text:?}"),
                ));
            }
            Some(text.to_string())
        }
        None => None,
    };
    Ok(AwsConfig {
        region: a.region,
        endpoint_url,
    })
}

fn validate_poll(p: RawPoll, loc: &Locator<'_>) -> Result<PollConfig, ConfigError> {
    let metadata_every = p
        .metadata_every
        .map(|d| at_least_one_second(loc, d, "poll.metadata_every"))
        .transpose()?
        .unwrap_or(Duration::from_secs(60));
    let access_every = p
        .access_every
        .map(|d| at_least_one_second(loc, d, "poll.access_every"))
        .transpose()?
        .unwrap_or(Duration::from_secs(60));
    Ok(PollConfig {
        metadata_every,
        access_every,
    })
}

fn validate_access(
    spanned: Spanned<RawAccess>,
    loc: &Locator<'_>,
) -> Result<AccessConfig, ConfigError> {
    let table = spanned.span();
    let a = spanned.into_inner();
    let source = match a.source.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("cloudwatch_logs") => {
            if let Some(url) = &a.queue_url {
                return Err(loc.at(url, "access.queue_url", "only read with source = \"sqs\""));
            }
            if a.log_group.is_none() {
                return Err(loc.error(
                    table.clone(),
                    "access.log_group",
                    "required with source = \"cloudwatch_logs\" (the default)".into(),
                ));
            }
            AccessSource::CloudWatchLogs
        }
        Some("sqs") => match a.queue_url {
            Some(url) => {
                let text = url.get_ref();
                if !(text.starts_with("https://") || text.starts_with("http://")) {
                    return Err(loc.at(
                        &url,
                        "access.queue_url",
                        format!("expected a queue URL such as \"https://sqs.us-east-1.amazonaws.com/123456789012/keywarden-cloudtrail\", found {text:?}"),
                    ));
                }
                AccessSource::Sqs {
                    queue_url: url.into_inner(),
                }
            }
            None => {
                let at = a.source.as_ref().map_or(table.clone(), |s| s.span());
                return Err(loc.error(
                    at,
                    "access.queue_url",
                    "required with source = \"sqs\"".into(),
                ));
            }
        },
        Some(other) => {
            let at = a.source.as_ref().map_or(table.clone(), |s| s.span());
            return Err(loc.error(
                at,
                "access.source",
                format!("expected \"cloudwatch_logs\" or \"sqs\", found {other:?}"),
            ));
        }
    };
    Ok(AccessConfig {
        log_group: a.log_group,
        source,
        overlap: a.overlap.map_or(Duration::from_secs(15 * 60), |d| d.0),
        baseline: a.baseline.map_or(Duration::from_secs(14 * 86400), |d| d.0),
        max_requests_per_second: positive_f64(
            loc,
            &a.max_requests_per_second,
            "access.max_requests_per_second",
            1.0,
        )?,
        spike_factor: positive_f64(loc, &a.spike_factor, "access.spike_factor", 5.0)?,
        spike_min_reads: positive(loc, &a.spike_min_reads, "access.spike_min_reads", 20)?,
        denied_burst: positive(loc, &a.denied_burst, "access.denied_burst", 5)?,
        max_principals_per_secret: positive(
            loc,
            &a.max_principals_per_secret,
            "access.max_principals_per_secret",
            1000,
        )? as usize,
    })
}

fn validate_reminders(r: RawReminders, loc: &Locator<'_>) -> Result<RemindersConfig, ConfigError> {
    check_sns_arn(loc, &r.sns_topic_arn, "reminders.sns_topic_arn")?;
    let lead = match r.lead {
        Some(leads) => {
            if leads.get_ref().is_empty() {
                return Err(loc.at(
                    &leads,
                    "reminders.lead",
                    "expected at least one lead time such as [\"14d\"]",
                ));
            }
            let mut set: Vec<Duration> = leads.get_ref().iter().map(|d| d.0).collect();
            set.sort();
            set.dedup();
            set
        }
        None => vec![Duration::from_secs(14 * 86400)],
    };
    Ok(RemindersConfig {
        lead,
        sns_topic_arn: r.sns_topic_arn.into_inner(),
    })
}

fn validate_incident(i: RawIncident, loc: &Locator<'_>) -> Result<IncidentConfig, ConfigError> {
    check_sns_arn(loc, &i.sns_topic_arn, "incident.sns_topic_arn")?;
    Ok(IncidentConfig {
        sns_topic_arn: i.sns_topic_arn.into_inner(),
        report_dir: PathBuf::from(
            i.report_dir
                .unwrap_or_else(|| "/var/lib/keywarden/incidents".into()),
        ),
        audit_lookback: i
            .audit_lookback
            .map_or(Duration::from_secs(30 * 86400), |d| d.0),
    })
}

fn validate_ha(
    ha: Option<Spanned<RawHa>>,
    state: &RawState,
    loc: &Locator<'_>,
) -> Result<Option<HaConfig>, ConfigError> {
    let Some(spanned) = ha else {
        return Ok(None);
    };
    let span = spanned.span();
    let h = spanned.into_inner();
    if h.enabled != Some(true) {
        return Ok(None);
    }
    let dynamo = state
        .backend
        .as_ref()
        .is_some_and(|b| b.get_ref() == "dynamodb");
    if !dynamo {
        return Err(loc.error(
            span,
            "ha.enabled",
            "needs [state] backend = \"dynamodb\": the lease lives in the store's table".into(),
        ));
    }
    let lease = match h.lease {
        None => Duration::from_secs(15),
        Some(l) => {
            if l.get_ref().0 < Duration::from_secs(3) {
                return Err(loc.at(&l, "ha.lease", "expected a duration of at least \"3s\""));
            }
            l.get_ref().0
        }
    };
    let replica = match h.replica {
        None => None,
        Some(r) => {
            let name = r.get_ref();
            let ok = !name.is_empty()
                && name.len() <= 128
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(loc.at(
                    &r,
                    "ha.replica",
                    format!("expected 1 to 128 of a-z, A-Z, 0-9, - _ . (a host or pod name), found {name:?}"),
                ));
            }
            Some(r.into_inner())
        }
    };
    Ok(Some(HaConfig { lease, replica }))
}

fn validate_state(s: RawState, loc: &Locator<'_>) -> Result<StateConfig, ConfigError> {
    let backend = match &s.backend {
        None => StateBackend::Sqlite,
        Some(b) => StateBackend::parse(b.get_ref()).ok_or_else(|| {
            loc.at(
                b,
                "state.backend",
                format!(
                    "expected \"sqlite\" (the default) or \"dynamodb\", found {:?}",
                    b.get_ref()
                ),
            )
        })?,
    };
    if let Some(t) = &s.table {
        // DynamoDB's own rule for table names.
        let name = t.get_ref();
        let ok = (3..=255).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            return Err(loc.at(
                t,
                "state.table",
                format!("expected a DynamoDB table name (3 to 255 of a-z, A-Z, 0-9, _ - .), found {name:?}"),
            ));
        }
    }
    if backend == StateBackend::DynamoDb
        && s.table.is_none()
        && let Some(b) = &s.backend
    {
        return Err(loc.at(
            b,
            "state.table",
            "required with backend = \"dynamodb\" (create it with `keywarden init-store`)",
        ));
    }
    Ok(StateConfig {
        backend,
        path: PathBuf::from(
            s.path
                .unwrap_or_else(|| "/var/lib/keywarden/state.db".into()),
        ),
        table: s.table.map(Spanned::into_inner),
    })
}

fn validate_discovery(d: RawDiscovery, loc: &Locator<'_>) -> Result<DiscoveryConfig, ConfigError> {
    if d.name_prefixes.get_ref().iter().any(|p| p.is_empty()) {
        return Err(loc.at(
            &d.name_prefixes,
            "discovery.name_prefixes",
            "expected non-empty name prefixes such as \"event-service/\" (an empty prefix would watch every secret of the account)",
        ));
    }
    Ok(DiscoveryConfig {
        name_prefixes: d.name_prefixes.into_inner(),
        default_rotate_every: d.default_rotate_every.map(|d| d.0),
    })
}

/// Where a secret's keys stand in the file, for errors raised after `validate_secrets`.
struct SecretSpans {
    name: std::ops::Range<usize>,
    account: Option<std::ops::Range<usize>>,
    region: Option<std::ops::Range<usize>>,
}

fn validate_secrets(
    raw: Vec<RawSecret>,
    loc: &Locator<'_>,
    verify_cfg: &VerifyConfig,
) -> Result<Vec<SecretSpec>, ConfigError> {
    let mut secrets = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    // Every id with its entry, so that a name equal to another entry's id is refused wherever
    // it stands: `<secret>` in the API is an inventory name or a Secrets Manager name.
    let mut id_of: HashMap<String, usize> = HashMap::new();
    for (index, s) in raw.iter().enumerate() {
        id_of
            .entry(s.id.get_ref().trim().to_string())
            .or_insert(index);
    }
    for (index, s) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("secret[{index}].{field}");
        let name = s.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(loc.at(&s.name, &key("name"), "expected a non-empty name"));
        }
        if name.contains(':') {
            return Err(loc.at(
                &s.name,
                &key("name"),
                format!("{name:?} contains ':', which keywarden keeps for account:region:name keys of discovered secrets (Secrets Manager names never contain it)"),
            ));
        }
        let account = checked_word(
            loc,
            &s.account,
            &key("account"),
            is_account_id,
            "a 12-digit AWS account id",
        )?;
        let region = checked_word(
            loc,
            &s.region,
            &key("region"),
            is_region,
            "a region name such as \"eu-west-1\"",
        )?;
        if let Some(first) = names.insert(name.clone(), index) {
            return Err(loc.at(
                &s.name,
                &key("name"),
                format!("duplicate secret name {name:?}: secret[{first}] already uses it; names must be unique"),
            ));
        }
        if let Some(&other) = id_of.get(&name)
            && other != index
        {
            return Err(loc.at(
                &s.name,
                &key("name"),
                format!("the name {name:?} is the id of secret[{other}]: a name may not be another secret's Secrets Manager name (the API would not know which one is meant)"),
            ));
        }
        let id = s.id.get_ref().trim().to_string();
        if id.is_empty() {
            return Err(loc.at(
                &s.id,
                &key("id"),
                "expected the Secrets Manager name or ARN of the secret",
            ));
        }
        if !ids.insert(format!(
            "{}|{}|{id}",
            account.as_deref().unwrap_or(""),
            region.as_deref().unwrap_or("")
        )) {
            return Err(loc.at(
                &s.id,
                &key("id"),
                format!(
                    "duplicate secret id {id:?}: another inventory entry watches the same secret"
                ),
            ));
        }
        let (consumers, consumer_set) = validate_consumers(&s.consumers, loc, &key)?;
        let allowed_sources = validate_sources(&s.allowed_sources, loc, &key)?;
        let grace_span = s
            .rotation
            .as_ref()
            .map(|r| r.grace.as_ref().map_or(r.strategy.span(), Spanned::span));
        let rotation = match s.rotation {
            Some(r) => validate_rotation(r, loc, &key("rotation"))?,
            None => RotationSpec::default(),
        };
        let hooks = validate_hooks(s.hooks, loc, &key)?;
        let verify = validate_checks(&s.verify, loc, &key, verify_cfg)?;
        if let Some(span) = grace_span
            && !verify.is_empty()
            && grace_must_cover_watch(rotation.strategy)
            && rotation.grace < verify_cfg.watch
        {
            return Err(loc.error(
                span,
                &key("rotation.grace"),
                format!(
                    "the grace ({}s) is shorter than [verify] watch ({}s): the {} strategy's previous credential stops working at finalize, so a rollback after it would restore a dead value; make the grace at least the watch",
                    rotation.grace.as_secs(),
                    verify_cfg.watch.as_secs(),
                    rotation.strategy.as_str()
                ),
            ));
        }
        secrets.push(SecretSpec {
            account,
            region,
            name,
            id,
            rotate_every: s.rotate_every.map(|d| d.0),
            severity: s.severity.unwrap_or(Severity::Warning),
            impact: s.impact.unwrap_or_default(),
            consumers,
            consumer_set,
            allowed_sources,
            window: s.window.map(|w| w.0),
            rotation,
            hooks,
            verify,
        });
    }

    Ok(secrets)
}

/// The `hooks` of one secret; `key` names a field of that secret for errors.
fn validate_hooks(
    raw: Vec<RawHook>,
    loc: &Locator<'_>,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<HookSpec>, ConfigError> {
    let mut hooks = Vec::with_capacity(raw.len());
    for (h, hook) in raw.into_iter().enumerate() {
        if hook.command.get_ref().is_empty() || hook.command.get_ref()[0].trim().is_empty() {
            return Err(loc.at(
                &hook.command,
                &key(&format!("hooks[{h}].command")),
                "expected a non-empty argv array such as [\"kubectl\", \"rollout\", \"restart\", \"deployment/app\"]",
            ));
        }
        hooks.push(HookSpec {
            on: hook.on,
            command: hook.command.into_inner(),
            timeout: hook
                .timeout
                .map(|d| at_least_one_second(loc, d, &key(&format!("hooks[{h}].timeout"))))
                .transpose()?
                .unwrap_or(Duration::from_secs(5 * 60)),
        });
    }
    Ok(hooks)
}

/// The `consumers` globs of one secret: their texts and the compiled set.
fn validate_consumers(
    raw: &[Spanned<String>],
    loc: &Locator<'_>,
    key: &dyn Fn(&str) -> String,
) -> Result<(Vec<String>, ConsumerPatterns), ConfigError> {
    let mut patterns = Vec::with_capacity(raw.len());
    let mut consumers = Vec::with_capacity(raw.len());
    for (j, pattern) in raw.iter().enumerate() {
        let glob = parse_glob(pattern.get_ref())
            .map_err(|m| loc.at(pattern, &key(&format!("consumers[{j}]")), m))?;
        patterns.push(glob);
        consumers.push(pattern.get_ref().clone());
    }
    Ok((consumers, ConsumerPatterns(patterns)))
}

/// The `allowed_sources` CIDRs of one secret.
fn validate_sources(
    raw: &[Spanned<String>],
    loc: &Locator<'_>,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<IpNet>, ConfigError> {
    let mut allowed_sources = Vec::with_capacity(raw.len());
    for (j, cidr) in raw.iter().enumerate() {
        allowed_sources.push(
            parse_cidr(cidr.get_ref())
                .map_err(|m| loc.at(cidr, &key(&format!("allowed_sources[{j}]")), m))?,
        );
    }
    Ok(allowed_sources)
}

fn at_least_one_second(
    loc: &Locator<'_>,
    d: Spanned<ConfigDuration>,
    key: &str,
) -> Result<Duration, ConfigError> {
    if d.get_ref().0 < Duration::from_secs(1) {
        return Err(loc.at(&d, key, "expected a duration of at least \"1s\""));
    }
    Ok(d.get_ref().0)
}

fn check_sns_arn(loc: &Locator<'_>, arn: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
    let text = arn.get_ref();
    if !(text.starts_with("arn:") && text.split(':').nth(2) == Some("sns")) {
        return Err(loc.at(
            arn,
            key,
            format!("expected an SNS topic ARN such as \"arn:aws:sns:us-east-1:123456789012:topic\", found {text:?}"),
        ));
    }
    Ok(())
}

fn validate_server(s: RawServer, loc: &Locator<'_>) -> Result<ServerConfig, ConfigError> {
    if let Some(inline) = &s.admin_token {
        return Err(loc.at(
            inline,
            "server.admin_token",
            "tokens are never written in the configuration: set admin_token_file (a file holding the token) or admin_token_env (the name of an environment variable holding it)",
        ));
    }
    let listen = match s.listen {
        Some(l) => l.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
            loc.at(
                &l,
                "server.listen",
                format!(
                    "expected an address and port such as \"127.0.0.1:9717\", found {:?}",
                    l.get_ref()
                ),
            )
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 9717)),
    };
    let admin_token = match (s.admin_token_file, s.admin_token_env) {
        (Some(_), Some(env)) => {
            return Err(loc.at(
                &env,
                "server.admin_token_env",
                "expected only one of admin_token_file and admin_token_env",
            ));
        }
        (Some(file), None) => Some(TokenSource::File(PathBuf::from(file))),
        (None, Some(env)) => {
            if !is_env_var_name(env.get_ref()) {
                return Err(loc.at(
                    &env,
                    "server.admin_token_env",
                    "expected the name of an environment variable such as \"KEYWARDEN_ADMIN_TOKEN\" (never the token itself)",
                ));
            }
            Some(TokenSource::Env(env.into_inner()))
        }
        (None, None) => None,
    };
    let max_connections = positive(loc, &s.max_connections, "server.max_connections", 256)?;
    let max_connections_per_ip = positive(
        loc,
        &s.max_connections_per_ip,
        "server.max_connections_per_ip",
        32,
    )?;
    let reserved_connections = positive(
        loc,
        &s.reserved_connections,
        "server.reserved_connections",
        16,
    )?;
    Ok(ServerConfig {
        listen,
        admin_token,
        max_connections: max_connections as usize,
        max_connections_per_ip: max_connections_per_ip as usize,
        reserved_connections: reserved_connections as usize,
        write_timeout: s
            .write_timeout
            .map(|d| at_least_one_second(loc, d, "server.write_timeout"))
            .transpose()?
            .unwrap_or(Duration::from_secs(10)),
        header_timeout: s
            .header_timeout
            .map(|d| at_least_one_second(loc, d, "server.header_timeout"))
            .transpose()?
            .unwrap_or(Duration::from_secs(10)),
        body_timeout: s
            .body_timeout
            .map(|d| at_least_one_second(loc, d, "server.body_timeout"))
            .transpose()?
            .unwrap_or(Duration::from_secs(10)),
    })
}

fn validate_rotation(
    r: RawRotation,
    loc: &Locator<'_>,
    key: &str,
) -> Result<RotationSpec, ConfigError> {
    let strategy = *r.strategy.get_ref();
    let bytes = match &r.bytes {
        Some(b) if !strategy.generates_bytes() => return Err(loc.at(
            b,
            &format!("{key}.bytes"),
            format!(
                "`bytes` applies to the random, dual-key and primary-secondary strategies, not {}",
                strategy.as_str()
            ),
        )),
        Some(b) if !(16..=4096).contains(b.get_ref()) => {
            return Err(loc.at(
                b,
                &format!("{key}.bytes"),
                format!(
                    "expected between 16 and 4096 random bytes, found {}",
                    b.get_ref()
                ),
            ));
        }
        Some(b) => *b.get_ref() as usize,
        None => 32,
    };
    let needs_master = matches!(strategy, Strategy::Postgres | Strategy::Redis);
    match (&r.master_secret, needs_master) {
        (None, true) => {
            return Err(loc.at(
                &r.strategy,
                &format!("{key}.master_secret"),
                format!(
                    "the {} strategy needs master_secret: the Secrets Manager id of the admin credentials",
                    strategy.as_str()
                ),
            ))
        }
        (Some(m), false) => {
            return Err(loc.at(
                m,
                &format!("{key}.master_secret"),
                format!(
                    "master_secret applies to the postgres and redis strategies, not {}",
                    strategy.as_str()
                ),
            ))
        }
        _ => {}
    }
    let server = validate_db_server(&r, strategy, loc, key)?;
    let replication_group = match (&r.replication_group, strategy) {
        (None, Strategy::Elasticache) => {
            return Err(loc.at(
                &r.strategy,
                &format!("{key}.replication_group"),
                "the elasticache strategy needs replication_group: the ElastiCache replication group id whose AUTH token the secret holds",
            ));
        }
        (Some(g), Strategy::Elasticache) => Some(valid_replication_group(g, loc, key)?),
        (Some(g), _) => {
            return Err(loc.at(
                g,
                &format!("{key}.replication_group"),
                format!(
                    "replication_group applies to the elasticache strategy, not {}",
                    strategy.as_str()
                ),
            ));
        }
        (None, _) => None,
    };
    Ok(RotationSpec {
        strategy,
        grace: r
            .grace
            .as_ref()
            .map_or(strategy.default_grace(), |d| d.get_ref().0),
        grace_is_default: r.grace.is_none(),
        bytes,
        master_secret: r.master_secret.map(Spanned::into_inner),
        timeout: r
            .timeout
            .map(|d| at_least_one_second(loc, d, &format!("{key}.timeout")))
            .transpose()?
            .unwrap_or(Duration::from_secs(15 * 60)),
        server,
        replication_group,
    })
}

/// An ElastiCache replication group id as AWS allows it: 1 to 40 letters, digits and hyphens,
/// starting with a letter, no two hyphens in a row, no hyphen at the end.
fn valid_replication_group(
    g: &Spanned<String>,
    loc: &Locator<'_>,
    key: &str,
) -> Result<String, ConfigError> {
    let id = g.get_ref();
    let ok = (1..=40).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.contains("--")
        && !id.ends_with('-');
    if ok {
        Ok(id.clone())
    } else {
        Err(loc.at(
            g,
            &format!("{key}.replication_group"),
            format!(
                "expected a replication group id (1 to 40 letters, digits and single hyphens, starting with a letter), found {id:?}"
            ),
        ))
    }
}

/// `host`, `port`, `dbname`, `tls` and `ca_file` of a `postgres` or `redis` rotation.
fn validate_db_server(
    r: &RawRotation,
    strategy: Strategy,
    loc: &Locator<'_>,
    key: &str,
) -> Result<ServerConnection, ConfigError> {
    let db = matches!(strategy, Strategy::Postgres | Strategy::Redis);
    // elasticache: the endpoint comes from DescribeReplicationGroups; TLS is always verified
    // (a group with an AUTH token has in-transit encryption), against ca_file when written.
    let ec = strategy == Strategy::Elasticache;
    let not_here = |span: std::ops::Range<usize>, name: &str, applies: &str| {
        loc.error(
            span,
            &format!("{key}.{name}"),
            format!("{name} applies to {applies}, not {}", strategy.as_str()),
        )
    };
    let both = "the postgres and redis strategies";
    let three = "the postgres, redis and elasticache strategies";
    let spans = [
        ("host", r.host.as_ref().map(Spanned::span), db, both),
        ("port", r.port.as_ref().map(Spanned::span), db, both),
        ("tls", r.tls.as_ref().map(Spanned::span), db || ec, three),
        (
            "ca_file",
            r.ca_file.as_ref().map(Spanned::span),
            db || ec,
            three,
        ),
    ];
    for (name, span, allowed, applies) in spans {
        if let (Some(span), false) = (span, allowed) {
            return Err(not_here(span, name, applies));
        }
    }
    if ec
        && let Some(t) = &r.tls
        && *t.get_ref() == ServerTls::Disable
    {
        return Err(loc.at(
            t,
            &format!("{key}.tls"),
            "the elasticache strategy always uses TLS: an AUTH token needs in-transit encryption on the group (leave tls out, or write \"verify-full\")",
        ));
    }
    if let Some(d) = &r.dbname
        && strategy != Strategy::Postgres
    {
        return Err(not_here(d.span(), "dbname", "the postgres strategy"));
    }
    let text = |v: &Option<Spanned<String>>, name: &str| -> Result<Option<String>, ConfigError> {
        match v {
            Some(t) if t.get_ref().trim().is_empty() || t.get_ref().contains('\0') => Err(loc.at(
                t,
                &format!("{key}.{name}"),
                format!("expected a non-empty {name}"),
            )),
            Some(t) => Ok(Some(t.get_ref().clone())),
            None => Ok(None),
        }
    };
    let port = match &r.port {
        Some(p) => Some(
            u16::try_from(*p.get_ref())
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    loc.at(
                        p,
                        &format!("{key}.port"),
                        format!(
                            "expected a TCP port between 1 and 65535, found {}",
                            p.get_ref()
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let tls = r
        .tls
        .as_ref()
        .map_or(ServerTls::VerifyFull, |t| *t.get_ref());
    if let Some(ca) = &r.ca_file
        && tls == ServerTls::Disable
    {
        return Err(loc.at(
            ca,
            &format!("{key}.ca_file"),
            "ca_file verifies the server's certificate, which tls = \"disable\" does not use",
        ));
    }
    Ok(ServerConnection {
        host: text(&r.host, "host")?,
        port,
        dbname: text(&r.dbname, "dbname")?,
        tls,
        ca_file: text(&r.ca_file, "ca_file")?.map(PathBuf::from),
    })
}

/// Whether a secret with checks needs `rotation.grace >= [verify] watch`: its previous
/// credential (or previous key) stops working at finalize, so the grace must cover the watch for
/// a rollback during the watch to restore a working value. The two-key strategies are included:
/// their finalize drops the previous key from the value consumers validate against.
pub(super) fn grace_must_cover_watch(strategy: Strategy) -> bool {
    strategy.old_credential_dies_at_finalize() || strategy.keeps_two_keys()
}

fn validate_verify(v: RawVerify, loc: &Locator<'_>) -> Result<VerifyConfig, ConfigError> {
    let d = VerifyConfig::default();
    let prometheus_url = match v.prometheus_url {
        Some(url) => {
            let text = url.get_ref().trim().trim_end_matches('/');
            if !text.starts_with("http://") || text.len() <= "http://".len() {
                return Err(loc.at(
                    &url,
                    "verify.prometheus_url",
                    format!(
                        "expected an http:// URL such as \"http://127.0.0.1:9090\", found {:?}",
                        url.get_ref()
                    ),
                ));
            }
            Some(text.to_string())
        }
        None => None,
    };
    let failures = positive(loc, &v.failures, "verify.failures", u64::from(d.failures))?;
    let failures = u32::try_from(failures).map_err(|_| {
        loc.error(
            v.failures.as_ref().map_or(0..0, Spanned::span),
            "verify.failures",
            "expected a small positive integer such as 2".into(),
        )
    })?;
    Ok(VerifyConfig {
        prometheus_url,
        prometheus_token_file: v.prometheus_token_file.map(PathBuf::from),
        every: v
            .every
            .map(|d| at_least_one_second(loc, d, "verify.every"))
            .transpose()?
            .unwrap_or(d.every),
        watch: v
            .watch
            .map(|d| at_least_one_second(loc, d, "verify.watch"))
            .transpose()?
            .unwrap_or(d.watch),
        failures,
    })
}

/// The `verify` checks of one secret; `key` names a field of that secret for errors.
fn validate_checks(
    raw: &[Spanned<RawCheck>],
    loc: &Locator<'_>,
    key: &dyn Fn(&str) -> String,
    cfg: &VerifyConfig,
) -> Result<Vec<CheckSpec>, ConfigError> {
    let mut out: Vec<CheckSpec> = Vec::with_capacity(raw.len());
    for (i, spanned) in raw.iter().enumerate() {
        let c = spanned.get_ref();
        let k = |field: &str| key(&format!("verify[{i}].{field}"));
        let name = c.name.get_ref().trim().to_string();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'));
        if !name_ok {
            return Err(loc.at(
                &c.name,
                &k("name"),
                format!("expected a check name of 1 to 64 letters, digits, '_', '-' or '.' such as \"jwt-validate\", found {name:?}"),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(loc.at(
                &c.name,
                &k("name"),
                format!("duplicate check name {name:?}: names must be unique within a secret"),
            ));
        }
        let kinds = [
            c.http.is_some(),
            c.prometheus.is_some(),
            c.command.is_some(),
        ];
        if kinds.iter().filter(|b| **b).count() != 1 {
            return Err(loc.error(
                spanned.span(),
                &key(&format!("verify[{i}]")),
                "expected exactly one of http = \"URL\", prometheus = \"PROMQL\" or command = [argv...]".into(),
            ));
        }
        let only = |present: Option<std::ops::Range<usize>>, field: &str, kind: &str| match present
        {
            Some(span) => Err(loc.error(
                span,
                &k(field),
                format!("{field} applies to {kind} checks only"),
            )),
            None => Ok(()),
        };
        let kind = if let Some(url) = &c.http {
            only(c.max.as_ref().map(Spanned::span), "max", "prometheus")?;
            only(
                c.max_ratio.as_ref().map(Spanned::span),
                "max_ratio",
                "prometheus",
            )?;
            let text = url.get_ref().trim();
            let scheme_ok = ["http://", "https://"]
                .iter()
                .any(|p| text.starts_with(p) && text.len() > p.len());
            if !scheme_ok {
                return Err(loc.at(
                    url,
                    &k("http"),
                    format!("expected an http:// or https:// URL such as \"https://api.example.com/health\", found {text:?}"),
                ));
            }
            let expect_status = match &c.expect_status {
                Some(st) => u16::try_from(*st.get_ref())
                    .ok()
                    .filter(|v| (100..=599).contains(v))
                    .ok_or_else(|| {
                        loc.at(
                            st,
                            &k("expect_status"),
                            format!(
                                "expected an HTTP status between 100 and 599, found {}",
                                st.get_ref()
                            ),
                        )
                    })?,
                None => 200,
            };
            let json_pointer = match &c.json_pointer {
                Some(p) if !(p.get_ref().is_empty() || p.get_ref().starts_with('/')) => {
                    return Err(loc.at(
                        p,
                        &k("json_pointer"),
                        format!("expected an RFC 6901 JSON pointer such as \"/checks/database\" (empty, or starting with '/'), found {:?}", p.get_ref()),
                    ));
                }
                Some(p) => Some(p.get_ref().clone()),
                None => None,
            };
            let equals = match (&c.equals, &json_pointer) {
                (Some(e), None) => {
                    return Err(loc.at(
                        e,
                        &k("equals"),
                        "equals needs json_pointer: the place in the JSON body to compare",
                    ));
                }
                (Some(e), Some(_)) => Some(serde_json::to_value(e.get_ref()).map_err(|err| {
                    loc.at(
                        e,
                        &k("equals"),
                        format!("expected a string, number or boolean: {err}"),
                    )
                })?),
                (None, Some(_)) => {
                    let p = c.json_pointer.as_ref().map_or(0..0, Spanned::span);
                    return Err(loc.error(
                        p,
                        &k("json_pointer"),
                        "json_pointer needs equals: the value expected there".into(),
                    ));
                }
                (None, None) => None,
            };
            let mut headers = Vec::new();
            if let Some(h) = &c.headers {
                for (header, var) in h.get_ref() {
                    if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                        return Err(loc.at(
                            h,
                            &k("headers"),
                            format!("{header:?} is not a valid HTTP header name"),
                        ));
                    }
                    if !is_env_var_name(var) {
                        return Err(loc.at(
                            h,
                            &k("headers"),
                            format!("the value of header {header:?} must be the NAME of an environment variable holding it, such as \"EVENT_SERVICE_TEST_TOKEN\"; header values are never written in the configuration"),
                        ));
                    }
                    headers.push((header.clone(), var.clone()));
                }
            }
            CheckKind::Http {
                url: text.to_string(),
                expect_status,
                json_pointer,
                equals,
                headers,
            }
        } else {
            for (present, field) in [
                (c.expect_status.as_ref().map(Spanned::span), "expect_status"),
                (c.json_pointer.as_ref().map(Spanned::span), "json_pointer"),
                (c.equals.as_ref().map(Spanned::span), "equals"),
                (c.headers.as_ref().map(Spanned::span), "headers"),
            ] {
                only(present, field, "http")?;
            }
            if let Some(query) = &c.prometheus {
                if query.get_ref().trim().is_empty() {
                    return Err(loc.at(query, &k("prometheus"), "expected a PromQL expression such as \"sum(rate(auth_failures_total[1m]))\""));
                }
                if cfg.prometheus_url.is_none() {
                    return Err(loc.at(
                        query,
                        &k("prometheus"),
                        "prometheus checks need [verify] prometheus_url",
                    ));
                }
                let limit = match (&c.max, &c.max_ratio) {
                    (Some(m), None) if m.get_ref().is_finite() && *m.get_ref() >= 0.0 => PromLimit::Max(*m.get_ref()),
                    (None, Some(r)) if r.get_ref().is_finite() && *r.get_ref() > 0.0 => PromLimit::MaxRatio(*r.get_ref()),
                    (Some(m), None) => return Err(loc.at(m, &k("max"), format!("expected a finite number of at least 0, found {}", m.get_ref()))),
                    (None, Some(r)) => return Err(loc.at(r, &k("max_ratio"), format!("expected a positive number such as 3.0, found {}", r.get_ref()))),
                    (Some(_), Some(r)) => return Err(loc.at(r, &k("max_ratio"), "expected one of max and max_ratio, not both")),
                    (None, None) => return Err(loc.at(query, &k("prometheus"), "a prometheus check needs max (absolute) or max_ratio (to the value just before the rotation)")),
                };
                CheckKind::Prometheus {
                    query: query.get_ref().clone(),
                    limit,
                }
            } else {
                only(c.max.as_ref().map(Spanned::span), "max", "prometheus")?;
                only(
                    c.max_ratio.as_ref().map(Spanned::span),
                    "max_ratio",
                    "prometheus",
                )?;
                let argv = c
                    .command
                    .as_ref()
                    .map_or(&[][..], |a| a.get_ref().as_slice());
                if argv.first().is_none_or(|a| a.trim().is_empty()) {
                    let span = c.command.as_ref().map_or(spanned.span(), Spanned::span);
                    return Err(loc.error(
                        span,
                        &k("command"),
                        "expected a non-empty argv array such as [\"/usr/local/bin/check-login\"]"
                            .into(),
                    ));
                }
                CheckKind::Command {
                    argv: argv.to_vec(),
                }
            }
        };
        let timeout = c
            .timeout
            .clone()
            .map(|d| at_least_one_second(loc, d, &k("timeout")))
            .transpose()?
            .unwrap_or(Duration::from_secs(5));
        out.push(CheckSpec {
            name,
            kind,
            timeout,
        });
    }
    Ok(out)
}
