//! keywarden: a secret-rotation watchdog for AWS Secrets Manager.
//!
//! One folder per concern; `ARCHITECTURE.md` is the map (what each folder owns, what it must never
//! import, and where to change what).

pub mod access;
pub mod aws;
pub mod cli;
#[allow(unsafe_code)] // The scanner's SIMD line index (see its SAFETY comments).
pub mod cloudtrail;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod ha;
pub mod http;
pub mod incident;
pub mod inventory;
pub mod reminder;
pub mod rotation;
pub mod schedule;
pub mod store;
pub mod telemetry;
