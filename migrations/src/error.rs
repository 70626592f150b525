//! Errors of reading a schema and of migrating, each variant saying what it means for the file.

/// Why the schema of a database could not be read. Reading never changes the file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The database has tables, but not akstore's metadata.
    #[error("{reason}")]
    NotAkstore { reason: String },
    #[error("failed to read the schema version: {0}")]
    Storage(#[from] redb::Error),
}

/// Why [`crate::migrate`] failed. Every variant but [`MigrationError::CommitFailed`] means the
/// migration's transaction was aborted and the file still has its old version.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("{reason}")]
    NotAkstore { reason: String },
    #[error(
        "schema version {found} is newer than version {supported}, the newest this akstore \
         supports; use a newer akstore binary"
    )]
    Newer { found: u64, supported: u64 },
    #[error("schema step {from} -> {to} failed, so the migration was not applied: {source}")]
    Step {
        from: u64,
        to: u64,
        #[source]
        source: redb::Error,
    },
    #[error("the migration was not applied: {0}")]
    NotApplied(String),
    /// redb applies a commit wholly or not at all, but after a failed commit it cannot say which.
    #[error(
        "the commit of the migration from schema version {from} to {to} failed, so the file has \
         either version; open it again to find out and to finish the migration: {source}"
    )]
    CommitFailed {
        from: u64,
        to: u64,
        #[source]
        source: redb::CommitError,
    },
}

impl From<redb::StorageError> for SchemaError {
    fn from(error: redb::StorageError) -> Self {
        SchemaError::Storage(error.into())
    }
}
