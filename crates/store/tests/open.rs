//! Proves what opening a database file does to it, on real redb files: a new file gets the
//! current schema and every table; a file of a newer schema, of another program or locked by
//! another handle is rejected with its bytes unchanged, even when it needs crash repair; a file
//! that needs crash repair and is akstore's own opens with its records.

mod support;

use std::path::Path;

use akstore_store::{
    CURRENT_SCHEMA_VERSION, FileSchema, OpenError, OpenOptions, Store, inspect_schema,
    migrate_file, tables,
};
use redb::{Database, TableDefinition};
use support::{
    CURRENT_TABLES, cluster_key, crash_image, file_bytes, needs_repair, put_cluster,
    set_schema_version, stored_schema_version, table_names, write_schema_version,
};

/// A closed database at the current schema with one cluster.
fn current_database(path: &Path) {
    let store = Store::open(path).unwrap();
    store.write(put_cluster("c1", 1, &[])).unwrap();
}

/// Opens `path` every way akstore can and checks that each is rejected with an error that
/// `is_expected` accepts, and that the file's bytes did not change.
fn assert_rejected_unchanged(path: &Path, is_expected: impl Fn(&OpenError) -> bool) {
    let before = file_bytes(path);
    let attempts: [(&str, Result<(), OpenError>); 4] = [
        ("Store::open", Store::open(path).map(drop)),
        (
            "Store::open_with without migration",
            Store::open_with(path, OpenOptions { migrate: false }).map(drop),
        ),
        ("inspect_schema", inspect_schema(path).map(drop)),
        ("migrate_file", migrate_file(path).map(drop)),
    ];
    for (how, result) in attempts {
        let error = result.expect_err(how);
        assert!(is_expected(&error), "{how} failed unexpectedly: {error}");
    }
    assert!(file_bytes(path) == before, "{} was changed", path.display());
}

#[test]
fn new_database_has_current_schema_and_every_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.redb");
    assert_eq!(inspect_schema(&path).unwrap(), FileSchema::New);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.counts().unwrap().revision, 0);
    drop(store);

    assert_eq!(stored_schema_version(&path), CURRENT_SCHEMA_VERSION);
    assert_eq!(table_names(&path), CURRENT_TABLES);
    assert_eq!(
        inspect_schema(&path).unwrap(),
        FileSchema::Version(CURRENT_SCHEMA_VERSION)
    );
    let listed: Vec<&str> = tables::RECORD_TABLES
        .iter()
        .map(redb::TableHandle::name)
        .collect();
    assert_eq!(listed, ["clusters", "pools", "requests", "operations"]);
}

#[test]
fn empty_file_becomes_new_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.redb");
    std::fs::write(&path, b"").unwrap();
    drop(Store::open(&path).unwrap());
    assert_eq!(table_names(&path), CURRENT_TABLES);
}

#[test]
fn newer_schema_is_rejected_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.redb");
    current_database(&path);
    let newer = CURRENT_SCHEMA_VERSION + 1;
    set_schema_version(&path, newer);

    let error = Store::open(&path).map(drop).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, OpenError::NewerSchema { .. }), "{message}");
    assert!(
        message.contains(&format!("schema version {newer}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("version {CURRENT_SCHEMA_VERSION}")),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");

    assert_rejected_unchanged(&path, |error| {
        matches!(error, OpenError::NewerSchema { found, supported, .. }
            if *found == newer && *supported == CURRENT_SCHEMA_VERSION)
    });
}

#[test]
fn newer_schema_needing_repair_is_rejected_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.redb");
    let image = dir.path().join("newer-crashed.redb");
    current_database(&path);
    let db = Database::open(&path).unwrap();
    write_schema_version(&db, CURRENT_SCHEMA_VERSION + 1);
    crash_image(&db, &path, &image);
    drop(db);

    assert_rejected_unchanged(&image, |error| {
        matches!(error, OpenError::NewerSchema { found, .. }
            if *found == CURRENT_SCHEMA_VERSION + 1)
    });
    assert!(needs_repair(&image));
}

#[test]
fn current_schema_needing_repair_opens_with_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("current.redb");
    let image = dir.path().join("current-crashed.redb");
    current_database(&path);
    let db = Database::open(&path).unwrap();
    crash_image(&db, &path, &image);
    drop(db);

    assert_eq!(
        inspect_schema(&image).unwrap(),
        FileSchema::Version(CURRENT_SCHEMA_VERSION)
    );
    let store = Store::open(&image).unwrap();
    assert!(store.get_cluster(&cluster_key("c1")).unwrap().is_some());
    assert_eq!(store.counts().unwrap().revision, 1);
    drop(store);
    assert!(!needs_repair(&image), "a clean close records the shutdown");
}

#[test]
fn foreign_files_are_rejected_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    type Write = fn(&Path);
    let foreign_files: [(&str, Write); 6] = [
        ("text.redb", |path| {
            std::fs::write(path, "name,value\nthis is not a database\n").unwrap()
        }),
        ("binary.redb", |path| {
            let bytes: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 256) as u8).collect();
            std::fs::write(path, bytes).unwrap()
        }),
        ("other-tables.redb", |path| {
            let db = Database::create(path).unwrap();
            let txn = db.begin_write().unwrap();
            let table: TableDefinition<u64, u64> = TableDefinition::new("users");
            txn.open_table(table).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }),
        ("meta-of-other-type.redb", |path| {
            let db = Database::create(path).unwrap();
            let txn = db.begin_write().unwrap();
            let table: TableDefinition<&str, &str> = TableDefinition::new("meta");
            txn.open_table(table)
                .unwrap()
                .insert("schema_version", "1")
                .unwrap();
            txn.commit().unwrap();
        }),
        ("meta-without-version.redb", |path| {
            let db = Database::create(path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::META)
                .unwrap()
                .insert("revision", 4)
                .unwrap();
            txn.commit().unwrap();
        }),
        ("version-zero.redb", |path| {
            let db = Database::create(path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::META)
                .unwrap()
                .insert(tables::SCHEMA_VERSION_KEY, 0)
                .unwrap();
            txn.commit().unwrap();
        }),
    ];
    for (name, write) in foreign_files {
        let path = dir.path().join(name);
        write(&path);
        assert_rejected_unchanged(&path, |error| {
            let message = error.to_string();
            matches!(error, OpenError::Foreign { .. })
                && message.contains("is not an akstore database")
        });
    }
}

#[test]
fn file_locked_by_another_handle_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.redb");
    let first = Store::open(&path).unwrap();
    first.write(put_cluster("c1", 1, &[])).unwrap();

    let second = Store::open(&path).map(drop).unwrap_err();
    assert!(matches!(second, OpenError::Locked { .. }), "{second}");
    let inspected = inspect_schema(&path).unwrap_err();
    assert!(matches!(inspected, OpenError::Locked { .. }), "{inspected}");
    assert!(first.is_writable());
}

#[test]
fn migrate_file_rejects_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.redb");
    let error = migrate_file(&path).unwrap_err();
    assert!(matches!(error, OpenError::Missing { .. }), "{error}");
    assert!(!path.exists(), "migrate must not create a database");
}

#[test]
fn migrate_file_on_current_database_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("current.redb");
    current_database(&path);
    let report = migrate_file(&path).unwrap();
    assert_eq!(report.from, CURRENT_SCHEMA_VERSION);
    assert_eq!(report.to, CURRENT_SCHEMA_VERSION);
    assert!(report.steps.is_empty());
}
