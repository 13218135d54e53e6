//! `keywarden migrate-store --from sqlite --to dynamodb` (issue #18, point 6): a SQLite store
//! with every kind of record is copied into a DynamoDB table on moto, the copy reads back equal
//! through the same store traits the daemon uses, and a daemon started on the table serves the
//! same rotations and incidents.

use std::path::Path;

use keywarden::access::store::{AccessState, SliceCommit, StoredReader};
use keywarden::incident::store::IncidentStore;
use keywarden::reminder::{LedgerStore, Message, ReminderKey};
use keywarden::rotation::journal::{
    Detail, EventOutcome, JournalStore, State, Step, Trigger, Update,
};
use keywarden::store::Store;

use crate::support::{Daemon, Moto, dynamo_table, free_port, keywarden_command, uuid_like};

const GROUP: &str = "/aws/cloudtrail/migrate";

fn message(subject: &str) -> Message {
    Message {
        subject: subject.to_string(),
        body: format!("{subject} body"),
        attributes: vec![("secret".into(), "A".into())],
    }
}

/// A SQLite store holding a finished and a rolled-back rotation with their timelines, a
/// resolved incident and its first notice, a sent and a pending reminder, and an access slice.
fn fill(path: &Path, spec: &keywarden::config::SecretSpec) -> Store {
    let store = Store::open(path).expect("open the store");
    let detail = Detail {
        secret_id: "svc/a".into(),
        strategy: "random".into(),
        requested_at_ms: 1_000_000,
        ..Detail::default()
    };
    for (id, to) in [
        ("00000000000000000000000000000001", State::Done),
        ("00000000000000000000000000000002", State::RolledBack),
    ] {
        store
            .insert_rotation(id, "A", Trigger::Manual, &detail, 1_000)
            .unwrap()
            .unwrap();
        store
            .note_rotation(id, "create", EventOutcome::Ok, Some("created"), 1_001)
            .unwrap();
        let u = Update {
            from: (State::Running, Step::Create),
            step: Step::Done,
            state: to,
            attempts: 0,
            error: None,
            detail: &detail,
            event: ("finalize", EventOutcome::Ok, None),
        };
        assert!(store.update_rotation(id, &u, 1_002).unwrap());
    }
    let mut inc = keywarden::incident::new_incident("inc-1", spec, "leaked", "me", 2_000_000);
    assert!(store.create_incident(&inc).unwrap().is_ok());
    inc.status = keywarden::incident::Status::Resolved;
    inc.closed_at_ms = Some(2_100_000);
    store.save_incident(&inc).unwrap();
    store.record_opened_notice("inc-1", "sns-mid-1").unwrap();
    let sent = ReminderKey {
        secret: "A".into(),
        due: 5_000_000,
        lead_seconds: 14 * 86_400,
    };
    let pending = ReminderKey {
        secret: "A".into(),
        due: 6_000_000,
        lead_seconds: 14 * 86_400,
    };
    store
        .record_intents(
            &[
                (sent.clone(), message("sent one")),
                (pending.clone(), message("pending one")),
            ],
            3_000,
        )
        .unwrap();
    assert!(store.mark_sent(&sent, "sns-mid-2", 3_001).unwrap());
    store.count_failure(&pending, "sns down").unwrap();
    let now_ms = crate::support::now() * 1000;
    let readers = [StoredReader {
        secret: "A".into(),
        principal: "arn:aws:iam::123456789012:user/deploy".into(),
        first_seen_ms: now_ms - 60_000,
        last_seen_ms: now_ms - 1_000,
        reads: 7,
    }];
    store
        .commit_slice(
            &SliceCommit {
                log_group: GROUP,
                new_ids: &[("evt-1", now_ms - 2_000), ("evt-2", now_ms - 1_000)],
                readers: &readers,
                end_ms: now_ms,
                seen_horizon_ms: now_ms - 30 * 60_000,
                reader_horizon_ms: now_ms - 14 * 86_400_000,
            },
            &|| {},
        )
        .unwrap();
    store
}

fn migrate(config: &Path) -> (bool, String) {
    let out = keywarden_command()
        .args([
            "migrate-store",
            "--from",
            "sqlite",
            "--to",
            "dynamodb",
            "--config",
        ])
        .arg(config)
        .output()
        .expect("run keywarden migrate-store");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_store_copies_every_table_and_a_daemon_on_dynamodb_sees_it() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let table = format!("kw-mig-{}", &uuid_like()[..8]);
    let config = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\
         [server]\nlisten = \"{{listen}}\"\nadmin_token_env = \"KW_TEST_TOKEN\"\n\
         [state]\nbackend = \"dynamodb\"\ntable = \"{table}\"\npath = \"{{state}}\"\n\n\
         [[secret]]\nname = \"A\"\nid = \"svc/a\"\n",
        moto.endpoint()
    );
    let parsed = keywarden::config::parse(
        &config
            .replace("{listen}", "127.0.0.1:1")
            .replace("{state}", "x"),
        Path::new("t.toml"),
    )
    .unwrap();
    let source = fill(&dir.path().join("state.db"), &parsed.secrets[0]);
    let config_path = dir.path().join("keywarden.toml");
    std::fs::write(
        &config_path,
        config
            .replace("{listen}", &format!("127.0.0.1:{port}"))
            .replace(
                "{state}",
                &dir.path().join("state.db").display().to_string(),
            ),
    )
    .unwrap();

    let (ok, text) = migrate(&config_path);
    assert!(ok, "migrate-store failed: {text}");
    assert!(
        text.contains(&format!("to DynamoDB table {table}: 2 rotations, 1 incidents, 2 reminders, 1 access checkpoints, 2 event ids, 1 readers, 1 meta values")),
        "{text}"
    );
    // A second copy into the same table is refused: nothing is merged.
    let (ok, again) = migrate(&config_path);
    assert!(!ok, "a second copy must be refused: {again}");
    assert!(again.contains("already holds keywarden state"), "{again}");

    // The copy reads back equal through the traits the daemon uses.
    let t = dynamo_table(&moto.endpoint(), &table);
    let all = [
        State::Running,
        State::Grace,
        State::Done,
        State::Failed,
        State::RolledBack,
    ];
    assert_eq!(
        t.rotations_in_states(&all).unwrap(),
        source.rotations_in_states(&all).unwrap()
    );
    for r in source.recent_rotations(None, 10).unwrap() {
        assert_eq!(
            t.rotation_events(&r.id).unwrap(),
            source.rotation_events(&r.id).unwrap(),
            "timeline of {}",
            r.id
        );
    }
    assert!(
        t.rotations_in_states(&[State::Running, State::Grace])
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        t.recent_incidents(10).unwrap(),
        source.recent_incidents(10).unwrap()
    );
    assert!(t.open_incidents().unwrap().is_empty());
    assert_eq!(
        t.incident_counts().unwrap(),
        source.incident_counts().unwrap()
    );
    assert_eq!(
        t.opened_notice("inc-1").unwrap().as_deref(),
        Some("sns-mid-1")
    );
    assert_eq!(t.pending().unwrap(), source.pending().unwrap());
    assert_eq!(t.pending().unwrap().len(), 1);
    let keys: Vec<ReminderKey> = source
        .pending()
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .chain([ReminderKey {
            secret: "A".into(),
            due: 5_000_000,
            lead_seconds: 14 * 86_400,
        }])
        .collect();
    assert_eq!(t.known(&keys).unwrap().len(), 2, "sent and pending rows");
    let (a, b) = (
        t.restore(GROUP, 0).unwrap(),
        source.restore(GROUP, 0).unwrap(),
    );
    assert_eq!(a.checkpoint_ms, b.checkpoint_ms);
    assert_eq!(a.seen, b.seen);
    assert_eq!(a.readers, b.readers);

    // A daemon on the table serves the same rotations and incidents.
    let d = Daemon::start_in_env(
        dir,
        port,
        &config,
        &[("KW_TEST_TOKEN", "migrate-admin-token-0123456789abcdef")],
    )
    .await;
    let (status, body) = d.get("/rotations").await;
    assert_eq!(status, 200, "{body}");
    for id in [
        "00000000000000000000000000000001",
        "00000000000000000000000000000002",
    ] {
        assert!(body.contains(id), "{id} not in {body}");
    }
    let (status, body) = d.get("/incidents").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("inc-1"), "{body}");
    assert!(
        d.log().contains("State store open (DynamoDB)."),
        "{}",
        d.log()
    );
}

/// `init-store` is idempotent and says what it did; a daemon on a missing table refuses to
/// start and names the command.
#[test]
fn init_store_is_idempotent_and_a_missing_table_is_named() {
    let moto = Moto::start();
    let table = format!("kw-init-{}", &uuid_like()[..8]);
    let section = format!("[state]\nbackend = \"dynamodb\"\ntable = \"{table}\"\n");
    let first = crate::support::init_store(&moto, &section);
    assert!(
        first.contains(&format!("created DynamoDB table {table}")),
        "{first}"
    );
    let second = crate::support::init_store(&moto, &section);
    assert!(
        second.contains(&format!(
            "DynamoDB table {table} already exists; nothing changed"
        )),
        "{second}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keywarden.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n[server]\nlisten = \"127.0.0.1:{}\"\n\
             [state]\nbackend = \"dynamodb\"\ntable = \"kw-missing\"\n\n[[secret]]\nname = \"A\"\nid = \"svc/a\"\n",
            moto.endpoint(),
            free_port()
        ),
    )
    .unwrap();
    let out = keywarden_command()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run keywarden");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("kw-missing") && text.contains("keywarden init-store"),
        "{text}"
    );
}
