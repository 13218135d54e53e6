//! `keywarden status`: one metadata poll against AWS, plus the running daemon's anomaly counts
//! since its start (`GET /anomalies`, `per_secret`), printed as a table or JSON.
//!
//! [`rows`], [`render_table`] and [`short_duration`] are pure: they take the statuses, the
//! anomalies and `now`. Without a daemon to ask, the ANOMALIES column shows `-` (JSON `null`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::AnomalyKind;
use crate::domain::targets::{Targets, label_of_key};
use crate::domain::view::SecretStatus;
use crate::http::api::{AnomalyCounts, SecretAnomalies};
use crate::schedule::format_duration;

/// How long `status` waits for the daemon's anomaly counts.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(5);

/// A secret's anomalies since the daemon started, as `status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowAnomalies {
    /// How many.
    pub count: u64,
    /// The kind of the latest one (absent when none, or no longer among the daemon's recent ones).
    pub latest_kind: Option<AnomalyKind>,
    /// Its eventTime, seconds since the epoch.
    pub latest_at: Option<i64>,
}

/// One row of `keywarden status`: the secret's status, its age and the daemon's anomalies
/// (`None` when no daemon answered). `--output json` prints these rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusRow {
    /// The status fields (flattened in JSON).
    #[serde(flatten)]
    pub status: SecretStatus,
    /// The account it is read from.
    pub account: std::sync::Arc<str>,
    /// The region it is read from.
    pub region: std::sync::Arc<str>,
    /// Age of the current value in seconds at `now`.
    pub age_seconds: Option<i64>,
    /// Anomalies since the daemon started; `null` when no daemon answered.
    pub anomalies: Option<RowAnomalies>,
}

/// Pairs statuses with the daemon's per-secret anomalies (pure). `per_secret` is `None` when no
/// daemon answered; a secret it does not list has none.
pub fn rows(
    statuses: Vec<SecretStatus>,
    per_secret: Option<&[SecretAnomalies]>,
    targets: &Targets,
    now: i64,
) -> Vec<StatusRow> {
    let by_name: Option<HashMap<&str, &SecretAnomalies>> =
        per_secret.map(|l| l.iter().map(|a| (a.secret.as_str(), a)).collect());
    statuses
        .into_iter()
        .map(|status| {
            let anomalies = by_name.as_ref().map(|m| {
                m.get(status.name.as_str())
                    .map_or_else(RowAnomalies::default, |a| RowAnomalies {
                        count: a.count,
                        latest_kind: if a.count > 0 { a.latest_kind } else { None },
                        latest_at: if a.count > 0 { a.latest_at } else { None },
                    })
            });
            let place = targets.labels(status.target);
            StatusRow {
                account: place.account,
                region: place.region,
                age_seconds: status.last_rotated.map(|t| now - t),
                anomalies,
                status,
            }
        })
        .collect()
}

/// Asks the daemon at `server` for its per-secret anomaly counts. Never sends the admin token:
/// the anonymous summary carries the counts, and a daemon without a token (or with another one)
/// refuses any request that carries one. An error says why, for one line on stderr.
pub async fn fetch_anomalies(server: &str) -> Result<Vec<SecretAnomalies>, String> {
    let url = format!("{server}/anomalies");
    let call = crate::cli::remote::call("GET", &url, None);
    match tokio::time::timeout(DAEMON_TIMEOUT, call).await {
        Err(_) => Err(format!(
            "{url}: no answer within {}s",
            DAEMON_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((200, body))) => AnomalyCounts::deserialize(&body)
            .map(|c| c.per_secret)
            .map_err(|e| format!("{url}: unexpected answer: {e}")),
        Ok(Ok((status, _))) => Err(format!("{url}: answered {status}")),
    }
}

fn date(t: Option<i64>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
        .map_or_else(|| "-".to_string(), |d| d.format("%Y-%m-%d").to_string())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// A span in the largest whole unit that fits (pure): days from one day on, hours under a
/// day, minutes under an hour ("5d", "23h", "40m"). Negative spans count as zero.
pub fn short_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    if s >= 86_400 {
        format!("{}d", s / 86_400)
    } else if s >= 3_600 {
        format!("{}h", s / 3_600)
    } else {
        format!("{}m", s / 60)
    }
}

/// What the `DUE` column says beside the date.
fn due_note(s: &SecretStatus, now: i64) -> String {
    match s.due {
        None => String::new(),
        Some(d) if now > d => format!(" (overdue {})", short_duration(now - d)),
        Some(d) => format!(" (in {})", short_duration(d - now)),
    }
}

/// The `ANOMALIES` cell: `-` without a daemon, else the count and the latest kind.
fn anomalies_cell(a: Option<&RowAnomalies>) -> String {
    match a {
        None => "-".into(),
        Some(RowAnomalies {
            count,
            latest_kind: Some(kind),
            ..
        }) => format!("{count}, latest {}", kind.as_str()),
        Some(a) => a.count.to_string(),
    }
}

/// Renders the status table: one row per secret, columns aligned (by characters) however long
/// the names are.
pub fn render_table(rows: &[StatusRow], now: i64) -> String {
    let header = [
        "SECRET",
        "ACCOUNT",
        "REGION",
        "PRESENT",
        "AGE",
        "INTERVAL",
        "DUE",
        "SCHEDULED",
        "PENDING",
        "LAST ACCESSED",
        "ANOMALIES",
    ];
    let cells: Vec<[String; 11]> = rows
        .iter()
        .map(|r| {
            let s = &r.status;
            [
                label_of_key(&s.name).to_string(),
                if r.account.is_empty() {
                    "-".to_string()
                } else {
                    r.account.to_string()
                },
                r.region.to_string(),
                if s.deletion_scheduled {
                    "deleting".to_string()
                } else {
                    yes_no(s.present).to_string()
                },
                r.age_seconds.map_or("-".into(), short_duration),
                s.interval_seconds.map_or("-".into(), |i| {
                    format_duration(std::time::Duration::from_secs(i.max(0) as u64))
                }),
                format!("{}{}", date(s.due), due_note(s, now)),
                date(s.scheduled),
                yes_no(s.pending).to_string(),
                date(s.last_accessed),
                anomalies_cell(r.anomalies.as_ref()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Severity, Strategy};
    use crate::domain::view::Managed;

    const NOW: i64 = 1_800_000_000;

    fn status(name: &str) -> SecretStatus {
        SecretStatus {
            name: name.into(),
            target: Default::default(),
            id: format!("svc/{name}"),
            arn: None,
            managed: Managed::Inventory,
            severity: Severity::Critical,
            impact: String::new(),
            strategy: Strategy::DualKey,
            present: true,
            deletion_scheduled: false,
            last_rotated: Some(NOW - 95 * 86_400),
            interval_seconds: Some(90 * 86_400),
            due: Some(NOW - 5 * 86_400),
            overdue: true,
            scheduled: None,
            rotation_enabled: false,
            pending: false,
            last_accessed: None,
            current_version: None,
            current_created: None,
            observed_at: NOW,
        }
    }

    fn counts(secret: &str, count: u64, kind: Option<AnomalyKind>) -> SecretAnomalies {
        SecretAnomalies {
            secret: secret.into(),
            count,
            latest_kind: kind,
            latest_at: kind.map(|_| NOW - 600),
        }
    }

    fn targets() -> Targets {
        let t = Targets::new("eu-west-1");
        t.set_home_account("111122223333");
        t
    }

    #[test]
    fn table_shows_age_due_and_overdue() {
        let t = render_table(
            &rows(vec![status("JWT_SECRET")], None, &targets(), NOW),
            NOW,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("SECRET      ACCOUNT       REGION     PRESENT  AGE  INTERVAL"),
            "{t}"
        );
        assert!(lines[1].contains("95d"), "{t}");
        assert!(lines[1].contains("90d"), "{t}");
        assert!(lines[1].contains("(overdue 5d)"), "{t}");
    }

    /// Issue #21 point 3: "in 0d" for a secret due in 23 hours.
    #[test]
    fn under_a_day_is_shown_in_hours() {
        let mut s = status("A");
        s.last_rotated = Some(NOW - 5 * 3600);
        s.interval_seconds = Some(86_400);
        s.due = Some(NOW + 23 * 3600);
        let t = render_table(&rows(vec![s.clone()], None, &targets(), NOW), NOW);
        assert!(t.contains("(in 23h)"), "{t}");
        assert!(t.lines().nth(1).is_some_and(|l| l.contains(" 5h ")), "{t}");
        s.due = Some(NOW - 5 * 3600);
        let t = render_table(&rows(vec![s], None, &targets(), NOW), NOW);
        assert!(t.contains("(overdue 5h)"), "{t}");
    }

    #[test]
    fn short_durations_use_the_largest_whole_unit() {
        assert_eq!(short_duration(0), "0m");
        assert_eq!(short_duration(59), "0m");
        assert_eq!(short_duration(40 * 60), "40m");
        assert_eq!(short_duration(3_599), "59m");
        assert_eq!(short_duration(3_600), "1h");
        assert_eq!(short_duration(23 * 3_600 + 3_599), "23h");
        assert_eq!(short_duration(86_400), "1d");
        assert_eq!(short_duration(5 * 86_400 + 86_399), "5d");
        assert_eq!(short_duration(-10), "0m");
    }

    /// Issue #21 point 3: SPEC §9's anomalies column, count since start with the latest kind.
    #[test]
    fn anomalies_column_shows_count_and_latest_kind() {
        let daemon = [
            counts("DB", 3, Some(AnomalyKind::UnexpectedSource)),
            counts("OLD", 2, None),
        ];
        let list = vec![status("DB"), status("OLD"), status("QUIET")];
        let t = render_table(&rows(list.clone(), Some(&daemon), &targets(), NOW), NOW);
        let header = t.lines().next().unwrap_or_default();
        assert!(header.ends_with("  ANOMALIES"), "{t}");
        let row = |name: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_default()
                .to_string()
        };
        assert!(row("DB").ends_with("  3, latest unexpected_source"), "{t}");
        assert!(row("OLD").ends_with("  2"), "{t}");
        assert!(row("QUIET").ends_with("  0"), "{t}");
        // No daemon answered: unknown, not zero.
        let t = render_table(&rows(list, None, &targets(), NOW), NOW);
        assert!(t.lines().skip(1).all(|l| l.ends_with("  -")), "{t}");
    }

    /// Issue #21 point 3: every column starts at the same character in every line, whatever
    /// the length of the names (ASCII and not).
    #[test]
    fn table_stays_aligned_with_long_names() {
        let long = "event-service/a-very-long-discovered-secret-name-for-the-feature-flags";
        let mut short = status("A");
        short.due = Some(NOW + 3 * 3600);
        let mut accented = status("clé-de-chiffrement-des-clés-d-api");
        accented.pending = true;
        let daemon = [counts(long, 12, Some(AnomalyKind::DeniedBurst))];
        let t = render_table(
            &rows(
                vec![status(long), short, accented],
                Some(&daemon),
                &targets(),
                NOW,
            ),
            NOW,
        );
        let lines: Vec<Vec<char>> = t.lines().map(|l| l.chars().collect()).collect();
        let header: String = lines[0].iter().collect();
        let starts: Vec<usize> = [
            "PRESENT",
            "AGE",
            "INTERVAL",
            "DUE",
            "SCHEDULED",
            "PENDING",
            "LAST ACCESSED",
            "ANOMALIES",
        ]
        .iter()
        .map(|c| header.chars().count() - header[header.find(c).unwrap_or(0)..].chars().count())
        .collect();
        assert!(starts[0] >= long.len() + 2, "{t}");
        for line in &lines[1..] {
            for &at in &starts {
                assert!(
                    line.len() > at
                        && line[at - 1] == ' '
                        && line[at - 2] == ' '
                        && line[at] != ' ',
                    "column at {at} is not aligned:\n{t}"
                );
            }
        }
    }

    /// A daemon without an admin token (as `scripts/demo` ran before issue #21) refuses any
    /// request that carries one; `status` with `KEYWARDEN_ADMIN_TOKEN` set still gets the counts.
    #[tokio::test]
    async fn counts_come_from_a_daemon_without_a_token() {
        let config = crate::config::parse(
            "[[secret]]\nname = \"A\"\nid = \"svc/a\"\n",
            std::path::Path::new("t.toml"),
        );
        let Ok(config) = config else {
            panic!("test config: {config:?}")
        };
        let view = crate::domain::view::SharedView::default();
        view.write().access.insert(
            "A".into(),
            crate::domain::view::AccessFacts {
                anomalies: 2,
                ..Default::default()
            },
        );
        let state = crate::http::AppState {
            config: std::sync::Arc::new(config),
            view,
            metrics: std::sync::Arc::new(crate::telemetry::Metrics::new()),
            rotation: None,
            admin_token: None,
            incidents: None,
            limiter: crate::http::ActionLimiter::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(listener) = listener else {
            panic!("bind: {listener:?}")
        };
        let base = listener
            .local_addr()
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(crate::http::serve(
            listener,
            std::sync::Arc::new(state),
            stop.clone(),
        ));
        let got = fetch_anomalies(&base).await;
        stop.cancel();
        let _ = task.await;
        assert_eq!(got, Ok(vec![counts("A", 2, None)]));
    }

    /// Issue #21 point 3: `--output json` holds the table's fields, anomalies included.
    #[test]
    fn json_rows_hold_the_same_fields() {
        let daemon = [counts("DB", 3, Some(AnomalyKind::UnexpectedSource))];
        let v = serde_json::to_value(rows(vec![status("DB")], Some(&daemon), &targets(), NOW))
            .unwrap_or_default();
        let row = &v[0];
        for field in [
            "name",
            "present",
            "deletion_scheduled",
            "last_rotated",
            "interval_seconds",
            "due",
            "overdue",
            "scheduled",
            "pending",
            "last_accessed",
            "account",
            "region",
        ] {
            assert!(row.get(field).is_some(), "{field} missing: {v:#}");
        }
        assert_eq!(row["age_seconds"], 95 * 86_400, "{v:#}");
        assert_eq!(
            row["anomalies"],
            serde_json::json!({"count": 3, "latest_kind": "unexpected_source", "latest_at": NOW - 600}),
            "{v:#}"
        );
        let v = serde_json::to_value(rows(vec![status("DB")], None, &targets(), NOW))
            .unwrap_or_default();
        assert!(v[0]["anomalies"].is_null(), "{v:#}");
    }
}
