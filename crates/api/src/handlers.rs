//! Request handling for the ARM routes: parse, validate, call the store, shape the answer.
//!
//! Checks run in a fixed order, so a request with several faults gets the same error every
//! time: the path, the api-version, the condition headers, the body, then (in the store's
//! transaction) the parent cluster, the precondition table and the write.

use std::sync::Arc;

use akstore_store::{
    Applied, ClientRequest, ClusterKey, ClusterScope, ClusterView, EntityTag, PoolKey, PoolLookup,
    PoolView, ReadError, Store, WriteError, WriteOutcome, WriteRequest,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::conditions::{self, ReadConditions};
use crate::error::ApiError;
use crate::operations::{self, PollingBase};
use crate::retries;
use crate::route::{self, Route};
use crate::{AppState, body, json, paging};

/// Handles every request under `/subscriptions/`.
pub async fn arm_request(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut body = Some(body);
    let result = handle(&state, &method, &uri, &headers, &mut body).await;
    if let Some(unread) = body {
        body::drain(unread).await;
    }
    match result {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Response, ApiError> {
    let route = route::parse(uri.path())?;
    let query = Query::parse(uri.query())?;
    let base = PollingBase::new(headers, &query.api_version);

    match (route, method.clone()) {
        (Route::Cluster(key), Method::GET | Method::HEAD) => get_cluster(state, key, headers).await,
        (Route::Cluster(key), Method::PUT) => {
            let precondition = conditions::parse_write(headers)?;
            let body = read_body(state, headers, body).await?;
            let input = json::cluster_input(json::parse_object(&body)?)?;
            let once = retries::client_request(method, uri, headers, &body)?;
            let request = WriteRequest::PutCluster {
                key,
                precondition,
                input,
            };
            cluster_write(state, request, once, headers, &base).await
        }
        (Route::Cluster(key), Method::PATCH) => {
            let precondition = conditions::parse_write(headers)?;
            let body = read_body(state, headers, body).await?;
            let patch = json::validate_cluster_patch(json::parse_object(&body)?)?;
            let once = retries::client_request(method, uri, headers, &body)?;
            let request = WriteRequest::PatchCluster {
                key,
                precondition,
                patch: Box::new(move |view| json::merge_cluster_patch(view, patch)),
            };
            cluster_write(state, request, once, headers, &base).await
        }
        (Route::Cluster(key), Method::DELETE) => {
            let precondition = conditions::parse_write(headers)?;
            let once = retries::client_request(method, uri, headers, &[])?;
            let request = WriteRequest::DeleteCluster { key, precondition };
            cluster_write(state, request, once, headers, &base).await
        }
        (Route::Pool(key), Method::GET | Method::HEAD) => get_pool(state, key, headers).await,
        (Route::Pool(key), Method::PUT) => {
            let precondition = conditions::parse_write(headers)?;
            let body = read_body(state, headers, body).await?;
            let input = json::pool_input(&key.name, json::parse_object(&body)?)?;
            // A name in another casing addresses an existing pool, but a new pool needs the
            // lower-case form.
            let may_create = route::validate_pool_name(&key.name).is_ok();
            let once = retries::client_request(method, uri, headers, &body)?;
            let request = WriteRequest::PutPool {
                key,
                precondition,
                input,
                may_create,
            };
            pool_write(state, request, once, headers, &base).await
        }
        (Route::Pool(key), Method::PATCH) => {
            let precondition = conditions::parse_write(headers)?;
            let body = read_body(state, headers, body).await?;
            let patch = json::validate_pool_patch(json::parse_object(&body)?)?;
            let once = retries::client_request(method, uri, headers, &body)?;
            let request = WriteRequest::PatchPool {
                key,
                precondition,
                patch: Box::new(move |view| Ok(json::merge_pool_patch(view, &patch))),
            };
            pool_write(state, request, once, headers, &base).await
        }
        (Route::Pool(key), Method::DELETE) => {
            let precondition = conditions::parse_write(headers)?;
            let once = retries::client_request(method, uri, headers, &[])?;
            let request = WriteRequest::DeletePool { key, precondition };
            pool_write(state, request, once, headers, &base).await
        }
        (Route::ClusterList(scope), Method::GET | Method::HEAD) => {
            list_clusters(state, scope, &query, uri, headers).await
        }
        (Route::PoolList(key), Method::GET | Method::HEAD) => {
            list_pools(state, key, &query, uri, headers).await
        }
        (Route::OperationStatus(address), Method::GET | Method::HEAD) => {
            operations::status(state, address).await
        }
        (Route::OperationResult(address), Method::GET | Method::HEAD) => {
            operations::result(state, address, &base).await
        }
        (route, method) => Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            route: route.template(),
            allow: route.allowed_methods(),
        }),
    }
}

async fn get_cluster(
    state: &AppState,
    key: ClusterKey,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let conditions = conditions::parse_read(headers)?;
    let name = key.name.clone();
    let view = read(state, move |store| store.get_cluster(&key))
        .await?
        .ok_or(ApiError::ResourceNotFound {
            kind: "managed cluster",
            name,
        })?;
    conditional_read(
        &conditions,
        headers,
        &view.cluster.etag,
        json::cluster_resource(&view),
    )
}

async fn get_pool(
    state: &AppState,
    key: PoolKey,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let conditions = conditions::parse_read(headers)?;
    let (cluster, name) = (key.cluster.name.clone(), key.name.clone());
    match read(state, move |store| store.get_pool(&key)).await? {
        PoolLookup::Found(view) => conditional_read(
            &conditions,
            headers,
            &view.pool.etag,
            json::pool_resource(&view),
        ),
        PoolLookup::PoolMissing => Err(ApiError::ResourceNotFound {
            kind: "agent pool",
            name,
        }),
        PoolLookup::ClusterMissing => Err(ApiError::ParentNotFound { cluster }),
    }
}

/// Answers a GET of an existing resource: 412 when `If-Match` fails, 304 when
/// `If-None-Match` matches, else 200 with the resource.
fn conditional_read(
    conditions: &ReadConditions,
    headers: &HeaderMap,
    etag: &Uuid,
    resource: Value,
) -> Result<Response, ApiError> {
    let any_matches = |tags: &Option<Vec<EntityTag>>| {
        tags.as_ref()
            .is_some_and(|tags| tags.iter().any(|tag| tag.matches(etag)))
    };
    let if_match_set = conditions.if_match_any || conditions.if_match.is_some();
    if if_match_set && !conditions.if_match_any && !any_matches(&conditions.if_match) {
        let (header, value) = conditions::failed_condition(headers);
        return Err(ApiError::PreconditionFailed { header, value });
    }
    if conditions.if_none_match_any || any_matches(&conditions.if_none_match) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        insert_etag(&mut response, etag);
        return Ok(response);
    }
    Ok(resource_response(StatusCode::OK, etag, resource))
}

async fn cluster_write(
    state: &AppState,
    request: WriteRequest,
    once: Option<ClientRequest>,
    headers: &HeaderMap,
    base: &PollingBase,
) -> Result<Response, ApiError> {
    let name = match &request {
        WriteRequest::PutCluster { key, .. }
        | WriteRequest::PatchCluster { key, .. }
        | WriteRequest::DeleteCluster { key, .. } => key.name.clone(),
        _ => unreachable!("cluster_write takes cluster requests only"),
    };
    let Applied::Cluster(outcome) = write(state, request, once).await? else {
        unreachable!("a cluster request yields a cluster outcome");
    };
    let respond = |status, view: ClusterView| {
        let mut response =
            resource_response(status, &view.cluster.etag, json::cluster_resource(&view));
        if let Some(operation) = &view.operation {
            operations::insert_polling_headers(&mut response, base, operation);
        }
        response
    };
    outcome_response(
        outcome,
        state.config.profile.deleted_status(),
        headers,
        base,
        respond,
        || ApiError::ResourceNotFound {
            kind: "managed cluster",
            name: name.clone(),
        },
    )
}

async fn pool_write(
    state: &AppState,
    request: WriteRequest,
    once: Option<ClientRequest>,
    headers: &HeaderMap,
    base: &PollingBase,
) -> Result<Response, ApiError> {
    let (key, is_put) = match &request {
        WriteRequest::PutPool { key, .. } => (key.clone(), true),
        WriteRequest::PatchPool { key, .. } | WriteRequest::DeletePool { key, .. } => {
            (key.clone(), false)
        }
        _ => unreachable!("pool_write takes pool requests only"),
    };
    let Applied::Pool(outcome) = write(state, request, once).await? else {
        unreachable!("a pool request yields a pool outcome");
    };
    match outcome {
        WriteOutcome::ParentNotFound => {
            return Err(ApiError::ParentNotFound {
                cluster: key.cluster.name,
            });
        }
        // Only a PUT that may not create the pool reports a missing pool as NotFound.
        WriteOutcome::NotFound if is_put => {
            return Err(ApiError::InvalidResourceName {
                kind: "agent pool",
                name: key.name,
            });
        }
        _ => {}
    }
    let respond = |status, view: PoolView| {
        let mut response = resource_response(status, &view.pool.etag, json::pool_resource(&view));
        if let Some(operation) = &view.operation {
            operations::insert_polling_headers(&mut response, base, operation);
        }
        response
    };
    outcome_response(
        outcome,
        state.config.profile.deleted_status(),
        headers,
        base,
        respond,
        || ApiError::ResourceNotFound {
            kind: "agent pool",
            name: key.name.clone(),
        },
    )
}

/// Maps a write outcome to its status, the precondition table's last column.
fn outcome_response<T>(
    outcome: WriteOutcome<T>,
    deleted: StatusCode,
    headers: &HeaderMap,
    base: &PollingBase,
    respond: impl Fn(StatusCode, T) -> Response,
    not_found: impl Fn() -> ApiError,
) -> Result<Response, ApiError> {
    match outcome {
        WriteOutcome::Created(view) => Ok(respond(StatusCode::CREATED, view)),
        WriteOutcome::Updated(view) => Ok(respond(StatusCode::OK, view)),
        WriteOutcome::Deleted => Ok(deleted.into_response()),
        WriteOutcome::DeleteAccepted(operation) => {
            Ok(operations::accepted_delete(base, &operation))
        }
        WriteOutcome::Absent => Ok(StatusCode::NO_CONTENT.into_response()),
        WriteOutcome::Conflict(running) => Err(operations::conflict(&running)),
        WriteOutcome::NotFound => Err(not_found()),
        WriteOutcome::ParentNotFound => Err(not_found()),
        WriteOutcome::PreconditionFailed => {
            let (header, value) = conditions::failed_condition(headers);
            Err(ApiError::PreconditionFailed { header, value })
        }
        WriteOutcome::Invalid(reason) => Err(ApiError::InvalidContent(reason)),
        WriteOutcome::RequestIdReused => Err(ApiError::ClientRequestIdReused(
            retries::client_request_id(headers).unwrap_or_default(),
        )),
    }
}

async fn list_clusters(
    state: &AppState,
    scope: ClusterScope,
    query: &Query,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let limit = query.page_size(state.config.page_size);
    let after = query.continuation()?;
    let page = read(state, move |store| {
        store.list_clusters(&scope, after.as_deref(), limit)
    })
    .await?;
    let items = page.items.iter().map(json::cluster_resource).collect();
    Ok(list_response(items, page.continuation, query, uri, headers))
}

async fn list_pools(
    state: &AppState,
    key: ClusterKey,
    query: &Query,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let limit = query.page_size(state.config.page_size);
    let after = query.continuation()?;
    let cluster = key.name.clone();
    let page = read(state, move |store| {
        store.list_pools(&key, after.as_deref(), limit)
    })
    .await?
    .ok_or(ApiError::ParentNotFound { cluster })?;
    let items = page.items.iter().map(json::pool_resource).collect();
    Ok(list_response(items, page.continuation, query, uri, headers))
}

/// A list page, with an absolute `nextLink` that continues after its last item.
fn list_response(
    items: Vec<Value>,
    continuation: Option<String>,
    query: &Query,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let next_link = continuation.map(|token| {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        serializer.append_pair("api-version", &query.api_version);
        serializer.append_pair("$skipToken", &paging::encode_skip_token(&token));
        if let Some(top) = query.top {
            serializer.append_pair("$top", &top.to_string());
        }
        format!(
            "{}{}?{}",
            operations::base_url(headers),
            uri.path(),
            serializer.finish()
        )
    });
    axum::Json(serde_json::json!({ "value": items, "nextLink": next_link })).into_response()
}

/// Sends a write to the store's writer, as a long-running operation when the configuration
/// emulates them, and waits for its durable outcome.
///
/// With a client request id the write is applied at most once per id: a retry of an applied
/// write gets its recorded outcome.
async fn write(
    state: &AppState,
    request: WriteRequest,
    once: Option<ClientRequest>,
) -> Result<Applied, ApiError> {
    let request = match state.config.operation_duration_ms() {
        Some(duration_ms) => WriteRequest::LongRunning {
            request: Box::new(request),
            duration_ms,
        },
        None => request,
    };
    let (sender, receiver) = oneshot::channel();
    state.store.submit_once(
        request,
        once,
        Box::new(move |result| {
            // The handler may have been cancelled (client gone); the write stands regardless.
            let _ = sender.send(result);
        }),
    );
    match receiver.await {
        Ok(Ok(applied)) => Ok(applied),
        Ok(Err(error @ (WriteError::NotApplied(_) | WriteError::Closed))) => {
            tracing::error!(%error, "write failed before its commit");
            Err(ApiError::NotApplied { write: true })
        }
        Ok(Err(error @ WriteError::OutcomeUnknown(_))) => {
            tracing::error!(%error, "write commit failed");
            Err(ApiError::OutcomeUnknown)
        }
        Err(_) => {
            tracing::error!("the writer dropped a write without answering");
            Err(ApiError::OutcomeUnknown)
        }
    }
}

/// Runs a read on a blocking thread, off the async executor.
pub(crate) async fn read<T, F>(state: &AppState, read: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, ReadError> + Send + 'static,
{
    let store: Arc<Store> = Arc::clone(&state.store);
    let limit = state.config.request_timeout;
    // On timeout the read finishes on its blocking thread and its result is dropped; a read
    // changes nothing, so the client can retry.
    let Ok(result) =
        tokio::time::timeout(limit, tokio::task::spawn_blocking(move || read(&store))).await
    else {
        tracing::warn!(timeout = ?limit, "read timed out");
        return Err(ApiError::RequestTimeout { limit });
    };
    match result {
        Ok(Ok(value)) => Ok(value),
        // Re-encoding the key gives back the client's token, which decoded to it.
        Ok(Err(ReadError::InvalidContinuation { token })) => Err(ApiError::InvalidSkipToken(
            paging::encode_skip_token(&token),
        )),
        Ok(Err(error)) => {
            tracing::error!(%error, "read failed");
            Err(ApiError::NotApplied { write: false })
        }
        Err(join_error) => {
            tracing::error!(%join_error, "read task failed");
            Err(ApiError::NotApplied { write: false })
        }
    }
}

/// Takes the request body out of `body` and reads it within the configured limit.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let body = body.take().unwrap_or_default();
    let limit = state.config.request_timeout;
    let read = body::read_limited(body, declared, state.config.max_body_bytes);
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(ApiError::RequestTimeout { limit }))
}

fn resource_response(status: StatusCode, etag: &Uuid, resource: Value) -> Response {
    let mut response = (status, axum::Json(resource)).into_response();
    insert_etag(&mut response, etag);
    response
}

fn insert_etag(response: &mut Response, etag: &Uuid) {
    let value = HeaderValue::from_str(&format!("\"{etag}\""))
        .expect("a quoted hyphenated UUID is a valid header value");
    response.headers_mut().insert(header::ETAG, value);
}

/// The query parameters the ARM routes read.
struct Query {
    api_version: String,
    skip_token: Option<String>,
    top: Option<usize>,
}

impl Query {
    /// Parses the query string; `api-version` is required and must be `YYYY-MM-DD` with an
    /// optional `-suffix`.
    fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let mut api_version = None;
        let mut skip_token = None;
        let mut top = None;
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if name.eq_ignore_ascii_case("api-version") {
                api_version = Some(value.into_owned());
            } else if name.eq_ignore_ascii_case("$skipToken") {
                skip_token = Some(value.into_owned());
            } else if name.eq_ignore_ascii_case("$top") {
                top = Some(value.into_owned());
            }
        }
        let api_version = match api_version {
            None => return Err(ApiError::MissingApiVersion),
            Some(version) if version.trim().is_empty() => return Err(ApiError::MissingApiVersion),
            Some(version) if !is_valid_api_version(&version) => {
                return Err(ApiError::InvalidApiVersion(version));
            }
            Some(version) => version,
        };
        // `$top` is checked after the api-version, so a request without one always gets
        // the same error.
        let top = match top {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(top) if top > 0 => Some(top),
                _ => return Err(ApiError::InvalidTop(text)),
            },
        };
        Ok(Query {
            api_version,
            skip_token,
            top,
        })
    }

    /// The storage key that the requested page continues after, from `$skipToken`.
    fn continuation(&self) -> Result<Option<String>, ApiError> {
        self.skip_token
            .as_deref()
            .map(paging::decode_skip_token)
            .transpose()
    }

    fn page_size(&self, max: usize) -> usize {
        self.top.map_or(max, |top| top.min(max))
    }
}

/// `YYYY-MM-DD` with an optional `-suffix` of letters and digits, such as `-preview`.
fn is_valid_api_version(version: &str) -> bool {
    let (date, suffix) = match version.get(10..) {
        Some(rest) => (&version[..10], rest),
        None => return false,
    };
    let date_ok = date.bytes().enumerate().all(|(index, byte)| match index {
        4 | 7 => byte == b'-',
        _ => byte.is_ascii_digit(),
    });
    let suffix_ok = suffix.is_empty()
        || suffix
            .strip_prefix('-')
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()));
    date_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_format() {
        for valid in ["2026-08-01", "2025-10-02-preview", "2024-09-01-alpha2"] {
            assert!(is_valid_api_version(valid), "{valid}");
        }
        for invalid in [
            "",
            "2026-8-01",
            "2026-08-01-",
            "2026-08-01preview",
            "latest",
            "2026/08/01",
        ] {
            assert!(!is_valid_api_version(invalid), "{invalid}");
        }
    }
}
