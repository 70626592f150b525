//! A second `akstore serve` on a file that another process holds: it exits at once with a
//! non-zero status and a message naming the file and the lock, leaves the file's bytes as they
//! were, and the first process keeps serving.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, cluster_path, etag_of, json_body};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

/// How long the second process may take to give up; it must not wait for the lock.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn file_digest(path: &std::path::Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn second_server_on_locked_file_exits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("locked.redb");
    let first = Server::start(&data, &[]);
    let path = cluster_path("rg1", "c1");
    let created = first
        .request(Method::PUT, &path)
        .json(&json!({"location": "westeurope"}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let before = file_digest(&data);

    let started = Instant::now();
    let second = Command::new(env!("CARGO_BIN_EXE_akstore"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .env_remove("AKSTORE_DATA")
        .output()
        .unwrap();
    let elapsed = started.elapsed();

    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "second server exited with success"
    );
    assert!(
        elapsed < EXIT_TIMEOUT,
        "second server took {elapsed:?} to exit"
    );
    assert!(
        stderr.contains(&data.display().to_string()),
        "message does not name the file: {stderr}"
    );
    assert!(
        stderr.contains("locked"),
        "message does not name the lock: {stderr}"
    );
    assert_eq!(
        file_digest(&data),
        before,
        "the second server changed the file"
    );

    // The first server still reads and writes.
    let read = first.request(Method::GET, &path).send().unwrap();
    assert_eq!(read.status(), 200);
    let etag = etag_of(&json_body(read));
    let updated = first
        .request(Method::PUT, &path)
        .header("If-Match", format!("\"{etag}\""))
        .json(&json!({"location": "westeurope", "tags": {"k": "v"}}))
        .send()
        .unwrap();
    assert_eq!(updated.status(), 200);
}

#[test]
fn check_on_locked_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("locked.redb");
    let _server = Server::start(&data, &[]);
    let before = file_digest(&data);

    let check = Command::new(env!("CARGO_BIN_EXE_akstore"))
        .args(["check", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success());
    assert!(stderr.contains("locked"), "{stderr}");
    assert_eq!(file_digest(&data), before);
}
