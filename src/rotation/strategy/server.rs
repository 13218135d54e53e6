//! The server a `postgres` or `redis` strategy talks to (issue #15, point 1; issue #13, point 2):
//! where it is and how keywarden verifies it.
//!
//! **Where.** Host, port and (postgres) dbname come from `rotation = { host, port, dbname }`,
//! else from the master secret; the port defaults to the protocol's. The rotated (application)
//! secret never decides where the admin's password goes: whoever can write that secret could
//! otherwise point the admin login at a server of their own. A missing host or dbname is an
//! error naming both places it may come from.
//!
//! **How.** `rotation.tls = "verify-full"` (the default): TLS 1.2 or 1.3 with rustls, the chain
//! verified against `rotation.ca_file` (PEM) or the system trust store, and the certificate's
//! name checked against the host. `"disable"` is plaintext, and only when written.
//! An `sslmode` field in a secret is ignored: the configuration decides.

use std::path::Path;
use std::sync::{Arc, Once};

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Map, Value};

use crate::config::{ServerConnection, ServerTls};

use super::StrategyError;
use super::value::json_port;

/// Where the admin (and the test login) connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// DNS name or IP; the name the certificate must carry.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The admin's database (postgres; `None` for redis).
    pub dbname: Option<String>,
    /// TLS or plaintext.
    pub tls: ServerTls,
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The endpoint of `strategy` from the configuration, else the master secret `master`. Pure.
/// `dbname` is resolved (and required) only when `wants_dbname` (postgres).
pub fn resolve(
    conn: &ServerConnection,
    master: &Map<String, Value>,
    strategy: &str,
    default_port: u16,
    wants_dbname: bool,
) -> Result<Endpoint, StrategyError> {
    let missing = |field: &str, what: &str| {
        StrategyError(format!(
            "the {strategy} strategy has no {what}: set rotation.{field} in the configuration or \"{field}\" in the master secret (the rotated secret's {field} is never used for the admin login)"
        ))
    };
    let host = conn
        .host
        .clone()
        .or_else(|| text(master, "host").map(str::to_string))
        .ok_or_else(|| missing("host", "server host"))?;
    let port = match (conn.port, master.get("port")) {
        (Some(p), _) => p,
        (None, None) => default_port,
        (None, Some(_)) => json_port(master).ok_or_else(|| {
            StrategyError(format!(
                "the {strategy} strategy: the master secret's \"port\" is not a TCP port"
            ))
        })?,
    };
    let dbname = if wants_dbname {
        Some(
            conn.dbname
                .clone()
                .or_else(|| text(master, "dbname").map(str::to_string))
                .ok_or_else(|| missing("dbname", "database name"))?,
        )
    } else {
        None
    };
    Ok(Endpoint {
        host,
        port,
        dbname,
        tls: conn.tls,
    })
}

/// Makes aws-lc-rs the process's rustls provider (the redis client builds its TLS settings
/// with the process default). Installing twice is harmless.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The PEM text of `ca_file`, checked to hold at least one certificate.
pub fn read_ca_pem(ca_file: &Path) -> Result<Vec<u8>, StrategyError> {
    let pem = std::fs::read(ca_file).map_err(|e| {
        StrategyError(format!(
            "cannot read rotation.ca_file {}: {e}",
            ca_file.display()
        ))
    })?;
    let n = CertificateDer::pem_slice_iter(&pem)
        .filter(Result::is_ok)
        .count();
    if n == 0 {
        return Err(StrategyError(format!(
            "rotation.ca_file {} holds no PEM certificate",
            ca_file.display()
        )));
    }
    Ok(pem)
}

/// The CA certificates: `ca_file`, or the system trust store.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, StrategyError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = read_ca_pem(path)?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    StrategyError(format!(
                        "rotation.ca_file {}: a certificate cannot be read: {e}",
                        path.display()
                    ))
                })?;
                store.add(cert).map_err(|e| {
                    StrategyError(format!(
                        "rotation.ca_file {}: a certificate is not a usable CA: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(StrategyError(format!(
                    "no CA certificate in the system trust store{}: set rotation.ca_file",
                    found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                )));
            }
        }
    }
    Ok(store)
}

/// A rustls client configuration verifying the server against `ca_file` or the system store.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, StrategyError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StrategyError(format!("TLS settings: {e}")))?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn the_endpoint_comes_from_the_config_or_the_master_secret_only() {
        let conf = ServerConnection {
            host: Some("db.internal".into()),
            port: Some(6432),
            dbname: Some("app".into()),
            ..ServerConnection::default()
        };
        let master =
            m(serde_json::json!({"host": "m.internal", "port": "5433", "dbname": "postgres"}));
        // The configuration wins, then the master secret, then the default port.
        let e = resolve(&conf, &master, "postgres", 5432, true).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.dbname.as_deref(), e.tls),
            ("db.internal", 6432, Some("app"), ServerTls::VerifyFull)
        );
        let e = resolve(
            &ServerConnection::default(),
            &master,
            "postgres",
            5432,
            true,
        )
        .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.dbname.as_deref()),
            ("m.internal", 5433, Some("postgres"))
        );
        let e = resolve(
            &ServerConnection::default(),
            &m(serde_json::json!({"host": "r"})),
            "redis",
            6379,
            false,
        )
        .unwrap();
        assert_eq!((e.port, e.dbname), (6379, None));
        // Missing pieces name the field and both places it may come from.
        let none = ServerConnection::default();
        let err = resolve(
            &none,
            &m(serde_json::json!({"dbname": "d"})),
            "postgres",
            5432,
            true,
        )
        .unwrap_err();
        assert!(
            err.0.contains("rotation.host") && err.0.contains("\"host\" in the master secret"),
            "{err}"
        );
        let err = resolve(
            &none,
            &m(serde_json::json!({"host": "h"})),
            "postgres",
            5432,
            true,
        )
        .unwrap_err();
        assert!(
            err.0.contains("rotation.dbname") && err.0.contains("\"dbname\" in the master secret"),
            "{err}"
        );
        let err = resolve(
            &none,
            &m(serde_json::json!({"host": "h", "port": "x"})),
            "redis",
            6379,
            false,
        )
        .unwrap_err();
        assert!(err.0.contains("port"), "{err}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("kw-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let err = client_config(Some(&f)).unwrap_err();
        assert!(err.0.contains("no PEM certificate"), "{err}");
        let err = client_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(err.0.contains("cannot read rotation.ca_file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
