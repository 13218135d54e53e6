//! Rotation hooks (SPEC §6): argv commands run at `test`, `finish` and `finalize`.
//!
//! No shell is involved: `command[0]` is executed with the rest as arguments. The environment
//! is the daemon's, minus the admin token variable and every `KEYWARDEN_*` variable, plus
//! `KEYWARDEN_SECRET`, `KEYWARDEN_SECRET_ID`, `KEYWARDEN_VERSION_ID`,
//! `KEYWARDEN_PREVIOUS_VERSION_ID` (when known), `KEYWARDEN_STEP`, `KEYWARDEN_TRIGGER` and
//! `KEYWARDEN_ROTATION_ID`. The value is never put there: a hook that needs it reads it from
//! Secrets Manager by version id. stdout and stderr are read to their end whatever they hold
//! (so a hook never dies of SIGPIPE): each line is decoded lossily, every fragment of the old and
//! new value and its encoded forms (base64, hex, JSON escaping: see [`Redactor`]) replaced by
//! `[redacted]`, cut to [`MAX_LOGGED_LINE`] bytes, and logged at debug (the first
//! [`MAX_LOGGED_LINES`] of each stream); at info each stream gets one digest line (lines, bytes,
//! lines cut, lines not logged, a short SHA-256 of the logged lines). A hook runs in its own process group; on timeout
//! the whole group is killed with SIGKILL and the step fails, as it does on a non-zero exit.
//! A hook still running when its future is dropped (the daemon stopping on SIGTERM, the task
//! aborted) has its whole group killed the same way.

use std::fmt::Write as _;
use std::ops::Range;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tracing::{debug, info, warn};

use crate::config::{HookSpec, HookStage};

/// Bytes of one output line that are logged (after lossy UTF-8 decoding and redaction); the rest
/// of the line is read and dropped, and the logged line ends with `[… N more bytes]`.
pub const MAX_LOGGED_LINE: usize = 4096;

/// Lines of one stream of one hook that are logged at debug; later lines are read, counted in the
/// digest and dropped.
pub const MAX_LOGGED_LINES: usize = 1000;

/// Shortest derived encoded form (a base64 run at an offset, a wrapped base64 line, one line of
/// a multi-line value) that is redacted: shorter ones would redact ordinary text.
const MIN_DERIVED_FORM: usize = 8;

/// Columns of the wrapped base64 forms: `base64` (GNU coreutils) and PEM/`openssl base64`.
const BASE64_WRAPS: [usize; 2] = [76, 64];

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

/// The strings removed from hook output: every fragment of the values and its encoded forms.
///
/// For each fragment: the fragment; standard and URL-safe base64, padded and not; the base64
/// characters that depend on the fragment alone when it sits 0, 1 or 2 bytes into a longer
/// encoded text (both alphabets), and the 76- and 64-column lines of its wrapped encoding; lower
/// and upper hex; its JSON string escaping (serde_json's, and the ASCII-only `\uXXXX` one of
/// Python's `json.dumps`); and each line of a multi-line fragment. Derived forms shorter than
/// 8 characters are left out.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Distinct, non-empty, longest first.
    forms: Vec<String>,
}

impl Redactor {
    /// The redactor of `fragments` (empty ones are ignored).
    pub fn new(fragments: &[String]) -> Redactor {
        let mut forms = Vec::new();
        for f in fragments.iter().filter(|f| !f.is_empty()) {
            encoded_forms(f, &mut forms);
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Redactor { forms }
    }

    /// The longest form, in bytes: a line reader keeps this much past [`MAX_LOGGED_LINE`] so
    /// that a form starting before the cut is seen whole.
    pub fn longest(&self) -> usize {
        self.forms.first().map_or(0, String::len)
    }

    /// `text` with every occurrence of every form replaced by `[redacted]` (overlapping
    /// occurrences are one).
    pub fn redact(&self, text: &str) -> String {
        self.redact_capped(text, usize::MAX).0
    }

    /// [`Redactor::redact`] of the first `cap` bytes of `text` (down to a character boundary):
    /// an occurrence that starts before the cut is replaced whole. Returns the text and how many
    /// bytes of `text` it stands for.
    pub fn redact_capped(&self, text: &str, cap: usize) -> (String, usize) {
        let covered = self.covered(text);
        let mut out = String::with_capacity(text.len().min(cap) + 16);
        let mut at = 0;
        for r in &covered {
            if r.start >= cap {
                break;
            }
            out.push_str(&text[at..r.start]);
            out.push_str("[redacted]");
            at = r.end;
        }
        let mut end = cap.min(text.len()).max(at);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&text[at.min(end)..end]);
        (out, end)
    }

    /// The merged byte ranges of `text` that hold a form.
    fn covered(&self, text: &str) -> Vec<Range<usize>> {
        let mut hits: Vec<Range<usize>> = Vec::new();
        for form in &self.forms {
            if form.len() > text.len() {
                continue;
            }
            let mut from = 0;
            while let Some(p) = text.get(from..).and_then(|t| t.find(form.as_str())) {
                let start = from + p;
                hits.push(start..start + form.len());
                // Overlapping occurrences too: go on from the next character.
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        hits.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(hits.len());
        for r in hits {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }
}

/// Pushes the forms of fragment `f` (see [`Redactor`]).
fn encoded_forms(f: &str, out: &mut Vec<String>) {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let b = f.as_bytes();
    out.push(f.to_string());
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(b));
    }
    let mut derived = Vec::new();
    // At offset k in a longer encoded text, the first characters mix bits of the bytes before
    // (none, 2 or 3 characters) and the last one bits of the bytes after (when the length is
    // not a multiple of 3): what is left depends on `f` alone.
    for k in 0..3usize {
        let mut shifted = vec![0u8; k];
        shifted.extend_from_slice(b);
        let enc = STANDARD_NO_PAD.encode(&shifted);
        let skip = [0, 2, 3][k];
        let end = enc.len() - usize::from(shifted.len() % 3 != 0);
        if let Some(core) = enc.get(skip..end) {
            derived.push(core.to_string());
            derived.push(core.replace('+', "-").replace('/', "_"));
        }
    }
    for wrap in BASE64_WRAPS {
        for engine in [&STANDARD, &URL_SAFE] {
            let enc = engine.encode(b);
            for chunk in enc.as_bytes().chunks(wrap) {
                derived.push(String::from_utf8_lossy(chunk).into_owned());
            }
        }
    }
    let mut lower = String::with_capacity(2 * b.len());
    let mut upper = String::with_capacity(2 * b.len());
    for x in b {
        let _ = write!(lower, "{x:02x}");
        let _ = write!(upper, "{x:02X}");
    }
    out.push(lower);
    out.push(upper);
    if let Ok(json) = serde_json::to_string(f) {
        let inner = &json[1..json.len() - 1];
        let mut ascii = String::with_capacity(inner.len());
        for c in inner.chars() {
            if c.is_ascii() {
                ascii.push(c);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(ascii, "\\u{u:04x}");
                }
            }
        }
        out.push(inner.to_string());
        out.push(ascii);
    }
    if f.contains(['\n', '\r']) {
        derived.extend(f.split(['\n', '\r']).map(str::to_string));
    }
    out.extend(derived.into_iter().filter(|d| d.len() >= MIN_DERIVED_FORM));
}

/// Replaces every fragment in `line`, and its encoded forms, with `[redacted]` (see
/// [`Redactor`]).
pub fn redact(line: &str, fragments: &[String]) -> String {
    Redactor::new(fragments).redact(line)
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

/// Splits a byte stream into lines, keeping at most `keep` bytes of each (the rest is counted,
/// not kept). No decoding: bytes that are not UTF-8 cannot stop it.
#[derive(Debug)]
struct LineSplitter {
    /// Bytes kept of each line.
    keep: usize,
    /// The current line's kept bytes.
    line: Vec<u8>,
    /// The current line's dropped bytes.
    dropped: u64,
    /// Whether the current line has any byte.
    open: bool,
}

impl LineSplitter {
    fn new(keep: usize) -> LineSplitter {
        LineSplitter {
            keep,
            line: Vec::new(),
            dropped: 0,
            open: false,
        }
    }

    /// Takes `chunk`, calling `emit(kept, dropped)` for every line it ends (`\n` excluded).
    fn push(&mut self, mut chunk: &[u8], emit: &mut impl FnMut(&[u8], u64)) {
        while !chunk.is_empty() {
            let (part, ended) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], Some(i + 1)),
                None => (chunk, None),
            };
            self.open = true;
            let room = self.keep.saturating_sub(self.line.len()).min(part.len());
            self.line.extend_from_slice(&part[..room]);
            self.dropped += (part.len() - room) as u64;
            match ended {
                Some(next) => {
                    self.flush(emit);
                    chunk = &chunk[next..];
                }
                None => break,
            }
        }
    }

    /// Ends the current line, if it has begun.
    fn flush(&mut self, emit: &mut impl FnMut(&[u8], u64)) {
        if self.open {
            emit(&self.line, self.dropped);
        }
        self.line.clear();
        self.dropped = 0;
        self.open = false;
    }
}

/// What one output stream of one hook amounted to: the digest logged at info.
#[derive(Debug, Default)]
pub struct OutputDigest {
    /// Lines read.
    pub lines: u64,
    /// Bytes read, newlines included.
    pub bytes: u64,
    /// Lines cut to [`MAX_LOGGED_LINE`].
    pub cut: u64,
    /// Lines past [`MAX_LOGGED_LINES`], not logged.
    pub unlogged: u64,
    /// SHA-256 of the logged (redacted, cut) lines, each followed by a newline.
    hash: Sha256,
}

impl OutputDigest {
    /// The first 12 hex digits of the hash of the logged lines.
    pub fn short_hash(&self) -> String {
        self.hash
            .clone()
            .finalize()
            .iter()
            .take(6)
            .fold(String::with_capacity(12), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

/// One line of hook output as it is logged: decoded lossily, redacted, cut to
/// [`MAX_LOGGED_LINE`] bytes (noting the bytes left out), a final `\r` dropped and control
/// characters escaped (`\u{1b}`), so a line cannot forge another log line. Returns the line and
/// whether it was cut.
pub fn loggable_line(kept: &[u8], dropped: u64, redactor: &Redactor) -> (String, bool) {
    let kept = kept.strip_suffix(b"\r").unwrap_or(kept);
    let text = String::from_utf8_lossy(kept);
    let (redacted, shown) = redactor.redact_capped(&text, MAX_LOGGED_LINE);
    let mut out = String::with_capacity(redacted.len() + 24);
    for c in redacted.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    // Decoded bytes not shown, and raw bytes never kept.
    let more = (text.len() - shown) as u64 + dropped;
    if more > 0 {
        let _ = write!(out, " [… {more} more bytes]");
    }
    (out, more > 0)
}

/// Reads one stream of the hook to its end, whatever it holds, so the hook never writes to a
/// closed pipe; logs each line at debug (see [`loggable_line`]) and returns the digest.
async fn pump<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: &'static str,
    secret: String,
    command: String,
    redactor: Redactor,
) -> OutputDigest {
    let mut digest = OutputDigest::default();
    let mut splitter = LineSplitter::new(MAX_LOGGED_LINE + redactor.longest());
    let mut buf = vec![0u8; 64 * 1024];
    let mut emit = |kept: &[u8], dropped: u64| {
        digest.lines += 1;
        if digest.lines > MAX_LOGGED_LINES as u64 {
            digest.unlogged += 1;
            return;
        }
        let (line, cut) = loggable_line(kept, dropped, &redactor);
        digest.cut += u64::from(cut);
        digest.hash.update(line.as_bytes());
        digest.hash.update(b"\n");
        debug!(secret = %secret, hook = %command, stream, line = %line, "Hook output.");
    };
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                digest.bytes += n as u64;
                splitter.push(&buf[..n], &mut emit);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                warn!(secret = %secret, hook = %command, stream, error = %e, "Reading hook output failed.");
                break;
            }
        }
    }
    splitter.flush(&mut emit);
    digest
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
    let redactor = Redactor::new(fragments);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let task = pump(
            out,
            "stdout",
            env.secret.to_string(),
            command.clone(),
            redactor.clone(),
        );
        readers.push(("stdout", tokio::spawn(task)));
    }
    if let Some(err) = child.stderr.take() {
        let task = pump(
            err,
            "stderr",
            env.secret.to_string(),
            command.clone(),
            redactor,
        );
        readers.push(("stderr", tokio::spawn(task)));
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
    for (stream, r) in readers {
        let abort = r.abort_handle();
        match tokio::time::timeout(Duration::from_secs(2), r).await {
            Ok(Ok(d)) => info!(
                secret = %env.secret,
                step = env.step,
                hook = %command,
                stream,
                lines = d.lines,
                bytes = d.bytes,
                cut = d.cut,
                unlogged = d.unlogged,
                sha256 = %d.short_hash(),
                "Hook output digest."
            ),
            Ok(Err(_)) => {}
            Err(_) => {
                abort.abort();
                info!(
                    secret = %env.secret,
                    step = env.step,
                    hook = %command,
                    stream,
                    "Hook output still open 2s after the hook ended (a background child holds it): no longer read."
                );
            }
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

    /// Every encoded form of a value, alone or inside a line, is redacted.
    #[test]
    fn encoded_forms_are_redacted() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let value = "p\"ss\\wörd/?>~~\nline two of it";
        let r = Redactor::new(&[value.to_string()]);
        let b = value.as_bytes();
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let json = serde_json::to_string(value).unwrap();
        let forms = [
            value.to_string(),
            STANDARD.encode(b),
            URL_SAFE_NO_PAD.encode(b),
            hex.clone(),
            hex.to_uppercase(),
            json[1..json.len() - 1].to_string(),
            json[1..json.len() - 1].replace('ö', "\\u00f6"),
            "line two of it".to_string(),
        ];
        for form in forms {
            let line = format!("before {form} after");
            let got = r.redact(&line);
            assert_eq!(got, "before [redacted] after", "{line}");
        }
        // At an offset inside a longer base64 text, the characters that depend on the value
        // alone are redacted.
        for prefix in ["", "x", "xy"] {
            let enc = STANDARD.encode(format!("{prefix}{value}; and more"));
            let got = r.redact(&enc);
            assert!(got.contains("[redacted]"), "{prefix:?}: {got}");
            assert!(got.len() < enc.len() / 2, "{prefix:?}: {got}");
        }
        // The wrapped lines of `base64`.
        let long = "k".repeat(100);
        let r = Redactor::new(std::slice::from_ref(&long));
        for line in STANDARD.encode(&long).as_bytes().chunks(76) {
            let line = std::str::from_utf8(line).unwrap();
            assert!(r.redact(line).contains("[redacted]"), "{line}");
        }
    }

    /// A form that starts before the cap is replaced whole, never cut in the middle.
    #[test]
    fn a_form_across_the_cap_is_redacted_whole() {
        let r = Redactor::new(&["0123456789abcdef".to_string()]);
        let text = format!("{}0123456789abcdef tail", "a".repeat(10));
        for cap in 0..text.len() + 2 {
            let (got, shown) = r.redact_capped(&text, cap);
            assert!(!got.contains("0123"), "cap {cap}: {got}");
            assert!(shown <= text.len());
            if cap > 10 {
                assert!(got.contains("[redacted]"), "cap {cap}: {got}");
            }
        }
        // Overlapping occurrences count as one.
        let r = Redactor::new(&["abcabc".to_string()]);
        assert_eq!(r.redact("xabcabcabcx"), "x[redacted]x");
    }

    #[test]
    fn lines_are_split_kept_up_to_the_limit_and_counted() {
        let mut s = LineSplitter::new(4);
        let mut got = Vec::new();
        let mut emit = |k: &[u8], d: u64| got.push((k.to_vec(), d));
        s.push(b"ab\ncdefgh", &mut emit);
        s.push(b"ij\n\nxyz", &mut emit);
        s.flush(&mut emit);
        s.flush(&mut emit);
        assert_eq!(
            got,
            vec![
                (b"ab".to_vec(), 0),
                (b"cdef".to_vec(), 4),
                (b"".to_vec(), 0),
                (b"xyz".to_vec(), 0)
            ]
        );
    }

    #[test]
    fn loggable_lines_are_lossy_escaped_and_cut() {
        let r = Redactor::new(&["s3cr3t-value".to_string()]);
        let (line, cut) = loggable_line(b"a\xff\x1b[31mred s3cr3t-value\r", 0, &r);
        assert_eq!(line, "a\u{fffd}\\u{1b}[31mred [redacted]");
        assert!(!cut);
        let long = vec![b'x'; MAX_LOGGED_LINE + 100];
        let (line, cut) = loggable_line(&long, 50, &r);
        assert!(cut);
        assert_eq!(
            line,
            format!("{} [… 150 more bytes]", "x".repeat(MAX_LOGGED_LINE))
        );
    }

    /// Invalid UTF-8 and a 10 MB line are read to the end: the hook does not die of SIGPIPE.
    #[tokio::test]
    async fn invalid_utf8_and_a_long_line_are_drained() {
        let script =
            "printf 'bad \\377\\n'; head -c 10485760 /dev/zero | tr '\\000' x; echo; echo done";
        run_one(&hook(&["sh", "-c", script], 60_000), env(), None, &[])
            .await
            .unwrap();
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
