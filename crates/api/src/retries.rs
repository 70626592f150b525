//! The client request id of a write, and the fingerprint that tells its retry from a different
//! request with the same id.
//!
//! ARM clients send `x-ms-client-request-id` on every call and repeat it when they retry. The
//! store applies a write at most once per id; this module only reads the header and hashes
//! the request. Two requests are the same request when their method, path and body are equal
//! byte for byte; the query string and the condition headers are not compared, so a retry
//! whose `If-Match` names the eTag its own first attempt replaced still matches.

use akstore_store::ClientRequest;
use akstore_store::requests::MAX_REQUEST_ID_BYTES;
use axum::http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Name of the header that carries the client request id.
pub const CLIENT_REQUEST_ID: &str = "x-ms-client-request-id";

/// The client request id and fingerprint of a write, or `None` when it carries no id (or an
/// empty one). An id that is not visible ASCII or longer than [`MAX_REQUEST_ID_BYTES`] is
/// rejected.
pub fn client_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<ClientRequest>, ApiError> {
    let Some(value) = headers.get(CLIENT_REQUEST_ID) else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .map_err(|_| ApiError::InvalidClientRequestId("it is not visible ASCII text".into()))?
        .trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(ApiError::InvalidClientRequestId(format!(
            "it is {} bytes long, more than the limit of {MAX_REQUEST_ID_BYTES}",
            id.len()
        )));
    }

    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(body);
    Ok(Some(ClientRequest {
        id: id.to_owned(),
        fingerprint: hasher.finalize().into(),
    }))
}

/// The client request id as sent, for messages; `None` when absent or not text.
pub fn client_request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CLIENT_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .map(|id| id.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CLIENT_REQUEST_ID, HeaderValue::from_str(id).unwrap());
        headers
    }

    fn fingerprint(method: Method, path: &str, body: &[u8]) -> [u8; 32] {
        let uri: Uri = path.parse().unwrap();
        client_request(&method, &uri, &headers("id-1"), body)
            .unwrap()
            .unwrap()
            .fingerprint
    }

    #[test]
    fn fingerprint_differs_by_method_path_and_body() {
        let base = fingerprint(Method::PUT, "/a/b?api-version=1", b"{}");
        assert_eq!(base, fingerprint(Method::PUT, "/a/b?api-version=2", b"{}"));
        assert_ne!(
            base,
            fingerprint(Method::PATCH, "/a/b?api-version=1", b"{}")
        );
        assert_ne!(base, fingerprint(Method::PUT, "/a/c?api-version=1", b"{}"));
        assert_ne!(base, fingerprint(Method::PUT, "/a/b?api-version=1", b"{ }"));
    }

    #[test]
    fn missing_or_empty_id_disables_retry_records() {
        let uri: Uri = "/a".parse().unwrap();
        assert_eq!(
            client_request(&Method::PUT, &uri, &HeaderMap::new(), b"").unwrap(),
            None
        );
        assert_eq!(
            client_request(&Method::PUT, &uri, &headers("  "), b"").unwrap(),
            None
        );
    }

    #[test]
    fn overlong_id_is_rejected() {
        let uri: Uri = "/a".parse().unwrap();
        let id = "x".repeat(MAX_REQUEST_ID_BYTES + 1);
        let error = client_request(&Method::PUT, &uri, &headers(&id), b"").unwrap_err();
        assert!(
            matches!(error, ApiError::InvalidClientRequestId(_)),
            "{error:?}"
        );
    }
}
