//! Request bodies: a bounded read, and draining of a body the server will not use.
//!
//! When an HTTP/1.1 server responds before it has read the request body and then closes the
//! connection, the kernel resets the connection, and most clients then report a broken pipe
//! instead of the response. So a body over the limit, or one left unread because the request failed an
//! earlier check, is read and discarded up to [`MAX_DRAINED_BODY_BYTES`] before the answer.
//! Past that bound the server answers at once and the client may see a reset.

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;

use crate::error::ApiError;

/// Most bytes of a rejected or unused body that are read and thrown away so the client can
/// read the response. Large enough for any body sent by mistake (a JSON document a few times
/// over the limit), small enough that a client cannot keep the server reading for long.
pub const MAX_DRAINED_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Reads a whole body of at most `limit_bytes`. A longer body is 413, after the rest of it is
/// drained; `declared_bytes`, the Content-Length, lets a body too long to drain fail at once.
pub async fn read_limited(
    body: Body,
    declared_bytes: Option<u64>,
    limit_bytes: usize,
) -> Result<Bytes, ApiError> {
    let too_large = ApiError::BodyTooLarge { limit_bytes };
    let limit = limit_bytes as u64;
    if declared_bytes.is_some_and(|length| length > limit + MAX_DRAINED_BODY_BYTES) {
        return Err(too_large);
    }

    let mut body = body;
    let mut collected = Vec::new();
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| unreadable())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > limit + MAX_DRAINED_BODY_BYTES {
            return Err(too_large);
        }
        if total <= limit {
            collected.extend_from_slice(&data);
        }
    }
    if total > limit {
        return Err(too_large);
    }
    Ok(Bytes::from(collected))
}

/// Reads and discards a body that the response does not need, up to
/// [`MAX_DRAINED_BODY_BYTES`]. Read errors end the draining: the client is gone or broken.
pub async fn drain(body: Body) {
    let mut body = body;
    let mut total: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > MAX_DRAINED_BODY_BYTES {
                return;
            }
        }
    }
}

fn unreadable() -> ApiError {
    ApiError::InvalidContent("the body could not be read to its end".into())
}
