//! The admin API's JSON types: every JSON answer and body of the HTTP routes, shared by the
//! server (`http`) and its client (`cli::remote`), so both sides agree on field names through the
//! compiler instead of `json!{}` on one side and `.get("...")` on the other.
//!
//! Types the server only sends borrow what they show; types the CLI reads are owned and keep only
//! the fields it uses (serde ignores the rest). This module holds data only: it does no I/O and
//! must never import `http`'s serving code, `cli` or `daemon`.

use serde::{Deserialize, Serialize};

use crate::access::detect::Anomaly;
use crate::domain::AnomalyKind;
use crate::domain::view::{RotationView, SecretStatus};
use crate::incident::{Incident, Status, StepState};

/// The body of every JSON refusal: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in a sentence (never a secret value).
    pub error: String,
}

/// `202` of `POST /rotate/<secret>`: the journaled rotation and where to follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateAccepted {
    /// The rotation id (32 hex characters).
    pub rotation_id: String,
    /// The `secret` label.
    pub secret: String,
    /// The rotation state (`running` when accepted).
    pub status: String,
    /// The status URL, relative: `/rotations/<id>`.
    pub url: String,
}

/// Any refusal of `POST /rotate/<secret>`: the error, plus the active rotation when one is
/// already running (`409`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateRefused {
    /// Why the rotation was refused.
    pub error: String,
    /// The rotation that is already active, when that is the reason.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub active: Option<RotateAccepted>,
}

/// `GET /rotations`: the latest rotations, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationList<R> {
    /// The journaled rotations.
    pub rotations: Vec<R>,
}

/// `GET /rotations/<id>`: one journaled rotation with its timeline. The server sends the
/// journal's own types; the CLI reads them as [`RotationProgress`] and [`RotationEventLine`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationDetail<R, E> {
    /// The rotation's journal row, flattened into the answer.
    #[serde(flatten)]
    pub rotation: R,
    /// The rotation's events, oldest first.
    pub events: Vec<E>,
}

/// The fields of a journaled rotation the CLI follows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RotationProgress {
    /// `running`, `grace`, `done`, `failed`, ...
    pub state: String,
    /// The last error, if any.
    #[serde(default)]
    pub error: Option<String>,
    /// Version ids and times; the CLI reads only the finalize time.
    #[serde(default)]
    pub detail: ProgressDetail,
}

/// The part of a rotation's `detail` the CLI reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProgressDetail {
    /// When the previous version will be retired (seconds since the epoch), once in grace.
    #[serde(default)]
    pub finalize_after: Option<i64>,
    /// `operator` or `verify`, once rolled back.
    #[serde(default)]
    pub rolled_back_by: Option<String>,
    /// The check that rolled it back and its last value (`rolled_back_by = "verify"`).
    #[serde(default)]
    pub rolled_back_check: Option<ProgressCheck>,
    /// The watch of a guarded rotation (its `verify` checks after finish).
    #[serde(default)]
    pub verify: Option<ProgressVerify>,
}

/// A check and the value it last observed (never a secret value).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProgressCheck {
    /// The check's name.
    pub check: String,
    /// What it observed.
    pub value: String,
}

/// The part of a guarded rotation's watch state the CLI reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ProgressVerify {
    /// When the watch ends (seconds since the epoch), once finished.
    #[serde(default)]
    pub watch_until: Option<i64>,
    /// The watch is over.
    #[serde(default)]
    pub done: bool,
}

/// One event of a rotation's timeline as the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RotationEventLine {
    /// When (seconds since the epoch).
    pub at: i64,
    /// The step it concerns.
    pub step: String,
    /// How it went.
    pub outcome: String,
    /// A sentence (never a value).
    #[serde(default)]
    pub message: Option<String>,
}

/// `200` of `POST /rollback/<secret>`: the fields of the rotation core's rollback report the CLI
/// prints (the server sends the report itself).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RollbackDone {
    /// The secret label.
    pub secret: String,
    /// The version that was AWSCURRENT (now AWSPREVIOUS).
    pub from_version: String,
    /// The version that is AWSCURRENT now.
    pub to_version: String,
    /// The rotation whose finalize was cancelled, if one was in grace.
    #[serde(default)]
    pub rotation_id: Option<String>,
    /// The `on = "rollback"` hooks and their results.
    #[serde(default)]
    pub hooks: Vec<RollbackHookResult>,
}

/// One rollback hook's result in [`RollbackDone`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackHookResult {
    /// The hook's argv, joined by spaces.
    pub command: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// `202` (opened) or `200` (already open) of `POST /compromised/<secret>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentAccepted {
    /// The incident id (32 hex characters).
    pub incident_id: String,
    /// The `secret` label.
    pub secret: String,
    /// `open`, `resolved` or `failed`.
    pub status: Status,
    /// The status URL, relative: `/incidents/<id>`.
    pub url: String,
}

impl From<&Incident> for IncidentAccepted {
    fn from(inc: &Incident) -> IncidentAccepted {
        IncidentAccepted {
            incident_id: inc.incident_id.clone(),
            secret: inc.secret.clone(),
            status: inc.status,
            url: inc.url(),
        }
    }
}

/// The body a client may send with `POST /compromised/<secret>` (both fields optional).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompromiseBody {
    /// Why the secret is believed compromised.
    #[serde(default)]
    pub reason: Option<String>,
    /// Who reported it.
    #[serde(default)]
    pub reported_by: Option<String>,
}

/// `GET /incidents`: the latest incidents, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentList {
    /// One short entry per incident.
    pub incidents: Vec<IncidentSummary>,
}

/// The short form of an incident in `GET /incidents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentSummary {
    /// The incident id.
    pub incident_id: String,
    /// The `secret` label.
    pub secret: String,
    /// `open`, `resolved` or `failed`.
    pub status: Status,
    /// Why it was reported (absent from the anonymous summary).
    #[serde(default)]
    pub reason: String,
    /// Who reported it (absent from the anonymous summary).
    #[serde(default)]
    pub reported_by: String,
    /// Opened, seconds since the epoch.
    pub opened_at: i64,
    /// Closed, seconds since the epoch.
    pub closed_at: Option<i64>,
    /// The names of the steps that failed.
    pub failed_steps: Vec<String>,
    /// The status URL, relative.
    pub url: String,
}

impl From<&Incident> for IncidentSummary {
    fn from(inc: &Incident) -> IncidentSummary {
        IncidentSummary {
            incident_id: inc.incident_id.clone(),
            secret: inc.secret.clone(),
            status: inc.status,
            reason: inc.reason.clone(),
            reported_by: inc.reported_by.clone(),
            opened_at: inc.opened_at_ms / 1000,
            closed_at: inc.closed_at_ms.map(|t| t / 1000),
            failed_steps: inc
                .steps
                .iter()
                .filter(|s| s.state == StepState::Failed)
                .map(|s| s.name.clone())
                .collect(),
            url: inc.url(),
        }
    }
}

/// `GET /incidents/<id>`: the whole incident document plus its URLs. The server sends
/// `I` = `&Incident`; the CLI reads it with `I` = [`IncidentProgress`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentDetail<I> {
    /// The incident document, flattened into the answer.
    #[serde(flatten)]
    pub incident: I,
    /// The status URL, relative.
    pub url: String,
    /// The Markdown report's URL, relative.
    pub report_url: String,
}

impl<'a> From<&'a Incident> for IncidentDetail<&'a Incident> {
    fn from(inc: &'a Incident) -> IncidentDetail<&'a Incident> {
        IncidentDetail {
            incident: inc,
            url: inc.url(),
            report_url: format!("{}/report.md", inc.url()),
        }
    }
}

/// The fields of `GET /incidents/<id>` the CLI follows (read as `IncidentDetail<IncidentProgress>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IncidentProgress {
    /// The incident id.
    pub incident_id: String,
    /// `open`, `resolved` or `failed`.
    pub status: Status,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<IncidentStepLine>,
    /// The Markdown report file on the daemon's host, once written.
    #[serde(default)]
    pub report_md: Option<String>,
}

/// One step of an incident as the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IncidentStepLine {
    /// The step name (`rotate`, `audit`, `notify`, `report`).
    pub name: String,
    /// `pending`, `running`, `done`, `skipped` or `failed`.
    pub state: StepState,
    /// When it ended, milliseconds since the epoch.
    #[serde(default)]
    pub ended_at_ms: Option<i64>,
    /// What happened, in a sentence.
    #[serde(default)]
    pub message: Option<String>,
}

/// `GET /secrets`.
#[derive(Debug, Serialize)]
pub struct SecretsBody<'a> {
    /// When the answer was made (seconds since the epoch).
    pub generated_at: i64,
    /// Every watched secret.
    pub secrets: Vec<SecretEntry<'a>>,
}

/// One secret of `GET /secrets`: its status plus its rotation state.
#[derive(Debug, Serialize)]
pub struct SecretEntry<'a> {
    /// The status fields.
    #[serde(flatten)]
    pub status: &'a SecretStatus,
    /// The account it is read from (`""` for the daemon's own account before it is known).
    pub account: std::sync::Arc<str>,
    /// The region it is read from.
    pub region: std::sync::Arc<str>,
    /// Latest rotation and scheduler state, when there is any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<&'a RotationView>,
    /// When the scheduler plans to rotate it (seconds since the epoch, SPEC §11): the last
    /// opening of its window before the due date, else the first after it. `null` without a
    /// window (never rotated by the scheduler) or when it is not rotated by keywarden.
    pub planned: Option<i64>,
}

/// `GET /anomalies`.
#[derive(Debug, Serialize)]
pub struct AnomaliesBody<'a> {
    /// When the answer was made (seconds since the epoch).
    pub generated_at: i64,
    /// Log events skipped as not JSON, oversized or malformed, since start.
    pub skipped_records: u64,
    /// Already counted events read again (overlap re-reads, duplicate deliveries), since start.
    pub repeated_events: u64,
    /// Principals forgotten because a per-secret set was full, since start.
    pub principal_evictions: u64,
    /// Recent anomalies, newest first.
    pub anomalies: Vec<AnomalyItem<'a>>,
    /// Per secret with at least one anomaly since start: the count and the latest kind (what
    /// `keywarden status` shows; kept in the anonymous summary).
    pub per_secret: Vec<SecretAnomalies>,
}

/// Anomalies of one secret since the daemon started (`GET /anomalies`, `per_secret`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretAnomalies {
    /// The `secret` label.
    pub secret: String,
    /// Anomalies detected on it since the daemon started.
    pub count: u64,
    /// The kind of the latest one, while it is among the recent anomalies the daemon keeps.
    #[serde(default)]
    pub latest_kind: Option<AnomalyKind>,
    /// Its eventTime, seconds since the epoch.
    #[serde(default)]
    pub latest_at: Option<i64>,
}

/// The `per_secret` list (pure): counts from the access facts, the latest kind from the recent
/// anomalies (newest first); secrets with no anomaly are left out; sorted by name.
pub fn per_secret<'a>(
    counts: impl IntoIterator<Item = (&'a str, u64)>,
    recent: impl IntoIterator<Item = &'a Anomaly>,
) -> Vec<SecretAnomalies> {
    let mut latest: std::collections::HashMap<&str, &Anomaly> = std::collections::HashMap::new();
    for a in recent {
        latest.entry(a.secret.as_str()).or_insert(a);
    }
    let mut out: Vec<SecretAnomalies> = counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(secret, count)| {
            let last = latest.get(secret);
            SecretAnomalies {
                secret: secret.to_string(),
                count,
                latest_kind: last.map(|a| a.kind),
                latest_at: last.map(|a| a.time_ms.div_euclid(1000)),
            }
        })
        .collect();
    out.sort_by(|a, b| a.secret.cmp(&b.secret));
    out
}

/// What the CLI reads of `GET /anomalies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AnomalyCounts {
    /// Per secret: count since start and latest kind.
    #[serde(default)]
    pub per_secret: Vec<SecretAnomalies>,
}

/// One anomaly of `GET /anomalies`.
#[derive(Debug, Serialize)]
pub struct AnomalyItem<'a> {
    /// eventTime as RFC 3339.
    pub time: String,
    /// The anomaly.
    #[serde(flatten)]
    pub anomaly: &'a Anomaly,
}

/// What an anonymous read answer says in place of the details it leaves out.
pub const REDACTED_NOTE: &str = "summary: principals, IP addresses, event ids, reasons, reporters, messages and errors need Authorization: Bearer <admin token>";

/// Removes `keys` from a JSON object.
fn drop_keys(v: &mut serde_json::Value, keys: &[&str]) {
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
}

/// Applies `f` to each element of the array under `key`.
fn each(v: &mut serde_json::Value, key: &str, f: impl Fn(&mut serde_json::Value)) {
    if let Some(items) = v.get_mut(key).and_then(|a| a.as_array_mut()) {
        items.iter_mut().for_each(f);
    }
}

/// The anonymous form of a read answer (pure): what `route` shows without the admin token.
/// Summaries keep names, counts, kinds, states and times; they lose principals, IPs, event ids,
/// free-text details, reasons, reporters, step and event messages, and errors (which can name
/// database hosts). The incident document is reduced to an allowlist.
pub fn redact(route: Redact, v: &mut serde_json::Value) {
    match route {
        Redact::Secrets => each(v, "secrets", |s| {
            if let Some(r) = s.get_mut("rotation") {
                drop_keys(r, &["error", "waiting"]);
            }
        }),
        Redact::Anomalies => each(v, "anomalies", |a| {
            drop_keys(a, &["principal", "source_ip", "event_id", "detail"])
        }),
        Redact::Rotations => each(v, "rotations", |r| drop_keys(r, &["error"])),
        Redact::Rotation => {
            drop_keys(v, &["error"]);
            each(v, "events", |e| drop_keys(e, &["message"]));
        }
        Redact::Incidents => each(v, "incidents", |i| drop_keys(i, &["reason", "reported_by"])),
        Redact::Incident => {
            const KEEP: &[&str] = &[
                "incident_id",
                "secret",
                "strategy",
                "status",
                "opened_at_ms",
                "closed_at_ms",
                "steps",
                "rotation_id",
                "rotated_at",
                "url",
                "report_url",
            ];
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| KEEP.contains(&k.as_str()));
            }
            each(v, "steps", |step| {
                if let Some(o) = step.as_object_mut() {
                    o.retain(|k, _| {
                        ["name", "state", "started_at_ms", "ended_at_ms"].contains(&k.as_str())
                    });
                }
            });
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("details".into(), REDACTED_NOTE.into());
    }
}

/// The read answers [`redact`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redact {
    /// `GET /secrets`.
    Secrets,
    /// `GET /anomalies`.
    Anomalies,
    /// `GET /rotations`.
    Rotations,
    /// `GET /rotations/<id>`.
    Rotation,
    /// `GET /incidents`.
    Incidents,
    /// `GET /incidents/<id>`.
    Incident,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_refusal_reads_back_with_its_rotation() {
        let busy = RotateRefused {
            error: "a rotation of A is already running".into(),
            active: Some(RotateAccepted {
                rotation_id: "ab".into(),
                secret: "A".into(),
                status: "running".into(),
                url: "/rotations/ab".into(),
            }),
        };
        let text = serde_json::to_string(&busy).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in ["error", "rotation_id", "secret", "status", "url"] {
            assert!(v.get(key).is_some(), "{key} in {text}");
        }
        assert_eq!(serde_json::from_str::<RotateRefused>(&text).unwrap(), busy);
        let plain: RotateRefused = serde_json::from_str(r#"{"error":"no"}"#).unwrap();
        assert_eq!(plain.active, None);
    }

    #[test]
    fn anonymous_summaries_leave_out_the_details() {
        let mut inc = serde_json::json!({
            "incident_id": "i1", "secret": "A", "secret_id": "svc/a", "strategy": "postgres",
            "impact": "x", "reason": "pasted in chat", "reported_by": "bob", "status": "open",
            "opened_at_ms": 1, "closed_at_ms": null, "rotation_id": "r1",
            "steps": [{"name": "rotate", "state": "failed", "ended_at_ms": 2,
                       "message": "connect db.internal:5432 refused"}],
            "audit": {"principals": [{"principal": "arn:mallory", "source_ips": ["203.0.113.9"]}]},
            "todo": ["revoke arn:mallory"], "report_md": "/var/lib/x.md",
            "url": "/incidents/i1", "report_url": "/incidents/i1/report.md"
        });
        redact(Redact::Incident, &mut inc);
        let text = inc.to_string();
        for word in [
            "pasted",
            "bob",
            "db.internal",
            "mallory",
            "203.0.113.9",
            "/var/lib",
        ] {
            assert!(!text.contains(word), "{word} in {text}");
        }
        assert_eq!(inc["steps"][0]["state"], "failed");
        assert_eq!(inc["status"], "open");
        assert_eq!(inc["details"], REDACTED_NOTE);
        let mut list = serde_json::json!({"incidents": [{"incident_id": "i1", "reason": "r", "reported_by": "b", "status": "open"}]});
        redact(Redact::Incidents, &mut list);
        assert_eq!(
            list["incidents"][0],
            serde_json::json!({"incident_id": "i1", "status": "open"})
        );
        // The CLI still reads a summary without reason and reporter.
        let read: IncidentList = serde_json::from_value(serde_json::json!({"incidents": [{
            "incident_id": "i1", "secret": "A", "status": "open", "opened_at": 1,
            "closed_at": null, "failed_steps": [], "url": "/incidents/i1"}]}))
        .unwrap();
        assert_eq!(read.incidents[0].reason, "");
        let mut rot = serde_json::json!({"id": "r1", "state": "failed", "error": "db.internal down",
            "events": [{"at": 1, "step": "set", "outcome": "failed", "message": "db.internal"}]});
        redact(Redact::Rotation, &mut rot);
        assert!(!rot.to_string().contains("db.internal"), "{rot}");
        assert_eq!(rot["events"][0]["outcome"], "failed");
    }
}
