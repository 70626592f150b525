//! The write rules, applied to open tables inside one write transaction.
//!
//! Rules this module keeps, all inside the caller's transaction:
//! - a cluster PUT or PATCH gives the cluster and every pool of it a new eTag;
//! - a pool PUT or PATCH gives only that pool a new eTag;
//! - a cluster DELETE removes the cluster and all of its pools;
//! - a request that fails its precondition, or names a missing resource, writes nothing;
//! - a DELETE of a missing resource is a success that writes nothing, whatever its condition;
//! - every applied write takes the next global revision, even when its body changes nothing.
//!
//! It does not begin or commit transactions: the writer does, so several requests can share
//! one commit.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table};
use uuid::Uuid;

use crate::codec::{self, CodecError};
use crate::failpoints;
use crate::model::{
    Applied, Cluster, ClusterInput, ClusterKey, ClusterView, Pool, PoolInput, PoolKey, PoolView,
    Precondition, WriteOutcome, WriteRequest,
};
use crate::tables;

/// Why applying a request failed. Either way the transaction must be aborted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    #[error("stored record {key} cannot be decoded: {source}")]
    Corrupt { key: String, source: CodecError },
    #[error(transparent)]
    Injected(#[from] failpoints::Injected),
}

/// The tables of one write transaction and the revision counter as this batch left it.
pub(crate) struct Batch<'txn> {
    pub clusters: Table<'txn, &'static str, &'static [u8]>,
    pub pools: Table<'txn, &'static str, &'static [u8]>,
    /// Revision of the last write applied so far.
    pub revision: u64,
    pub now_ms: u64,
}

/// The HTTP verb a precondition is checked for, since the table differs per verb.
#[derive(Clone, Copy)]
enum Verb {
    Put,
    Patch,
    Delete,
}

/// What the precondition table decides before anything is written.
enum Decision {
    Proceed,
    /// PATCH of a missing resource.
    NotFound,
    /// DELETE of a missing resource, whatever its condition.
    Absent,
    PreconditionFailed,
}

impl Decision {
    /// The outcome of a request the table stops, or `None` when it proceeds.
    fn refusal<T>(self) -> Option<WriteOutcome<T>> {
        match self {
            Decision::Proceed => None,
            Decision::NotFound => Some(WriteOutcome::NotFound),
            Decision::Absent => Some(WriteOutcome::Absent),
            Decision::PreconditionFailed => Some(WriteOutcome::PreconditionFailed),
        }
    }
}

impl Batch<'_> {
    /// Applies one request to the tables of this batch.
    pub fn apply(&mut self, request: WriteRequest) -> Result<Applied, ApplyError> {
        match request {
            WriteRequest::PutCluster {
                key,
                precondition,
                input,
            } => self
                .put_cluster(&key, &precondition, input)
                .map(Applied::Cluster),
            WriteRequest::PatchCluster {
                key,
                precondition,
                patch,
            } => self
                .patch_cluster(&key, &precondition, patch)
                .map(Applied::Cluster),
            WriteRequest::DeleteCluster { key, precondition } => self
                .delete_cluster(&key, &precondition)
                .map(Applied::Cluster),
            WriteRequest::PutPool {
                key,
                precondition,
                input,
                may_create,
            } => self
                .put_pool(&key, &precondition, input, may_create)
                .map(Applied::Pool),
            WriteRequest::PatchPool {
                key,
                precondition,
                patch,
            } => self
                .patch_pool(&key, &precondition, patch)
                .map(Applied::Pool),
            WriteRequest::DeletePool { key, precondition } => {
                self.delete_pool(&key, &precondition).map(Applied::Pool)
            }
        }
    }

    fn put_cluster(
        &mut self,
        key: &ClusterKey,
        precondition: &Precondition,
        input: ClusterInput,
    ) -> Result<WriteOutcome<ClusterView>, ApplyError> {
        let current = self.cluster(key)?;
        if let Some(refused) =
            decide(Verb::Put, precondition, current.as_ref().map(|c| &c.etag)).refusal()
        {
            return Ok(refused);
        }
        let created = current.is_none();
        let view = self.write_cluster(key, current, input)?;
        Ok(if created {
            WriteOutcome::Created(view)
        } else {
            WriteOutcome::Updated(view)
        })
    }

    fn patch_cluster(
        &mut self,
        key: &ClusterKey,
        precondition: &Precondition,
        patch: crate::ClusterPatch,
    ) -> Result<WriteOutcome<ClusterView>, ApplyError> {
        let current = self.cluster(key)?;
        if let Some(refused) =
            decide(Verb::Patch, precondition, current.as_ref().map(|c| &c.etag)).refusal()
        {
            return Ok(refused);
        }
        let Some(cluster) = current else {
            unreachable!(
                "the precondition table proceeds with a PATCH only on an existing cluster"
            );
        };

        // The merge runs against the state this transaction sees, so it cannot race a
        // concurrent write that its precondition did not see.
        let pools = self.pools_of(key)?.into_values().collect();
        let view = ClusterView { cluster, pools };
        let input = match patch(&view) {
            Ok(input) => input,
            Err(reason) => return Ok(WriteOutcome::Invalid(reason)),
        };
        let updated = self.write_cluster(key, Some(view.cluster), input)?;
        Ok(WriteOutcome::Updated(updated))
    }

    fn delete_cluster(
        &mut self,
        key: &ClusterKey,
        precondition: &Precondition,
    ) -> Result<WriteOutcome<ClusterView>, ApplyError> {
        let current = self.cluster(key)?;
        if let Some(refused) = decide(
            Verb::Delete,
            precondition,
            current.as_ref().map(|c| &c.etag),
        )
        .refusal()
        {
            return Ok(refused);
        }
        self.next_revision();
        self.clusters.remove(key.storage_key().as_str())?;
        let pool_keys: Vec<String> = self.pools_of(key)?.into_keys().collect();
        for pool_key in pool_keys {
            self.pools.remove(pool_key.as_str())?;
        }
        Ok(WriteOutcome::Deleted)
    }

    fn put_pool(
        &mut self,
        key: &PoolKey,
        precondition: &Precondition,
        input: PoolInput,
        may_create: bool,
    ) -> Result<WriteOutcome<PoolView>, ApplyError> {
        let Some(cluster) = self.cluster(&key.cluster)? else {
            return Ok(WriteOutcome::ParentNotFound);
        };
        let current = self.pool(key)?;
        if current.is_none() && !may_create {
            return Ok(WriteOutcome::NotFound);
        }
        if let Some(refused) =
            decide(Verb::Put, precondition, current.as_ref().map(|p| &p.etag)).refusal()
        {
            return Ok(refused);
        }
        let created = current.is_none();
        let pool = self.write_pool(key, current, input)?;
        let view = PoolView { cluster, pool };
        Ok(if created {
            WriteOutcome::Created(view)
        } else {
            WriteOutcome::Updated(view)
        })
    }

    fn patch_pool(
        &mut self,
        key: &PoolKey,
        precondition: &Precondition,
        patch: crate::PoolPatch,
    ) -> Result<WriteOutcome<PoolView>, ApplyError> {
        let Some(cluster) = self.cluster(&key.cluster)? else {
            return Ok(WriteOutcome::ParentNotFound);
        };
        let current = self.pool(key)?;
        if let Some(refused) =
            decide(Verb::Patch, precondition, current.as_ref().map(|p| &p.etag)).refusal()
        {
            return Ok(refused);
        }
        let Some(pool) = current else {
            unreachable!("the precondition table proceeds with a PATCH only on an existing pool");
        };

        let view = PoolView { cluster, pool };
        let input = match patch(&view) {
            Ok(input) => input,
            Err(reason) => return Ok(WriteOutcome::Invalid(reason)),
        };
        let pool = self.write_pool(key, Some(view.pool), input)?;
        Ok(WriteOutcome::Updated(PoolView {
            cluster: view.cluster,
            pool,
        }))
    }

    fn delete_pool(
        &mut self,
        key: &PoolKey,
        precondition: &Precondition,
    ) -> Result<WriteOutcome<PoolView>, ApplyError> {
        // A pool of a missing cluster is a missing pool: DELETE is idempotent.
        if self.cluster(&key.cluster)?.is_none() {
            return Ok(WriteOutcome::Absent);
        }
        let current = self.pool(key)?;
        if let Some(refused) = decide(
            Verb::Delete,
            precondition,
            current.as_ref().map(|p| &p.etag),
        )
        .refusal()
        {
            return Ok(refused);
        }
        self.next_revision();
        self.pools.remove(key.storage_key().as_str())?;
        Ok(WriteOutcome::Deleted)
    }

    /// Writes a cluster and rotates the eTag of every pool it has, creating or replacing the
    /// pools that `input` names.
    fn write_cluster(
        &mut self,
        key: &ClusterKey,
        current: Option<Cluster>,
        input: ClusterInput,
    ) -> Result<ClusterView, ApplyError> {
        let revision = self.next_revision();

        // An existing cluster keeps the casing it was created with.
        let (subscription, resource_group, name, created_ms) = match current {
            Some(existing) => (
                existing.subscription,
                existing.resource_group,
                existing.name,
                existing.created_ms,
            ),
            None => (
                key.subscription.clone(),
                key.resource_group.clone(),
                key.name.clone(),
                self.now_ms,
            ),
        };
        let cluster = Cluster {
            subscription,
            resource_group,
            name,
            location: input.location,
            tags: input.tags,
            properties: input.properties,
            extra: input.extra,
            etag: Uuid::new_v4(),
            revision,
            created_ms,
            changed_ms: self.now_ms,
        };
        self.clusters.insert(
            key.storage_key().as_str(),
            codec::encode(&cluster).as_slice(),
        )?;
        failpoints::check(failpoints::BETWEEN_CLUSTER_AND_POOLS)?;

        // Pools named by the request replace their properties; the others keep theirs. All of
        // them get a new eTag and this revision.
        let mut pools = self.pools_of(key)?;
        for pool_input in input.pools {
            let pool_key = PoolKey {
                cluster: key.clone(),
                name: pool_input.name.clone(),
            }
            .storage_key();
            match pools.get_mut(&pool_key) {
                Some(pool) => pool.properties = pool_input.properties,
                None => {
                    let pool = Pool {
                        name: pool_input.name,
                        properties: pool_input.properties,
                        etag: Uuid::nil(),
                        revision,
                        created_ms: self.now_ms,
                        changed_ms: self.now_ms,
                    };
                    pools.insert(pool_key, pool);
                }
            }
        }
        for (pool_key, pool) in &mut pools {
            pool.etag = Uuid::new_v4();
            pool.revision = revision;
            pool.changed_ms = self.now_ms;
            self.pools
                .insert(pool_key.as_str(), codec::encode(&*pool).as_slice())?;
        }

        Ok(ClusterView {
            cluster,
            pools: pools.into_values().collect(),
        })
    }

    /// Writes one pool with a new eTag; its cluster is left as it is.
    fn write_pool(
        &mut self,
        key: &PoolKey,
        current: Option<Pool>,
        input: PoolInput,
    ) -> Result<Pool, ApplyError> {
        let revision = self.next_revision();
        let (name, created_ms) = match current {
            Some(existing) => (existing.name, existing.created_ms),
            None => (input.name, self.now_ms),
        };
        let pool = Pool {
            name,
            properties: input.properties,
            etag: Uuid::new_v4(),
            revision,
            created_ms,
            changed_ms: self.now_ms,
        };
        self.pools
            .insert(key.storage_key().as_str(), codec::encode(&pool).as_slice())?;
        Ok(pool)
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn cluster(&self, key: &ClusterKey) -> Result<Option<Cluster>, ApplyError> {
        let storage_key = key.storage_key();
        match self.clusters.get(storage_key.as_str())? {
            Some(bytes) => decode(&storage_key, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    fn pool(&self, key: &PoolKey) -> Result<Option<Pool>, ApplyError> {
        let storage_key = key.storage_key();
        match self.pools.get(storage_key.as_str())? {
            Some(bytes) => decode(&storage_key, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// The pools of a cluster by storage key, read with one range scan.
    fn pools_of(&self, key: &ClusterKey) -> Result<BTreeMap<String, Pool>, ApplyError> {
        let mut pools = BTreeMap::new();
        for entry in self
            .pools
            .range(tables::as_str_bounds(&tables::prefix_range(
                &key.pool_prefix(),
                None,
            )))?
        {
            let (pool_key, bytes) = entry?;
            let pool_key = pool_key.value().to_owned();
            let pool = decode(&pool_key, bytes.value())?;
            pools.insert(pool_key, pool);
        }
        Ok(pools)
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, ApplyError> {
    codec::decode(bytes).map_err(|source| ApplyError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

/// The precondition table of the AKS ETag documentation, for one verb.
fn decide(verb: Verb, precondition: &Precondition, current: Option<&Uuid>) -> Decision {
    match (verb, current) {
        (Verb::Put, None) => match precondition {
            Precondition::None | Precondition::IfNoneMatchAny => Decision::Proceed,
            Precondition::IfMatchAny | Precondition::IfMatch(_) => Decision::PreconditionFailed,
        },
        (Verb::Patch, None) => Decision::NotFound,
        (Verb::Delete, None) => Decision::Absent,
        (_, Some(etag)) => match precondition {
            Precondition::None | Precondition::IfMatchAny => Decision::Proceed,
            Precondition::IfMatch(tags) if tags.iter().any(|tag| tag.matches(etag)) => {
                Decision::Proceed
            }
            Precondition::IfMatch(_) | Precondition::IfNoneMatchAny => Decision::PreconditionFailed,
        },
    }
}
