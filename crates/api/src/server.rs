//! The HTTP/1.1 connection loop: accepts connections up to a limit, serves each with hyper under
//! header limits, and drains them on shutdown.
//!
//! A connection beyond [`Server::new`]'s limit is not left waiting in the kernel's backlog: it is
//! accepted and its first request gets a 503 `TooManyConnections` response, for up to
//! [`MAX_REJECTING_CONNECTIONS`] connections at a time; past that it is closed at once. Shutdown stops
//! accepting, then lets each connection finish the request it is serving and closes it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::error::ApiError;
use crate::{MAX_HEADER_BYTES, telemetry};

/// Default limit of open client connections: below 1024, the usual default soft limit of open
/// files per process on Linux, leaving room for the database file and the listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Time a client has to send a request's line and headers, which also closes a kept-alive
/// connection idle that long. It exceeds the 30-second default interval at which Azure SDK
/// clients poll long-running operations, so a connection is not closed just as a client reuses
/// it, and it frees a slot held by a client that stopped sending.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Size of request line and headers past which the HTTP parser responds with a bare 431 and
/// closes the connection; below it and above [`MAX_HEADER_BYTES`] the client gets an ARM error.
pub const MAX_HEAD_BYTES: usize = 2 * MAX_HEADER_BYTES;

/// Most connections that get a 503 response at the same time when every slot is taken; past
/// this an extra connection is closed without a response, so a flood of them costs no more than
/// this many tasks.
pub const MAX_REJECTING_CONNECTIONS: usize = 32;

/// Time a rejected connection has to send its request before it is closed.
const REJECT_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after a failed accept, such as one for lack of file descriptors, so the loop does
/// not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Shortest time between two warnings about connections rejected at the limit.
const REJECT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A listener with its application and connection limit, ready to run.
pub struct Server {
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    slots: Arc<Semaphore>,
    rejecting: Arc<Semaphore>,
    stop: watch::Sender<bool>,
}

/// A handle on the open connections that outlives [`Server::run`].
#[derive(Clone)]
pub struct Connections {
    slots: Arc<Semaphore>,
    max_connections: usize,
}

impl Server {
    /// Prepares to serve `app` on `listener` with at most `max_connections` open at once.
    pub fn new(listener: TcpListener, app: Router, max_connections: usize) -> Server {
        assert!(
            (1..=Semaphore::MAX_PERMITS).contains(&max_connections),
            "the connection limit must be at least 1"
        );
        Server {
            listener,
            app,
            max_connections,
            slots: Arc::new(Semaphore::new(max_connections)),
            rejecting: Arc::new(Semaphore::new(MAX_REJECTING_CONNECTIONS)),
            stop: watch::channel(false).0,
        }
    }

    /// Returns a handle to wait for the connections to close.
    pub fn connections(&self) -> Connections {
        Connections {
            slots: Arc::clone(&self.slots),
            max_connections: self.max_connections,
        }
    }

    /// Accepts connections until `shutdown` resolves, then closes the listener and signals every
    /// connection to close after the request it is serving. Returns without waiting for them;
    /// [`Connections::wait_closed`] does.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut rejections = RejectionLog::default();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            // Responses are written whole; waiting to coalesce them only adds latency.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "failed to set TCP_NODELAY");
            }

            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                let connection =
                    serve_connection(stream, self.app.clone(), permit, self.stop.subscribe());
                tokio::spawn(connection);
                continue;
            }
            metrics::counter!(telemetry::CONNECTIONS_REJECTED).increment(1);
            rejections.note(self.max_connections);
            if let Ok(permit) = Arc::clone(&self.rejecting).try_acquire_owned() {
                tokio::spawn(reject_connection(stream, permit, self.max_connections));
            }
        }

        drop(self.listener);
        // No receiver left means no connection is open; nothing to tell.
        let _ = self.stop.send(true);
    }
}

impl Connections {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max_connections - self.slots.available_permits()
    }

    /// Waits until every connection has closed or `timeout` has passed; true if all closed.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let all = u32::try_from(self.max_connections).expect("the limit fits Semaphore's u32");
        matches!(
            tokio::time::timeout(timeout, self.slots.acquire_many(all)).await,
            Ok(Ok(_))
        )
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    metrics::gauge!(telemetry::CONNECTIONS_OPEN).increment(1.0);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut connection = std::pin::pin!(connection);

    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    // Resets, timeouts and malformed requests are the client's doing; hyper has answered what
    // it could.
    if let Err(error) = result {
        tracing::debug!(%error, "connection closed with an error");
    }
    metrics::gauge!(telemetry::CONNECTIONS_OPEN).decrement(1.0);
    drop(permit);
}

async fn reject_connection(stream: TcpStream, permit: OwnedSemaphorePermit, limit: usize) {
    let service = hyper::service::service_fn(move |_request| async move {
        let mut response = ApiError::TooManyConnections { limit }.into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(response)
    });
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(REJECT_READ_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        tracing::debug!(%error, "rejected connection closed with an error");
    }
    drop(permit);
}

/// Logs rejected connections at most once per [`REJECT_WARNING_INTERVAL`], with a count.
#[derive(Default)]
struct RejectionLog {
    last_warning: Option<Instant>,
    since_warning: u64,
}

impl RejectionLog {
    fn note(&mut self, limit: usize) {
        self.since_warning += 1;
        let due = self
            .last_warning
            .is_none_or(|last| last.elapsed() >= REJECT_WARNING_INTERVAL);
        if due {
            tracing::warn!(
                limit,
                rejected = self.since_warning,
                "connection limit reached; rejecting new connections with 503"
            );
            self.last_warning = Some(Instant::now());
            self.since_warning = 0;
        }
    }
}
