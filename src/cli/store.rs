//! `init-store` and `migrate-store`: create the configured state store, and copy a SQLite
//! store into a DynamoDB table.

use std::process::ExitCode;
use std::sync::Arc;

use crate::aws::NoObserver;
use crate::aws::dynamodb::{DynamoTable, Value, Write, key};
use crate::config::{Config, StateBackend};
use crate::store::Store;

/// The table of `[state] table`, or a message saying it is needed.
fn table_of(config: &Config) -> Result<DynamoTable, String> {
    let Some(name) = config.state.table.as_deref() else {
        return Err(format!(
            "{}: [state] table is not set: name the DynamoDB table (for example table = \"keywarden-state\")",
            config.source.display()
        ));
    };
    DynamoTable::connect(&config.aws, name, Arc::new(NoObserver))
        .map_err(|e| format!("DynamoDB table {name}: {e}"))
}

/// `init-store`: creates the DynamoDB table of `[state] table` (backend `dynamodb`, or any
/// backend when `table` is set), or the SQLite file; an existing one is left as it is.
pub fn init_store(config: &Config) -> ExitCode {
    if config.state.backend == StateBackend::Sqlite && config.state.table.is_none() {
        return match Store::open(&config.state.path).and_then(|s| s.schema_version()) {
            Ok(v) => {
                println!(
                    "state store {} ready (SQLite, schema version {v})",
                    config.state.path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keywarden: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let table = match table_of(config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("keywarden: {e}");
            return ExitCode::FAILURE;
        }
    };
    match table.create_table() {
        Ok(true) => {
            println!(
                "created DynamoDB table {} (pk/sk strings, on-demand billing, TTL on expires)",
                table.name()
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!(
                "DynamoDB table {} already exists; nothing changed",
                table.name()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "keywarden: cannot create DynamoDB table {}: {e}",
                table.name()
            );
            ExitCode::FAILURE
        }
    }
}

/// `migrate-store --from sqlite --to dynamodb`: copies every table of the SQLite file of
/// `[state] path` into the DynamoDB table of `[state] table` (created when missing), which
/// must hold no keywarden state yet. Stop the daemon that writes the file first: what it
/// writes after the copy is not copied.
pub fn migrate_store(config: &Config) -> ExitCode {
    match migrate(config) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keywarden: migrate-store: {e}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(config: &Config) -> Result<String, String> {
    let path = &config.state.path;
    if !path.exists() {
        return Err(format!(
            "no SQLite store at {} ([state] path)",
            path.display()
        ));
    }
    let source = Store::open(path).map_err(|e| e.to_string())?;
    let table = table_of(config)?;
    table
        .create_table()
        .map_err(|e| format!("cannot create DynamoDB table {}: {e}", table.name()))?;
    for pk in [
        "rotation",
        "incident",
        "reminder",
        "access",
        "access_reader",
    ] {
        let found = table
            .query(pk, None, None)
            .map_err(|e| format!("cannot read DynamoDB table {}: {e}", table.name()))?;
        if !found.is_empty() {
            return Err(format!(
                "DynamoDB table {} already holds keywarden state ({pk} items); copy into an empty table",
                table.name()
            ));
        }
    }
    let e = |e: crate::store::StoreError| e.to_string();
    let rotations = crate::rotation::journal_dynamodb::copy_from(&source, &table).map_err(e)?;
    let incidents = crate::incident::store_dynamodb::copy_from(&source, &table).map_err(e)?;
    let reminders = crate::reminder::ledger_dynamodb::copy_from(&source, &table).map_err(e)?;
    let (checkpoints, ids, readers) =
        crate::access::store_dynamodb::copy_from(&source, &table).map_err(e)?;
    let meta = source.meta_rows().map_err(e)?;
    let items = meta
        .iter()
        .map(|(k, v)| {
            let mut i = key("meta", k);
            i.insert("value".into(), Value::S(v.clone()));
            i
        })
        .collect();
    table
        .batch_put(items)
        .map_err(|e| format!("cannot copy meta values: {e}"))?;
    // A marker that the copy is complete (the daemon does not need it).
    let mut done = key("meta", "migrated_from");
    done.insert("value".into(), Value::S(path.display().to_string()));
    table
        .write(Write::Put {
            item: done,
            cond: None,
        })
        .map_err(|e| format!("cannot record the copy: {e}"))?;
    let n = table.requests();
    Ok(format!(
        "copied {} to DynamoDB table {}: {rotations} rotations, {incidents} incidents, {reminders} reminders, {checkpoints} access checkpoints, {ids} event ids, {readers} readers, {} meta values ({} write requests)",
        path.display(),
        table.name(),
        meta.len(),
        n.writes
    ))
}
