//! The HTTP server's accept loop: hyper's HTTP/1 connections serving the [`app`](crate::app)
//! router, with the limits that are about connections rather than requests (those are the
//! router's `guard`):
//!
//! - a request head (line and headers) must arrive within [`ServerSettings::header_timeout`]:
//!   a client that started one gets 408 with the JSON error body, and a keep-alive connection
//!   idle that long is closed, so idle connections do not hold a slot for ever;
//! - at most [`ServerSettings::max_connections`] connections are served at once; a connection
//!   beyond them is answered 503 with the JSON error body and `Retry-After: 1` to its first
//!   request and closed (a client learns at once that it should come back, instead of waiting
//!   unanswered in the listen backlog);
//! - a response the client does not read makes no progress for at most
//!   [`ServerSettings::write_timeout`] before the connection is dropped;
//! - on shutdown, no new connection is accepted, idle ones close, and in-flight requests have
//!   [`ServerSettings::shutdown_grace`] to finish.
//!
//! Heads above 64 KiB or with more than 256 headers are refused by hyper's parser itself, with a
//! bare 431; smaller ones above the API's limits get the JSON 431 from the router.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::error::{Error, api_error};

/// Largest request head (line and headers) hyper's parser takes; above it, a bare 431.
const HEAD_BYTES_HARD_LIMIT: usize = 64 << 10;
/// Most headers hyper's parser takes; above it, a bare 431.
const HEADERS_HARD_LIMIT: usize = 256;
/// Connections beyond the cap being answered 503 at once; beyond these, a connection is closed
/// without an answer.
const REFUSING_AT_ONCE: usize = 64;
/// Longest a connection beyond the cap is kept to answer it 503.
const REFUSAL_SECS: u64 = 2;
/// Longest spent writing a 408 to a client whose head never finished, and reading what it
/// still sends so that closing does not reset the answer away.
const LINGER_SECS: u64 = 2;

/// How the HTTP server treats connections (requests are [`ApiSettings`](crate::ApiSettings)'
/// business).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Longest a client may take to send a request's head (its line and headers), and longest a
    /// keep-alive connection may sit idle between requests. A client that started a head gets
    /// 408; an idle connection is closed.
    pub header_timeout: Duration,
    /// Most connections served at once. A connection beyond them is answered 503 to its first
    /// request and closed; raise the process's open-file limit (`ulimit -n`) above this.
    pub max_connections: usize,
    /// Longest a response may make no progress because the client does not read it; the
    /// connection is then dropped.
    pub write_timeout: Duration,
    /// On shutdown, how long in-flight requests have to finish before their connections are
    /// dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            write_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// within [`ServerSettings::shutdown_grace`]. See the module docs for the limits.
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(HEAD_BYTES_HARD_LIMIT)
        .max_headers(HEADERS_HARD_LIMIT);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let refusals = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(target: "coordinator::http", "a connection task panicked: {e}");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        // Small JSON answers should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            let (http, service) = (http.clone(), TowerToHyperService::new(router.clone()));
            let (settings, stopping) = (settings.clone(), stopping.clone());
            connections.spawn(async move {
                serve_connection(&http, stream, service, &settings, stopping).await;
                drop(slot);
            });
        } else if let Ok(refusing) = refusals.clone().try_acquire_owned() {
            let cap = settings.max_connections;
            let header_timeout = settings.header_timeout;
            connections.spawn(async move {
                refuse_connection(stream, cap, header_timeout).await;
                drop(refusing);
            });
        } else {
            tracing::debug!(target: "coordinator::http", "connection cap and refusals full; closing a new connection");
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let finished = tokio::time::timeout(settings.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            target: "coordinator::http",
            left = connections.len(),
            "requests still in flight after the shutdown grace; dropping their connections"
        );
        connections.shutdown().await;
    }
}

/// Serves one connection until it closes, the client stalls, or shutdown.
async fn serve_connection(
    http: &http1::Builder,
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    settings: &ServerSettings,
    mut stopping: watch::Receiver<bool>,
) {
    let io = TokioIo::new(WriteTimeout::new(stream, settings.write_timeout));
    let mut conn = http.serve_connection(io, service);
    let mut asked_to_stop = false;
    let result = loop {
        tokio::select! {
            result = &mut conn => break result,
            _ = stopping.wait_for(|&stop| stop), if !asked_to_stop => {
                asked_to_stop = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            // The head timed out: after the previous response was flushed, so the connection
            // is between messages. A client that sent part of a head is told why; an idle one
            // is just closed, as keep-alive clients expect.
            let parts = conn.into_parts();
            if !parts.read_buf.is_empty() {
                let stream = parts.io.into_inner().into_inner();
                answer_head_timeout(stream, settings.header_timeout).await;
            }
        }
        Err(e) => tracing::debug!(target: "coordinator::http", "connection ended: {e}"),
    }
}

/// Tells a client whose request head did not arrive in time why it is disconnected (408 with
/// the JSON error body), then closes gracefully.
async fn answer_head_timeout(mut stream: TcpStream, header_timeout: Duration) {
    let e = Error::Timeout(format!(
        "the request's line and headers did not arrive within {} s; send them at once",
        header_timeout.as_secs_f64()
    ));
    let (status, _) = e.status();
    let body = serde_json::to_vec(&api_error(status, e.to_string())).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(LINGER_SECS), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await?;
        // Read what the client still sends until it closes, so that closing with unread
        // bytes does not reset the connection and lose the answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// Answers a connection beyond the cap: 503 with the JSON error body and `Retry-After: 1` to
/// its first request, then closed.
async fn refuse_connection(stream: TcpStream, cap: usize, header_timeout: Duration) {
    let limit = Duration::from_secs(REFUSAL_SECS);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(header_timeout.min(limit))
        .max_header_size(HEAD_BYTES_HARD_LIMIT)
        .max_headers(HEADERS_HARD_LIMIT);
    let service = hyper::service::service_fn(move |_| async move {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let body = api_error(
            status,
            format!(
                "this coordinator is serving its maximum of {cap} connections; retry in a \
                 moment"
            ),
        );
        Ok::<_, Infallible>(
            (status, [(header::RETRY_AFTER, "1")], axum::Json(body)).into_response(),
        )
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(limit, conn).await;
}

/// Like hyper's server: errors of one connection are not the listener's, and running out of
/// file descriptors passes if we wait a little.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(target: "coordinator::http", "accept failed: {e}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A stream whose writes fail with `TimedOut` once they have made no progress for `limit`: a
/// client that stops reading its response does not hold its connection for ever.
struct WriteTimeout {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteTimeout {
    fn new(inner: TcpStream, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    fn into_inner(self) -> TcpStream {
        self.inner
    }

    /// Passes a write's outcome on; a write pending for `limit` in a row becomes an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing of its response for {} s",
                    limit.as_secs_f64()
                ),
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for WriteTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}
