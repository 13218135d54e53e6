//! The closed sets of words keywarden speaks: metric label values, journal states, strategies.
//!
//! Each set is one enum made by `vocabulary!`: `ALL` (every value, in label order), `COUNT`,
//! `index()` (the position in `ALL`, what the metric arrays are indexed by), `as_str()` (the
//! label or stored text), `FromStr`/`TryFrom<&str>` that refuse an unknown word (a corrupt journal
//! row is an error, never a default), and serde in the same words. This module is a leaf: it
//! imports nothing of the crate.

use std::fmt;

/// A word that is not in the set it was read as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {set} `{word}`, expected one of {expected}")]
pub struct UnknownWord {
    /// The set's name, e.g. `trigger`.
    pub set: &'static str,
    /// The word that was read.
    pub word: String,
    /// The words of the set, quoted and comma separated.
    pub expected: String,
}

fn unknown(set: &'static str, word: &str, all: &[&'static str]) -> UnknownWord {
    UnknownWord {
        set,
        word: word.to_string(),
        expected: all
            .iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Defines a vocabulary enum with `ALL`, `COUNT`, `index`, `as_str`, parsing and serde.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident ($set:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in label order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];
            /// How many values there are.
            pub const COUNT: usize = Self::ALL.len();
            /// Every value's text, in label order.
            pub const NAMES: [&'static str; [$($text),+].len()] = [$($text),+];

            /// The position in [`Self::ALL`].
            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The label value (or stored text).
            #[inline]
            pub const fn as_str(self) -> &'static str {
                Self::NAMES[self as usize]
            }

            /// The value whose text is `s`, if any; allocates nothing (hot paths use it).
            #[inline]
            pub fn from_word(s: &str) -> Option<Self> {
                match s {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, UnknownWord> {
                Self::from_word(s).ok_or_else(|| unknown($set, s, &Self::NAMES))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = UnknownWord;
            fn try_from(s: &str) -> Result<Self, UnknownWord> {
                s.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Words;
                impl serde::de::Visitor<'_> for Words {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {}", $set)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::from_word(v).ok_or_else(|| E::unknown_variant(v, &$name::NAMES))
                    }
                }
                d.deserialize_str(Words)
            }
        }
    };
}

vocabulary! {
    /// The `event` label: a Secrets Manager CloudTrail eventName of the fixed list, else `other`.
    EventName ("event") {
        /// GetSecretValue.
        GetSecretValue = "GetSecretValue",
        /// BatchGetSecretValue.
        BatchGetSecretValue = "BatchGetSecretValue",
        /// DescribeSecret.
        DescribeSecret = "DescribeSecret",
        /// PutSecretValue.
        PutSecretValue = "PutSecretValue",
        /// UpdateSecret.
        UpdateSecret = "UpdateSecret",
        /// UpdateSecretVersionStage.
        UpdateSecretVersionStage = "UpdateSecretVersionStage",
        /// RotateSecret.
        RotateSecret = "RotateSecret",
        /// DeleteSecret.
        DeleteSecret = "DeleteSecret",
        /// RestoreSecret.
        RestoreSecret = "RestoreSecret",
        /// Any other eventName.
        Other = "other",
    }
}

impl EventName {
    /// The label of a CloudTrail eventName: itself when it is in the list, else `other`.
    #[inline]
    pub fn of(name: &str) -> EventName {
        EventName::from_word(name).unwrap_or(EventName::Other)
    }

    /// Whether the event reads the secret's value.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            EventName::GetSecretValue | EventName::BatchGetSecretValue
        )
    }
}

vocabulary! {
    /// The `outcome` label of an access event.
    Outcome ("outcome") {
        /// No errorCode.
        Success = "success",
        /// An authorization error (AccessDenied and friends).
        Denied = "denied",
        /// Any other errorCode.
        Error = "error",
    }
}

vocabulary! {
    /// The anomaly kinds (the `kind` label, SPEC §4).
    AnomalyKind ("anomaly kind") {
        /// A successful read by a principal that matches no declared consumer.
        UndeclaredConsumer = "undeclared_consumer",
        /// A read by a principal not seen reading the secret within the baseline window.
        NewPrincipal = "new_principal",
        /// Reads in a 5-minute bucket far above the learned rate.
        RateSpike = "rate_spike",
        /// Many denied calls on the secret within 5 minutes.
        DeniedBurst = "denied_burst",
        /// A call from outside `allowed_sources`.
        UnexpectedSource = "unexpected_source",
        /// A read of AWSPREVIOUS or a non-current version after the grace period.
        PreviousVersionRead = "previous_version_read",
    }
}

vocabulary! {
    /// What started a rotation (the `trigger` label).
    Trigger ("trigger") {
        /// The scheduler, inside the secret's window.
        Scheduled = "scheduled",
        /// `POST /rotate` or `keywarden rotate`.
        Manual = "manual",
        /// A compromise incident: no window, no grace.
        Compromise = "compromise",
    }
}

vocabulary! {
    /// How a rotation ended (the `result` label).
    RotationResult ("rotation result") {
        /// Finished (AWSCURRENT moved to the new value).
        Success = "success",
        /// A step failed after every retry.
        Failure = "failure",
        /// AWSCURRENT went back to the previous version.
        RolledBack = "rolled_back",
    }
}

vocabulary! {
    /// Where a rotation stands (the journal's `state`).
    State ("rotation state") {
        /// Steps create to finish are under way (or will resume at start).
        Running = "running",
        /// Finished: AWSCURRENT is the new version; finalize waits for the grace period.
        Grace = "grace",
        /// Finalized.
        Done = "done",
        /// A step failed after every retry; see `error`.
        Failed = "failed",
        /// Rolled back (or superseded) before finalize; nothing more will run.
        RolledBack = "rolled_back",
    }
}

impl State {
    /// Whether the rotation still holds the secret (one active rotation per secret).
    pub fn is_active(self) -> bool {
        matches!(self, State::Running | State::Grace)
    }
}

vocabulary! {
    /// The protocol steps, in order (SPEC §6).
    Step ("rotation step") {
        /// PutSecretValue of the new value as AWSPENDING.
        Create = "create",
        /// Apply the value to the backing system.
        Set = "set",
        /// Prove the new value works (plus `test` hooks).
        Test = "test",
        /// AWSCURRENT to the new version, AWSPENDING removed, `finish` hooks.
        Finish = "finish",
        /// After grace: drop the previous value, `finalize` hooks.
        Finalize = "finalize",
        /// Nothing left to do.
        Done = "done",
    }
}

impl Step {
    /// The step after this one.
    pub fn next(self) -> Step {
        match self {
            Step::Create => Step::Set,
            Step::Set => Step::Test,
            Step::Test => Step::Finish,
            Step::Finish => Step::Finalize,
            Step::Finalize | Step::Done => Step::Done,
        }
    }
}

vocabulary! {
    /// How a journaled step event went (the `outcome` column of `rotation_events`).
    EventOutcome ("journal outcome") {
        /// The step did its work.
        Ok = "ok",
        /// The step found its work already done.
        Skipped = "skipped",
        /// An attempt failed; it will be retried.
        Error = "error",
        /// The step failed for good.
        Failed = "failed",
        /// Something was asked of the step (finalize before its grace ended).
        Requested = "requested",
    }
}

vocabulary! {
    /// How keywarden rotates a secret (SPEC §6).
    Strategy ("strategy") {
        /// AWS-managed rotation through the secret's rotation Lambda.
        Lambda = "lambda",
        /// A new random string replaces the value.
        Random = "random",
        /// JSON `{"current", "previous"}` during grace (JWT signing keys).
        DualKey = "dual-key",
        /// JSON `{"primary", "secondary"}` with a re-encryption hook (encryption keys).
        PrimarySecondary = "primary-secondary",
        /// Alternating PostgreSQL users.
        Postgres = "postgres",
        /// Redis ACL user with two passwords during grace.
        Redis = "redis",
        /// The AUTH token of an ElastiCache replication group: ROTATE, then SET at finalize.
        Elasticache = "elasticache",
        /// Monitored only; never rotated by keywarden.
        None = "none",
    }
}

impl Strategy {
    /// Whether the strategy makes its new value from `bytes` random bytes.
    pub fn generates_bytes(self) -> bool {
        matches!(
            self,
            Strategy::Random | Strategy::DualKey | Strategy::PrimarySecondary
        )
    }

    /// Whether the secret holds two keys during grace (the old one is still a valid key), so a
    /// compromise must drop the previous key at once.
    pub fn keeps_two_keys(self) -> bool {
        matches!(self, Strategy::DualKey | Strategy::PrimarySecondary)
    }

    /// The grace (finish to finalize) when `rotation.grace` is not written (SPEC §11): long
    /// enough for every consumer to pick up the new value before the old one dies; zero where
    /// finalize removes nothing.
    pub fn default_grace(self) -> std::time::Duration {
        const HOUR: u64 = 3600;
        std::time::Duration::from_secs(match self {
            Strategy::DualKey => 48 * HOUR,
            Strategy::Postgres | Strategy::Redis | Strategy::Elasticache => 24 * HOUR,
            Strategy::PrimarySecondary => HOUR,
            Strategy::Random | Strategy::Lambda | Strategy::None => 0,
        })
    }

    /// Whether finalize makes the previous credential stop working on the backing system (a
    /// NOLOGIN user, a removed password, an ElastiCache token replaced by SET): after it, the
    /// previous version is a dead value.
    pub fn old_credential_dies_at_finalize(self) -> bool {
        matches!(
            self,
            Strategy::Postgres | Strategy::Redis | Strategy::Elasticache
        )
    }
}

vocabulary! {
    /// Severity of a secret: drives the severity of its alerts.
    Severity ("severity") {
        /// Pages immediately.
        Critical = "critical",
        /// Pages during working hours.
        High = "high",
        /// A ticket.
        Warning = "warning",
        /// Informational only.
        Info = "info",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_round_trips_and_indexes_its_position() {
        fn check<T>(all: &[T], names: &[&str])
        where
            T: Copy + PartialEq + fmt::Debug + std::str::FromStr + fmt::Display,
            <T as std::str::FromStr>::Err: fmt::Debug,
        {
            assert_eq!(all.len(), names.len());
            for (i, v) in all.iter().enumerate() {
                assert_eq!(v.to_string(), names[i]);
                assert_eq!(names[i].parse::<T>().expect("known word"), *v);
            }
        }
        check(&EventName::ALL, &EventName::NAMES);
        check(&Outcome::ALL, &Outcome::NAMES);
        check(&AnomalyKind::ALL, &AnomalyKind::NAMES);
        check(&Trigger::ALL, &Trigger::NAMES);
        check(&RotationResult::ALL, &RotationResult::NAMES);
        check(&State::ALL, &State::NAMES);
        check(&Step::ALL, &Step::NAMES);
        check(&EventOutcome::ALL, &EventOutcome::NAMES);
        check(&Strategy::ALL, &Strategy::NAMES);
        check(&Severity::ALL, &Severity::NAMES);
        for (i, s) in Step::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn an_unknown_word_is_an_error_naming_the_set() {
        let e = "sheduled".parse::<Trigger>().expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown trigger `sheduled`, expected one of `scheduled`, `manual`, `compromise`"
        );
        assert!(State::try_from("").is_err());
        assert!(Step::try_from("Create").is_err());
    }

    #[test]
    fn event_names_outside_the_list_are_other() {
        assert_eq!(EventName::of("GetSecretValue"), EventName::GetSecretValue);
        assert_eq!(EventName::of("ListSecrets"), EventName::Other);
        assert_eq!(EventName::of("other"), EventName::Other);
        assert_eq!(EventName::COUNT, 10);
    }

    #[test]
    fn serde_speaks_the_same_words() {
        assert_eq!(
            serde_json::to_string(&Strategy::DualKey).expect("json"),
            "\"dual-key\""
        );
        let s: Strategy = serde_json::from_str("\"primary-secondary\"").expect("json");
        assert_eq!(s, Strategy::PrimarySecondary);
        let e = serde_json::from_str::<Severity>("\"urgent\"").expect_err("unknown");
        assert!(e.to_string().contains("unknown variant `urgent`"), "{e}");
    }
}
