//! akstore's HTTP layer: the ARM routes of managed clusters and agent pools on axum.
//!
//! This crate parses paths, query parameters, condition headers and JSON bodies, hands typed
//! requests to [`akstore_store::Store`], and maps each outcome to exactly one status and body.
//! It never calls redb and never blocks the async executor: reads run on tokio's blocking
//! pool and writes complete through the store's writer thread.

mod body;
mod conditions;
mod error;
mod handlers;
mod json;
mod operations;
mod paging;
mod route;

use std::sync::Arc;
use std::time::{Duration, Instant};

use akstore_store::Store;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use uuid::Uuid;

pub use error::ApiError;
pub use operations::{OPERATION_RETENTION, spawn_settler};

/// Largest request body accepted, in bytes. Generous for a cluster with hundreds of pools,
/// while a client cannot make the server buffer an unbounded body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Default number of items in one list page; ARM services page at a similar size.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Which status codes the API answers with where the AKS documentation and the live service
/// differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// The AKS ETag documentation's table: DELETE of an existing resource answers 200.
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
    /// Most items in one list page.
    pub page_size: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
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
        }
    }
}

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<ApiConfig>,
}

/// Builds the router: health probes, and every other path parsed as an ARM path.
pub fn router(store: Arc<Store>, config: ApiConfig) -> Router {
    let state = AppState {
        store,
        config: Arc::new(config),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(handlers::arm_request)
        .with_state(state)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(request_context))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready while the store accepts writes; a failed commit makes it unready until restart.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.is_writable() {
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        let body = json!({ "status": "unavailable", "reason": "the store does not accept writes" });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// Opens the request's span, sets the ARM request-id headers and logs the outcome once.
async fn request_context(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = Uuid::new_v4().to_string();
    let client_request_id = request.headers().get("x-ms-client-request-id").cloned();
    let correlation_id = client_request_id
        .clone()
        .or_else(|| {
            request
                .headers()
                .get("x-ms-correlation-request-id")
                .cloned()
        })
        .unwrap_or_else(|| header_value(&request_id));

    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = tracing::field::Empty,
        request_id = %request_id,
    );
    let mut response = {
        use tracing::Instrument;
        next.run(request).instrument(span.clone()).await
    };

    let status = response.status();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), latency_ms, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), latency_ms, "request finished");
        }
    });

    let headers = response.headers_mut();
    headers.insert("x-ms-request-id", header_value(&request_id));
    headers.insert("x-ms-correlation-request-id", correlation_id);
    if let Some(client_request_id) = client_request_id {
        headers.insert("x-ms-client-request-id", client_request_id);
    }
    response
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    ApiError::OutcomeUnknown.into_response()
}
