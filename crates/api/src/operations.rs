//! Long-running operations on the wire: the polling headers of an accepted write, the
//! operation-status and operation-result resources, and the task that settles finished
//! operations in the store.
//!
//! An accepted write points its client at two URLs under
//! `/subscriptions/{sub}/providers/Microsoft.ContainerService/locations/{location}/`:
//! `operations/{id}` (the `Azure-AsyncOperation` header), which returns 200 with the
//! operation's status, and `operationresults/{id}` (the `Location` header of a DELETE), which
//! returns 202 while the operation runs and 204 once it has finished. Both are absolute URLs
//! on the host the client addressed, carrying the request's api-version.

use std::sync::Arc;
use std::time::{Duration, Instant};

use akstore_store::{
    Operation, OperationKind, OperationStatus, OperationTarget, Store, WriteError, WriteRequest,
    normalize_location, writer::now_ms,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use uuid::Uuid;

use crate::error::ApiError;
use crate::handlers::read;
use crate::route::OperationAddress;
use crate::{AppState, json};

/// Largest `Retry-After` sent, in seconds. Retry-After is the time left until the operation's
/// deadline, so without a cap a long delay would leave a client idle for its whole length,
/// where ARM services ask clients to poll at least once a minute.
pub const MAX_RETRY_AFTER_SECS: u64 = 60;

/// How often the settling task checks for operations whose deadline has passed. Reads report
/// such operations as finished at once, so this only bounds how long a finished delete's
/// records stay on disk.
pub const SETTLE_INTERVAL: Duration = Duration::from_millis(500);

/// How often the settling task removes old operation records.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// How long a finished operation stays readable at its URLs. Clients poll an operation while
/// it runs and read it once more when it ends, so an hour leaves ample margin while the
/// table stays small on a long-lived server.
pub const OPERATION_RETENTION: Duration = Duration::from_secs(60 * 60);

/// The parts of a request that build the URLs of the operations it starts.
pub struct PollingBase {
    /// `http://host:port` as the client addressed the server.
    base_url: String,
    api_version: String,
}

impl PollingBase {
    pub fn new(headers: &HeaderMap, api_version: &str) -> PollingBase {
        PollingBase {
            base_url: base_url(headers),
            api_version: api_version.to_owned(),
        }
    }

    /// Absolute URL of the operation's status, the `Azure-AsyncOperation` header.
    pub fn status_url(&self, operation: &Operation) -> String {
        self.url(operation, "operations")
    }

    /// Absolute URL of the operation's result, the `Location` header.
    pub fn result_url(&self, operation: &Operation) -> String {
        self.url(operation, "operationresults")
    }

    fn url(&self, operation: &Operation, collection: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("api-version", &self.api_version);
        format!(
            "{}{}?{}",
            self.base_url,
            operation_path(operation, collection),
            query.finish()
        )
    }
}

/// `http://` and the `Host` header of the request, the origin the client reached the server
/// at; list `nextLink`s and operation URLs start with it. HTTP/1.1 requires `Host`; without
/// one the loopback address is the best guess.
// TODO: the origin is `http://` plus the Host header, so it is wrong behind a proxy that
// terminates TLS, and lacks the port for an HTTP/1.0 request without Host.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// Adds the headers of a PUT or PATCH that started `operation`: `Azure-AsyncOperation` and
/// `Retry-After`.
pub fn insert_polling_headers(response: &mut Response, base: &PollingBase, operation: &Operation) {
    let headers = response.headers_mut();
    headers.insert(
        "azure-asyncoperation",
        url_header(&base.status_url(operation)),
    );
    headers.insert(header::RETRY_AFTER, retry_after(operation));
}

/// Builds the 202 response to a DELETE that started `operation`, with `Location`,
/// `Azure-AsyncOperation` and `Retry-After`.
pub fn accepted_delete(base: &PollingBase, operation: &Operation) -> Response {
    let mut response = StatusCode::ACCEPTED.into_response();
    insert_polling_headers(&mut response, base, operation);
    response
        .headers_mut()
        .insert(header::LOCATION, url_header(&base.result_url(operation)));
    response
}

/// Builds the error for a write rejected because `running` runs on its cluster.
pub fn conflict(running: &Operation) -> ApiError {
    ApiError::OperationNotAllowed {
        running: describe(running),
        cluster: running.cluster_name.clone(),
        operation_id: running.id.to_string(),
        retry_after_secs: retry_after_secs(running, now_ms()),
    }
}

/// Handles `GET .../operations/{id}`: returns 200 with the operation's status.
pub async fn status(state: &AppState, address: OperationAddress) -> Result<Response, ApiError> {
    let operation = find(state, address).await?;
    let body = serde_json::json!({
        "id": operation_path(&operation, "operations"),
        "name": operation.id.to_string(),
        "status": status_name(operation.status),
        "startTime": json::rfc3339_ms(operation.started_ms),
        "endTime": operation.ended_ms.map(json::rfc3339_ms),
    });
    let mut response = axum::Json(body).into_response();
    if operation.is_running() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after(&operation));
    }
    Ok(response)
}

/// Handles `GET .../operationresults/{id}`: returns 202 while the operation runs, 204 once
/// it has finished.
pub async fn result(
    state: &AppState,
    address: OperationAddress,
    base: &PollingBase,
) -> Result<Response, ApiError> {
    let operation = find(state, address).await?;
    if !operation.is_running() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut response = StatusCode::ACCEPTED.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, url_header(&base.result_url(&operation)));
    headers.insert(header::RETRY_AFTER, retry_after(&operation));
    Ok(response)
}

/// Starts the task that finishes operations whose deadline has passed and prunes old records.
/// It runs until the runtime stops or the returned handle is aborted.
pub fn spawn_settler(store: Arc<Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(SETTLE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune: Option<Instant> = None;
        loop {
            interval.tick().await;
            let prune = last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL);
            if prune {
                last_prune = Some(Instant::now());
            }
            let store = Arc::clone(&store);
            match tokio::task::spawn_blocking(move || settle_once(&store, prune)).await {
                Ok(()) => {}
                Err(error) => tracing::error!(%error, "operation settling task failed"),
            }
        }
    })
}

/// Runs one round of settling. A read checks whether anything is due, and only then a write
/// applies it, so an idle server commits nothing.
fn settle_once(store: &Store, prune: bool) {
    let retention_ms = u64::try_from(OPERATION_RETENTION.as_millis()).unwrap_or(u64::MAX);
    let prune_ended_before_ms = prune.then(|| now_ms().saturating_sub(retention_ms));
    let pending = match store.operations_to_settle(prune_ended_before_ms) {
        Ok(pending) => pending,
        Err(error) => {
            tracing::warn!(%error, "failed to read the operations to settle; retrying later");
            return;
        }
    };
    if pending == 0 {
        return;
    }
    match store.write(WriteRequest::SettleOperations {
        prune_ended_before_ms,
    }) {
        Ok(applied) => tracing::debug!(?applied, "operations settled"),
        // The server is shutting down; the next start settles what is left.
        Err(WriteError::Closed) => {}
        Err(error) => tracing::warn!(%error, "failed to settle operations; retrying later"),
    }
}

/// Reads the operation an address names, checking that its subscription and location match.
async fn find(state: &AppState, address: OperationAddress) -> Result<Operation, ApiError> {
    let not_found = || ApiError::OperationNotFound(address.id.clone());
    let Ok(id) = Uuid::parse_str(&address.id) else {
        return Err(not_found());
    };
    let operation = read(state, move |store| store.get_operation(&id))
        .await?
        .ok_or_else(not_found)?;
    let same_subscription = operation
        .subscription
        .eq_ignore_ascii_case(&address.subscription);
    let same_location = operation.location == normalize_location(&address.location);
    if same_subscription && same_location {
        Ok(operation)
    } else {
        Err(not_found())
    }
}

fn operation_path(operation: &Operation, collection: &str) -> String {
    format!(
        "/subscriptions/{}/providers/Microsoft.ContainerService/locations/{}/{collection}/{}",
        operation.subscription, operation.location, operation.id
    )
}

fn status_name(status: OperationStatus) -> &'static str {
    match status {
        OperationStatus::InProgress => "InProgress",
        OperationStatus::Succeeded => "Succeeded",
    }
}

/// Describes an operation in the words of an error message: "create agent pool 'np1'".
fn describe(operation: &Operation) -> String {
    let verb = match operation.kind {
        OperationKind::Create => "create",
        OperationKind::Update => "update",
        OperationKind::Delete => "delete",
    };
    match &operation.target {
        OperationTarget::Cluster => format!("{verb} managed cluster"),
        OperationTarget::Pool(name) => format!("{verb} agent pool '{name}'"),
    }
}

/// Seconds until the operation's deadline, rounded up, between 1 and
/// [`MAX_RETRY_AFTER_SECS`].
fn retry_after_secs(operation: &Operation, now_ms: u64) -> u64 {
    operation
        .remaining_ms(now_ms)
        .div_ceil(1000)
        .clamp(1, MAX_RETRY_AFTER_SECS)
}

fn retry_after(operation: &Operation) -> HeaderValue {
    HeaderValue::from(retry_after_secs(operation, now_ms()))
}

fn url_header(url: &str) -> HeaderValue {
    // The URL is built from a valid Host header value, ASCII path segments that the store
    // validated, and a form-encoded query, so it is a valid header value.
    HeaderValue::from_str(url).expect("an operation URL is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(deadline_ms: u64) -> Operation {
        Operation {
            id: Uuid::nil(),
            subscription: "00000000-0000-0000-0000-000000000001".into(),
            location: "westeurope".into(),
            cluster_name: "c1".into(),
            target: OperationTarget::Cluster,
            kind: OperationKind::Create,
            started_ms: 0,
            deadline_ms,
            status: OperationStatus::InProgress,
            ended_ms: None,
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_bounded() {
        assert_eq!(retry_after_secs(&operation(1_500), 0), 2);
        assert_eq!(retry_after_secs(&operation(1_000), 0), 1);
        assert_eq!(retry_after_secs(&operation(1_000), 999), 1);
        assert_eq!(retry_after_secs(&operation(1_000), 5_000), 1);
        assert_eq!(
            retry_after_secs(&operation(3_600_000), 0),
            MAX_RETRY_AFTER_SECS
        );
    }

    #[tokio::test]
    async fn settler_removes_finished_deletes_durably() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("akstore.redb")).unwrap());
        let key = akstore_store::ClusterKey {
            subscription: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "rg".into(),
            name: "c1".into(),
        };
        let put = WriteRequest::PutCluster {
            key: key.clone(),
            precondition: akstore_store::Precondition::None,
            input: akstore_store::ClusterInput {
                location: "westeurope".into(),
                tags: None,
                properties: "{}".into(),
                extra: "{}".into(),
                pools: Vec::new(),
            },
        };
        let delete = WriteRequest::LongRunning {
            request: Box::new(WriteRequest::DeleteCluster {
                key,
                precondition: akstore_store::Precondition::None,
            }),
            duration_ms: 0,
        };
        let blocking_store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            blocking_store.write(put).unwrap();
            blocking_store.write(delete).unwrap();
        })
        .await
        .unwrap();
        assert_eq!(store.counts().unwrap().clusters, 1);

        let settler = spawn_settler(Arc::clone(&store));
        let started = Instant::now();
        while store.counts().unwrap().clusters != 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the settler did not remove the deleted cluster"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        settler.abort();
        assert_eq!(store.operations_to_settle(None).unwrap(), 0);
    }

    #[test]
    fn urls_are_absolute_and_carry_the_api_version() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let base = PollingBase::new(&headers, "2026-08-01");
        assert_eq!(
            base.status_url(&operation(0)),
            "http://127.0.0.1:8080/subscriptions/00000000-0000-0000-0000-000000000001/providers/\
             Microsoft.ContainerService/locations/westeurope/operations/\
             00000000-0000-0000-0000-000000000000?api-version=2026-08-01"
        );
        assert!(
            base.result_url(&operation(0))
                .contains("/operationresults/")
        );
    }
}
