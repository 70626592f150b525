//! Proves that an interrupted migration leaves the old schema and that the next run finishes
//! it: the real binary, built with the `failpoints` feature, is stopped at the failpoint
//! `migration::before_commit` (after every step ran, before their transaction commits) by an
//! injected error or by aborting the process, and is then run again without the failpoint.
#![cfg(all(feature = "failpoints", unix))]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use akstore_store::{CURRENT_SCHEMA_VERSION, FileSchema, inspect_schema};
use common::Server;
use common::fixtures::{assert_serves_records, copy_fixture, expected_records, run_akstore};

const ABORT_BEFORE_COMMIT: (&str, &str) = ("FAILPOINTS", "migration::before_commit=return(abort)");
const ERROR_BEFORE_COMMIT: (&str, &str) = ("FAILPOINTS", "migration::before_commit=return");
/// The signal `std::process::abort` raises: 6 on Linux and macOS.
const SIGABRT: i32 = 6;

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn migrate_aborted_before_commit_reruns() {
    for fixture in ["v1.redb", "v1-unclean.redb"] {
        let dir = tempfile::tempdir().unwrap();
        let data = copy_fixture(fixture, dir.path());

        let aborted = run_akstore(
            &["migrate", "--data", path_arg(&data)],
            &[ABORT_BEFORE_COMMIT],
        );
        assert_eq!(
            aborted.status.signal(),
            Some(SIGABRT),
            "{fixture}: {}",
            String::from_utf8_lossy(&aborted.stderr)
        );
        assert_eq!(
            inspect_schema(&data).unwrap(),
            FileSchema::Version(1),
            "{fixture}"
        );

        let rerun = run_akstore(&["migrate", "--data", path_arg(&data)], &[]);
        let summary = String::from_utf8_lossy(&rerun.stdout);
        assert!(
            rerun.status.success(),
            "{}",
            String::from_utf8_lossy(&rerun.stderr)
        );
        assert!(summary.contains("from schema version 1 to"), "{summary}");
        assert_eq!(
            inspect_schema(&data).unwrap(),
            FileSchema::Version(CURRENT_SCHEMA_VERSION)
        );

        let server = Server::start(&data, &["--no-migrate"]);
        assert_serves_records(&server, &expected_records(1));
    }
}

#[test]
fn migrate_error_before_commit_keeps_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_fixture("v1.redb", dir.path());

    let failed = run_akstore(
        &["migrate", "--data", path_arg(&data)],
        &[ERROR_BEFORE_COMMIT],
    );
    assert_eq!(failed.status.code(), Some(1));
    let message = String::from_utf8_lossy(&failed.stderr);
    assert!(
        message.contains("the migration was not applied"),
        "{message}"
    );
    assert_eq!(inspect_schema(&data).unwrap(), FileSchema::Version(1));

    let server = Server::start(&data, &[]);
    assert_serves_records(&server, &expected_records(1));
    assert_eq!(server.stop(), Some(0));
    assert_eq!(
        inspect_schema(&data).unwrap(),
        FileSchema::Version(CURRENT_SCHEMA_VERSION)
    );
}

#[test]
fn serve_aborted_during_migration_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = copy_fixture("v1.redb", dir.path());

    let aborted = run_akstore(
        &[
            "serve",
            "--data",
            path_arg(&data),
            "--listen",
            "127.0.0.1:0",
        ],
        &[ABORT_BEFORE_COMMIT],
    );
    assert_eq!(aborted.status.signal(), Some(SIGABRT));
    // The server listens for its probes before it opens the database, but serves the API only
    // once the migration has committed.
    let log = String::from_utf8_lossy(&aborted.stderr);
    assert!(
        !log.contains("serving the API"),
        "served before the migration: {log}"
    );
    assert_eq!(inspect_schema(&data).unwrap(), FileSchema::Version(1));

    let server = Server::start(&data, &[]);
    assert_serves_records(&server, &expected_records(1));
}
