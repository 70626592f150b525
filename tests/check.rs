//! `akstore check` on real files: a file written by the server passes with a summary and exit
//! status 0; a file with a broken invariant fails with the violation listed and a non-zero
//! status; a missing file is an error that names it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use akstore_store::tables;
use common::{Server, cluster_path};
use reqwest::Method;
use serde_json::json;

fn check(data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_akstore"))
        .args(["check", "--data"])
        .arg(data)
        .env_remove("AKSTORE_DATA")
        .output()
        .unwrap()
}

/// Writes one cluster with two pools through the server, then stops it.
fn written_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let data = dir.path().join("a.redb");
    let server = Server::start(&data, &[]);
    let created = server
        .request(Method::PUT, &cluster_path("rg1", "c1"))
        .header(
            "x-ms-client-request-id",
            "11111111-2222-4333-8444-555555555555",
        )
        .json(&json!({
            "location": "westeurope",
            "properties": {"agentPoolProfiles": [{"name": "np1"}, {"name": "np2"}]}
        }))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(server.stop(), Some(0));
    data
}

#[test]
fn check_passes_on_server_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_file(&dir);
    let output = check(&data);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("clusters:        1"), "{stdout}");
    assert!(stdout.contains("agent pools:     2"), "{stdout}");
    assert!(stdout.contains("request records: 1"), "{stdout}");
    assert!(stdout.contains("redb integrity:  passed"), "{stdout}");
    assert!(stdout.contains("violations:      0"), "{stdout}");
}

#[test]
fn check_fails_on_orphan_pool() {
    let dir = tempfile::tempdir().unwrap();
    let data = written_file(&dir);
    {
        let db = redb::Database::create(&data).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(tables::CLUSTERS)
            .unwrap()
            .remove(format!("{}/rg1/c1", common::SUBSCRIPTION).as_str())
            .unwrap();
        txn.commit().unwrap();
    }

    let output = check(&data);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("violations:      2"), "{stdout}");
    assert!(stdout.contains("its cluster does not exist"), "{stdout}");
    assert!(stderr.contains("failed the check"), "{stderr}");
}

#[test]
fn check_of_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("missing.redb");
    let output = check(&data);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!data.exists(), "check created the file");
}

/// Overwrites each 4 KiB page of a written file in turn with a fixed non-zero pattern. A page
/// that redb would panic on must instead give a clear error with exit status 1, from `check`
/// and `export` alike. A page that no tree uses may pass.
#[test]
fn damaged_pages_fail_without_panic() {
    const PAGE_BYTES: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let good = written_file(&dir);
    let original = std::fs::read(&good).unwrap();
    let damaged = dir.path().join("damaged.redb");
    let mut failures = 0;

    for page in 0..original.len() / PAGE_BYTES {
        let mut bytes = original.clone();
        for (offset, byte) in bytes[page * PAGE_BYTES..(page + 1) * PAGE_BYTES]
            .iter_mut()
            .enumerate()
        {
            *byte = 0xa2 ^ (offset as u8);
        }
        std::fs::write(&damaged, &bytes).unwrap();

        let checked = check(&damaged);
        let code = checked.status.code();
        assert!(
            code == Some(0) || code == Some(1),
            "check exited with {code:?} on damaged page {page}: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        if code == Some(1) {
            failures += 1;
            assert!(
                !checked.stderr.is_empty() || !checked.stdout.is_empty(),
                "check failed silently on damaged page {page}"
            );
        }

        std::fs::write(&damaged, &bytes).unwrap();
        let exported = Command::new(env!("CARGO_BIN_EXE_akstore"))
            .args(["export", "--data"])
            .arg(&damaged)
            .env_remove("AKSTORE_DATA")
            .output()
            .unwrap();
        let code = exported.status.code();
        assert!(
            code == Some(0) || code == Some(1),
            "export exited with {code:?} on damaged page {page}: {}",
            String::from_utf8_lossy(&exported.stderr)
        );
    }
    assert!(failures > 0, "no damaged page made check fail");
}
