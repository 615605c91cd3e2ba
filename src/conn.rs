//! Connections: the accept loop in front of the router, and what one client connection
//! may hold. axum's own `serve` offers none of these limits, so livebase drives hyper
//! itself:
//! - a request head must arrive within `--header-read-timeout-ms` (slowloris);
//! - one client address may hold at most `--max-connections-per-address` connections;
//! - a connection whose writes make no progress for `--write-stall-timeout-ms` (a client
//!   that stopped reading, with the kernel's buffers full) is cut, reads and writes
//!   alike, so whatever waits on it — an upgraded WebSocket's writer included — ends.
//!
//! It knows nothing of routes or sockets; `WriteTap` only counts bytes written for
//! whoever attached a counter (the realtime layer, per socket). `serve_one` serves a
//! single in-process connection the same way (the StaticBackend bridge's sockets).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// The connection limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// Zero turns the write-stall guard off.
    pub write_stall_timeout: Duration,
    /// Zero means no per-address cap.
    pub max_per_address: usize,
}

/// The bytes a connection has written so far. A Socket.IO session reads the tap of the
/// connection its transport runs on (it is in each request's extensions), so its queue
/// can be measured as "queued minus written". One relaxed add per write.
#[derive(Default)]
pub struct WriteTap {
    written: AtomicU64,
}

impl WriteTap {
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its address; given back when the stream is dropped
/// (after an upgrade too, since it travels with the stream).
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(ip).or_insert(0);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock()
            && let Some(count) = open.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A client stream with the write-stall guard, the write tap and its address slot.
pub struct Guarded<S> {
    inner: S,
    stall_limit: Duration,
    /// Running while the last write could not make progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Cut for stalling: every later read and write fails.
    cut: bool,
    /// The task waiting to read, woken when the stream is cut so it sees the error
    /// (a WebSocket's reader and writer run in different tasks).
    reader: Option<Waker>,
    tap: Arc<WriteTap>,
    _slot: Option<AddressSlot>,
}

impl<S> Guarded<S> {
    fn new(inner: S, stall_limit: Duration, tap: Arc<WriteTap>, slot: Option<AddressSlot>) -> Self {
        Guarded {
            inner,
            stall_limit,
            stalled: None,
            cut: false,
            reader: None,
            tap,
            _slot: slot,
        }
    }

    fn cut_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for too long",
        )
    }

    /// After a write attempt: progress resets the guard; no progress starts it, or cuts
    /// the stream once it has run out.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) => {
                self.stalled = None;
                self.tap.add(n);
                Poll::Ready(Ok(n))
            }
            Poll::Pending if !self.stall_limit.is_zero() => {
                let limit = self.stall_limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    metrics::counter!("livebase_connections_cut_total", "reason" => "write_stall")
                        .increment(1);
                    self.cut = true;
                    if let Some(reader) = self.reader.take() {
                        reader.wake();
                    }
                    return Poll::Ready(Err(Self::cut_error()));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut {
            return Poll::Ready(Err(Self::cut_error()));
        }
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if result.is_pending()
            && !this
                .reader
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
        {
            this.reader = Some(cx.waker().clone());
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cut {
            return Poll::Ready(Err(Self::cut_error()));
        }
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cut {
            return Poll::Ready(Err(Self::cut_error()));
        }
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut {
            return Poll::Ready(Err(Self::cut_error()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How long a refused connection is given to read its refusal.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` resolves, then
/// lets in-flight requests finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let per_address = Arc::new(PerAddress::default());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let handshakes = Arc::new(Semaphore::new(crate::tls::HANDSHAKES_IN_FLIGHT));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: as axum's own loop, wait a little.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers and frames are written whole: never hold a small one back until the
        // peer acknowledges the last (Nagle's algorithm against its delayed ACK, up to
        // ~40 ms), as Node's `ws`, and so the socket.io peer, also set.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%addr, "setting TCP_NODELAY: {e}");
        }
        let Some(slot) = per_address.take(addr.ip(), limits.max_per_address) else {
            metrics::counter!("livebase_connections_cut_total", "reason" => "per_address")
                .increment(1);
            if acceptor.is_none() {
                tokio::spawn(refuse(tcp, limits.max_per_address));
            }
            continue;
        };
        let tap = Arc::new(WriteTap::default());
        let io = Guarded::new(tcp, limits.write_stall_timeout, tap.clone(), Some(slot));
        let service = PerConnection {
            router: router.clone(),
            addr,
            tap,
        };
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        match &acceptor {
            None => {
                tokio::spawn(async move {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::trace!(%addr, "connection ended: {e}");
                    }
                });
            }
            Some(acceptor) => {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Some(stream) = crate::tls::handshake(&acceptor, io, addr).await else {
                        return;
                    };
                    drop(permit);
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::trace!(%addr, "connection ended: {e}");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open {grace:?} after shutdown began; closing them");
    }
}

/// Serves one connection that did not come through the listener (an in-process client
/// on a `tokio::io::duplex` pair) as a listener connection is served: the same router,
/// write-stall guard and write tap, with `addr` as its peer. HTTP/1.1 with upgrades,
/// which is all a WebSocket client needs.
pub async fn serve_one<S>(io: S, router: Router, addr: SocketAddr, write_stall_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tap = Arc::new(WriteTap::default());
    let io = Guarded::new(io, write_stall_timeout, tap.clone(), None);
    let service = PerConnection { router, addr, tap };
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::trace!(%addr, "in-process connection ended: {e}");
    }
}

/// The router for one connection: every request carries the peer address (for
/// `ConnectInfo` and the per-address rate limits) and the connection's write tap.
#[derive(Clone)]
struct PerConnection {
    router: Router,
    addr: SocketAddr,
    tap: Arc<WriteTap>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for PerConnection {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<Router, axum::extract::Request>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(self.addr));
        request.extensions_mut().insert(self.tap.clone());
        self.router.clone().oneshot(request)
    }
}

/// Tells a client over its address's connection cap why, in livebase's error shape,
/// and closes.
async fn refuse(mut tcp: TcpStream, max: usize) {
    let body = serde_json::json!({
        "Message": format!("too many connections from this address (at most {max}); close some and retry")
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

/// The path every Socket.IO (engine.io) request takes.
const SOCKET_IO_PATH: &str = "/socket.io/";

/// Gives a Socket.IO request a URI and header values of its own. hyper parses a
/// request in place: its URI and header values are slices of the connection's read
/// buffer (16 KiB per connection). socketioxide keeps each socket's request parts for
/// the socket's life, so without copies every idle socket would keep its connection's
/// whole read buffer (measured with valgrind's massif: 16,384 bytes per socket).
pub async fn own_socket_request(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.uri().path().starts_with(SOCKET_IO_PATH) {
        detach_parts(&mut request);
    }
    next.run(request).await
}

fn detach_parts<B>(request: &mut hyper::Request<B>) {
    if let Ok(uri) = request.uri().to_string().parse::<hyper::Uri>() {
        // axum's router keeps the URI as it came (sharing the buffer) for `OriginalUri`.
        if request
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .is_some()
        {
            let original = axum::extract::OriginalUri(uri.clone());
            request.extensions_mut().insert(original);
        }
        *request.uri_mut() = uri;
    }
    for value in request.headers_mut().values_mut() {
        if let Ok(mut copy) = hyper::header::HeaderValue::from_bytes(value.as_bytes()) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::detach_parts;
    use axum::body::Bytes;

    #[test]
    fn a_socket_request_no_longer_shares_the_buffer_it_was_parsed_from() {
        // As hyper parses a request: its URI and header values are slices of the
        // connection's read buffer.
        let uri = b"/socket.io/?EIO=4&transport=websocket";
        let mut raw = uri.to_vec();
        raw.extend_from_slice(b"Bearer abc");
        raw.resize(16 * 1024, 0);
        let buffer = Bytes::from(raw);
        let in_buffer = |p: *const u8| buffer.as_ptr_range().contains(&p);
        let mut request = hyper::Request::builder()
            .uri(hyper::Uri::from_maybe_shared(buffer.slice(0..uri.len())).unwrap())
            .body(())
            .unwrap();
        let mut value =
            hyper::header::HeaderValue::from_maybe_shared(buffer.slice(uri.len()..uri.len() + 10))
                .unwrap();
        value.set_sensitive(true);
        request.headers_mut().insert("authorization", value);
        let original = axum::extract::OriginalUri(request.uri().clone());
        request.extensions_mut().insert(original);
        assert!(in_buffer(
            request.headers()["authorization"].as_bytes().as_ptr()
        ));
        assert!(in_buffer(request.uri().query().unwrap().as_ptr()));

        detach_parts(&mut request);
        let value = &request.headers()["authorization"];
        assert!(
            !in_buffer(value.as_bytes().as_ptr()),
            "the value is copied out"
        );
        assert!(
            !in_buffer(request.uri().query().unwrap().as_ptr()),
            "the URI too"
        );
        assert_eq!(value.as_bytes(), b"Bearer abc");
        assert!(value.is_sensitive(), "still hidden from logs");
        let original = request.extensions().get::<axum::extract::OriginalUri>();
        assert!(
            !in_buffer(original.unwrap().0.query().unwrap().as_ptr()),
            "and axum's copy"
        );
        assert_eq!(request.uri(), "/socket.io/?EIO=4&transport=websocket");
    }
}
