//! The `redis` strategy (SPEC §6, issue #8): one ACL user with two passwords during the grace.
//!
//! - set: `ACL SETUSER <user> >new` (the old password stays valid; adding a password the user
//!   already has is a no-op, so a repeated set changes nothing). Never `on`: a user a responder
//!   switched off stays off, and the test step then fails the rotation;
//! - test: a fresh connection authenticates as `<user>` with the new password and PINGs;
//! - finalize: `ACL SETUSER <user> resetpass >current`: every password but the current one is
//!   removed in one atomic command (the previous one, and any left by an abandoned rotation);
//!   repeating it changes nothing. In compromise mode `CLIENT KILL USER <user>` follows: it ends
//!   every connection of the user, those authenticated with the new password included (Redis
//!   cannot tell them apart); clients that reconnect with the new password get in.
//!
//! After each change `ACL SAVE` persists the users when the server has an `aclfile`; a server
//! without one answers that it is not configured for it, which is accepted (its users then live in
//! memory or in redis.conf, which keywarden does not rewrite).
//!
//! **Where and how.** keywarden logs in (as the admin, and as the user to test) to the server of
//! `rotation = { host, port }`, else of the master secret, never of the rotated secret
//! ([`super::server`]); the value needs only `username` and `password`. `rotation.tls =
//! "verify-full"` (the default) connects with TLS (`rediss://`), the certificate verified against
//! `rotation.ca_file` or the system trust store and its name against the host; `"disable"` is
//! plaintext, where `AUTH` crosses the network in the clear.
//!
//! The user must exist before the first rotation: keywarden manages its passwords, never its
//! command and key permissions. Errors are scrubbed of passwords before they are reported.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value as RValue};
use serde_json::{Map, Value};

use crate::aws::SecretValue;
use crate::config::{ServerConnection, ServerTls};

use super::server::{self, Endpoint};
use super::value::{encode_object, json_object, random_password, scrub};
use super::{BoxFut, RotationStrategy, StepContext, StrategyError};

/// Limit for connecting and for each step's commands.
const REDIS_TIMEOUT: Duration = Duration::from_secs(15);
/// Redis's port.
const DEFAULT_PORT: u16 = 6379;

/// `redis`: ACL user with two passwords.
#[derive(Debug)]
pub struct RedisAcl {
    /// Random bytes per password.
    pub bytes: usize,
    /// `rotation = { host, port, tls, ca_file }`.
    pub server: ServerConnection,
}

#[derive(Debug)]
struct Creds {
    username: String,
    password: SecretValue,
}

fn parse_map(v: &SecretValue, what: &str) -> Result<Map<String, Value>, StrategyError> {
    json_object(v).ok_or_else(|| {
        StrategyError(format!(
            "the {what} is not a JSON object with username and password"
        ))
    })
}

/// The login of `m`; `admin`: the master secret, whose username defaults to `default`.
fn creds_of(m: &Map<String, Value>, what: &str, admin: bool) -> Result<Creds, StrategyError> {
    let get = |k: &str| m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let missing = |k: &str| StrategyError(format!("the {what} has no non-empty \"{k}\""));
    Ok(Creds {
        username: match (get("username"), admin) {
            (Some(u), _) => u.to_string(),
            (None, true) => "default".to_string(),
            (None, false) => return Err(missing("username")),
        },
        password: SecretValue::new(
            get("password")
                .ok_or_else(|| missing("password"))?
                .to_string(),
        ),
    })
}

/// The login of a rotated value.
fn creds(v: &SecretValue, what: &str) -> Result<Creds, StrategyError> {
    creds_of(&parse_map(v, what)?, what, false)
}

fn redis_err(what: &str, e: &redis::RedisError, hide: &[&str]) -> StrategyError {
    StrategyError(scrub(&format!("redis: {what}: {e}"), hide))
}

async fn connect(
    at: &Endpoint,
    ca_file: Option<&std::path::Path>,
    c: &Creds,
    who: &str,
) -> Result<MultiplexedConnection, StrategyError> {
    let hide = [c.password.expose()];
    let addr = match at.tls {
        ServerTls::VerifyFull => ConnectionAddr::TcpTls {
            host: at.host.clone(),
            port: at.port,
            insecure: false,
            tls_params: None,
        },
        ServerTls::Disable => ConnectionAddr::Tcp(at.host.clone(), at.port),
    };
    let info = addr
        .into_connection_info()
        .map_err(|e| redis_err("connection settings", &e, &hide))?
        .set_redis_settings(
            RedisConnectionInfo::default()
                .set_username(&c.username)
                .set_password(c.password.expose())
                .set_skip_set_lib_name(),
        );
    let client = match at.tls {
        ServerTls::VerifyFull => {
            server::install_crypto_provider();
            let root_cert = ca_file.map(server::read_ca_pem).transpose()?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert,
                },
            )
        }
        ServerTls::Disable => redis::Client::open(info),
    }
    .map_err(|e| redis_err("client", &e, &hide))?;
    let what = format!(
        "cannot log in as {:?} ({who}) to {}:{}",
        c.username, at.host, at.port
    );
    match tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(redis_err(&what, &e, &hide)),
        Err(_) => Err(StrategyError(format!(
            "redis: {what}: timed out after {REDIS_TIMEOUT:?}"
        ))),
    }
}

/// Runs one command under [`REDIS_TIMEOUT`]; its error is scrubbed of `hide`.
async fn run(
    conn: &mut MultiplexedConnection,
    cmd: &redis::Cmd,
    what: &str,
    hide: &[&str],
) -> Result<RValue, StrategyError> {
    match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<RValue>(conn)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(redis_err(what, &e, hide)),
        Err(_) => Err(StrategyError(format!(
            "redis: {what}: timed out after {REDIS_TIMEOUT:?}"
        ))),
    }
}

/// `ACL SAVE`, accepting a server that has no ACL file.
async fn acl_save(conn: &mut MultiplexedConnection) -> Result<(), StrategyError> {
    match run(conn, redis::cmd("ACL").arg("SAVE"), "ACL SAVE", &[]).await {
        Ok(_) => Ok(()),
        Err(e) if e.0.contains("not configured to use an ACL file") => Ok(()),
        Err(e) => Err(e),
    }
}

impl RedisAcl {
    /// The admin's login and the server (configuration, else master secret).
    fn admin_login(&self, ctx: &StepContext<'_>) -> Result<(Creds, Endpoint), StrategyError> {
        let m = ctx.master.ok_or_else(|| {
            StrategyError("the redis strategy needs rotation.master_secret".into())
        })?;
        let m = parse_map(m, "master secret")?;
        let at = server::resolve(&self.server, &m, "redis", DEFAULT_PORT, false)?;
        Ok((creds_of(&m, "master secret", true)?, at))
    }

    /// The admin connection; refuses an admin that is the rotated user.
    async fn admin(
        &self,
        ctx: &StepContext<'_>,
        user: &Creds,
    ) -> Result<MultiplexedConnection, StrategyError> {
        let (admin, at) = self.admin_login(ctx)?;
        if admin.username == user.username {
            return Err(StrategyError(format!(
                "the master secret's user {:?} is the rotated user: use a separate admin user",
                admin.username
            )));
        }
        connect(&at, self.server.ca_file.as_deref(), &admin, "master secret").await
    }
}

impl RotationStrategy for RedisAcl {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn create_value(&self, old: &SecretValue) -> Result<SecretValue, StrategyError> {
        let mut m = parse_map(old, "current value")?;
        creds_of(&m, "current value", false)?;
        let pw = random_password(self.bytes)?;
        m.insert("password".into(), Value::String(pw.expose().to_string()));
        encode_object(m)
    }

    fn check_value(&self, new: &SecretValue) -> Result<(), StrategyError> {
        creds(new, "new value").map(|_| ())
    }

    fn set<'a>(
        &'a self,
        ctx: StepContext<'a>,
        new: &'a SecretValue,
        old: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let newc = creds(new, "new value")?;
            let oldc = creds(old, "current value")?;
            if newc.username != oldc.username {
                return Err(StrategyError(format!(
                    "the new value names user {:?}, the current one {:?}: the redis strategy keeps the user",
                    newc.username, oldc.username
                )));
            }
            let mut conn = self.admin(&ctx, &oldc).await?;
            let user = &newc.username;
            let exists = run(
                &mut conn,
                redis::cmd("ACL").arg("GETUSER").arg(user),
                "ACL GETUSER",
                &[],
            )
            .await?;
            if exists == RValue::Nil {
                return Err(StrategyError(format!(
                    "redis: ACL user {user:?} does not exist: create it with its command and key permissions first (keywarden only manages its passwords)"
                )));
            }
            let add = format!(">{}", newc.password.expose());
            run(
                &mut conn,
                redis::cmd("ACL").arg("SETUSER").arg(user).arg(&add),
                "ACL SETUSER (add the new password)",
                &[newc.password.expose()],
            )
            .await?;
            acl_save(&mut conn).await?;
            tracing::info!(secret = ctx.secret, user = %user, "Redis ACL user has the new password beside the old one.");
            Ok(())
        })
    }

    fn test<'a>(
        &'a self,
        ctx: StepContext<'a>,
        new: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let c = creds(new, "new value")?;
            // The admin's server: the value's own host is never used.
            let (_, at) = self.admin_login(&ctx)?;
            let mut conn = connect(&at, self.server.ca_file.as_deref(), &c, "new value").await?;
            let pong = run(&mut conn, &redis::cmd("PING"), "PING", &[]).await?;
            if !matches!(&pong, RValue::SimpleString(s) if s == "PONG") {
                return Err(StrategyError(format!(
                    "redis: PING as {:?} answered {pong:?}",
                    c.username
                )));
            }
            tracing::info!(secret = ctx.secret, user = %c.username, "Redis login with the new password works.");
            Ok(())
        })
    }

    fn finalize<'a>(
        &'a self,
        ctx: StepContext<'a>,
        current: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let c = creds(current, "current value")?;
            let mut conn = self.admin(&ctx, &c).await?;
            let keep = format!(">{}", c.password.expose());
            run(
                &mut conn,
                redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(&c.username)
                    .arg("resetpass")
                    .arg(&keep),
                "ACL SETUSER (remove the previous password)",
                &[c.password.expose()],
            )
            .await?;
            acl_save(&mut conn).await?;
            tracing::info!(secret = ctx.secret, user = %c.username, "Redis ACL user keeps only the current password.");
            if ctx.compromise {
                let killed = run(
                    &mut conn,
                    redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("USER")
                        .arg(&c.username),
                    "CLIENT KILL USER",
                    &[],
                )
                .await?;
                let n = match killed {
                    RValue::Int(n) => n,
                    _ => 0,
                };
                tracing::warn!(secret = ctx.secret, user = %c.username, connections = n, "Compromise: every connection of the Redis user was closed.");
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_the_user_and_fields() {
        let s = RedisAcl {
            bytes: 24,
            server: ServerConnection::default(),
        };
        let old = SecretValue::new(
            r#"{"username":"events","password":"r0","host":"127.0.0.1","port":6379,"db":2}"#.into(),
        );
        let new = s.create_value(&old).unwrap();
        let j: Value = serde_json::from_str(new.expose()).unwrap();
        assert_eq!(j["username"], "events");
        assert_eq!(j["db"], 2);
        assert_eq!(j["password"].as_str().unwrap().len(), 32);
        s.check_value(&new).unwrap();
        let master = SecretValue::new(r#"{"password":"admin-pw"}"#.into());
        let a = creds_of(&parse_map(&master, "m").unwrap(), "master", true).unwrap();
        assert_eq!(a.username.as_str(), "default");
        // The value needs no host or port: the server comes from the config or master secret.
        s.check_value(&SecretValue::new(
            r#"{"username":"u","password":"p"}"#.into(),
        ))
        .unwrap();
        for bad in ["x", r#"{"username":"u"}"#, r#"{"password":"p"}"#, "{}"] {
            assert!(
                s.check_value(&SecretValue::new(bad.into())).is_err(),
                "{bad}"
            );
        }
    }
}
