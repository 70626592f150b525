//! Proves the harness: the real binary starts on a temporary file, serves a create and a read
//! over a real socket, and keeps the write across a restart on the same file.

mod common;

use common::{Server, cluster_path, etag_of, json_body};
use reqwest::Method;
use serde_json::json;

#[test]
fn created_cluster_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let path = cluster_path("rg1", "c1");

    let server = Server::start(&data, &[]);
    let created = server
        .request(Method::PUT, &path)
        .header("If-None-Match", "*")
        .json(&json!({"location": "westeurope", "properties": {"agentPoolProfiles": [{"name": "np1"}]}}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let etag = etag_of(&json_body(created));
    assert_eq!(server.stop(), Some(0));

    let server = Server::start(&data, &[]);
    let read = server.request(Method::GET, &path).send().unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(etag_of(&json_body(read)), etag);
}
