//! The outermost middleware: one span per request, the header-size limit, the request ids, the
//! outcome log line and the request metrics.
//!
//! Every request gets a span with its method, route template and a fresh request id, and
//! exactly one event when it finishes, with status and latency. The event is `warn` for a 5xx,
//! whose cause the handler logs at `error` with the details. It is `info` for a 4xx, and
//! `debug` for the rest and for every probe and scrape. Neither bodies nor header values reach
//! the log, so no token does.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ApiError;
use crate::{MAX_HEADER_BYTES, route, telemetry};

/// Route label of a path that matches no route, so labels stay a small fixed set.
const UNMATCHED_ROUTE: &str = "unmatched";

/// Paths outside the ARM namespace, each its own route label.
const OPERATIONS_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Opens the request's span, enforces the header limit, sets the ARM request-id headers, and
/// logs and counts the outcome once.
pub(crate) async fn request_context(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = Uuid::new_v4().to_string();
    let method = method_label(request.method());
    let route = route_label(request.uri().path());
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
        method = %method,
        route = %route,
        request_id = %request_id,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    let mut response = if head_size(&request) > MAX_HEADER_BYTES {
        ApiError::HeadersTooLarge {
            limit_bytes: MAX_HEADER_BYTES,
        }
        .into_response()
    } else {
        next.run(request).instrument(span.clone()).await
    };

    let status = response.status();
    let elapsed = started.elapsed();
    span.record("status", status.as_u16());
    span.record("latency_ms", elapsed.as_secs_f64() * 1000.0);
    span.in_scope(|| log_outcome(route, status));
    record_metrics(method, route, status, elapsed.as_secs_f64());

    let headers = response.headers_mut();
    headers.insert("x-ms-request-id", header_value(&request_id));
    headers.insert("x-ms-correlation-request-id", correlation_id);
    if let Some(client_request_id) = client_request_id {
        headers.insert("x-ms-client-request-id", client_request_id);
    }
    response
}

fn log_outcome(route: &str, status: StatusCode) {
    // Probes run every few seconds, and their 503 reports a state, not a failure.
    if OPERATIONS_PATHS.contains(&route) {
        tracing::debug!("request finished");
    } else if status.is_server_error() {
        tracing::warn!("request failed");
    } else if status.is_client_error() {
        tracing::info!("request rejected");
    } else {
        tracing::debug!("request finished");
    }
}

fn record_metrics(method: &'static str, route: &'static str, status: StatusCode, seconds: f64) {
    let status_label = status.as_str().to_owned();
    metrics::counter!(telemetry::REQUESTS, "method" => method, "route" => route, "status" => status_label)
        .increment(1);
    metrics::histogram!(telemetry::REQUEST_DURATION, "method" => method, "route" => route)
        .record(seconds);
    // A probe's 503 reports a state, not a failure, so the outcome counters cover the API only.
    if OPERATIONS_PATHS.contains(&route) {
        return;
    }
    if status == StatusCode::PRECONDITION_FAILED {
        metrics::counter!(telemetry::PRECONDITION_FAILED).increment(1);
    } else if status == StatusCode::CONFLICT {
        metrics::counter!(telemetry::CONFLICTS).increment(1);
    } else if status.is_server_error() {
        metrics::counter!(telemetry::SERVER_ERRORS).increment(1);
    }
}

/// The method as a label; methods akstore never serves share one label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Returns the route template of a path, or [`UNMATCHED_ROUTE`].
fn route_label(path: &str) -> &'static str {
    if let Some(operations) = OPERATIONS_PATHS.iter().find(|known| **known == path) {
        return operations;
    }
    route::parse(path).map_or(UNMATCHED_ROUTE, |route| route.template())
}

/// Bytes of the request line and headers, counted as HTTP/1.1 sends them.
fn head_size(request: &Request) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |target| target.as_str().len());
    let line = request.method().as_str().len() + " ".len() + target + " HTTP/1.1\r\n".len();
    line + headers_size(request.headers())
}

fn headers_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + ": \r\n".len() + value.len())
        .sum()
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}
