//! Reads: single resources and key-ordered pages, each in its own read transaction.
//!
//! Pages continue strictly after the storage key of the last item returned, so a page never
//! repeats an item and a list scans only the range of its scope.

use redb::{ReadTransaction, ReadableDatabase, ReadableTable};

use crate::Store;
use crate::codec;
use crate::error::ReadError;
use crate::model::{
    Cluster, ClusterKey, ClusterScope, ClusterView, KEY_SEPARATOR, Pool, PoolKey, PoolView,
};
use crate::tables;

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Storage key of the last item, when more items follow it.
    pub continuation: Option<String>,
}

/// The result of looking up a pool, telling a missing pool from a missing cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolLookup {
    Found(Box<PoolView>),
    PoolMissing,
    ClusterMissing,
}

impl Store {
    /// Reads a cluster and its pools.
    pub fn get_cluster(&self, key: &ClusterKey) -> Result<Option<ClusterView>, ReadError> {
        let txn = self.database()?.begin_read()?;
        read_cluster_view(&txn, &key.storage_key())
    }

    /// Reads a pool and its cluster.
    pub fn get_pool(&self, key: &PoolKey) -> Result<PoolLookup, ReadError> {
        let txn = self.database()?.begin_read()?;
        let Some(cluster) = read_cluster(&txn, &key.cluster.storage_key())? else {
            return Ok(PoolLookup::ClusterMissing);
        };
        let storage_key = key.storage_key();
        let pools = txn.open_table(tables::POOLS)?;
        Ok(match pools.get(storage_key.as_str())? {
            Some(bytes) => PoolLookup::Found(Box::new(PoolView {
                cluster,
                pool: decode(&storage_key, bytes.value())?,
            })),
            None => PoolLookup::PoolMissing,
        })
    }

    /// Lists up to `limit` clusters of `scope` in key order, after the continuation `after`.
    pub fn list_clusters(
        &self,
        scope: &ClusterScope,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<ClusterView>, ReadError> {
        let prefix = scope.key_prefix();
        let parts = match scope {
            ClusterScope::Subscription(_) => 2,
            ClusterScope::ResourceGroup { .. } => 1,
        };
        check_continuation(&prefix, after, parts)?;
        let txn = self.database()?.begin_read()?;
        let clusters = txn.open_table(tables::CLUSTERS)?;

        let mut keys = Vec::with_capacity(limit.min(1024));
        let mut continuation = None;
        for entry in clusters.range(tables::as_str_bounds(&tables::prefix_range(&prefix, after)))? {
            let (key, _) = entry?;
            if keys.len() == limit {
                continuation = keys.last().cloned();
                break;
            }
            keys.push(key.value().to_owned());
        }

        let mut items = Vec::with_capacity(keys.len());
        for key in &keys {
            if let Some(view) = read_cluster_view(&txn, key)? {
                items.push(view);
            }
        }
        Ok(Page {
            items,
            continuation,
        })
    }

    /// Lists up to `limit` pools of a cluster after the continuation `after`, or `None` when
    /// the cluster does not exist.
    pub fn list_pools(
        &self,
        key: &ClusterKey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page<PoolView>>, ReadError> {
        let prefix = key.pool_prefix();
        check_continuation(&prefix, after, 1)?;
        let txn = self.database()?.begin_read()?;
        let Some(cluster) = read_cluster(&txn, &key.storage_key())? else {
            return Ok(None);
        };
        let pools = txn.open_table(tables::POOLS)?;

        let mut items: Vec<PoolView> = Vec::new();
        let mut continuation = None;
        let mut last_key = None;
        for entry in pools.range(tables::as_str_bounds(&tables::prefix_range(&prefix, after)))? {
            let (pool_key, bytes) = entry?;
            if items.len() == limit {
                continuation = last_key;
                break;
            }
            let pool_key = pool_key.value().to_owned();
            items.push(PoolView {
                cluster: cluster.clone(),
                pool: decode(&pool_key, bytes.value())?,
            });
            last_key = Some(pool_key);
        }
        Ok(Some(Page {
            items,
            continuation,
        }))
    }
}

/// Checks that a continuation is a key of the list being read: it starts with the list's
/// `prefix` and has exactly `parts` more non-empty parts (a resource group and a cluster name
/// for a subscription's clusters, one name otherwise). A key of another list is rejected even
/// when it shares the prefix, such as a pool key offered to its subscription's cluster list.
fn check_continuation(prefix: &str, after: Option<&str>, parts: usize) -> Result<(), ReadError> {
    let Some(token) = after else {
        return Ok(());
    };
    let belongs = token.strip_prefix(prefix).is_some_and(|rest| {
        let rest: Vec<&str> = rest.split(KEY_SEPARATOR).collect();
        rest.len() == parts && rest.iter().all(|part| !part.is_empty())
    });
    if belongs {
        Ok(())
    } else {
        Err(ReadError::InvalidContinuation {
            token: token.to_owned(),
        })
    }
}

fn read_cluster(txn: &ReadTransaction, storage_key: &str) -> Result<Option<Cluster>, ReadError> {
    let clusters = txn.open_table(tables::CLUSTERS)?;
    match clusters.get(storage_key)? {
        Some(bytes) => Ok(Some(decode(storage_key, bytes.value())?)),
        None => Ok(None),
    }
}

fn read_cluster_view(
    txn: &ReadTransaction,
    storage_key: &str,
) -> Result<Option<ClusterView>, ReadError> {
    let Some(cluster) = read_cluster(txn, storage_key)? else {
        return Ok(None);
    };
    let mut prefix = storage_key.to_owned();
    prefix.push('/');
    let pools_table = txn.open_table(tables::POOLS)?;
    let mut pools: Vec<Pool> = Vec::new();
    for entry in pools_table.range(tables::as_str_bounds(&tables::prefix_range(&prefix, None)))? {
        let (pool_key, bytes) = entry?;
        pools.push(decode(pool_key.value(), bytes.value())?);
    }
    Ok(Some(ClusterView { cluster, pools }))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ReadError> {
    codec::decode(bytes).map_err(|source| ReadError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_must_be_a_key_of_the_list() {
        assert!(check_continuation("sub/", None, 2).is_ok());
        assert!(check_continuation("sub/", Some("sub/rg/c1"), 2).is_ok());
        assert!(check_continuation("sub/rg/", Some("sub/rg/c1"), 1).is_ok());
        for (prefix, token, parts) in [
            ("sub/", "sub/rg/c1/np1", 2),
            ("sub/", "sub/rg", 2),
            ("sub/", "sub//c1", 2),
            ("sub/rg/", "sub/rg/", 1),
            ("sub/rg/", "sub/rg2/c1", 1),
            ("sub/rg/c1/", "other/rg/c1/np1", 1),
        ] {
            assert!(
                check_continuation(prefix, Some(token), parts).is_err(),
                "{token} in {prefix}"
            );
        }
    }
}
