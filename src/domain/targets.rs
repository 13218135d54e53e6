//! Where a secret lives: the AWS account and region it is read from (SPEC §13).
//!
//! Every watched secret belongs to one *target*, an (account, region) pair read with one set of
//! credentials. Target 0 is the daemon's own account and region (the AWS credential chain); the
//! others come from `[[account]]` or `[organization]`. A target is a small index
//! ([`TargetId`]) into one shared, append-only table ([`Targets`]), so a secret's record carries
//! two bytes for its `account` and `region` labels and no copy of either string.
//!
//! The key of a secret in the view (and its `<secret>` in the API) is its inventory name or its
//! Secrets Manager name; a secret *discovered* in another target than the home one is keyed
//! `account:region:name` ([`qualified_key`]), which never collides with a name: Secrets Manager
//! names cannot contain `:`, and inventory names are refused with one. The `secret` label is
//! always the plain name ([`label_of_key`]).
//!
//! No I/O, no clock.

use std::sync::{Arc, RwLock};

/// The index of a target in [`Targets`]. `TargetId::HOME` is the daemon's own account and region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TargetId(pub u16);

impl TargetId {
    /// The daemon's own account and region.
    pub const HOME: TargetId = TargetId(0);

    /// Whether this is the daemon's own account and region.
    pub fn is_home(self) -> bool {
        self == TargetId::HOME
    }
}

/// The label values of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetLabels {
    /// The 12-digit account id; empty for the home target until it is known.
    pub account: Arc<str>,
    /// The region, such as `eu-west-1`.
    pub region: Arc<str>,
}

/// The table of targets, shared by the view, the metrics and the API. Append-only: an id, once
/// given, always names the same account and region (the home account id may be learned late).
#[derive(Debug)]
pub struct Targets {
    table: RwLock<Vec<TargetLabels>>,
}

impl Default for Targets {
    fn default() -> Self {
        Targets::new("")
    }
}

/// At most this many targets (the id is 16 bits; 50 accounts x 17 regions is 850).
pub const MAX_TARGETS: usize = u16::MAX as usize;

impl Targets {
    /// A table holding the home target in `home_region`, its account not yet known.
    pub fn new(home_region: &str) -> Targets {
        Targets {
            table: RwLock::new(vec![TargetLabels {
                account: Arc::from(""),
                region: Arc::from(home_region),
            }]),
        }
    }

    /// The id of (`account`, `region`), adding it when new. The home target answers for its
    /// own account and region once its account is known. `None` when the table is full.
    pub fn intern(&self, account: &str, region: &str) -> Option<TargetId> {
        {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = position(&table, account, region) {
                return Some(TargetId(i as u16));
            }
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = position(&table, account, region) {
            return Some(TargetId(i as u16));
        }
        if table.len() >= MAX_TARGETS {
            return None;
        }
        table.push(TargetLabels {
            account: Arc::from(account),
            region: Arc::from(region),
        });
        Some(TargetId((table.len() - 1) as u16))
    }

    /// The id of (`account`, `region`) if it is in the table.
    pub fn find(&self, account: &str, region: &str) -> Option<TargetId> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        position(&table, account, region).map(|i| TargetId(i as u16))
    }

    /// The labels of `id` (the home target's when `id` is unknown).
    pub fn labels(&self, id: TargetId) -> TargetLabels {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table
            .get(id.0 as usize)
            .or_else(|| table.first())
            .cloned()
            .unwrap_or(TargetLabels {
                account: Arc::from(""),
                region: Arc::from(""),
            })
    }

    /// Every target, by id.
    pub fn all(&self) -> Vec<TargetLabels> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The home target's account id, once known (empty before).
    pub fn home_account(&self) -> Arc<str> {
        self.labels(TargetId::HOME).account
    }

    /// Records the home account id (learned from a listed ARN or from STS). Returns whether
    /// it changed.
    pub fn set_home_account(&self, account: &str) -> bool {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        match table.first_mut() {
            Some(home) if &*home.account != account => {
                home.account = Arc::from(account);
                true
            }
            _ => false,
        }
    }

    /// Runs `f` with the labels of `id` without cloning them (encoding).
    pub fn with_labels<R>(&self, id: TargetId, f: impl FnOnce(&str, &str) -> R) -> R {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        match table.get(id.0 as usize).or_else(|| table.first()) {
            Some(t) => f(&t.account, &t.region),
            None => f("", ""),
        }
    }
}

fn position(table: &[TargetLabels], account: &str, region: &str) -> Option<usize> {
    table
        .iter()
        .position(|t| &*t.account == account && &*t.region == region)
}

/// The view key of a secret discovered in a target other than the home one.
pub fn qualified_key(account: &str, region: &str, name: &str) -> String {
    format!("{account}:{region}:{name}")
}

/// The (account, region, name) of a qualified key; `None` for a plain name.
pub fn split_key(key: &str) -> Option<(&str, &str, &str)> {
    let (account, rest) = key.split_once(':')?;
    let (region, name) = rest.split_once(':')?;
    Some((account, region, name))
}

/// The `secret` label of a view key: the name without its `account:region:` qualifier.
pub fn label_of_key(key: &str) -> &str {
    split_key(key).map_or(key, |(_, _, name)| name)
}

/// The account id and region in a Secrets Manager (or any regional) ARN:
/// `arn:partition:service:region:account:...`.
pub fn arn_account_region(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    (parts.next()? == "arn").then_some(())?;
    let _partition = parts.next()?;
    let _service = parts.next()?;
    let region = parts.next()?;
    let account = parts.next()?;
    parts.next()?;
    (!account.is_empty()).then_some((account, region))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_home_is_zero() {
        let t = Targets::new("us-east-1");
        assert_eq!(t.find("", "us-east-1"), Some(TargetId::HOME));
        let a = t.intern("111111111111", "eu-west-1").unwrap();
        let b = t.intern("222222222222", "eu-west-1").unwrap();
        assert_ne!(a, b);
        assert_eq!(t.intern("111111111111", "eu-west-1"), Some(a));
        assert!(t.set_home_account("999999999999"));
        assert!(!t.set_home_account("999999999999"));
        assert_eq!(t.intern("999999999999", "us-east-1"), Some(TargetId::HOME));
        let l = t.labels(b);
        assert_eq!((&*l.account, &*l.region), ("222222222222", "eu-west-1"));
        t.with_labels(a, |acc, reg| {
            assert_eq!((acc, reg), ("111111111111", "eu-west-1"))
        });
    }

    #[test]
    fn keys_and_labels() {
        let k = qualified_key("111111111111", "eu-west-1", "prod/db");
        assert_eq!(
            split_key(&k),
            Some(("111111111111", "eu-west-1", "prod/db"))
        );
        assert_eq!(label_of_key(&k), "prod/db");
        assert_eq!(label_of_key("prod/db"), "prod/db");
        assert_eq!(split_key("prod/db"), None);
    }

    #[test]
    fn arns_name_their_account_and_region() {
        assert_eq!(
            arn_account_region(
                "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-AbC123"
            ),
            Some(("111122223333", "eu-west-1"))
        );
        assert_eq!(arn_account_region("prod/db"), None);
        assert_eq!(arn_account_region("arn:aws:s3:::bucket"), None);
    }
}
