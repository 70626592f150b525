//! Reads: single resources and key-ordered pages, each in its own read transaction.
//!
//! Pages continue strictly after the storage key of the last item returned, so a page never
//! repeats an item and a list scans only the range of its scope.
//!
//! Reads show the operations on a cluster as they stand at the time of the read (see
//! [`Operation::as_of`]): a delete whose deadline has passed reads as done, with the resource
//! gone, even before the store has recorded its end.

use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, TableError};
use uuid::Uuid;

use crate::Store;
use crate::codec;
use crate::error::ReadError;
use crate::model::{
    Cluster, ClusterKey, ClusterScope, ClusterView, KEY_SEPARATOR, Pool, PoolKey, PoolView,
};
use crate::operation::{Operation, OperationKind, OperationTarget};
use crate::tables;
use crate::writer::now_ms;

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

/// Effect of the operation stored as running on a cluster, for a read.
enum Pending {
    None,
    Running(Operation),
    ClusterDeleted,
    /// The pool with this name was deleted.
    PoolDeleted(String),
}

impl Pending {
    fn hides_pool(&self, pool: &Pool) -> bool {
        matches!(self, Pending::PoolDeleted(name) if name.eq_ignore_ascii_case(&pool.name))
    }

    fn into_running(self) -> Option<Operation> {
        match self {
            Pending::Running(operation) => Some(operation),
            _ => None,
        }
    }
}

impl Store {
    /// Reads a cluster and its pools.
    pub fn get_cluster(&self, key: &ClusterKey) -> Result<Option<ClusterView>, ReadError> {
        let txn = self.database()?.begin_read()?;
        read_cluster_view(&txn, &key.storage_key(), now_ms())
    }

    /// Reads a pool and its cluster.
    pub fn get_pool(&self, key: &PoolKey) -> Result<PoolLookup, ReadError> {
        let txn = self.database()?.begin_read()?;
        let cluster_key = key.cluster.storage_key();
        let Some(cluster) = read_cluster(&txn, &cluster_key)? else {
            return Ok(PoolLookup::ClusterMissing);
        };
        let pending = pending_operation(&txn, &cluster_key, now_ms())?;
        if let Pending::ClusterDeleted = pending {
            return Ok(PoolLookup::ClusterMissing);
        }

        let storage_key = key.storage_key();
        let pools = txn.open_table(tables::POOLS)?;
        let pool: Pool = match pools.get(storage_key.as_str())? {
            Some(bytes) => decode(&storage_key, bytes.value())?,
            None => return Ok(PoolLookup::PoolMissing),
        };
        if pending.hides_pool(&pool) {
            return Ok(PoolLookup::PoolMissing);
        }
        Ok(PoolLookup::Found(Box::new(PoolView {
            cluster,
            pool,
            operation: pending.into_running(),
        })))
    }

    /// Reads an operation by id, with its status at the time of the read.
    pub fn get_operation(&self, id: &Uuid) -> Result<Option<Operation>, ReadError> {
        let txn = self.database()?.begin_read()?;
        let Some(operations) = open_operations(&txn)? else {
            return Ok(None);
        };
        let key = tables::operation_key(id);
        match operations.get(key.as_str())? {
            Some(bytes) => Ok(Some(
                decode::<Operation>(&key, bytes.value())?.as_of(now_ms()),
            )),
            None => Ok(None),
        }
    }

    /// Counts what [`crate::WriteRequest::SettleOperations`] with the same argument would
    /// change: operations whose deadline has passed but whose end is not yet recorded, and,
    /// with `prune_ended_before_ms`, records of operations that ended before then.
    pub fn operations_to_settle(
        &self,
        prune_ended_before_ms: Option<u64>,
    ) -> Result<usize, ReadError> {
        let txn = self.database()?.begin_read()?;
        let Some(operations) = open_operations(&txn)? else {
            return Ok(0);
        };
        let now_ms = now_ms();
        let mut count = 0;
        let running = tables::prefix_range(tables::RUNNING_PREFIX, None);
        for entry in operations.range(tables::as_str_bounds(&running))? {
            let (key, bytes) = entry?;
            let operation: Operation = decode(key.value(), bytes.value())?;
            if operation.deadline_ms <= now_ms {
                count += 1;
            }
        }
        if let Some(before_ms) = prune_ended_before_ms {
            let records = tables::prefix_range(tables::OPERATION_PREFIX, None);
            for entry in operations.range(tables::as_str_bounds(&records))? {
                let (key, bytes) = entry?;
                // A due operation counts as ended at its deadline, as settling records it
                // before it prunes.
                let operation = decode::<Operation>(key.value(), bytes.value())?.as_of(now_ms);
                if operation
                    .ended_ms
                    .is_some_and(|ended_ms| ended_ms < before_ms)
                {
                    count += 1;
                }
            }
        }
        Ok(count)
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

        // A cluster whose delete has finished is left out, so a page may hold fewer than
        // `limit` items while more follow.
        let now_ms = now_ms();
        let mut items = Vec::with_capacity(keys.len());
        for key in &keys {
            if let Some(view) = read_cluster_view(&txn, key, now_ms)? {
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
        let cluster_key = key.storage_key();
        let Some(cluster) = read_cluster(&txn, &cluster_key)? else {
            return Ok(None);
        };
        let pending = pending_operation(&txn, &cluster_key, now_ms())?;
        if let Pending::ClusterDeleted = pending {
            return Ok(None);
        }
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
            let pool: Pool = decode(&pool_key, bytes.value())?;
            last_key = Some(pool_key);
            if pending.hides_pool(&pool) {
                continue;
            }
            let operation = match &pending {
                Pending::Running(operation) => Some(operation.clone()),
                _ => None,
            };
            items.push(PoolView {
                cluster: cluster.clone(),
                pool,
                operation,
            });
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
    now_ms: u64,
) -> Result<Option<ClusterView>, ReadError> {
    let Some(cluster) = read_cluster(txn, storage_key)? else {
        return Ok(None);
    };
    let pending = pending_operation(txn, storage_key, now_ms)?;
    if let Pending::ClusterDeleted = pending {
        return Ok(None);
    }

    let mut prefix = storage_key.to_owned();
    prefix.push('/');
    let pools_table = txn.open_table(tables::POOLS)?;
    let mut pools: Vec<Pool> = Vec::new();
    for entry in pools_table.range(tables::as_str_bounds(&tables::prefix_range(&prefix, None)))? {
        let (pool_key, bytes) = entry?;
        let pool = decode(pool_key.value(), bytes.value())?;
        if !pending.hides_pool(&pool) {
            pools.push(pool);
        }
    }
    Ok(Some(ClusterView {
        cluster,
        pools,
        operation: pending.into_running(),
    }))
}

/// Reads the operation stored as running on a cluster, with its status at `now_ms`.
fn pending_operation(
    txn: &ReadTransaction,
    cluster_key: &str,
    now_ms: u64,
) -> Result<Pending, ReadError> {
    let Some(operations) = open_operations(txn)? else {
        return Ok(Pending::None);
    };
    let key = tables::running_key(cluster_key);
    let operation: Operation = match operations.get(key.as_str())? {
        Some(bytes) => decode::<Operation>(&key, bytes.value())?.as_of(now_ms),
        None => return Ok(Pending::None),
    };
    if operation.is_running() {
        return Ok(Pending::Running(operation));
    }
    Ok(match (operation.kind, operation.target) {
        (OperationKind::Delete, OperationTarget::Cluster) => Pending::ClusterDeleted,
        (OperationKind::Delete, OperationTarget::Pool(name)) => Pending::PoolDeleted(name),
        (OperationKind::Create | OperationKind::Update, _) => Pending::None,
    })
}

/// Opens the operations table, or returns `None` for a database written before it existed;
/// its first write creates the table.
fn open_operations(
    txn: &ReadTransaction,
) -> Result<Option<ReadOnlyTable<&'static str, &'static [u8]>>, ReadError> {
    match txn.open_table(tables::OPERATIONS) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
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
