//! Prometheus metrics: the names, their descriptions and buckets, the process-wide recorder,
//! and the `/metrics` endpoint that renders it in the text exposition format.
//!
//! Code records through the `metrics` facade: the request middleware here, the commit path in
//! the store crate. Record counts are not tracked as writes happen; `/metrics` reads them from
//! the store when it is scraped, so they are exact at that moment.

use std::sync::Arc;
use std::time::Duration;

use akstore_store::{Store, writer};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::probes::Lifecycle;

/// Counter of requests by `method`, `route` (the path template) and `status`.
pub const REQUESTS: &str = "akstore_http_requests_total";
/// Histogram of request latency in seconds, by `method` and `route`.
pub const REQUEST_DURATION: &str = "akstore_http_request_duration_seconds";
/// Counter of 412 Precondition Failed responses of the ARM routes.
pub const PRECONDITION_FAILED: &str = "akstore_http_precondition_failed_total";
/// Counter of 409 Conflict responses of the ARM routes.
pub const CONFLICTS: &str = "akstore_http_conflicts_total";
/// Counter of 5xx responses of the ARM routes; the probes' 503s are states, not failures.
pub const SERVER_ERRORS: &str = "akstore_http_server_errors_total";
/// Gauge of open client connections.
pub const CONNECTIONS_OPEN: &str = "akstore_http_connections_open";
/// Counter of connections rejected with 503 because every connection slot was taken.
pub const CONNECTIONS_REJECTED: &str = "akstore_http_connections_rejected_total";
/// Gauge of stored clusters, read at scrape time.
pub const CLUSTERS: &str = "akstore_store_clusters";
/// Gauge of stored agent pools, read at scrape time.
pub const POOLS: &str = "akstore_store_pools";
/// Gauge of the global revision, read at scrape time.
pub const REVISION: &str = "akstore_store_revision";
/// Gauge that is 1 while the store accepts writes.
pub const WRITABLE: &str = "akstore_store_writable";
/// Gauge fixed at 1, labelled with the binary and schema versions.
pub const BUILD_INFO: &str = "akstore_build_info";

/// Latency buckets in seconds: from a cached read (well under a millisecond) to a commit
/// waiting on a slow disk.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Batch-size buckets, up to the writer's largest batch.
const BATCH_SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histogram samples are folded into their buckets between scrapes, which keeps
/// their memory bounded when no scraper runs.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The installed recorder, cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the process-wide recorder, describes every metric, sets the counters to 0 so
    /// they are exported before their first event, and starts the upkeep thread.
    ///
    /// Fails when a recorder is already installed in this process.
    pub fn install() -> Result<Metrics, String> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(REQUEST_DURATION.into()),
                &LATENCY_BUCKETS_SECONDS,
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(writer::COMMIT_DURATION_METRIC.into()),
                    &LATENCY_BUCKETS_SECONDS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(writer::BATCH_SIZE_METRIC.into()),
                    &BATCH_SIZE_BUCKETS,
                )
            })
            .map_err(|error| format!("invalid metrics buckets: {error}"))?;
        let handle = builder
            .install_recorder()
            .map_err(|error| format!("failed to install the metrics recorder: {error}"))?;

        describe();
        for counter in [
            PRECONDITION_FAILED,
            CONFLICTS,
            SERVER_ERRORS,
            CONNECTIONS_REJECTED,
        ] {
            metrics::counter!(counter).absolute(0);
        }
        // Both outcomes are listed from the start, so an alert on commit failures reads 0
        // rather than no data before the first failure.
        for outcome in ["not_applied", "unknown"] {
            metrics::counter!(writer::COMMIT_FAILURES_METRIC, "outcome" => outcome).absolute(0);
        }
        metrics::gauge!(CONNECTIONS_OPEN).set(0.0);
        metrics::gauge!(
            BUILD_INFO,
            "version" => env!("CARGO_PKG_VERSION"),
            "schema_version" => akstore_store::CURRENT_SCHEMA_VERSION.to_string()
        )
        .set(1.0);

        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("akstore-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            })
            .map_err(|error| format!("failed to start the metrics upkeep thread: {error}"))?;
        Ok(Metrics { handle })
    }
}

/// `GET /metrics`: reads the record counts (when the store is open), then renders every metric.
pub(crate) async fn render(State(lifecycle): State<Arc<Lifecycle>>) -> Response {
    let Some(metrics) = lifecycle.config().metrics.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this server\n",
        )
            .into_response();
    };
    if let Some(store) = lifecycle.store() {
        let store = Arc::clone(store);
        match tokio::task::spawn_blocking(move || record_store_gauges(&store)).await {
            Ok(()) => {}
            Err(error) => tracing::error!(%error, "reading the record counts for /metrics failed"),
        }
    }
    let body = metrics.handle.render();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn record_store_gauges(store: &Store) {
    metrics::gauge!(WRITABLE).set(if store.is_writable() { 1.0 } else { 0.0 });
    match store.counts() {
        Ok(counts) => {
            // f64 represents integers exactly up to 2^53, far above any record count or revision.
            metrics::gauge!(CLUSTERS).set(counts.clusters as f64);
            metrics::gauge!(POOLS).set(counts.pools as f64);
            metrics::gauge!(REVISION).set(counts.revision as f64);
        }
        Err(error) => tracing::error!(%error, "reading the record counts for /metrics failed"),
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "HTTP requests by method, route template and status."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from receiving a request's headers to its response, by method and route."
    );
    describe_counter!(
        PRECONDITION_FAILED,
        "ARM responses with status 412 Precondition Failed."
    );
    describe_counter!(CONFLICTS, "ARM responses with status 409 Conflict.");
    describe_counter!(SERVER_ERRORS, "ARM responses with a 5xx status.");
    describe_gauge!(CONNECTIONS_OPEN, "Open client connections.");
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Connections rejected with 503 because every connection slot was taken."
    );
    describe_gauge!(CLUSTERS, "Managed clusters stored.");
    describe_gauge!(POOLS, "Agent pools stored.");
    describe_gauge!(
        REVISION,
        "Global revision: the revision of the last applied write."
    );
    describe_gauge!(
        WRITABLE,
        "1 while the store accepts writes, 0 after a failed commit."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels carry the binary and schema versions."
    );
    describe_histogram!(
        writer::COMMIT_DURATION_METRIC,
        Unit::Seconds,
        "Time to apply and durably commit one batch of writes."
    );
    describe_histogram!(
        writer::BATCH_SIZE_METRIC,
        Unit::Count,
        "Write requests per committed batch."
    );
    describe_counter!(
        writer::COMMIT_FAILURES_METRIC,
        "Batches whose commit failed, by outcome: not_applied or unknown."
    );
}
