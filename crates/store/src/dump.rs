//! Export and import at the record level: a read-only snapshot of every record, and a bulk
//! load of such records into an empty database in one write transaction.
//!
//! A snapshot opens the file without writing to it (read-only, or through an in-memory crash
//! repair) and reads everything inside one read transaction, so the file stays unchanged and
//! the export is one consistent state. A bulk load keeps every record as it was exported (eTag,
//! revision, timestamps) and checks the store's invariants as it goes: a record's key matches
//! its names, a pool's cluster was loaded before it, no revision exceeds the global one.
//! Nothing is written unless the whole load succeeds.
//!
//! Clusters and pools travel as decoded records. The `requests` and `operations` tables travel
//! as opaque entries, their stored bytes unchanged, so an export carries them whatever their
//! record layout; the importer checks only their keys.
//!
//! This module knows nothing of the file format that carries the records; the binary does.

use std::fs::File;
use std::path::{Path, PathBuf};

use redb::backends::FileBackend;
use redb::{
    Durability, ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    TableHandle,
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{OpenError, ReadError};
use crate::model::{Cluster, ClusterKey, KEY_SEPARATOR, Pool};
use crate::open::{self, FileSchema, ReadHandle};
use crate::{CACHE_SIZE_BYTES, CURRENT_SCHEMA_VERSION, Counts, Store, codec, tables};

/// The tables a snapshot carries. `meta` travels as the global revision; its schema version
/// is the reader's own.
///
/// Every table a database of the current schema can hold must be listed here, or export
/// would silently drop it; a test creates a database and compares its tables with this list.
pub const EXPORTED_TABLES: [&str; 5] = ["meta", "clusters", "pools", "requests", "operations"];

/// The tables exported as opaque entries: keys and stored bytes, unchanged.
pub const OPAQUE_TABLES: [TableDefinition<&str, &[u8]>; 2] = [tables::REQUESTS, tables::OPERATIONS];

/// A consistent view of a whole database file, opened without writing to it.
pub struct Snapshot {
    // Declared before `_handle` so the transaction ends before the file is closed.
    txn: ReadTransaction,
    _handle: ReadHandle,
    schema_version: u64,
    counts: Counts,
    opaque_entries: u64,
}

/// An entry of an opaque table: its table, key and stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpaqueEntry {
    pub table: String,
    pub key: String,
    pub value: Vec<u8>,
}

/// Why a snapshot could not be opened or read. The file is never changed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "database {path} has the table '{table}', which this build of akstore cannot export; \
         use the akstore release that wrote the file"
    )]
    UnknownTable { path: PathBuf, table: String },
}

/// Loads records into an empty database inside the transaction of [`Store::import`].
pub struct Importer<'txn> {
    clusters: Table<'txn, &'static str, &'static [u8]>,
    pools: Table<'txn, &'static str, &'static [u8]>,
    /// The opaque tables with their names, in [`OPAQUE_TABLES`] order.
    opaque: Vec<(String, Table<'txn, &'static str, &'static [u8]>)>,
    opaque_entries: u64,
    /// The global revision the load sets; no record may carry a higher one.
    revision: u64,
    counts: Counts,
}

/// Why one record was not loaded. The whole import is abandoned with it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Invalid(String),
    #[error("storage write failed: {0}")]
    Storage(#[from] redb::StorageError),
}

/// Why [`Store::import`] failed, and what it means for the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError<E> {
    /// The target already holds data; nothing was written.
    #[error(
        "the database is not empty ({} clusters, {} pools, revision {}); import needs a new \
         database file or one that has never been written to",
        .0.clusters, .0.pools, .0.revision
    )]
    NotEmpty(Counts),
    /// The caller's load function failed; nothing was written.
    #[error("{0}")]
    Rejected(E),
    /// A storage error before the commit; nothing was written.
    #[error("storage failed before the import was committed, so nothing was written: {0}")]
    Storage(redb::Error),
    /// The commit itself failed; the records may or may not be on disk.
    #[error("the commit failed, so the imported records may or may not be on disk: {0}")]
    CommitFailed(redb::CommitError),
}

impl Snapshot {
    /// Opens `path` without writing to it and starts the read transaction that every later
    /// read uses. A file that was not closed cleanly is read through an in-memory repair.
    ///
    /// Fails without touching the file when it is missing, locked by a running server, not an
    /// akstore database, of another schema version, or holds a table this build does not
    /// export.
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        let path = path.as_ref().to_path_buf();
        let missing = || OpenError::Missing { path: path.clone() };
        if !path.metadata().is_ok_and(|metadata| metadata.len() > 0) {
            return Err(missing().into());
        }
        let handle = open::open_without_writing(
            &path,
            &|| File::open(&path).map(FileBackend::new),
            CACHE_SIZE_BYTES,
        )?;
        let txn = handle
            .begin_read()
            .map_err(|e| open::storage(&path, e.into()))?;

        let found =
            akstore_migrations::read_schema(&txn).map_err(|e| open::schema_error(&path, e))?;
        let schema_version = match open::check_found_schema(&path, found)? {
            FileSchema::New => return Err(missing().into()),
            FileSchema::Version(version) if version < CURRENT_SCHEMA_VERSION => {
                return Err(open::older_schema(&path, version).into());
            }
            FileSchema::Version(version) => version,
        };
        let unknown_table = txn
            .list_tables()
            .map_err(|e| open::storage(&path, e.into()))?
            .map(|handle| handle.name().to_owned())
            .find(|name| !EXPORTED_TABLES.contains(&name.as_str()));
        if let Some(table) = unknown_table {
            return Err(SnapshotError::UnknownTable { path, table });
        }

        let counts = read_counts(&txn)?;
        let mut opaque_entries = 0;
        for definition in OPAQUE_TABLES {
            opaque_entries += txn
                .open_table(definition)
                .map_err(ReadError::from)?
                .len()
                .map_err(ReadError::from)?;
        }
        Ok(Snapshot {
            txn,
            _handle: handle,
            schema_version,
            counts,
            opaque_entries,
        })
    }

    /// Schema version of the file.
    pub fn schema_version(&self) -> u64 {
        self.schema_version
    }

    /// Record counts and the global revision, as of the snapshot.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Number of entries in the opaque tables, as of the snapshot.
    pub fn opaque_entry_count(&self) -> u64 {
        self.opaque_entries
    }

    /// Every cluster with its storage key, in key order.
    pub fn clusters(
        &self,
    ) -> Result<impl Iterator<Item = Result<(String, Cluster), ReadError>> + use<>, ReadError> {
        self.records(tables::CLUSTERS)
    }

    /// Every pool with its storage key, in key order.
    pub fn pools(
        &self,
    ) -> Result<impl Iterator<Item = Result<(String, Pool), ReadError>> + use<>, ReadError> {
        self.records(tables::POOLS)
    }

    /// Every entry of the opaque tables, table by table in [`OPAQUE_TABLES`] order, each in
    /// key order.
    pub fn opaque_entries(
        &self,
    ) -> Result<impl Iterator<Item = Result<OpaqueEntry, ReadError>> + use<>, ReadError> {
        let mut ranges = Vec::with_capacity(OPAQUE_TABLES.len());
        for definition in OPAQUE_TABLES {
            let table = self.txn.open_table(definition)?;
            ranges.push((definition.name().to_owned(), table.range_owned(..)?));
        }
        Ok(ranges.into_iter().flat_map(|(table, range)| {
            range.map(move |entry| {
                let (key, value) = entry?;
                Ok(OpaqueEntry {
                    table: table.clone(),
                    key: key.value().to_owned(),
                    value: value.value().to_vec(),
                })
            })
        }))
    }

    fn records<T: DeserializeOwned>(
        &self,
        definition: TableDefinition<&'static str, &'static [u8]>,
    ) -> Result<impl Iterator<Item = Result<(String, T), ReadError>> + use<T>, ReadError> {
        let table = self.txn.open_table(definition)?;
        let range = table.range_owned(..)?;
        Ok(range.map(|entry| {
            let (key, bytes) = entry?;
            let key = key.value().to_owned();
            let record = codec::decode(bytes.value()).map_err(|source| ReadError::Corrupt {
                key: key.clone(),
                source,
            })?;
            Ok((key, record))
        }))
    }
}

impl Store {
    /// Loads records into this database in one durable write transaction, keeping their
    /// eTags, revisions and timestamps, and sets the global revision to `revision`.
    ///
    /// `load` feeds the records through the [`Importer`]; the transaction commits only when
    /// it returns `Ok`. The database must never have been written to: no records, no opaque
    /// entries and a global revision of 0. Every error but [`ImportError::CommitFailed`]
    /// leaves the file as it was. Call it before any write is submitted: it bypasses the
    /// writer thread.
    pub fn import<E>(
        &self,
        revision: u64,
        load: impl FnOnce(&mut Importer<'_>) -> Result<(), E>,
    ) -> Result<ImportSummary, ImportError<E>> {
        let storage = |error: redb::Error| ImportError::Storage(error);
        let db = self
            .database()
            .map_err(|_| storage(redb::Error::DatabaseClosed))?;
        let mut txn = db.begin_write().map_err(|e| storage(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| storage(e.into()))?;

        let summary = {
            let mut meta = txn
                .open_table(tables::META)
                .map_err(|e| storage(e.into()))?;
            let mut opaque = Vec::with_capacity(OPAQUE_TABLES.len());
            for definition in OPAQUE_TABLES {
                let table = txn.open_table(definition).map_err(|e| storage(e.into()))?;
                opaque.push((definition.name().to_owned(), table));
            }
            let mut importer = Importer {
                clusters: txn
                    .open_table(tables::CLUSTERS)
                    .map_err(|e| storage(e.into()))?,
                pools: txn
                    .open_table(tables::POOLS)
                    .map_err(|e| storage(e.into()))?,
                opaque,
                opaque_entries: 0,
                revision,
                counts: Counts {
                    revision,
                    ..Counts::default()
                },
            };

            // A database whose records were all deleted still has a revision above 0; loading
            // into it would move its revision backwards.
            let existing = Counts {
                clusters: importer.clusters.len().map_err(|e| storage(e.into()))?,
                pools: importer.pools.len().map_err(|e| storage(e.into()))?,
                revision: meta
                    .get(tables::REVISION_KEY)
                    .map_err(|e| storage(e.into()))?
                    .map_or(0, |value| value.value()),
            };
            let mut existing_entries = 0;
            for (_, table) in &importer.opaque {
                existing_entries += table.len().map_err(|e| storage(e.into()))?;
            }
            if existing != Counts::default() || existing_entries > 0 {
                return Err(ImportError::NotEmpty(existing));
            }

            load(&mut importer).map_err(ImportError::Rejected)?;
            meta.insert(tables::REVISION_KEY, revision)
                .map_err(|e| storage(e.into()))?;
            importer.summary()
        };

        txn.commit().map_err(ImportError::CommitFailed)?;
        tracing::info!(
            path = %self.path().display(),
            clusters = summary.counts.clusters,
            pools = summary.counts.pools,
            opaque_entries = summary.opaque_entries,
            revision,
            "import committed"
        );
        Ok(summary)
    }
}

/// What an import loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Clusters and pools loaded, and the global revision set.
    pub counts: Counts,
    /// Entries of the opaque tables loaded.
    pub opaque_entries: u64,
}

impl Importer<'_> {
    /// Inserts a cluster under `key`, which must be the storage key its names produce.
    pub fn insert_cluster(&mut self, key: &str, cluster: &Cluster) -> Result<(), RecordError> {
        for (field, value) in [
            ("subscription", &cluster.subscription),
            ("resource group", &cluster.resource_group),
            ("name", &cluster.name),
        ] {
            check_key_part(field, value)?;
        }
        let expected = ClusterKey {
            subscription: cluster.subscription.clone(),
            resource_group: cluster.resource_group.clone(),
            name: cluster.name.clone(),
        }
        .storage_key();
        if key != expected {
            return Err(invalid(format!(
                "the key '{key}' does not match the cluster's subscription, resource group and \
                 name, which give '{expected}'"
            )));
        }
        self.check_record(key, &cluster.etag, cluster.revision)?;
        if self.clusters.get(key)?.is_some() {
            return Err(invalid(format!("the cluster '{key}' appears twice")));
        }

        self.clusters
            .insert(key, codec::encode(cluster).as_slice())?;
        self.counts.clusters += 1;
        Ok(())
    }

    /// Inserts a pool under `key`: its cluster's key, `/`, and the lower-cased pool name. The
    /// cluster must have been inserted before.
    pub fn insert_pool(&mut self, key: &str, pool: &Pool) -> Result<(), RecordError> {
        check_key_part("name", &pool.name)?;
        let Some((cluster_key, pool_part)) = key.rsplit_once(KEY_SEPARATOR) else {
            return Err(invalid(format!("the pool key '{key}' has no cluster part")));
        };
        if pool_part != pool.name.to_ascii_lowercase() {
            return Err(invalid(format!(
                "the key '{key}' does not end in the pool's lower-cased name '{}'",
                pool.name.to_ascii_lowercase()
            )));
        }
        self.check_record(key, &pool.etag, pool.revision)?;

        // A pool exists only while its cluster does, and a cluster write gives every pool of
        // the cluster its revision, so no pool is older than its cluster.
        let cluster: Cluster = match self.clusters.get(cluster_key)? {
            Some(bytes) => codec::decode(bytes.value()).map_err(|error| {
                invalid(format!(
                    "the cluster '{cluster_key}' cannot be decoded: {error}"
                ))
            })?,
            None => {
                return Err(invalid(format!(
                    "the pool '{key}' comes before its cluster '{cluster_key}', or that \
                     cluster is missing"
                )));
            }
        };
        if pool.revision < cluster.revision {
            return Err(invalid(format!(
                "the pool '{key}' has revision {}, older than its cluster's revision {}; a \
                 cluster write gives every pool of the cluster its own revision",
                pool.revision, cluster.revision
            )));
        }
        if self.pools.get(key)?.is_some() {
            return Err(invalid(format!("the pool '{key}' appears twice")));
        }

        self.pools.insert(key, codec::encode(pool).as_slice())?;
        self.counts.pools += 1;
        Ok(())
    }

    /// Inserts an entry of an opaque table unchanged. The table must be one of
    /// [`OPAQUE_TABLES`] and the key new; the bytes are not checked.
    // NOTE: the records of these tables are not decoded, so a hand-edited entry is stored as
    // given; the code that reads them must reject what it cannot decode.
    pub fn insert_opaque(&mut self, entry: &OpaqueEntry) -> Result<(), RecordError> {
        let Some((_, table)) = self
            .opaque
            .iter_mut()
            .find(|(name, _)| *name == entry.table)
        else {
            return Err(invalid(format!(
                "the table '{}' is not one that import loads entries into",
                entry.table
            )));
        };
        if entry.key.is_empty() {
            return Err(invalid(format!(
                "an entry of '{}' has an empty key",
                entry.table
            )));
        }
        if table.get(entry.key.as_str())?.is_some() {
            return Err(invalid(format!(
                "the entry '{}' of '{}' appears twice",
                entry.key, entry.table
            )));
        }
        table.insert(entry.key.as_str(), entry.value.as_slice())?;
        self.opaque_entries += 1;
        Ok(())
    }

    /// What was inserted so far; `counts.revision` is the one the import sets.
    pub fn summary(&self) -> ImportSummary {
        ImportSummary {
            counts: self.counts,
            opaque_entries: self.opaque_entries,
        }
    }

    fn check_record(&self, key: &str, etag: &Uuid, revision: u64) -> Result<(), RecordError> {
        if etag.is_nil() {
            return Err(invalid(format!(
                "the record '{key}' has the nil UUID as its eTag"
            )));
        }
        if revision == 0 || revision > self.revision {
            return Err(invalid(format!(
                "the record '{key}' has revision {revision}, outside 1 to the global revision {}",
                self.revision
            )));
        }
        Ok(())
    }
}

fn check_key_part(field: &str, value: &str) -> Result<(), RecordError> {
    if value.is_empty() || value.contains(KEY_SEPARATOR) {
        return Err(invalid(format!(
            "the {field} '{value}' is empty or contains '{KEY_SEPARATOR}'"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> RecordError {
    RecordError::Invalid(message)
}

/// Counts the clusters and pools and reads the global revision in `txn`.
pub(crate) fn read_counts(txn: &ReadTransaction) -> Result<Counts, ReadError> {
    let revision = txn
        .open_table(tables::META)?
        .get(tables::REVISION_KEY)?
        .map_or(0, |value| value.value());
    Ok(Counts {
        clusters: txn.open_table(tables::CLUSTERS)?.len()?,
        pools: txn.open_table(tables::POOLS)?.len()?,
        revision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClusterInput, PoolInput, Precondition, WriteRequest};
    use redb::ReadableDatabase;

    fn put_cluster(store: &Store, name: &str, pools: &[&str]) {
        let request = WriteRequest::PutCluster {
            key: ClusterKey {
                subscription: "00000000-0000-0000-0000-000000000001".into(),
                resource_group: "RG".into(),
                name: name.into(),
            },
            precondition: Precondition::None,
            input: ClusterInput {
                location: "westeurope".into(),
                tags: Some(r#"{"env":"zürich"}"#.into()),
                properties: r#"{"dnsPrefix":"x"}"#.into(),
                extra: "{}".into(),
                pools: pools
                    .iter()
                    .map(|pool| PoolInput {
                        name: (*pool).into(),
                        properties: r#"{"count":1}"#.into(),
                    })
                    .collect(),
            },
        };
        store.write(request).unwrap();
    }

    /// Everything a snapshot returns: counts, then clusters and pools with their keys.
    type Contents = (Counts, Vec<(String, Cluster)>, Vec<(String, Pool)>);

    fn snapshot_records(path: &Path) -> Contents {
        let snapshot = Snapshot::open(path).unwrap();
        let clusters = snapshot.clusters().unwrap().map(Result::unwrap).collect();
        let pools = snapshot.pools().unwrap().map(Result::unwrap).collect();
        (snapshot.counts(), clusters, pools)
    }

    #[test]
    fn every_table_of_a_new_database_is_exported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        drop(Store::open(&path).unwrap());

        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let mut names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|handle| handle.name().to_owned())
            .collect();
        names.sort();
        let mut exported = EXPORTED_TABLES.map(str::to_owned).to_vec();
        exported.sort();
        assert_eq!(
            names, exported,
            "a table was added to the schema: extend Snapshot and Importer to carry it, then \
             list it in EXPORTED_TABLES"
        );
    }

    #[test]
    fn snapshot_then_import_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.redb");
        {
            let store = Store::open(&source).unwrap();
            put_cluster(&store, "c1", &["np1", "np2"]);
            put_cluster(&store, "C2", &["np1"]);
            put_cluster(&store, "c1", &["np3"]);
        }
        // The opaque tables' records are written by code this module does not know; any bytes
        // must travel unchanged.
        let entry = OpaqueEntry {
            table: "requests".into(),
            key: "4a3c0d3e-1b5e-4b7c-9a51-0e3b6f1d2c11".into(),
            value: vec![1, 0, 255, 7],
        };
        {
            let db = redb::Database::open(&source).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::REQUESTS)
                .unwrap()
                .insert(entry.key.as_str(), entry.value.as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let (counts, clusters, pools) = snapshot_records(&source);
        assert_eq!((counts.clusters, counts.pools, counts.revision), (2, 4, 3));
        let entries: Vec<OpaqueEntry> = Snapshot::open(&source)
            .unwrap()
            .opaque_entries()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(entries, vec![entry.clone()]);

        let target = dir.path().join("target.redb");
        let store = Store::open(&target).unwrap();
        let loaded = store
            .import(counts.revision, |importer| {
                for (key, cluster) in &clusters {
                    importer.insert_cluster(key, cluster)?;
                }
                for (key, pool) in &pools {
                    importer.insert_pool(key, pool)?;
                }
                importer.insert_opaque(&entry)
            })
            .unwrap();
        assert_eq!(loaded.counts, counts);
        assert_eq!(loaded.opaque_entries, 1);
        drop(store);

        assert_eq!(snapshot_records(&target), (counts, clusters, pools));
        let copied: Vec<OpaqueEntry> = Snapshot::open(&target)
            .unwrap()
            .opaque_entries()
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(copied, vec![entry]);
    }

    #[test]
    fn import_rejects_non_empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path).unwrap();
        put_cluster(&store, "c1", &[]);

        let result = store.import(5, |_| Ok::<(), RecordError>(()));
        let Err(ImportError::NotEmpty(existing)) = result else {
            panic!("import into a non-empty database succeeded");
        };
        assert_eq!((existing.clusters, existing.revision), (1, 1));
    }

    #[test]
    fn failed_import_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.redb");
        {
            let store = Store::open(&source).unwrap();
            put_cluster(&store, "c1", &["np1"]);
        }
        let (counts, clusters, pools) = snapshot_records(&source);

        let target = dir.path().join("target.redb");
        let store = Store::open(&target).unwrap();
        let result = store.import(counts.revision, |importer| {
            importer.insert_cluster(&clusters[0].0, &clusters[0].1)?;
            // The same pool twice aborts the whole load.
            importer.insert_pool(&pools[0].0, &pools[0].1)?;
            importer.insert_pool(&pools[0].0, &pools[0].1)
        });
        let Err(ImportError::Rejected(RecordError::Invalid(message))) = result else {
            panic!("a duplicate pool was accepted");
        };
        assert!(message.contains("appears twice"), "{message}");
        assert_eq!(store.counts().unwrap(), Counts::default());
    }

    #[test]
    fn importer_checks_keys_parents_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.redb");
        {
            let store = Store::open(&source).unwrap();
            put_cluster(&store, "c1", &["np1"]);
        }
        let (_, clusters, pools) = snapshot_records(&source);
        let (cluster_key, cluster) = &clusters[0];
        let (pool_key, pool) = &pools[0];

        let target = dir.path().join("target.redb");
        let store = Store::open(&target).unwrap();
        let reject = |load: &dyn Fn(&mut Importer<'_>) -> Result<(), RecordError>| match store
            .import(1, load)
        {
            Err(ImportError::Rejected(RecordError::Invalid(message))) => message,
            other => panic!("expected a rejected record, got {other:?}"),
        };

        let message = reject(&|importer| importer.insert_cluster("sub/rg/other", cluster));
        assert!(message.contains("does not match"), "{message}");
        let message = reject(&|importer| importer.insert_pool(pool_key, pool));
        assert!(message.contains("comes before its cluster"), "{message}");
        let message = reject(&|importer| {
            let newer = Cluster {
                revision: 2,
                ..cluster.clone()
            };
            importer.insert_cluster(cluster_key, &newer)
        });
        assert!(
            message.contains("outside 1 to the global revision 1"),
            "{message}"
        );
        let message = reject(&|importer| {
            importer.insert_cluster(cluster_key, cluster)?;
            let renamed = Pool {
                name: "np9".into(),
                ..pool.clone()
            };
            importer.insert_pool(pool_key, &renamed)
        });
        assert!(message.contains("does not end in"), "{message}");
        assert_eq!(store.counts().unwrap(), Counts::default());
    }

    #[test]
    fn snapshot_reads_unclean_file_without_changing_it() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../migrations/fixtures")
            .join(format!("v{CURRENT_SCHEMA_VERSION}-unclean.redb"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unclean.redb");
        std::fs::copy(&fixture, &path).unwrap();
        let before = std::fs::read(&path).unwrap();

        let snapshot = Snapshot::open(&path).unwrap();
        let counts = snapshot.counts();
        let clusters = snapshot.clusters().unwrap().count() as u64;
        let pools = snapshot.pools().unwrap().count() as u64;
        drop(snapshot);

        assert!(counts.clusters > 0, "the fixture has clusters");
        assert_eq!((clusters, pools), (counts.clusters, counts.pools));
        assert!(
            std::fs::read(&path).unwrap() == before,
            "the snapshot changed the file"
        );
    }

    #[test]
    fn snapshot_of_missing_file_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.redb");
        let error = Snapshot::open(&path).err().unwrap();
        assert!(
            matches!(error, SnapshotError::Open(OpenError::Missing { .. })),
            "{error}"
        );
        assert!(!path.exists());
    }
}
