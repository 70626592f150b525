//! Record encoding: one format-version byte, then the record in postcard.
//!
//! postcard's wire format is frozen at 1.0, so a record written today decodes with any later
//! postcard 1.x. The version byte lets a schema migration change a record's layout and still
//! tell old records from new ones.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Layout version of the records this build writes.
pub const RECORD_FORMAT_VERSION: u8 = 1;

/// Failure to decode a stored record.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error("record format version {found} is not {expected}, the version this build reads")]
    UnknownVersion { found: u8, expected: u8 },
    #[error("record body is malformed: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes `record` behind the format-version byte.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut bytes = vec![RECORD_FORMAT_VERSION];
    // Serializing into a growable Vec fails only for types postcard cannot represent (maps
    // with unknown length and the like); records are plain structs of strings and integers.
    let body = postcard::to_stdvec(record).expect("records are postcard-serializable");
    bytes.extend_from_slice(&body);
    bytes
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != RECORD_FORMAT_VERSION {
        return Err(CodecError::UnknownVersion {
            found: version,
            expected: RECORD_FORMAT_VERSION,
        });
    }
    Ok(postcard::from_bytes(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pool;
    use uuid::Uuid;

    fn pool() -> Pool {
        Pool {
            name: "nodepool1".into(),
            properties: r#"{"count":3,"vmSize":"Standard_D2s_v3","note":"zürich ✓"}"#.into(),
            etag: Uuid::new_v4(),
            revision: 7,
            created_ms: 1,
            changed_ms: 2,
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let original = pool();
        let decoded: Pool = decode(&encode(&original)).unwrap();
        assert_eq!(decoded, original);
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = encode(&pool());
        bytes[0] = RECORD_FORMAT_VERSION + 1;
        let error = decode::<Pool>(&bytes).unwrap_err();
        assert!(
            matches!(error, CodecError::UnknownVersion { .. }),
            "{error}"
        );
    }

    #[test]
    fn truncated_record_is_rejected() {
        let bytes = encode(&pool());
        assert!(decode::<Pool>(&bytes[..bytes.len() / 2]).is_err());
        assert!(matches!(decode::<Pool>(&[]), Err(CodecError::Empty)));
    }
}
