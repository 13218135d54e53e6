//! The `postgres` strategy (SPEC §6, issue #8): alternating users on a PostgreSQL server.
//!
//! **Naming.** A secret's user `U` pairs with `U_b`; a user already named `X_b` pairs with `X`.
//! The first rotation of `app` creates `app_b`; the next one gives `app` a new password and
//! LOGIN again; and so on. The user without the suffix (`app`) is the pair's *owner role*.
//!
//! **No grant or ownership drift.** `app_b` is made a member of `app` and gets
//! `ALTER ROLE app_b SET role = 'app'`, so every session of `app_b` runs as `app`: whatever
//! either user creates is owned by `app`, and both hold exactly `app`'s privileges, memberships and
//! default privileges, after any number of rotations. Nothing is copied, so nothing can drift
//! (the failure mode of the AWS multi-user template, which re-creates the clone with copied
//! grants and leaves objects owned by whichever user made them).
//!
//! **Passwords.** The new password reaches the server only as a SCRAM-SHA-256 verifier computed
//! here (`ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'`, as psql's `\password` does): the
//! cleartext is never in a statement, so `log_statement = all` cannot log it. Errors are scrubbed
//! of both the password and the verifier before they are reported.
//!
//! **Where and how.** The admin logs in to the server of `rotation = { host, port, dbname }`,
//! else of the master secret, never of the rotated secret ([`super::server`]); the test step
//! logs in as the new user on that same server (in the value's `dbname` when it has one). The
//! value may therefore be the runbook's `{"username","password"}` alone; create keeps its shape.
//! With `rotation.tls = "verify-full"` (the default) the connection is TLS with the chain and the
//! host name verified and `channel_binding=require` (SCRAM-SHA-256-PLUS); `"disable"` is
//! plaintext. In both a server asking for a cleartext or MD5 password gets none
//! ([`super::pg_auth`]).

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio_postgres::config::{ChannelBinding, SslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, NoTls};

use crate::aws::SecretValue;
use crate::config::{ServerConnection, ServerTls};

use super::pg_auth::{Guarded, GuardedTls};
use super::server::{self, Endpoint};
use super::value::{encode_object, json_object, random_password, scrub};
use super::{BoxFut, RotationStrategy, StepContext, StrategyError};

/// The suffix of the second user of a pair.
pub const SECOND_SUFFIX: &str = "_b";
/// Longest PostgreSQL identifier (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;
/// Limit for connecting and for each step's statements.
const DB_TIMEOUT: Duration = Duration::from_secs(15);
/// PostgreSQL's port.
const DEFAULT_PORT: u16 = 5432;

/// `postgres`: alternating users.
#[derive(Debug)]
pub struct Postgres {
    /// Random bytes per password.
    pub bytes: usize,
    /// `rotation = { host, port, dbname, tls, ca_file }`.
    pub server: ServerConnection,
}

/// The login fields of a secret value (the rotated secret or the master secret).
#[derive(Debug)]
struct Login {
    username: String,
    password: SecretValue,
    /// The value's own database, if it names one.
    dbname: Option<String>,
}

fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn parse_map(v: &SecretValue, what: &str) -> Result<Map<String, Value>, StrategyError> {
    json_object(v).ok_or_else(|| {
        StrategyError(format!(
            "the {what} is not a JSON object with username and password"
        ))
    })
}

fn login_of(m: &Map<String, Value>, what: &str) -> Result<Login, StrategyError> {
    let missing = |k: &str| StrategyError(format!("the {what} has no non-empty \"{k}\""));
    Ok(Login {
        username: field(m, "username")
            .ok_or_else(|| missing("username"))?
            .to_string(),
        password: SecretValue::new(
            field(m, "password")
                .ok_or_else(|| missing("password"))?
                .to_string(),
        ),
        dbname: field(m, "dbname").map(str::to_string),
    })
}

fn login(v: &SecretValue, what: &str) -> Result<Login, StrategyError> {
    login_of(&parse_map(v, what)?, what)
}

/// The owner role of a user's pair and the other user: `app` -> (`app`, `app_b`),
/// `app_b` -> (`app`, `app`).
pub fn pair_of(username: &str) -> Result<(String, String), StrategyError> {
    if username.contains('\0') {
        return Err(StrategyError(
            "the username contains a NUL character".into(),
        ));
    }
    match username.strip_suffix(SECOND_SUFFIX) {
        Some(base) if !base.is_empty() => Ok((base.to_string(), base.to_string())),
        _ => {
            let other = format!("{username}{SECOND_SUFFIX}");
            if other.len() > MAX_IDENT {
                return Err(StrategyError(format!(
                    "the second user of {username:?} would be {} bytes long, over PostgreSQL's {MAX_IDENT}: shorten the username",
                    other.len()
                )));
            }
            Ok((username.to_string(), other))
        }
    }
}

/// `quote_ident`: always quoted, inner double quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `quote_literal` for `standard_conforming_strings = on` (the default since 9.1): single
/// quotes doubled; a backslash makes it an `E''` string with backslashes doubled.
pub fn quote_literal(s: &str) -> String {
    let body = s.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

fn pg_err(what: &str, e: &tokio_postgres::Error, hide: &[&str]) -> StrategyError {
    let detail = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            // tokio-postgres's own text is only the kind ("error communicating with the
            // server"): the causes say what happened (a refusal, a certificate problem).
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        }
    };
    StrategyError(scrub(&format!("postgres: {what}: {detail}"), hide))
}

/// Logs in as `login` to `dbname` on `at`: TLS verify-full with channel binding, or plaintext
/// when the configuration says so; in both, cleartext and MD5 password requests are refused.
async fn connect(
    at: &Endpoint,
    ca_file: Option<&std::path::Path>,
    login: &Login,
    dbname: &str,
    who: &str,
) -> Result<Client, StrategyError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&at.host)
        .port(at.port)
        .user(&login.username)
        .password(login.password.expose().as_bytes())
        .dbname(dbname)
        .application_name("keywarden");
    let hide = [login.password.expose()];
    let what = format!(
        "cannot log in as {:?} ({who}) to {}:{}/{dbname}",
        login.username, at.host, at.port
    );
    let attempt = async {
        let tcp = TcpStream::connect((at.host.as_str(), at.port))
            .await
            .map_err(|e| StrategyError(format!("postgres: {what}: {e}")))?;
        match at.tls {
            ServerTls::VerifyFull => {
                let tls = server::client_config(ca_file)?;
                let mut make = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                let tls = <_ as MakeTlsConnect<TcpStream>>::make_tls_connect(&mut make, &at.host)
                    .map_err(|e| StrategyError(format!("postgres: {what}: {e}")))?;
                cfg.ssl_mode(SslMode::Require)
                    .channel_binding(ChannelBinding::Require);
                let (client, conn) = cfg
                    .connect_raw(tcp, GuardedTls(tls))
                    .await
                    .map_err(|e| pg_err(&what, &e, &hide))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "PostgreSQL connection closed with an error.");
                    }
                });
                Ok(client)
            }
            ServerTls::Disable => {
                cfg.ssl_mode(SslMode::Disable)
                    .channel_binding(ChannelBinding::Disable);
                let (client, conn) = cfg
                    .connect_raw(Guarded::new(tcp), NoTls)
                    .await
                    .map_err(|e| pg_err(&what, &e, &hide))?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "PostgreSQL connection closed with an error.");
                    }
                });
                Ok(client)
            }
        }
    };
    match tokio::time::timeout(DB_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(StrategyError(format!(
            "postgres: {what}: timed out after {DB_TIMEOUT:?}"
        ))),
    }
}

/// Runs `f` under [`DB_TIMEOUT`].
async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, StrategyError>>,
) -> Result<T, StrategyError> {
    tokio::time::timeout(DB_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(StrategyError(format!(
                "postgres: {what} timed out after {DB_TIMEOUT:?}"
            )))
        })
}

impl Postgres {
    /// The admin's login and the server it logs in to (configuration, else master secret).
    fn admin(&self, ctx: &StepContext<'_>) -> Result<(Login, Endpoint), StrategyError> {
        let m = ctx.master.ok_or_else(|| {
            StrategyError("the postgres strategy needs rotation.master_secret".into())
        })?;
        let m = parse_map(m, "master secret")?;
        let at = server::resolve(&self.server, &m, "postgres", DEFAULT_PORT, true)?;
        Ok((login_of(&m, "master secret")?, at))
    }

    /// Connects as the admin.
    async fn admin_client(&self, ctx: &StepContext<'_>) -> Result<Client, StrategyError> {
        let (admin, at) = self.admin(ctx)?;
        let db = at.dbname.clone().unwrap_or_default();
        connect(
            &at,
            self.server.ca_file.as_deref(),
            &admin,
            &db,
            "master secret",
        )
        .await
    }
}

/// Whether a role exists, and whether it is a superuser.
/// Ends every session of `user` but this one; how many there were. The admin role needs
/// `pg_signal_backend`.
async fn terminate_sessions(client: &Client, user: &str) -> Result<usize, StrategyError> {
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = $1 AND pid <> pg_backend_pid()",
            &[&user],
        )
        .await
        .map_err(|e| {
            pg_err(
                &format!(
                    "ending the sessions of {user:?} (the admin role needs pg_signal_backend)"
                ),
                &e,
                &[],
            )
        })?;
    let failed = rows.iter().filter(|r| !r.get::<_, bool>(0)).count();
    if failed > 0 {
        return Err(StrategyError(format!(
            "postgres: {failed} session(s) of {user:?} could not be ended; grant pg_signal_backend to the admin role"
        )));
    }
    Ok(rows.len())
}

async fn role(c: &Client, name: &str) -> Result<Option<bool>, StrategyError> {
    let rows = c
        .query("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(|e| pg_err("reading pg_roles", &e, &[]))?;
    Ok(rows.first().map(|r| r.get::<_, bool>(0)))
}

impl RotationStrategy for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn create_value(&self, old: &SecretValue) -> Result<SecretValue, StrategyError> {
        let mut m = parse_map(old, "current value")?;
        let c = login_of(&m, "current value")?;
        let (_, other) = pair_of(&c.username)?;
        let pw = random_password(self.bytes)?;
        m.insert("username".into(), Value::String(other));
        m.insert("password".into(), Value::String(pw.expose().to_string()));
        encode_object(m)
    }

    fn check_value(&self, new: &SecretValue) -> Result<(), StrategyError> {
        login(new, "new value").map(|_| ())
    }

    fn set<'a>(
        &'a self,
        ctx: StepContext<'a>,
        new: &'a SecretValue,
        old: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let newc = login(new, "new value")?;
            let oldc = login(old, "current value")?;
            let (owner, other) = pair_of(&oldc.username)?;
            if newc.username != other {
                return Err(StrategyError(format!(
                    "the new value names user {:?}, but the other user of {:?} is {other:?}",
                    newc.username, oldc.username
                )));
            }
            let (admin, _) = self.admin(&ctx)?;
            if admin.username == other || admin.username == owner {
                return Err(StrategyError(format!(
                    "the master secret's user {:?} is one of the rotated pair: use a separate admin role",
                    admin.username
                )));
            }
            let client = self.admin_client(&ctx).await?;
            let verifier =
                postgres_protocol::password::scram_sha_256(newc.password.expose().as_bytes());
            let hide = [newc.password.expose(), verifier.as_str()];
            timed("set", async {
                let found = role(&client, &other).await?;
                if found == Some(true) {
                    return Err(StrategyError(format!(
                        "{other:?} is a superuser: keywarden does not rotate superusers"
                    )));
                }
                let exists = found.is_some();
                let verb = if exists { "ALTER" } else { "CREATE" };
                let mut sql = vec![format!(
                    "{verb} ROLE {} WITH LOGIN PASSWORD {}",
                    quote_ident(&other),
                    quote_literal(&verifier)
                )];
                if other != owner {
                    // The second user acts as the owner role: same rights, same owner.
                    sql.push(format!(
                        "GRANT {} TO {}",
                        quote_ident(&owner),
                        quote_ident(&other)
                    ));
                    sql.push(format!(
                        "ALTER ROLE {} SET role = {}",
                        quote_ident(&other),
                        quote_literal(&owner)
                    ));
                }
                let batch = format!("BEGIN; {}; COMMIT", sql.join("; "));
                if let Err(e) = client.batch_execute(&batch).await {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(pg_err(&format!("setting up {other:?}"), &e, &hide));
                }
                tracing::info!(secret = ctx.secret, user = %other, owner = %owner, created = !exists, "PostgreSQL user set with the new password (as a SCRAM verifier).");
                if ctx.compromise && exists {
                    // Sessions of this user were opened with an older password of it: in a
                    // compromise no credential older than the new one keeps a session.
                    let n = terminate_sessions(&client, &other).await?;
                    tracing::warn!(secret = ctx.secret, user = %other, sessions = n, "Compromise: sessions opened with an older password of the re-used PostgreSQL user terminated.");
                }
                Ok(())
            })
            .await
        })
    }

    fn test<'a>(
        &'a self,
        ctx: StepContext<'a>,
        new: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let c = login(new, "new value")?;
            let (owner, _) = pair_of(&c.username)?;
            // The same server as the admin's: the value's own host is never used.
            let (_, at) = self.admin(&ctx)?;
            let db = c.dbname.clone().or(at.dbname.clone()).unwrap_or_default();
            let client = connect(&at, self.server.ca_file.as_deref(), &c, &db, "new value").await?;
            let row = timed("test query", async {
                client
                    .query_one("SELECT session_user::text, current_user::text", &[])
                    .await
                    .map_err(|e| pg_err("test query", &e, &[c.password.expose()]))
            })
            .await?;
            let (session, current): (String, String) = (row.get(0), row.get(1));
            if session != c.username || current != owner {
                return Err(StrategyError(format!(
                    "postgres: logged in as {session:?} acting as {current:?}; expected {:?} acting as the owner role {owner:?}",
                    c.username
                )));
            }
            tracing::info!(secret = ctx.secret, user = %c.username, "PostgreSQL login with the new password works.");
            Ok(())
        })
    }

    fn finalize<'a>(
        &'a self,
        ctx: StepContext<'a>,
        current: &'a SecretValue,
    ) -> BoxFut<'a, Result<(), StrategyError>> {
        Box::pin(async move {
            let c = login(current, "current value")?;
            let (_, previous) = pair_of(&c.username)?;
            let client = self.admin_client(&ctx).await?;
            timed("finalize", async {
                match role(&client, &previous).await? {
                    None => {
                        tracing::info!(secret = ctx.secret, user = %previous, "The previous PostgreSQL user does not exist: nothing to disable.");
                        return Ok(());
                    }
                    Some(true) => {
                        return Err(StrategyError(format!(
                            "{previous:?} is a superuser: keywarden does not disable superusers"
                        )))
                    }
                    Some(false) => {}
                }
                client
                    .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote_ident(&previous)))
                    .await
                    .map_err(|e| pg_err(&format!("disabling {previous:?}"), &e, &[]))?;
                tracing::info!(secret = ctx.secret, user = %previous, "Previous PostgreSQL user set NOLOGIN.");
                if ctx.compromise {
                    let n = terminate_sessions(&client, &previous).await?;
                    tracing::warn!(secret = ctx.secret, user = %previous, sessions = n, "Compromise: sessions of the previous PostgreSQL user terminated.");
                }
                Ok(())
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_quoting_and_values() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("app", Some(("app", "app_b"))),
            ("app_b", Some(("app", "app"))),
            ("_b", Some(("_b", "_b_b"))),
            ("Event \"svc\"", Some(("Event \"svc\"", "Event \"svc\"_b"))),
            (&"x".repeat(62), None),
            ("nul\0", None),
        ];
        for (user, want) in cases {
            let got = pair_of(user).ok();
            assert_eq!(
                got.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                *want,
                "{user}"
            );
        }
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");

        let s = Postgres {
            bytes: 24,
            server: ServerConnection::default(),
        };
        let old = SecretValue::new(
            r#"{"username":"app","password":"p0","host":"h","port":"5432","dbname":"d","engine":"postgres"}"#.into(),
        );
        let new = s.create_value(&old).unwrap();
        let j: Value = serde_json::from_str(new.expose()).unwrap();
        assert_eq!(j["username"], "app_b");
        assert_eq!(j["engine"], "postgres");
        assert_eq!(j["port"], "5432");
        assert_ne!(j["password"], "p0");
        s.check_value(&new).unwrap();
        let back = s.create_value(&new).unwrap();
        let j: Value = serde_json::from_str(back.expose()).unwrap();
        assert_eq!(j["username"], "app");
        assert!(
            s.check_value(&SecretValue::new(r#"{"username":"a"}"#.into()))
                .is_err()
        );
        assert!(s.create_value(&SecretValue::new("plain".into())).is_err());
        // The runbook's shape stays exactly that shape.
        let runbook = SecretValue::new(r#"{"username":"event_service","password":"p0"}"#.into());
        let new = s.create_value(&runbook).unwrap();
        let j: Value = serde_json::from_str(new.expose()).unwrap();
        let mut keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["password", "username"]);
        assert_eq!(j["username"], "event_service_b");
        s.check_value(&new).unwrap();
    }
}
