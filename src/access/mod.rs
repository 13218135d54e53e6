//! Access events (SPEC §4): CloudTrail records about secrets, counted once each, and the
//! anomalies found in them.
//!
//! - `detect`: pure anomaly detection, one rule per anomaly kind.
//! - `glob`: the consumer globs over principal ARNs.
//! - `consumers`: who read a secret (`keywarden consumers`, the incident audit).
//! - `poller`: the task that reads the log group, commits eventIDs, then exports.
//! - `queue`: the `sqs` source: EventBridge events received from SQS, fed to the poller's
//!   parse, dedup, commit and export, deleted after the commit.
//! - `store`: the poller's durable state behind the `AccessState` trait (the only SQL here).
//!
//! The scanner and record types live in `crate::cloudtrail`. Must never import `http`, `cli`,
//! `rotation` or `incident`.

pub mod consumers;
pub mod detect;
pub mod glob;
pub mod poller;
pub mod queue;
pub mod store;
