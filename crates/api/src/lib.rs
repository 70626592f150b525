//! akstore's HTTP layer: the ARM routes of managed clusters and agent pools on axum.
//!
//! This crate parses paths, query parameters, condition headers and JSON bodies, hands typed
//! requests to [`akstore_store::Store`], and maps each outcome to exactly one status and body.
//! It never calls redb and never blocks the async executor: reads run on tokio's blocking
//! pool and writes complete through the store's writer thread.
//!
//! Around the ARM routes it provides what an operator needs: the connection loop with its
//! limits ([`server`]), the probes and the startup gate (`probes`), Prometheus metrics
//! ([`telemetry`]), bearer authentication (`auth`) and the per-request span and log line
//! (`context`).

mod auth;
mod body;
mod conditions;
mod context;
mod error;
mod handlers;
mod json;
mod operations;
mod paging;
mod probes;
mod retries;
mod route;
pub mod server;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use akstore_store::Store;
use axum::Router;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;

pub use auth::{BearerToken, InvalidToken, MAX_TOKEN_BYTES};
pub use error::ApiError;
pub use operations::{OPERATION_RETENTION, spawn_settler};
pub use probes::Lifecycle;
pub use telemetry::Metrics;

/// Largest request body accepted, in bytes. Generous for a cluster with hundreds of pools,
/// while a client cannot make the server buffer an unbounded body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Largest request line plus headers accepted with an ARM error (431), in bytes: several times
/// what an Azure SDK request with a large bearer token sends. Past [`server::MAX_HEAD_BYTES`]
/// the HTTP parser closes the connection without an ARM body.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Default number of items in one list page; ARM services page at a similar size.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Default time a request may take to arrive and be read, before a write is handed to the
/// store: long enough for a 4 MiB body over a slow link, short enough to free a stuck client's
/// resources.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Choice of the status codes the API returns where the AKS documentation and the live service
/// differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// The AKS ETag documentation's table: DELETE of an existing resource returns 200.
    #[default]
    Documented,
    /// What the live service sends and the official SDKs accept: DELETE returns 202, and writes
    /// may run as long-running operations (see [`ApiConfig::provisioning_delay`]).
    Arm,
}

impl Profile {
    /// Status of a DELETE that removed a resource.
    pub fn deleted_status(self) -> StatusCode {
        match self {
            Profile::Documented => StatusCode::OK,
            Profile::Arm => StatusCode::ACCEPTED,
        }
    }
}

/// Settings of the API layer.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub profile: Profile,
    /// How long an emulated long-running operation runs, in the `arm` profile. Zero answers
    /// every write at once with `provisioningState: Succeeded` and no polling headers.
    pub provisioning_delay: Duration,
    /// Maximum number of items in one list page.
    pub page_size: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Time allowed to receive a request body, or to finish a read. A write handed to the
    /// store is always answered with its outcome, however long its commit takes.
    pub request_timeout: Duration,
    /// The token every ARM request must present; `None` accepts any request.
    pub auth_token: Option<BearerToken>,
    /// The recorder that `/metrics` renders; with `None`, `/metrics` returns 404.
    pub metrics: Option<Metrics>,
}

impl ApiConfig {
    /// Length of the long-running operation that each write starts, in milliseconds, or `None`
    /// when writes finish at once: in the `documented` profile, or with a zero delay.
    pub fn operation_duration_ms(&self) -> Option<u64> {
        let emulated = self.profile == Profile::Arm && !self.provisioning_delay.is_zero();
        emulated.then(|| u64::try_from(self.provisioning_delay.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            profile: Profile::default(),
            provisioning_delay: Duration::ZERO,
            page_size: DEFAULT_PAGE_SIZE,
            max_body_bytes: MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            auth_token: None,
            metrics: None,
        }
    }
}

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<ApiConfig>,
}

/// Builds the whole application on a store that is already open.
pub fn router(store: Arc<Store>, config: ApiConfig) -> Router {
    let (app, lifecycle) = app(config);
    lifecycle.open(store);
    app
}

/// Builds the application before the store is open: the probes and `/metrics` respond at once,
/// and ARM requests get 503 until [`Lifecycle::open`] hands over the store.
///
/// Layers, outermost first: the request context (span, ids, header limit, metrics), panic
/// recovery, then authentication around the ARM routes only.
pub fn app(config: ApiConfig) -> (Router, Arc<Lifecycle>) {
    let auth_token = config.auth_token.clone();
    let lifecycle = Arc::new(Lifecycle::new(config));

    let operations = Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(telemetry::render))
        .method_not_allowed_fallback(operations_method_not_allowed)
        .with_state(Arc::clone(&lifecycle));
    let arm = Router::new()
        .fallback(probes::arm_gate)
        .with_state(Arc::clone(&lifecycle))
        .layer(middleware::from_fn_with_state(
            auth_token,
            auth::require_bearer,
        ));

    let app = operations
        .merge(arm)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(context::request_context));
    (app, lifecycle)
}

/// Answers a method other than GET or HEAD on a probe or `/metrics` with an ARM error body, as
/// every other error is answered.
async fn operations_method_not_allowed(method: axum::http::Method) -> Response {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        route: "the probe and metrics endpoints",
        allow: "GET, HEAD",
    }
    .into_response()
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    ApiError::OutcomeUnknown.into_response()
}
