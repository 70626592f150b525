//! akstore's storage: managed clusters and agent pools in one redb file, every write an
//! ETag-guarded compare-and-swap.
//!
//! The crate is synchronous and does not deal with HTTP. Reads run on the caller's thread in
//! their own read transaction and never wait for writers. Writes go to one writer thread
//! ([`writer`]), which applies them in arrival order and commits them in groups, durably,
//! before it reports any outcome. The rules a write follows live in `apply`.
//!
//! Invariants, kept by every write:
//! - a pool record exists only while its cluster record exists;
//! - every record's eTag is a fresh UUID v4, and a cluster write gives the cluster and all of
//!   its pools new eTags in the same transaction;
//! - the global revision in the metadata table is at least every record's revision;
//! - at most one long-running operation runs per cluster, and it is stored in the same
//!   transaction as the write that started it (see [`Operation`]).

mod apply;
pub mod check;
pub mod codec;
mod dump;
mod error;
pub mod failpoints;
pub mod faults;
mod model;
mod open;
mod operation;
mod read;
pub mod requests;
mod scratch;
pub mod tables;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use redb::{Database, ReadableDatabase, StorageBackend};

pub use akstore_migrations::{CURRENT_SCHEMA_VERSION, MigrationReport, Step, StepReport};
pub use dump::{
    EXPORTED_TABLES, ImportError, ImportSummary, Importer, OPAQUE_TABLES, OpaqueEntry, RecordError,
    Snapshot, SnapshotError,
};
pub use error::{OpenError, ReadError, WriteError};
pub use model::{
    Applied, Cluster, ClusterInput, ClusterKey, ClusterPatch, ClusterScope, ClusterView, EntityTag,
    Pool, PoolInput, PoolKey, PoolPatch, PoolView, Precondition, SettleSummary, WriteOutcome,
    WriteRequest,
};
pub use open::{FileSchema, OpenOptions, inspect_schema, migrate_file};
pub use operation::{
    Operation, OperationKind, OperationStatus, OperationTarget, ProvisioningState,
    normalize_location,
};
pub use read::{Page, PoolLookup};
pub use requests::ClientRequest;
pub use writer::{Completion, WriterStats};

/// redb cache size, read cache and write buffer together. Large enough to keep the working
/// set of a test or CI database in memory. With 100,000 clusters under a 64-connection update
/// load the server peaked at about 150 MiB resident, this cache included (docs/benchmarks.md).
pub const CACHE_SIZE_BYTES: usize = 64 * 1024 * 1024;

/// An open akstore database. Share it behind an `Arc`; every method takes `&self`.
pub struct Store {
    shared: Arc<Shared>,
    jobs: Mutex<Option<Sender<writer::Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Number of records, for metrics and summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub clusters: u64,
    pub pools: u64,
    /// The global revision: the revision of the last applied write.
    pub revision: u64,
}

/// Opens the database file with its schema checked; the first open and every reopen after a
/// failed write go through it.
type Opener = Box<dyn Fn() -> Result<Database, OpenError> + Send + Sync>;

/// State shared by the store and its writer thread.
pub(crate) struct Shared {
    path: PathBuf,
    /// The open database, or `None` while the writer reopens it after a failed write.
    database: RwLock<Option<Arc<Database>>>,
    opener: Opener,
    /// False from a failed write until the reopen that follows it succeeds.
    writable: AtomicBool,
    counters: writer::Counters,
}

impl Store {
    /// Opens the database at `path`, creating it with the current schema when the file does
    /// not exist or is empty, migrating it when its schema is older, and starts the writer
    /// thread. A new file's directory is synced, so the file survives a crash along with its
    /// contents.
    ///
    /// A file of another program, or of a newer schema, is rejected before it is opened for
    /// writing, so its bytes stay as they were. See [`OpenError`] for what each error means.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, OpenError> {
        Store::open_with(path, OpenOptions::default())
    }

    /// Opens the database at `path` as [`Store::open`] does, migrating an older schema only when
    /// `options` allows it.
    pub fn open_with(path: impl AsRef<Path>, options: OpenOptions) -> Result<Store, OpenError> {
        let path = path.as_ref().to_path_buf();
        let file_path = path.clone();
        // Only the first open may create the file. A reopen after a failed write must find
        // it, so a file deleted under a running server is reported instead of silently
        // replaced by an empty database.
        let first_open = AtomicBool::new(true);
        Store::open_with_backend_and_options(path, options, move || {
            let create = first_open.swap(false, Ordering::SeqCst);
            open::open_file_backend(&file_path, create)
        })
    }

    /// Opens the database on the storage backend that `backend` returns, as [`Store::open`]
    /// does on a file. `path` names the database in messages, and its directory is synced when
    /// the database is new. The writer calls `backend` again to reopen the database after a
    /// failed write. Tests pass a [`faults::FaultyBackend`] here.
    pub fn open_with_backend<B, F>(path: impl Into<PathBuf>, backend: F) -> Result<Store, OpenError>
    where
        B: StorageBackend,
        F: Fn() -> std::io::Result<B> + Send + Sync + 'static,
    {
        Store::open_with_backend_and_options(path, OpenOptions::default(), backend)
    }

    fn open_with_backend_and_options<B, F>(
        path: impl Into<PathBuf>,
        options: OpenOptions,
        backend: F,
    ) -> Result<Store, OpenError>
    where
        B: StorageBackend,
        F: Fn() -> std::io::Result<B> + Send + Sync + 'static,
    {
        let path = path.into();
        // A reopen after a failed write finds the schema current, so it migrates nothing.
        let opener: Opener = {
            let path = path.clone();
            Box::new(move || open::open_database(&path, &backend, options).map(|opened| opened.db))
        };
        let database = opener()?;

        let shared = Arc::new(Shared {
            path: path.clone(),
            database: RwLock::new(Some(Arc::new(database))),
            opener,
            writable: AtomicBool::new(true),
            counters: writer::Counters::default(),
        });
        let (sender, receiver) = mpsc::channel();
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("akstore-writer".into())
                .spawn(move || writer::run(shared, receiver))
                .map_err(|e| OpenError::Storage {
                    path: path.clone(),
                    source: e.into(),
                })?
        };
        Ok(Store {
            shared,
            jobs: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Queues a write; `done` runs on the writer thread once the write's batch has committed
    /// durably or failed. `done` must not block.
    pub fn submit(&self, request: WriteRequest, done: Completion) {
        self.submit_once(request, None, done);
    }

    /// Queues a write as [`Store::submit`] does. With a client request id, the write is
    /// applied at most once per id (see [`requests`]): a retry of an applied write gets the
    /// recorded outcome, and a different request with the same id gets
    /// [`WriteOutcome::RequestIdReused`].
    pub fn submit_once(
        &self,
        request: WriteRequest,
        client_request: Option<ClientRequest>,
        done: Completion,
    ) {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let job = writer::Job {
            request,
            client_request,
            done,
        };
        match jobs.as_ref() {
            Some(sender) => {
                if let Err(mpsc::SendError(job)) = sender.send(job) {
                    (job.done)(Err(WriteError::Closed));
                }
            }
            None => (job.done)(Err(WriteError::Closed)),
        }
    }

    /// Applies a write and blocks until its batch has committed durably or failed.
    ///
    /// An `Err` of [`WriteError::NotApplied`] or [`WriteError::Closed`] means nothing was
    /// written; [`WriteError::OutcomeUnknown`] means the write may or may not be on disk.
    pub fn write(&self, request: WriteRequest) -> Result<Applied, WriteError> {
        self.write_once(request, None)
    }

    /// Applies a write as [`Store::write`] does, at most once per client request id.
    pub fn write_once(
        &self,
        request: WriteRequest,
        client_request: Option<ClientRequest>,
    ) -> Result<Applied, WriteError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.submit_once(
            request,
            client_request,
            Box::new(move |result| {
                // The receiver waits below until this runs, so the send cannot fail.
                let _ = sender.send(result);
            }),
        );
        // A writer that panicked mid-batch drops the job unanswered; the write may have been
        // in the batch it was committing.
        receiver.recv().unwrap_or_else(|_| {
            Err(WriteError::OutcomeUnknown(
                "the writer failed before answering".into(),
            ))
        })
    }

    /// Whether the store accepts writes: false while the writer reopens the database after a
    /// failed write (redb refuses every operation after an I/O error until the file is
    /// reopened), and after [`Store::close`].
    pub fn is_writable(&self) -> bool {
        let open = self.jobs.lock().map(|jobs| jobs.is_some()).unwrap_or(false);
        open && self.shared.writable.load(Ordering::SeqCst)
    }

    /// Stops accepting writes, waits for the queued ones to commit and receive their outcome, and stops
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

    /// Counters of the writer's group commits since the store was opened.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            commits: self.shared.counters.commits.load(Ordering::Relaxed),
            writes: self.shared.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// Counts the records and reads the global revision.
    pub fn counts(&self) -> Result<Counts, ReadError> {
        dump::read_counts(&self.database()?.begin_read()?)
    }

    /// The open database, or [`ReadError::Reopening`] while the writer reopens it.
    pub(crate) fn database(&self) -> Result<Arc<Database>, ReadError> {
        self.shared.current().ok_or(ReadError::Reopening)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    /// The open database, unless it is closed for a reopen.
    pub(crate) fn current(&self) -> Option<Arc<Database>> {
        self.database
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reports the store unwritable until the next successful reopen.
    pub(crate) fn mark_unwritable(&self) {
        self.writable.store(false, Ordering::SeqCst);
    }

    /// Closes the database after a failed write and marks the store unwritable. Readers that
    /// still hold it finish with it; it closes when the last of them lets go.
    pub(crate) fn close_database(&self) {
        self.mark_unwritable();
        let database = self
            .database
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(database) = database {
            wait_until_unshared(database);
        }
    }

    /// Opens the database again, running redb's recovery, and marks the store writable.
    pub(crate) fn reopen(&self) -> Result<(), OpenError> {
        failpoints::check(failpoints::REOPEN).map_err(|injected| OpenError::Storage {
            path: self.path.clone(),
            source: redb::Error::Io(std::io::Error::other(injected)),
        })?;
        let started = Instant::now();
        let database = (self.opener)()?;
        *self.database.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(database));
        self.writable.store(true, Ordering::SeqCst);
        tracing::warn!(
            path = %self.path.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "database reopened after a failed write"
        );
        Ok(())
    }
}

/// Most time [`Shared::close_database`] waits for readers to let go of the database before it
/// leaves the close to the last of them. A read holds it for one transaction, well under this.
const READER_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Drops `database` once no reader holds it, waiting at most [`READER_DRAIN_TIMEOUT`], so a
/// reopen right after finds the file lock free.
fn wait_until_unshared(mut database: Arc<Database>) {
    let deadline = Instant::now() + READER_DRAIN_TIMEOUT;
    loop {
        match Arc::try_unwrap(database) {
            Ok(database) => {
                drop(database);
                return;
            }
            Err(shared) if Instant::now() < deadline => {
                database = shared;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(_) => {
                tracing::warn!("readers still hold the database; it closes when they finish");
                return;
            }
        }
    }
}
