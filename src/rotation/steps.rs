//! Running one step of a rotation: the strategy, [`super::protocol`] and [`super::hooks`]
//! against Secrets Manager, for both local strategies and the `lambda` strategy.
//!
//! A step reads the version stages first and writes under the rotation's fixed token, so running
//! it again after a crash or a failed attempt never writes a second version. The result is a
//! [`StepOutcome`] or a [`StepError`]; what follows is [`super::transition`]'s decision and the
//! engine's to apply. This module never writes the journal.
//!
//! It must never import the engine, the journal's writers, the HTTP server, the CLI or the
//! incident workflow.

use std::time::Duration;

use crate::aws::{
    AWSCURRENT, AWSPREVIOUS, ElastiCacheApi, SecretValue, SecretsWriteApi, VersionSelector,
};
use crate::config::{HookStage, SecretSpec};

use super::failpoint;
use super::hooks::{self, HookEnv};
use super::journal::{Rotation, Step, Trigger};
use super::protocol::{self, FinalizeState, LambdaState, StepError};
use super::strategy::{self, Mode, RotationStrategy, StepContext};
use super::transition::StepOutcome;

/// How often a Lambda rotation is looked at.
const LAMBDA_POLL: Duration = Duration::from_secs(2);

/// What running a step needs from the engine.
pub(super) struct Steps<'a, A> {
    /// Secrets Manager.
    pub(super) api: &'a A,
    /// An environment variable hooks must not inherit (the admin token's).
    pub(super) hide_env: Option<&'a str>,
    /// Called once finish has moved AWSCURRENT to the new version (the duration histogram).
    pub(super) on_moved: &'a (dyn Fn() + Sync),
    /// ElastiCache, for the `elasticache` strategy (`None` where the process has no client).
    pub(super) elasticache: Option<&'a dyn ElastiCacheApi>,
}

impl<A: SecretsWriteApi> Steps<'_, A> {
    /// The current value of the configured master secret, if any.
    async fn master_value(&self, spec: &SecretSpec) -> Result<Option<SecretValue>, StepError> {
        match &spec.rotation.master_secret {
            Some(m) => Ok(Some(
                self.api
                    .get_value(m, VersionSelector::Stage(AWSCURRENT))
                    .await?
                    .value,
            )),
            None => Ok(None),
        }
    }

    /// Runs the hooks of `stage`, redacting the given values from their output.
    async fn hooks(
        &self,
        rot: &Rotation,
        spec: &SecretSpec,
        stage: HookStage,
        step: &str,
        version_id: &str,
        values: &[&SecretValue],
    ) -> Result<usize, StepError> {
        if !spec.hooks.iter().any(|h| h.on == stage) {
            return Ok(0);
        }
        let fragments: Vec<String> = values
            .iter()
            .flat_map(|v| strategy::redaction_fragments(v))
            .collect();
        let env = HookEnv {
            secret: &rot.secret,
            secret_id: &rot.detail.secret_id,
            version_id,
            previous_version_id: rot.detail.previous_version_id.as_deref(),
            step,
            trigger: rot.trigger.as_str(),
            rotation_id: &rot.id,
        };
        Ok(hooks::run_stage(&spec.hooks, stage, env, self.hide_env, &fragments).await?)
    }

    /// Values to redact from hook output once AWSCURRENT moved: the current and previous.
    async fn current_and_previous(&self, rot: &Rotation) -> Vec<SecretValue> {
        let id = &rot.detail.secret_id;
        let mut out = Vec::new();
        for stage in [AWSCURRENT, AWSPREVIOUS] {
            if let Ok(v) = self.api.get_value(id, VersionSelector::Stage(stage)).await {
                out.push(v.value);
            }
        }
        out
    }

    /// Runs the journaled step of `rot` once.
    pub(super) async fn run_step(
        &self,
        rot: &Rotation,
        spec: &SecretSpec,
        strategy: &dyn RotationStrategy,
    ) -> Result<StepOutcome, StepError> {
        if strategy.mode() == Mode::AwsManaged {
            return self.run_lambda_step(rot, spec).await;
        }
        let id = rot.detail.secret_id.as_str();
        let token = rot.token.as_str();
        let master = self.master_value(spec).await?;
        let ctx = StepContext {
            secret: &rot.secret,
            secret_id: id,
            version_id: token,
            previous_version_id: rot.detail.previous_version_id.as_deref(),
            compromise: rot.trigger == Trigger::Compromise || rot.detail.compromise_finalize,
            master: master.as_ref(),
            elasticache: self.elasticache,
        };
        match rot.step {
            Step::Create => {
                let c = protocol::create(self.api, id, token, strategy).await?;
                let mut out = if c.wrote {
                    StepOutcome::ok(format!("version {token} written as AWSPENDING"))
                } else {
                    StepOutcome::skipped(format!("version {token} already exists"))
                };
                out.previous_version_id = c.previous_version_id;
                Ok(out)
            }
            Step::Set => match protocol::pending_value(self.api, id, token).await? {
                None => Ok(StepOutcome::skipped(
                    "the new version is already AWSCURRENT",
                )),
                Some(new) => {
                    let (_, old) = protocol::current_value(self.api, id).await?;
                    strategy.set(ctx, &new, &old).await?;
                    Ok(StepOutcome::ok(format!(
                        "{} applied the new value",
                        strategy.name()
                    )))
                }
            },
            Step::Test => match protocol::pending_value(self.api, id, token).await? {
                None => Ok(StepOutcome::skipped(
                    "the new version is already AWSCURRENT",
                )),
                Some(new) => {
                    strategy.test(ctx, &new).await?;
                    let (_, old) = protocol::current_value(self.api, id).await?;
                    let n = self
                        .hooks(rot, spec, HookStage::Test, "test", token, &[&new, &old])
                        .await?;
                    Ok(StepOutcome::ok(format!(
                        "the new value passed the {} checks and {n} test hook(s)",
                        strategy.name()
                    )))
                }
            },
            Step::Finish => {
                let moved = protocol::promote(
                    self.api,
                    id,
                    token,
                    rot.detail.previous_version_id.as_deref(),
                )
                .await?;
                if moved {
                    (self.on_moved)();
                }
                let values = self.current_and_previous(rot).await;
                let refs: Vec<&SecretValue> = values.iter().collect();
                let n = self
                    .hooks(rot, spec, HookStage::Finish, "finish", token, &refs)
                    .await?;
                Ok(StepOutcome::ok(format!(
                    "AWSCURRENT is version {token}{}; {n} finish hook(s) ran",
                    if moved { "" } else { " (already)" }
                )))
            }
            Step::Finalize | Step::Done => self.finalize_step(rot, spec, strategy, ctx).await,
        }
    }

    /// Finalize: drops the previous key if the strategy has one, then runs the finalize hooks.
    async fn finalize_step(
        &self,
        rot: &Rotation,
        spec: &SecretSpec,
        strategy: &dyn RotationStrategy,
        ctx: StepContext<'_>,
    ) -> Result<StepOutcome, StepError> {
        let id = rot.detail.secret_id.as_str();
        let token = rot.token.as_str();
        let final_token = rot.finalize_token();
        let mut msg = String::new();
        // The version this rotation made AWSCURRENT: its own, or its finalized value.
        let mut ours = token;
        match protocol::finalize_state(self.api, id, token, &final_token).await? {
            FinalizeState::Superseded(other) => {
                return Ok(StepOutcome {
                    superseded: true,
                    ..StepOutcome::skipped(format!(
                        "AWSCURRENT is version {} now, not this rotation's: finalize cancelled",
                        other.as_deref().unwrap_or("(none)")
                    ))
                });
            }
            FinalizeState::Ours => {
                let cur = self
                    .api
                    .get_value(id, VersionSelector::IdAndStage(token, AWSCURRENT))
                    .await?;
                if let Some(v) = strategy.finalize_value(&cur.value)? {
                    let v = v.kept_as(&cur.value);
                    protocol::write_final(self.api, id, token, &final_token, &v).await?;
                    ours = &final_token;
                    msg = format!(
                        "the previous key was dropped: AWSCURRENT is version {final_token}; "
                    );
                }
            }
            FinalizeState::Finalized => ours = &final_token,
        }
        // By version id (with the stage it must carry), never by stage alone: the strategy
        // derives the credential to disable from this value, so it must be this rotation's.
        let current = self
            .api
            .get_value(id, VersionSelector::IdAndStage(ours, AWSCURRENT))
            .await?
            .value;
        let cur_id = ours.to_string();
        strategy.finalize(ctx, &current).await?;
        if ctx.compromise
            && let Some(leaked) = protocol::drop_previous(self.api, id).await?
        {
            msg.push_str(&format!(
                "AWSPREVIOUS taken off version {leaked} (it holds the compromised value); "
            ));
        }
        let values = self.current_and_previous(rot).await;
        let refs: Vec<&SecretValue> = values.iter().collect();
        let n = self
            .hooks(rot, spec, HookStage::Finalize, "finalize", &cur_id, &refs)
            .await?;
        Ok(StepOutcome::ok(format!("{msg}{n} finalize hook(s) ran")))
    }

    /// The `lambda` strategy: create calls RotateSecret with the token; set and test belong to
    /// the Lambda; finish waits for the token's version to become AWSCURRENT, failing once
    /// `rotation.timeout` has passed since the request.
    async fn run_lambda_step(
        &self,
        rot: &Rotation,
        spec: &SecretSpec,
    ) -> Result<StepOutcome, StepError> {
        let id = rot.detail.secret_id.as_str();
        let token = rot.token.as_str();
        match rot.step {
            Step::Create => {
                let st = self.api.describe(id).await?;
                match protocol::lambda_state(&st, token) {
                    LambdaState::NotStarted => {
                        self.api.rotate_secret(id, token).await?;
                        failpoint::hit("create:put");
                        Ok(StepOutcome {
                            previous_version_id: st.version_with(AWSCURRENT).map(str::to_string),
                            ..StepOutcome::ok(format!(
                                "RotateSecret called; the rotation Lambda writes version {token}"
                            ))
                        })
                    }
                    _ => Ok(StepOutcome::skipped("RotateSecret was already called")),
                }
            }
            Step::Set | Step::Test => Ok(StepOutcome::skipped("run by the rotation Lambda")),
            Step::Finish => {
                let deadline = rot.requested_at + spec.rotation.timeout.as_secs() as i64;
                loop {
                    let st = self.api.describe(id).await?;
                    if protocol::lambda_state(&st, token) == LambdaState::Done {
                        break;
                    }
                    if chrono::Utc::now().timestamp() >= deadline {
                        let where_ = if st.stages_of(token).is_some() {
                            format!("version {token} is still AWSPENDING")
                        } else {
                            format!("version {token} was never written")
                        };
                        return Err(StepError::Fatal(format!(
                            "the rotation Lambda did not finish within {} ({where_}); see the Lambda's CloudWatch logs",
                            crate::schedule::format_duration(spec.rotation.timeout)
                        )));
                    }
                    tokio::time::sleep(LAMBDA_POLL).await;
                }
                // The values are read only for hooks to redact (a Lambda rotation without
                // hooks never calls GetSecretValue).
                let values = if spec.hooks.iter().any(|h| h.on == HookStage::Finish) {
                    self.current_and_previous(rot).await
                } else {
                    Vec::new()
                };
                let refs: Vec<&SecretValue> = values.iter().collect();
                let n = self
                    .hooks(rot, spec, HookStage::Finish, "finish", token, &refs)
                    .await?;
                Ok(StepOutcome::ok(format!(
                    "the rotation Lambda made version {token} AWSCURRENT; {n} finish hook(s) ran"
                )))
            }
            Step::Finalize | Step::Done => {
                // The values are read only for hooks to redact (a Lambda rotation without
                // hooks never calls GetSecretValue).
                let values = if spec.hooks.iter().any(|h| h.on == HookStage::Finalize) {
                    self.current_and_previous(rot).await
                } else {
                    Vec::new()
                };
                let refs: Vec<&SecretValue> = values.iter().collect();
                let n = self
                    .hooks(rot, spec, HookStage::Finalize, "finalize", token, &refs)
                    .await?;
                Ok(StepOutcome::ok(format!("{n} finalize hook(s) ran")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The `lambda` strategy against the SDK's own mocks (moto cannot run a rotation Lambda).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_secretsmanager::Client;
    use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput;
    use aws_sdk_secretsmanager::operation::rotate_secret::{RotateSecretError, RotateSecretOutput};
    use aws_sdk_secretsmanager::types::error::InvalidRequestException;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use std::sync::{Arc, Mutex};

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::aws::secretsmanager::SecretsManager;
    use crate::domain::view::SharedView;
    use crate::rotation::engine::lock;
    use crate::rotation::journal::{Event, EventOutcome, State};
    use crate::rotation::{Engine, MAX_ATTEMPTS, RequestOptions, RotationCore};
    use crate::store::Store;
    use crate::telemetry::Metrics;

    /// A core on a mocked client, with one `lambda` secret `L` (id `app/l`).
    fn core(client: Client, timeout: &str) -> (Arc<Engine>, Arc<Metrics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(
            &path,
            format!(
                "[state]\npath = \"{}\"\n[[secret]]\nname = \"L\"\nid = \"app/l\"\n\
                 rotation = {{ strategy = \"lambda\", timeout = \"{timeout}\" }}\n",
                dir.path().join("s.db").display()
            ),
        )
        .unwrap();
        let config = Arc::new(crate::config::load(&path).unwrap());
        let store = Store::open(&config.state.path).unwrap();
        let metrics = Arc::new(Metrics::new());
        let rx = CancellationToken::new();
        let api = SecretsManager::from_client(client, metrics.clone());
        let core = RotationCore::new(
            api,
            store,
            config,
            SharedView::default(),
            metrics.clone(),
            rx,
        );
        (core, metrics, dir)
    }

    async fn wait_for(core: &Engine, id: &str, states: &[State]) -> (Rotation, Vec<Event>) {
        for _ in 0..3000 {
            let (r, e) = core.status(id).unwrap().unwrap();
            if states.contains(&r.state) {
                return (r, e);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("rotation {id} never reached {states:?}");
    }

    fn stages(pairs: &[(&str, &[&str])]) -> DescribeSecretOutput {
        let mut b = DescribeSecretOutput::builder()
            .name("app/l")
            .arn("arn:aws:secretsmanager:us-east-1:1:secret:app/l-AbCdEf");
        for (id, s) in pairs {
            b = b.version_ids_to_stages(*id, s.iter().map(|x| x.to_string()).collect());
        }
        b.build()
    }

    #[tokio::test]
    async fn lambda_rotation_calls_rotate_secret_once_and_waits_for_awscurrent() {
        let token: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = token.clone();
        let rotate = mock!(Client::rotate_secret)
            .match_requests(move |r| {
                *lock(&seen) = r.client_request_token().map(str::to_string);
                r.secret_id() == Some("app/l")
            })
            .then_output(|| RotateSecretOutput::builder().build());
        let after = Arc::new(AtomicUsize::new(0));
        let t = token.clone();
        let describe = mock!(Client::describe_secret).then_compute_output(move |_| {
            let Some(tok) = lock(&t).clone() else {
                return stages(&[("old", &["AWSCURRENT"])]);
            };
            // Twice in progress, then the Lambda has finished.
            if after.fetch_add(1, Ordering::SeqCst) < 2 {
                stages(&[("old", &["AWSCURRENT"]), (&tok, &["AWSPENDING"])])
            } else {
                stages(&[
                    ("old", &["AWSPREVIOUS"]),
                    (&tok, &["AWSCURRENT", "AWSPENDING"]),
                ])
            }
        });
        let client = mock_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&rotate, &describe]
        );
        let (core, metrics, _dir) = core(client, "5m");
        let r = core
            .request("L", Trigger::Manual, RequestOptions::default())
            .unwrap();
        let (done, events) = wait_for(&core, &r.id, &[State::Done, State::Failed]).await;
        assert_eq!(done.state, State::Done, "{events:?}");
        assert_eq!(rotate.num_calls(), 1, "RotateSecret exactly once");
        assert_eq!(lock(&token).as_deref(), Some(r.token.as_str()));
        assert_eq!(done.detail.previous_version_id.as_deref(), Some("old"));
        let steps: Vec<&str> = events.iter().map(|e| e.step.as_str()).collect();
        assert_eq!(
            steps,
            ["accepted", "create", "set", "test", "finish", "finalize"]
        );
        let text = metrics.render();
        assert!(
            text.contains(
                r#"keywarden_rotations_total{secret="L",account="",region="",trigger="manual",result="success"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn lambda_rotation_that_never_finishes_fails_clearly_at_the_timeout() {
        let t: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = t.clone();
        let rotate = mock!(Client::rotate_secret)
            .match_requests(move |r| {
                *lock(&seen) = r.client_request_token().map(str::to_string);
                true
            })
            .then_output(|| RotateSecretOutput::builder().build());
        let describe =
            mock!(Client::describe_secret).then_compute_output(move |_| match lock(&t).clone() {
                Some(tok) => stages(&[("old", &["AWSCURRENT"]), (&tok, &["AWSPENDING"])]),
                None => stages(&[("old", &["AWSCURRENT"])]),
            });
        let client = mock_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&rotate, &describe]
        );
        let (core, metrics, _dir) = core(client, "1s");
        let r = core
            .request("L", Trigger::Manual, RequestOptions::default())
            .unwrap();
        let (failed, _) = wait_for(&core, &r.id, &[State::Done, State::Failed]).await;
        assert_eq!(failed.state, State::Failed);
        assert_eq!(failed.step, Step::Finish);
        let err = failed.error.unwrap();
        assert!(
            err.contains("did not finish within 1s") && err.contains("still AWSPENDING"),
            "{err}"
        );
        let text = metrics.render();
        assert!(
            text.contains(
                r#"keywarden_rotations_total{secret="L",account="",region="",trigger="manual",result="failure"} 1"#
            ),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lambda_rotate_secret_errors_are_retried_then_reported() {
        let rotate = mock!(Client::rotate_secret).then_error(|| {
            RotateSecretError::InvalidRequestException(
                InvalidRequestException::builder()
                    .message("No Lambda rotation function ARN is associated with this secret.")
                    .build(),
            )
        });
        let describe = mock!(Client::describe_secret)
            .then_compute_output(|_| stages(&[("old", &["AWSCURRENT"])]));
        let client = mock_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&rotate, &describe]
        );
        let (core, _metrics, _dir) = core(client, "5m");
        let r = core
            .request("L", Trigger::Manual, RequestOptions::default())
            .unwrap();
        let (failed, events) = wait_for(&core, &r.id, &[State::Done, State::Failed]).await;
        assert_eq!(failed.state, State::Failed);
        assert_eq!(failed.step, Step::Create);
        assert_eq!(rotate.num_calls(), MAX_ATTEMPTS as usize);
        let err = failed.error.unwrap();
        assert!(
            err.contains("RotateSecret") && err.contains("No Lambda rotation function"),
            "{err}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.outcome == EventOutcome::Error)
                .count(),
            MAX_ATTEMPTS as usize - 1
        );
    }

    /// Issue #15, point 7: the hooks of a `lambda` rotation get the same redaction as the others
    /// (the current and previous values, and their encoded forms).
    #[tokio::test]
    async fn lambda_hook_output_is_redacted() {
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
        use base64::Engine as _;
        const NEW: &str = "lambda-canary-Qx7-new-value";
        const OLD: &str = "lambda-canary-Qx7-old-value";
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                lock(&self.0).extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        );

        let token: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = token.clone();
        let rotate = mock!(Client::rotate_secret)
            .match_requests(move |r| {
                *lock(&seen) = r.client_request_token().map(str::to_string);
                true
            })
            .then_output(|| RotateSecretOutput::builder().build());
        let t = token.clone();
        let describe =
            mock!(Client::describe_secret).then_compute_output(move |_| match lock(&t).clone() {
                Some(tok) => stages(&[("old", &["AWSPREVIOUS"]), (&tok, &["AWSCURRENT"])]),
                None => stages(&[("old", &["AWSCURRENT"])]),
            });
        let value = mock!(Client::get_secret_value).then_compute_output(|r| {
            let v = if r.version_stage() == Some("AWSPREVIOUS") {
                OLD
            } else {
                NEW
            };
            GetSecretValueOutput::builder()
                .arn("arn:aws:secretsmanager:us-east-1:1:secret:app/l-AbCdEf")
                .name("app/l")
                .version_id("v")
                .secret_string(v)
                .build()
        });
        let client = mock_client!(
            aws_sdk_secretsmanager,
            RuleMode::MatchAny,
            [&rotate, &describe, &value]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        let b64 = base64::engine::general_purpose::STANDARD.encode(OLD);
        std::fs::write(
            &path,
            format!(
                "[state]\npath = \"{}\"\n[[secret]]\nname = \"L\"\nid = \"app/l\"\n\
                 rotation = {{ strategy = \"lambda\", timeout = \"5m\" }}\n\
                 hooks = [{{ on = \"finish\", command = [\"sh\", \"-c\", \"echo got {NEW}; echo {b64}; echo hook-ran\"] }}]\n",
                dir.path().join("s.db").display()
            ),
        )
        .unwrap();
        let config = Arc::new(crate::config::load(&path).unwrap());
        let metrics = Arc::new(Metrics::new());
        let api = SecretsManager::from_client(client, metrics.clone());
        let core = RotationCore::new(
            api,
            Store::open(&config.state.path).unwrap(),
            config,
            SharedView::default(),
            metrics,
            CancellationToken::new(),
        );
        let r = core
            .request("L", Trigger::Manual, RequestOptions::default())
            .unwrap();
        let (done, events) = wait_for(&core, &r.id, &[State::Done, State::Failed]).await;
        assert_eq!(done.state, State::Done, "{events:?}");
        let log = String::from_utf8_lossy(&lock(&capture.0)).into_owned();
        assert!(log.contains("hook-ran"), "the hook output is logged: {log}");
        assert!(log.contains("got [redacted]"), "{log}");
        assert!(
            !log.contains(NEW) && !log.contains(&b64),
            "a value in the log: {log}"
        );
    }
}
