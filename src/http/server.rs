//! The server loop: accepts connections within caps (overall and per client
//! address) and serves each as HTTP/1.1 with hyper, so that no client can
//! hold a connection, or the slots others need, by being slow.
//!
//! What bounds a client's time (each a config key, see [`Limits`]):
//! - its request headers: hyper's header-read timeout, counted from the
//!   connection's start for the first request and from the first byte of
//!   each later one (a slowloris client is closed);
//! - the wait between requests on a keep-alive connection (idle timeout);
//! - its request body: one deadline for the whole body, counted from the
//!   headers, however the bytes trickle (408, then closed);
//! - its reading of our responses: a write that makes no progress for the
//!   idle timeout closes the connection.
//!
//! A body declared larger than the cap is refused (413) before any of it is
//! read, and a body that grows past the cap as it streams fails to read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::Limited;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::Service;

use super::error::ErrorResponse;
use crate::abuse::throttle::Origin;
use crate::broker::Broker;
use crate::error::oauth::OAuthError;
use crate::error::RequestError;

/// How long clients may take and how many connections they may hold; the
/// config keys `header_timeout_ms`, `body_timeout_ms`, `idle_timeout_ms`,
/// `max_connections` and `max_connections_per_address`. The default is the
/// config's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers: from the connection's start for the
    /// first request, from its first byte for later ones.
    pub header_timeout: Duration,
    /// Time to send a request's whole body, from its headers.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request; also the
    /// longest a response may wait, unread, for the client.
    pub idle_timeout: Duration,
    /// Connections open at once, from everywhere (kept under the descriptor
    /// limit, see [`serve`](super::serve)).
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4_096,
            max_connections_per_address: 128,
        }
    }
}

/// Descriptors kept for everything but client connections: the store,
/// Redis, outbound HTTP, the policy watcher, logs.
const RESERVED_DESCRIPTORS: u64 = 64;

/// How long to wait before accepting again after an error that is not one
/// connection's (such as running out of descriptors), so as not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// open connections finish their requests (idle ones close at once).
pub(super) async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = super::router(broker.clone());
    let max_connections = fit_descriptors(limits.max_connections);
    let slots = Arc::new(Slots::new(max_connections, limits.max_connections_per_address.min(max_connections)));
    let limits = Arc::new(limits);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::warn!(%error, "accepting connections failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Over a cap: accepted, then closed at once (dropped), so that the
        // descriptor and the slot are free again right away.
        let proxy = broker.trusted_proxies().iter().any(|proxy| proxy.to_canonical() == peer.ip().to_canonical());
        let Some(slot) = slots.take(peer.ip(), !proxy) else {
            tracing::debug!(%peer, "connection closed: too many open");
            broker.metrics().count_connection_refused();
            continue;
        };
        let read = Arc::new(AtomicU64::new(0));
        let io = TokioIo::new(Watched { stream, read: read.clone(), stall: limits.idle_timeout, stalled: None });
        let service = {
            let (router, broker, limits) = (router.clone(), broker.clone(), limits.clone());
            service_fn(move |request| {
                let (router, broker, limits) = (router.clone(), broker.clone(), limits.clone());
                async move { Ok::<_, Infallible>(handle(router, &broker, request, peer, &limits).await) }
            })
        };
        let connection = http1::Builder::new()
            .timer(HeadTimer { read, header: limits.header_timeout, idle: limits.idle_timeout })
            .header_read_timeout(limits.header_timeout)
            .serve_connection(io, service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that went away before it was accepted.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// One request: refused if its declared body is over the cap, else passed
/// to the router with the client's address and its body under a deadline.
async fn handle(
    mut router: Router,
    broker: &Broker,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    limits: &Limits,
) -> Response {
    // What `into_make_service_with_connect_info` gave handlers.
    request.extensions_mut().insert(ConnectInfo(peer));
    let max_body_bytes = broker.settings().max_body_bytes;
    if declared_length(request.headers()).is_some_and(|length| length > max_body_bytes as u64) {
        let address = super::client_address::of(&request, broker.trusted_proxies());
        return refused(broker, RequestError::TooLarge, address.as_deref());
    }
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        // No body to wait for (most GETs): no deadline either.
        let request = Request::from_parts(parts, axum::body::Body::new(body));
        return match router.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    let complete = Arc::new(AtomicBool::new(false));
    let body = Tracked { inner: Limited::new(body, max_body_bytes), complete: complete.clone() };
    // The refusal's evidence, should the body not come in time.
    let address = super::client_address::of_parts(&parts.headers, &parts.extensions, broker.trusted_proxies());
    let call = router.call(Request::from_parts(parts, axum::body::Body::new(body)));
    let mut call = std::pin::pin!(call);
    let answered = tokio::select! {
        biased;
        answered = &mut call => Some(answered),
        () = tokio::time::sleep(limits.body_timeout) => None,
    };
    let answered = match answered {
        Some(answered) => answered,
        // The body came whole in time: the handler's own work is not cut.
        None if complete.load(Ordering::Acquire) => call.await,
        // The handler still waits for the body: it is dropped mid-read.
        // Every handler reads its whole body before it acts, so nothing
        // is left half done.
        None => return refused(broker, RequestError::BodyTooSlow, address.as_deref()),
    };
    match answered {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A request refused before the router, counted with the other refusals of
/// unauthenticated requests (by reason and client address).
fn refused(broker: &Broker, error: RequestError, address: Option<&str>) -> Response {
    refusal(OAuthError::from(&broker.refuse_unread(error, address)))
}

/// The `Content-Length` a request declares (hyper has refused conflicting or
/// malformed ones already).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// An error answered before the router, with the headers the router's
/// responses carry, and the connection closed after it: the rest of the
/// body is not read.
fn refusal(error: OAuthError) -> Response {
    let mut response = ErrorResponse::from(error).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that tells when it has been read to its end.
struct Tracked<B> {
    inner: B,
    complete: Arc<AtomicBool>,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) | Poll::Pending => false,
        };
        if ended {
            this.complete.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, counting the bytes read (for [`HeadTimer`]) and
/// closing the connection when a write makes no progress for `stall`.
struct Watched {
    stream: TcpStream,
    read: Arc<AtomicU64>,
    stall: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Watched {
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let stall = self.stall;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            this.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, data);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, data);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.watch(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.watch(cx, polled)
    }
}

/// hyper's header-read timer, made to tell an idle keep-alive connection
/// from a slow client. hyper starts its one header timer as soon as it waits
/// for a request, idle or not; this timer gives the first request of a
/// connection the header timeout from the start, and a later one the idle
/// timeout until its first byte arrives, then the header timeout from there.
#[derive(Clone)]
struct HeadTimer {
    /// Bytes read so far on the connection (from [`Watched`]).
    read: Arc<AtomicU64>,
    header: Duration,
    idle: Duration,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            sleep: Box::pin(tokio::time::sleep(duration)),
            read: self.read.clone(),
            idle_since: None,
            header: self.header,
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let read = self.read.load(Ordering::Relaxed);
        let (sleep, idle_since) = if read == 0 {
            (tokio::time::sleep_until(deadline.into()), None)
        } else {
            (tokio::time::sleep(self.idle), Some(read))
        };
        Box::pin(HeadSleep { sleep: Box::pin(sleep), read: self.read.clone(), idle_since, header: self.header })
    }
}

/// See [`HeadTimer`]. hyper polls it each time it finds the headers not yet
/// whole, which is when bytes arrive.
struct HeadSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    read: Arc<AtomicU64>,
    /// While idle: the bytes read when the wait began.
    idle_since: Option<u64>,
    header: Duration,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.idle_since.is_some_and(|since| since != this.read.load(Ordering::Relaxed)) {
            // The next request has begun: its headers have the header timeout.
            this.idle_since = None;
            this.sleep.as_mut().reset(tokio::time::Instant::now() + this.header);
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// Open connections, overall and by client address.
struct Slots {
    max: usize,
    per_address: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<Origin, usize>,
}

impl Slots {
    fn new(max: usize, per_address: usize) -> Slots {
        Slots { max, per_address, open: Mutex::new(Open::default()) }
    }

    /// A slot for a connection from `address`, if both caps allow one. A
    /// trusted proxy (`per_address: false`) speaks for many clients: only
    /// the overall cap applies to it, and the proxy bounds each client.
    fn take(self: &Arc<Self>, address: IpAddr, per_address: bool) -> Option<Slot> {
        // What throttling counts by too: an IPv6 client by its /64, so that
        // it cannot take slots by cycling through its network's addresses.
        let address = Origin::of_ip(address);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let here = open.by_address.get(&address).copied().unwrap_or(0);
        if open.total >= self.max || (per_address && here >= self.per_address) {
            return None;
        }
        open.total += 1;
        open.by_address.insert(address, here + 1);
        Some(Slot { slots: self.clone(), address })
    }
}

/// One open connection's place in [`Slots`], given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    address: Origin,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        match open.by_address.get_mut(&self.address) {
            Some(count) if *count > 1 => *count -= 1,
            _ => {
                open.by_address.remove(&self.address);
            }
        }
    }
}

/// The most connections that fit in the descriptor limit, raising the soft
/// limit towards the hard one if it is too low for `wanted`.
fn fit_descriptors(wanted: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let needed = (wanted as u64).saturating_add(RESERVED_DESCRIPTORS);
    let limit = getrlimit(Resource::Nofile);
    let Some(soft) = limit.current else { return wanted };
    let soft = if soft >= needed {
        soft
    } else {
        let raised = limit.maximum.map_or(needed, |hard| hard.min(needed));
        match setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: limit.maximum }) {
            Ok(()) if raised > soft => raised,
            _ => soft,
        }
    };
    let fits = usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX).max(1);
    if fits < wanted {
        tracing::warn!(
            max_connections = wanted,
            descriptors = soft,
            "descriptor limit too low: serving at most {fits} connections"
        );
    }
    fits.min(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_each_address_and_the_total_and_come_back_when_dropped() {
        let slots = Arc::new(Slots::new(3, 2));
        let (one, two, three): (IpAddr, IpAddr, IpAddr) =
            ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap(), "127.0.0.4".parse().unwrap());
        let first = slots.take(one, true).unwrap();
        let _second = slots.take(one, true).unwrap();
        assert!(slots.take(one, true).is_none(), "per-address cap");
        // The same client over a dual-stack socket counts as the same address.
        assert!(slots.take("::ffff:127.0.0.2".parse().unwrap(), true).is_none());
        let _third = slots.take(two, true).unwrap();
        assert!(slots.take(three, true).is_none(), "overall cap");
        drop(first);
        assert!(slots.take(three, true).is_some(), "a slot comes back when its connection ends");
        let open = slots.open.lock().unwrap();
        assert_eq!((open.total, open.by_address.len()), (2, 2));
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address_and_a_trusted_proxy_only_against_the_total() {
        let slots = Arc::new(Slots::new(3, 2));
        let in_one_64: Vec<IpAddr> = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        let _held: Vec<Slot> = in_one_64.iter().take(2).map(|ip| slots.take(*ip, true).unwrap()).collect();
        assert!(slots.take(in_one_64[2], true).is_none(), "another address of the same /64");
        assert!(slots.take("2001:db8:1:3::1".parse().unwrap(), true).is_some(), "another /64");
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let _proxied = slots.take(proxy, false).unwrap();
        assert!(slots.take(proxy, true).is_none(), "full: the total is reached");
        drop(_held);
        let _more: Vec<Slot> = (0..2).map(|_| slots.take(proxy, false).unwrap()).collect();
        assert!(
            slots.take(proxy, false).is_none(),
            "three from the proxy, beyond the per-address cap of two; the overall cap still holds"
        );
    }

    #[test]
    fn the_descriptor_limit_leaves_room_for_the_caps() {
        let fits = fit_descriptors(100);
        assert!((1..=100).contains(&fits));
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        if let Some(soft) = soft {
            assert!(fits as u64 + RESERVED_DESCRIPTORS <= soft.max(RESERVED_DESCRIPTORS + 1));
        }
    }

    #[test]
    fn the_declared_length_is_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(declared_length(&headers), None);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("67108864"));
        assert_eq!(declared_length(&headers), Some(67_108_864));
    }
}
