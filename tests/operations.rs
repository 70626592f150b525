//! Proves the operations surface over the real binary and a real socket: configuration, the
//! probes in each state, metrics counting a known sequence of requests, bearer-token
//! authentication, the request limits (each leaving the store unchanged) and the logs.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    API_VERSION, RawConnection, SUBSCRIPTION, Server, akstore_command, cluster_path, etag_of,
    in_shell, json_body, serve_command,
};
use reqwest::Method;
use serde_json::{Value, json};

const CLUSTER_ROUTE: &str = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.ContainerService/managedClusters/{resourceName}";

fn cluster_body(pools: &[&str]) -> Value {
    let profiles: Vec<Value> = pools.iter().map(|name| json!({ "name": name })).collect();
    json!({ "location": "westeurope", "properties": { "agentPoolProfiles": profiles } })
}

/// Parses the Prometheus text format into `name{labels}` → value.
fn scrape(server: &Server) -> HashMap<String, f64> {
    let response = server.get_raw("/metrics");
    assert_eq!(response.status(), 200);
    let text = response.text().unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn metric(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in {metrics:#?}"))
}

fn requests_series(method: &str, route: &str, status: u16) -> String {
    format!(r#"akstore_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#)
}

fn status_of(server: &Server, path: &str) -> u16 {
    server
        .request(Method::GET, path)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn version_names_binary_and_schema() {
    let output = akstore_command().arg("--version").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text.trim(),
        format!(
            "akstore {} (schema version {})",
            env!("CARGO_PKG_VERSION"),
            akstore_store::CURRENT_SCHEMA_VERSION
        )
    );
}

#[test]
fn help_names_every_environment_variable() {
    let cases: [(&str, &[&str]); 3] = [
        (
            "serve",
            &[
                "AKSTORE_DATA",
                "AKSTORE_LISTEN",
                "AKSTORE_NO_MIGRATE",
                "AKSTORE_PROFILE",
                "AKSTORE_PROVISIONING_DELAY",
                "AKSTORE_PAGE_SIZE",
                "AKSTORE_AUTH_TOKEN_FILE",
                "AKSTORE_REQUEST_TIMEOUT",
                "AKSTORE_MAX_CONNECTIONS",
                "AKSTORE_SHUTDOWN_GRACE",
                "AKSTORE_LOG_FORMAT",
            ],
        ),
        ("export", &["AKSTORE_DATA", "AKSTORE_EXPORT_OUT"]),
        ("import", &["AKSTORE_DATA", "AKSTORE_IMPORT_IN"]),
    ];
    for (command, variables) in cases {
        let output = akstore_command()
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        for variable in variables {
            assert!(
                help.contains(variable),
                "{command} --help lacks {variable}:\n{help}"
            );
        }
    }
}

#[test]
fn options_are_read_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let mut command = serve_command(&data, &[]);
    command.env("AKSTORE_PAGE_SIZE", "1");
    let server = Server::try_start_command(command, &data).unwrap();
    for name in ["c1", "c2"] {
        let status = server
            .request(Method::PUT, &cluster_path("rg", name))
            .json(&cluster_body(&[]))
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }
    let list_path = format!(
        "/subscriptions/{SUBSCRIPTION}/providers/Microsoft.ContainerService/managedClusters"
    );
    let page = json_body(server.request(Method::GET, &list_path).send().unwrap());
    assert_eq!(page["value"].as_array().unwrap().len(), 1);
    assert!(page["nextLink"].is_string());
}

#[test]
fn probes_answer_ok_and_ready() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &[]);
    let health = server.get_raw("/healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(json_body(health)["status"], "ok");
    let ready = server.get_raw("/readyz");
    assert_eq!(ready.status(), 200);
    assert_eq!(json_body(ready)["status"], "ready");
}

#[test]
fn probe_wrong_method_gets_arm_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &[]);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = server.client().post(server.raw_url(path)).send().unwrap();
        assert_eq!(response.status(), 405, "{path}");
        assert_eq!(response.headers()["allow"], "GET, HEAD", "{path}");
        let body = json_body(response);
        assert_eq!(body["error"]["code"], "MethodNotAllowed", "{path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("POST"),
            "{body}"
        );
    }
}

/// A file-size limit makes the disk refuse to grow the database, the way a full disk does. The
/// failed write gets a 5xx, the failure is counted, the server stays alive and reopens the
/// database, and every write acknowledged before is on disk.
#[test]
fn storage_failure_is_reported_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    // 2048 blocks of 1 KiB; SIGXFSZ ignored so the write fails with EFBIG instead.
    let command = in_shell(&serve_command(&data, &[]), "trap '' XFSZ; ulimit -f 2048");
    let server = Server::try_start_command(command, &data).unwrap();

    let blob = "x".repeat(400 * 1024);
    let mut acknowledged = Vec::new();
    let mut failure = None;
    for index in 0..30 {
        let name = format!("big{index}");
        let response = server
            .request(Method::PUT, &cluster_path("rg", &name))
            .json(&json!({ "location": "westeurope", "properties": { "blob": blob } }))
            .send()
            .unwrap();
        if response.status().is_success() {
            acknowledged.push((name, etag_of(&json_body(response))));
        } else {
            failure = Some(response);
            break;
        }
    }
    let failure = failure.expect("the file-size limit never failed a write");
    assert!(failure.status().is_server_error(), "{}", failure.status());
    assert!(
        !acknowledged.is_empty(),
        "no write succeeded below the limit"
    );

    assert_eq!(server.get_raw("/healthz").status(), 200);
    let metrics = scrape(&server);
    assert!(metric(&metrics, "akstore_http_server_errors_total") >= 1.0);
    let failures: f64 = metrics
        .iter()
        .filter(|(series, _)| series.starts_with("akstore_store_commit_failures_total"))
        .map(|(_, value)| value)
        .sum();
    assert!(failures >= 1.0, "{metrics:#?}");
    assert!(server.wait_for_log("group commit failed", Duration::from_secs(5)));
    assert_eq!(server.stop(), Some(0));

    let server = Server::start(&data, &[]);
    for (name, etag) in &acknowledged {
        let read = server
            .request(Method::GET, &cluster_path("rg", name))
            .send()
            .unwrap();
        assert_eq!(read.status(), 200, "acknowledged {name} is missing");
        assert_eq!(&etag_of(&json_body(read)), etag);
    }
}

/// Tests that need the binary's failpoints, which CI builds in with `--features failpoints`.
#[cfg(feature = "failpoints")]
mod with_failpoints {
    use super::*;

    fn start_with_failpoints(data: &std::path::Path, failpoints: &str, extra: &[&str]) -> Server {
        let mut command = serve_command(data, extra);
        command.env("FAILPOINTS", failpoints);
        Server::try_start_command(command, data).unwrap()
    }

    #[test]
    fn readyz_is_unavailable_until_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("akstore.redb");
        let server = start_with_failpoints(
            &data,
            "writer::before_commit=1*return;writer::reopen=return",
            &[],
        );

        let failed = server
            .request(Method::PUT, &cluster_path("rg", "c1"))
            .json(&cluster_body(&[]))
            .send()
            .unwrap();
        assert_eq!(failed.status(), 500);
        assert_eq!(json_body(failed)["error"]["code"], "CommitOutcomeUnknown");

        let ready = server.get_raw("/readyz");
        assert_eq!(ready.status(), 503);
        assert_eq!(json_body(ready)["status"], "unavailable");
        assert_eq!(server.get_raw("/healthz").status(), 200);
        assert_eq!(metric(&scrape(&server), "akstore_store_writable"), 0.0);
        let refused = server
            .request(Method::PUT, &cluster_path("rg", "c2"))
            .json(&cluster_body(&[]))
            .send()
            .unwrap();
        assert_eq!(
            refused.status(),
            503,
            "a write was accepted while unwritable"
        );
    }

    /// A commit slower than the request timeout is still answered with its outcome, and the
    /// write is whole on disk.
    #[test]
    fn timeout_never_cuts_a_handed_over_write() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("akstore.redb");
        let server = start_with_failpoints(
            &data,
            "writer::before_commit=1*sleep(2500)",
            &["--request-timeout", "1s"],
        );

        let started = Instant::now();
        let created = server
            .request(Method::PUT, &cluster_path("rg", "slow"))
            .json(&cluster_body(&["np1", "np2"]))
            .send()
            .unwrap();
        assert_eq!(created.status(), 201);
        assert!(started.elapsed() >= Duration::from_millis(2500));
        let etag = etag_of(&json_body(created));
        assert_eq!(server.stop(), Some(0));

        let server = Server::start(&data, &[]);
        let read = server
            .request(Method::GET, &cluster_path("rg", "slow"))
            .send()
            .unwrap();
        assert_eq!(read.status(), 200);
        let read = json_body(read);
        assert_eq!(etag_of(&read), etag);
        assert_eq!(
            read["properties"]["agentPoolProfiles"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}

#[test]
fn metrics_count_a_known_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &[]);
    let path = cluster_path("rg", "c1");
    let send = |method: Method, path: &str, if_match: Option<&str>, body: Option<Value>| {
        let mut request = server.request(method, path);
        if let Some(value) = if_match {
            request = request.header("If-Match", value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().unwrap().status().as_u16()
    };

    assert_eq!(
        send(
            Method::PUT,
            &path,
            None,
            Some(cluster_body(&["np1", "np2"]))
        ),
        201
    );
    let created_again = server
        .request(Method::PUT, &path)
        .header("If-None-Match", "*")
        .json(&cluster_body(&[]))
        .send()
        .unwrap();
    assert_eq!(created_again.status(), 412);
    assert_eq!(send(Method::GET, &path, None, None), 200);
    assert_eq!(
        send(Method::GET, &cluster_path("rg", "c2"), None, None),
        404
    );
    let tags = json!({ "tags": { "a": "b" } });
    assert_eq!(
        send(Method::PATCH, &path, Some("\"stale\""), Some(tags)),
        412
    );
    assert_eq!(
        send(Method::GET, "/subscriptions/not-a-guid", None, None),
        400
    );

    let metrics = scrape(&server);
    for (method, status, count) in [("PUT", 201, 1.0), ("PUT", 412, 1.0), ("GET", 200, 1.0)] {
        assert_eq!(
            metric(&metrics, &requests_series(method, CLUSTER_ROUTE, status)),
            count,
            "{method} {status}"
        );
    }
    assert_eq!(
        metric(&metrics, &requests_series("GET", CLUSTER_ROUTE, 404)),
        1.0
    );
    assert_eq!(
        metric(&metrics, &requests_series("PATCH", CLUSTER_ROUTE, 412)),
        1.0
    );
    assert_eq!(
        metric(&metrics, &requests_series("GET", "unmatched", 400)),
        1.0
    );
    assert_eq!(
        metric(&metrics, "akstore_http_precondition_failed_total"),
        2.0
    );
    assert_eq!(metric(&metrics, "akstore_http_conflicts_total"), 0.0);
    assert_eq!(metric(&metrics, "akstore_http_server_errors_total"), 0.0);
    let put_latency = format!(
        r#"akstore_http_request_duration_seconds_count{{method="PUT",route="{CLUSTER_ROUTE}"}}"#
    );
    assert_eq!(metric(&metrics, &put_latency), 2.0);

    // Three writes reached the writer one at a time: the PUT and both failed preconditions.
    assert_eq!(
        metric(&metrics, "akstore_store_commit_duration_seconds_count"),
        3.0
    );
    assert_eq!(
        metric(&metrics, "akstore_store_commit_batch_size_count"),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"akstore_store_commit_batch_size_bucket{le="1"}"#
        ),
        3.0
    );
    assert_eq!(metric(&metrics, "akstore_store_clusters"), 1.0);
    assert_eq!(metric(&metrics, "akstore_store_pools"), 2.0);
    assert_eq!(metric(&metrics, "akstore_store_revision"), 1.0);

    assert_eq!(send(Method::DELETE, &path, None, None), 200);
    let metrics = scrape(&server);
    assert_eq!(metric(&metrics, "akstore_store_clusters"), 0.0);
    assert_eq!(metric(&metrics, "akstore_store_pools"), 0.0);
    assert_eq!(metric(&metrics, "akstore_store_revision"), 2.0);
    assert_eq!(
        metric(&metrics, &requests_series("DELETE", CLUSTER_ROUTE, 200)),
        1.0
    );
}

#[test]
fn metrics_use_the_prometheus_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &[]);
    status_of(&server, &cluster_path("rg", "c1"));
    let response = server.get_raw("/metrics");
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().unwrap();
    for line in [
        "# TYPE akstore_http_requests_total counter",
        "# TYPE akstore_http_request_duration_seconds histogram",
        "# TYPE akstore_store_clusters gauge",
        "# HELP akstore_http_precondition_failed_total",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains(&format!(
        r#"akstore_build_info{{version="{}",schema_version="{}"}} 1"#,
        env!("CARGO_PKG_VERSION"),
        akstore_store::CURRENT_SCHEMA_VERSION
    )));
}

#[test]
fn token_file_requires_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token-value\n").unwrap();
    let mut command = serve_command(&data, &[]);
    command
        .env("AKSTORE_AUTH_TOKEN_FILE", &token_file)
        .env("RUST_LOG", "debug");
    let server = Server::try_start_command(command, &data).unwrap();
    let path = cluster_path("rg", "c1");

    let missing = server
        .request(Method::PUT, &path)
        .json(&cluster_body(&[]))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"],
        r#"Bearer realm="akstore""#
    );
    assert_eq!(json_body(missing)["error"]["code"], "AuthenticationFailed");

    let wrong = server
        .request(Method::GET, &path)
        .bearer_auth("s3cr3t-token-valuE")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        wrong.headers()["www-authenticate"],
        r#"Bearer realm="akstore", error="invalid_token""#
    );
    assert_eq!(json_body(wrong)["error"]["code"], "AuthenticationFailed");
    let basic = server
        .request(Method::GET, &path)
        .basic_auth("user", Some("s3cr3t-token-value"))
        .send()
        .unwrap();
    assert_eq!(basic.status(), 401);

    // The unauthenticated PUT above wrote nothing.
    let read = server
        .request(Method::GET, &path)
        .bearer_auth("s3cr3t-token-value")
        .send()
        .unwrap();
    assert_eq!(read.status(), 404);
    let created = server
        .request(Method::PUT, &path)
        .bearer_auth("s3cr3t-token-value")
        .json(&cluster_body(&[]))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);

    for open_path in ["/healthz", "/readyz", "/metrics"] {
        let response = server.get_raw(open_path);
        assert_eq!(response.status(), 200, "{open_path} needed a token");
    }
    assert!(server.wait_for_log("request rejected", Duration::from_secs(5)));
    assert!(
        !server.log_text().contains("s3cr3t-token-value"),
        "the token reached the log"
    );
}

#[test]
fn any_bearer_token_passes_without_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &[]);
    let path = cluster_path("rg", "c1");
    let with_token = server
        .request(Method::PUT, &path)
        .bearer_auth("any-token-the-sdk-got")
        .json(&cluster_body(&[]))
        .send()
        .unwrap();
    assert_eq!(with_token.status(), 201);
    assert_eq!(status_of(&server, &path), 200);
}

#[test]
fn invalid_token_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "\n").unwrap();
    let token_arg = token_file.to_str().unwrap();
    let log = Server::try_start(&data, &["--auth-token-file", token_arg])
        .err()
        .expect("the server started with an empty token file");
    assert!(
        log.contains("auth token file") && log.contains("empty"),
        "{log}"
    );

    let missing = dir.path().join("missing");
    let log = Server::try_start(&data, &["--auth-token-file", missing.to_str().unwrap()])
        .err()
        .expect("the server started without its token file");
    assert!(log.contains("failed to read the auth token file"), "{log}");
}

#[test]
fn oversized_body_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &[]);
    let path = cluster_path("rg", "c1");
    let blob = "x".repeat(5 * 1024 * 1024);
    let body = json!({ "location": "westeurope", "properties": { "blob": blob } });

    let response = server
        .request(Method::PUT, &path)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(json_body(response)["error"]["code"], "RequestBodyTooLarge");
    assert_eq!(status_of(&server, &path), 404);
}

#[test]
fn oversized_headers_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &[]);
    let path = cluster_path("rg", "c1");

    let padded = server
        .request(Method::PUT, &path)
        .header("x-padding", "p".repeat(40 * 1024))
        .json(&cluster_body(&[]))
        .send()
        .unwrap();
    assert_eq!(padded.status(), 431);
    assert_eq!(
        json_body(padded)["error"]["code"],
        "RequestHeaderFieldsTooLarge"
    );

    // Past the parser's own limit the connection is answered 431 without an ARM body.
    let mut connection = RawConnection::open(server.addr);
    let head = format!(
        "PUT {}?api-version={API_VERSION} HTTP/1.1\r\nHost: x\r\nx-padding: {}\r\n\
         Content-Length: 2\r\n\r\n{{}}",
        path,
        "p".repeat(80 * 1024)
    );
    connection.send(head.as_bytes());
    assert_eq!(connection.read_response().status, 431);

    assert_eq!(status_of(&server, &path), 404);
}

#[test]
fn slow_body_times_out_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("akstore.redb"),
        &["--request-timeout", "1s"],
    );
    let path = cluster_path("rg", "c1");
    let body = serde_json::to_vec(&cluster_body(&["np1"])).unwrap();
    let target = format!("{path}?api-version={API_VERSION}");

    let started = Instant::now();
    let mut connection = RawConnection::partial_put(server.addr, &target, &body, body.len() / 2);
    let response = connection.read_response();
    assert_eq!(response.status, 408, "{response:?}");
    assert!(
        response.body.contains("\"RequestTimeout\""),
        "{}",
        response.body
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(status_of(&server, &path), 404);
}

#[test]
fn connection_limit_answers_extra_connections_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("akstore.redb"),
        &["--max-connections", "2"],
    );
    // Two idle connections take both slots: an open connection holds its slot while it waits
    // for a request.
    let first = RawConnection::open(server.addr);
    let second = RawConnection::open(server.addr);
    let mut extra = RawConnection::open(server.addr);
    extra.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let rejected = extra.read_response();
    assert_eq!(rejected.status, 503, "{rejected:?}");
    assert!(
        rejected.body.contains("\"TooManyConnections\""),
        "{}",
        rejected.body
    );
    assert!(
        rejected.head.contains("retry-after: 1"),
        "{}",
        rejected.head
    );

    drop(first);
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut connection = RawConnection::open(server.addr);
        connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = connection.read_response();
        if response.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed: {response:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rejected_total = {
        let fresh = reqwest::blocking::Client::new();
        let text = fresh
            .get(server.raw_url("/metrics"))
            .header("Connection", "close")
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("akstore_http_connections_rejected_total "))
            .map(|value| value.parse::<f64>().unwrap())
            .expect("rejected-connections counter")
    };
    assert!(rejected_total >= 1.0, "{rejected_total}");
}

#[test]
fn request_log_has_route_status_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &[]);
    let response = server
        .request(Method::GET, &cluster_path("rg", "missing"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    let request_id = response.headers()["x-ms-request-id"]
        .to_str()
        .unwrap()
        .to_owned();

    assert!(server.wait_for_log(&request_id, Duration::from_secs(5)));
    let line = server
        .log()
        .into_iter()
        .find(|line| line.contains(&request_id))
        .unwrap();
    for field in [
        "method=GET",
        &format!("route={CLUSTER_ROUTE}"),
        "status=404",
        "latency_ms=",
        " INFO ",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
}

#[test]
fn json_log_format_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("akstore.redb"), &["--log-format", "json"]);
    let response = server
        .request(Method::GET, &cluster_path("rg", "missing"))
        .send()
        .unwrap();
    let request_id = response.headers()["x-ms-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(server.wait_for_log(&request_id, Duration::from_secs(5)));

    let mut request_line = None;
    for line in server.log() {
        let object: Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
        if object["span"]["request_id"] == request_id.as_str() {
            request_line = Some(object);
        }
    }
    let request_line = request_line.expect("no JSON line for the request");
    assert_eq!(request_line["level"], "INFO");
    assert_eq!(request_line["span"]["method"], "GET");
    assert_eq!(request_line["span"]["route"], CLUSTER_ROUTE);
    assert_eq!(request_line["span"]["status"], 404);
}

/// Writes an export of `clusters` clusters with one pool each and 2 KiB of properties, for a
/// database large enough that opening it takes noticeable time.
fn write_large_export(path: &std::path::Path, clusters: u64) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let time = "2026-01-01T00:00:00.000Z";
    let header = json!({ "header": {
        "format": "akstore-export", "formatVersion": 1, "schemaVersion": 2,
        "akstoreVersion": "test", "exportedAt": time,
        "revision": clusters, "clusters": clusters, "pools": clusters, "entries": 0,
    }});
    writeln!(out, "{header}").unwrap();
    let mut names: Vec<String> = (0..clusters).map(|index| format!("c{index}")).collect();
    names.sort();
    let blob = "b".repeat(2048);
    for (index, name) in names.iter().enumerate() {
        let line = json!({ "cluster": {
            "key": format!("{SUBSCRIPTION}/rg/{name}"), "subscription": SUBSCRIPTION,
            "resourceGroup": "rg", "name": name, "location": "westeurope", "tags": null,
            "properties": { "blob": blob }, "extra": {}, "eTag": uuid::Uuid::new_v4(),
            "revision": index + 1, "createdAt": time, "lastModifiedAt": time,
        }});
        writeln!(out, "{line}").unwrap();
    }
    for (index, name) in names.iter().enumerate() {
        let line = json!({ "pool": {
            "key": format!("{SUBSCRIPTION}/rg/{name}/np1"), "name": "np1",
            "properties": { "count": 1 }, "eTag": uuid::Uuid::new_v4(),
            "revision": index + 1, "createdAt": time, "lastModifiedAt": time,
        }});
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn probes_report_starting_while_recovering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("akstore.redb");
    let export_file = dir.path().join("large.jsonl");
    write_large_export(&export_file, 5_000);
    let imported = akstore_command()
        .arg("import")
        .arg("--data")
        .arg(&data)
        .arg("--in")
        .arg(&export_file)
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );

    // A write, then SIGKILL: the next open must recover the file.
    let server = Server::start(&data, &[]);
    let created = server
        .request(Method::PUT, &cluster_path("rg", "last"))
        .json(&cluster_body(&["np1"]))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    server.kill();

    let server = Server::launch(serve_command(&data, &[]), &data).unwrap();
    let mut readiness = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = server.get_raw("/healthz");
        assert_eq!(health.status(), 200, "not alive while opening");
        let ready = server.get_raw("/readyz");
        let status = ready.status().as_u16();
        let state = json_body(ready)["status"].as_str().unwrap().to_owned();
        readiness.push((status, state));
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {readiness:?}");
    }
    let (ready, starting) = readiness.split_last().unwrap();
    assert_eq!(ready, &(200, "ready".to_owned()));
    assert!(
        starting
            .iter()
            .all(|answer| answer == &(503, "starting".to_owned())),
        "{readiness:?}"
    );
    assert!(server.wait_for_log("database opened", Duration::from_secs(5)));
    assert!(
        server.log_text().contains("not closed cleanly"),
        "{}",
        server.log_text()
    );
    eprintln!(
        "readyz answered 'starting' {} times during recovery",
        starting.len()
    );

    let read = server
        .request(Method::GET, &cluster_path("rg", "last"))
        .send()
        .unwrap();
    assert_eq!(read.status(), 200);
}
