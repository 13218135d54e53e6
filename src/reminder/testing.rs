//! Fixtures shared by the unit tests of the reminder folder: a status, a key and a
//! configuration. Compiled only for tests; nothing outside `reminder/` may import it.

use std::path::Path;

use crate::config::{Config, Severity, Strategy};
use crate::domain::view::{Managed, SecretStatus};
use crate::reminder::plan::ReminderKey;

/// One day in seconds.
pub(super) const DAY: i64 = 86_400;

/// The status of a present, inventory-managed, critical dual-key secret rotated 90 days
/// before `due`.
pub(super) fn status(name: &str, due: Option<i64>) -> SecretStatus {
    SecretStatus {
        name: name.to_string(),
        target: Default::default(),
        id: format!("svc/{name}"),
        arn: Some(format!(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/{name}-AbCdEf"
        )),
        managed: Managed::Inventory,
        severity: Severity::Critical,
        impact: "User auth compromised".to_string(),
        strategy: Strategy::DualKey,
        present: true,
        deletion_scheduled: false,
        last_rotated: due.map(|d| d - 90 * DAY),
        interval_seconds: Some(90 * DAY),
        due,
        overdue: false,
        scheduled: None,
        rotation_enabled: false,
        pending: false,
        last_accessed: None,
        current_version: Some("v1".to_string()),
        current_created: None,
        observed_at: 0,
    }
}

/// A key.
pub(super) fn key(secret: &str, due: i64, lead_seconds: i64) -> ReminderKey {
    ReminderKey {
        secret: secret.to_string(),
        due,
        lead_seconds,
    }
}

/// A configuration with `[reminders]` on topic `t`, `extra` after it, and one inventory secret
/// `JWT_SECRET` with one declared consumer and a window.
pub(super) fn config_with(extra: &str) -> Config {
    let text = format!(
        "[reminders]\nsns_topic_arn = \"arn:aws:sns:us-east-1:123456789012:t\"\n{extra}\n\
         [[secret]]\nname = \"JWT_SECRET\"\nid = \"svc/JWT_SECRET\"\nseverity = \"critical\"\n\
         consumers = [\"arn:aws:sts::123456789012:assumed-role/event-service-*/*\"]\n\
         window = \"cron(0 3 ? * TUE *)\"\n"
    );
    crate::config::parse(&text, Path::new("t.toml")).unwrap()
}
