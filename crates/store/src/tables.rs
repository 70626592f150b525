//! Table definitions and the key ranges that lists scan.
//!
//! Keys are lower-cased names joined by `/` (see [`crate::ClusterKey::storage_key`]), so a
//! resource group's clusters, a subscription's clusters and a cluster's pools each occupy one
//! contiguous key range. `/` sorts directly before `0`, which makes `prefix` with its last
//! `/` replaced by `0` the exclusive end of that range.

use std::ops::Bound;

use redb::TableDefinition;

/// Metadata: the schema version and the global revision counter. Its definition and the
/// schema version key belong to the migrations, because every schema version has them.
pub use akstore_migrations::{META, SCHEMA_VERSION_KEY};

/// Clusters by `subscription/resource_group/cluster`.
pub const CLUSTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("clusters");
/// Pools by `subscription/resource_group/cluster/pool`.
pub const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");
/// Exactly-once retry records by client request id (`x-ms-client-request-id`). Schema 2 on.
pub const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("requests");
/// Long-running operations, schema 2 on, under two kinds of key: [`operation_key`] holds every
/// operation record, running or finished; [`running_key`] holds a copy of the record of the
/// operation running on a cluster, so reads and writes of that cluster find it with one
/// lookup.
pub const OPERATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("operations");

/// Every table of the current schema besides [`META`], all of which a new database gets.
pub const RECORD_TABLES: [TableDefinition<&str, &[u8]>; 4] =
    [CLUSTERS, POOLS, REQUESTS, OPERATIONS];
/// Metadata key of the global revision: the revision of the last applied write.
pub const REVISION_KEY: &str = "revision";

/// Prefix of the operation records' keys in [`OPERATIONS`].
pub const OPERATION_PREFIX: &str = "operation/";
/// Prefix of the running-operation keys in [`OPERATIONS`].
pub const RUNNING_PREFIX: &str = "running/";

/// Key of an operation's record in [`OPERATIONS`].
pub fn operation_key(id: &uuid::Uuid) -> String {
    format!("{OPERATION_PREFIX}{}", id.hyphenated())
}

/// Key of the operation running on the cluster with storage key `cluster_key`.
pub fn running_key(cluster_key: &str) -> String {
    format!("{RUNNING_PREFIX}{cluster_key}")
}

/// Bounds of the keys that start with `prefix`, which must end in `/`, strictly after `after`
/// when it is given.
pub fn prefix_range(prefix: &str, after: Option<&str>) -> (Bound<String>, Bound<String>) {
    debug_assert!(prefix.ends_with('/'));
    let mut end = prefix[..prefix.len() - 1].to_owned();
    end.push('0');
    let start = match after {
        Some(after) => Bound::Excluded(after.to_owned()),
        None => Bound::Included(prefix.to_owned()),
    };
    (start, Bound::Excluded(end))
}

/// Borrows owned bounds in the form redb's `range` takes for `&str` keys.
pub fn as_str_bounds(bounds: &(Bound<String>, Bound<String>)) -> (Bound<&str>, Bound<&str>) {
    (
        bounds.0.as_ref().map(String::as_str),
        bounds.1.as_ref().map(String::as_str),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_excludes_longer_sibling_names() {
        let (start, end) = prefix_range("sub/rg/", None);
        assert_eq!(start, Bound::Included("sub/rg/".to_owned()));
        assert_eq!(end, Bound::Excluded("sub/rg0".to_owned()));
        // A sibling group whose name extends this one sorts after the end bound.
        assert!("sub/rg-2/c" < "sub/rg/");
        assert!("sub/rga/c" > "sub/rg0");
    }
}
