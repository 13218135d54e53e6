//! The PostgreSQL authentication guard (issue #15, point 1): keywarden never answers a server
//! that asks for the password in cleartext (AuthenticationCleartextPassword, `R` code 3) or as an
//! MD5 hash (`R` code 5).
//!
//! tokio-postgres answers both whenever channel binding is not required, and with
//! `tls = "disable"` it cannot be. So the guard sits between tokio-postgres and the bytes it
//! reads (over the TLS stream with `verify-full`, over the socket with `disable`): it follows the
//! server's messages until AuthenticationOk and turns a code 3 or 5 into an I/O error *before*
//! tokio-postgres sees the message, so no PasswordMessage is ever written; after a refusal every
//! write fails too. Why MD5 as well: with TLS keywarden requires channel binding, which only
//! SCRAM-SHA-256-PLUS provides, so an MD5 request there can only come from a server (or a
//! man in the middle) that wants a replayable, offline-crackable hash; without TLS the same holds.
//! Passwords therefore go only through SCRAM-SHA-256, which never reveals them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::TryFutureExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

/// A refused authentication request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `R` code 3.
    #[error(
        "the server asked for the password in cleartext (AuthenticationCleartextPassword): refused, no password was sent; keywarden only authenticates with SCRAM-SHA-256 (set scram-sha-256 in pg_hba.conf)"
    )]
    Cleartext,
    /// `R` code 5.
    #[error(
        "the server asked for an MD5 password hash (AuthenticationMD5Password): refused, no password was sent; keywarden only authenticates with SCRAM-SHA-256 (set scram-sha-256 in pg_hba.conf)"
    )]
    Md5,
}

/// Follows the backend messages up to AuthenticationOk. Pure.
#[derive(Debug, Default)]
pub struct AuthWatch {
    /// AuthenticationOk seen (or a malformed stream, left to tokio-postgres): pass through.
    done: bool,
    /// Header bytes of the current message: type, length, and for `R` the code.
    head: [u8; 9],
    have: usize,
    /// Body bytes of the current message still to skip.
    skip: usize,
}

impl AuthWatch {
    /// Feeds bytes read from the server, in order.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !self.done && !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            // Header bytes one at a time: the type decides how many are needed.
            self.head[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            let want = if self.head[0] == b'R' { 9 } else { 5 };
            if self.have < want {
                continue;
            }
            let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]])
                as usize;
            if len < want - 1 {
                // Malformed: tokio-postgres reports it.
                self.done = true;
                break;
            }
            if want == 9 {
                match u32::from_be_bytes([self.head[5], self.head[6], self.head[7], self.head[8]]) {
                    0 => self.done = true,
                    3 => return Err(Refusal::Cleartext),
                    5 => return Err(Refusal::Md5),
                    _ => {}
                }
            }
            self.skip = len - (want - 1);
            self.have = 0;
        }
        Ok(())
    }
}

/// A stream whose server side is watched by an [`AuthWatch`].
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    watch: AuthWatch,
    refused: Option<Refusal>,
}

impl<S> Guarded<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Guarded {
            inner,
            watch: AuthWatch::default(),
            refused: None,
        }
    }
}

fn refused(r: Refusal) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, r)
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(r) = self.refused {
            return Poll::Ready(Err(refused(r)));
        }
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Err(r) = this.watch.feed(&buf.filled()[before..]) {
                    // The caller drops what this read filled: the request never reaches it.
                    this.refused = Some(r);
                    return Poll::Ready(Err(refused(r)));
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(r) = self.refused {
            return Poll::Ready(Err(refused(r)));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for Guarded<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose streams are [`Guarded`]: the guard reads the decrypted messages.
pub struct GuardedTls<T>(pub T);

impl<S, T> TlsConnect<S> for GuardedTls<T>
where
    T: TlsConnect<S>,
    T::Stream: Unpin,
{
    type Stream = Guarded<T::Stream>;
    type Error = T::Error;
    type Future = futures_util::future::MapOk<T::Future, fn(T::Stream) -> Guarded<T::Stream>>;

    fn connect(self, stream: S) -> Self::Future {
        self.0.connect(stream).map_ok(Guarded::new as fn(_) -> _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![t];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn cleartext_and_md5_requests_are_refused_however_the_bytes_arrive() {
        let notice = msg(b'N', b"SNOTICE\0\0");
        let sasl = msg(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0");
        let cases: &[(Vec<u8>, Option<Refusal>)] = &[
            (
                [notice.clone(), msg(b'R', &3u32.to_be_bytes())].concat(),
                Some(Refusal::Cleartext),
            ),
            (msg(b'R', b"\0\0\0\x05salt"), Some(Refusal::Md5)),
            ([sasl.clone(), msg(b'R', b"\0\0\0\x0bdata")].concat(), None),
            // After AuthenticationOk, anything passes (a later `R`-looking byte is data).
            (
                [
                    msg(b'R', &0u32.to_be_bytes()),
                    msg(b'R', &3u32.to_be_bytes()),
                ]
                .concat(),
                None,
            ),
            (msg(b'E', b"SFATAL\0\0"), None),
        ];
        for (bytes, want) in cases {
            // Whole, and one byte at a time.
            let mut w = AuthWatch::default();
            assert_eq!(w.feed(bytes).err(), *want, "{bytes:?}");
            let mut w = AuthWatch::default();
            let got = bytes
                .iter()
                .try_for_each(|b| w.feed(std::slice::from_ref(b)));
            assert_eq!(got.err(), *want, "{bytes:?} byte by byte");
        }
        assert!(Refusal::Cleartext.to_string().contains("cleartext"));
        assert!(Refusal::Md5.to_string().contains("MD5"));
    }
}
