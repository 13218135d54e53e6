//! Rotation hooks (SPEC §6): argv commands run at `test`, `finish` and `finalize`.
//!
//! No shell is involved: `command[0]` is executed with the rest as arguments. The environment
//! is the daemon's, minus the admin token variable and every `KEYWARDEN_*` variable, plus
//! `KEYWARDEN_SECRET`, `KEYWARDEN_SECRET_ID`, `KEYWARDEN_VERSION_ID`,
//! `KEYWARDEN_PREVIOUS_VERSION_ID` (when known), `KEYWARDEN_STEP`, `KEYWARDEN_TRIGGER` and
//! `KEYWARDEN_ROTATION_ID`. The value is never put there: a hook that needs it reads it from
//! Secrets Manager by version id. Each stdout and stderr line is logged, with any fragment of the
//! old or new value replaced by `[redacted]`. A hook runs in its own process group; on timeout
//! the whole group is killed with SIGKILL and the step fails, as it does on a non-zero exit.
//! A hook still running when its future is dropped (the daemon stopping on SIGTERM, the task
//! aborted) has its whole group killed the same way.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tracing::{info, warn};

use crate::config::{HookSpec, HookStage};

/// A failed hook; the message names the command, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The command could not be started.
    #[error("hook {command:?} could not start: {reason}")]
    Spawn {
        /// `argv[0]`.
        command: String,
        /// The OS error.
        reason: String,
    },
    /// The command exited non-zero or died of a signal.
    #[error("hook {command:?} failed: {status}")]
    Failed {
        /// `argv[0]`.
        command: String,
        /// Exit status as text.
        status: String,
    },
    /// The command ran past its timeout and was killed.
    #[error("hook {command:?} timed out after {seconds}s and was killed")]
    TimedOut {
        /// `argv[0]`.
        command: String,
        /// The timeout.
        seconds: u64,
    },
}

/// The names a hook gets in its environment.
#[derive(Debug, Clone, Copy)]
pub struct HookEnv<'a> {
    /// `KEYWARDEN_SECRET`: the inventory name.
    pub secret: &'a str,
    /// `KEYWARDEN_SECRET_ID`: the Secrets Manager id.
    pub secret_id: &'a str,
    /// `KEYWARDEN_VERSION_ID`: the new version.
    pub version_id: &'a str,
    /// `KEYWARDEN_PREVIOUS_VERSION_ID`: the version before.
    pub previous_version_id: Option<&'a str>,
    /// `KEYWARDEN_STEP`: `test`, `finish` or `finalize`.
    pub step: &'a str,
    /// `KEYWARDEN_TRIGGER`.
    pub trigger: &'a str,
    /// `KEYWARDEN_ROTATION_ID`.
    pub rotation_id: &'a str,
}

/// Replaces every fragment in `line` with `[redacted]`.
pub fn redact(line: &str, fragments: &[String]) -> String {
    let mut out = line.to_string();
    for f in fragments {
        if !f.is_empty() && out.contains(f.as_str()) {
            out = out.replace(f.as_str(), "[redacted]");
        }
    }
    out
}

/// Runs every hook of `stage`, in order; the first failure stops and fails the step.
pub async fn run_stage(
    hooks: &[HookSpec],
    stage: HookStage,
    env: HookEnv<'_>,
    hide_env: Option<&str>,
    redact_fragments: &[String],
) -> Result<usize, HookError> {
    let mut ran = 0;
    for hook in hooks.iter().filter(|h| h.on == stage) {
        run_one(hook, env, hide_env, redact_fragments).await?;
        ran += 1;
    }
    Ok(ran)
}

async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    stream: &'static str,
    secret: String,
    command: String,
    fragments: Vec<String>,
) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = redact(&line, &fragments);
        info!(secret = %secret, hook = %command, stream, line = %line, "Hook output.");
    }
}

/// Runs one hook to completion or timeout.
pub async fn run_one(
    hook: &HookSpec,
    env: HookEnv<'_>,
    hide_env: Option<&str>,
    fragments: &[String],
) -> Result<(), HookError> {
    let command = hook.command.first().cloned().unwrap_or_default();
    let mut cmd = Command::new(&command);
    cmd.args(&hook.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("KEYWARDEN_") || Some(name.as_ref()) == hide_env {
            cmd.env_remove(&k);
        }
    }
    cmd.env("KEYWARDEN_SECRET", env.secret)
        .env("KEYWARDEN_SECRET_ID", env.secret_id)
        .env("KEYWARDEN_VERSION_ID", env.version_id)
        .env("KEYWARDEN_STEP", env.step)
        .env("KEYWARDEN_TRIGGER", env.trigger)
        .env("KEYWARDEN_ROTATION_ID", env.rotation_id);
    if let Some(p) = env.previous_version_id {
        cmd.env("KEYWARDEN_PREVIOUS_VERSION_ID", p);
    }
    info!(secret = %env.secret, step = env.step, hook = %command, "Running hook.");
    let mut child = cmd.spawn().map_err(|e| HookError::Spawn {
        command: command.clone(),
        reason: e.to_string(),
    })?;
    // Declared after `child`, so dropped before it: the group is killed while its leader is
    // not yet reaped, and its id cannot have been reused.
    let mut group = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(
            out,
            "stdout",
            env.secret.to_string(),
            command.clone(),
            fragments.to_vec(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(
            err,
            "stderr",
            env.secret.to_string(),
            command.clone(),
            fragments.to_vec(),
        )));
    }
    let waited = tokio::time::timeout(hook.timeout, child.wait()).await;
    // The hook ended or timed out (then `kill_group` below kills the group): no cancellation
    // is left to clean up after.
    group.disarm();
    let result = match waited {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(HookError::Failed {
            command: command.clone(),
            status: status.to_string(),
        }),
        Ok(Err(e)) => Err(HookError::Failed {
            command: command.clone(),
            status: e.to_string(),
        }),
        Err(_) => {
            kill_group(&mut child).await;
            Err(HookError::TimedOut {
                command: command.clone(),
                seconds: hook.timeout.as_secs(),
            })
        }
    };
    // Output still buffered is logged; a grandchild that kept the pipes open is not waited for.
    for r in readers {
        let abort = r.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), r)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    match &result {
        Ok(()) => info!(secret = %env.secret, step = env.step, hook = %command, "Hook succeeded."),
        Err(e) => warn!(secret = %env.secret, step = env.step, error = %e, "Hook failed."),
    }
    result
}

/// Kills the hook's process group with SIGKILL when dropped while armed: a hook whose future
/// is dropped (the daemon stopping, its task aborted) takes its background children with it,
/// not only its leader (which `kill_on_drop` kills).
struct GroupGuard(Option<i32>);

impl GroupGuard {
    /// The hook finished or was killed by the timeout path: nothing to do on drop.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // The hook leads the group (process_group(0) at spawn) and is not reaped yet, so
            // the group id still names its group.
            signal_group(pgid);
        }
    }
}

/// SIGKILL to the hook's process group (it is its leader), then reaps it.
async fn kill_group(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        signal_group(pid);
    }
    let _ = child.kill().await;
}

/// SIGKILL to the process group `pgid`; a group that is already gone is not an error.
fn signal_group(pgid: i32) {
    if let Some(pgid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HookEnv<'static> {
        HookEnv {
            secret: "S",
            secret_id: "app/s",
            version_id: "v-1",
            previous_version_id: Some("v-0"),
            step: "test",
            trigger: "manual",
            rotation_id: "r1",
        }
    }

    fn hook(cmd: &[&str], timeout_ms: u64) -> HookSpec {
        HookSpec {
            on: HookStage::Test,
            command: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// Whether `pid` is gone; a zombie (state `Z` in `/proc/<pid>/stat`) counts as dead.
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| state == "Z" || state == "X"),
        }
    }

    /// Polls until `check` holds or `limit` passes; returns whether it held.
    async fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while !check() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// A hook that starts `sleep 60` in the background, writes that child's pid to `file`
    /// (a complete line once written) and waits for it.
    fn background_hook(file: &std::path::Path, timeout_ms: u64) -> HookSpec {
        let script = format!(
            "sleep 60 & echo $! > {f}.tmp && mv {f}.tmp {f}; wait",
            f = file.display()
        );
        hook(&["sh", "-c", &script], timeout_ms)
    }

    fn child_pid(file: &std::path::Path) -> u32 {
        std::fs::read_to_string(file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid")
    }

    /// On timeout the whole process group dies, not only the shell: its background child too.
    #[tokio::test]
    async fn timeout_kills_the_hooks_background_child() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("child");
        let e = run_one(&background_hook(&file, 2_000), env(), None, &[])
            .await
            .unwrap_err();
        assert!(matches!(e, HookError::TimedOut { .. }), "{e}");
        let pid = child_pid(&file);
        assert!(
            eventually(Duration::from_secs(5), || dead(pid)).await,
            "the hook's background child {pid} survived the timeout"
        );
    }

    /// A running hook whose future is dropped (the daemon shutting down, the task aborted)
    /// takes its whole process group with it.
    #[tokio::test]
    async fn cancelling_a_running_hook_kills_its_background_child() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("child");
        let spec = background_hook(&file, 60_000);
        let task = tokio::spawn(async move { run_one(&spec, env(), None, &[]).await });
        assert!(
            eventually(Duration::from_secs(10), || file.exists()).await,
            "the hook did not start its child"
        );
        let pid = child_pid(&file);
        assert!(!dead(pid), "the child is running before the cancellation");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(
            eventually(Duration::from_secs(5), || dead(pid)).await,
            "the hook's background child {pid} survived the cancellation"
        );
    }

    #[test]
    fn redaction_table() {
        let frags = vec!["s3cr3t-value".to_string(), "k3y".to_string()];
        for (line, want) in [
            ("nothing here", "nothing here"),
            ("got s3cr3t-value!", "got [redacted]!"),
            ("k3y and s3cr3t-value", "[redacted] and [redacted]"),
        ] {
            assert_eq!(redact(line, &frags), want);
        }
    }

    #[tokio::test]
    async fn exit_codes_timeouts_and_environment() {
        run_one(&hook(&["true"], 5_000), env(), None, &[])
            .await
            .unwrap();
        let e = run_one(&hook(&["false"], 5_000), env(), None, &[])
            .await
            .unwrap_err();
        assert!(matches!(e, HookError::Failed { .. }), "{e}");
        let started = std::time::Instant::now();
        let e = run_one(
            &hook(&["sh", "-c", "sleep 30 & sleep 30"], 300),
            env(),
            None,
            &[],
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HookError::TimedOut { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = run_one(&hook(&["/nonexistent/hook"], 300), env(), None, &[])
            .await
            .unwrap_err();
        assert!(matches!(e, HookError::Spawn { .. }), "{e}");
        run_one(
            &hook(
                &["sh", "-c", "test \"$KEYWARDEN_VERSION_ID\" = v-1 && test \"$KEYWARDEN_SECRET\" = S && test \"$KEYWARDEN_PREVIOUS_VERSION_ID\" = v-0"],
                5_000,
            ),
            env(),
            None,
            &[],
        )
        .await
        .unwrap();
    }
}
