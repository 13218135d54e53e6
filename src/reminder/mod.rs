//! Pre-rotation reminders (SPEC §5): which reminders are due, what they say, and the task that
//! publishes each of them exactly once.
//!
//! The pure part ([`due_reminders`], [`render`], [`fifo_ids`], [`backoff`]) takes `now` and does
//! no I/O. The ledger functions keep one row per (secret, due date, lead) in the store's
//! `reminders` table. The [`Reminders`] task ties them together:
//!
//! 1. After each metadata poll (and at least every `poll.metadata_every`) it computes the
//!    reminders due from the view and writes every new one to the ledger as `pending`, with its
//!    rendered message, in one durable transaction. Nothing is published before that commit.
//! 2. It publishes every pending reminder. Once SNS accepted one, the row becomes `sent` with the
//!    SNS message id, and `keywarden_reminders_sent_total{secret,lead}` counts it. A failure
//!    (missing topic, throttling, network) is counted in `keywarden_reminder_failures_total`,
//!    recorded on the row, and retried with capped, jittered exponential backoff. Rows are never
//!    deleted, so a restart finds the pending ones and sends them.
//! 3. On a FIFO topic each message carries a MessageDeduplicationId derived from (secret, due,
//!    lead), so a crash between SNS accepting a message and the ledger recording it does not
//!    deliver it twice when the retry comes within SNS's five-minute deduplication interval. On
//!    a standard topic that same window is the one place a duplicate can happen.
//!
//! Keys: a lead reminder has `lead_seconds` = the lead; the overdue notice has
//! `lead_seconds` = [`OVERDUE_LEAD`]. A rotation moves the due date, so the next cycle gets new
//! keys and its own reminders.
//!
//! This module never reads a secret value: everything it says comes from the view (metadata)
//! and the configuration.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::aws::{is_fifo_topic, AwsError, FifoIds, Notification, NotifyApi};
use crate::config::{Config, SecretSpec};
use crate::domain::view::{AccessFacts, SecretStatus, SharedView};
use crate::schedule::format_duration;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// `lead_seconds` of an overdue notice in the ledger (a lead is never negative).
pub const OVERDUE_LEAD: i64 = -1;
/// The `lead` label of `keywarden_reminders_sent_total` for overdue notices.
pub const OVERDUE_LABEL: &str = "overdue";
/// SNS rejects a Subject of 100 characters or more.
pub const SUBJECT_MAX: usize = 99;
/// First retry delay after a failed publish.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Undeclared readers named in a message at most (the rest are counted).
const READERS_LISTED: usize = 20;
/// How often the task looks for a finished metadata poll.
const WAKE_EVERY: Duration = Duration::from_secs(1);

/// One reminder: the ledger's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReminderKey {
    /// The `secret` label.
    pub secret: String,
    /// The due date it is about, seconds since the epoch.
    pub due: i64,
    /// The lead in seconds, or [`OVERDUE_LEAD`] for the overdue notice.
    pub lead_seconds: i64,
}

impl ReminderKey {
    /// Whether this is the overdue notice.
    pub fn is_overdue(&self) -> bool {
        self.lead_seconds == OVERDUE_LEAD
    }

    /// The ledger's `kind` column and the `kind` message attribute.
    pub fn kind(&self) -> &'static str {
        if self.is_overdue() {
            "overdue"
        } else {
            "reminder"
        }
    }

    /// The `lead` label: the lead as `schedule::format_duration` writes it, or `overdue`.
    pub fn lead_label(&self) -> String {
        if self.is_overdue() {
            OVERDUE_LABEL.to_string()
        } else {
            format_duration(Duration::from_secs(self.lead_seconds.max(0) as u64))
        }
    }
}

/// The reminders due at `now`, in key order.
///
/// For each present secret with a due date: while `now <= due`, one reminder per lead once
/// `now >= due - lead`; once `now > due`, the overdue notice instead. A secret first seen
/// overdue therefore gets only the overdue notice; one seen earlier gets its lead reminders
/// and, if it passes its due date unrotated, the overdue notice too. Secrets that are missing
/// or scheduled for deletion get nothing.
pub fn due_reminders<'a>(
    statuses: impl IntoIterator<Item = &'a SecretStatus>,
    leads: &[Duration],
    now: i64,
) -> Vec<ReminderKey> {
    let mut out = Vec::new();
    for s in statuses {
        let Some(due) = s.due.filter(|_| s.present) else {
            continue;
        };
        if now > due {
            out.push(ReminderKey {
                secret: s.name.clone(),
                due,
                lead_seconds: OVERDUE_LEAD,
            });
            continue;
        }
        for lead in leads {
            let lead = i64::try_from(lead.as_secs()).unwrap_or(i64::MAX);
            if now >= due.saturating_sub(lead) {
                out.push(ReminderKey {
                    secret: s.name.clone(),
                    due,
                    lead_seconds: lead,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What the access poller knows about a secret, for the message.
#[derive(Debug, Clone, Copy)]
pub enum AccessInfo<'a> {
    /// `[access]` is not configured.
    Off,
    /// `[access]` is configured but has not reported on this secret yet.
    NotYet,
    /// The facts of the baseline window.
    Facts(&'a AccessFacts),
}

/// Everything a message is rendered from. Holds no value.
#[derive(Debug, Clone, Copy)]
pub struct MessageContext<'a> {
    /// The secret's status from the view.
    pub status: &'a SecretStatus,
    /// Its inventory entry (consumers, window); `None` for a discovered secret.
    pub spec: Option<&'a SecretSpec>,
    /// Readers seen in CloudTrail.
    pub access: AccessInfo<'a>,
    /// When the message is rendered.
    pub now: i64,
}

/// A rendered message, as stored in the ledger and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// ASCII, at most [`SUBJECT_MAX`] characters.
    pub subject: String,
    /// Plain text.
    pub body: String,
    /// MessageAttributes (String): `secret`, `severity`, `due`, `kind`.
    pub attributes: Vec<(String, String)>,
}

/// `YYYY-MM-DD` of a timestamp.
fn date(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// `YYYY-MM-DD HH:MM UTC` of a timestamp.
fn date_time(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// A span of time in words, rounded: `14 days`, `5 hours`, `less than an hour`.
pub fn span_words(seconds: i64) -> String {
    let s = seconds.max(0);
    if s >= 36 * 3600 {
        format!("{} days", (s + 43_200) / 86_400)
    } else if s >= 5400 {
        format!("{} hours", (s + 1800) / 3600)
    } else if s >= 3600 {
        "1 hour".to_string()
    } else {
        "less than an hour".to_string()
    }
}

/// The Subject: `[keywarden] <secret>: ...`, with the secret's name made ASCII and shortened
/// so the whole stays within [`SUBJECT_MAX`] characters.
fn subject(name: &str, tail: &str) -> String {
    const PREFIX: &str = "[keywarden] ";
    let ascii: String = name
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    let room = SUBJECT_MAX.saturating_sub(PREFIX.len() + tail.len());
    let shown = if ascii.len() <= room {
        ascii
    } else {
        let keep = room.saturating_sub(3);
        format!("{}...", &ascii[..keep])
    };
    format!("{PREFIX}{shown}{tail}")
}

/// Renders the message of a reminder. Pure: everything comes from `ctx`.
pub fn render(key: &ReminderKey, ctx: &MessageContext<'_>) -> Message {
    let s = ctx.status;
    let now = ctx.now;
    let due_date = date(key.due);
    let (subject_tail, headline) = if key.is_overdue() {
        (
            format!(": rotation OVERDUE since {due_date}"),
            format!(
                "{} was due for rotation on {} and is overdue by {}. Rotate it now.",
                s.name,
                date_time(key.due),
                span_words(now - key.due)
            ),
        )
    } else {
        let left = span_words(key.due - now);
        (
            format!(": rotation due {due_date} (in {left})"),
            format!(
                "{} is due for rotation on {} (in {}). Plan the rotation now.",
                s.name,
                date_time(key.due),
                left
            ),
        )
    };

    let mut b = String::with_capacity(2048);
    let _ = writeln!(b, "{headline}\n");
    let _ = writeln!(b, "Secret:        {}", s.name);
    let _ = writeln!(b, "Id:            {}", s.id);
    if let Some(arn) = &s.arn {
        let _ = writeln!(b, "ARN:           {arn}");
    }
    let _ = writeln!(b, "Due date:      {due_date} ({})", date_time(key.due));
    match s.last_rotated {
        Some(t) => {
            let _ = writeln!(
                b,
                "Age:           {} days (last rotated {})",
                (now - t).div_euclid(86_400),
                date_time(t)
            );
        }
        None => {
            let _ = writeln!(b, "Age:           unknown");
        }
    }
    let interval = s
        .interval_seconds
        .map(|i| format_duration(Duration::from_secs(i.max(0) as u64)))
        .unwrap_or_else(|| "unknown".to_string());
    let _ = writeln!(b, "Interval:      {interval}");
    let impact = if s.impact.is_empty() {
        "not stated in the inventory"
    } else {
        s.impact.as_str()
    };
    let _ = writeln!(b, "Impact:        {impact}");
    let _ = writeln!(b, "Severity:      {}", s.severity.as_str());
    let _ = writeln!(b, "Strategy:      {}", s.strategy.as_str());
    match (s.rotation_enabled, s.scheduled) {
        (true, Some(t)) => {
            let _ = writeln!(b, "AWS rotation:  on, next run {}", date_time(t));
        }
        (true, None) => {
            let _ = writeln!(b, "AWS rotation:  on");
        }
        (false, _) => {
            let _ = writeln!(b, "AWS rotation:  off");
        }
    }
    if s.pending {
        let _ = writeln!(
            b,
            "Pending:       a rotation is half done (AWSPENDING on a version that is not AWSCURRENT)"
        );
    }

    let consumers: &[String] = ctx.spec.map_or(&[], |spec| spec.consumers.as_slice());
    let _ = writeln!(b, "\nDeclared consumers:");
    if consumers.is_empty() {
        let _ = writeln!(b, "  none declared in the inventory");
    }
    for c in consumers {
        let _ = writeln!(b, "  - {c}");
    }

    let _ = writeln!(b, "\nReaders seen in CloudTrail:");
    let readers_line = match ctx.access {
        AccessInfo::Off => {
            let _ = writeln!(b, "  not available (access monitoring off)");
            "readers not available (access monitoring off)".to_string()
        }
        AccessInfo::NotYet => {
            let _ = writeln!(
                b,
                "  not available yet (the access poller has not reported on this secret)"
            );
            "readers not available yet".to_string()
        }
        AccessInfo::Facts(f) => {
            let _ = writeln!(
                b,
                "  {} distinct principal(s) read it within the baseline window",
                f.principals
            );
            if f.undeclared_readers.is_empty() {
                let _ = writeln!(b, "  every one of them matches a declared consumer");
                format!("{} reader(s) seen, all declared", f.principals)
            } else {
                let _ = writeln!(
                    b,
                    "  {} of them match no declared consumer:",
                    f.undeclared_readers.len()
                );
                for p in f.undeclared_readers.iter().take(READERS_LISTED) {
                    let _ = writeln!(b, "  - {p}");
                }
                if f.undeclared_readers.len() > READERS_LISTED {
                    let _ = writeln!(
                        b,
                        "  ... and {} more",
                        f.undeclared_readers.len() - READERS_LISTED
                    );
                }
                format!(
                    "{} undeclared reader(s) listed above must be declared or cut off",
                    f.undeclared_readers.len()
                )
            }
        }
    };

    let window = match ctx.spec.and_then(|spec| spec.window.as_ref()) {
        Some(w) => {
            let next = DateTime::<Utc>::from_timestamp(now, 0)
                .and_then(|t| w.next_after(t))
                .map(|t| date_time(t.timestamp()))
                .unwrap_or_else(|| "none (the schedule has no further occurrence)".to_string());
            format!("window {w}, next opening {next}")
        }
        None => "no window configured: pick a quiet period yourself".to_string(),
    };
    let _ = writeln!(b, "\nBefore rotating:");
    let _ = writeln!(
        b,
        "  [ ] The on-call team knows the rotation is coming, and when."
    );
    let _ = writeln!(
        b,
        "  [ ] A backup of the current value exists and has been checked (keywarden never reads it)."
    );
    let _ = writeln!(
        b,
        "  [ ] The deployment pipeline is green, so consumers can pick up the new value."
    );
    let _ = writeln!(
        b,
        "  [ ] The way back is ready: the previous value stays available as AWSPREVIOUS until the grace period ends."
    );
    let _ = writeln!(b, "  [ ] It runs in a low-traffic period: {window}.");
    let _ = writeln!(
        b,
        "  [ ] Every consumer is known: {} declared pattern(s); {readers_line}.",
        consumers.len()
    );
    let _ = writeln!(
        b,
        "\nkeywarden sends this {} once for this due date{}. It never includes secret values.",
        if key.is_overdue() {
            "notice"
        } else {
            "reminder"
        },
        if key.is_overdue() {
            String::new()
        } else {
            format!(" and lead time ({})", key.lead_label())
        }
    );

    Message {
        subject: subject(&s.name, &subject_tail),
        body: b,
        attributes: vec![
            ("secret".to_string(), s.name.clone()),
            ("severity".to_string(), s.severity.as_str().to_string()),
            ("due".to_string(), due_date),
            ("kind".to_string(), key.kind().to_string()),
        ],
    }
}

/// A minimal message for a ledger row whose stored message is unreadable.
fn fallback_message(key: &ReminderKey) -> Message {
    let due_date = date(key.due);
    let tail = if key.is_overdue() {
        format!(": rotation OVERDUE since {due_date}")
    } else {
        format!(": rotation due {due_date}")
    };
    Message {
        subject: subject(&key.secret, &tail),
        body: format!(
            "{} is due for rotation on {}. See `keywarden status` for details.\n",
            key.secret,
            date_time(key.due)
        ),
        attributes: vec![
            ("secret".to_string(), key.secret.clone()),
            ("due".to_string(), due_date),
            ("kind".to_string(), key.kind().to_string()),
        ],
    }
}

/// Lower-case hex SHA-256.
fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Group and deduplication ids for a FIFO topic. The group is the secret (messages about one
/// secret stay in order); a name SNS would refuse (over 128 characters, or characters other
/// than letters, digits and ASCII punctuation) is replaced by its hash. The deduplication id
/// is the SHA-256 of (secret, due, lead): 64 characters, the same on every retry.
pub fn fifo_ids(key: &ReminderKey) -> FifoIds {
    let valid_group = key.secret.len() <= 128
        && !key.secret.is_empty()
        && key.secret.chars().all(|c| c.is_ascii_graphic());
    let group_id = if valid_group {
        key.secret.clone()
    } else {
        format!("secret-{}", sha256_hex(key.secret.as_bytes()))
    };
    let material = format!(
        "keywarden-reminder\n{}\n{}\n{}",
        key.secret, key.due, key.lead_seconds
    );
    FifoIds {
        group_id,
        deduplication_id: sha256_hex(material.as_bytes()),
    }
}

/// The delay before retry number `attempts` (1 after the first failure): exponential from
/// [`BACKOFF_BASE`], capped at [`BACKOFF_CAP`], with "equal jitter": half the delay fixed, the
/// other half scaled by `jitter` in `[0, 1]`.
pub fn backoff(attempts: u32, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    let full = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

// ---------------------------------------------------------------------------------------------
// The ledger: the `reminders` table of the store.
// ---------------------------------------------------------------------------------------------

/// A ledger row still to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    /// Its key.
    pub key: ReminderKey,
    /// Failed attempts so far.
    pub attempts: i64,
    /// The message to publish.
    pub message: Message,
}

/// The keys among `keys` that the ledger already holds (in any state).
pub fn ledger_known(store: &Store, keys: &[ReminderKey]) -> Result<Vec<ReminderKey>, StoreError> {
    store.with(
        |c| {
            let mut stmt = c.prepare_cached(
                "SELECT 1 FROM reminders WHERE secret = ?1 AND due = ?2 AND lead_seconds = ?3",
            )?;
            let mut found = Vec::new();
            for k in keys {
                if stmt
                    .query_row(params![k.secret, k.due, k.lead_seconds], |_| Ok(()))
                    .optional()?
                    .is_some()
                {
                    found.push(k.clone());
                }
            }
            Ok(found)
        },
        "read the reminder ledger",
    )
}

/// Records new reminders as `pending` in one durable transaction; rows already present are
/// left alone. Returns how many were inserted.
pub fn ledger_record(
    store: &Store,
    intents: &[(ReminderKey, Message)],
    now: i64,
) -> Result<usize, StoreError> {
    store.with(
        |c| {
            let tx = c.transaction()?;
            let mut inserted = 0;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO reminders
                       (secret, due, lead_seconds, kind, state, attempts, created_at, message)
                     VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?6)",
                )?;
                for (k, m) in intents {
                    let json = serde_json::to_string(m).unwrap_or_default();
                    inserted += stmt.execute(params![
                        k.secret,
                        k.due,
                        k.lead_seconds,
                        k.kind(),
                        now,
                        json
                    ])?;
                }
            }
            tx.commit()?;
            Ok(inserted)
        },
        "record reminder intents",
    )
}

/// Every pending row, in key order.
pub fn ledger_pending(store: &Store) -> Result<Vec<PendingRow>, StoreError> {
    store.with(
        |c| {
            let mut stmt = c.prepare(
                "SELECT secret, due, lead_seconds, attempts, message FROM reminders
                 WHERE state = 'pending' ORDER BY secret, due, lead_seconds",
            )?;
            let rows = stmt.query_map([], |r| {
                let key = ReminderKey {
                    secret: r.get(0)?,
                    due: r.get(1)?,
                    lead_seconds: r.get(2)?,
                };
                let message: Option<String> = r.get(4)?;
                let message = message
                    .and_then(|m| serde_json::from_str::<Message>(&m).ok())
                    .unwrap_or_else(|| fallback_message(&key));
                Ok(PendingRow {
                    key,
                    attempts: r.get(3)?,
                    message,
                })
            })?;
            rows.collect()
        },
        "read pending reminders",
    )
}

/// Marks a reminder sent with the SNS message id. Returns whether a pending row changed.
pub fn ledger_mark_sent(
    store: &Store,
    key: &ReminderKey,
    message_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    store.with(
        |c| {
            c.execute(
                "UPDATE reminders SET state = 'sent', sent_at = ?4, message_id = ?5, last_error = NULL
                 WHERE secret = ?1 AND due = ?2 AND lead_seconds = ?3 AND state = 'pending'",
                params![key.secret, key.due, key.lead_seconds, now, message_id],
            )
            .map(|n| n > 0)
        },
        "mark a reminder sent",
    )
}

/// Records a failed attempt; returns the attempts so far.
pub fn ledger_record_failure(
    store: &Store,
    key: &ReminderKey,
    error: &str,
) -> Result<i64, StoreError> {
    store.with(
        |c| {
            c.query_row(
                "UPDATE reminders SET attempts = attempts + 1, last_error = ?4
                 WHERE secret = ?1 AND due = ?2 AND lead_seconds = ?3
                 RETURNING attempts",
                params![key.secret, key.due, key.lead_seconds, error],
                |r| r.get(0),
            )
        },
        "record a failed reminder",
    )
}

// ---------------------------------------------------------------------------------------------
// The task.
// ---------------------------------------------------------------------------------------------

/// A pending reminder held by the task.
#[derive(Debug, Clone)]
struct Outbox {
    /// What to publish.
    message: Message,
    /// Failed attempts so far (from the ledger, then counted here).
    attempts: i64,
    /// Not before this instant.
    next_at: Instant,
    /// SNS accepted it but the ledger could not record that yet: only the record is retried.
    accepted: Option<String>,
}

/// The reminder task: evaluates the view, records intents, publishes them.
pub struct Reminders<N> {
    /// The SNS boundary.
    api: N,
    /// Configuration (`[reminders]`, inventory, `[access]`).
    config: Arc<Config>,
    /// Where statuses come from.
    view: SharedView,
    /// The ledger.
    store: Store,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Keys known to be in the ledger, so each evaluation only looks up new ones.
    known: HashSet<ReminderKey>,
    /// Pending reminders by key.
    outbox: BTreeMap<ReminderKey, Outbox>,
    /// The ledger's pending rows have been loaded.
    loaded: bool,
    /// The metadata poll whose view was last evaluated, and when the evaluation ran.
    evaluated: Option<(Option<Instant>, Instant)>,
}

impl<N: NotifyApi> Reminders<N> {
    /// A task for `config.reminders`; does nothing useful without it.
    pub fn new(
        api: N,
        config: Arc<Config>,
        view: SharedView,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Self {
        Reminders {
            api,
            config,
            view,
            store,
            metrics,
            known: HashSet::new(),
            outbox: BTreeMap::new(),
            loaded: false,
            evaluated: None,
        }
    }

    /// Loads the ledger's pending rows once; they are sent first thing after a restart.
    fn load_pending(&mut self) {
        if self.loaded {
            return;
        }
        match ledger_pending(&self.store) {
            Ok(rows) => {
                if !rows.is_empty() {
                    info!(
                        pending = rows.len(),
                        "Reminders recorded before a restart are still pending; sending them."
                    );
                }
                let now = Instant::now();
                for row in rows {
                    self.known.insert(row.key.clone());
                    self.outbox.insert(
                        row.key,
                        Outbox {
                            message: row.message,
                            attempts: row.attempts,
                            next_at: now,
                            accepted: None,
                        },
                    );
                }
                self.loaded = true;
            }
            Err(e) => error!(error = %e, "Cannot read pending reminders; will try again."),
        }
    }

    /// Computes the reminders due at `now` and records the new ones durably. Returns how many
    /// were recorded.
    pub fn evaluate(&mut self, now: i64) -> Result<usize, StoreError> {
        let Some(rc) = &self.config.reminders else {
            return Ok(0);
        };
        let topic = rc.sns_topic_arn.clone();
        let leads = rc.lead.clone();
        let candidates: Vec<ReminderKey> = {
            let view = self.view.read();
            due_reminders(view.secrets.values(), &leads, now)
                .into_iter()
                .filter(|k| !self.known.contains(k))
                .collect()
        };
        if candidates.is_empty() {
            return Ok(0);
        }
        // The ledger is read without holding the view's lock.
        let present = ledger_known(&self.store, &candidates)?;
        self.known.extend(present);
        let mut intents: Vec<(ReminderKey, Message)> = Vec::new();
        {
            let view = self.view.read();
            for key in candidates {
                if self.known.contains(&key) {
                    continue;
                }
                let Some(status) = view.secrets.get(&key.secret) else {
                    continue;
                };
                let access = match (&self.config.access, view.access.get(&key.secret)) {
                    (_, Some(f)) => AccessInfo::Facts(f),
                    (None, None) => AccessInfo::Off,
                    (Some(_), None) => AccessInfo::NotYet,
                };
                let ctx = MessageContext {
                    status,
                    spec: self.config.secrets.iter().find(|s| s.name == key.secret),
                    access,
                    now,
                };
                let message = render(&key, &ctx);
                intents.push((key, message));
            }
        }
        if intents.is_empty() {
            return Ok(0);
        }
        let inserted = ledger_record(&self.store, &intents, now)?;
        let at = Instant::now();
        for (key, message) in intents {
            info!(
                secret = %key.secret,
                due = %date(key.due),
                lead = %key.lead_label(),
                kind = key.kind(),
                topic = %topic,
                "Reminder recorded; publishing."
            );
            self.known.insert(key.clone());
            self.outbox.entry(key).or_insert(Outbox {
                message,
                attempts: 0,
                next_at: at,
                accepted: None,
            });
        }
        Ok(inserted)
    }

    /// Publishes every reminder whose time has come. Stops early on shutdown.
    async fn send_ready(&mut self, shutdown: &CancellationToken) {
        let Some(rc) = &self.config.reminders else {
            return;
        };
        let topic = rc.sns_topic_arn.clone();
        let fifo = is_fifo_topic(&topic);
        let ready: Vec<ReminderKey> = {
            let now = Instant::now();
            self.outbox
                .iter()
                .filter(|(_, o)| o.next_at <= now)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in ready {
            if shutdown.is_cancelled() {
                return;
            }
            let Some(entry) = self.outbox.get(&key).cloned() else {
                continue;
            };
            let message_id = match entry.accepted {
                Some(id) => id,
                None => {
                    let notification = Notification {
                        topic_arn: topic.clone(),
                        subject: entry.message.subject.clone(),
                        body: entry.message.body.clone(),
                        attributes: entry.message.attributes.clone(),
                        fifo: fifo.then(|| fifo_ids(&key)),
                    };
                    let result = tokio::select! {
                        r = self.api.publish(&notification) => r,
                        _ = shutdown.cancelled() => return,
                    };
                    match result {
                        Ok(id) => {
                            crate::rotation::failpoint::hit("reminder:published");
                            id
                        }
                        Err(e) => {
                            self.failed(&key, &e);
                            continue;
                        }
                    }
                }
            };
            self.accepted(&key, message_id);
        }
    }

    /// SNS accepted a reminder: record it, then count it.
    fn accepted(&mut self, key: &ReminderKey, message_id: String) {
        match ledger_mark_sent(&self.store, key, &message_id, Utc::now().timestamp()) {
            Ok(_) => {
                self.outbox.remove(key);
                self.metrics.count_reminder(&key.secret, &key.lead_label());
                info!(
                    secret = %key.secret,
                    due = %date(key.due),
                    lead = %key.lead_label(),
                    message_id = %message_id,
                    "Reminder sent."
                );
            }
            Err(e) => {
                // Only the record is retried: publishing again would send a duplicate.
                error!(secret = %key.secret, error = %e, "SNS accepted a reminder but the store could not record it; retrying the record.");
                if let Some(o) = self.outbox.get_mut(key) {
                    o.accepted = Some(message_id);
                    o.next_at = Instant::now() + BACKOFF_BASE;
                }
            }
        }
    }

    /// A publish failed: count it, record it, schedule the retry.
    fn failed(&mut self, key: &ReminderKey, e: &AwsError) {
        self.metrics.count_reminder_failure(&key.secret);
        let text: String = e.to_string().chars().take(500).collect();
        let stored = ledger_record_failure(&self.store, key, &text);
        let Some(o) = self.outbox.get_mut(key) else {
            return;
        };
        o.attempts = match stored {
            Ok(n) => n,
            Err(se) => {
                warn!(secret = %key.secret, error = %se, "Cannot record a failed reminder attempt.");
                o.attempts + 1
            }
        };
        let attempts = u32::try_from(o.attempts).unwrap_or(u32::MAX);
        let delay = backoff(attempts, fastrand::f64());
        o.next_at = Instant::now() + delay;
        warn!(
            secret = %key.secret,
            due = %date(key.due),
            lead = %key.lead_label(),
            kind = e.kind.as_str(),
            attempts,
            retry_in_ms = delay.as_millis() as u64,
            error = %e,
            "Publishing a reminder failed; it stays pending and will be retried."
        );
    }

    /// Whether the view should be evaluated now: a metadata poll finished since the last
    /// evaluation, or a poll period passed (time alone can make a reminder due).
    fn should_evaluate(&self) -> bool {
        let last_poll = self
            .view
            .read()
            .polls
            .get(crate::inventory::poller::SOURCE)
            .and_then(|h| h.last_success);
        match self.evaluated {
            None => last_poll.is_some(),
            Some((seen, at)) => {
                seen != last_poll || at.elapsed() >= self.config.poll.metadata_every
            }
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut wake = tokio::time::interval(WAKE_EVERY.min(self.config.poll.metadata_every));
        wake.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_retry = self.outbox.values().map(|o| o.next_at).min();
            tokio::select! {
                _ = wake.tick() => {}
                _ = async {
                    match next_retry {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = shutdown.cancelled() => {}
            }
            if shutdown.is_cancelled() {
                break;
            }
            self.load_pending();
            if self.should_evaluate() {
                let last_poll = self
                    .view
                    .read()
                    .polls
                    .get(crate::inventory::poller::SOURCE)
                    .and_then(|h| h.last_success);
                match self.evaluate(Utc::now().timestamp()) {
                    Ok(n) => {
                        if n > 0 {
                            debug!(recorded = n, "Reminder evaluation recorded new reminders.");
                        }
                        self.evaluated = Some((last_poll, Instant::now()));
                    }
                    Err(e) => error!(error = %e, "Cannot record reminders; will try again."),
                }
            }
            self.send_ready(&shutdown).await;
        }
        info!(
            pending = self.outbox.len(),
            "Reminder sender stopped; pending reminders stay recorded."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Severity, Strategy};
    use crate::domain::view::Managed;
    use std::path::Path;

    const DAY: i64 = 86_400;

    fn status(name: &str, due: Option<i64>) -> SecretStatus {
        SecretStatus {
            name: name.to_string(),
            id: format!("svc/{name}"),
            arn: Some(format!(
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/{name}-AbCdEf"
            )),
            managed: Managed::Inventory,
            severity: Severity::Critical,
            impact: "User auth compromised".to_string(),
            strategy: Strategy::DualKey,
            present: true,
            deletion_scheduled: false,
            last_rotated: due.map(|d| d - 90 * DAY),
            interval_seconds: Some(90 * DAY),
            due,
            overdue: false,
            scheduled: None,
            rotation_enabled: false,
            pending: false,
            last_accessed: None,
            current_version: Some("v1".to_string()),
            observed_at: 0,
        }
    }

    fn key(secret: &str, due: i64, lead_seconds: i64) -> ReminderKey {
        ReminderKey {
            secret: secret.to_string(),
            due,
            lead_seconds,
        }
    }

    #[test]
    fn due_reminders_table() {
        let due = 1_800_000_000;
        let d14 = Duration::from_secs(14 * 86_400);
        let d1 = Duration::from_secs(86_400);
        let l14 = 14 * DAY;
        let cases: Vec<(&str, Vec<Duration>, i64, Vec<i64>)> = vec![
            ("well before the lead", vec![d14], due - l14 - 1, vec![]),
            ("exactly at due - lead", vec![d14], due - l14, vec![l14]),
            ("just past due - lead", vec![d14], due - l14 + 1, vec![l14]),
            ("at the due date itself", vec![d14], due, vec![l14]),
            ("one second overdue", vec![d14], due + 1, vec![OVERDUE_LEAD]),
            (
                "long overdue",
                vec![d14],
                due + 400 * DAY,
                vec![OVERDUE_LEAD],
            ),
            (
                "two leads, first only",
                vec![d1, d14],
                due - 5 * DAY,
                vec![l14],
            ),
            ("two leads, both", vec![d1, d14], due - 3600, vec![DAY, l14]),
            (
                "two leads, overdue replaces both",
                vec![d1, d14],
                due + 10,
                vec![OVERDUE_LEAD],
            ),
        ];
        for (what, leads, now, expected) in cases {
            let s = status("A", Some(due));
            let got: Vec<i64> = due_reminders([&s], &leads, now)
                .into_iter()
                .map(|k| {
                    assert_eq!(k.secret, "A");
                    assert_eq!(k.due, due);
                    k.lead_seconds
                })
                .collect();
            let mut expected = expected;
            expected.sort();
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn due_reminders_skip_missing_and_undated_and_follow_rotation() {
        let due = 1_800_000_000;
        let leads = [Duration::from_secs(14 * 86_400)];
        let mut gone = status("GONE", Some(due));
        gone.present = false;
        let undated = status("UNDATED", None);
        let rotated = status("ROT", Some(due + 90 * DAY));
        let got = due_reminders([&gone, &undated, &rotated], &leads, due + 1);
        assert!(got.is_empty(), "{got:?}");
        // After a rotation the new due date is a new key: its own cycle of reminders.
        let got = due_reminders([&rotated], &leads, due + 90 * DAY - 13 * DAY);
        assert_eq!(got, vec![key("ROT", due + 90 * DAY, 14 * DAY)]);
    }

    fn config_with(extra: &str) -> Config {
        let text = format!(
            "[reminders]\nsns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n{extra}\n\
             [[secret]]\nname = \"JWT_SECRET\"\nid = \"svc/JWT_SECRET\"\nseverity = \"critical\"\n\
             consumers = [\"arn:aws:sts::123456789012:assumed-role/event-service-*/*\"]\n\
             window = \"cron(0 3 ? * TUE *)\"\n"
        );
        crate::config::parse(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn lead_message_has_every_field_and_the_checklist() {
        let config = config_with("");
        let due = 1_800_000_000; // 2027-01-15 08:00 UTC
        let now = due - 14 * DAY;
        let s = status("JWT_SECRET", Some(due));
        let m = render(
            &key("JWT_SECRET", due, 14 * DAY),
            &MessageContext {
                status: &s,
                spec: config.secrets.first(),
                access: AccessInfo::Off,
                now,
            },
        );
        assert_eq!(
            m.subject,
            "[keywarden] JWT_SECRET: rotation due 2027-01-15 (in 14 days)"
        );
        for needle in [
            "Secret:        JWT_SECRET",
            "Id:            svc/JWT_SECRET",
            "Due date:      2027-01-15",
            "Age:           76 days",
            "Interval:      90d",
            "Impact:        User auth compromised",
            "Severity:      critical",
            "Strategy:      dual-key",
            "  - arn:aws:sts::123456789012:assumed-role/event-service-*/*",
            "not available (access monitoring off)",
            "on-call",
            "backup of the current value",
            "pipeline is green",
            "AWSPREVIOUS",
            "window cron(0 3 ? * TUE *), next opening 2027-01-05 03:00 UTC",
            "Every consumer is known: 1 declared pattern(s)",
            "lead time (14d)",
        ] {
            assert!(
                m.body.contains(needle),
                "body lacks {needle:?}:\n{}",
                m.body
            );
        }
        assert_eq!(
            m.attributes,
            vec![
                ("secret".to_string(), "JWT_SECRET".to_string()),
                ("severity".to_string(), "critical".to_string()),
                ("due".to_string(), "2027-01-15".to_string()),
                ("kind".to_string(), "reminder".to_string()),
            ]
        );
    }

    #[test]
    fn overdue_message_and_access_facts() {
        let config = config_with("[access]\nlog_group = \"/aws/ct\"\n");
        let due = 1_800_000_000;
        let s = status("JWT_SECRET", Some(due));
        let facts = AccessFacts {
            undeclared_readers: vec!["arn:aws:iam::123456789012:user/mallory".to_string()],
            principals: 3,
            anomalies: 1,
        };
        let m = render(
            &key("JWT_SECRET", due, OVERDUE_LEAD),
            &MessageContext {
                status: &s,
                spec: config.secrets.first(),
                access: AccessInfo::Facts(&facts),
                now: due + 3 * DAY,
            },
        );
        assert_eq!(
            m.subject,
            "[keywarden] JWT_SECRET: rotation OVERDUE since 2027-01-15"
        );
        assert!(m.body.contains("overdue by 3 days"), "{}", m.body);
        assert!(m.body.contains("3 distinct principal(s)"), "{}", m.body);
        assert!(
            m.body
                .contains("  - arn:aws:iam::123456789012:user/mallory"),
            "{}",
            m.body
        );
        assert!(!m.body.contains("lead time"), "{}", m.body);
        assert_eq!(m.attributes[3], ("kind".to_string(), "overdue".to_string()));
        // Configured but silent access poller.
        let m = render(
            &key("JWT_SECRET", due, OVERDUE_LEAD),
            &MessageContext {
                status: &s,
                spec: None,
                access: AccessInfo::NotYet,
                now: due + 1,
            },
        );
        assert!(m.body.contains("not available yet"), "{}", m.body);
        assert!(m.body.contains("none declared"), "{}", m.body);
        assert!(m.body.contains("no window configured"), "{}", m.body);
    }

    #[test]
    fn subject_is_always_short_ascii_and_names_the_due_date() {
        let due = 1_800_000_000;
        for name in [
            "A".to_string(),
            "x".repeat(40),
            "y".repeat(87),
            "z".repeat(300),
            "ÄÖÜ-secret-with-ünïcode-".repeat(10),
            "event-service/".repeat(30),
        ] {
            let s = status(&name, Some(due));
            for (lead, now) in [
                (14 * DAY, due - 14 * DAY),
                (DAY, due - 600),
                (OVERDUE_LEAD, due + 100 * 365 * DAY),
            ] {
                let m = render(
                    &key(&name, due, lead),
                    &MessageContext {
                        status: &s,
                        spec: None,
                        access: AccessInfo::Off,
                        now,
                    },
                );
                assert!(
                    m.subject.len() < 100,
                    "{} chars: {}",
                    m.subject.len(),
                    m.subject
                );
                assert!(m.subject.is_ascii(), "{}", m.subject);
                assert!(m.subject.contains("2027-01-15"), "{}", m.subject);
                assert!(
                    !m.subject.contains('\n') && !m.subject.contains('\r'),
                    "{}",
                    m.subject
                );
                if lead == OVERDUE_LEAD {
                    assert!(m.subject.contains("OVERDUE"), "{}", m.subject);
                }
                // The attribute keeps the full name.
                assert_eq!(m.attributes[0].1, name);
            }
        }
    }

    #[test]
    fn span_words_table() {
        for (secs, words) in [
            (0, "less than an hour"),
            (3599, "less than an hour"),
            (3600, "1 hour"),
            (5 * 3600, "5 hours"),
            (35 * 3600, "35 hours"),
            (14 * DAY - 1, "14 days"),
            (14 * DAY, "14 days"),
            (-5, "less than an hour"),
        ] {
            assert_eq!(span_words(secs), words, "{secs}");
        }
    }

    #[test]
    fn fifo_ids_are_stable_bounded_and_distinct() {
        let a = fifo_ids(&key("JWT_SECRET", 100, 14 * DAY));
        assert_eq!(a, fifo_ids(&key("JWT_SECRET", 100, 14 * DAY)));
        assert_eq!(a.group_id, "JWT_SECRET");
        assert_eq!(a.deduplication_id.len(), 64);
        for other in [
            key("JWT_SECRET", 101, 14 * DAY),
            key("JWT_SECRET", 100, DAY),
            key("JWT_SECRET", 100, OVERDUE_LEAD),
            key("JWT_SECRETX", 100, 14 * DAY),
        ] {
            assert_ne!(a.deduplication_id, fifo_ids(&other).deduplication_id);
        }
        for name in ["x".repeat(129), "has space".to_string(), "ü".to_string()] {
            let ids = fifo_ids(&key(&name, 1, 1));
            assert!(ids.group_id.len() <= 128, "{}", ids.group_id);
            assert!(ids.group_id.chars().all(|c| c.is_ascii_graphic()));
        }
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        for (attempts, jitter, expected_ms) in [
            (1, 0.0, 500),
            (1, 1.0, 1000),
            (2, 0.0, 1000),
            (3, 1.0, 4000),
            (9, 1.0, 256_000),
            (10, 1.0, 300_000),
            (10, 0.0, 150_000),
            (u32::MAX, 1.0, 300_000),
            (0, 1.0, 1000),
        ] {
            assert_eq!(
                backoff(attempts, jitter).as_millis(),
                expected_ms,
                "{attempts} {jitter}"
            );
        }
    }

    #[test]
    fn ledger_records_once_and_marks_sent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let k = key("A", 100, 14 * DAY);
        let m = fallback_message(&k);
        assert_eq!(
            ledger_record(&store, &[(k.clone(), m.clone())], 1).unwrap(),
            1
        );
        assert_eq!(
            ledger_record(&store, &[(k.clone(), m.clone())], 2).unwrap(),
            0
        );
        assert_eq!(
            ledger_known(&store, &[k.clone(), key("B", 1, 1)]).unwrap(),
            vec![k.clone()]
        );
        assert_eq!(
            ledger_record_failure(&store, &k, "sns Publish failed").unwrap(),
            1
        );
        let pending = ledger_pending(&store).unwrap();
        assert_eq!(
            pending,
            vec![PendingRow {
                key: k.clone(),
                attempts: 1,
                message: m
            }]
        );
        assert!(ledger_mark_sent(&store, &k, "mid-1", 3).unwrap());
        assert!(!ledger_mark_sent(&store, &k, "mid-2", 4).unwrap());
        assert!(ledger_pending(&store).unwrap().is_empty());
        let id: String = store
            .with(
                |c| c.query_row("SELECT message_id FROM reminders", [], |r| r.get(0)),
                "t",
            )
            .unwrap();
        assert_eq!(id, "mid-1");
    }
}
