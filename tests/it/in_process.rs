//! In-process tests with paused time (issue #16): the rotation core and the incident service run
//! over the in-memory AWS fakes of `keywarden::aws::fake` (the `test-util` feature), so retries,
//! backoff and incident steps are checked to the millisecond without moto or the binary.
//!
//! Only the library's public API is used. The binary+moto tests keep what only end-to-end can
//! show (the HTTP API, crashes, the real adapters).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use keywarden::aws::fake::{FakeLogs, FakeNotify, FakeSecrets, Op, put_tokens};
use keywarden::aws::{AWSCURRENT, AwsErrorKind, CallOutcome, SecretValue, SecretsWriteApi};
use keywarden::incident::{Incident, Incidents, Opened, STEPS, StepState};
use keywarden::rotation::journal::{Event, EventOutcome, Rotation, State, Step, Trigger};
use keywarden::rotation::{
    FIRST_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF, MAX_TRANSIENT_ATTEMPTS, RequestOptions, RotationCore,
};
use keywarden::store::Store;
use keywarden::telemetry::Metrics;

/// The secret every rotation test rotates.
const SECRET_ID: &str = "app/r";

/// Paused time a test may spend waiting for a rotation or an incident before it gives up.
const PATIENCE: Duration = Duration::from_secs(3600);

/// The configuration of one `random` secret `R` (id [`SECRET_ID`]), its store in `dir`.
fn rotation_config(dir: &Path) -> keywarden::config::Config {
    let text = format!(
        "[state]\npath = \"{}\"\n\
         [[secret]]\nname = \"R\"\nid = \"{SECRET_ID}\"\nrotation = {{ strategy = \"random\" }}\n",
        dir.join("s.db").display()
    );
    keywarden::config::parse(&text, &dir.join("k.toml")).unwrap()
}

/// A rotation core over `fake`, with its metrics and the directory holding its store.
fn core_over(
    fake: &FakeSecrets,
) -> (
    Arc<RotationCore<FakeSecrets>>,
    CancellationToken,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(rotation_config(dir.path()));
    let store = Store::open(&config.state.path).unwrap();
    let stop = CancellationToken::new();
    let core = RotationCore::new(
        fake.clone(),
        store,
        config,
        Default::default(),
        Arc::new(Metrics::new()),
        stop.clone(),
    );
    (core, stop, dir)
}

/// Waits in paused time until rotation `id` is in one of `states`.
async fn wait_rotation<A: SecretsWriteApi>(
    core: &RotationCore<A>,
    id: &str,
    states: &[State],
) -> (Rotation, Vec<Event>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (r, events) = core.status(id).unwrap().unwrap();
        if states.contains(&r.state) {
            return (r, events);
        }
        assert!(
            Instant::now() < deadline,
            "rotation {id} never reached {states:?}: {r:?} {events:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The documented wait before attempt `attempt + 1` of a step (`attempt` starts at 1).
fn rotation_backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << (attempt - 1).min(10))
        .min(MAX_BACKOFF)
}

/// When each attempt of a step that keeps failing starts, counted from the first one.
fn attempt_offsets(attempts: u32) -> Vec<Duration> {
    let mut at = Duration::ZERO;
    let mut out = vec![at];
    for a in 1..attempts {
        at += rotation_backoff(a);
        out.push(at);
    }
    out
}

/// The offsets of the recorded calls of `op` from `start`.
fn offsets(fake: &FakeSecrets, op: Op, start: Instant) -> Vec<Duration> {
    fake.faults()
        .calls_of(op)
        .iter()
        .map(|c| c.at - start)
        .collect()
}

fn outcomes(events: &[Event], outcome: EventOutcome) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.outcome == outcome)
        .map(|e| e.step.as_str())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn throttled_put_secret_value_is_retried_after_the_documented_backoff() {
    const THROTTLED: u32 = 3;
    let fake = FakeSecrets::new();
    let before = fake.create(SECRET_ID, "v0");
    let (core, stop, _dir) = core_over(&fake);
    fake.faults()
        .fail_next(Op::PutSecretValue, THROTTLED, AwsErrorKind::Throttled);

    let start = Instant::now();
    let r = core
        .request(
            "R",
            Trigger::Manual,
            RequestOptions {
                grace: Some(Duration::ZERO),
            },
        )
        .unwrap();
    let (done, events) = wait_rotation(&core, &r.id, &[State::Done, State::Failed]).await;
    assert_eq!(done.state, State::Done, "{events:?}");

    // Attempts at 0 s, 1 s, 3 s and 7 s: the last one succeeds.
    let puts = fake.faults().calls_of(Op::PutSecretValue);
    assert_eq!(
        offsets(&fake, Op::PutSecretValue, start),
        attempt_offsets(THROTTLED + 1)
    );
    let results: Vec<CallOutcome> = puts.iter().map(|c| c.outcome).collect();
    assert_eq!(
        results,
        [
            CallOutcome::Throttled,
            CallOutcome::Throttled,
            CallOutcome::Throttled,
            CallOutcome::Ok
        ]
    );
    // One `error` event per throttled attempt, all on create; then every step once.
    assert_eq!(outcomes(&events, EventOutcome::Error), ["create"; 3]);
    assert_eq!(
        outcomes(&events, EventOutcome::Ok),
        ["accepted", "create", "set", "test", "finish", "finalize"]
    );
    // Every attempt used the rotation's one token, and it is AWSCURRENT now with the value
    // written under it; the version before is AWSPREVIOUS.
    assert_eq!(put_tokens(&puts), std::slice::from_ref(&r.token));
    let (current, value) = fake.staged(SECRET_ID, AWSCURRENT).unwrap();
    assert_eq!(current, r.token);
    assert_eq!(fake.value_of(SECRET_ID, &r.token), Some(value.clone()));
    assert_ne!(value.expose(), "v0");
    assert_eq!(done.detail.previous_version_id.as_deref(), Some(&*before));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_lost_put_answer_keeps_the_value_written_under_the_token() {
    let fake = FakeSecrets::new();
    fake.create(SECRET_ID, "v0");
    let (core, stop, _dir) = core_over(&fake);
    // The first PutSecretValue takes effect but its answer is lost.
    fake.faults()
        .lose_answer_next(Op::PutSecretValue, 1, AwsErrorKind::Timeout);

    let start = Instant::now();
    let r = core
        .request(
            "R",
            Trigger::Manual,
            RequestOptions {
                grace: Some(Duration::ZERO),
            },
        )
        .unwrap();
    // Halfway through the first backoff the core is waiting; the token's version holds the
    // value of the lost write.
    tokio::time::sleep_until(start + rotation_backoff(1) / 2).await;
    assert_eq!(core.status(&r.id).unwrap().unwrap().0.state, State::Running);
    let written = fake.value_of(SECRET_ID, &r.token).unwrap();

    let (done, events) = wait_rotation(&core, &r.id, &[State::Done, State::Failed]).await;
    assert_eq!(done.state, State::Done, "{events:?}");
    // The retry found the version and did not write again: one put, same value, now current.
    assert_eq!(fake.faults().count(Op::PutSecretValue), 1);
    assert_eq!(outcomes(&events, EventOutcome::Error), ["create"]);
    assert_eq!(outcomes(&events, EventOutcome::Skipped), ["create"]);
    assert_eq!(fake.value_of(SECRET_ID, &r.token), Some(written.clone()));
    assert_eq!(
        fake.staged(SECRET_ID, AWSCURRENT),
        Some((r.token.clone(), written))
    );
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_non_transient_put_error_fails_after_the_short_budget() {
    let fake = FakeSecrets::new();
    let before = fake.create(SECRET_ID, "v0");
    let (core, stop, _dir) = core_over(&fake);
    fake.faults()
        .fail_next(Op::PutSecretValue, 100, AwsErrorKind::Service);

    let start = Instant::now();
    let r = core
        .request("R", Trigger::Manual, RequestOptions::default())
        .unwrap();
    let (failed, events) = wait_rotation(&core, &r.id, &[State::Done, State::Failed]).await;
    assert_eq!(failed.state, State::Failed, "{events:?}");
    assert_eq!(failed.step, Step::Create);
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("PutSecretValue")),
        "{failed:?}"
    );
    // MAX_ATTEMPTS attempts at 0, 1, 3, 7 and 15 s; an error event for each but the last,
    // which is the failure.
    assert_eq!(
        offsets(&fake, Op::PutSecretValue, start),
        attempt_offsets(MAX_ATTEMPTS)
    );
    assert_eq!(
        outcomes(&events, EventOutcome::Error).len(),
        MAX_ATTEMPTS as usize - 1
    );
    assert_eq!(outcomes(&events, EventOutcome::Failed), ["create"]);
    // The secret is as it was: the old version is current and nothing was written.
    assert_eq!(
        fake.staged(SECRET_ID, AWSCURRENT),
        Some((before.clone(), SecretValue::new("v0".into())))
    );
    assert_eq!(fake.versions(SECRET_ID).len(), 1);
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_throttle_that_never_ends_fails_after_the_long_budget_with_capped_backoff() {
    let fake = FakeSecrets::new();
    fake.create(SECRET_ID, "v0");
    let (core, stop, _dir) = core_over(&fake);
    fake.faults()
        .fail_next(Op::PutSecretValue, 1000, AwsErrorKind::Throttled);

    let start = Instant::now();
    let r = core
        .request("R", Trigger::Manual, RequestOptions::default())
        .unwrap();
    let (failed, events) = wait_rotation(&core, &r.id, &[State::Done, State::Failed]).await;
    assert_eq!(failed.state, State::Failed, "{events:?}");
    // MAX_TRANSIENT_ATTEMPTS attempts; the waits double from 1 s and stop growing at 30 s.
    let offsets = offsets(&fake, Op::PutSecretValue, start);
    assert_eq!(offsets, attempt_offsets(MAX_TRANSIENT_ATTEMPTS));
    let last_gap = offsets[offsets.len() - 1] - offsets[offsets.len() - 2];
    assert_eq!(last_gap, MAX_BACKOFF);
    assert_eq!(
        outcomes(&events, EventOutcome::Error).len(),
        MAX_TRANSIENT_ATTEMPTS as usize - 1
    );
    assert_eq!(fake.versions(SECRET_ID).len(), 1);
    stop.cancel();
}

// ---------------------------------------------------------------------------------------------
// Incidents: the service over the fake SNS, rotating through a core over the fake secrets.
// ---------------------------------------------------------------------------------------------

/// The SNS topic of the incident tests.
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:security";

/// An incident service over the fake SNS (and no logs) whose rotations go to `fake`.
struct IncidentRig {
    /// The rotation core under the service.
    engine: Arc<RotationCore<FakeSecrets>>,
    /// The service.
    incidents: Arc<Incidents<FakeNotify, FakeLogs, FakeSecrets>>,
    /// The fake SNS the notices go to.
    sns: FakeNotify,
    /// Stops every task.
    stop: CancellationToken,
    /// Holds the store and the reports.
    _dir: tempfile::TempDir,
}

fn incident_rig(fake: &FakeSecrets) -> IncidentRig {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[state]\npath = \"{d}/s.db\"\n\
         [incident]\nsns_topic_arn = \"{TOPIC}\"\nreport_dir = \"{d}/reports\"\n\
         [[secret]]\nname = \"JWT\"\nid = \"svc/jwt\"\nrotation = {{ strategy = \"dual-key\" }}\n",
        d = dir.path().display()
    );
    let config = Arc::new(keywarden::config::parse(&text, &dir.path().join("k.toml")).unwrap());
    let store = Store::open(&config.state.path).unwrap();
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let view = keywarden::domain::view::SharedView::default();
    let engine = RotationCore::new(
        fake.clone(),
        store.clone(),
        config.clone(),
        view.clone(),
        metrics.clone(),
        stop.clone(),
    );
    let sns = FakeNotify::new();
    let incidents = Incidents::new(
        store,
        config,
        engine.clone(),
        sns.clone(),
        None::<FakeLogs>,
        metrics,
        view,
        stop.clone(),
    );
    IncidentRig {
        engine,
        incidents,
        sns,
        stop,
        _dir: dir,
    }
}

impl IncidentRig {
    fn open(&self) -> Incident {
        match self.incidents.open("JWT", "key leaked", "alice").unwrap() {
            Opened::New(inc) => inc,
            Opened::Existing(inc) => panic!("an incident was already open: {inc:?}"),
        }
    }

    /// Waits in paused time until `check` holds for the journaled incident.
    async fn wait(&self, id: &str, check: impl Fn(&Incident) -> bool) -> Incident {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let inc = self.incidents.get(id).unwrap().unwrap();
            if check(&inc) {
                return inc;
            }
            assert!(
                Instant::now() < deadline,
                "incident never got there: {inc:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every step started once and ended, each starting after the one before it ended.
fn assert_steps_in_order(inc: &Incident) {
    let names: Vec<&str> = inc.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, STEPS);
    let mut last_end = inc.opened_at_ms;
    for s in &inc.steps {
        let (Some(started), Some(ended)) = (s.started_at_ms, s.ended_at_ms) else {
            panic!("step {} has no start or end: {inc:?}", s.name);
        };
        assert!(last_end <= started && started <= ended, "{inc:?}");
        assert_eq!(s.runs, 1, "{inc:?}");
        last_end = ended;
    }
    assert_eq!(inc.closed_at_ms, Some(last_end));
}

fn state_of(inc: &Incident, step: &str) -> StepState {
    inc.step(step).map_or(StepState::Pending, |s| s.state)
}

#[tokio::test(start_paused = true)]
async fn incident_steps_are_journaled_in_order_and_a_throttled_notice_is_retried() {
    let fake = FakeSecrets::new();
    let first = fake.create("svc/jwt", r#"{"current":"k0"}"#);
    let rig = incident_rig(&fake);
    rig.sns
        .faults()
        .fail_next(Op::Publish, 2, AwsErrorKind::Throttled);

    let inc = rig.open();
    // SNS throttles the first notice (sent on its own task as soon as the incident was
    // journaled) and the report notice: neither holds back the rotation.
    let waiting = rig
        .wait(&inc.incident_id, |i| state_of(i, "rotate").ended())
        .await;
    assert_eq!(state_of(&waiting, "rotate"), StepState::Done, "{waiting:?}");
    assert!(
        rig.sns.delivered().is_empty(),
        "the rotation waited for a notice: {:?}",
        rig.sns.delivered()
    );

    let closed = rig
        .wait(&inc.incident_id, |i| i.closed_at_ms.is_some())
        .await;
    assert_eq!(
        closed.status,
        keywarden::incident::Status::Resolved,
        "{closed:?}"
    );
    assert_steps_in_order(&closed);
    assert_eq!(state_of(&closed, "report"), StepState::Done);

    // The first notice retries on its own pace: wait for it too.
    let deadline = Instant::now() + PATIENCE;
    while rig.sns.delivered().len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", rig.sns.delivered());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each throttled publish was retried: two throttled calls, then one accepted per notice.
    let calls = rig.sns.faults().calls_of(Op::Publish);
    let mut results: Vec<CallOutcome> = calls.iter().map(|c| c.outcome).collect();
    results.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        results,
        [
            CallOutcome::Ok,
            CallOutcome::Ok,
            CallOutcome::Throttled,
            CallOutcome::Throttled
        ]
    );
    let delivered = rig.sns.delivered();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    let kind = |n: &keywarden::aws::Notification| {
        n.attributes
            .iter()
            .find(|(k, _)| k == "kind")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let kinds: Vec<String> = delivered.iter().map(|(_, n)| kind(n)).collect();
    assert!(kinds.contains(&"incident_opened".to_string()), "{kinds:?}");
    let (message_id, notice) = delivered
        .iter()
        .find(|(_, n)| kind(n) == "incident_report")
        .expect("the report notice");
    assert_eq!(closed.notice_message_id.as_ref(), Some(message_id));
    assert!(
        closed
            .step("notify")
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains(message_id.as_str()))
    );
    assert_eq!(notice.topic_arn, TOPIC);
    assert!(
        notice
            .attributes
            .contains(&("incident_id".to_string(), inc.incident_id.clone()))
    );

    // The compromise rotation went through the fake: its finalized version is AWSCURRENT and
    // no value, old or new, is in the notice.
    let rotation = closed.rotation_id.clone().unwrap();
    let (current, value) = fake.staged("svc/jwt", AWSCURRENT).unwrap();
    assert_eq!(closed.new_version_id.as_deref(), Some(current.as_str()));
    assert_eq!(current, format!("keywarden-{rotation}-final"));
    assert_eq!(closed.previous_version_id.as_deref(), Some(first.as_str()));
    for secret in ["k0", value.expose()] {
        assert!(!notice.body.contains(secret) && !notice.subject.contains(secret));
    }
    rig.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_incident_whose_notice_sns_keeps_refusing_fails_that_step_only() {
    let fake = FakeSecrets::new();
    fake.create("svc/jwt", r#"{"current":"k0"}"#);
    let rig = incident_rig(&fake);
    rig.sns
        .faults()
        .fail_next(Op::Publish, 100, AwsErrorKind::Auth);

    let inc = rig.open();
    let closed = rig
        .wait(&inc.incident_id, |i| i.closed_at_ms.is_some())
        .await;
    assert_eq!(
        closed.status,
        keywarden::incident::Status::Failed,
        "{closed:?}"
    );
    assert_steps_in_order(&closed);
    assert_eq!(state_of(&closed, "rotate"), StepState::Done);
    assert_eq!(state_of(&closed, "notify"), StepState::Failed);
    assert_eq!(state_of(&closed, "report"), StepState::Done);
    let calls = rig.sns.faults().calls_of(Op::Publish);
    // NOTIFY_ATTEMPTS publishes of the report, besides the first notice's own retries.
    assert!(calls.len() >= 5, "{calls:?}");
    assert!(calls.iter().all(|c| c.error == Some(AwsErrorKind::Auth)));
    assert!(rig.sns.delivered().is_empty());
    let message = closed.step("notify").and_then(|s| s.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("SNS refused the notice 5 times")),
        "{message:?}"
    );
    assert_eq!(closed.notice_message_id, None);
    rig.stop.cancel();
}

// ---------------------------------------------------------------- rollback refusals (#15.3)

/// Issue #15 point 3: after a failed rotation, AWSPREVIOUS is the version before the last good
/// rotation; rolling back would undo that good rotation. Refused with the reason, unless forced;
/// a forced rollback is audited in the journal.
#[tokio::test(start_paused = true)]
async fn rollback_after_a_failed_rotation_is_refused_unless_forced_and_force_is_journaled() {
    let fake = FakeSecrets::new();
    let v0 = fake.create(SECRET_ID, "v0");
    let (core, stop, _dir) = core_over(&fake);
    let good = core
        .request("R", Trigger::Manual, RequestOptions::default())
        .unwrap();
    wait_rotation(&core, &good.id, &[State::Done]).await;
    fake.faults()
        .fail_next(Op::PutSecretValue, 100, AwsErrorKind::Service);
    let bad = core
        .request("R", Trigger::Manual, RequestOptions::default())
        .unwrap();
    wait_rotation(&core, &bad.id, &[State::Failed]).await;
    fake.faults().clear();

    let err = core.rollback("R", false).await.unwrap_err().to_string();
    assert!(
        err.contains("not the latest rotation") && err.contains(&bad.id),
        "{err}"
    );
    assert_eq!(
        fake.staged(SECRET_ID, AWSCURRENT).map(|(v, _)| v),
        Some(good.token.clone()),
        "a refused rollback moves nothing"
    );
    let report = core.rollback("R", true).await.unwrap();
    assert_eq!(report.to_version, v0);
    let (_, events) = core.status(&bad.id).unwrap().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.step, "rollback");
    let msg = last.message.as_deref().unwrap_or_default();
    assert!(
        msg.contains("forced") && msg.contains("not the latest rotation"),
        "{msg}"
    );
    stop.cancel();
}

/// Issue #15 point 3: a compromise finalize takes AWSPREVIOUS off the leaked version, and a
/// rollback to a version that a compromise rotation replaced is refused even when someone puts
/// AWSPREVIOUS back on it by hand.
#[tokio::test(start_paused = true)]
async fn a_compromised_version_is_never_rolled_back_to() {
    let fake = FakeSecrets::new();
    let leaked = fake.create(SECRET_ID, "leaked");
    let (core, stop, _dir) = core_over(&fake);
    let r = core
        .request(
            "R",
            Trigger::Compromise,
            RequestOptions {
                grace: Some(Duration::ZERO),
            },
        )
        .unwrap();
    wait_rotation(&core, &r.id, &[State::Done]).await;
    let stages: Vec<_> = fake.versions(SECRET_ID);
    assert!(
        stages
            .iter()
            .all(|(_, s)| !s.iter().any(|s| s == "AWSPREVIOUS")),
        "AWSPREVIOUS is still on a version after a compromise: {stages:?}"
    );
    let err = core.rollback("R", false).await.unwrap_err().to_string();
    assert!(err.contains("no AWSPREVIOUS"), "{err}");

    // By hand, AWSPREVIOUS goes back on the leaked version.
    fake.update_stage(SECRET_ID, "AWSPREVIOUS", Some(&leaked), None)
        .await
        .unwrap();
    let err = core.rollback("R", false).await.unwrap_err().to_string();
    assert!(
        err.contains("compromise rotation") && err.contains(&r.id),
        "{err}"
    );
    assert_eq!(
        fake.staged(SECRET_ID, AWSCURRENT).map(|(v, _)| v),
        Some(r.token.clone())
    );
    stop.cancel();
}

// ---------------------------------------------------------------- past finish (#15.4)

/// Issue #15 point 4: once a rotation reaches finish, a failing step is retried with capped
/// backoff until it succeeds; it is never marked failed (the old credential would otherwise stay
/// valid forever), it is reported stuck meanwhile, and the rotation is counted once.
#[tokio::test(start_paused = true)]
async fn a_failing_finish_is_retried_until_it_succeeds_reported_stuck_and_counted_once() {
    let fake = FakeSecrets::new();
    fake.create(SECRET_ID, "v0");
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(rotation_config(dir.path()));
    let store = Store::open(&config.state.path).unwrap();
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let core = RotationCore::new(
        fake.clone(),
        store,
        config,
        Default::default(),
        metrics.clone(),
        stop.clone(),
    );
    fake.faults()
        .fail_next(Op::UpdateSecretVersionStage, 1000, AwsErrorKind::Service);
    let r = core
        .request("R", Trigger::Manual, RequestOptions::default())
        .unwrap();
    // Well past every attempt budget (25 transient attempts are about ten minutes).
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    let (now, events) = core.status(&r.id).unwrap().unwrap();
    assert_eq!(now.state, State::Running, "{now:?} {events:?}");
    assert_eq!(now.step, Step::Finish);
    assert!(now.attempts > MAX_TRANSIENT_ATTEMPTS, "{now:?}");
    assert!(
        outcomes(&events, EventOutcome::Failed).is_empty(),
        "{events:?}"
    );
    // The backoff stays capped: the attempts keep coming.
    let calls = fake.faults().calls_of(Op::UpdateSecretVersionStage);
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(300)),
        "{gaps:?}"
    );
    let text = metrics.render();
    assert!(
        text.contains("keywarden_rotation_stuck{secret=\"R\",account=\"\",region=\"\"} 1"),
        "{text}"
    );

    fake.faults().clear();
    let (done, events) = wait_rotation(&core, &r.id, &[State::Done, State::Failed]).await;
    assert_eq!(done.state, State::Done, "{events:?}");
    let text = metrics.render();
    assert!(
        text.contains("keywarden_rotation_stuck{secret=\"R\",account=\"\",region=\"\"} 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "keywarden_rotations_total{secret=\"R\",account=\"\",region=\"\",trigger=\"manual\",result=\"success\"} 1"
        ),
        "{text}"
    );
    assert!(!text.contains("result=\"failure\"} 1"), "{text}");
    stop.cancel();
}

// ---------------------------------------------------------------- incident vs grace (#15.5)

/// Issue #15 point 5: while an earlier rotation's finalize (ended early by the incident) keeps
/// failing, the incident must not write a "grace ended early" event every 50 ms: ending a grace
/// early is idempotent and the incident waits for the rotation to change.
#[tokio::test(start_paused = true)]
async fn an_incident_waiting_for_an_early_finalize_does_not_flood_the_journal() {
    let fake = FakeSecrets::new();
    fake.create("svc/jwt", r#"{"current":"k0"}"#);
    let rig = incident_rig(&fake);
    let manual = rig
        .engine
        .request(
            "JWT",
            Trigger::Manual,
            RequestOptions {
                grace: Some(Duration::from_secs(48 * 3600)),
            },
        )
        .unwrap();
    wait_rotation(&rig.engine, &manual.id, &[State::Grace]).await;
    // The finalize write of the dual-key value fails for a minute.
    fake.faults()
        .fail_next(Op::PutSecretValue, 8, AwsErrorKind::Service);
    let inc = rig.open();
    let done = rig
        .wait(&inc.incident_id, |i| state_of(i, "rotate").ended())
        .await;
    assert_eq!(state_of(&done, "rotate"), StepState::Done, "{done:?}");
    let (_, events) = rig.engine.status(&manual.id).unwrap().unwrap();
    let early: Vec<_> = events
        .iter()
        .filter(|e| e.message.as_deref() == Some("grace ended early"))
        .collect();
    assert_eq!(early.len(), 1, "{events:#?}");
    rig.stop.cancel();
}

/// Issue #15 (low): a compromise pre-empts a running non-compromise rotation of the same
/// secret instead of waiting up to its whole retry budget behind it.
#[tokio::test(start_paused = true)]
async fn a_compromise_preempts_a_running_manual_rotation() {
    let fake = FakeSecrets::new();
    let before = fake.create("svc/jwt", r#"{"current":"k0"}"#);
    let rig = incident_rig(&fake);
    // The manual rotation's create is throttled: it would keep retrying for about ten minutes.
    fake.faults()
        .fail_next(Op::PutSecretValue, 1000, AwsErrorKind::Throttled);
    let manual = rig
        .engine
        .request("JWT", Trigger::Manual, RequestOptions::default())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let opened = Instant::now();
    let inc = rig.open();
    let inc = rig
        .wait(&inc.incident_id, |i| i.preempted_rotation.is_some())
        .await;
    assert!(
        opened.elapsed() < Duration::from_secs(5),
        "{:?}",
        opened.elapsed()
    );
    assert_eq!(inc.preempted_rotation.as_deref(), Some(manual.id.as_str()));
    let (stopped, _) = rig.engine.status(&manual.id).unwrap().unwrap();
    assert_eq!(stopped.state, State::Failed);
    let why = stopped.error.clone().unwrap_or_default();
    assert!(
        why.contains("pre-empted") && why.contains(&inc.incident_id),
        "{why}"
    );
    assert_eq!(
        fake.staged("svc/jwt", AWSCURRENT).map(|(v, _)| v),
        Some(before),
        "nothing moved before the compromise rotation"
    );
    fake.faults().clear();
    let done = rig
        .wait(&inc.incident_id, |i| state_of(i, "rotate").ended())
        .await;
    assert_eq!(state_of(&done, "rotate"), StepState::Done, "{done:?}");
    assert!(
        opened.elapsed() < Duration::from_secs(60),
        "{:?}",
        opened.elapsed()
    );
    rig.stop.cancel();
}

// ---------------------------------------------------------------- re-drive (#15.9)

/// Issue #15 point 9: a rotation whose task panicked stays `running` with no task; the periodic
/// re-drive picks it up, so it finishes and does not block every later rotation.
#[tokio::test(start_paused = true)]
async fn a_rotation_whose_task_panicked_is_driven_again() {
    let fake = FakeSecrets::new();
    fake.create(SECRET_ID, "v0");
    let (core, stop, _dir) = core_over(&fake);
    tokio::spawn(core.clone().run_redrive());
    fake.faults().panic_next(Op::PutSecretValue, 1);
    let start = Instant::now();
    let r = core
        .request("R", Trigger::Manual, RequestOptions::default())
        .unwrap();
    let (done, events) = wait_rotation(&core, &r.id, &[State::Done, State::Failed]).await;
    assert_eq!(done.state, State::Done, "{events:?}");
    // The panicking call left no record; the one that wrote came from the re-drive.
    assert_eq!(fake.faults().count(Op::PutSecretValue), 1);
    let put = fake.faults().calls_of(Op::PutSecretValue)[0].at - start;
    assert!(put >= keywarden::rotation::REDRIVE_EVERY, "{put:?}");
    stop.cancel();
}

/// Issue #15 point 9: an incident whose task stopped on a store error (the database locked
/// past SQLite's busy timeout) is resumed by the periodic re-drive once the store is back,
/// instead of staying `open` until the next restart.
#[tokio::test(start_paused = true)]
async fn an_incident_stopped_by_a_store_error_is_driven_again() {
    let fake = FakeSecrets::new();
    fake.create("svc/jwt", r#"{"current":"k0"}"#);
    let rig = incident_rig(&fake);
    tokio::spawn(rig.incidents.clone().run_redrive());
    let db = rig._dir.path().join("s.db");
    let inc = rig.open();
    // Another process holds the database for longer than the busy timeout.
    let (locked, is_locked) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(7));
        c.execute_batch("COMMIT").unwrap();
    });
    is_locked.recv().unwrap();
    // Reads fail too while the database is locked: wait through them.
    let deadline = Instant::now() + PATIENCE;
    let done = loop {
        if let Ok(Some(i)) = rig.incidents.get(&inc.incident_id)
            && i.status != keywarden::incident::Status::Open
        {
            break i;
        }
        assert!(Instant::now() < deadline, "the incident never closed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    holder.join().unwrap();
    assert_eq!(
        done.status,
        keywarden::incident::Status::Resolved,
        "{done:?}"
    );
    rig.stop.cancel();
}
