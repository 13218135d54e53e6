//! The eventIDs already counted, in memory: the access poller's exactly-once check before it
//! reaches the store.
//!
//! CloudTrail eventIDs are UUIDs. Kept as `String` keys each cost about 85 bytes (a 36-byte
//! allocation and a 32-byte map slot); kept as the 128-bit number the canonical text spells
//! (lowercase hex, `8-4-4-4-12`), 27 bytes, with no loss: that text and the number are one to
//! one. Anything else (an uppercase id, the prefixed keys of skipped log events and rejected
//! messages) keeps its text. Entries older than the poller's horizon are dropped by
//! [`SeenIds::retain_from`], so memory follows the events of the dedup window, and each costs a
//! third of what it did (docs/performance.md, SQS ingestion).

use std::collections::HashMap;

/// Event ids with the log timestamp (ms) they were counted at.
#[derive(Debug, Default, Clone)]
pub struct SeenIds {
    uuids: HashMap<u128, i64>,
    others: HashMap<Box<str>, i64>,
}

/// The number a canonical lowercase UUID spells (`None` for any other text).
pub fn canonical_uuid(id: &str) -> Option<u128> {
    let b = id.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut n: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(digit);
    }
    Some(n)
}

impl SeenIds {
    /// Whether `id` was counted.
    pub fn contains(&self, id: &str) -> bool {
        match canonical_uuid(id) {
            Some(n) => self.uuids.contains_key(&n),
            None => self.others.contains_key(id),
        }
    }

    /// Records `id` as counted at `ms`.
    pub fn insert(&mut self, id: &str, ms: i64) {
        match canonical_uuid(id) {
            Some(n) => {
                self.uuids.insert(n, ms);
            }
            None => {
                self.others.insert(id.into(), ms);
            }
        }
    }

    /// Forgets the ids counted before `horizon_ms`.
    pub fn retain_from(&mut self, horizon_ms: i64) {
        self.uuids.retain(|_, ms| *ms >= horizon_ms);
        self.others.retain(|_, ms| *ms >= horizon_ms);
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.uuids.len() + self.others.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S: AsRef<str>> FromIterator<(S, i64)> for SeenIds {
    fn from_iter<I: IntoIterator<Item = (S, i64)>>(iter: I) -> Self {
        let mut seen = SeenIds::default();
        for (id, ms) in iter {
            seen.insert(id.as_ref(), ms);
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_uuids_are_numbers_and_the_rest_text() {
        let id = "3c2f0e5a-9b1d-4e8f-a7c6-0123456789ab";
        assert_eq!(
            canonical_uuid(id),
            Some(0x3c2f0e5a_9b1d_4e8f_a7c6_0123456789ab)
        );
        for other in [
            "3C2F0E5A-9B1D-4E8F-A7C6-0123456789AB",
            "3c2f0e5a9b1d4e8fa7c60123456789ab",
            "3c2f0e5a-9b1d-4e8f-a7c6-0123456789a",
            "3c2f0e5a-9b1d-4e8f-a7c6_0123456789ab",
            "skipped:3c2f0e5a-9b1d-4e8f-a7c6-0123456789ab",
            "",
        ] {
            assert_eq!(canonical_uuid(other), None, "{other}");
        }
        let mut seen = SeenIds::default();
        seen.insert(id, 5);
        seen.insert("3C2F0E5A-9B1D-4E8F-A7C6-0123456789AB", 6);
        seen.insert("skipped:x", 7);
        assert_eq!(seen.len(), 3);
        assert!(seen.contains(id) && seen.contains("skipped:x"));
        assert!(seen.contains("3C2F0E5A-9B1D-4E8F-A7C6-0123456789AB"));
        assert!(!seen.contains("3c2f0e5a-9b1d-4e8f-a7c6-0123456789ac"));
        seen.retain_from(6);
        assert!(!seen.contains(id));
        assert_eq!(seen.len(), 2);
    }

    proptest! {
        /// The compact set answers exactly as a set of strings would.
        #[test]
        fn answers_as_a_set_of_strings(
            ids in proptest::collection::vec(
                prop_oneof![
                    "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                    "[0-9a-fA-F-]{30,40}",
                    ".{0,40}",
                ],
                0..40,
            ),
            probes in proptest::collection::vec("[0-9a-f-]{36}|.{0,40}", 0..20),
        ) {
            let seen: SeenIds = ids.iter().map(|s| (s.as_str(), 1)).collect();
            let naive: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            prop_assert_eq!(seen.len(), naive.len());
            for p in ids.iter().chain(probes.iter()) {
                prop_assert_eq!(seen.contains(p), naive.contains(p.as_str()), "{}", p);
            }
        }
    }
}
