//! The one error type of the API and its one mapping to a status, an ARM error code and a
//! message.
//!
//! Client mistakes carry a message that names the offending value and the fix. Server faults
//! carry no internal detail: the detail goes to the log, and the body says only whether the
//! write may have been applied.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request failed authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header of another scheme than Bearer, or without a token.
    NotBearer,
    /// A bearer token that is not the server's.
    InvalidToken,
}

/// Every way a request can fail.
#[derive(Debug)]
pub enum ApiError {
    MissingApiVersion,
    InvalidApiVersion(String),
    InvalidSubscriptionId(String),
    InvalidResourceGroupName(String),
    InvalidResourceName {
        kind: &'static str,
        name: String,
    },
    /// The path names no resource type akstore serves.
    UnknownRoute(String),
    MethodNotAllowed {
        method: String,
        route: &'static str,
        /// The route's methods, sent as the `Allow` header.
        allow: &'static str,
    },
    InvalidIfMatch(String),
    InvalidIfNoneMatch(String),
    ConflictingConditions,
    InvalidSkipToken(String),
    InvalidTop(String),
    InvalidContent(String),
    LocationRequired,
    InvalidAgentPoolProfile(String),
    DuplicateAgentPoolName(String),
    BodyTooLarge {
        limit_bytes: usize,
    },
    /// The request line and headers together exceed the limit.
    HeadersTooLarge {
        limit_bytes: usize,
    },
    /// The body did not arrive, or the read did not finish, within the request timeout.
    /// Never used once a write has been handed to the store.
    RequestTimeout {
        limit: Duration,
    },
    AuthenticationFailed(AuthFailure),
    /// Every connection slot is taken.
    TooManyConnections {
        limit: usize,
    },
    /// The database is still opening or recovering.
    Starting,
    ResourceNotFound {
        kind: &'static str,
        name: String,
    },
    ParentNotFound {
        cluster: String,
    },
    PreconditionFailed {
        header: &'static str,
        value: String,
    },
    /// A long-running operation runs on the cluster the write targets.
    OperationNotAllowed {
        /// Wording of the running operation, such as "delete managed cluster".
        running: String,
        cluster: String,
        operation_id: String,
        retry_after_secs: u64,
    },
    OperationNotFound(String),
    InvalidClientRequestId(String),
    /// A write reused the client request id of a different applied write.
    ClientRequestIdReused(String),
    /// A storage failure where nothing was written.
    NotApplied {
        write: bool,
    },
    /// A commit failure: the write may or may not be on disk.
    OutcomeUnknown,
}

impl ApiError {
    /// Status, ARM error code and message.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        use ApiError::*;
        match self {
            MissingApiVersion => (
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests."
                    .into(),
            ),
            InvalidApiVersion(value) => (
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                format!(
                    "The api-version '{value}' is invalid. The supported format is 'YYYY-MM-DD' \
                     with an optional suffix, for example '2026-08-01' or '2025-10-02-preview'."
                ),
            ),
            InvalidSubscriptionId(value) => (
                StatusCode::BAD_REQUEST,
                "InvalidSubscriptionId",
                format!("The subscription '{value}' is invalid: it must be a GUID."),
            ),
            InvalidResourceGroupName(value) => (
                StatusCode::BAD_REQUEST,
                "InvalidResourceGroupName",
                format!(
                    "The resource group name '{value}' is invalid: it must be 1 to 90 letters, \
                     digits, '-', '_', '.', '(' or ')', and must not end in '.'."
                ),
            ),
            InvalidResourceName { kind, name } => (
                StatusCode::BAD_REQUEST,
                "InvalidResourceName",
                format!("The {kind} name '{name}' is invalid: {}.", name_rule(kind)),
            ),
            UnknownRoute(path) => (
                StatusCode::NOT_FOUND,
                "InvalidResourceType",
                format!(
                    "The path '{path}' names no resource type that akstore serves; it serves \
                     Microsoft.ContainerService/managedClusters and their agentPools."
                ),
            ),
            MethodNotAllowed {
                method,
                route,
                allow,
            } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("The method {method} is not supported on {route}; use one of {allow}."),
            ),
            InvalidIfMatch(value) => (
                StatusCode::BAD_REQUEST,
                "InvalidIfMatchHeader",
                format!(
                    "The If-Match header value '{value}' is invalid: send '*' or a \
                     comma-separated list of entity-tags, each quoted (\"...\") or bare."
                ),
            ),
            InvalidIfNoneMatch(value) => (
                StatusCode::BAD_REQUEST,
                "InvalidIfNoneMatchHeader",
                format!(
                    "The If-None-Match header value '{value}' is invalid: on a write it can \
                     only be empty or '*'."
                ),
            ),
            ConflictingConditions => (
                StatusCode::BAD_REQUEST,
                "ConflictingConditionHeaders",
                "The If-Match and If-None-Match headers cannot be used together; send one of \
                 them."
                    .into(),
            ),
            InvalidSkipToken(value) => (
                StatusCode::BAD_REQUEST,
                "InvalidSkipToken",
                format!(
                    "The $skipToken '{value}' does not continue this list; follow the nextLink \
                     of the previous page unchanged."
                ),
            ),
            InvalidTop(value) => (
                StatusCode::BAD_REQUEST,
                "InvalidTopParameter",
                format!("The $top value '{value}' is invalid: it must be a positive integer."),
            ),
            InvalidContent(reason) => (
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                format!("The request content is invalid: {reason}."),
            ),
            LocationRequired => (
                StatusCode::BAD_REQUEST,
                "LocationRequired",
                "The location property is required for this definition: send \"location\" as \
                 a non-empty string."
                    .into(),
            ),
            InvalidAgentPoolProfile(reason) => (
                StatusCode::BAD_REQUEST,
                "InvalidAgentPoolProfile",
                format!("An entry of properties.agentPoolProfiles is invalid: {reason}."),
            ),
            DuplicateAgentPoolName(name) => (
                StatusCode::BAD_REQUEST,
                "DuplicateAgentPoolName",
                format!(
                    "The agent pool name '{name}' appears more than once in \
                     properties.agentPoolProfiles; pool names are compared case-insensitively."
                ),
            ),
            BodyTooLarge { limit_bytes } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                format!("The request body exceeds the limit of {limit_bytes} bytes."),
            ),
            HeadersTooLarge { limit_bytes } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "RequestHeaderFieldsTooLarge",
                format!(
                    "The request line and headers exceed the limit of {limit_bytes} bytes; send \
                     fewer or shorter headers."
                ),
            ),
            RequestTimeout { limit } => (
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!(
                    "The request did not complete within the request timeout of {}, so nothing \
                     was changed; retry the request.",
                    humantime::format_duration(*limit)
                ),
            ),
            AuthenticationFailed(failure) => (
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                match failure {
                    AuthFailure::Missing => "Authentication failed: the Authorization header is \
                        missing. Send 'Authorization: Bearer <token>' with the token of the \
                        server's token file."
                        .into(),
                    AuthFailure::NotBearer => "Authentication failed: the Authorization header \
                        must have the form 'Bearer <token>'."
                        .into(),
                    AuthFailure::InvalidToken => "Authentication failed: the bearer token is not \
                        valid for this server."
                        .into(),
                },
            ),
            TooManyConnections { limit } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "TooManyConnections",
                format!(
                    "The server already has its maximum of {limit} open connections; retry \
                     after one closes."
                ),
            ),
            Starting => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceStarting",
                "The server is still opening its database; retry shortly.".into(),
            ),
            ResourceNotFound { kind, name } => (
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("The {kind} '{name}' was not found."),
            ),
            ParentNotFound { cluster } => (
                StatusCode::NOT_FOUND,
                "ParentResourceNotFound",
                format!("The parent managed cluster '{cluster}' was not found."),
            ),
            PreconditionFailed { header, value } => (
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                format!(
                    "The {header} condition '{value}' is not met by the current state of the \
                     resource. GET the resource to read its current eTag, then retry with it."
                ),
            ),
            OperationNotAllowed {
                running,
                cluster,
                operation_id,
                retry_after_secs,
            } => (
                StatusCode::CONFLICT,
                "OperationNotAllowed",
                format!(
                    "Operation is not allowed because another operation is in progress: the \
                     {running} operation {operation_id} on the managed cluster '{cluster}'. It \
                     finishes in about {retry_after_secs} s; retry after it has finished."
                ),
            ),
            OperationNotFound(id) => (
                StatusCode::NOT_FOUND,
                "OperationNotFound",
                format!(
                    "The operation '{id}' was not found in this subscription and location. \
                     Operation records are kept for a limited time after they finish."
                ),
            ),
            InvalidClientRequestId(reason) => (
                StatusCode::BAD_REQUEST,
                "InvalidClientRequestId",
                format!(
                    "The x-ms-client-request-id header is invalid: {reason}. Send a GUID, as \
                     the Azure SDKs do, or omit the header."
                ),
            ),
            ClientRequestIdReused(id) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "ClientRequestIdReused",
                format!(
                    "The x-ms-client-request-id '{id}' was already used by a different request \
                     (another method, path or body) within the last {}. A retry must repeat \
                     its request exactly; a new request needs a new id.",
                    humantime::format_duration(akstore_store::requests::REQUEST_RETENTION)
                ),
            ),
            NotApplied { write: true } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "StorageUnavailable",
                "The store failed before the write was committed; the write was not applied \
                 and is safe to retry."
                    .into(),
            ),
            NotApplied { write: false } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "StorageUnavailable",
                "The store failed to read the resource; nothing was changed.".into(),
            ),
            OutcomeUnknown => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "CommitOutcomeUnknown",
                "The store failed while committing the write, so the write may or may not have \
                 been applied. GET the resource to learn its state before retrying."
                    .into(),
            ),
        }
    }
}

fn name_rule(kind: &str) -> &'static str {
    if kind == "agent pool" {
        "it must start with a lower-case letter and have 1 to 12 lower-case letters and digits"
    } else {
        "it must be 1 to 63 letters, digits, '-' and '_', starting and ending with a letter or digit"
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = json!({ "error": { "code": code, "message": message } });
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        let retry_after = match self {
            ApiError::OperationNotAllowed {
                retry_after_secs, ..
            } => Some(HeaderValue::from(retry_after_secs)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(HeaderValue::from_static("1")),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        if let ApiError::AuthenticationFailed(failure) = self {
            // RFC 6750, section 3: no error code when the request carried no credentials.
            let challenge = match failure {
                AuthFailure::Missing | AuthFailure::NotBearer => r#"Bearer realm="akstore""#,
                AuthFailure::InvalidToken => r#"Bearer realm="akstore", error="invalid_token""#,
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
