//! akstore's storage: managed clusters and agent pools in one redb file, every write an
//! ETag-guarded compare-and-swap.
//!
//! The crate is synchronous and knows nothing of HTTP. Reads run on the caller's thread in
//! their own read transaction and never wait for writers. Writes go to one writer thread
//! ([`writer`]), which applies them in arrival order and commits them in groups, durably,
//! before it reports any outcome. The rules a write follows live in `apply`.
//!
//! Invariants, kept by every write:
//! - a pool record exists only while its cluster record exists;
//! - every record's eTag is a fresh UUID v4, and a cluster write gives the cluster and all of
//!   its pools new eTags in the same transaction;
//! - the global revision in the metadata table is at least every record's revision.

mod apply;
pub mod codec;
mod error;
mod model;
mod read;
pub mod tables;
pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

pub use akstore_migrations::CURRENT_SCHEMA_VERSION;
pub use error::{OpenError, ReadError, WriteError};
pub use model::{
    Applied, Cluster, ClusterInput, ClusterKey, ClusterPatch, ClusterScope, ClusterView, EntityTag,
    Pool, PoolInput, PoolKey, PoolPatch, PoolView, Precondition, WriteOutcome, WriteRequest,
};
pub use read::{Page, PoolLookup};
pub use writer::Completion;

/// redb page cache size. Large enough to keep the working set of a test or CI database in
/// memory, small enough that a long-lived shared instance stays far below 200 MiB resident.
pub const CACHE_SIZE_BYTES: usize = 64 * 1024 * 1024;

/// An open akstore database. Share it behind an `Arc`; every method takes `&self`.
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    jobs: Mutex<Option<Sender<writer::Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    health: Arc<writer::WriterHealth>,
}

/// Number of records, for metrics and summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub clusters: u64,
    pub pools: u64,
    /// The global revision: the revision of the last applied write.
    pub revision: u64,
}

impl Store {
    /// Opens the database at `path`, creating it with the current schema when the file does
    /// not exist or is empty, and starts the writer thread.
    ///
    /// Errors leave an existing file as it was: a file of another program, or of a schema
    /// other than [`CURRENT_SCHEMA_VERSION`], is rejected before anything is written to it.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let existed = path.metadata().map(|m| m.len() > 0).unwrap_or(false);
        let storage = |source: redb::Error| OpenError::Storage {
            path: path.clone(),
            source,
        };

        let db = Database::builder()
            .set_cache_size(CACHE_SIZE_BYTES)
            .create(&path)
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    OpenError::Locked { path: path.clone() }
                }
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) if existed => {
                    OpenError::Foreign {
                        path: path.clone(),
                        reason: format!("not a valid redb file ({reason})"),
                    }
                }
                other => storage(other.into()),
            })?;
        if !existed {
            sync_parent_directory(&path).map_err(|e| storage(e.into()))?;
        }

        check_or_initialize_schema(&db, &path)?;
        tracing::info!(path = %path.display(), created = !existed, "database opened");

        let db = Arc::new(db);
        let health = Arc::new(writer::WriterHealth::default());
        let (sender, receiver) = mpsc::channel();
        let writer = {
            let db = Arc::clone(&db);
            let health = Arc::clone(&health);
            std::thread::Builder::new()
                .name("akstore-writer".into())
                .spawn(move || writer::run(db, receiver, health))
                .map_err(|e| storage(e.into()))?
        };
        Ok(Store {
            db,
            path,
            jobs: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            health,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write; `done` runs on the writer thread once the write's batch has committed
    /// durably or failed. `done` must not block.
    pub fn submit(&self, request: WriteRequest, done: Completion) {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match jobs.as_ref() {
            Some(sender) => {
                if let Err(mpsc::SendError(job)) = sender.send(writer::Job { request, done }) {
                    (job.done)(Err(WriteError::Closed));
                }
            }
            None => done(Err(WriteError::Closed)),
        }
    }

    /// Applies a write and blocks until its batch has committed durably or failed.
    ///
    /// An `Err` of [`WriteError::NotApplied`] or [`WriteError::Closed`] means nothing was
    /// written; [`WriteError::OutcomeUnknown`] means the write may or may not be on disk.
    pub fn write(&self, request: WriteRequest) -> Result<Applied, WriteError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.submit(
            request,
            Box::new(move |result| {
                // The receiver waits below until this runs, so the send cannot fail.
                let _ = sender.send(result);
            }),
        );
        // A writer thread that panicked drops the job unanswered; the write may have been in
        // the batch it was committing.
        receiver.recv().unwrap_or_else(|_| {
            Err(WriteError::OutcomeUnknown(
                "the writer thread stopped before answering".into(),
            ))
        })
    }

    /// Whether the store accepts writes: false after a failed commit, when redb refuses
    /// further writes until the file is reopened, and after [`Store::close`].
    pub fn is_writable(&self) -> bool {
        let open = self.jobs.lock().map(|jobs| jobs.is_some()).unwrap_or(false);
        open && !self.health.commit_failed.load(Ordering::SeqCst)
    }

    /// Stops accepting writes, waits for the queued ones to commit and be answered, and stops
    /// the writer thread. Reads keep working until the store is dropped.
    pub fn close(&self) {
        drop(self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("writer thread panicked");
        }
    }

    /// Counts the records and reads the global revision.
    pub fn counts(&self) -> Result<Counts, ReadError> {
        let txn = self.db.begin_read()?;
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
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Checks the schema version of an existing database, or writes the current one into a new,
/// empty database. Nothing is written to a database that has any table already.
fn check_or_initialize_schema(db: &Database, path: &Path) -> Result<(), OpenError> {
    let storage = |source: redb::Error| OpenError::Storage {
        path: path.to_path_buf(),
        source,
    };
    let foreign = |reason: String| OpenError::Foreign {
        path: path.to_path_buf(),
        reason,
    };

    let read = db.begin_read().map_err(|e| storage(e.into()))?;
    let table_names: Vec<String> = read
        .list_tables()
        .map_err(|e| storage(e.into()))?
        .map(|handle| redb::TableHandle::name(&handle).to_owned())
        .collect();
    if !table_names.is_empty() {
        let meta = read
            .open_table(tables::META)
            .map_err(|e| foreign(format!("its metadata table cannot be opened ({e})")))?;
        let version = meta
            .get(tables::SCHEMA_VERSION_KEY)
            .map_err(|e| storage(e.into()))?
            .map(|value| value.value())
            .ok_or_else(|| foreign("its metadata table has no schema version".into()))?;
        return match version.cmp(&CURRENT_SCHEMA_VERSION) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(OpenError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: CURRENT_SCHEMA_VERSION,
            }),
            std::cmp::Ordering::Less => Err(OpenError::OlderSchema {
                path: path.to_path_buf(),
                found: version,
                supported: CURRENT_SCHEMA_VERSION,
            }),
        };
    }
    drop(read);

    let mut txn = db.begin_write().map_err(|e| storage(e.into()))?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|e| storage(e.into()))?;
    {
        let mut meta = txn
            .open_table(tables::META)
            .map_err(|e| storage(e.into()))?;
        meta.insert(tables::SCHEMA_VERSION_KEY, CURRENT_SCHEMA_VERSION)
            .map_err(|e| storage(e.into()))?;
        meta.insert(tables::REVISION_KEY, 0)
            .map_err(|e| storage(e.into()))?;
        txn.open_table(tables::CLUSTERS)
            .map_err(|e| storage(e.into()))?;
        txn.open_table(tables::POOLS)
            .map_err(|e| storage(e.into()))?;
    }
    txn.commit().map_err(|e| storage(e.into()))?;
    Ok(())
}

/// Syncs the directory that holds a newly created file, so the file's directory entry
/// survives a crash along with its contents.
fn sync_parent_directory(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}
