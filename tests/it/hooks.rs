//! Rotation hooks and their process groups, end to end: a hook that leaves a background child
//! running when the daemon is told to stop (SIGTERM) must not outlive the daemon.

use std::time::Duration;

use crate::support::{
    Daemon, Moto, free_port, http, process_is_dead, wait_for_line, wait_process_dead,
};

const TOKEN: &str = "test-admin-token-hooks-0123456789";

/// SIGTERM while a rotation's finish hook runs (its timeout far away): the daemon stops, and
/// the hook's shell and the `sleep 60` it started in the background both die with it.
#[tokio::test]
async fn sigterm_kills_a_running_hooks_background_child() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    client
        .create_secret()
        .name("app/hooked")
        .secret_string("value-0")
        .send()
        .await
        .expect("create the secret");
    let marks = tempfile::tempdir().expect("temp dir");
    let child_file = marks.path().join("child");
    let shell_file = marks.path().join("shell");
    // The pid files are written to a temporary name and moved, so a line seen is complete.
    let script = format!(
        "echo $$ > {s}.tmp && mv {s}.tmp {s}; sleep 60 & echo $! > {c}.tmp && mv {c}.tmp {c}; wait",
        s = shell_file.display(),
        c = child_file.display()
    );
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"HOOKED\"\nid = \"app/hooked\"\nrotation = {{ strategy = \"random\" }}\n\
         hooks = [{{ on = \"finish\", command = [\"sh\", \"-c\", {script:?}], timeout = \"120s\" }}]\n",
        moto.endpoint()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let d = Daemon::start_in_env(dir, free_port(), &config, &[("KW_TEST_TOKEN", TOKEN)]).await;
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url("/rotate/HOOKED"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 202, "rotate: {body}\nlog:\n{}", d.log());

    let shell: u32 = wait_for_line(&shell_file, Duration::from_secs(30))
        .parse()
        .expect("the shell's pid");
    let child: u32 = wait_for_line(&child_file, Duration::from_secs(30))
        .parse()
        .expect("the child's pid");
    assert!(
        !process_is_dead(child),
        "the background child runs before the stop"
    );

    let log_dir = d.terminate(Duration::from_secs(20));
    let log = std::fs::read_to_string(log_dir.path().join("keywarden.log")).unwrap_or_default();
    assert!(
        wait_process_dead(shell, Duration::from_secs(5)),
        "the hook's shell {shell} outlived the daemon; log:\n{log}"
    );
    let child_died = wait_process_dead(child, Duration::from_secs(5));
    if !child_died {
        // Do not leave it behind for the rest of the suite.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &child.to_string()])
            .status();
    }
    assert!(
        child_died,
        "the hook's background child {child} outlived the daemon (SIGTERM); log:\n{log}"
    );
}

/// The configuration of one `random` secret `NOISY` (id `app/noisy`) whose `test`, `finish` and
/// `finalize` hooks each run `sh -c script`.
fn hooked_config(moto: &Moto, script: &str) -> String {
    let hook = |on: &str| {
        format!("{{ on = \"{on}\", command = [\"sh\", \"-c\", {script:?}], timeout = \"60s\" }}")
    };
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [poll]\nmetadata_every = \"1s\"\n\
         [state]\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"NOISY\"\nid = \"app/noisy\"\nrotation = {{ strategy = \"random\" }}\n\
         hooks = [{}, {}, {}]\n",
        moto.endpoint(),
        hook("test"),
        hook("finish"),
        hook("finalize"),
    )
}

/// Starts the daemon on `config` (with `KEYWARDEN_LOG=log` when given), rotates `NOISY` and waits
/// for the rotation to be done; returns the daemon and the rotation's JSON.
async fn rotate_noisy_logged(config: &str, log: Option<&str>) -> (Daemon, serde_json::Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = vec![("KW_TEST_TOKEN", TOKEN)];
    if let Some(filter) = log {
        env.push(("KEYWARDEN_LOG", filter));
    }
    let d = Daemon::start_in_env(dir, free_port(), config, &env).await;
    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http(
        "POST",
        &d.url("/rotate/NOISY"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(status, 202, "rotate: {body}\nlog:\n{}", d.log());
    let body: serde_json::Value = serde_json::from_str(&body).expect("rotate JSON");
    let id = body["rotation_id"]
        .as_str()
        .expect("rotation id")
        .to_string();
    let done = d
        .wait_rotation(&id, &["done"], Duration::from_secs(90))
        .await;
    (d, done)
}

/// [`rotate_noisy_logged`] at the tests' usual log level (debug).
async fn rotate_noisy(config: &str) -> (Daemon, serde_json::Value) {
    rotate_noisy_logged(config, None).await
}

/// `text` without its ANSI colour sequences (the text log colours field names).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Issue #15, point 7: hook output lines are logged at debug only; at info each stream of each
/// hook gets one digest line: lines, bytes, lines cut, lines not logged, and the first 12 hex
/// digits of the SHA-256 of the logged (redacted) lines.
#[tokio::test]
async fn hook_output_is_logged_at_debug_with_a_digest_at_info() {
    use sha2::Digest as _;
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    client
        .create_secret()
        .name("app/noisy")
        .secret_string("value-0-digest")
        .send()
        .await
        .expect("create the secret");
    let script = "echo first-output-line; echo second-output-line";
    let config = hooked_config(&moto, script);
    let (d, _) = rotate_noisy_logged(&config, Some("info")).await;
    let log = strip_ansi(&d.log());
    assert!(
        !log.contains("first-output-line"),
        "hook output is logged at info; log:\n{log}"
    );
    let logged = "first-output-line\nsecond-output-line\n";
    let hash: String = sha2::Sha256::digest(logged.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let digests: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Hook output digest.") && l.contains("stream=\"stdout\""))
        .collect();
    assert_eq!(
        digests.len(),
        3,
        "one stdout digest per hook (test, finish, finalize); log:\n{log}"
    );
    for line in digests {
        for field in [
            "lines=2",
            "bytes=37",
            "cut=0",
            "unlogged=0",
            &format!("sha256={hash}"),
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
    }
    drop(d);
    let (d, _) = rotate_noisy_logged(&config, Some("debug")).await;
    let log = strip_ansi(&d.log());
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("line=first-output-line")),
        "hook output is not logged at debug; log:\n{log}"
    );
}

/// Issue #15, point 7: a hook that writes invalid UTF-8 and then one 10 MB line before exiting 0
/// passes: its output is read to the end (no SIGPIPE), decoded lossily, and the long line is
/// logged cut to `MAX_LOGGED_LINE` bytes with a note of what was left out.
#[tokio::test]
async fn invalid_utf8_and_a_10_mb_line_do_not_fail_the_hook() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    client
        .create_secret()
        .name("app/noisy")
        .secret_string("value-0-noisy")
        .send()
        .await
        .expect("create the secret");
    let script = "printf 'bad \\377\\376 bytes\\n'; \
                  head -c 10485760 /dev/zero | tr '\\000' x; echo; \
                  printf 'err \\300\\n' >&2; echo after-the-long-line";
    let (d, done) = rotate_noisy(&hooked_config(&moto, script)).await;
    assert_eq!(done["state"], "done", "{done:#}");
    let log = d.log();
    assert!(
        log.contains("after-the-long-line"),
        "the line after the long one was not logged; log (start):\n{}",
        &log[..log.len().min(4000)]
    );
    assert!(
        log.contains("bad \u{fffd}\u{fffd} bytes"),
        "invalid UTF-8 is not logged lossily"
    );
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 16 * 1024,
        "a log line of {longest} bytes: hook output lines are not capped"
    );
    let xs = log
        .lines()
        .find(|l| l.contains("xxxxxxxxxxxxxxxx"))
        .expect("the long line is logged (cut)");
    let run = xs.split(|c| c != 'x').map(str::len).max().unwrap_or(0);
    assert_eq!(
        run,
        keywarden::rotation::hooks::MAX_LOGGED_LINE,
        "{xs:.200}"
    );
    assert!(
        xs.contains(&format!(
            "{} more bytes",
            10_485_760 - keywarden::rotation::hooks::MAX_LOGGED_LINE
        )),
        "the cut is not noted: {:.200}",
        &xs[xs.len().saturating_sub(300)..]
    );
}

/// The encoded forms of `s` a hook could print: standard and URL-safe base64 with and without
/// padding, the 76-column lines of `base64`, lower and upper hex, JSON string escaping (serde's and
/// Python's ASCII-only one), and each line of a multi-line value.
fn encoded_forms(s: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let b = s.as_bytes();
    let mut out = vec![
        s.to_string(),
        STANDARD.encode(b),
        STANDARD_NO_PAD.encode(b),
        URL_SAFE.encode(b),
        URL_SAFE_NO_PAD.encode(b),
        b.iter().map(|x| format!("{x:02x}")).collect(),
        b.iter().map(|x| format!("{x:02X}")).collect(),
    ];
    let std = STANDARD.encode(b);
    out.extend(
        std.as_bytes()
            .chunks(76)
            .filter(|c| c.len() >= 8)
            .map(|c| String::from_utf8_lossy(c).into_owned()),
    );
    let json = serde_json::to_string(s).expect("JSON string");
    out.push(json[1..json.len() - 1].to_string());
    let mut ascii = String::new();
    for c in json[1..json.len() - 1].chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out.push(ascii);
    out.extend(s.lines().filter(|l| l.len() >= 8).map(str::to_string));
    out.sort();
    out.dedup();
    out
}

/// Issue #15, point 7: a hook (test, finish and finalize) that prints the old and the new value,
/// and each string field of the old one, in every encoded form: none of those forms is in the
/// daemon's log (debug level), while the hook's other output is.
#[tokio::test]
async fn encoded_forms_of_the_values_are_redacted_from_hook_output() {
    let moto = Moto::start();
    let client = moto.secrets_client().await;
    let old = r#"{"password": "Old-p\"ss\\w\u00f6rd/canary-8d1e+?>", "note": "first line canary\nsecond line canary"}"#;
    client
        .create_secret()
        .name("app/noisy")
        .secret_string(old)
        .send()
        .await
        .expect("create the secret");
    let printer = r#"
import base64, binascii, json, os, sys, textwrap
import boto3
sm = boto3.client("secretsmanager", endpoint_url=sys.argv[1], region_name="us-east-1")
sid = os.environ["KEYWARDEN_SECRET_ID"]
vals = [sm.get_secret_value(SecretId=sid, VersionId=os.environ["KEYWARDEN_VERSION_ID"])["SecretString"]]
for stage in ("AWSCURRENT", "AWSPREVIOUS"):
    try:
        vals.append(sm.get_secret_value(SecretId=sid, VersionStage=stage)["SecretString"])
    except Exception:
        pass
items = list(vals)
for v in vals:
    try:
        items += [x for x in json.loads(v).values() if isinstance(x, str)]
    except ValueError:
        pass
for s in items:
    b = s.encode()
    print("raw", s)
    for enc in (base64.b64encode(b), base64.urlsafe_b64encode(b)):
        e = enc.decode()
        print("b64", e, "nopad", e.rstrip("="), "tail")
    print(textwrap.fill(base64.b64encode(b).decode(), 76))
    print("hex", binascii.hexlify(b).decode(), binascii.hexlify(b).decode().upper())
    print("json", json.dumps(s), json.dumps(s, ensure_ascii=False), "in", json.dumps({"v": s}))
    print("marker-line-kept")
"#;
    let script = format!(
        "{} -c {} {}",
        crate::support::venv_python().display(),
        shell_quote(printer),
        moto.endpoint()
    );
    let (d, done) = rotate_noisy(&hooked_config(&moto, &script)).await;
    let new_version = done["version_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_default();
    let log = d.log();
    assert!(
        log.contains("marker-line-kept"),
        "the hooks' output is not logged; log:\n{log}"
    );
    let new = client
        .get_secret_value()
        .secret_id("app/noisy")
        .send()
        .await
        .expect("read the new value")
        .secret_string()
        .unwrap_or_default()
        .to_string();
    assert_ne!(new, old, "the value was rotated ({new_version})");
    let mut secrets = vec![old.to_string(), new.clone()];
    let fields: serde_json::Value = serde_json::from_str(old).expect("old value is JSON");
    for v in fields.as_object().expect("an object").values() {
        secrets.push(v.as_str().expect("a string field").to_string());
    }
    let mut leaked = Vec::new();
    for s in &secrets {
        for form in encoded_forms(s) {
            if log.contains(&form) {
                leaked.push(form);
            }
        }
    }
    assert!(
        leaked.is_empty(),
        "encoded forms of a value are in the log: {leaked:?}\nlog:\n{log}"
    );
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
