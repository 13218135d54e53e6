//! In-memory fakes of the four AWS traits, for in-process tests with paused time (issue #16).
//!
//! Compiled only with the `test-util` cargo feature, which `cargo test` turns on through the
//! self dev-dependency; a production build never contains it. Each fake is a cheap `Clone`
//! handle on shared state, so a test gives one clone to the code under test and keeps another
//! to arrange secrets, inject faults and read what was called.
//!
//! The fakes follow the AWS rules the daemon relies on: a staging label sits on one version
//! only; PutSecretValue with a ClientRequestToken that already names a version is idempotent
//! for the same value and fails with `ResourceExistsException` for another; moving AWSCURRENT
//! moves AWSPREVIOUS to the version it left; reads name a stage (and a version id) explicitly.
//!
//! Fault injection: [`Faults::fail_next`] makes the next N calls of an operation fail with an
//! [`AwsErrorKind`] before they do anything; [`Faults::lose_answer_next`] lets the next N calls
//! take effect and then fail (an answer lost on the way back). Every call is recorded as a
//! [`Call`] with the paused-clock instant it was made at, its target and its outcome; secret
//! values are never recorded and never printed.
//!
//! Must never import anything outside `crate::aws`: the fakes speak only the AWS vocabulary.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, AwsError, AwsErrorKind, CallOutcome, LogEvent, LogPage,
    LogsApi, Notification, NotifyApi, SecretMeta, SecretPage, SecretStages, SecretValue,
    SecretsMetadataApi, SecretsWriteApi, VersionMeta, VersionSelector, VersionedValue,
};

/// The AWS operations the fakes serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Secrets Manager ListSecrets.
    ListSecrets,
    /// Secrets Manager ListSecretVersionIds.
    ListSecretVersionIds,
    /// Secrets Manager DescribeSecret.
    DescribeSecret,
    /// Secrets Manager GetSecretValue.
    GetSecretValue,
    /// Secrets Manager PutSecretValue.
    PutSecretValue,
    /// Secrets Manager UpdateSecretVersionStage.
    UpdateSecretVersionStage,
    /// Secrets Manager RotateSecret.
    RotateSecret,
    /// SNS Publish.
    Publish,
    /// CloudWatch Logs FilterLogEvents.
    FilterLogEvents,
}

impl Op {
    /// The AWS operation name, as [`AwsError::operation`] carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::ListSecrets => "ListSecrets",
            Op::ListSecretVersionIds => "ListSecretVersionIds",
            Op::DescribeSecret => "DescribeSecret",
            Op::GetSecretValue => "GetSecretValue",
            Op::PutSecretValue => "PutSecretValue",
            Op::UpdateSecretVersionStage => "UpdateSecretVersionStage",
            Op::RotateSecret => "RotateSecret",
            Op::Publish => "Publish",
            Op::FilterLogEvents => "FilterLogEvents",
        }
    }

    /// The service the operation belongs to, as [`AwsError::service`] carries it.
    pub fn service(self) -> &'static str {
        match self {
            Op::Publish => "sns",
            Op::FilterLogEvents => "logs",
            _ => "secretsmanager",
        }
    }

    fn error(self, kind: AwsErrorKind, message: impl Into<String>) -> AwsError {
        AwsError {
            service: self.service(),
            operation: self.as_str(),
            kind,
            message: message.into(),
        }
    }
}

/// One recorded call. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The operation.
    pub op: Op,
    /// When it was made, on tokio's clock (paused in the tests).
    pub at: Instant,
    /// The secret id, topic ARN or log group it named.
    pub target: String,
    /// The ClientRequestToken (PutSecretValue, RotateSecret) or the stage moved
    /// (UpdateSecretVersionStage), if any.
    pub detail: Option<String>,
    /// How it ended.
    pub outcome: CallOutcome,
    /// The error kind, if it failed.
    pub error: Option<AwsErrorKind>,
}

/// One queued fault.
#[derive(Debug, Clone)]
struct Fault {
    /// The operation it hits.
    op: Op,
    /// Calls it still fails.
    remaining: u32,
    /// The kind of the error it returns.
    kind: AwsErrorKind,
    /// Whether the call takes effect before it fails (a lost answer).
    after_effect: bool,
    /// Whether the call panics instead (a bug in a task, to test what survives one).
    panic: bool,
}

/// The fault queue and call log one fake shares among its clones.
#[derive(Debug, Default)]
pub struct Faults {
    /// Faults not used up yet, oldest first.
    queue: Mutex<Vec<Fault>>,
    /// Every call, in order.
    calls: Mutex<Vec<Call>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// The next `n` calls of `op` fail with `kind` before they do anything.
    pub fn fail_next(&self, op: Op, n: u32, kind: AwsErrorKind) {
        self.push(op, n, kind, false);
    }

    /// The next `n` calls of `op` take effect, then fail with `kind` (the answer was lost).
    pub fn lose_answer_next(&self, op: Op, n: u32, kind: AwsErrorKind) {
        self.push(op, n, kind, true);
    }

    /// The next `n` calls of `op` panic (the calling task dies, as with a bug).
    pub fn panic_next(&self, op: Op, n: u32) {
        if n > 0 {
            lock(&self.queue).push(Fault {
                op,
                remaining: n,
                kind: AwsErrorKind::Service,
                after_effect: false,
                panic: true,
            });
        }
    }

    /// Drops every queued fault.
    pub fn clear(&self) {
        lock(&self.queue).clear();
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The calls of `op` so far, in order.
    pub fn calls_of(&self, op: Op) -> Vec<Call> {
        lock(&self.calls)
            .iter()
            .filter(|c| c.op == op)
            .cloned()
            .collect()
    }

    /// How many calls of `op` were made.
    pub fn count(&self, op: Op) -> usize {
        lock(&self.calls).iter().filter(|c| c.op == op).count()
    }

    fn push(&self, op: Op, n: u32, kind: AwsErrorKind, after_effect: bool) {
        if n > 0 {
            lock(&self.queue).push(Fault {
                op,
                remaining: n,
                kind,
                after_effect,
                panic: false,
            });
        }
    }

    /// Takes one use of the oldest fault queued for `op`, if any.
    fn take(&self, op: Op) -> Option<Fault> {
        let mut queue = lock(&self.queue);
        let i = queue.iter().position(|f| f.op == op)?;
        let fault = queue[i].clone();
        queue[i].remaining -= 1;
        if queue[i].remaining == 0 {
            queue.remove(i);
        }
        Some(fault)
    }

    /// Runs one call of `op` on `target`: applies a queued fault around `effect` and records
    /// the call.
    fn run<T>(
        &self,
        op: Op,
        target: &str,
        detail: Option<&str>,
        effect: impl FnOnce() -> Result<T, AwsError>,
    ) -> Result<T, AwsError> {
        let injected = |f: &Fault| {
            Err(op.error(
                f.kind,
                format!("injected fault: {} ({})", op.as_str(), f.kind.as_str()),
            ))
        };
        let result = match self.take(op) {
            Some(f) if f.panic => panic!("injected panic: {}", op.as_str()),
            Some(f) if !f.after_effect => injected(&f),
            Some(f) => effect().and_then(|_| injected(&f)),
            None => effect(),
        };
        lock(&self.calls).push(Call {
            op,
            at: Instant::now(),
            target: target.to_string(),
            detail: detail.map(str::to_string),
            outcome: CallOutcome::of(&result),
            error: result.as_ref().err().map(|e| e.kind),
        });
        result
    }
}

/// One version of a fake secret.
#[derive(Debug, Clone)]
struct Version {
    /// VersionId.
    id: String,
    /// VersionStages.
    stages: Vec<String>,
    /// The value.
    value: SecretValue,
    /// CreatedDate.
    created: DateTime<Utc>,
}

/// One fake secret.
#[derive(Debug, Clone)]
struct Secret {
    /// What ListSecrets reports, except the versions (computed from `versions`).
    meta: SecretMeta,
    /// Every version, oldest first, labelled or not.
    versions: Vec<Version>,
}

impl Secret {
    fn labelled(&self) -> Vec<(String, Vec<String>)> {
        let mut v: Vec<(String, Vec<String>)> = self
            .versions
            .iter()
            .filter(|v| !v.stages.is_empty())
            .map(|v| (v.id.clone(), v.stages.clone()))
            .collect();
        v.sort();
        v
    }

    fn holder(&self, stage: &str) -> Option<usize> {
        self.versions
            .iter()
            .position(|v| v.stages.iter().any(|s| s == stage))
    }

    fn version(&self, id: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.id == id)
    }
}

/// The state behind [`FakeSecrets`].
#[derive(Debug, Default)]
struct SecretsState {
    /// Secrets by name.
    secrets: BTreeMap<String, Secret>,
    /// Versions created so far (for generated version ids).
    serial: u64,
}

impl SecretsState {
    /// The secret named by `secret_id` (its name or its ARN).
    fn find(&mut self, op: Op, secret_id: &str) -> Result<&mut Secret, AwsError> {
        let name = self
            .secrets
            .iter()
            .find(|(n, s)| *n == secret_id || s.meta.arn == secret_id)
            .map(|(n, _)| n.clone());
        name.and_then(|n| self.secrets.get_mut(&n)).ok_or_else(|| {
            op.error(
                AwsErrorKind::NotFound,
                format!("ResourceNotFoundException: Secrets Manager can't find the specified secret {secret_id}"),
            )
        })
    }
}

/// A fake Secrets Manager: implements [`SecretsMetadataApi`] and [`SecretsWriteApi`].
#[derive(Debug, Clone, Default)]
pub struct FakeSecrets {
    /// The secrets.
    state: Arc<Mutex<SecretsState>>,
    /// Faults and the call log.
    faults: Arc<Faults>,
}

impl FakeSecrets {
    /// An empty fake.
    pub fn new() -> FakeSecrets {
        FakeSecrets::default()
    }

    /// Fault injection and the call log.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Creates the secret `name` with one version carrying AWSCURRENT; returns its version id.
    /// An existing secret of that name is replaced.
    pub fn create(&self, name: &str, value: &str) -> String {
        let mut st = lock(&self.state);
        st.serial += 1;
        let id = format!("{:08x}-0000-4000-8000-{:012x}", st.serial, st.serial);
        let now = Utc::now();
        let secret = Secret {
            meta: SecretMeta {
                arn: format!(
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-Fk{:04}",
                    st.serial % 10_000
                ),
                name: name.to_string(),
                created: Some(now),
                ..SecretMeta::default()
            },
            versions: vec![Version {
                id: id.clone(),
                stages: vec![AWSCURRENT.to_string()],
                value: SecretValue::new(value.to_string()),
                created: now,
            }],
        };
        st.secrets.insert(name.to_string(), secret);
        id
    }

    /// Changes what ListSecrets reports about `name` (dates, rotation rules); the versions
    /// always come from the stored versions. Returns false if there is no such secret.
    pub fn edit_meta(&self, name: &str, f: impl FnOnce(&mut SecretMeta)) -> bool {
        match lock(&self.state).secrets.get_mut(name) {
            Some(s) => {
                f(&mut s.meta);
                true
            }
            None => false,
        }
    }

    /// The ARN of `name`.
    pub fn arn(&self, name: &str) -> Option<String> {
        lock(&self.state)
            .secrets
            .get(name)
            .map(|s| s.meta.arn.clone())
    }

    /// Every version of `name` (labelled or not) with its stages, oldest first.
    pub fn versions(&self, name: &str) -> Vec<(String, Vec<String>)> {
        lock(&self.state)
            .secrets
            .get(name)
            .map(|s| {
                s.versions
                    .iter()
                    .map(|v| (v.id.clone(), v.stages.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value of version `version_id` of `name`, without recording a call.
    pub fn value_of(&self, name: &str, version_id: &str) -> Option<SecretValue> {
        let st = lock(&self.state);
        let s = st.secrets.get(name)?;
        s.versions
            .iter()
            .find(|v| v.id == version_id)
            .map(|v| v.value.clone())
    }

    /// The version carrying `stage` on `name` and its value, without recording a call.
    pub fn staged(&self, name: &str, stage: &str) -> Option<(String, SecretValue)> {
        let st = lock(&self.state);
        let s = st.secrets.get(name)?;
        let v = &s.versions[s.holder(stage)?];
        Some((v.id.clone(), v.value.clone()))
    }

    fn with<T>(
        &self,
        op: Op,
        secret_id: &str,
        detail: Option<&str>,
        f: impl FnOnce(&mut Secret) -> Result<T, AwsError>,
    ) -> Result<T, AwsError> {
        self.faults.run(op, secret_id, detail, || {
            let mut st = lock(&self.state);
            f(st.find(op, secret_id)?)
        })
    }
}

fn invalid(op: Op, message: String) -> AwsError {
    op.error(
        AwsErrorKind::Service,
        format!("InvalidParameterException: {message}"),
    )
}

/// The page size of the fake ListSecrets (the adapter asks for 100).
const SECRETS_PAGE: usize = 100;

impl SecretsMetadataApi for FakeSecrets {
    async fn list_secrets_page(&self, next_token: Option<String>) -> Result<SecretPage, AwsError> {
        let op = Op::ListSecrets;
        self.faults.run(op, "", None, || {
            let start = match next_token.as_deref() {
                None => 0,
                Some(t) => t.parse::<usize>().map_err(|_| {
                    invalid(
                        op,
                        format!("the NextToken {t:?} was not issued by this fake"),
                    )
                })?,
            };
            let st = lock(&self.state);
            let secrets: Vec<SecretMeta> = st
                .secrets
                .values()
                .skip(start)
                .take(SECRETS_PAGE)
                .map(|s| SecretMeta {
                    versions: Some(s.labelled()),
                    ..s.meta.clone()
                })
                .collect();
            let end = start + secrets.len();
            Ok(SecretPage {
                secrets,
                next_token: (end < st.secrets.len()).then(|| end.to_string()),
            })
        })
    }

    async fn list_secret_versions(&self, secret_id: &str) -> Result<Vec<VersionMeta>, AwsError> {
        // Without IncludeDeprecated, AWS lists only the versions that carry a label.
        self.with(Op::ListSecretVersionIds, secret_id, None, |s| {
            Ok(s.versions
                .iter()
                .filter(|v| !v.stages.is_empty())
                .map(|v| VersionMeta {
                    id: v.id.clone(),
                    stages: v.stages.clone(),
                    created: Some(v.created),
                })
                .collect())
        })
    }
}

impl SecretsWriteApi for FakeSecrets {
    async fn describe(&self, secret_id: &str) -> Result<SecretStages, AwsError> {
        self.with(Op::DescribeSecret, secret_id, None, |s| {
            Ok(SecretStages {
                arn: s.meta.arn.clone(),
                name: s.meta.name.clone(),
                versions: s.labelled(),
                rotation_enabled: s.meta.rotation_enabled,
                rotation_lambda: None,
                last_rotated: s.meta.last_rotated,
            })
        })
    }

    async fn get_value(
        &self,
        secret_id: &str,
        which: VersionSelector<'_>,
    ) -> Result<VersionedValue, AwsError> {
        let op = Op::GetSecretValue;
        let detail = match which {
            VersionSelector::Stage(stage) => stage.to_string(),
            VersionSelector::IdAndStage(id, stage) => format!("{id}:{stage}"),
        };
        self.with(op, secret_id, Some(&detail), |s| {
            let found = match which {
                VersionSelector::Stage(stage) => s.holder(stage),
                VersionSelector::IdAndStage(id, stage) => s
                    .version(id)
                    .filter(|&i| s.versions[i].stages.iter().any(|x| x == stage)),
            };
            let v = found.map(|i| &s.versions[i]).ok_or_else(|| {
                op.error(
                    AwsErrorKind::NotFound,
                    format!("ResourceNotFoundException: Secrets Manager can't find the specified secret value for {detail}"),
                )
            })?;
            Ok(VersionedValue {
                version_id: v.id.clone(),
                value: v.value.clone(),
            })
        })
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretValue,
    ) -> Result<String, AwsError> {
        let op = Op::PutSecretValue;
        self.with(op, secret_id, Some(token), |s| {
            if !(32..=64).contains(&token.len()) {
                return Err(invalid(
                    op,
                    format!(
                        "ClientRequestToken must be 32 to 64 characters, not {}",
                        token.len()
                    ),
                ));
            }
            if let Some(i) = s.version(token) {
                // Idempotent for the same value; AWS refuses another value under the token.
                return if s.versions[i].value == *value {
                    Ok(token.to_string())
                } else {
                    Err(op.error(
                        AwsErrorKind::Service,
                        format!("ResourceExistsException: a version with ClientRequestToken {token} already exists with another value"),
                    ))
                };
            }
            // A label sits on one version only: AWSPENDING leaves its previous holder.
            if let Some(i) = s.holder(AWSPENDING) {
                s.versions[i].stages.retain(|x| x != AWSPENDING);
            }
            s.versions.push(Version {
                id: token.to_string(),
                stages: vec![AWSPENDING.to_string()],
                value: value.clone(),
                created: Utc::now(),
            });
            Ok(token.to_string())
        })
    }

    async fn update_stage(
        &self,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<(), AwsError> {
        let op = Op::UpdateSecretVersionStage;
        self.with(op, secret_id, Some(stage), |s| {
            let holder = s.holder(stage);
            if let Some(from) = remove_from {
                let i = s.version(from).ok_or_else(|| {
                    invalid(op, format!("RemoveFromVersionId {from} does not exist"))
                })?;
                if holder != Some(i) {
                    return Err(invalid(
                        op,
                        format!("the label {stage} is not attached to version {from}"),
                    ));
                }
            }
            let Some(to) = move_to else {
                let Some(i) = holder.filter(|_| remove_from.is_some()) else {
                    return Err(invalid(
                        op,
                        "either MoveToVersionId or RemoveFromVersionId is required".to_string(),
                    ));
                };
                s.versions[i].stages.retain(|x| x != stage);
                return Ok(());
            };
            let target = s
                .version(to)
                .ok_or_else(|| invalid(op, format!("MoveToVersionId {to} does not exist")))?;
            if holder == Some(target) {
                return Ok(());
            }
            if let Some(h) = holder {
                if remove_from.is_none() {
                    return Err(invalid(
                        op,
                        format!("the label {stage} is attached to version {}: RemoveFromVersionId is required", s.versions[h].id),
                    ));
                }
                s.versions[h].stages.retain(|x| x != stage);
            }
            s.versions[target].stages.push(stage.to_string());
            // AWS moves AWSPREVIOUS to the version AWSCURRENT left.
            if stage == AWSCURRENT {
                if let Some(h) = holder {
                    if let Some(p) = s.holder(AWSPREVIOUS) {
                        s.versions[p].stages.retain(|x| x != AWSPREVIOUS);
                    }
                    s.versions[h].stages.push(AWSPREVIOUS.to_string());
                }
                s.meta.last_rotated = Some(Utc::now());
            }
            Ok(())
        })
    }

    async fn rotate_secret(&self, secret_id: &str, token: &str) -> Result<(), AwsError> {
        // The fake has no Lambda to run: RotateSecret answers as AWS does for a secret without
        // a rotation function.
        let op = Op::RotateSecret;
        self.with(op, secret_id, Some(token), |_| {
            Err(op.error(
                AwsErrorKind::Service,
                "InvalidRequestException: No Lambda rotation function ARN is associated with this secret.",
            ))
        })
    }
}

/// A fake SNS: implements [`NotifyApi`]. Notifications carry no secret value, so the fake keeps
/// every message it accepted.
#[derive(Debug, Clone, Default)]
pub struct FakeNotify {
    /// Accepted messages with their MessageId, in order (FIFO duplicates excluded).
    delivered: Arc<Mutex<Vec<(String, Notification)>>>,
    /// FIFO deduplication ids seen, with the MessageId they got.
    dedup: Arc<Mutex<BTreeMap<String, String>>>,
    /// Faults and the call log.
    faults: Arc<Faults>,
}

impl FakeNotify {
    /// An empty fake.
    pub fn new() -> FakeNotify {
        FakeNotify::default()
    }

    /// Fault injection and the call log.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The accepted messages with their MessageId, in order.
    pub fn delivered(&self) -> Vec<(String, Notification)> {
        lock(&self.delivered).clone()
    }
}

impl NotifyApi for FakeNotify {
    async fn publish(&self, n: &Notification) -> Result<String, AwsError> {
        let op = Op::Publish;
        self.faults.run(op, &n.topic_arn, None, || {
            if n.subject.len() >= 100 || !n.subject.is_ascii() {
                return Err(invalid(
                    op,
                    "Subject must be ASCII and shorter than 100 characters".to_string(),
                ));
            }
            if super::is_fifo_topic(&n.topic_arn) != n.fifo.is_some() {
                return Err(invalid(
                    op,
                    "MessageGroupId and MessageDeduplicationId are required for FIFO topics only"
                        .to_string(),
                ));
            }
            let mut delivered = lock(&self.delivered);
            if let Some(ids) = &n.fifo
                && let Some(id) = lock(&self.dedup).get(&ids.deduplication_id)
            {
                return Ok(id.clone());
            }
            let id = format!("fake-message-{}", delivered.len() + 1);
            if let Some(ids) = &n.fifo {
                lock(&self.dedup).insert(ids.deduplication_id.clone(), id.clone());
            }
            delivered.push((id.clone(), n.clone()));
            Ok(id)
        })
    }
}

/// A fake CloudWatch Logs: implements [`LogsApi`] over events a test adds.
#[derive(Debug, Clone)]
pub struct FakeLogs {
    /// Events by log group, in the order added.
    groups: Arc<Mutex<BTreeMap<String, Vec<LogEvent>>>>,
    /// Events per FilterLogEvents page.
    page_size: usize,
    /// Faults and the call log.
    faults: Arc<Faults>,
}

impl Default for FakeLogs {
    fn default() -> FakeLogs {
        FakeLogs::new(50)
    }
}

impl FakeLogs {
    /// An empty fake answering pages of `page_size` events (at least one).
    pub fn new(page_size: usize) -> FakeLogs {
        FakeLogs {
            groups: Arc::default(),
            page_size: page_size.max(1),
            faults: Arc::default(),
        }
    }

    /// Fault injection and the call log.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Creates `log_group` if needed and adds `events` to it.
    pub fn add_events(&self, log_group: &str, events: impl IntoIterator<Item = LogEvent>) {
        lock(&self.groups)
            .entry(log_group.to_string())
            .or_default()
            .extend(events);
    }
}

impl LogsApi for FakeLogs {
    async fn filter_log_events_page(
        &self,
        log_group: &str,
        start_ms: i64,
        end_ms: i64,
        next_token: Option<String>,
    ) -> Result<LogPage, AwsError> {
        let op = Op::FilterLogEvents;
        self.faults.run(op, log_group, None, || {
            let groups = lock(&self.groups);
            let events = groups.get(log_group).ok_or_else(|| {
                op.error(
                    AwsErrorKind::NotFound,
                    format!("ResourceNotFoundException: The specified log group {log_group} does not exist."),
                )
            })?;
            let start = match next_token.as_deref() {
                None => 0,
                Some(t) => t.parse::<usize>().map_err(|_| {
                    invalid(op, format!("the nextToken {t:?} was not issued by this fake"))
                })?,
            };
            let matching: Vec<&LogEvent> = events
                .iter()
                .filter(|e| (start_ms..=end_ms).contains(&e.timestamp_ms))
                .collect();
            let page: Vec<LogEvent> = matching
                .iter()
                .skip(start)
                .take(self.page_size)
                .map(|e| (*e).clone())
                .collect();
            let end = start + page.len();
            Ok(LogPage {
                events: page,
                next_token: (end < matching.len()).then(|| end.to_string()),
            })
        })
    }
}

/// The distinct ClientRequestTokens of the recorded PutSecretValue calls, in first-seen order.
pub fn put_tokens(calls: &[Call]) -> Vec<String> {
    let mut seen = HashSet::new();
    calls
        .iter()
        .filter(|c| c.op == Op::PutSecretValue)
        .filter_map(|c| c.detail.clone())
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "keywarden-0123456789abcdef0123456789abcdef";

    #[tokio::test]
    async fn put_pending_is_idempotent_for_one_value_and_refuses_another() {
        let fake = FakeSecrets::new();
        fake.create("app/x", "v0");
        let v1 = SecretValue::new("v1".into());
        assert_eq!(fake.put_pending("app/x", TOKEN, &v1).await.unwrap(), TOKEN);
        assert_eq!(fake.put_pending("app/x", TOKEN, &v1).await.unwrap(), TOKEN);
        let e = fake
            .put_pending("app/x", TOKEN, &SecretValue::new("v2".into()))
            .await
            .unwrap_err();
        assert_eq!(e.kind, AwsErrorKind::Service);
        assert!(e.message.starts_with("ResourceExistsException"), "{e}");
        assert_eq!(fake.value_of("app/x", TOKEN), Some(v1));
        let v = SecretValue::new("v".into());
        assert!(fake.put_pending("app/x", "short", &v).await.is_err());
    }

    #[tokio::test]
    async fn moving_awscurrent_moves_awsprevious_and_needs_remove_from() {
        let fake = FakeSecrets::new();
        let old = fake.create("app/x", "v0");
        fake.put_pending("app/x", TOKEN, &SecretValue::new("v1".into()))
            .await
            .unwrap();
        assert!(
            fake.update_stage("app/x", AWSCURRENT, Some(TOKEN), None)
                .await
                .is_err()
        );
        fake.update_stage("app/x", AWSCURRENT, Some(TOKEN), Some(&old))
            .await
            .unwrap();
        let st = fake.describe("app/x").await.unwrap();
        assert!(st.has(TOKEN, AWSCURRENT) && st.has(TOKEN, AWSPENDING));
        assert!(st.has(&old, AWSPREVIOUS));
        fake.update_stage("app/x", AWSPENDING, None, Some(TOKEN))
            .await
            .unwrap();
        let v = fake
            .get_value("app/x", VersionSelector::Stage(AWSCURRENT))
            .await
            .unwrap();
        assert_eq!((v.version_id.as_str(), v.value.expose()), (TOKEN, "v1"));
        let by_id = fake
            .get_value("app/x", VersionSelector::IdAndStage(TOKEN, AWSPENDING))
            .await
            .unwrap_err();
        assert_eq!(by_id.kind, AwsErrorKind::NotFound);
    }

    #[tokio::test]
    async fn faults_fail_the_next_calls_and_are_recorded() {
        let fake = FakeSecrets::new();
        fake.create("app/x", "v0");
        fake.faults()
            .fail_next(Op::DescribeSecret, 2, AwsErrorKind::Throttled);
        fake.faults()
            .lose_answer_next(Op::PutSecretValue, 1, AwsErrorKind::Timeout);
        for want in [
            Some(AwsErrorKind::Throttled),
            Some(AwsErrorKind::Throttled),
            None,
        ] {
            assert_eq!(fake.describe("app/x").await.err().map(|e| e.kind), want);
        }
        let v = SecretValue::new("v1".into());
        let lost = fake.put_pending("app/x", TOKEN, &v).await.unwrap_err();
        assert_eq!(lost.kind, AwsErrorKind::Timeout);
        assert_eq!(
            fake.value_of("app/x", TOKEN),
            Some(v),
            "the write took effect"
        );
        let calls = fake.faults().calls();
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[0].outcome, CallOutcome::Throttled);
        assert_eq!(calls[3].detail.as_deref(), Some(TOKEN));
        assert!(!format!("{calls:?}").contains("v1"), "no value in the log");
    }

    #[tokio::test]
    async fn fifo_publishes_deduplicate_and_logs_page() {
        let sns = FakeNotify::new();
        let n = Notification {
            topic_arn: "arn:aws:sns:us-east-1:1:t.fifo".into(),
            subject: "s".into(),
            body: "b".into(),
            attributes: vec![],
            fifo: Some(super::super::FifoIds {
                group_id: "g".into(),
                deduplication_id: "d".into(),
            }),
        };
        let a = sns.publish(&n).await.unwrap();
        assert_eq!(sns.publish(&n).await.unwrap(), a);
        assert_eq!(sns.delivered().len(), 1);
        assert!(
            sns.publish(&Notification { fifo: None, ..n })
                .await
                .is_err()
        );

        let logs = FakeLogs::new(2);
        logs.add_events(
            "g",
            (0..5).map(|i| LogEvent {
                event_id: i.to_string(),
                timestamp_ms: i,
                message: "{}".into(),
            }),
        );
        let p1 = logs.filter_log_events_page("g", 1, 4, None).await.unwrap();
        assert_eq!(p1.events.len(), 2);
        let p2 = logs
            .filter_log_events_page("g", 1, 4, p1.next_token)
            .await
            .unwrap();
        assert_eq!(p2.events.len(), 2);
        assert_eq!(p2.next_token, None);
        let missing = logs.filter_log_events_page("h", 0, 1, None).await;
        assert_eq!(missing.unwrap_err().kind, AwsErrorKind::NotFound);
    }
}
