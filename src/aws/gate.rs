//! The lease gate (`[ha]`): while it is closed, the adapters that act (the rotation calls on
//! Secrets Manager, SNS Publish) refuse every call before sending it. Without `[ha]` it is
//! always open. With `[ha]` the lease task opens it until the end of the lease it last renewed,
//! measured on this process's monotonic clock from the moment the renewal was sent; a follower
//! takes over only after seeing the lease unchanged for a whole lease from a later moment, so
//! a leader that was paused (SIGSTOP, a long GC-like stall) finds the gate closed when it wakes
//! up and touches nothing before it steps down.

use std::sync::Mutex;
use std::time::Instant;

use super::{AwsError, AwsErrorKind};

/// `None`: `[ha]` is off (open). `Some(None)`: closed. `Some(Some(t))`: open until `t`.
static GATE: Mutex<Option<Option<Instant>>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<Option<Instant>>> {
    GATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Closes the gate (a follower, or a leader that lost its lease).
pub fn close() {
    *lock() = Some(None);
}

/// Opens the gate until `until` (the end of the lease just renewed).
pub fn open_until(until: Instant) {
    *lock() = Some(Some(until));
}

/// Whether a call may be sent now.
pub fn is_open() -> bool {
    match *lock() {
        None => true,
        Some(None) => false,
        Some(Some(t)) => Instant::now() < t,
    }
}

/// `Err` (nothing sent) when the gate is closed.
pub fn check(service: &'static str, operation: &'static str) -> Result<(), AwsError> {
    if is_open() {
        Ok(())
    } else {
        Err(AwsError {
            service,
            operation,
            kind: AwsErrorKind::Other,
            message: "not sent: this replica does not hold the lease ([ha])".to_string(),
        })
    }
}
