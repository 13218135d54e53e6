//! High availability (`[ha]`, SPEC §14): leader election on a lease item of the DynamoDB state
//! store's table, the way Amazon's DynamoDB Lock Client does it, so clock skew between replicas
//! does not matter.
//!
//! The lease item (`pk = "lease"`, `sk = "leader"`) holds the leader's `holder` name, a random
//! record version number `rvn` and an `epoch`. The leader rewrites `rvn` every `lease / 3`
//! with a write conditional on its own `holder`, `epoch` and last `rvn`. A follower reads the
//! item at the same period; once it has seen the same `rvn` for a whole `lease` (on its own
//! monotonic clock, from its first sight of it) it takes the lease with a write conditional on
//! that `rvn`, and `epoch + 1`. Only one contender's write can succeed.
//!
//! Fencing: the leader's table writes are all conditional on its `epoch`
//! ([`DynamoTable::fence`]); a refused one, a refused renewal, or no renewal for a whole lease
//! makes the leader step down (the daemon stops and exits non-zero; its supervisor starts it
//! again as a follower). Its AWS actions go through [`crate::aws::gate`], open only until the
//! end of the lease it last renewed, so a paused leader that wakes up past its lease touches
//! nothing. Owns the lease protocol; must never import a feature.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::aws::AwsError;
use crate::aws::dynamodb::{DynamoTable, Expr, LEASE_PK, LEASE_SK, Value, Write, key, n, s};
use crate::telemetry::Metrics;

/// The lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The leader's replica name.
    pub holder: String,
    /// The record version number it wrote last.
    pub rvn: String,
    /// Its epoch.
    pub epoch: i64,
}

fn new_rvn() -> String {
    let mut b = [0u8; 12];
    // The OS generator cannot fail on Linux; a constant would only cost a takeover delay.
    let _ = getrandom::getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a follower decides after reading the lease (pure): take it now, or wait. `seen` is the
/// record version number it saw first and when.
pub fn may_take(
    held: Option<&Held>,
    me: &str,
    seen: Option<&(String, Instant)>,
    lease: Duration,
    now: Instant,
) -> bool {
    match held {
        None => true,
        // This replica's own lease, left by a previous run of it (crashed, restarted).
        Some(h) if h.holder == me => true,
        Some(h) => seen.is_some_and(|(rvn, since)| *rvn == h.rvn && now - *since >= lease),
    }
}

/// One replica's side of the lease.
pub struct Lease {
    table: DynamoTable,
    replica: String,
    lease: Duration,
}

impl Lease {
    /// The lease of `table` for `replica`.
    pub fn new(table: DynamoTable, replica: String, lease: Duration) -> Lease {
        Lease {
            table,
            replica,
            lease,
        }
    }

    /// The renewal (and follower read) period.
    pub fn period(&self) -> Duration {
        self.lease / 3
    }

    /// Reads the lease item.
    pub fn read(&self) -> Result<Option<Held>, AwsError> {
        Ok(self.table.get(LEASE_PK, LEASE_SK)?.and_then(|i| {
            Some(Held {
                holder: s(&i, "holder")?.to_string(),
                rvn: s(&i, "rvn")?.to_string(),
                epoch: n(&i, "epoch")?,
            })
        }))
    }

    /// Takes the lease from `held` (none: creates it); `Ok(Some(epoch))` when this write won.
    fn take(&self, held: Option<&Held>) -> Result<Option<(i64, String)>, AwsError> {
        let rvn = new_rvn();
        let epoch = held.map_or(1, |h| h.epoch + 1);
        let mut item = key(LEASE_PK, LEASE_SK);
        item.insert("holder".into(), Value::S(self.replica.clone()));
        item.insert("rvn".into(), Value::S(rvn.clone()));
        item.insert("epoch".into(), Value::N(epoch));
        let cond = match held {
            None => Expr::new("attribute_not_exists(#pk)"),
            Some(h) => Expr::new("#rvn = :seen AND #epoch = :epoch")
                .value("seen", Value::S(h.rvn.clone()))
                .value("epoch", Value::N(h.epoch)),
        };
        let won = self.table.write_unfenced(Write::Put {
            item,
            cond: Some(cond),
        })?;
        Ok(won.then_some((epoch, rvn)))
    }

    /// Waits as a follower until this replica takes the lease (`Some((epoch, rvn, sent))`)
    /// or `stop` is cancelled (`None`).
    pub async fn acquire(
        &self,
        metrics: &Metrics,
        stop: &CancellationToken,
    ) -> Option<(i64, String, Instant)> {
        let mut seen: Option<(String, Instant)> = None;
        loop {
            let sent = Instant::now();
            match self.read() {
                Ok(held) => {
                    if may_take(
                        held.as_ref(),
                        &self.replica,
                        seen.as_ref(),
                        self.lease,
                        sent,
                    ) {
                        match self.take(held.as_ref()) {
                            Ok(Some((epoch, rvn))) => {
                                let after = held.as_ref().map(|h| {
                                    seen.as_ref()
                                        .map_or(Duration::ZERO, |(_, since)| sent - *since)
                                        .as_secs_f64()
                                        .to_string()
                                        + "s unchanged from "
                                        + &h.holder
                                });
                                info!(replica = %self.replica, epoch, after = after.as_deref().unwrap_or("no previous holder"), "Took the lease: this replica leads.");
                                return Some((epoch, rvn, sent));
                            }
                            Ok(None) => {
                                info!(replica = %self.replica, "Another replica took the lease first.");
                                seen = None;
                            }
                            Err(e) => warn!(error = %e, "Cannot write the lease; will retry."),
                        }
                    } else if let Some(h) = &held {
                        metrics.set_leader(&self.replica, false, Some(&h.holder));
                        if seen.as_ref().is_none_or(|(rvn, _)| *rvn != h.rvn) {
                            seen = Some((h.rvn.clone(), sent));
                        }
                    }
                }
                Err(e) => warn!(error = %e, "Cannot read the lease; will retry."),
            }
            tokio::select! {
                () = tokio::time::sleep(self.period()) => {}
                () = stop.cancelled() => return None,
            }
        }
    }

    /// Holds the lease taken at `sent` with `epoch` and `rvn`: renews it every period and keeps
    /// the AWS gate open until the end of the last renewed lease. Returns (after cancelling
    /// `stop`) when the lease is lost: a refused renewal, no renewal for a whole lease, or a
    /// fenced table write refused. Returns quietly when `stop` is cancelled otherwise.
    pub async fn hold(
        &self,
        epoch: i64,
        mut rvn: String,
        sent: Instant,
        stop: &CancellationToken,
    ) -> bool {
        let mut last_ok = sent;
        crate::aws::gate::open_until(last_ok + self.lease);
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.period()) => {}
                () = self.table.wait_fence_lost() => {
                    return self.step_down(stop, "a table write was refused: another replica holds the lease");
                }
                () = stop.cancelled() => return false,
            }
            let now = Instant::now();
            if now - last_ok >= self.lease {
                return self.step_down(
                    stop,
                    "the lease was not renewed for a whole lease period (paused or cut off)",
                );
            }
            let next = new_rvn();
            let renewed = self.table.write_unfenced(Write::Update {
                pk: LEASE_PK.into(),
                sk: LEASE_SK.into(),
                update: Expr::new("SET #rvn = :next").value("next", Value::S(next.clone())),
                cond: Some(
                    Expr::new("#holder = :me AND #epoch = :epoch AND #rvn = :rvn")
                        .value("me", Value::S(self.replica.clone()))
                        .value("epoch", Value::N(epoch))
                        .value("rvn", Value::S(rvn.clone())),
                ),
            });
            match renewed {
                Ok(true) => {
                    rvn = next;
                    last_ok = now;
                    crate::aws::gate::open_until(last_ok + self.lease);
                }
                Ok(false) => {
                    return self.step_down(
                        stop,
                        "the lease renewal was refused: another replica took it",
                    );
                }
                Err(e) => {
                    warn!(error = %e, "Cannot renew the lease; will retry until it runs out.")
                }
            }
        }
    }

    fn step_down(&self, stop: &CancellationToken, why: &str) -> bool {
        crate::aws::gate::close();
        error!(replica = %self.replica, reason = why, "Lease lost: stepping down (exiting; the supervisor starts this replica again as a follower).");
        stop.cancel();
        true
    }
}

/// This host's name (the default replica name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "keywarden".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_takes_over_only_after_a_whole_lease_unchanged() {
        let lease = Duration::from_secs(15);
        let t0 = Instant::now();
        let held = Held {
            holder: "a".into(),
            rvn: "r1".into(),
            epoch: 3,
        };
        assert!(may_take(None, "b", None, lease, t0), "no lease: take it");
        assert!(!may_take(Some(&held), "b", None, lease, t0), "first sight");
        let seen = ("r1".to_string(), t0);
        assert!(!may_take(
            Some(&held),
            "b",
            Some(&seen),
            lease,
            t0 + Duration::from_secs(14)
        ));
        assert!(may_take(Some(&held), "b", Some(&seen), lease, t0 + lease));
        let renewed = ("r0".to_string(), t0);
        assert!(
            !may_take(Some(&held), "b", Some(&renewed), lease, t0 + lease),
            "the leader renewed: wait again"
        );
        assert!(may_take(Some(&held), "a", None, lease, t0), "its own lease");
    }
}
