//! Bearer-token authentication of the ARM routes.
//!
//! With a token configured, every ARM request must carry `Authorization: Bearer <token>` with
//! exactly that token; the comparison takes the same time wherever the first difference is.
//! Without one, requests pass whatever they carry, because the Azure SDKs always send some
//! bearer token. The probes and `/metrics` are outside this layer. The token is never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, AuthFailure};

/// Longest token accepted, in bytes: room for any opaque token or JWT, and well inside the
/// request header limit so a client can send it.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The secret every ARM request must present. Its `Debug` output hides the value.
#[derive(Clone)]
pub struct BearerToken(Arc<[u8]>);

/// Why a token cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("the token is empty")]
    Empty,
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error(
        "the token contains a character other than visible ASCII (letters, digits and \
         punctuation), which an HTTP header cannot carry unchanged"
    )]
    InvalidCharacter,
}

impl BearerToken {
    /// Builds a token from the text of a token file; surrounding whitespace, such as the final
    /// newline an editor adds, is removed.
    pub fn parse(text: &str) -> Result<BearerToken, InvalidToken> {
        let token = text.trim();
        if token.is_empty() {
            return Err(InvalidToken::Empty);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(InvalidToken::TooLong);
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(InvalidToken::InvalidCharacter);
        }
        Ok(BearerToken(token.as_bytes().into()))
    }

    /// Compares in constant time for a given length. A length mismatch returns early, which
    /// reveals only the token's length.
    fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_ref().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("BearerToken(<redacted>)")
    }
}

/// Middleware: passes the request on when no token is configured or the request presents it,
/// and responds 401 otherwise.
pub async fn require_bearer(
    State(token): State<Option<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    match check(&token, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(failure) => ApiError::AuthenticationFailed(failure).into_response(),
    }
}

fn check(token: &BearerToken, headers: &HeaderMap) -> Result<(), AuthFailure> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthFailure::Missing)?
        .as_bytes();
    // RFC 9110: the scheme name is case-insensitive; one space separates it from the token.
    let (scheme, credentials) = value
        .iter()
        .position(|byte| *byte == b' ')
        .map(|space| (&value[..space], value[space + 1..].trim_ascii()))
        .ok_or(AuthFailure::NotBearer)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || credentials.is_empty() {
        return Err(AuthFailure::NotBearer);
    }
    if token.matches(credentials) {
        Ok(())
    } else {
        Err(AuthFailure::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn token_file_text_is_trimmed_and_checked() {
        let token = BearerToken::parse("  s3cr3t-token\n").unwrap();
        assert!(token.matches(b"s3cr3t-token"));
        assert_eq!(BearerToken::parse("\n").unwrap_err(), InvalidToken::Empty);
        assert_eq!(
            BearerToken::parse("two words").unwrap_err(),
            InvalidToken::InvalidCharacter
        );
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            BearerToken::parse(&long).unwrap_err(),
            InvalidToken::TooLong
        );
    }

    #[test]
    fn check_accepts_only_the_configured_token() {
        let token = BearerToken::parse("s3cr3t").unwrap();
        assert_eq!(check(&token, &headers(Some("Bearer s3cr3t"))), Ok(()));
        assert_eq!(check(&token, &headers(Some("bearer s3cr3t"))), Ok(()));
        assert_eq!(check(&token, &headers(None)), Err(AuthFailure::Missing));
        for wrong in ["Bearer s3cr3", "Bearer s3cr3tt", "Bearer S3CR3T"] {
            assert_eq!(
                check(&token, &headers(Some(wrong))),
                Err(AuthFailure::InvalidToken),
                "{wrong}"
            );
        }
        for malformed in ["Basic czNjcjN0", "Bearer", "Bearer ", "s3cr3t"] {
            assert_eq!(
                check(&token, &headers(Some(malformed))),
                Err(AuthFailure::NotBearer),
                "{malformed}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let token = BearerToken::parse("s3cr3t").unwrap();
        assert!(!format!("{token:?}").contains("s3cr3t"));
    }
}
