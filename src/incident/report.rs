//! The incident report (JSON and Markdown), the security team's notice, and the list of what a
//! human must still do. Pure functions of the incident document, except [`write_files`].

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{Incident, StepState};
use crate::config::SecretSpec;
use crate::domain::Strategy;

fn time_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn time_s(s: i64) -> String {
    time_ms(s.saturating_mul(1000))
}

/// A table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.replace(['\n', '\r'], " ").replace('|', "\\|")
}

/// What a human must still do after the incident: keywarden cannot reach these.
pub fn todo(inc: &Incident, spec: Option<&SecretSpec>) -> Vec<String> {
    let mut out = Vec::new();
    let rotated = inc
        .step("rotate")
        .is_some_and(|s| s.state == StepState::Done);
    if !rotated {
        out.push(format!(
            "The rotation did not complete: rotate {} by hand now (or fix the cause and run `keywarden compromised {}` again); the compromised value may still work.",
            inc.secret, inc.secret
        ));
    }
    if let Some(f) = &inc.verify_failing {
        out.push(format!(
            "Fix the consumer behind verify check {}: it {} after the compromise rotation (last value: {}). The rotation is never rolled back (that would restore the leaked value), so that consumer stays broken until it loads the new value (restart it or make it re-read AWSCURRENT){}.",
            f.check,
            if f.failing_now { "still fails" } else { "failed" },
            f.value,
            spec.map(|s| if s.consumers.is_empty() {
                String::new()
            } else {
                format!("; declared consumers: {}", s.consumers.join(", "))
            })
            .unwrap_or_default()
        ));
    }
    match inc.strategy {
        Strategy::DualKey => out.push(
            "Invalidate sessions and tokens issued with the old key in systems keywarden does not manage: JWTs already issued stay valid wherever a verifier still holds the old key (until it reloads), and refresh tokens or server-side sessions created from them survive; revoke them.".into(),
        ),
        Strategy::PrimarySecondary => out.push(
            "Confirm the re-encryption hook re-encrypted every record under the new key; data encrypted with the old key by a consumer that had not reloaded cannot be decrypted now.".into(),
        ),
        Strategy::Postgres => out.push(
            "Check connection poolers and replicas (PgBouncer, read replicas, logical subscribers) for connections or copies of the old user's credentials; keywarden terminated the old user's sessions on the primary only.".into(),
        ),
        Strategy::Redis => out.push(
            "Check proxies and replicas (Sentinel, Cluster nodes, twemproxy) for connections authenticated with the old password; keywarden killed the old password's clients on the configured server only.".into(),
        ),
        Strategy::Elasticache => out.push(
            "Connections that authenticated with the old AUTH token before the SET may stay open (keywarden cannot close them on ElastiCache): restart the clients (a rolling restart) and check any proxy in front of the group.".into(),
        ),
        Strategy::Random => out.push(
            "Invalidate anything derived from the old value (service tokens, signed requests, cached sessions) in the services that accept it.".into(),
        ),
        Strategy::Lambda => out.push(
            "The rotation Lambda changed the value: verify the backing system no longer accepts the old value (keywarden cannot check a Lambda's target).".into(),
        ),
        Strategy::None => {}
    }
    out.push("Purge downstream copies and caches of the old value (CI/CD variables, .env files, config maps, application caches, backups of the secret).".into());
    out.push(format!(
        "Confirm every consumer reloaded the new value (restarted or re-read AWSCURRENT){}.",
        spec.map(|s| if s.consumers.is_empty() {
            String::new()
        } else {
            format!("; declared consumers: {}", s.consumers.join(", "))
        })
        .unwrap_or_default()
    ));
    match &inc.audit {
        Some(a) => {
            let undeclared: Vec<&str> = a
                .readers
                .iter()
                .filter(|r| !r.declared && r.reads > 0)
                .map(|r| r.principal.as_str())
                .collect();
            if !undeclared.is_empty() {
                out.push(format!(
                    "Review the undeclared readers (possible source of the leak; revoke their access if they should not read it): {}.",
                    undeclared.join(", ")
                ));
            }
            if !a.flagged.is_empty() {
                out.push(format!(
                    "Review the {} access finding(s) flagged on this secret.",
                    a.flagged.len()
                ));
            }
            out.push(format!(
                "CloudTrail delivers events minutes late: the reads just before the incident may be missing from the audit; run `keywarden consumers {} --since 1d` again in 30 minutes.",
                inc.secret
            ));
        }
        None => out.push(
            "Audit CloudTrail for reads of the secret by hand: the audit did not run.".into(),
        ),
    }
    if inc
        .step("notify")
        .is_some_and(|s| s.state != StepState::Done)
    {
        out.push("Notify the security team by hand: the SNS notice was not sent.".into());
    }
    out.push(
        "Find how the value leaked and close that path (logs, repositories, tickets, chat).".into(),
    );
    out
}

/// The actions taken, one sentence each.
pub fn actions(inc: &Incident) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = &inc.finalized_earlier_rotation {
        out.push(format!(
            "Ended the grace of rotation {r} at once: its previous key no longer works."
        ));
    }
    if let Some(r) = &inc.preempted_rotation {
        out.push(format!(
            "Stopped rotation {r} before its finish (AWSCURRENT untouched) so the compromise rotation could start at once."
        ));
    }
    for s in &inc.steps {
        if let Some(m) = &s.message {
            out.push(format!("{} ({}): {}", s.name, s.state.as_str(), m));
        }
    }
    out
}

/// The Markdown report.
pub fn markdown(inc: &Incident) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "# Compromise incident {}: {}\n",
        inc.incident_id, inc.secret
    );
    let _ = writeln!(m, "| field | value |\n|---|---|");
    for (k, v) in [
        ("status", inc.status.as_str().to_string()),
        ("secret", inc.secret.clone()),
        ("Secrets Manager id", inc.secret_id.clone()),
        ("strategy", inc.strategy.to_string()),
        ("impact", inc.impact.clone()),
        ("reason", inc.reason.clone()),
        ("reported by", inc.reported_by.clone()),
        ("opened", time_ms(inc.opened_at_ms)),
        ("closed", inc.closed_at_ms.map(time_ms).unwrap_or_default()),
        ("rotation", inc.rotation_id.clone().unwrap_or_default()),
        (
            "new AWSCURRENT version",
            inc.new_version_id.clone().unwrap_or_default(),
        ),
        (
            "previous version",
            inc.previous_version_id.clone().unwrap_or_default(),
        ),
    ] {
        let _ = writeln!(m, "| {k} | {} |", cell(&v));
    }
    let failed: Vec<&str> = inc
        .steps
        .iter()
        .filter(|s| s.state == StepState::Failed)
        .map(|s| s.name.as_str())
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(m, "\n**Failed steps:** {}", failed.join(", "));
    }

    let _ = writeln!(
        m,
        "\n## Timeline\n\n| time (UTC) | what | outcome | detail |\n|---|---|---|---|"
    );
    let mut rows: Vec<(i64, String, String, String)> = vec![(
        inc.opened_at_ms,
        "incident opened".into(),
        "ok".into(),
        format!("reported by {}", inc.reported_by),
    )];
    for s in &inc.steps {
        if let Some(t) = s.started_at_ms {
            rows.push((t, format!("{} started", s.name), "".into(), String::new()));
        }
        if let Some(t) = s.ended_at_ms {
            rows.push((
                t,
                format!("{} ended", s.name),
                s.state.as_str().into(),
                s.message.clone().unwrap_or_default(),
            ));
        }
    }
    for e in &inc.rotation_events {
        rows.push((
            e.at.saturating_mul(1000),
            format!("rotation: {}", e.step),
            e.outcome.clone(),
            e.message.clone().unwrap_or_default(),
        ));
    }
    rows.sort_by_key(|r| r.0);
    for (t, what, outcome, detail) in rows {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} |",
            time_ms(t),
            cell(&what),
            cell(&outcome),
            cell(&detail)
        );
    }

    let _ = writeln!(m, "\n## Actions taken\n");
    for a in actions(inc) {
        let _ = writeln!(m, "- {a}");
    }
    if let Some(t) = inc.rotated_at {
        let _ = writeln!(m, "- AWSCURRENT moved to the new version at {}.", time_s(t));
    }

    if let Some(f) = &inc.verify_failing {
        let _ = writeln!(
            m,
            "\n## Consumer checks after the rotation\n\n| check | last failing value | still failing | watch rounds |\n|---|---|---|---|\n| {} | {} | {} | {} |\n\nNever rolled back: a compromise rotation keeps the new value; fix the consumer.",
            cell(&f.check),
            cell(&f.value),
            if f.failing_now { "yes" } else { "no" },
            f.rounds
        );
    }

    let _ = writeln!(m, "\n## Access audit\n");
    match &inc.audit {
        Some(a) => {
            let _ = writeln!(
                m,
                "Log group `{}`, {} to {}: {} log event(s) read, {} skipped as malformed.\n",
                a.log_group, a.from, a.until, a.events_read, a.skipped_records
            );
            if a.readers.is_empty() {
                let _ = writeln!(m, "No reads of the secret in the window.");
            } else {
                let _ = writeln!(
                    m,
                    "| principal | reads | denied | source IPs | first seen | last seen | declared | flagged |\n|---|---|---|---|---|---|---|---|"
                );
                for r in &a.readers {
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {} | {} | {} | {} | {} |",
                        cell(&r.principal),
                        r.reads,
                        r.denied,
                        cell(&r.source_ips.join(", ")),
                        r.first_seen,
                        r.last_seen,
                        if r.declared { "yes" } else { "**no**" },
                        cell(&r.flags.join(", "))
                    );
                }
            }
            if !a.flagged.is_empty() {
                let _ = writeln!(
                    m,
                    "\n### Flagged by the access poller\n\n| time | kind | principal | source IP | event | detail |\n|---|---|---|---|---|---|"
                );
                for f in &a.flagged {
                    let _ = writeln!(
                        m,
                        "| {} | {} | {} | {} | {} | {} |",
                        f.time,
                        f.kind,
                        cell(&f.principal),
                        cell(f.source_ip.as_deref().unwrap_or("")),
                        cell(&f.event_name),
                        cell(&f.detail)
                    );
                }
            }
        }
        None => {
            let msg = inc
                .step("audit")
                .and_then(|s| s.message.clone())
                .unwrap_or_else(|| "not run".into());
            let _ = writeln!(m, "No audit: {msg}.");
        }
    }

    let _ = writeln!(m, "\n## What a human must still do\n");
    for t in &inc.todo {
        let _ = writeln!(m, "- [ ] {t}");
    }
    let _ = writeln!(
        m,
        "\n_keywarden never records secret values; this report holds none._"
    );
    m
}

/// The SNS notice: subject and body.
pub fn notice(inc: &Incident, base_url: &str, report_dir: &Path) -> (String, String) {
    let mut subject = format!("[incident] {} compromised: rotated at once", inc.secret);
    if !subject.is_ascii() || subject.len() >= 100 {
        subject = format!("[incident] compromise {}", inc.incident_id);
    }
    let mut b = String::new();
    let _ = writeln!(
        b,
        "Compromise incident {} on secret {}.",
        inc.incident_id, inc.secret
    );
    let _ = writeln!(b);
    facts(&mut b, inc);
    let _ = writeln!(b);
    let _ = writeln!(b, "What keywarden did:");
    for a in actions(inc) {
        let _ = writeln!(b, "- {a}");
    }
    let _ = writeln!(b);
    let _ = writeln!(
        b,
        "Report: {base_url}/incidents/{}/report.md (file {})",
        inc.incident_id,
        report_dir.join(format!("{}.md", inc.incident_id)).display()
    );
    let _ = writeln!(b, "Status: {base_url}/incidents/{}", inc.incident_id);
    let _ = writeln!(b);
    let _ = writeln!(
        b,
        "The report lists what a human must still do (sessions and tokens in systems keywarden does not manage, downstream caches, undeclared readers). This message contains no secret value."
    );
    (subject, b)
}

/// The lines both notices start with: the secret, its impact, the reason, the reporter, the
/// opening time.
fn facts(b: &mut String, inc: &Incident) {
    let _ = writeln!(b, "Secret:      {} ({})", inc.secret, inc.secret_id);
    let _ = writeln!(b, "Impact:      {}", inc.impact);
    let _ = writeln!(b, "Reason:      {}", inc.reason);
    let _ = writeln!(b, "Reported by: {}", inc.reported_by);
    let _ = writeln!(b, "Opened:      {}", time_ms(inc.opened_at_ms));
}

/// The subject and body of the first notice (`kind = incident_opened`), sent as soon as the
/// incident is journaled: what was reported, by whom, where to follow it, and what keywarden
/// does next. Never a value.
pub fn opened_notice(inc: &Incident, base_url: &str, lookback: &str) -> (String, String) {
    let mut subject = format!(
        "[incident] {} reported compromised: rotating now",
        inc.secret
    );
    if !subject.is_ascii() || subject.len() >= 100 {
        subject = format!("[incident] compromise reported {}", inc.incident_id);
    }
    let mut b = String::new();
    let _ = writeln!(
        b,
        "Compromise incident {} opened on secret {}.",
        inc.incident_id, inc.secret
    );
    let _ = writeln!(b);
    facts(&mut b, inc);
    let _ = writeln!(b, "Follow:      {base_url}/incidents/{}", inc.incident_id);
    let _ = writeln!(b);
    let _ = writeln!(b, "What happens next, without waiting for anyone:");
    let _ = writeln!(
        b,
        "1. keywarden rotates the secret now, in compromise mode (no grace: the old value stops working as soon as the new one is current)."
    );
    let _ = writeln!(
        b,
        "2. It audits who read the secret in the last {lookback}."
    );
    let _ = writeln!(
        b,
        "3. A second notice (kind incident_report) follows with the report: what was done and what a human must still do."
    );
    let _ = writeln!(b);
    let _ = writeln!(b, "This message contains no secret value.");
    (subject, b)
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o640);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Writes `<id>.json` and `<id>.md` in `dir` (created if missing); returns both paths.
pub fn write_files(dir: &Path, inc: &Incident) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json_path = dir.join(format!("{}.json", inc.incident_id));
    let md_path = dir.join(format!("{}.md", inc.incident_id));
    let mut doc = serde_json::to_value(inc).map_err(std::io::Error::other)?;
    if let Some(o) = doc.as_object_mut() {
        o.insert("report_json".into(), serde_json::json!(json_path));
        o.insert("report_md".into(), serde_json::json!(md_path));
    }
    let mut json = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    json.push(b'\n');
    write_atomic(&json_path, &json)?;
    write_atomic(&md_path, markdown(inc).as_bytes())?;
    // The renames are durable only once the directory itself is on disk.
    std::fs::File::open(dir)?.sync_all()?;
    Ok((json_path, md_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Audit, AuditReader, new_incident};

    fn inc(strategy: &str) -> Incident {
        let cfg = crate::config::parse(
            &format!("[[secret]]\nname = \"A\"\nid = \"svc/a\"\nconsumers = [\"arn:aws:iam::1:role/app\"]\nrotation = {{ strategy = \"{strategy}\"{} }}\n", if matches!(strategy, "postgres" | "redis") { ", master_secret = \"m\"" } else { "" }),
            Path::new("t.toml"),
        )
        .unwrap();
        new_incident(
            "0123",
            &cfg.secrets[0],
            "pasted | in chat",
            "alice",
            1_700_000_000_000,
        )
    }

    #[test]
    fn todo_names_what_keywarden_cannot_do() {
        for (strategy, needle) in [
            ("dual-key", "JWTs"),
            ("primary-secondary", "re-encrypt"),
            ("postgres", "PgBouncer"),
            ("redis", "Sentinel"),
            ("random", "derived from the old value"),
            ("lambda", "Lambda"),
        ] {
            let mut i = inc(strategy);
            i.steps[0].state = StepState::Done;
            let t = todo(&i, None).join("\n");
            assert!(t.contains(needle), "{strategy}: {t}");
            assert!(t.contains("Audit CloudTrail"), "{t}");
            assert!(t.contains("caches"), "{t}");
            assert!(!t.contains("rotate A by hand"), "{t}");
        }
        let i = inc("random");
        assert!(todo(&i, None).join("\n").contains("rotate A by hand"));
    }

    #[test]
    fn undeclared_readers_are_named() {
        let mut i = inc("random");
        i.audit = Some(Audit {
            log_group: "g".into(),
            from: "f".into(),
            until: "u".into(),
            events_read: 3,
            skipped_records: 0,
            readers: vec![
                AuditReader {
                    principal: "arn:aws:iam::1:user/mallory".into(),
                    reads: 2,
                    denied: 0,
                    source_ips: vec!["203.0.113.9".into()],
                    first_seen: "a".into(),
                    last_seen: "b".into(),
                    declared: false,
                    flags: vec!["undeclared_consumer".into()],
                },
                AuditReader {
                    principal: "arn:aws:iam::1:role/app".into(),
                    reads: 9,
                    denied: 0,
                    source_ips: vec![],
                    first_seen: "a".into(),
                    last_seen: "b".into(),
                    declared: true,
                    flags: vec![],
                },
            ],
            flagged: vec![],
        });
        let t = todo(&i, None).join("\n");
        assert!(
            t.contains("user/mallory") && !t.contains("role/app,"),
            "{t}"
        );
        let md = markdown(&i);
        assert!(
            md.contains("| arn:aws:iam::1:user/mallory | 2 | 0 | 203.0.113.9 |"),
            "{md}"
        );
        assert!(md.contains("pasted \\| in chat"), "{md}");
    }

    #[test]
    fn a_failing_consumer_check_is_listed_and_named_in_the_todo() {
        use crate::rotation::verify::{CheckFailure, VerifyState};
        let mut v = VerifyState {
            rounds: 2,
            ..VerifyState::default()
        };
        let mut i = inc("random");
        i.steps[0].state = StepState::Done;
        // No failing check: nothing listed.
        i.verify_failing = crate::incident::verify_finding(&v);
        assert!(i.verify_failing.is_none());
        assert!(!todo(&i, None).join("\n").contains("verify check"));
        assert!(!markdown(&i).contains("Consumer checks"));
        v.failing = Some(CheckFailure {
            check: "event-service-jwt".into(),
            value: "status 401 (expected 200)".into(),
        });
        v.consecutive.insert("event-service-jwt".into(), 2);
        i.verify_failing = crate::incident::verify_finding(&v);
        let spec = crate::config::parse(
            "[[secret]]\nname = \"A\"\nid = \"svc/a\"\nconsumers = [\"arn:aws:iam::1:role/event-service\"]\nrotation = { strategy = \"random\" }\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let t = todo(&i, Some(&spec.secrets[0]));
        assert!(
            t[0].contains("verify check event-service-jwt")
                && t[0].contains("still fails")
                && t[0].contains("status 401")
                && t[0].contains("role/event-service"),
            "{t:?}"
        );
        let md = markdown(&i);
        assert!(
            md.contains("| event-service-jwt | status 401 (expected 200) | yes | 2 |"),
            "{md}"
        );
        let dir = tempfile::tempdir().unwrap();
        i.todo = t;
        let (j, m) = write_files(dir.path(), &i).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(j).unwrap()).unwrap();
        assert_eq!(doc["verify_failing"]["check"], "event-service-jwt");
        assert_eq!(doc["verify_failing"]["failing_now"], true);
        assert!(
            doc["todo"][0]
                .as_str()
                .unwrap_or_default()
                .contains("event-service-jwt")
        );
        assert!(
            std::fs::read_to_string(m)
                .unwrap()
                .contains("event-service-jwt")
        );
        // A check that failed and then passed again is still listed, as no longer failing.
        v.consecutive.clear();
        i.verify_failing = crate::incident::verify_finding(&v);
        assert!(
            todo(&i, None)[0].contains("it failed after"),
            "{:?}",
            todo(&i, None)
        );
    }

    #[test]
    fn notice_has_the_facts_and_a_short_ascii_subject() {
        let i = inc("dual-key");
        let (subject, body) = notice(&i, "http://127.0.0.1:9717", Path::new("/r"));
        assert!(subject.is_ascii() && subject.len() < 100);
        assert!(subject.contains('A'));
        for needle in [
            "svc/a",
            "pasted | in chat",
            "alice",
            "http://127.0.0.1:9717/incidents/0123/report.md",
            "/r/0123.md",
        ] {
            assert!(body.contains(needle), "{needle}: {body}");
        }
    }

    #[test]
    fn files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (j, m) = write_files(&dir.path().join("sub"), &inc("random")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(j).unwrap()).unwrap();
        assert_eq!(v["incident_id"], "0123");
        assert!(
            std::fs::read_to_string(m)
                .unwrap()
                .starts_with("# Compromise incident 0123")
        );
    }
}
