//! Connection admission and the write timeout: who gets a slot, and how a connection that stops
//! reading its answers is cut. It must never import the handlers, the guard or the state.
//!
//! Every connection is accepted at once (nothing waits in the kernel backlog) and then admitted
//! by [`admit`]: a *normal* slot while fewer than `server.max_connections` normal connections
//! are open and the peer IP holds fewer than `server.max_connections_per_ip`; else a *reserve*
//! slot (`server.reserved_connections`), where only requests carrying the valid admin token are
//! served (one request, then the connection closes); else the connection is closed. When the
//! reserve is full, the oldest reserve connection whose request has not yet shown the token is
//! dropped for the newcomer, so clients that connect and stall cannot keep a responder out: they
//! would have to open connections faster than the responder sends one request's headers.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// The admission limits (from `[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Normal connections at once.
    pub(crate) general: usize,
    /// Normal connections of one peer IP at once.
    pub(crate) per_ip: usize,
    /// Reserve connections at once (authenticated requests only).
    pub(crate) reserve: usize,
}

/// How a new connection is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Served like any connection.
    Normal,
    /// Served only for a request with the valid admin token.
    Reserve,
    /// Reserve full of connections that showed the token: close at once.
    Refuse,
    /// Reserve full: drop its oldest not yet authenticated connection, admit this one there.
    EvictThenReserve,
}

/// The admission rule, pure: `general_used` normal connections open, `ip_used` of them from this
/// peer, `reserve_used` reserve connections open of which `reserve_evictable` have not shown
/// the token yet.
pub(crate) fn admit(
    limits: Limits,
    general_used: usize,
    ip_used: usize,
    reserve_used: usize,
    reserve_evictable: usize,
) -> Admission {
    if general_used < limits.general && ip_used < limits.per_ip {
        Admission::Normal
    } else if reserve_used < limits.reserve {
        Admission::Reserve
    } else if reserve_evictable > 0 {
        Admission::EvictThenReserve
    } else {
        Admission::Refuse
    }
}

/// A reserve connection as the pool sees it.
struct Pending {
    /// Its id.
    id: u64,
    /// Cancelled to drop the connection.
    evict: CancellationToken,
    /// Set once a request on it showed the admin token: it is no longer evictable.
    authorized: Arc<AtomicBool>,
}

#[derive(Default)]
struct Counts {
    general: usize,
    per_ip: HashMap<IpAddr, usize>,
    reserve: VecDeque<Pending>,
    next_id: u64,
}

/// The open connections, by kind and peer.
pub(crate) struct Slots {
    limits: Limits,
    counts: Mutex<Counts>,
}

/// What a reserve connection carries.
pub(crate) struct ReserveTicket {
    /// Cancelled when the pool evicts this connection.
    pub(crate) evict: CancellationToken,
    /// Set by the service when a request showed the admin token.
    pub(crate) authorized: Arc<AtomicBool>,
}

/// A held slot; dropping it frees the slot.
pub(crate) struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
    /// `None` for a normal slot, the reserve id otherwise.
    reserve: Option<u64>,
}

impl Slot {
    /// Whether this is a reserve slot (authenticated requests only).
    pub(crate) fn is_reserve(&self) -> bool {
        self.reserve.is_some()
    }
}

impl Slots {
    /// An empty pool.
    pub(crate) fn new(limits: Limits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`: `None` means close it now.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<(Slot, Option<ReserveTicket>)> {
        let mut c = self.lock();
        // A reserve connection that showed the token stays until it ends; drop it from the
        // evictable count by looking at its flag.
        let evictable = c
            .reserve
            .iter()
            .filter(|p| !p.authorized.load(Ordering::Acquire))
            .count();
        let ip_used = c.per_ip.get(&ip).copied().unwrap_or(0);
        match admit(self.limits, c.general, ip_used, c.reserve.len(), evictable) {
            Admission::Normal => {
                c.general += 1;
                *c.per_ip.entry(ip).or_insert(0) += 1;
                Some((
                    Slot {
                        slots: self.clone(),
                        ip,
                        reserve: None,
                    },
                    None,
                ))
            }
            Admission::Refuse => None,
            kind @ (Admission::Reserve | Admission::EvictThenReserve) => {
                if kind == Admission::EvictThenReserve
                    && let Some(at) = c
                        .reserve
                        .iter()
                        .position(|p| !p.authorized.load(Ordering::Acquire))
                    && let Some(old) = c.reserve.remove(at)
                {
                    old.evict.cancel();
                }
                let id = c.next_id;
                c.next_id = c.next_id.wrapping_add(1);
                let ticket = ReserveTicket {
                    evict: CancellationToken::new(),
                    authorized: Arc::new(AtomicBool::new(false)),
                };
                c.reserve.push_back(Pending {
                    id,
                    evict: ticket.evict.clone(),
                    authorized: ticket.authorized.clone(),
                });
                Some((
                    Slot {
                        slots: self.clone(),
                        ip,
                        reserve: Some(id),
                    },
                    Some(ticket),
                ))
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.lock();
        match self.reserve {
            // An evicted connection was already taken out of the queue.
            Some(id) => c.reserve.retain(|p| p.id != id),
            None => {
                c.general = c.general.saturating_sub(1);
                if let Some(n) = c.per_ip.get_mut(&self.ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        c.per_ip.remove(&self.ip);
                    }
                }
            }
        }
    }
}

/// An I/O stream whose writes fail with `TimedOut` when they make no progress for `timeout`:
/// a client that pipelines requests and never reads the answers fills the socket buffers, and
/// its connection is then cut instead of holding a slot forever.
pub(crate) struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl<T> WriteDeadline<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T, timeout: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// After a write-side poll: disarms on progress; on `Pending`, arms the deadline (once) and
    /// turns its expiry into `TimedOut`.
    fn check<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        if !self.armed {
            self.armed = true;
            let at = Instant::now() + self.timeout;
            self.sleep.as_mut().reset(at);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing of the answer for {} s",
                    self.timeout.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        general: 4,
        per_ip: 2,
        reserve: 2,
    };

    #[test]
    fn admission_rule() {
        assert_eq!(admit(L, 0, 0, 0, 0), Admission::Normal);
        assert_eq!(admit(L, 3, 1, 0, 0), Admission::Normal);
        // The peer's cap, then the general cap, send the newcomer to the reserve.
        assert_eq!(admit(L, 2, 2, 0, 0), Admission::Reserve);
        assert_eq!(admit(L, 4, 0, 1, 1), Admission::Reserve);
        // A full reserve drops a connection that did not show the token, never one that did.
        assert_eq!(admit(L, 4, 0, 2, 1), Admission::EvictThenReserve);
        assert_eq!(admit(L, 4, 0, 2, 0), Admission::Refuse);
    }

    #[test]
    fn slots_count_per_ip_and_free_on_drop() {
        let slots = Slots::new(L);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = slots.admit(a).unwrap();
        let a2 = slots.admit(a).unwrap();
        assert!(!a1.0.is_reserve() && !a2.0.is_reserve());
        // A's third goes to the reserve; B still gets normal slots.
        let a3 = slots.admit(a).unwrap();
        assert!(a3.0.is_reserve());
        let b1 = slots.admit(b).unwrap();
        assert!(!b1.0.is_reserve());
        drop(a1);
        let a4 = slots.admit(a).unwrap();
        assert!(!a4.0.is_reserve(), "the freed slot is A's again");
        // Reserve: a3 authorized, then a5 fills it, a6 evicts a5 (not a3).
        let t3 = a3.1.as_ref().unwrap();
        t3.authorized.store(true, Ordering::Release);
        let a5 = slots.admit(a).unwrap();
        let t5 = a5.1.as_ref().unwrap().evict.clone();
        let a6 = slots.admit(a).unwrap();
        assert!(a6.0.is_reserve());
        assert!(
            t5.is_cancelled(),
            "the unauthenticated reserve connection was evicted"
        );
        assert!(!t3.evict.is_cancelled());
        drop(a5);
        // Reserve full of a3 (authorized) and a6 (not): a7 evicts a6.
        let a7 = slots.admit(a).unwrap();
        assert!(a6.1.as_ref().unwrap().evict.is_cancelled());
        a7.1.as_ref()
            .unwrap()
            .authorized
            .store(true, Ordering::Release);
        drop(a6);
        // Both reserve connections authorized: the next is refused.
        assert!(slots.admit(a).is_none());
        drop((a3, a7));
        assert!(slots.admit(a).is_some());
    }

    #[tokio::test]
    async fn a_write_that_never_progresses_times_out() {
        // A duplex pipe of 64 bytes whose far end is never read.
        let (near, _far) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(near, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let r = tokio::io::AsyncWriteExt::write_all(&mut w, &[0u8; 4096]).await;
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn a_reader_keeps_the_writer_alive() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(near, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut total = 0;
            while total < 4096 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                total += tokio::io::AsyncReadExt::read(&mut far, &mut buf)
                    .await
                    .unwrap();
            }
            total
        });
        // Slow but steady progress: 4096 bytes at 16 bytes per 5 ms is over a second in total.
        tokio::io::AsyncWriteExt::write_all(&mut w, &[0u8; 4096])
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap(), 4096);
    }
}
