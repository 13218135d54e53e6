//! The Secrets Manager side of the four steps, each guarded the way the AWS rotation templates
//! guard theirs: read the version stages first and do nothing when the step's effect is already
//! there. With the token fixed per rotation (it is the new version id), running any step again,
//! after a crash or an error at any point, converges on the same single new version.
//!
//! Reads always name the version: `VersionStage`, or `VersionId` together with the stage it
//! must carry.

use crate::aws::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, AwsError, SecretStages, SecretValue, SecretsWriteApi,
    VersionSelector,
};

use super::failpoint;
use super::strategy::{RotationStrategy, StrategyError};

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The strategy refused or failed.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// A hook failed.
    #[error(transparent)]
    Hook(#[from] super::hooks::HookError),
    /// The secret is in a state the protocol cannot continue from (retried a few times: the
    /// state may be a moment's race with another writer).
    #[error("{0}")]
    Protocol(String),
    /// A failure that no retry can mend, raised only where AWSCURRENT is known not to be on the
    /// new version (a rotation Lambda past its timeout): the rotation fails even at finish.
    #[error("{0}")]
    Fatal(String),
}

/// How the rotation core retries a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A transient AWS failure (network, timeout, throttling): the long budget.
    Transient,
    /// Any other failure: the short budget.
    Limited,
    /// Not worth retrying: the rotation fails at once, even past finish (the rotation cannot go
    /// on: its secret left the inventory, or its Lambda gave up before AWSCURRENT moved).
    Never,
}

impl StepError {
    /// How this error is retried.
    pub fn retry(&self) -> Retry {
        use crate::aws::AwsErrorKind::{Network, Throttled, Timeout};
        match self {
            StepError::Fatal(_) => Retry::Never,
            StepError::Aws(a) if matches!(a.kind, Network | Timeout | Throttled) => {
                Retry::Transient
            }
            _ => Retry::Limited,
        }
    }
}

/// What create found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The version that was AWSCURRENT when the new value was made.
    pub previous_version_id: Option<String>,
    /// Whether this call wrote the version (false: it was already there).
    pub wrote: bool,
}

/// Step 1. If the token's version exists, nothing happens. Otherwise the current value is read
/// by stage, the strategy makes the new one, a stale AWSPENDING on another version is removed,
/// and PutSecretValue writes the new value as AWSPENDING under the token.
pub async fn create<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
    token: &str,
    strategy: &dyn RotationStrategy,
) -> Result<Created, StepError> {
    let st = api.describe(secret_id).await?;
    if st.stages_of(token).is_some() {
        // Written before a crash or a lost answer: the previous version is the one that is
        // still AWSCURRENT, or AWSPREVIOUS if the rotation got past finish.
        let previous = if st.has(token, AWSCURRENT) {
            st.version_with(AWSPREVIOUS)
        } else {
            st.version_with(AWSCURRENT)
        };
        return Ok(Created {
            previous_version_id: previous.map(str::to_string),
            wrote: false,
        });
    }
    let current = st
        .version_with(AWSCURRENT)
        .ok_or_else(|| StepError::Protocol(format!("{secret_id} has no AWSCURRENT version")))?
        .to_string();
    let old = api
        .get_value(secret_id, VersionSelector::Stage(AWSCURRENT))
        .await?;
    if old.version_id != current {
        return Err(StepError::Protocol(format!(
            "AWSCURRENT of {secret_id} moved while the rotation read it; retrying"
        )));
    }
    let new = strategy.create_value(&old.value)?.kept_as(&old.value);
    clear_stale_pending(api, secret_id, &st, token).await?;
    api.put_pending(secret_id, token, &new).await?;
    failpoint::hit("create:put");
    Ok(Created {
        previous_version_id: Some(current),
        wrote: true,
    })
}

/// Removes AWSPENDING from any version other than `token` and AWSCURRENT (a rotation someone
/// else left unfinished), so the label can only ever mark this rotation's version.
async fn clear_stale_pending<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
    st: &SecretStages,
    token: &str,
) -> Result<(), StepError> {
    for (id, stages) in &st.versions {
        let pending = stages.iter().any(|s| s == AWSPENDING);
        let current = stages.iter().any(|s| s == AWSCURRENT);
        if pending && id != token && !current {
            tracing::warn!(secret_id, version = %id, "Removing AWSPENDING left on another version by an unfinished rotation.");
            api.update_stage(secret_id, AWSPENDING, None, Some(id))
                .await?;
        }
    }
    Ok(())
}

/// The new value for set and test: `None` when the token's version is already AWSCURRENT (the
/// rotation got past finish, so set and test have nothing left to do).
pub async fn pending_value<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
    token: &str,
) -> Result<Option<SecretValue>, StepError> {
    let st = api.describe(secret_id).await?;
    if st.has(token, AWSCURRENT) {
        return Ok(None);
    }
    if !st.has(token, AWSPENDING) {
        return Err(StepError::Protocol(format!(
            "version {token} of {secret_id} is not AWSPENDING any more (was it removed by hand?)"
        )));
    }
    let v = api
        .get_value(secret_id, VersionSelector::IdAndStage(token, AWSPENDING))
        .await?;
    Ok(Some(v.value))
}

/// The current value (by stage) with its version id.
pub async fn current_value<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
) -> Result<(String, SecretValue), StepError> {
    let v = api
        .get_value(secret_id, VersionSelector::Stage(AWSCURRENT))
        .await?;
    Ok((v.version_id, v.value))
}

/// Step 4, label side: AWSCURRENT to the token's version (the old one becomes AWSPREVIOUS) and
/// AWSPENDING removed from it. Returns whether AWSCURRENT moved in this call.
pub async fn promote<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
    token: &str,
    previous: Option<&str>,
) -> Result<bool, StepError> {
    let st = api.describe(secret_id).await?;
    let mut moved = false;
    if !st.has(token, AWSCURRENT) {
        if !st.has(token, AWSPENDING) {
            return Err(StepError::Protocol(format!(
                "version {token} of {secret_id} is neither AWSPENDING nor AWSCURRENT"
            )));
        }
        let current = st.version_with(AWSCURRENT).map(str::to_string);
        api.update_stage(secret_id, AWSCURRENT, Some(token), current.as_deref())
            .await?;
        failpoint::hit("finish:moved");
        moved = true;
    }
    let st = api.describe(secret_id).await?;
    if st.has(token, AWSPENDING) {
        api.update_stage(secret_id, AWSPENDING, None, Some(token))
            .await?;
    }
    failpoint::hit("finish:unpended");
    // AWS moves AWSPREVIOUS to the demoted version itself; make sure it is there.
    if let Some(prev) = previous.filter(|p| *p != token)
        && st.stages_of(prev).is_some()
        && !st.has(prev, AWSPREVIOUS)
        && moved
    {
        let holder = st.version_with(AWSPREVIOUS).map(str::to_string);
        api.update_stage(secret_id, AWSPREVIOUS, Some(prev), holder.as_deref())
            .await?;
    }
    Ok(moved)
}

/// Where AWSCURRENT stands relative to this rotation at finalize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalizeState {
    /// AWSCURRENT is the rotation's version: finalize applies.
    Ours,
    /// AWSCURRENT is already the finalized version.
    Finalized,
    /// AWSCURRENT is another version (rolled back, or rotated by someone else).
    Superseded(Option<String>),
}

/// Reads the stages for finalize.
pub async fn finalize_state<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
    token: &str,
    final_token: &str,
) -> Result<FinalizeState, StepError> {
    let st = api.describe(secret_id).await?;
    Ok(match st.version_with(AWSCURRENT) {
        // Also when the finalized value was written but not promoted yet: write_final resumes.
        Some(c) if c == token => FinalizeState::Ours,
        Some(c) if c == final_token => FinalizeState::Finalized,
        other => FinalizeState::Superseded(other.map(str::to_string)),
    })
}

/// Finalize, value side: writes `value` as AWSPENDING under `final_token` (unless that version
/// exists) and promotes it.
pub async fn write_final<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
    token: &str,
    final_token: &str,
    value: &SecretValue,
) -> Result<(), StepError> {
    let st = api.describe(secret_id).await?;
    if st.stages_of(final_token).is_none() {
        api.put_pending(secret_id, final_token, value).await?;
        failpoint::hit("finalize:put");
    }
    promote(api, secret_id, final_token, Some(token)).await?;
    failpoint::hit("finalize:moved");
    Ok(())
}

/// Compromise finalize: takes AWSPREVIOUS off whatever version holds it (the leaked value, or
/// the two-key version that still carries the leaked key), so no rollback can bring it back.
/// Returns the version it was taken from; idempotent.
pub async fn drop_previous<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
) -> Result<Option<String>, StepError> {
    let st = api.describe(secret_id).await?;
    let Some(holder) = st
        .version_with(AWSPREVIOUS)
        .filter(|v| !st.has(v, AWSCURRENT))
        .map(str::to_string)
    else {
        return Ok(None);
    };
    api.update_stage(secret_id, AWSPREVIOUS, None, Some(&holder))
        .await?;
    Ok(Some(holder))
}

/// Removes AWSPENDING from the token's version after a failed rotation, so the secret is left
/// exactly as before (plus an unlabelled version). Nothing happens if it became AWSCURRENT.
pub async fn abandon<A: SecretsWriteApi>(
    api: &A,
    secret_id: &str,
    token: &str,
) -> Result<(), StepError> {
    let st = api.describe(secret_id).await?;
    if st.has(token, AWSPENDING) && !st.has(token, AWSCURRENT) {
        api.update_stage(secret_id, AWSPENDING, None, Some(token))
            .await?;
    }
    Ok(())
}

/// What an AWS-managed (Lambda) rotation looks like right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LambdaState {
    /// RotateSecret was not called for this token yet.
    NotStarted,
    /// The token's version exists and is not AWSCURRENT yet.
    InProgress,
    /// The token's version is AWSCURRENT.
    Done,
}

/// Reads the stages of a Lambda rotation.
pub fn lambda_state(st: &SecretStages, token: &str) -> LambdaState {
    if st.has(token, AWSCURRENT) {
        LambdaState::Done
    } else if st.stages_of(token).is_some() {
        LambdaState::InProgress
    } else {
        LambdaState::NotStarted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(v: &[(&str, &[&str])]) -> SecretStages {
        SecretStages {
            versions: v
                .iter()
                .map(|(id, s)| (id.to_string(), s.iter().map(|x| x.to_string()).collect()))
                .collect(),
            ..SecretStages::default()
        }
    }

    #[test]
    fn lambda_states() {
        type Versions<'a> = &'a [(&'a str, &'a [&'a str])];
        let cases: &[(Versions, LambdaState)] = &[
            (&[("old", &["AWSCURRENT"])], LambdaState::NotStarted),
            (
                &[("old", &["AWSCURRENT"]), ("t", &["AWSPENDING"])],
                LambdaState::InProgress,
            ),
            (
                &[
                    ("old", &["AWSPREVIOUS"]),
                    ("t", &["AWSCURRENT", "AWSPENDING"]),
                ],
                LambdaState::Done,
            ),
        ];
        for (versions, want) in cases {
            assert_eq!(&lambda_state(&st(versions), "t"), want);
        }
    }
}
