//! The `elasticache` strategy (SPEC §11, issue #13 point 1): the AUTH token of an ElastiCache
//! replication group (`rotation.replication_group`), kept as the runbook keeps it.
//!
//! **Value.** A plain string is the token itself and stays a plain string; a JSON object keeps
//! its other fields and has the token in `password`. A new token is 64 characters of URL-safe
//! base64 (48 CSPRNG bytes): inside ElastiCache's rule (16 to 128 printable characters, none of
//! `@`, `"` or `/`), checked by [`valid_token`].
//!
//! **ElastiCache semantics** (what the steps rely on): `ROTATE` adds a token and keeps the
//! current one valid beside it; the group holds at most two, so a `ROTATE` while two are valid
//! drops the older; `SET` keeps only the given token. Each change shows the group `modifying`
//! until it is `available` again, and a change is refused (`InvalidReplicationGroupState`) while
//! another one runs.
//!
//! - set: wait while the group is `modifying` (bounded by `rotation.timeout`); if the new token
//!   already authenticates (a set resumed after a crash), stop: a second `ROTATE` could drop the
//!   current token. Otherwise `SET` the current token first, then `ROTATE` the new one,
//!   `ApplyImmediately`, each followed by the wait. The `SET` drops a token an abandoned or
//!   rolled-back rotation left beside the current one, which the `ROTATE` would otherwise keep
//!   while dropping the current token (the one every client uses). Re-running any part is
//!   harmless.
//! - test: `AUTH <new token>` and `PING` on the primary endpoint DescribeReplicationGroups
//!   reports (the configuration endpoint in cluster mode), over TLS when the group has
//!   in-transit encryption (verified against `rotation.ca_file` or the system trust store).
//! - finalize (after the grace; at once in a compromise): wait while `modifying`, `SET` the
//!   current token, wait until `available`, and check that it authenticates. The old token is
//!   refused from then on. ElastiCache cannot list or close the connections that authenticated
//!   with the old token: a compromise report says so.
//!
//! AWS errors are reported as AWS gave them (code and message): a group in another state
//! (`InvalidReplicationGroupState`), an unknown group (`ReplicationGroupNotFoundFault`), a group
//! without in-transit encryption (`InvalidParameterValue`). No token appears in any error or log.

use std::path::PathBuf;
use std::time::Duration;

use redis::{ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo, Value as RValue};
use serde_json::Value;

use crate::aws::{AuthTokenUpdate, ElastiCacheApi, ReplicationGroupState, SecretValue};

use super::server;
use super::value::{encode_object, json_object, random_password, scrub};
use super::{BoxFut, RotationStrategy, StepContext, StrategyError};

/// CSPRNG bytes per token: 64 characters of URL-safe base64.
const TOKEN_BYTES: usize = 48;
/// Limit for connecting and for PING.
const REDIS_TIMEOUT: Duration = Duration::from_secs(15);
/// First pause between two DescribeReplicationGroups while the group is `modifying`.
const FIRST_POLL: Duration = Duration::from_millis(500);
/// Longest pause between two of them.
const MAX_POLL: Duration = Duration::from_secs(10);

/// `elasticache`: the AUTH token of a replication group.
#[derive(Debug)]
pub struct ElastiCacheToken {
    /// `rotation.replication_group`.
    pub replication_group: String,
    /// `rotation.timeout`: how long each wait for `available` may take.
    pub timeout: Duration,
    /// `rotation.ca_file`: CA certificates for the TLS connection.
    pub ca_file: Option<PathBuf>,
}

/// Whether `token` is a valid ElastiCache AUTH token: 16 to 128 printable ASCII characters,
/// none of `@`, `"` or `/` (and no space). Pure. The error never shows the token.
pub fn valid_token(token: &str) -> Result<(), StrategyError> {
    let n = token.chars().count();
    if !(16..=128).contains(&n) {
        return Err(StrategyError(format!(
            "an ElastiCache AUTH token has 16 to 128 characters; this one has {n}"
        )));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '@' | '"' | '/'))
    {
        let what = if c.is_ascii_graphic() {
            format!("{c:?}")
        } else {
            "a space, control or non-ASCII character".to_string()
        };
        return Err(StrategyError(format!(
            "an ElastiCache AUTH token is printable ASCII without '@', '\"' or '/'; this one has {what}"
        )));
    }
    Ok(())
}

/// A new token: [`TOKEN_BYTES`] CSPRNG bytes, URL-safe base64 without padding.
pub fn new_token() -> Result<SecretValue, StrategyError> {
    let t = random_password(TOKEN_BYTES)?;
    valid_token(t.expose())?;
    Ok(t)
}

/// The token a value holds: the value itself, or the `password` of a JSON object. Pure.
pub fn token_of(v: &SecretValue, what: &str) -> Result<SecretValue, StrategyError> {
    match json_object(v) {
        Some(m) => m
            .get("password")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| SecretValue::new(s.to_string()))
            .ok_or_else(|| {
                StrategyError(format!(
                    "the {what} is a JSON object without a non-empty \"password\" (the AUTH token)"
                ))
            }),
        None if v.is_empty() => Err(StrategyError(format!("the {what} is empty"))),
        None => Ok(v.clone()),
    }
}

/// `old` with its token replaced by `token`, in `old`'s shape: a plain string stays a plain
/// string; a JSON object keeps its other fields and changes `password`. Pure.
pub fn with_token(old: &SecretValue, token: &SecretValue) -> Result<SecretValue, StrategyError> {
    token_of(old, "current value")?;
    match json_object(old) {
        Some(mut m) => {
            m.insert("password".into(), Value::String(token.expose().to_string()));
            encode_object(m)
        }
        None => Ok(token.clone()),
    }
}

fn aws_err(group: &str, e: &crate::aws::AwsError) -> StrategyError {
    StrategyError(format!("replication group {group}: {e}"))
}

/// How a login with a token went.
enum Login {
    /// AUTH and PING succeeded.
    Works,
    /// The server refused the token.
    Refused,
}

impl ElastiCacheToken {
    fn api<'a>(&self, ctx: &StepContext<'a>) -> Result<&'a dyn ElastiCacheApi, StrategyError> {
        ctx.elasticache.ok_or_else(|| {
            StrategyError(
                "the elasticache strategy has no ElastiCache client in this process".into(),
            )
        })
    }

    /// Describes the group until it is no longer `modifying` (nor has an AUTH token change
    /// pending), for at most `rotation.timeout`.
    async fn settled(
        &self,
        api: &dyn ElastiCacheApi,
    ) -> Result<ReplicationGroupState, StrategyError> {
        let group = self.replication_group.as_str();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = FIRST_POLL;
        loop {
            let g = api
                .describe_replication_group(group)
                .await
                .map_err(|e| aws_err(group, &e))?;
            let busy = g.status == "modifying" || g.pending_auth_token.is_some();
            if !busy {
                return Ok(g);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(StrategyError(format!(
                    "replication group {group} is still {:?}{} after rotation.timeout ({})",
                    g.status,
                    g.pending_auth_token
                        .as_deref()
                        .map(|p| format!(" (AUTH token {p})"))
                        .unwrap_or_default(),
                    crate::schedule::format_duration(self.timeout)
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// ModifyReplicationGroup with `token` and `update`, then the wait until the change is
    /// applied. Returns the group as it is afterwards.
    async fn modify(
        &self,
        ctx: &StepContext<'_>,
        api: &dyn ElastiCacheApi,
        token: &SecretValue,
        update: AuthTokenUpdate,
    ) -> Result<ReplicationGroupState, StrategyError> {
        let group = self.replication_group.as_str();
        api.modify_auth_token(group, token, update)
            .await
            .map_err(|e| aws_err(group, &e))?;
        tracing::info!(
            secret = ctx.secret,
            replication_group = group,
            update = update.as_str(),
            "ElastiCache AUTH token change requested; waiting until the group is available."
        );
        let g = self.settled(api).await?;
        if g.status != "available" {
            return Err(StrategyError(format!(
                "replication group {group} is {:?} after the AUTH token {} (expected \"available\")",
                g.status,
                update.as_str()
            )));
        }
        Ok(g)
    }

    /// AUTH with `token` and PING on the group's primary endpoint.
    async fn login(
        &self,
        g: &ReplicationGroupState,
        token: &SecretValue,
    ) -> Result<Login, StrategyError> {
        let group = self.replication_group.as_str();
        let (host, port) = g.primary_endpoint.clone().ok_or_else(|| {
            StrategyError(format!(
                "replication group {group} reports no primary or configuration endpoint"
            ))
        })?;
        let hide = [token.expose()];
        let err = |what: &str, e: &redis::RedisError| {
            StrategyError(scrub(
                &format!("redis: {what} {host}:{port} (replication group {group}): {e}"),
                &hide,
            ))
        };
        let addr = if g.transit_encryption {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), port)
        };
        let info = addr
            .into_connection_info()
            .map_err(|e| err("connection settings for", &e))?
            .set_redis_settings(
                RedisConnectionInfo::default()
                    .set_password(token.expose())
                    .set_skip_set_lib_name(),
            );
        let client = if g.transit_encryption {
            server::install_crypto_provider();
            let root_cert = self
                .ca_file
                .as_deref()
                .map(server::read_ca_pem)
                .transpose()?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
        } else {
            redis::Client::open(info)
        }
        .map_err(|e| err("client for", &e))?;
        let mut conn = match tokio::time::timeout(
            REDIS_TIMEOUT,
            client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) if e.kind() == ErrorKind::AuthenticationFailed => return Ok(Login::Refused),
            Ok(Err(e)) => return Err(err("cannot connect to", &e)),
            Err(_) => {
                return Err(StrategyError(format!(
                    "redis: cannot connect to {host}:{port} (replication group {group}): timed out after {REDIS_TIMEOUT:?}"
                )));
            }
        };
        let pong = match tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("PING").query_async::<RValue>(&mut conn),
        )
        .await
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) if e.kind() == ErrorKind::AuthenticationFailed => return Ok(Login::Refused),
            Ok(Err(e)) => return Err(err("PING on", &e)),
            Err(_) => {
                return Err(StrategyError(format!(
                    "redis: PING on {host}:{port} (replication group {group}): timed out after {REDIS_TIMEOUT:?}"
                )));
            }
        };
        match &pong {
            RValue::SimpleString(s) if s == "PONG" => Ok(Login::Works),
            other => Err(StrategyError(format!(
                "redis: PING on {host}:{port} (replication group {group}) answered {other:?}"
            ))),
        }
    }
}

impl RotationStrategy for ElastiCacheToken {
    fn name(&self) -> &'static str {
        "elasticache"
    }

    fn create_value(&self, old: &SecretValue) -> Result<SecretValue, StrategyError> {
        with_token(old, &new_token()?)
    }

    fn check_value(&self, new: &SecretValue) -> Result<(), StrategyError> {
        valid_token(token_of(new, "new value")?.expose())
    }

    fn set<'a>(
        &'a self,
        ctx: StepContext<'a>,
        new: &'a SecretValue,
        old: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let api = self.api(&ctx)?;
            let group = self.replication_group.as_str();
            let new_tok = token_of(new, "new value")?;
            let old_tok = token_of(old, "current value")?;
            valid_token(new_tok.expose())?;
            let g = self.settled(api).await?;
            if g.status == "available" && matches!(self.login(&g, &new_tok).await?, Login::Works) {
                tracing::info!(
                    secret = ctx.secret,
                    replication_group = group,
                    "The new AUTH token already works on the replication group (a resumed set): no second ROTATE."
                );
                return Ok(());
            }
            self.modify(&ctx, api, &old_tok, AuthTokenUpdate::Set)
                .await?;
            self.modify(&ctx, api, &new_tok, AuthTokenUpdate::Rotate)
                .await?;
            tracing::info!(
                secret = ctx.secret,
                replication_group = group,
                "ElastiCache accepts the new AUTH token beside the current one (ROTATE)."
            );
            Ok(())
        })
    }

    fn test<'a>(
        &'a self,
        ctx: StepContext<'a>,
        new: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let api = self.api(&ctx)?;
            let group = self.replication_group.as_str();
            let tok = token_of(new, "new value")?;
            valid_token(tok.expose())?;
            let g = api
                .describe_replication_group(group)
                .await
                .map_err(|e| aws_err(group, &e))?;
            match self.login(&g, &tok).await? {
                Login::Works => {
                    tracing::info!(
                        secret = ctx.secret,
                        replication_group = group,
                        "AUTH and PING with the new token work on the primary endpoint."
                    );
                    Ok(())
                }
                Login::Refused => Err(StrategyError(format!(
                    "replication group {group} refuses the new AUTH token on its primary endpoint"
                ))),
            }
        })
    }

    fn finalize<'a>(
        &'a self,
        ctx: StepContext<'a>,
        current: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let api = self.api(&ctx)?;
            let group = self.replication_group.as_str();
            let tok = token_of(current, "current value")?;
            self.settled(api).await?;
            let g = self.modify(&ctx, api, &tok, AuthTokenUpdate::Set).await?;
            match self.login(&g, &tok).await? {
                Login::Works => {}
                Login::Refused => {
                    return Err(StrategyError(format!(
                        "replication group {group} refuses the current AUTH token after SET"
                    )));
                }
            }
            if ctx.compromise {
                tracing::warn!(
                    secret = ctx.secret,
                    replication_group = group,
                    "Compromise: the replication group accepts only the new AUTH token (SET); connections opened with the old one are not closed by ElastiCache."
                );
            } else {
                tracing::info!(
                    secret = ctx.secret,
                    replication_group = group,
                    "The replication group accepts only the current AUTH token (SET)."
                );
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SecretValue {
        SecretValue::new(s.to_string())
    }

    fn strategy() -> ElastiCacheToken {
        ElastiCacheToken {
            replication_group: "event-service-redis".into(),
            timeout: Duration::from_secs(60),
            ca_file: None,
        }
    }

    #[test]
    fn new_tokens_are_valid_for_elasticache_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let t = new_token().unwrap();
            let s = t.expose();
            assert_eq!(s.len(), 64);
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "alphabet"
            );
            valid_token(s).unwrap();
            assert!(seen.insert(s.to_string()), "tokens differ");
        }
    }

    #[test]
    fn the_token_rule_is_elasticaches() {
        let ok = [
            "a".repeat(16),
            "Z".repeat(128),
            "p!#$%&'()*+,-.:;<=>?[]^_`{|}~0".into(),
        ];
        for t in &ok {
            valid_token(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
        let bad = [
            "a".repeat(15),
            "a".repeat(129),
            format!("{}@", "a".repeat(20)),
            format!("{}\"", "a".repeat(20)),
            format!("{}/", "a".repeat(20)),
            format!("{} b", "a".repeat(20)),
            format!("{}é", "a".repeat(20)),
            format!("{}\n", "a".repeat(20)),
        ];
        for t in &bad {
            let e = valid_token(t).expect_err(t);
            // The error never shows the token.
            assert!(!e.0.contains(&"a".repeat(15)), "{e}");
        }
    }

    #[test]
    fn the_new_value_keeps_the_current_shape() {
        let s = strategy();
        // A plain string stays a plain string.
        let old = v("initial-token-0123456789");
        let new = s.create_value(&old).unwrap();
        assert!(json_object(&new).is_none());
        assert_ne!(new, old);
        valid_token(new.expose()).unwrap();
        s.check_value(&new).unwrap();
        // A JSON object keeps its other fields and changes "password".
        let old = v(
            r#"{"password":"initial-token-0123456789","host":"r.example","port":6379,"tls":true}"#,
        );
        let new = s.create_value(&old).unwrap();
        let m = json_object(&new).unwrap();
        assert_eq!(m["host"], "r.example");
        assert_eq!(m["port"], 6379);
        assert_eq!(m["tls"], true);
        assert_eq!(m.len(), 4);
        let tok = token_of(&new, "new").unwrap();
        assert_ne!(tok.expose(), "initial-token-0123456789");
        valid_token(tok.expose()).unwrap();
        s.check_value(&new).unwrap();
        // The token is read back from either shape.
        assert_eq!(
            token_of(&v("plain-token-abcdefgh"), "x").unwrap().expose(),
            "plain-token-abcdefgh"
        );
        // What cannot hold a token is refused, and the error names the field, not a value.
        for bad in [
            "",
            r#"{"user":"x"}"#,
            r#"{"password":""}"#,
            r#"{"password":7}"#,
        ] {
            let e = s.create_value(&v(bad)).expect_err(bad);
            assert!(
                e.0.contains("empty") || e.0.contains("password"),
                "{bad}: {e}"
            );
        }
        // A new value whose token breaks the rule fails the test step's shape check.
        assert!(s.check_value(&v("short")).is_err());
        assert!(
            s.check_value(&v(r#"{"password":"has/a/slash/in/it/0123"}"#))
                .is_err()
        );
    }
}
