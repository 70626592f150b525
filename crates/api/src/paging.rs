//! List pages: the opaque `$skipToken` and the absolute `nextLink` that carries it.
//!
//! A skip token is the storage key of the last item of the previous page followed by the
//! key's CRC-32, base64url-encoded without padding. The checksum makes any edit of the token
//! (a changed, dropped or added character) a 400 instead of a page that silently starts at
//! another key. It is a checksum, not a signature: it guards against mistakes, not against a
//! client that forges a token on purpose, which could only list resources it may list anyway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;

/// Bytes of the checksum at the end of a decoded token.
const CHECKSUM_BYTES: usize = 4;

/// Encodes the storage key of a page's last item as a `$skipToken`.
pub fn encode_skip_token(last_key: &str) -> String {
    let mut bytes = last_key.as_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(last_key.as_bytes()).to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a `$skipToken` into the storage key a page continues after. The store still checks
/// that the key belongs to the list being read.
pub fn decode_skip_token(token: &str) -> Result<String, ApiError> {
    let invalid = || ApiError::InvalidSkipToken(token.to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    if bytes.len() <= CHECKSUM_BYTES {
        return Err(invalid());
    }
    let (key, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    if crc32fast::hash(key).to_be_bytes() != checksum {
        return Err(invalid());
    }
    String::from_utf8(key.to_vec()).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00000000-0000-0000-0000-0000000000aa/rg1/cluster-07";

    #[test]
    fn token_round_trips() {
        let token = encode_skip_token(KEY);
        assert!(!token.contains(['/', '+', '=']), "{token}");
        assert_eq!(decode_skip_token(&token).unwrap(), KEY);
    }

    #[test]
    fn any_changed_character_is_rejected() {
        let token = encode_skip_token(KEY);
        for index in 0..token.len() {
            let mut changed = token.clone().into_bytes();
            changed[index] = if changed[index] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(changed).unwrap();
            assert!(decode_skip_token(&changed).is_err(), "{changed}");
        }
    }

    #[test]
    fn truncated_and_foreign_tokens_are_rejected() {
        let token = encode_skip_token(KEY);
        for bad in [
            "",
            "not a token",
            &token[..token.len() - 1],
            &format!("{token}A"),
            KEY,
        ] {
            assert!(decode_skip_token(bad).is_err(), "{bad}");
        }
    }
}
