//! The planned-rotation section that `keywarden status` prints under its table (SPEC §11): one
//! line per secret with a planned time, when keywarden's scheduler will rotate it.
//!
//! [`render_planned`] is pure: it takes the statuses, the configured windows and `now`. It is
//! its own section, so the status table's columns stay as they are.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::DateTime;

use crate::config::SecretSpec;
use crate::domain::view::SecretStatus;

/// The section, or an empty string when no secret has a planned time.
pub fn render_planned(statuses: &[SecretStatus], secrets: &[SecretSpec], now: i64) -> String {
    let windows: HashMap<&str, &crate::schedule::ScheduleExpr> = secrets
        .iter()
        .filter_map(|s| s.window.as_ref().map(|w| (s.name.as_str(), w)))
        .collect();
    let rows: Vec<[String; 3]> = statuses
        .iter()
        .filter_map(|s| {
            let window = windows.get(s.name.as_str()).copied();
            let planned = s.planned(window, now)?;
            let when = DateTime::from_timestamp(planned, 0)?
                .format("%Y-%m-%d %H:%M UTC")
                .to_string();
            Some([s.name.clone(), when, window?.to_string()])
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let header = ["SECRET", "PLANNED", "WINDOW"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::from(
        "\nPlanned scheduled rotations (the last window opening before the due date, else the first after it):\n",
    );
    let [w0, w1, _] = widths;
    let _ = writeln!(out, "{:<w0$}  {:<w1$}  {}", header[0], header[1], header[2]);
    for [name, when, window] in &rows {
        let _ = writeln!(out, "{name:<w0$}  {when:<w1$}  {window}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Severity, Strategy};
    use crate::domain::view::Managed;

    fn status(name: &str, due: i64) -> SecretStatus {
        SecretStatus {
            name: name.into(),
            target: Default::default(),
            id: format!("svc/{name}"),
            arn: None,
            managed: Managed::Inventory,
            severity: Severity::High,
            impact: String::new(),
            strategy: Strategy::Random,
            present: true,
            deletion_scheduled: false,
            last_rotated: Some(due - 90 * 86_400),
            interval_seconds: Some(90 * 86_400),
            due: Some(due),
            overdue: false,
            scheduled: None,
            rotation_enabled: false,
            pending: false,
            last_accessed: None,
            current_version: None,
            current_created: None,
            observed_at: 0,
        }
    }

    #[test]
    fn lists_only_secrets_with_a_planned_time() {
        let text = "[[secret]]\nname = \"JWT_SECRET\"\nid = \"svc/JWT_SECRET\"\n\
                    window = \"cron(0 10 ? * MON *)\"\nrotation = { strategy = \"random\" }\n\
                    [[secret]]\nname = \"PLAIN\"\nid = \"svc/PLAIN\"\nrotation = { strategy = \"random\" }\n";
        let config = crate::config::parse(text, std::path::Path::new("t.toml")).unwrap();
        // Due Thursday 2026-11-26 12:00 UTC: planned Monday 2026-11-23 10:00.
        let due = 1_795_694_400;
        let now = due - 25 * 86_400;
        let out = render_planned(
            &[status("JWT_SECRET", due), status("PLAIN", due)],
            &config.secrets,
            now,
        );
        assert!(
            out.contains("JWT_SECRET  2026-11-23 10:00 UTC  cron(0 10 ? * MON *)\n"),
            "{out}"
        );
        assert!(!out.contains("PLAIN"), "{out}");
        assert_eq!(
            render_planned(&[status("PLAIN", due)], &config.secrets, now),
            ""
        );
    }
}
