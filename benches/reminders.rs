//! Reminder costs on a large fleet: the pure due computation each evaluation runs, rendering one
//! message, and the ledger work of a first evaluation (looking up and recording many intents).
//!
//! Run: `cargo bench --bench reminders`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keywarden::config::{Severity, Strategy};
use keywarden::domain::view::{Managed, SecretStatus};
use keywarden::reminder::{
    AccessInfo, LedgerStore, MessageContext, ReminderKey, due_reminders, render,
};
use keywarden::store::Store;

const DAY: i64 = 86_400;
const NOW: i64 = 1_800_000_000;

/// `n` secrets with due dates spread over the next 90 days (about 15% inside a 14-day lead).
fn fleet(n: usize) -> Vec<SecretStatus> {
    (0..n)
        .map(|i| {
            let due = NOW + (i as i64 * 7919) % (90 * DAY);
            SecretStatus {
                name: format!("service-{i}/secret"),
                target: Default::default(),
                id: format!("svc/service-{i}/secret"),
                arn: None,
                managed: Managed::Inventory,
                severity: Severity::High,
                impact: "Data breach".to_string(),
                strategy: Strategy::Random,
                present: true,
                deletion_scheduled: false,
                last_rotated: Some(due - 90 * DAY),
                interval_seconds: Some(90 * DAY),
                due: Some(due),
                overdue: false,
                scheduled: None,
                rotation_enabled: false,
                pending: false,
                last_accessed: None,
                current_version: None,
                current_created: None,
                observed_at: NOW,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let statuses = fleet(10_000);
    let leads = [
        Duration::from_secs(14 * 86_400),
        Duration::from_secs(86_400),
    ];
    c.bench_function("due_reminders 10k secrets, 2 leads", |b| {
        b.iter(|| due_reminders(statuses.iter().map(|s| (s, None)), &leads, NOW).len())
    });
    let key = ReminderKey {
        secret: statuses[0].name.clone(),
        due: statuses[0].due.unwrap_or(NOW),
        lead_seconds: 14 * DAY,
    };
    c.bench_function("render one message", |b| {
        b.iter(|| {
            render(
                &key,
                &MessageContext {
                    status: &statuses[0],
                    spec: None,
                    access: AccessInfo::Off,
                    planned: None,
                    now: NOW,
                    place: None,
                },
            )
            .body
            .len()
        })
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Store::open(&dir.path().join("state.db")).expect("store");
    let keys = due_reminders(statuses.iter().map(|s| (s, None)), &leads, NOW);
    let intents: Vec<_> = keys
        .iter()
        .map(|k| {
            let s = statuses
                .iter()
                .find(|s| s.name == k.secret)
                .expect("status of key");
            let ctx = MessageContext {
                status: s,
                spec: None,
                access: AccessInfo::Off,
                planned: None,
                now: NOW,
                place: None,
            };
            (k.clone(), render(k, &ctx))
        })
        .collect();
    eprintln!("{} reminders due in the 10k fleet", intents.len());
    let mut round = 0i64;
    c.bench_function("ledger_record all due intents (one transaction)", |b| {
        b.iter(|| {
            // A fresh due date each round so every row is new.
            round += 1;
            let fresh: Vec<_> = intents
                .iter()
                .map(|(k, m)| {
                    let mut k = k.clone();
                    k.due += round * 1_000_000_000;
                    (k, m.clone())
                })
                .collect();
            ledger.record_intents(&fresh, NOW).expect("record")
        })
    });
    c.bench_function("ledger_known all due keys (restart lookup)", |b| {
        b.iter(|| ledger.known(&keys).expect("lookup").len())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
