//! Opening a database file: creating a new one at the current schema, rejecting a file that is
//! not akstore's or whose schema is newer than this build, and migrating an older one.
//!
//! redb's writable open writes to the file even when nothing is committed: it marks the file
//! as in use, and after an unclean shutdown it repairs it. So the schema of an existing file is
//! first read through a read-only handle, or through an in-memory [`ScratchView`] when the file
//! needs that repair, and the file is opened for writing only when akstore may change it. Inside
//! the first write transaction the schema is read again, and that reading decides, so a file
//! changed between the two readings is still handled right.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use akstore_migrations::{
    CURRENT_SCHEMA_VERSION, FoundSchema, MigrationError, MigrationReport, SchemaError, Step,
};
use redb::backends::FileBackend;
use redb::{
    Builder, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    StorageBackend, StorageError,
};

use crate::error::OpenError;
use crate::scratch::ScratchView;
use crate::tables;

/// Options of [`crate::Store::open_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Migrate an older file to the current schema on open. When false, an older file is
    /// rejected with [`OpenError::OlderSchema`] and left as it was.
    pub migrate: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { migrate: true }
    }
}

/// The schema of a database file, read without writing to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileSchema {
    /// No file, an empty file, or a database without tables: opening it creates the current
    /// schema.
    New,
    /// An akstore database at this schema version, at most [`CURRENT_SCHEMA_VERSION`].
    Version(u64),
}

impl FileSchema {
    /// The steps that opening the file runs, in order.
    pub fn pending_steps(self) -> &'static [Step] {
        match self {
            FileSchema::New => &[],
            FileSchema::Version(version) => akstore_migrations::pending_steps(version),
        }
    }
}

/// Reads the schema of the database at `path` without writing to the file.
///
/// Errors: [`OpenError::NewerSchema`], [`OpenError::Foreign`], [`OpenError::Locked`] when a
/// process has the file open for writing, and [`OpenError::Storage`]. None changes the file.
pub fn inspect_schema(path: &Path) -> Result<FileSchema, OpenError> {
    if !path.metadata().is_ok_and(|metadata| metadata.len() > 0) {
        return Ok(FileSchema::New);
    }
    let read_only = || File::open(path).map(FileBackend::new);
    check_found_schema(path, read_schema_without_writing(path, &read_only)?)
}

/// Turns the schema read from an existing file into a [`FileSchema`], rejecting a newer one.
pub(crate) fn check_found_schema(path: &Path, found: FoundSchema) -> Result<FileSchema, OpenError> {
    match found {
        FoundSchema::Empty => Ok(FileSchema::New),
        FoundSchema::Version(version) if version > CURRENT_SCHEMA_VERSION => {
            Err(OpenError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: CURRENT_SCHEMA_VERSION,
            })
        }
        FoundSchema::Version(version) => Ok(FileSchema::Version(version)),
    }
}

/// Migrates the existing database at `path` to the current schema and closes it, without
/// starting a writer. Returns what was done; a current database is left untouched.
///
/// Errors: [`OpenError::Missing`] when there is no database at `path`, and the errors of
/// [`crate::Store::open`].
pub fn migrate_file(path: &Path) -> Result<MigrationReport, OpenError> {
    if inspect_schema(path)? == FileSchema::New {
        return Err(OpenError::Missing {
            path: path.to_path_buf(),
        });
    }
    let opened = open_database(
        path,
        &|| open_file_backend(path, true),
        OpenOptions { migrate: true },
    )?;
    Ok(opened.migration.unwrap_or(MigrationReport {
        from: CURRENT_SCHEMA_VERSION,
        to: CURRENT_SCHEMA_VERSION,
        steps: Vec::new(),
    }))
}

/// A database opened for writing at the current schema.
pub(crate) struct Opened {
    pub db: Database,
    /// The migration that ran on open, if the file was older.
    pub migration: Option<MigrationReport>,
}

/// Opens the file at `path` for reading and writing, as the backend of a writable database,
/// creating it when it does not exist and `create` is set.
pub(crate) fn open_file_backend(path: &Path, create: bool) -> std::io::Result<FileBackend> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)?;
    Ok(FileBackend::new(file))
}

/// Opens or creates the database on backends that `backend` returns, and brings it to the
/// current schema. `path` names the database in messages, and its directory is synced when the
/// database is new. `backend` is called once more for each read-only look at the file.
pub(crate) fn open_database<B, F>(
    path: &Path,
    backend: &F,
    options: OpenOptions,
) -> Result<Opened, OpenError>
where
    B: StorageBackend,
    F: Fn() -> std::io::Result<B>,
{
    let started = Instant::now();
    let existed = backend()
        .map_err(|e| storage(path, e.into()))?
        .len()
        .is_ok_and(|len| len > 0);

    // Reject what may not be written to before redb's writable open touches the file.
    if existed {
        let found = read_schema_without_writing(path, backend)?;
        if let FileSchema::Version(version) = check_found_schema(path, found)?
            && version < CURRENT_SCHEMA_VERSION
            && !options.migrate
        {
            return Err(older_schema(path, version));
        }
    }

    let db = Builder::new()
        .set_cache_size(crate::CACHE_SIZE_BYTES)
        .set_repair_callback(repair_progress_logger())
        .create_with_backend(backend().map_err(|e| storage(path, e.into()))?)
        .map_err(|error| database_error(path, error, existed))?;
    if !existed {
        sync_parent_directory(path).map_err(|error| storage(path, error.into()))?;
    }

    let (created, migration) = prepare_schema(&db, path, options)?;
    tracing::info!(
        path = %path.display(),
        created,
        schema_version = CURRENT_SCHEMA_VERSION,
        migrated_from = migration.as_ref().map(|report| report.from),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database opened"
    );
    Ok(Opened { db, migration })
}

/// Reads the schema of an existing database through a read-only handle, or through a scratch
/// view when the file needs crash repair first. Each handle gets its own backend.
fn read_schema_without_writing<B, F>(path: &Path, backend: &F) -> Result<FoundSchema, OpenError>
where
    B: StorageBackend,
    F: Fn() -> std::io::Result<B>,
{
    let handle = open_without_writing(path, backend, PROBE_CACHE_SIZE_BYTES)?;
    let txn = handle.begin_read().map_err(|e| storage(path, e.into()))?;
    akstore_migrations::read_schema(&txn).map_err(|error| schema_error(path, error))
}

/// A database opened without writing to its file.
pub(crate) enum ReadHandle {
    /// A file that was closed cleanly, opened read-only.
    ReadOnly(ReadOnlyDatabase),
    /// A file that needs crash repair, opened through a [`ScratchView`] that keeps the repair
    /// in memory.
    Repaired(Database),
}

impl ReadHandle {
    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, redb::TransactionError> {
        match self {
            ReadHandle::ReadOnly(db) => db.begin_read(),
            ReadHandle::Repaired(db) => db.begin_read(),
        }
    }
}

/// Opens an existing database read-only, or through a scratch view when the file needs crash
/// repair first, with a page cache of `cache_size` bytes. Either way the file is not written.
pub(crate) fn open_without_writing<B, F>(
    path: &Path,
    backend: &F,
    cache_size: usize,
) -> Result<ReadHandle, OpenError>
where
    B: StorageBackend,
    F: Fn() -> std::io::Result<B>,
{
    let first = backend().map_err(|e| storage(path, e.into()))?;
    match Builder::new()
        .set_cache_size(cache_size)
        .open_read_only_with_backend(first)
    {
        Ok(db) => Ok(ReadHandle::ReadOnly(db)),
        Err(DatabaseError::RepairAborted) => {
            tracing::warn!(
                path = %path.display(),
                "database was not closed cleanly; reading it through an in-memory repair, \
                 which leaves the file unchanged"
            );
            let inner = backend().map_err(|e| storage(path, e.into()))?;
            let view = match ScratchView::new(inner) {
                Ok(Some(view)) => view,
                Ok(None) => return Err(OpenError::Locked { path: path.into() }),
                Err(error) => return Err(storage(path, error.into())),
            };
            let db = Builder::new()
                .set_cache_size(cache_size)
                .create_with_backend(view)
                .map_err(|error| database_error(path, error, true))?;
            Ok(ReadHandle::Repaired(db))
        }
        Err(error) => Err(database_error(path, error, true)),
    }
}

/// redb page cache of the read-only handle that reads a schema version: a few pages suffice.
const PROBE_CACHE_SIZE_BYTES: usize = 1024 * 1024;

/// A repair callback that logs redb's repair progress, which runs when the file was not
/// closed cleanly, once per tenth of the work.
fn repair_progress_logger() -> impl Fn(&mut redb::RepairSession) + 'static {
    let last_tenth = AtomicU64::new(u64::MAX);
    move |session| {
        let tenth = (session.progress() * 10.0) as u64;
        if last_tenth.swap(tenth, Ordering::Relaxed) != tenth {
            tracing::warn!(
                progress_percent = tenth * 10,
                "repairing the database after an unclean shutdown"
            );
        }
    }
}

/// Checks the schema inside the first write transaction and creates, migrates or keeps it.
/// Returns whether the database was created and the migration that ran.
fn prepare_schema(
    db: &Database,
    path: &Path,
    options: OpenOptions,
) -> Result<(bool, Option<MigrationReport>), OpenError> {
    let txn = db.begin_write().map_err(|e| storage(path, e.into()))?;
    let found =
        akstore_migrations::read_schema_for_write(&txn).map_err(|e| schema_error(path, e))?;
    match found {
        FoundSchema::Empty => {
            initialize(txn).map_err(|error| storage(path, error))?;
            Ok((true, None))
        }
        FoundSchema::Version(version) if version == CURRENT_SCHEMA_VERSION => Ok((false, None)),
        FoundSchema::Version(version) if version < CURRENT_SCHEMA_VERSION && !options.migrate => {
            Err(older_schema(path, version))
        }
        FoundSchema::Version(version) => akstore_migrations::migrate(txn, version)
            .map(|report| (false, Some(report)))
            .map_err(|error| migration_error(path, error)),
    }
}

/// Writes the current schema into a database that has no tables: the version, a revision of 0
/// and every table, so a new database has exactly the tables a migrated one has.
fn initialize(mut txn: redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.set_durability(redb::Durability::Immediate)?;
    {
        let mut meta = txn.open_table(tables::META)?;
        meta.insert(tables::SCHEMA_VERSION_KEY, CURRENT_SCHEMA_VERSION)?;
        meta.insert(tables::REVISION_KEY, 0)?;
        for table in tables::RECORD_TABLES {
            txn.open_table(table)?;
        }
    }
    txn.commit()?;
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

pub(crate) fn storage(path: &Path, source: redb::Error) -> OpenError {
    OpenError::Storage {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn older_schema(path: &Path, found: u64) -> OpenError {
    OpenError::OlderSchema {
        path: path.to_path_buf(),
        found,
        supported: CURRENT_SCHEMA_VERSION,
    }
}

/// Maps an error of opening a file with redb. `existed` is whether the file had content before,
/// which makes a malformed file someone else's rather than a failed creation.
fn database_error(path: &Path, error: DatabaseError, existed: bool) -> OpenError {
    let path_buf = PathBuf::from(path);
    match error {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            OpenError::Locked { path: path_buf }
        }
        DatabaseError::Storage(StorageError::Corrupted(reason)) if existed => OpenError::Foreign {
            path: path_buf,
            reason: format!("not a valid redb file ({reason})"),
        },
        // redb reports a wrong magic number or header as InvalidData, and a file shorter than a
        // header as UnexpectedEof.
        DatabaseError::Storage(StorageError::Io(io))
            if existed
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
        {
            OpenError::Foreign {
                path: path_buf,
                reason: format!("not a valid redb file ({io})"),
            }
        }
        DatabaseError::UpgradeRequired(format) if existed => OpenError::Foreign {
            path: path_buf,
            reason: format!("it has redb file format {format}, which akstore never wrote"),
        },
        other => storage(path, other.into()),
    }
}

pub(crate) fn schema_error(path: &Path, error: SchemaError) -> OpenError {
    match error {
        SchemaError::NotAkstore { reason } => OpenError::Foreign {
            path: path.to_path_buf(),
            reason,
        },
        SchemaError::Storage(source) => storage(path, source),
    }
}

fn migration_error(path: &Path, error: MigrationError) -> OpenError {
    match error {
        MigrationError::NotAkstore { reason } => OpenError::Foreign {
            path: path.to_path_buf(),
            reason,
        },
        MigrationError::Newer { found, supported } => OpenError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        },
        other => OpenError::Migration {
            path: path.to_path_buf(),
            source: other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use std::sync::Arc;

    #[test]
    fn parent_directory_sync_opens_directory() {
        let dir = tempfile::tempdir().unwrap();
        sync_parent_directory(&dir.path().join("new.redb")).unwrap();
        // A bare file name syncs the working directory.
        sync_parent_directory(Path::new("new.redb")).unwrap();
        // The directory itself is opened: a missing one is an error, not a silent success.
        let missing = sync_parent_directory(&dir.path().join("missing/new.redb")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn new_database_syncs_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("real.redb");
        // The backend writes `file`, but the store names a path in a missing directory, so
        // only the directory sync can fail.
        let named = dir.path().join("missing").join("named.redb");
        let backend = Arc::new(move || open_file_backend(&file, true));

        let first = Arc::clone(&backend);
        let error = Store::open_with_backend(&named, move || first())
            .err()
            .expect("a new database syncs its directory, which is missing");
        assert!(error.to_string().contains("No such file"), "{error}");

        // Once the file has content it is not new, and no directory sync is attempted.
        let second = Arc::clone(&backend);
        Store::open_with_backend(&named, move || second()).unwrap();
    }

    #[test]
    fn new_file_in_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("a.redb");
        let error = Store::open(&path)
            .err()
            .expect("no directory to create the file in");
        assert!(matches!(error, OpenError::Storage { .. }), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");
    }
}
