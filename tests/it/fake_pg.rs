//! A fake PostgreSQL server for the admin-login tests (issue #15, point 1): a loopback TCP
//! listener that speaks just enough of the protocol to ask a client for its password the way a
//! hostile server would, and records everything the client sends afterwards.
//!
//! Per connection: an `SSLRequest` is answered `N` (no TLS here); the startup message is read;
//! the configured authentication request is sent (`R` with code 3, cleartext, or code 5, MD5
//! with a salt); then every message the client sends is recorded until it closes the connection
//! or two seconds pass.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The SSLRequest code of the protocol.
const SSL_REQUEST: u32 = 80_877_103;

/// What the fake server asks for.
#[derive(Debug, Clone, Copy)]
pub enum Ask {
    /// AuthenticationCleartextPassword (`R`, code 3).
    Cleartext,
    /// AuthenticationMD5Password (`R`, code 5, four bytes of salt).
    Md5,
}

/// One client connection as the fake server saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The client sent an SSLRequest first.
    pub ssl_requested: bool,
    /// The `user` parameter of the startup message.
    pub user: Option<String>,
    /// Every message after the authentication request: (type byte, body).
    pub messages: Vec<(u8, Vec<u8>)>,
    /// Every byte received after the authentication request.
    pub raw_after_ask: Vec<u8>,
}

impl Seen {
    /// Whether a PasswordMessage (`p`) arrived.
    pub fn password_sent(&self) -> bool {
        self.messages.iter().any(|(t, _)| *t == b'p')
    }
}

/// The fake server; its task stops when it is dropped.
pub struct FakePg {
    /// The loopback port it listens on.
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakePg {
    /// Listens on a free loopback port.
    pub async fn start(ask: Ask) -> FakePg {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let s = serve(sock, ask).await;
                    record.lock().unwrap().push(s);
                });
            }
        });
        FakePg { port, seen, task }
    }

    /// The connections seen so far (each once it ended).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The connections, once `n` of them ended (or after five seconds, whatever there is).
    pub async fn wait_seen(&self, n: usize) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.seen();
            if seen.len() >= n || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakePg {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_u32(sock: &mut TcpStream) -> Option<u32> {
    let mut b = [0u8; 4];
    sock.read_exact(&mut b).await.ok()?;
    Some(u32::from_be_bytes(b))
}

async fn serve(mut sock: TcpStream, ask: Ask) -> Seen {
    let mut seen = Seen::default();
    // Startup (or SSLRequest, then startup).
    let body = loop {
        let Some(len) = read_u32(&mut sock).await else {
            return seen;
        };
        let Some(code) = read_u32(&mut sock).await else {
            return seen;
        };
        let rest = (len as usize).saturating_sub(8);
        let mut body = vec![0u8; rest];
        if sock.read_exact(&mut body).await.is_err() {
            return seen;
        }
        if code == SSL_REQUEST {
            seen.ssl_requested = true;
            if sock.write_all(b"N").await.is_err() {
                return seen;
            }
            continue;
        }
        break body;
    };
    let params: Vec<&[u8]> = body.split(|b| *b == 0).collect();
    seen.user = params
        .windows(2)
        .find(|w| w[0] == b"user")
        .map(|w| String::from_utf8_lossy(w[1]).into_owned());
    let mut msg = vec![b'R'];
    match ask {
        Ask::Cleartext => {
            msg.extend_from_slice(&8u32.to_be_bytes());
            msg.extend_from_slice(&3u32.to_be_bytes());
        }
        Ask::Md5 => {
            msg.extend_from_slice(&12u32.to_be_bytes());
            msg.extend_from_slice(&5u32.to_be_bytes());
            msg.extend_from_slice(b"salt");
        }
    }
    if sock.write_all(&msg).await.is_err() {
        return seen;
    }
    // Record everything the client sends now, until it closes or two seconds pass.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.raw_after_ask.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let mut rest = seen.raw_after_ask.as_slice();
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let end = (1 + len).min(rest.len());
        seen.messages
            .push((rest[0], rest.get(5..end).unwrap_or_default().to_vec()));
        rest = &rest[end..];
    }
    seen
}
