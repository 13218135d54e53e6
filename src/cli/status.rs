//! `keywarden status`: one metadata poll against AWS, printed as a table or JSON.
//!
//! [`render_table`] is pure: it takes the statuses and `now`.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::domain::view::SecretStatus;
use crate::schedule::format_duration;

fn date(t: Option<i64>) -> String {
    t.and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
        .map_or_else(|| "-".to_string(), |d| d.format("%Y-%m-%d").to_string())
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// What the `DUE` column says beside the date.
fn due_note(s: &SecretStatus, now: i64) -> String {
    match s.due {
        None => String::new(),
        Some(d) if now > d => format!(" (overdue {}d)", (now - d).div_euclid(86_400)),
        Some(d) => format!(" (in {}d)", (d - now).div_euclid(86_400)),
    }
}

/// Renders the status table: one row per secret, columns aligned.
pub fn render_table(statuses: &[SecretStatus], now: i64) -> String {
    let header = [
        "SECRET",
        "PRESENT",
        "AGE",
        "INTERVAL",
        "DUE",
        "SCHEDULED",
        "PENDING",
        "LAST ACCESSED",
    ];
    let rows: Vec<[String; 8]> = statuses
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                if s.deletion_scheduled {
                    "deleting".to_string()
                } else {
                    yes_no(s.present).to_string()
                },
                s.age_days(now).map_or("-".into(), |d| format!("{d}d")),
                s.interval_seconds.map_or("-".into(), |i| {
                    format_duration(std::time::Duration::from_secs(i.max(0) as u64))
                }),
                format!("{}{}", date(s.due), due_note(s, now)),
                date(s.scheduled),
                yes_no(s.pending).to_string(),
                date(s.last_accessed),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
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
    for row in &rows {
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

    #[test]
    fn table_shows_age_due_and_overdue() {
        let now = 1_800_000_000;
        let s = SecretStatus {
            name: "JWT_SECRET".into(),
            id: "event-service/jwt-secret".into(),
            arn: None,
            managed: Managed::Inventory,
            severity: Severity::Critical,
            impact: String::new(),
            strategy: Strategy::DualKey,
            present: true,
            deletion_scheduled: false,
            last_rotated: Some(now - 95 * 86_400),
            interval_seconds: Some(90 * 86_400),
            due: Some(now - 5 * 86_400),
            overdue: true,
            scheduled: None,
            rotation_enabled: false,
            pending: false,
            last_accessed: None,
            current_version: None,
            observed_at: now,
        };
        let t = render_table(&[s], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("SECRET      PRESENT  AGE  INTERVAL"),
            "{t}"
        );
        assert!(lines[1].contains("95d"), "{t}");
        assert!(lines[1].contains("90d"), "{t}");
        assert!(lines[1].contains("(overdue 5d)"), "{t}");
    }
}
