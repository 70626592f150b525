//! Errors of the store, one enum per kind of operation, each variant saying what it means for
//! the data on disk.

use std::path::PathBuf;

use crate::codec::CodecError;

/// Why opening a database failed.
///
/// `Locked`, `Foreign`, `NewerSchema`, `OlderSchema` and `Missing` are found before the file is
/// opened for writing, so they leave it unchanged. `Storage` may come after redb's writable
/// open, which repairs a file that was not closed cleanly. `Migration` states whether the
/// migration may be on disk.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "database file {path} is locked by another process (redb holds an exclusive file lock \
         while a writer has it open); stop that process or choose another file"
    )]
    Locked { path: PathBuf },
    #[error("{path} is not an akstore database: {reason}")]
    Foreign { path: PathBuf, reason: String },
    #[error(
        "database {path} has schema version {found}, newer than version {supported}, the newest \
         this akstore supports; the file was not changed; use a newer akstore binary"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error(
        "database {path} has schema version {found}, older than version {supported} of this \
         akstore; run `akstore migrate --data {path}` first"
    )]
    OlderSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("no akstore database at {path}: the file does not exist or is empty")]
    Missing { path: PathBuf },
    /// The migration's error states whether the file may have changed: only a failed commit
    /// leaves that unknown.
    #[error("failed to migrate database {path}: {source}")]
    Migration {
        path: PathBuf,
        #[source]
        source: akstore_migrations::MigrationError,
    },
    #[error("failed to open database {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
}

/// Why a read failed. Reads never change the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("storage read failed: {0}")]
    Storage(#[from] redb::Error),
    #[error("stored record {key} cannot be decoded: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: CodecError,
    },
    #[error("continuation token {token:?} does not belong to this list")]
    InvalidContinuation { token: String },
    /// The writer is reopening the database after a failed write; retry shortly.
    #[error("the database is being reopened after a failed write")]
    Reopening,
}

/// Why a write failed. The variant says whether the write may be on disk.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    /// The transaction was aborted before its commit: nothing of it is on disk.
    #[error("the write was not applied: {0}")]
    NotApplied(String),
    /// The commit itself failed: the write may or may not be on disk.
    #[error("the commit failed, so the write may or may not be on disk: {0}")]
    OutcomeUnknown(String),
    /// The store is closed or closing; the write was never started.
    #[error("the store is closed; the write was not applied")]
    Closed,
}

impl From<redb::StorageError> for ReadError {
    fn from(error: redb::StorageError) -> Self {
        ReadError::Storage(error.into())
    }
}

impl From<redb::TableError> for ReadError {
    fn from(error: redb::TableError) -> Self {
        ReadError::Storage(error.into())
    }
}

impl From<redb::TransactionError> for ReadError {
    fn from(error: redb::TransactionError) -> Self {
        ReadError::Storage(error.into())
    }
}
