//! The HTTP server of `bulklink serve`: HTTP/1.1 on hyper with the limits a server facing
//! hostile clients needs. A connection that sends half a header section is closed after the
//! header-read timeout, an idle one after the idle timeout; a request gets a deadline; the
//! number of connections is capped, and past the cap a connection is answered 503 and
//! closed, so the server never stops accepting. Shutdown stops accepting and lets in-flight
//! requests finish within a grace period. The error answers hyper writes by itself
//! (malformed requests, oversized headers) are rewritten as problem+json.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bulklink_http::http::ApiError;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// The server's limits; `Default` is what `serve` runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request's header section must arrive within this once it has begun.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress is closed after this long without traffic.
    pub idle_timeout: Duration,
    /// A request is answered within this: 408 if its body had not arrived, else 503.
    pub request_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 768,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Largest header section hyper buffers; beyond it hyper answers 431 (rewritten below).
const MAX_HEAD_BUFFER: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown` turns true, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.request_timeout,
        request_deadline,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (drain, draining) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let mut back_off = false;
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let (app, draining) = (app.clone(), draining.clone());
                            connections.spawn(async move {
                                serve_connection(stream, app, limits, draining).await;
                                drop(slot);
                            });
                        }
                        Err(_) => {
                            connections.spawn(refuse_busy(stream, limits.max_connections));
                        }
                    }
                }
                Err(e) => {
                    // Out of file descriptors (or a connection reset before accept): keep
                    // accepting once the held connections' timeouts free some.
                    if last_accept_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        last_accept_warning = Some(Instant::now());
                    }
                    back_off = true;
                }
            },
        }
        if back_off {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(listener);
    let _ = drain.send(true);
    let in_flight = connections.len();
    if in_flight > 0 {
        tracing::info!(connections = in_flight, "draining connections");
    }
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "connections still open after the shutdown grace period; closing them"
        );
        connections.shutdown().await;
    }
}

/// What the watchdog of one connection knows about it.
struct Activity {
    started: Instant,
    /// Milliseconds since `started` of the last byte read or written.
    last_io_ms: AtomicU64,
    /// Milliseconds since `started` (+1) at which the current request's head began; 0 if no
    /// head is being read.
    head_since_ms: AtomicU64,
    requests_in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            requests_in_flight: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        if self.requests_in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.head_since_ms.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn on_write(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(0, Ordering::Relaxed);
    }

    fn request_answered(&self) {
        self.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
        self.on_write();
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ServerLimits) -> Option<&'static str> {
        let now = self.now_ms();
        let head_since = self.head_since_ms.load(Ordering::Relaxed);
        if head_since != 0
            && now.saturating_sub(head_since - 1) > millis(limits.header_read_timeout)
        {
            return Some("request headers did not arrive in time");
        }
        let quiet = now.saturating_sub(self.last_io_ms.load(Ordering::Relaxed));
        let in_flight = self.requests_in_flight.load(Ordering::Relaxed);
        if in_flight == 0 && head_since == 0 && quiet > millis(limits.idle_timeout) {
            return Some("idle");
        }
        // A request's own deadline answers it; a connection silent for twice as long as
        // any legitimate exchange (a client that stopped reading) is dead.
        if quiet > 2 * millis(limits.request_timeout.max(limits.idle_timeout)) {
            return Some("stalled");
        }
        None
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ServerLimits,
    mut draining: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            activity.request_started();
            let (app, activity) = (app.clone(), activity.clone());
            async move {
                let response = app
                    .oneshot(request.map(Body::new))
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                activity.request_answered();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true)
        // A client that shuts its write side after sending (or hangs up) still gets its
        // request carried out; the answer just finds nobody.
        .half_close(true)
        .serve_connection(io, service);
    tokio::pin!(connection);
    let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_millis(500));
    let mut watchdog = tokio::time::interval(tick);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = async { let _ = draining.wait_for(|d| *d).await; }, if !shutting_down => {
                // Finish the request in hand, then close.
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = watchdog.tick() => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(why, "closing connection");
                    return;
                }
            }
        }
    }
}

/// Past the connection cap: a 503 that says so, then close. Accepting and answering keeps
/// clients from waiting in the listen backlog without a word.
async fn refuse_busy(mut stream: TcpStream, cap: usize) {
    let body = problem_body(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the server is serving its maximum of {cap} connections; retry shortly"),
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Read the request's head first: an answer before the request confuses clients.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

fn problem_body(status: StatusCode, detail: &str) -> String {
    serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    })
    .to_string()
}

/// How long an import's file upload (`PUT /imports/{id}/file`) may take.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(15 * 60);

fn is_file_upload(request: &Request) -> bool {
    let path = request.uri().path();
    request.method() == axum::http::Method::PUT
        && path.starts_with("/imports/")
        && path.ends_with("/file")
}

/// Answers a request that outlives its deadline: 408 if its body never finished arriving
/// (a slow or stalled client), 503 if the server was slow.
async fn request_deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    // An import's file may take minutes to send; its URL is single-use and expires.
    let limit = if is_file_upload(&request) {
        UPLOAD_DEADLINE.max(limit)
    } else {
        limit
    };
    let body_done = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(WatchedBody {
            inner: body,
            done: body_done.clone(),
        })
    });
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) if !body_done.load(Ordering::Relaxed) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than {} s; retry it",
                limit.as_secs_f64()
            ),
        )
        .with_retry_after(1)
        .into_response(),
    }
}

/// A request body that records when it has been read to the end.
struct WatchedBody {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl http_body::Body for WatchedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.inner.is_end_stream();
        if end {
            self.done.store(true, Ordering::Relaxed);
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, watched: every read and write counts as activity, and the bare
/// error responses hyper writes on its own are replaced by problem+json ones.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// A replacement response still to be written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
}

impl Watched {
    fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        Watched {
            inner,
            activity,
            pending: None,
        }
    }

    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written >= bytes.len() {
                self.pending = None;
                break;
            }
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            self.activity.on_write();
        }
        Poll::Ready(Ok(()))
    }
}

/// hyper's own answer to a request it could not parse: a 4xx (or 505) head with an empty
/// body and no content type. The application's errors always carry a content type.
fn rewrite_bare_error(buf: &[u8]) -> Option<Vec<u8>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if head_end != buf.len() {
        return None;
    }
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status_line = head.lines().next()?;
    let code: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let lower = head.to_ascii_lowercase();
    if !((400..500).contains(&code) || code == 505)
        || lower.contains("\r\ncontent-type:")
        || !lower.contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let status = StatusCode::from_u16(code).ok()?;
    let detail = match code {
        431 => format!(
            "the request's header section is larger than {MAX_HEAD_BUFFER} bytes (or has more than 100 headers)"
        ),
        414 => "the request target is too long".to_owned(),
        505 => "only HTTP/1.1 (and 1.0) are served".to_owned(),
        _ => "the request is not valid HTTP/1.1".to_owned(),
    };
    let body = problem_body(status, &detail);
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_pending(cx))?;
        if let Some(replacement) = rewrite_bare_error(buf) {
            self.pending = Some((replacement, 0));
            // The replacement stands for all of hyper's bytes; it is flushed from here on.
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each response as one buffer, which is what lets
    // `rewrite_bare_error` see a whole head.
    fn is_write_vectored(&self) -> bool {
        false
    }
}
