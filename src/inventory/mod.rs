//! The inventory: which AWS secrets keywarden watches and what their status is.
//!
//! [`watch_list`] pairs the configured secrets (and discovered ones) with what ListSecrets
//! returned; [`evaluate`] turns one pair into a [`SecretStatus`] with the schedule rules of
//! SPEC §2. Both are pure: no I/O, no clock.
//!
//! `poller.rs` is the metadata task that feeds the view. Must never import `http`, `rotation`
//! or `incident`.

pub mod poller;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::aws::SecretMeta;
use crate::config::{Config, SecretSpec, Severity, Strategy};
use crate::domain::targets::{TargetId, qualified_key};
use crate::domain::view::{Managed, SecretStatus};
use crate::schedule::{self, RotationFacts};

/// What keywarden expects of one watched secret, from the inventory or from discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    /// The `secret` label.
    pub name: String,
    /// Configured id (name or ARN).
    pub id: String,
    /// Policy from the configuration, if any.
    pub rotate_every: Option<Duration>,
    /// Fallback policy when neither the inventory nor AWS gives one.
    pub default_rotate_every: Option<Duration>,
    /// Alert severity.
    pub severity: Severity,
    /// What a compromise means.
    pub impact: String,
    /// Rotation strategy.
    pub strategy: Strategy,
    /// Inventory or discovered.
    pub managed: Managed,
    /// The account and region it is read from.
    pub target: TargetId,
}

/// The target a listing comes from: its id and labels.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Its id (`TargetId::HOME` for the daemon's own account and region).
    pub target: TargetId,
    /// Its account id (may be empty for the home target before it is known).
    pub account: &'a str,
    /// Its region.
    pub region: &'a str,
}

impl Scope<'static> {
    /// The home target, for callers that read one account and region.
    pub const HOME: Scope<'static> = Scope {
        target: TargetId::HOME,
        account: "",
        region: "",
    };
}

/// Whether `id` (a name, a full ARN or a partial ARN without the 6-character suffix) names
/// the secret `meta`.
pub fn id_matches(id: &str, meta: &SecretMeta) -> bool {
    id == meta.name || id == meta.arn || partial_arn(&meta.arn) == Some(id)
}

/// The ARN without the `-XXXXXX` suffix that Secrets Manager appends.
fn partial_arn(arn: &str) -> Option<&str> {
    let (head, suffix) = arn.rsplit_once('-')?;
    (suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric())).then_some(head)
}

/// Pairs every inventory secret of the home target with its metadata (None when AWS does not
/// list it), then adds every listed secret matched by a discovery prefix and not already in the
/// inventory. See [`watch_list_in`] for another target.
pub fn watch_list<'a>(
    config: &Config,
    listed: &'a [SecretMeta],
) -> Vec<(Watched, Option<&'a SecretMeta>)> {
    let specs: Vec<&SecretSpec> = config
        .secrets
        .iter()
        .filter(|s| s.account.is_none())
        .collect();
    watch_list_in(config, &specs, listed, Scope::HOME)
}

/// [`watch_list`] for the listing of one target: `specs` are the inventory secrets that live
/// there. A secret discovered outside the home target is keyed `account:region:name`.
pub fn watch_list_in<'a>(
    config: &Config,
    specs: &[&SecretSpec],
    listed: &'a [SecretMeta],
    scope: Scope<'_>,
) -> Vec<(Watched, Option<&'a SecretMeta>)> {
    let mut by_key: HashMap<&str, &SecretMeta> = HashMap::with_capacity(listed.len() * 3);
    for m in listed {
        // A live secret wins over a deleted one of the same name.
        let live = m.deleted.is_none();
        for key in [
            Some(m.name.as_str()),
            Some(m.arn.as_str()),
            partial_arn(&m.arn),
        ]
        .into_iter()
        .flatten()
        {
            match by_key.get(key) {
                Some(existing) if existing.deleted.is_none() && !live => {}
                _ => {
                    by_key.insert(key, m);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(specs.len());
    let mut claimed: HashSet<&str> = HashSet::new();
    for spec in specs.iter().copied() {
        let meta = by_key.get(spec.id.as_str()).copied();
        if let Some(m) = meta {
            claimed.insert(m.arn.as_str());
        }
        out.push((
            Watched {
                name: spec.name.clone(),
                id: spec.id.clone(),
                rotate_every: spec.rotate_every,
                default_rotate_every: config
                    .discovery
                    .as_ref()
                    .and_then(|d| d.default_rotate_every),
                severity: spec.severity,
                impact: spec.impact.clone(),
                strategy: spec.rotation.strategy,
                managed: Managed::Inventory,
                target: scope.target,
            },
            meta,
        ));
    }
    if let Some(discovery) = &config.discovery {
        // Inventory names only collide with the plain keys of the home target.
        let inventory_names: HashSet<&str> = if scope.target.is_home() {
            config.secrets.iter().map(|s| s.name.as_str()).collect()
        } else {
            HashSet::new()
        };
        for m in listed {
            if claimed.contains(m.arn.as_str())
                || inventory_names.contains(m.name.as_str())
                || !discovery
                    .name_prefixes
                    .iter()
                    .any(|p| m.name.starts_with(p.as_str()))
            {
                continue;
            }
            // A secret scheduled for deletion that was never in the inventory is not watched.
            if m.deleted.is_some() {
                continue;
            }
            let name = if scope.target.is_home() {
                m.name.clone()
            } else {
                qualified_key(scope.account, scope.region, &m.name)
            };
            out.push((
                Watched {
                    name,
                    id: m.name.clone(),
                    rotate_every: None,
                    default_rotate_every: discovery.default_rotate_every,
                    severity: Severity::Warning,
                    impact: String::new(),
                    strategy: Strategy::None,
                    managed: Managed::Discovered,
                    target: scope.target,
                },
                Some(m),
            ));
        }
    }
    out
}

/// The account and region of an inventory secret that names an account: its `region`, else
/// the first region its account is read in (`None` without `account`, or without a region).
pub fn spec_place<'a>(config: &'a Config, spec: &'a SecretSpec) -> Option<(&'a str, &'a str)> {
    let account = spec.account.as_deref()?;
    let region = match &spec.region {
        Some(r) => r.as_str(),
        None => config
            .accounts
            .iter()
            .find(|a| a.id == account)
            .map(|a| a.regions.as_slice())
            .or_else(|| config.organization.as_ref().map(|o| o.regions.as_slice()))
            .and_then(|r| r.first())?
            .as_str(),
    };
    Some((account, region))
}

/// The version id labelled AWSCURRENT in ListSecrets' SecretVersionsToStages.
pub fn current_version_id(meta: &SecretMeta) -> Option<&str> {
    let versions = meta.versions.as_ref()?;
    schedule::current_version(versions.iter().map(|(id, s)| (id.as_str(), s.as_slice())))
}

fn secs(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp())
}

/// Computes a secret's status. `current_version_created` is the creation time of the
/// AWSCURRENT version when known (from ListSecretVersionIds).
pub fn evaluate(
    w: &Watched,
    meta: Option<&SecretMeta>,
    current_version_created: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> SecretStatus {
    let mut status = SecretStatus {
        name: w.name.clone(),
        target: w.target,
        id: w.id.clone(),
        arn: None,
        managed: w.managed,
        severity: w.severity,
        impact: w.impact.clone(),
        strategy: w.strategy,
        present: false,
        deletion_scheduled: false,
        last_rotated: None,
        interval_seconds: None,
        due: None,
        overdue: false,
        scheduled: None,
        rotation_enabled: false,
        pending: false,
        last_accessed: None,
        current_version: None,
        current_created: None,
        observed_at: now.timestamp(),
    };
    let Some(m) = meta else {
        return status;
    };
    let facts = RotationFacts {
        created: m.created,
        last_rotated: m.last_rotated,
        current_version_created,
        rotation_enabled: m.rotation_enabled,
        automatically_after_days: m.automatically_after_days,
        schedule_expression: m.schedule_expression.clone(),
        next_rotation: m.next_rotation,
    };
    let last = schedule::last_rotation(&facts);
    let interval = schedule::interval(w.rotate_every, &facts, last, w.default_rotate_every);
    let due = schedule::due(last, interval);
    status.arn = Some(m.arn.clone());
    status.deletion_scheduled = m.deleted.is_some();
    status.present = m.deleted.is_none();
    status.last_rotated = secs(last);
    status.interval_seconds = interval.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    status.due = secs(due);
    status.overdue = schedule::is_overdue(due, now);
    status.scheduled = secs(schedule::scheduled(&facts, last, now));
    status.rotation_enabled = m.rotation_enabled;
    status.pending = m
        .versions
        .as_ref()
        .is_some_and(|v| schedule::is_pending(v.iter().map(|(id, s)| (id.as_str(), s.as_slice()))));
    status.last_accessed = secs(m.last_accessed);
    status.current_version = current_version_id(m).map(str::to_string);
    status.current_created = secs(current_version_created);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn meta(name: &str, created: i64) -> SecretMeta {
        SecretMeta {
            arn: format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbC123"),
            name: name.to_string(),
            created: DateTime::from_timestamp(created, 0),
            versions: Some(vec![("v1".into(), vec!["AWSCURRENT".into()])]),
            ..SecretMeta::default()
        }
    }

    fn config(text: &str) -> Config {
        crate::config::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn ids_match_by_name_full_and_partial_arn() {
        let m = meta("svc/db", 0);
        for (id, expected) in [
            ("svc/db", true),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/db-AbC123",
                true,
            ),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/db",
                true,
            ),
            ("svc/d", false),
            (
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/d",
                false,
            ),
        ] {
            assert_eq!(id_matches(id, &m), expected, "{id}");
        }
    }

    #[test]
    fn inventory_missing_deleted_and_discovered() {
        let c = config(
            "[discovery]\nname_prefixes = [\"svc/\"]\ndefault_rotate_every = \"30d\"\n\
             [[secret]]\nname = \"DB\"\nid = \"svc/db\"\nrotate_every = \"90d\"\n\
             [[secret]]\nname = \"GONE\"\nid = \"svc/gone\"\n\
             [[secret]]\nname = \"DEL\"\nid = \"arn:aws:secretsmanager:us-east-1:123456789012:secret:other/del\"\n",
        );
        let mut deleted = meta("other/del", 100);
        deleted.deleted = DateTime::from_timestamp(500, 0);
        let listed = vec![
            meta("svc/db", 1000),
            meta("svc/extra", 2000),
            deleted,
            meta("x/y", 0),
        ];
        let w = watch_list(&c, &listed);
        let names: Vec<&str> = w.iter().map(|(w, _)| w.name.as_str()).collect();
        assert_eq!(names, ["DB", "GONE", "DEL", "svc/extra"]);
        let now = DateTime::from_timestamp(10_000, 0).unwrap();
        let st: Vec<SecretStatus> = w.iter().map(|(w, m)| evaluate(w, *m, None, now)).collect();
        assert!(st[0].present);
        assert_eq!(st[0].due, Some(1000 + 90 * 86400));
        assert!(!st[1].present);
        assert_eq!(st[1].due, None);
        assert!(!st[2].present);
        assert!(st[2].deletion_scheduled);
        assert_eq!(st[3].managed, Managed::Discovered);
        assert_eq!(st[3].interval_seconds, Some(30 * 86400));
    }

    #[test]
    fn version_creation_wins_and_pending_is_detected() {
        let w = Watched {
            name: "A".into(),
            id: "a".into(),
            rotate_every: Some(Duration::from_secs(100)),
            default_rotate_every: None,
            severity: Severity::High,
            impact: String::new(),
            strategy: Strategy::Random,
            managed: Managed::Inventory,
            target: TargetId::HOME,
        };
        let mut m = meta("a", 1000);
        m.last_rotated = DateTime::from_timestamp(2000, 0);
        m.versions = Some(vec![
            ("v1".into(), vec!["AWSCURRENT".into()]),
            ("v2".into(), vec!["AWSPENDING".into()]),
        ]);
        let now = DateTime::from_timestamp(3101, 0).unwrap();
        let s = evaluate(&w, Some(&m), DateTime::from_timestamp(3000, 0), now);
        assert_eq!(s.last_rotated, Some(3000));
        assert_eq!(s.due, Some(3100));
        assert!(s.overdue);
        assert!(s.pending);
        assert_eq!(s.current_version.as_deref(), Some("v1"));
        let s = evaluate(&w, Some(&m), None, now);
        assert_eq!(s.last_rotated, Some(2000));
    }
}
