//! Crash points for the tests, compiled only with the `failpoints` cargo feature.
//!
//! `KEYWARDEN_FAILPOINT=<name>` makes the process abort (SIGABRT: no destructor, no flush, like
//! kill -9) the first time it reaches the boundary `<name>`, such as `create:put` or
//! `finish:moved`. The feature is off in `cargo build` and `cargo build --release`; `cargo test`
//! enables it through the package's dev-dependency on itself, because the integration tests run
//! the binary cargo builds for them. Without the feature [`hit`] is an empty inline function and
//! the variable is never read, so a production binary cannot be made to crash, pause or change
//! anything through its environment.

/// Every boundary the core marks, in protocol order. The incident service marks its own
/// (`incident:accepted`, `incident:<step>:done` for `rotate`, `audit`, `notify`, `report`); they
/// are not in this list, which the rotation crash test walks. The access poller marks
/// `access:before-commit` (its slice transaction written, not committed) and `access:committed`
/// (committed, nothing exported yet); the reminder task marks `reminder:published` (SNS returned
/// a MessageId, the ledger still says `pending`); the rotation scheduler marks `notice:recorded`
/// (a scheduled rotation's notice intent committed to the ledger, not yet published).
pub const POINTS: &[&str] = &[
    "accepted",
    "create:put",
    "create:done",
    "set:done",
    "test:done",
    "finish:moved",
    "finish:unpended",
    "finish:done",
    "finalize:put",
    "finalize:moved",
    "finalize:done",
];

/// Marks a step boundary.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    static WANTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let wanted = WANTED.get_or_init(|| std::env::var("KEYWARDEN_FAILPOINT").ok());
    if wanted.as_deref() == Some(name) {
        eprintln!("keywarden: failpoint {name} reached: aborting (test build)");
        std::process::abort();
    }
}

/// Marks a step boundary (no-op: built without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Whether this build honours failpoints (reported at start in test builds).
pub const ENABLED: bool = cfg!(feature = "failpoints");
