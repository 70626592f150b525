//! Exactly-once retries over HTTP: a write retried with the same `x-ms-client-request-id`
//! returns its original outcome (across a restart too) instead of failing on the eTag its
//! first attempt rotated, and a different request with a used id is rejected with 422.

mod common;

use common::{Server, cluster_path, etag_of, json_body, pool_path};
use reqwest::Method;
use serde_json::{Value, json};

const REQUEST_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn create_body() -> Value {
    json!({"location": "westeurope", "properties": {"agentPoolProfiles": [{"name": "np1"}]}})
}

#[test]
fn retried_create_returns_original_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a.redb");
    let path = cluster_path("rg1", "c1");
    let server = Server::start(&data, &[]);
    let create = |server: &Server| {
        server
            .request(Method::PUT, &path)
            .header("If-None-Match", "*")
            .header("x-ms-client-request-id", REQUEST_ID)
            .json(&create_body())
            .send()
            .unwrap()
    };

    let first = create(&server);
    assert_eq!(first.status(), 201);
    let first = json_body(first);

    let retry = create(&server);
    assert_eq!(retry.status(), 201, "a retry gets the original status");
    assert_eq!(json_body(retry), first, "a retry gets the original body");

    // Across a restart as well, and the retry wrote nothing.
    assert_eq!(server.stop(), Some(0));
    let server = Server::start(&data, &[]);
    let retry = create(&server);
    assert_eq!(retry.status(), 201);
    assert_eq!(json_body(retry), first);
    let read = json_body(server.request(Method::GET, &path).send().unwrap());
    assert_eq!(etag_of(&read), etag_of(&first));

    // The same create without the id fails its precondition, as it should.
    let plain = server
        .request(Method::PUT, &path)
        .header("If-None-Match", "*")
        .json(&create_body())
        .send()
        .unwrap();
    assert_eq!(plain.status(), 412);
}

#[test]
fn reused_request_id_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("a.redb"), &[]);
    let created = server
        .request(Method::PUT, &cluster_path("rg1", "c1"))
        .header("x-ms-client-request-id", REQUEST_ID)
        .json(&create_body())
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);

    for (method, path, body) in [
        (
            Method::PUT,
            cluster_path("rg1", "c1"),
            json!({"location": "northeurope"}),
        ),
        (Method::PUT, cluster_path("rg1", "c2"), create_body()),
        (
            Method::PUT,
            pool_path("rg1", "c1", "np2"),
            json!({"properties": {}}),
        ),
    ] {
        let reused = server
            .request(method, &path)
            .header("x-ms-client-request-id", REQUEST_ID)
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(reused.status(), 422, "{path}");
        let error = json_body(reused);
        assert_eq!(error["error"]["code"], "ClientRequestIdReused", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains(REQUEST_ID),
            "{error}"
        );
    }

    // Nothing of the rejected requests was written.
    let cluster = json_body(
        server
            .request(Method::GET, &cluster_path("rg1", "c1"))
            .send()
            .unwrap(),
    );
    assert_eq!(cluster["location"], "westeurope");
    let missing = server
        .request(Method::GET, &cluster_path("rg1", "c2"))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    let pool = server
        .request(Method::GET, &pool_path("rg1", "c1", "np2"))
        .send()
        .unwrap();
    assert_eq!(pool.status(), 404);
}

#[test]
fn retried_delete_returns_original_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("a.redb"), &["--profile", "arm"]);
    let path = cluster_path("rg1", "c1");
    let created = json_body(
        server
            .request(Method::PUT, &path)
            .json(&create_body())
            .send()
            .unwrap(),
    );
    let delete = || {
        server
            .request(Method::DELETE, &path)
            .header("If-Match", format!("\"{}\"", etag_of(&created)))
            .header("x-ms-client-request-id", REQUEST_ID)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(delete(), 202);
    assert_eq!(
        delete(),
        202,
        "the retry is not a 412 for the vanished eTag"
    );
}

#[test]
fn failed_write_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("a.redb"), &[]);
    let path = cluster_path("rg1", "c1");
    let stale = server
        .request(Method::PUT, &path)
        .header("If-Match", "\"00000000-0000-4000-8000-000000000000\"")
        .header("x-ms-client-request-id", REQUEST_ID)
        .json(&create_body())
        .send()
        .unwrap();
    assert_eq!(stale.status(), 412);

    // A request that wrote nothing leaves its id free.
    let create = server
        .request(Method::PUT, &path)
        .header("x-ms-client-request-id", REQUEST_ID)
        .json(&json!({"location": "northeurope"}))
        .send()
        .unwrap();
    assert_eq!(create.status(), 201);
}

#[test]
fn overlong_request_id_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("a.redb"), &[]);
    let rejected = server
        .request(Method::PUT, &cluster_path("rg1", "c1"))
        .header("x-ms-client-request-id", "x".repeat(257))
        .json(&create_body())
        .send()
        .unwrap();
    assert_eq!(rejected.status(), 400);
    assert_eq!(
        json_body(rejected)["error"]["code"],
        "InvalidClientRequestId"
    );
}
