//! The domain: the words keywarden speaks and the one picture of the inventory.
//!
//! - `vocabulary`: the closed sets (event, outcome, anomaly kind, trigger, result, state, step,
//!   strategy, severity), each with `ALL` and `index()`. A leaf: it imports nothing of the crate.
//! - `view`: the one in-memory view of the inventory (`SharedView`) that pollers write and
//!   metrics, the API, reminders and the rotation core read.
//!
//! Owns no I/O and never reads the clock. Must never import `telemetry`, `http`, `aws` adapters,
//! the store, or any task.

pub mod targets;
pub mod view;
pub mod vocabulary;

pub use vocabulary::{
    AnomalyKind, EventName, EventOutcome, Outcome, RotationResult, Severity, State, Step, Strategy,
    Trigger, UnknownWord,
};
