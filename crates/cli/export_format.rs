//! The export file format that `akstore export` writes and `akstore import` reads: JSON Lines,
//! one object per line, each with one key that names the kind of line.
//!
//! 1. `{"header": {...}}`, the first line: the format name and version, the schema and binary
//!    versions that wrote it, the global revision, and how many clusters and pools follow.
//! 2. `{"cluster": {...}}`, one line per cluster, in storage-key order.
//! 3. `{"pool": {...}}`, one line per agent pool, in storage-key order, after every cluster.
//! 4. `{"entry": {...}}`, one line per entry of the `requests` and `operations` tables, with
//!    its table, key and stored bytes in base64, which import loads unchanged.
//!
//! Each record carries its storage key, eTag, revision and timestamps (RFC 3339, millisecond
//! precision, as stored). Property objects are embedded exactly as stored, so exporting an
//! imported file reproduces it byte for byte except for `exportedAt`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use akstore_store::{Cluster, OpaqueEntry, Pool};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Value of the header's `format` field.
pub const FORMAT_NAME: &str = "akstore-export";
/// Version of this layout; a reader rejects any other.
pub const FORMAT_VERSION: u32 = 1;

/// One line of an export file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Line {
    Header(Header),
    Cluster(ClusterRecord),
    Pool(PoolRecord),
    Entry(EntryRecord),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    pub schema_version: u64,
    pub akstore_version: String,
    pub exported_at: String,
    /// The global revision: the revision of the last applied write.
    pub revision: u64,
    pub clusters: u64,
    pub pools: u64,
    /// Entries of the tables carried as stored bytes (`requests`, `operations`).
    pub entries: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterRecord {
    pub key: String,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub tags: Option<Box<RawValue>>,
    pub properties: Box<RawValue>,
    /// The client's other top-level fields (`sku`, `identity`, ...).
    pub extra: Box<RawValue>,
    #[serde(rename = "eTag")]
    pub etag: Uuid,
    pub revision: u64,
    pub created_at: String,
    pub last_modified_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolRecord {
    pub key: String,
    pub name: String,
    pub properties: Box<RawValue>,
    #[serde(rename = "eTag")]
    pub etag: Uuid,
    pub revision: u64,
    pub created_at: String,
    pub last_modified_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryRecord {
    pub table: String,
    pub key: String,
    /// The stored bytes, base64-encoded (RFC 4648, with padding).
    pub value: String,
}

impl EntryRecord {
    pub fn from_stored(entry: OpaqueEntry) -> EntryRecord {
        EntryRecord {
            table: entry.table,
            key: entry.key,
            value: BASE64.encode(entry.value),
        }
    }

    /// Decodes the entry as the store keeps it.
    pub fn into_stored(self) -> Result<OpaqueEntry, String> {
        let value = BASE64.decode(&self.value).map_err(|error| {
            format!(
                "the value of the entry '{}' is not valid base64 ({error})",
                self.key
            )
        })?;
        Ok(OpaqueEntry {
            table: self.table,
            key: self.key,
            value,
        })
    }
}

impl ClusterRecord {
    /// Builds the line of a stored cluster; fails when stored JSON text is not an object.
    pub fn from_stored(key: String, cluster: Cluster) -> Result<ClusterRecord, String> {
        Ok(ClusterRecord {
            tags: cluster
                .tags
                .map(|tags| object("tags", &key, tags))
                .transpose()?,
            properties: object("properties", &key, cluster.properties)?,
            extra: object("extra", &key, cluster.extra)?,
            key,
            subscription: cluster.subscription,
            resource_group: cluster.resource_group,
            name: cluster.name,
            location: cluster.location,
            etag: cluster.etag,
            revision: cluster.revision,
            created_at: format_time(cluster.created_ms),
            last_modified_at: format_time(cluster.changed_ms),
        })
    }

    /// The storage key and the cluster as the store keeps it.
    pub fn into_stored(self) -> Result<(String, Cluster), String> {
        let cluster = Cluster {
            subscription: self.subscription,
            resource_group: self.resource_group,
            name: self.name,
            location: self.location,
            tags: self
                .tags
                .map(|tags| object_text("tags", &tags))
                .transpose()?,
            properties: object_text("properties", &self.properties)?,
            extra: object_text("extra", &self.extra)?,
            etag: self.etag,
            revision: self.revision,
            created_ms: parse_time("createdAt", &self.created_at)?,
            changed_ms: parse_time("lastModifiedAt", &self.last_modified_at)?,
        };
        Ok((self.key, cluster))
    }
}

impl PoolRecord {
    /// Builds the line of a stored pool; fails when its properties are not a JSON object.
    pub fn from_stored(key: String, pool: Pool) -> Result<PoolRecord, String> {
        Ok(PoolRecord {
            properties: object("properties", &key, pool.properties)?,
            key,
            name: pool.name,
            etag: pool.etag,
            revision: pool.revision,
            created_at: format_time(pool.created_ms),
            last_modified_at: format_time(pool.changed_ms),
        })
    }

    /// The storage key and the pool as the store keeps it.
    pub fn into_stored(self) -> Result<(String, Pool), String> {
        let pool = Pool {
            name: self.name,
            properties: object_text("properties", &self.properties)?,
            etag: self.etag,
            revision: self.revision,
            created_ms: parse_time("createdAt", &self.created_at)?,
            changed_ms: parse_time("lastModifiedAt", &self.last_modified_at)?,
        };
        Ok((self.key, pool))
    }
}

/// Embeds stored JSON text unchanged, after checking that it is an object.
fn object(field: &str, key: &str, text: String) -> Result<Box<RawValue>, String> {
    let raw = RawValue::from_string(text)
        .map_err(|error| format!("the stored '{field}' of '{key}' is not valid JSON ({error})"))?;
    if !raw.get().starts_with('{') {
        return Err(format!(
            "the stored '{field}' of '{key}' is not a JSON object"
        ));
    }
    Ok(raw)
}

/// The text of an embedded object, exactly as it appears in the line.
fn object_text(field: &str, raw: &RawValue) -> Result<String, String> {
    if !raw.get().starts_with('{') {
        return Err(format!("the field '{field}' must be a JSON object"));
    }
    Ok(raw.get().to_owned())
}

fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn parse_time(field: &str, text: &str) -> Result<u64, String> {
    let invalid = |reason: String| {
        format!(
            "the field '{field}' value '{text}' is not an RFC 3339 UTC time such as \
             '2026-01-31T12:00:00.000Z' ({reason})"
        )
    };
    let time = humantime::parse_rfc3339(text).map_err(|error| invalid(error.to_string()))?;
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| invalid("it is before 1970".into()))?;
    u64::try_from(since_epoch.as_millis()).map_err(|_| invalid("it is too far ahead".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster {
            subscription: "00000000-0000-0000-0000-000000000001".into(),
            resource_group: "RG".into(),
            name: "c1".into(),
            location: "westeurope".into(),
            tags: Some(r#"{"b":"2","a":"zürich ✓"}"#.into()),
            properties: r#"{"kubernetesVersion":"1.33","nested":{"z":1,"y":[1,2]}}"#.into(),
            extra: r#"{"sku":{"name":"Base"}}"#.into(),
            etag: Uuid::new_v4(),
            revision: 7,
            created_ms: 1_767_225_600_123,
            changed_ms: 1_767_225_601_999,
        }
    }

    #[test]
    fn cluster_line_round_trips_exactly() {
        let original = cluster();
        let record = ClusterRecord::from_stored("k".into(), original.clone()).unwrap();
        let text = serde_json::to_string(&Line::Cluster(record)).unwrap();
        assert!(text.starts_with(r#"{"cluster":{"key":"k","#), "{text}");

        let Line::Cluster(parsed) = serde_json::from_str(&text).unwrap() else {
            panic!("not a cluster line: {text}");
        };
        let (key, decoded) = parsed.into_stored().unwrap();
        assert_eq!(key, "k");
        assert_eq!(decoded, original);
    }

    #[test]
    fn non_object_properties_are_rejected() {
        let text = r#"{"pool":{"key":"a/b/c/np1","name":"np1","properties":[1],"eTag":"8d3c39b5-2d37-4e7c-9d0a-0d1f5c1c6f00","revision":1,"createdAt":"2026-01-01T00:00:00.000Z","lastModifiedAt":"2026-01-01T00:00:00.000Z"}}"#;
        let Line::Pool(record) = serde_json::from_str(text).unwrap() else {
            panic!("not a pool line");
        };
        let error = record.into_stored().unwrap_err();
        assert!(error.contains("must be a JSON object"), "{error}");
    }

    #[test]
    fn unknown_fields_and_kinds_are_rejected() {
        let extra_field = r#"{"header":{"format":"akstore-export","formatVersion":1,"schemaVersion":1,"akstoreVersion":"0.1.0","exportedAt":"x","revision":0,"clusters":0,"pools":0,"entries":0,"surprise":1}}"#;
        assert!(serde_json::from_str::<Line>(extra_field).is_err());
        assert!(serde_json::from_str::<Line>(r#"{"request":{}}"#).is_err());
    }

    #[test]
    fn entry_bytes_round_trip() {
        let entry = OpaqueEntry {
            table: "requests".into(),
            key: "k".into(),
            value: vec![0, 1, 254, 255],
        };
        let text =
            serde_json::to_string(&Line::Entry(EntryRecord::from_stored(entry.clone()))).unwrap();
        assert_eq!(
            text,
            r#"{"entry":{"table":"requests","key":"k","value":"AAH+/w=="}}"#
        );
        let Line::Entry(parsed) = serde_json::from_str(&text).unwrap() else {
            panic!("not an entry line");
        };
        assert_eq!(parsed.into_stored().unwrap(), entry);
    }

    #[test]
    fn times_keep_millisecond_precision() {
        for ms in [0, 1, 1_767_225_600_123] {
            assert_eq!(parse_time("t", &format_time(ms)).unwrap(), ms);
        }
        assert!(parse_time("t", "yesterday").is_err());
    }
}
