//! keywarden: a secret-rotation watchdog for AWS Secrets Manager.
//!
//! See `ARCHITECTURE.md` for the map of the modules and how data flows between them.

pub mod anomaly;
pub mod aws;
pub mod cli;
pub mod cloudtrail;
pub mod config;
pub mod consumers;
pub mod daemon;
pub mod domain;
pub mod fleet_metrics;
pub mod http;
pub mod incident;
pub mod inventory;
pub mod memory;
pub mod metrics;
pub mod poll;
pub mod principal_glob;
pub mod reminder;
pub mod remote;
pub mod rotation;
pub mod schedule;
pub mod status;
pub mod store;
pub mod view;
