//! Emulated long-running operations of the `arm` profile, over the real binary. Covers the
//! polling headers, the operation-status and operation-result URLs, and the states a resource
//! reads as while an operation runs. Also covers the 409 for writes during an operation and
//! restarts in the middle of one.
//!
//! Tests that look at a running operation use a delay far longer than the test takes, so
//! nothing depends on timing; tests that wait for the end use a short delay and poll.

mod common;

use std::time::{Duration, Instant};

use common::{Server, cluster_path, etag_of, json_body, pool_path};
use reqwest::Method;
use reqwest::blocking::Response;
use serde_json::{Value, json};

/// A delay no test outlives: operations started with it are running for the whole test.
const LONG_DELAY: &str = "10m";
/// A delay short enough to wait out.
const SHORT_DELAY_MS: u64 = 1_000;
/// How long a test waits for an operation with [`SHORT_DELAY_MS`] to finish.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

fn cluster_body() -> Value {
    json!({
        "location": "West Europe",
        "properties": {"agentPoolProfiles": [{"name": "np1", "count": 1}, {"name": "np2"}]}
    })
}

fn arm_server(data: &std::path::Path, delay: &str) -> Server {
    Server::start(data, &["--profile", "arm", "--provisioning-delay", delay])
}

fn put_cluster(server: &Server, path: &str) -> Response {
    server
        .request(Method::PUT, path)
        .json(&cluster_body())
        .send()
        .unwrap()
}

/// A PUT with `If-None-Match: *`, which creates the cluster only if it does not exist.
fn create_cluster(server: &Server, path: &str) -> Response {
    server
        .request(Method::PUT, path)
        .header("If-None-Match", "*")
        .json(&cluster_body())
        .send()
        .unwrap()
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header; headers: {:?}", response.headers()))
        .to_str()
        .unwrap()
        .to_owned()
}

fn get(server: &Server, url: &str) -> Response {
    server.client().get(url).send().unwrap()
}

fn state_of(resource: &Value) -> &str {
    resource["properties"]["provisioningState"]
        .as_str()
        .unwrap()
}

/// Polls an operation-status URL until the status is terminal; returns the final body.
fn wait_for_status(server: &Server, status_url: &str) -> Value {
    let started = Instant::now();
    loop {
        let response = get(server, status_url);
        assert_eq!(response.status(), 200);
        let body = json_body(response);
        if body["status"] != "InProgress" {
            return body;
        }
        assert!(started.elapsed() < FINISH_TIMEOUT, "still running: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn put_reports_creating_with_polling_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = arm_server(&dir.path().join("db.redb"), LONG_DELAY);
    let path = cluster_path("rg", "c1");

    let created = put_cluster(&server, &path);
    assert_eq!(created.status(), 201);
    let status_url = header(&created, "azure-asyncoperation");
    let retry_after = header(&created, "retry-after");
    assert!(created.headers().get("location").is_none());
    let body = json_body(created);

    assert!(
        status_url.starts_with(&format!(
            "http://{}/subscriptions/{}/providers/Microsoft.ContainerService/locations/westeurope/operations/",
            server.addr,
            common::SUBSCRIPTION
        )),
        "{status_url}"
    );
    assert!(
        status_url.ends_with("?api-version=2026-08-01"),
        "{status_url}"
    );
    // Retry-After is whole seconds, capped at a minute.
    assert_eq!(retry_after, "60");
    assert_eq!(state_of(&body), "Creating");
    for profile in body["properties"]["agentPoolProfiles"].as_array().unwrap() {
        assert_eq!(profile["provisioningState"], "Creating");
    }

    // Reads show the running state, with the eTag the write returned.
    let read = json_body(server.request(Method::GET, &path).send().unwrap());
    assert_eq!(state_of(&read), "Creating");
    assert_eq!(etag_of(&read), etag_of(&body));
    let pool = json_body(
        server
            .request(Method::GET, &pool_path("rg", "c1", "np2"))
            .send()
            .unwrap(),
    );
    assert_eq!(state_of(&pool), "Creating");

    let status = json_body(get(&server, &status_url));
    let keys: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["id", "name", "status", "startTime", "endTime"]);
    assert_eq!(status["status"], "InProgress");
    assert_eq!(status["endTime"], Value::Null);
    let id = status["name"].as_str().unwrap();
    assert!(
        status["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/operations/{id}"))
    );
}

#[test]
fn operation_finishes_at_deadline_without_rotating_etag() {
    let dir = tempfile::tempdir().unwrap();
    let server = arm_server(&dir.path().join("db.redb"), &format!("{SHORT_DELAY_MS}ms"));
    let path = cluster_path("rg", "c1");

    let created = put_cluster(&server, &path);
    let status_url = header(&created, "azure-asyncoperation");
    let etag = etag_of(&json_body(created));

    let status = wait_for_status(&server, &status_url);
    assert_eq!(status["status"], "Succeeded");
    let start = humantime::parse_rfc3339(status["startTime"].as_str().unwrap()).unwrap();
    let end = humantime::parse_rfc3339(status["endTime"].as_str().unwrap()).unwrap();
    assert_eq!(
        end.duration_since(start).unwrap(),
        Duration::from_millis(SHORT_DELAY_MS)
    );

    let read = json_body(server.request(Method::GET, &path).send().unwrap());
    assert_eq!(state_of(&read), "Succeeded");
    assert_eq!(etag_of(&read), etag);
    for profile in read["properties"]["agentPoolProfiles"].as_array().unwrap() {
        assert_eq!(profile["provisioningState"], "Succeeded");
    }

    // An update after the create has finished returns 200 with Updating, and rotates the eTag
    // at acceptance.
    let updated = server
        .request(Method::PUT, &path)
        .header("If-Match", format!("\"{etag}\""))
        .json(&cluster_body())
        .send()
        .unwrap();
    assert_eq!(updated.status(), 200);
    let body = json_body(updated);
    assert_eq!(state_of(&body), "Updating");
    assert_ne!(etag_of(&body), etag);
}

#[test]
fn delete_reads_deleting_until_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = arm_server(&dir.path().join("db.redb"), &format!("{SHORT_DELAY_MS}ms"));
    let path = cluster_path("rg", "c1");
    let created = put_cluster(&server, &path);
    wait_for_status(&server, &header(&created, "azure-asyncoperation"));

    let accepted_at = Instant::now();
    let deleted = server.request(Method::DELETE, &path).send().unwrap();
    assert_eq!(deleted.status(), 202);
    let status_url = header(&deleted, "azure-asyncoperation");
    let result_url = header(&deleted, "location");
    assert!(result_url.contains("/operationresults/"), "{result_url}");
    assert_eq!(header(&deleted, "retry-after"), "1");

    // While the delete runs, the resource and its pools read as Deleting. The checks hold
    // when the reads came in well before the deadline, as they do unless the machine stalls.
    let read = server.request(Method::GET, &path).send().unwrap();
    let result = get(&server, &result_url);
    if accepted_at.elapsed() < Duration::from_millis(SHORT_DELAY_MS / 2) {
        let read = json_body(read);
        assert_eq!(state_of(&read), "Deleting");
        for profile in read["properties"]["agentPoolProfiles"].as_array().unwrap() {
            assert_eq!(profile["provisioningState"], "Deleting");
        }
        assert_eq!(result.status(), 202);
        assert_eq!(header(&result, "location"), result_url);
    }

    assert_eq!(wait_for_status(&server, &status_url)["status"], "Succeeded");
    assert_eq!(get(&server, &result_url).status(), 204);
    assert_eq!(get(&server, &server.url(&path)).status(), 404);
    let pool = server
        .request(Method::GET, &pool_path("rg", "c1", "np1"))
        .send()
        .unwrap();
    assert_eq!(pool.status(), 404);
    let list_path = format!(
        "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters",
        common::SUBSCRIPTION
    );
    let list = json_body(server.request(Method::GET, &list_path).send().unwrap());
    assert_eq!(list["value"], json!([]));

    // The name is free again at once.
    let again = create_cluster(&server, &path);
    assert_eq!(again.status(), 201);
}

#[test]
fn writes_during_operation_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = arm_server(&dir.path().join("db.redb"), LONG_DELAY);
    let path = cluster_path("rg", "c1");
    let created = put_cluster(&server, &path);
    let etag = etag_of(&json_body(created));

    let attempts = [
        server.request(Method::PUT, &path).json(&cluster_body()),
        server
            .request(Method::PUT, &path)
            .header("If-Match", format!("\"{etag}\""))
            .json(&cluster_body()),
        server
            .request(Method::PATCH, &path)
            .json(&json!({"tags": {"a": "b"}})),
        server.request(Method::DELETE, &path),
        server
            .request(Method::PUT, &pool_path("rg", "c1", "np3"))
            .json(&json!({"properties": {"count": 1}})),
        server
            .request(Method::PATCH, &pool_path("rg", "c1", "np1"))
            .json(&json!({"properties": {"count": 2}})),
        server.request(Method::DELETE, &pool_path("rg", "c1", "np1")),
    ];
    for attempt in attempts {
        let response = attempt.send().unwrap();
        assert_eq!(response.status(), 409);
        assert!(header(&response, "retry-after").parse::<u64>().unwrap() >= 1);
        let body = json_body(response);
        assert_eq!(body["error"]["code"], "OperationNotAllowed", "{body}");
    }

    // The precondition comes first: a stale eTag or an existing resource is 412, not 409.
    let stale = server
        .request(Method::PUT, &path)
        .header("If-Match", "\"00000000-0000-0000-0000-000000000000\"")
        .json(&cluster_body())
        .send()
        .unwrap();
    assert_eq!(stale.status(), 412);
    let exists = create_cluster(&server, &path);
    assert_eq!(exists.status(), 412);

    // Nothing changed, and other clusters are not blocked.
    let read = json_body(server.request(Method::GET, &path).send().unwrap());
    assert_eq!(etag_of(&read), etag);
    assert_eq!(read["tags"], Value::Null);
    let other = put_cluster(&server, &cluster_path("rg", "c2"));
    assert_eq!(other.status(), 201);
}

#[test]
fn pool_operation_blocks_its_cluster_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db.redb");
    {
        // The cluster is created without an operation, so only the pool's runs below.
        let server = Server::start(&data, &["--profile", "arm"]);
        let created = put_cluster(&server, &cluster_path("rg", "c1"));
        assert_eq!(created.status(), 201);
        assert!(created.headers().get("azure-asyncoperation").is_none());
        assert_eq!(state_of(&json_body(created)), "Succeeded");
        assert_eq!(server.stop(), Some(0));
    }
    let server = arm_server(&data, LONG_DELAY);

    let pool = server
        .request(Method::PUT, &pool_path("rg", "c1", "np3"))
        .json(&json!({"properties": {"count": 1}}))
        .send()
        .unwrap();
    assert_eq!(pool.status(), 201);
    assert!(pool.headers().get("azure-asyncoperation").is_some());
    assert_eq!(state_of(&json_body(pool)), "Creating");

    // Only the pool reads as Creating; the cluster and its other pools are Succeeded.
    let cluster = json_body(
        server
            .request(Method::GET, &cluster_path("rg", "c1"))
            .send()
            .unwrap(),
    );
    assert_eq!(state_of(&cluster), "Succeeded");
    let states: Vec<(String, String)> = cluster["properties"]["agentPoolProfiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["provisioningState"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("np1".to_owned(), "Succeeded".to_owned()),
            ("np2".to_owned(), "Succeeded".to_owned()),
            ("np3".to_owned(), "Creating".to_owned()),
        ]
    );

    let patch = server
        .request(Method::PATCH, &cluster_path("rg", "c1"))
        .json(&json!({"tags": {"a": "b"}}))
        .send()
        .unwrap();
    assert_eq!(patch.status(), 409);
}

#[test]
fn zero_delay_answers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("db.redb"), &["--profile", "arm"]);
    let path = cluster_path("rg", "c1");

    let created = put_cluster(&server, &path);
    assert_eq!(created.status(), 201);
    assert!(created.headers().get("azure-asyncoperation").is_none());
    assert!(created.headers().get("retry-after").is_none());
    assert_eq!(state_of(&json_body(created)), "Succeeded");

    let deleted = server.request(Method::DELETE, &path).send().unwrap();
    assert_eq!(deleted.status(), 202);
    assert!(deleted.headers().get("location").is_none());
    assert!(deleted.headers().get("azure-asyncoperation").is_none());
    assert_eq!(get(&server, &server.url(&path)).status(), 404);
}

#[test]
fn restart_during_create_finishes_the_operation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db.redb");
    let path = cluster_path("rg", "c1");

    let server = arm_server(&data, "2s");
    let created = put_cluster(&server, &path);
    assert_eq!(created.status(), 201);
    let status_path = operation_path(&header(&created, "azure-asyncoperation"));
    let etag = etag_of(&json_body(created));
    server.kill();

    // Restarted with another configuration: the stored deadline still applies.
    let server = Server::start(&data, &[]);
    let status_url = server.raw_url(&status_path);
    let status = wait_for_status(&server, &status_url);
    assert_eq!(status["status"], "Succeeded");
    assert!(status["endTime"].is_string());

    let read = json_body(server.request(Method::GET, &path).send().unwrap());
    assert_eq!(state_of(&read), "Succeeded");
    assert_eq!(etag_of(&read), etag);

    // Writes go through again once the operation has ended.
    let patched = server
        .request(Method::PATCH, &path)
        .header("If-Match", format!("\"{etag}\""))
        .json(&json!({"tags": {"after": "restart"}}))
        .send()
        .unwrap();
    assert_eq!(patched.status(), 200);
}

#[test]
fn restart_during_delete_removes_the_resource() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db.redb");
    let path = cluster_path("rg", "c1");

    let server = Server::start(&data, &["--profile", "arm"]);
    let created = put_cluster(&server, &path);
    assert_eq!(created.status(), 201);
    server.kill();

    let server = arm_server(&data, &format!("{SHORT_DELAY_MS}ms"));
    let deleted = server.request(Method::DELETE, &path).send().unwrap();
    assert_eq!(deleted.status(), 202);
    let status_path = operation_path(&header(&deleted, "azure-asyncoperation"));
    let result_path = operation_path(&header(&deleted, "location"));
    server.kill();

    // The server was down past the deadline, so the first read after the restart finds the
    // delete done.
    std::thread::sleep(Duration::from_millis(SHORT_DELAY_MS + 200));
    let server = Server::start(&data, &["--profile", "documented"]);
    assert_eq!(get(&server, &server.url(&path)).status(), 404);
    let status = json_body(get(&server, &server.raw_url(&status_path)));
    assert_eq!(status["status"], "Succeeded");
    let start = humantime::parse_rfc3339(status["startTime"].as_str().unwrap()).unwrap();
    let end = humantime::parse_rfc3339(status["endTime"].as_str().unwrap()).unwrap();
    assert_eq!(
        end.duration_since(start).unwrap(),
        Duration::from_millis(SHORT_DELAY_MS)
    );
    assert_eq!(get(&server, &server.raw_url(&result_path)).status(), 204);

    // Another crash changes nothing: the resource stays gone and its name is free.
    server.kill();
    let server = Server::start(&data, &["--profile", "documented"]);
    assert_eq!(get(&server, &server.url(&path)).status(), 404);
    let recreated = create_cluster(&server, &path);
    assert_eq!(recreated.status(), 201);
}

#[test]
fn operation_urls_reject_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = arm_server(&dir.path().join("db.redb"), LONG_DELAY);
    let created = put_cluster(&server, &cluster_path("rg", "c1"));
    let status_url = header(&created, "azure-asyncoperation");
    let status_path = operation_path(&status_url);
    let id = json_body(get(&server, &status_url))["name"]
        .as_str()
        .unwrap()
        .to_owned();

    let unknown = status_path.replace(&id, "7f0c8a52-1f3a-4b8e-9d55-2d4b1f0e9a11");
    let wrong_location = status_path.replace("/westeurope/", "/eastus/");
    let not_an_id = status_path.replace(&id, "not-an-id");
    let other_subscription =
        status_path.replace(common::SUBSCRIPTION, "00000000-0000-0000-0000-0000000000bb");
    for path in [unknown, wrong_location, not_an_id, other_subscription] {
        let response = get(&server, &server.raw_url(&path));
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(json_body(response)["error"]["code"], "OperationNotFound");
    }

    let without_version = status_url.split('?').next().unwrap().to_owned();
    let response = get(&server, &without_version);
    assert_eq!(response.status(), 400);
    assert_eq!(
        json_body(response)["error"]["code"],
        "MissingApiVersionParameter"
    );

    let response = server.client().delete(&status_url).send().unwrap();
    assert_eq!(response.status(), 405);
}

#[test]
fn delay_needs_arm_profile() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db.redb");
    let log = Server::try_start(&data, &["--provisioning-delay", "1s"])
        .err()
        .expect("the documented profile must reject a provisioning delay");
    assert!(log.contains("--profile arm"), "{log}");

    let log = Server::try_start(&data, &["--profile", "arm", "--provisioning-delay", "soon"])
        .err()
        .expect("an invalid duration must be rejected");
    assert!(log.contains("--provisioning-delay"), "{log}");
}

#[test]
fn request_id_headers_on_every_response() {
    let dir = tempfile::tempdir().unwrap();
    let server = arm_server(&dir.path().join("db.redb"), LONG_DELAY);
    let client_request_id = "5b1d7c6e-2a44-4c3e-9f0e-0c9b6f0a1d22";

    let created = server
        .request(Method::PUT, &cluster_path("rg", "c1"))
        .header("X-MS-Client-Request-Id", client_request_id)
        .json(&cluster_body())
        .send()
        .unwrap();
    let status_url = header(&created, "azure-asyncoperation");
    let responses = [
        created,
        server
            .client()
            .get(&status_url)
            .header("x-ms-client-request-id", client_request_id)
            .send()
            .unwrap(),
        server
            .client()
            .get(server.raw_url("/subscriptions/x"))
            .header("X-Ms-Client-Request-Id", client_request_id)
            .send()
            .unwrap(),
    ];
    let mut request_ids = Vec::new();
    for response in responses {
        let request_id = header(&response, "x-ms-request-id");
        uuid::Uuid::parse_str(&request_id).expect("x-ms-request-id is a UUID");
        request_ids.push(request_id);
        assert_eq!(
            header(&response, "x-ms-correlation-request-id"),
            client_request_id
        );
    }
    request_ids.dedup();
    assert_eq!(
        request_ids.len(),
        3,
        "every response has its own request id"
    );
}

/// Path and query of an absolute URL the server handed out.
fn operation_path(url: &str) -> String {
    let without_scheme = url.strip_prefix("http://").expect("an http URL");
    let path_start = without_scheme.find('/').expect("a path");
    without_scheme[path_start..].to_owned()
}
