//! Proves request validation over a real socket: every 400 rule with its own error code, the
//! 413 for a body over 4 MiB, and the order in which checks run. After every rejected request
//! the whole state, eTags included, is compared with the state before it: nothing changes.

mod common;

use common::{
    API_VERSION, Reply, SUBSCRIPTION, Server, cluster_body, cluster_path, pool_path, start_fresh,
    subscription_clusters_path, unknown_etag,
};
use reqwest::Method;
use serde_json::json;

/// Largest body the server accepts, in bytes.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// One request that must be rejected.
struct Case {
    what: String,
    method: Method,
    /// Path and query, sent exactly as given.
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

impl Case {
    fn new(what: &str, method: Method, path: &str, status: u16, code: &'static str) -> Case {
        Case {
            what: what.to_owned(),
            method,
            target: format!("{path}?api-version={API_VERSION}"),
            headers: Vec::new(),
            body: None,
            status,
            code,
        }
    }

    /// Builds a case that expects 400 and `code`.
    fn bad(what: &str, method: Method, path: &str, code: &'static str) -> Case {
        Case::new(what, method, path, 400, code)
    }

    fn query(mut self, query: &str) -> Case {
        let path = self.target.split('?').next().unwrap().to_owned();
        self.target = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Case {
        self.body = Some(body.into());
        self
    }

    fn json(self, body: serde_json::Value) -> Case {
        self.body(body.to_string())
    }

    fn send(&self, server: &Server) -> Reply {
        let mut request = server
            .client()
            .request(self.method.clone(), server.raw_url(&self.target));
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &self.body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.clone());
        }
        Reply::read(request.send().expect("send request"))
    }
}

/// Starts a server holding one cluster with two pools, the state every case must leave alone.
fn start_with_state() -> (tempfile::TempDir, Server) {
    let (dir, server) = start_fresh(&[]);
    let created = server.put(&cluster_path("rg1", "c1"), &cluster_body(&["np1", "np2"]));
    assert_eq!(created.status, 201, "{}", created.body);
    (dir, server)
}

/// Sends every case and checks its status, its code and that the state did not change.
fn check_all(server: &Server, cases: &[Case]) {
    let before = server.snapshot();
    for case in cases {
        let reply = case.send(server);
        assert_eq!(reply.status, case.status, "{}: {}", case.what, reply.body);
        assert_eq!(reply.error_code(), case.code, "{}", case.what);
        assert!(
            !reply.error_message().is_empty(),
            "{}: empty message",
            case.what
        );
        assert_eq!(server.snapshot(), before, "{} changed the state", case.what);
    }
}

#[test]
fn api_version_rules() {
    let (_dir, server) = start_with_state();
    let cluster = cluster_path("rg1", "c1");
    let list = subscription_clusters_path();
    let missing = "MissingApiVersionParameter";
    let invalid = "InvalidApiVersionParameter";
    let body = cluster_body(&[]);
    let cases = [
        Case::bad("GET without", Method::GET, &cluster, missing).query(""),
        Case::bad("PUT without", Method::PUT, &cluster, missing)
            .query("")
            .json(body.clone()),
        Case::bad("DELETE without", Method::DELETE, &cluster, missing).query(""),
        Case::bad("list without", Method::GET, &list, missing).query("$top=1"),
        Case::bad("list without, bad $top", Method::GET, &list, missing).query("$top=0"),
        Case::bad("empty", Method::GET, &cluster, missing).query("api-version="),
        Case::bad("word", Method::PUT, &cluster, invalid)
            .query("api-version=latest")
            .json(body.clone()),
        Case::bad("short month", Method::GET, &cluster, invalid).query("api-version=2026-8-01"),
        Case::bad("slashes", Method::GET, &cluster, invalid).query("api-version=2026/08/01"),
        Case::bad("empty suffix", Method::GET, &cluster, invalid).query("api-version=2026-08-01-"),
    ];
    check_all(&server, &cases);

    // A date with a suffix is valid.
    let preview =
        server.get_url(&server.raw_url(&format!("{cluster}?api-version=2025-10-02-preview")));
    assert_eq!(preview.status, 200, "{}", preview.body);
}

#[test]
fn condition_header_rules() {
    let (_dir, server) = start_with_state();
    let cluster = cluster_path("rg1", "c1");
    let pool = pool_path("rg1", "c1", "np1");
    let etag = server.get(&cluster).etag();
    let quoted = format!("\"{etag}\"");
    let mut cases = Vec::new();

    for (method, path) in [
        (Method::PUT, &cluster),
        (Method::PATCH, &cluster),
        (Method::DELETE, &cluster),
        (Method::PUT, &pool),
        (Method::DELETE, &pool),
    ] {
        let body = match (&method, path == &pool) {
            (&Method::DELETE, _) => None,
            (&Method::PATCH, _) => Some(json!({"tags": {"a": "b"}}).to_string()),
            (_, true) => Some(json!({"properties": {"count": 2}}).to_string()),
            (_, false) => Some(cluster_body(&["np1"]).to_string()),
        };
        let case = |what: &str, status, code| {
            let mut case = Case::new(
                &format!("{method} {what}"),
                method.clone(),
                path,
                status,
                code,
            );
            case.body = body.clone().map(String::into_bytes);
            case
        };
        let if_none_match = "InvalidIfNoneMatchHeader";
        for value in [&quoted as &str, "\"*\"", "abc", "W/\"*\"", "*, *", "*,"] {
            cases.push(
                case(&format!("If-None-Match {value}"), 400, if_none_match)
                    .header("If-None-Match", value),
            );
        }
        cases.push(
            case("If-None-Match on two lines", 400, if_none_match)
                .header("If-None-Match", "*")
                .header("If-None-Match", "*"),
        );

        let both = "ConflictingConditionHeaders";
        cases.push(
            case("both, star", 400, both)
                .header("If-Match", "*")
                .header("If-None-Match", "*"),
        );
        cases.push(
            case("both, current tag", 400, both)
                .header("If-Match", &quoted)
                .header("If-None-Match", "*"),
        );

        let if_match = "InvalidIfMatchHeader";
        for value in [
            "\"abc",
            "\"a\", *",
            "*, \"a\"",
            "W/abc",
            "a b",
            "\"a\"b",
            ",",
            &format!("{quoted} {quoted}"),
        ] {
            cases.push(case(&format!("If-Match {value}"), 400, if_match).header("If-Match", value));
        }
        cases.push(
            case("star on a second line", 400, if_match)
                .header("If-Match", &quoted)
                .header("If-Match", "*"),
        );
    }

    // A GET reads lists in both headers, but a malformed one is still rejected.
    cases.push(
        Case::bad(
            "GET If-Match unterminated",
            Method::GET,
            &cluster,
            "InvalidIfMatchHeader",
        )
        .header("If-Match", "\"abc"),
    );
    cases.push(
        Case::bad(
            "GET If-None-Match star in list",
            Method::GET,
            &cluster,
            "InvalidIfNoneMatchHeader",
        )
        .header("If-None-Match", "\"a\", *"),
    );
    check_all(&server, &cases);
}

#[test]
fn body_rules() {
    let (_dir, server) = start_with_state();
    let cluster = cluster_path("rg1", "c1");
    let new_cluster = cluster_path("rg1", "c2");
    let pool = pool_path("rg1", "c1", "np1");
    let content = "InvalidRequestContent";
    let mut cases = Vec::new();

    for (method, path) in [
        (Method::PUT, &cluster),
        (Method::PUT, &new_cluster),
        (Method::PATCH, &cluster),
        (Method::PUT, &pool),
        (Method::PATCH, &pool),
    ] {
        for (what, body) in [
            ("malformed JSON", "{\"location\": "),
            ("trailing text", "{} x"),
            ("empty body", ""),
            ("whitespace body", " \n"),
            ("array", "[]"),
            ("string", "\"westeurope\""),
            ("number", "42"),
            ("null", "null"),
            (
                "properties array",
                "{\"location\": \"westeurope\", \"properties\": []}",
            ),
            (
                "properties string",
                "{\"location\": \"westeurope\", \"properties\": \"x\"}",
            ),
        ] {
            cases.push(
                Case::bad(
                    &format!("{method} {path}: {what}"),
                    method.clone(),
                    path,
                    content,
                )
                .body(body),
            );
        }
    }

    for (method, path) in [(Method::PUT, &cluster), (Method::PATCH, &cluster)] {
        for tags in [
            json!([]),
            json!("x"),
            json!({"a": 1}),
            json!({"a": {"b": "c"}}),
        ] {
            cases.push(
                Case::bad(
                    &format!("{method} tags {tags}"),
                    method.clone(),
                    path,
                    content,
                )
                .json(json!({"location": "westeurope", "tags": tags})),
            );
        }
    }

    let location = "LocationRequired";
    for body in [
        json!({}),
        json!({"properties": {}}),
        json!({"location": ""}),
        json!({"location": "  "}),
        json!({"location": 5}),
        json!({"location": null}),
    ] {
        cases.push(
            Case::bad(&format!("PUT {body}"), Method::PUT, &new_cluster, location)
                .json(body.clone()),
        );
        cases.push(
            Case::bad(
                &format!("PUT existing {body}"),
                Method::PUT,
                &cluster,
                location,
            )
            .json(body),
        );
    }
    for body in [
        json!({"location": null}),
        json!({"location": ""}),
        json!({"location": 5}),
    ] {
        cases.push(
            Case::bad(&format!("PATCH {body}"), Method::PATCH, &cluster, location).json(body),
        );
    }
    check_all(&server, &cases);
}

#[test]
fn agent_pool_profile_rules() {
    let (_dir, server) = start_with_state();
    let cluster = cluster_path("rg1", "c1");
    let new_cluster = cluster_path("rg1", "c2");
    let invalid = "InvalidAgentPoolProfile";
    let mut cases = Vec::new();
    for (method, path) in [
        (Method::PUT, &cluster),
        (Method::PUT, &new_cluster),
        (Method::PATCH, &cluster),
    ] {
        for (what, profiles, code) in [
            ("an object", json!({"name": "np1"}), invalid),
            ("a string", json!("np1"), invalid),
            ("a number entry", json!([5]), invalid),
            ("an entry without name", json!([{"count": 1}]), invalid),
            ("a numeric name", json!([{"name": 1}]), invalid),
            ("an upper-case name", json!([{"name": "NP1"}]), invalid),
            ("a name with a dash", json!([{"name": "np-1"}]), invalid),
            (
                "a name of 13 characters",
                json!([{"name": "abcdefghijklm"}]),
                invalid,
            ),
            (
                "a name starting with a digit",
                json!([{"name": "1np"}]),
                invalid,
            ),
            (
                "a valid entry, then an invalid one",
                json!([{"name": "np3"}, {"name": ""}]),
                invalid,
            ),
            (
                "a duplicate name",
                json!([{"name": "np3"}, {"name": "np3"}]),
                "DuplicateAgentPoolName",
            ),
        ] {
            let body =
                json!({"location": "westeurope", "properties": {"agentPoolProfiles": profiles}});
            cases.push(
                Case::bad(
                    &format!("{method} {path}: {what}"),
                    method.clone(),
                    path,
                    code,
                )
                .json(body),
            );
        }
    }
    check_all(&server, &cases);
}

#[test]
fn path_name_rules() {
    let (_dir, server) = start_with_state();
    let body = cluster_body(&[]);
    let mut cases = Vec::new();

    let base = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/{name}";
    let path = |sub: &str, rg: &str, name: &str| {
        base.replace("{sub}", sub)
            .replace("{rg}", rg)
            .replace("{name}", name)
    };
    for sub in [
        "not-a-guid",
        "00000000000000000000000000000000",
        "{00000000-0000-0000-0000-000000000001}",
        "00000000-0000-0000-0000-00000000000g",
    ] {
        for method in [Method::GET, Method::PUT] {
            cases.push(
                Case::bad(
                    &format!("{method} subscription {sub}"),
                    method,
                    &path(sub, "rg1", "c1"),
                    "InvalidSubscriptionId",
                )
                .json(body.clone()),
            );
        }
        let list =
            format!("/subscriptions/{sub}/providers/Microsoft.ContainerService/managedClusters");
        cases.push(Case::bad(
            &format!("list subscription {sub}"),
            Method::GET,
            &list,
            "InvalidSubscriptionId",
        ));
    }
    let long_group = "r".repeat(91);
    for rg in ["rg.", "rg!x", "rg%20x", "r%C3%A4", &long_group] {
        cases.push(
            Case::bad(
                &format!("resource group {rg}"),
                Method::PUT,
                &path(SUBSCRIPTION, rg, "c1"),
                "InvalidResourceGroupName",
            )
            .json(body.clone()),
        );
    }
    let long_cluster = "c".repeat(64);
    for name in ["-c", "c-", "_c", "c.1", "c%2F1", "c%20", &long_cluster] {
        cases.push(
            Case::bad(
                &format!("cluster {name}"),
                Method::PUT,
                &path(SUBSCRIPTION, "rg1", name),
                "InvalidResourceName",
            )
            .json(body.clone()),
        );
        cases.push(Case::bad(
            &format!("GET cluster {name}"),
            Method::GET,
            &path(SUBSCRIPTION, "rg1", name),
            "InvalidResourceName",
        ));
    }
    for name in ["1np", "np-1", "np_1", "abcdefghijklm", "n%C3%A4"] {
        let pool = pool_path("rg1", "c1", name);
        cases.push(
            Case::bad(
                &format!("pool {name}"),
                Method::PUT,
                &pool,
                "InvalidResourceName",
            )
            .json(json!({})),
        );
        cases.push(Case::bad(
            &format!("GET pool {name}"),
            Method::GET,
            &pool,
            "InvalidResourceName",
        ));
    }
    // A name in upper case reaches an existing pool, but cannot create one.
    cases.push(
        Case::bad(
            "new pool in upper case",
            Method::PUT,
            &pool_path("rg1", "c1", "Np3"),
            "InvalidResourceName",
        )
        .json(json!({})),
    );
    cases.push(
        Case::bad(
            "$top zero",
            Method::GET,
            &subscription_clusters_path(),
            "InvalidTopParameter",
        )
        .query(&format!("api-version={API_VERSION}&$top=0")),
    );
    cases.push(
        Case::bad(
            "$top word",
            Method::GET,
            &subscription_clusters_path(),
            "InvalidTopParameter",
        )
        .query(&format!("api-version={API_VERSION}&$top=all")),
    );
    check_all(&server, &cases);
}

#[test]
fn body_over_four_mebibytes() {
    let (_dir, server) = start_with_state();
    let cluster = cluster_path("rg1", "c1");
    let before = server.snapshot();

    // A body of exactly the limit is accepted.
    let exact = padded_cluster_body(MAX_BODY_BYTES);
    let reply = server
        .client()
        .put(server.url(&cluster))
        .header("Content-Type", "application/json")
        .body(exact)
        .send()
        .unwrap();
    assert_eq!(reply.status(), 200);
    let before_large = server.snapshot();
    assert_ne!(before_large, before);

    // One byte more is 413, declared up front by Content-Length ...
    let over = padded_cluster_body(MAX_BODY_BYTES + 1);
    let reply = Reply::read(
        server
            .client()
            .put(server.url(&cluster))
            .header("Content-Type", "application/json")
            .body(over.clone())
            .send()
            .unwrap(),
    );
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.error_code(), "RequestBodyTooLarge");

    // ... or streamed in chunks without a length, for a pool too.
    for path in [cluster.clone(), pool_path("rg1", "c1", "np1")] {
        let reader = std::io::Cursor::new(over.clone());
        let reply = Reply::read(
            server
                .client()
                .put(server.url(&path))
                .header("Content-Type", "application/json")
                .body(reqwest::blocking::Body::new(reader))
                .send()
                .unwrap(),
        );
        assert_eq!(reply.status, 413, "{path}: {}", reply.body);
        assert_eq!(reply.error_code(), "RequestBodyTooLarge");
    }
    assert_eq!(server.snapshot(), before_large);
}

#[test]
fn checks_run_in_order() {
    let (_dir, server) = start_with_state();
    let cluster = cluster_path("rg1", "c1");
    let orphan = pool_path("rg1", "nocluster", "np1");
    let stale = format!("\"{}\"", unknown_etag());
    let oversized = vec![b' '; MAX_BODY_BYTES + 1];
    let cases = [
        // The path comes first, then the api-version.
        Case::bad(
            "bad name, no api-version",
            Method::PUT,
            &cluster_path("rg1", "-c"),
            "InvalidResourceName",
        )
        .query("")
        .body("{"),
        // The api-version comes before the headers.
        Case::bad(
            "no api-version, bad header",
            Method::PUT,
            &cluster,
            "MissingApiVersionParameter",
        )
        .query("")
        .header("If-None-Match", "abc")
        .body("{"),
        // Header syntax comes before the body, even one over the limit.
        Case::bad(
            "bad header, bad body",
            Method::PUT,
            &cluster,
            "InvalidIfNoneMatchHeader",
        )
        .header("If-None-Match", "abc")
        .body("{"),
        Case::bad(
            "bad header, large body",
            Method::PUT,
            &cluster,
            "InvalidIfMatchHeader",
        )
        .header("If-Match", "\"abc")
        .body(oversized.clone()),
        Case::bad(
            "both headers, bad body",
            Method::PATCH,
            &cluster,
            "ConflictingConditionHeaders",
        )
        .header("If-Match", "*")
        .header("If-None-Match", "*")
        .body("[]"),
        // The body comes before the parent cluster's existence.
        Case::bad(
            "pool PUT, no cluster, bad body",
            Method::PUT,
            &orphan,
            "InvalidRequestContent",
        )
        .body("{"),
        Case::new(
            "pool PUT, no cluster, large body",
            Method::PUT,
            &orphan,
            413,
            "RequestBodyTooLarge",
        )
        .body(oversized),
        Case::bad(
            "pool PATCH, no cluster, bad body",
            Method::PATCH,
            &orphan,
            "InvalidRequestContent",
        )
        .body("[]"),
        // The parent's existence comes before the precondition table.
        Case::new(
            "pool PUT, no cluster, stale tag",
            Method::PUT,
            &orphan,
            404,
            "ParentResourceNotFound",
        )
        .header("If-Match", &stale)
        .json(json!({})),
        Case::new(
            "pool PATCH, no cluster, none-match",
            Method::PATCH,
            &orphan,
            404,
            "ParentResourceNotFound",
        )
        .header("If-None-Match", "*")
        .json(json!({})),
        // The body comes before the precondition table and the resource's existence.
        Case::bad(
            "PUT, stale tag, no location",
            Method::PUT,
            &cluster,
            "LocationRequired",
        )
        .header("If-Match", &stale)
        .json(json!({})),
        Case::bad(
            "PUT, exists, none-match, bad profiles",
            Method::PUT,
            &cluster,
            "InvalidAgentPoolProfile",
        )
        .header("If-None-Match", "*")
        .json(json!({"location": "westeurope", "properties": {"agentPoolProfiles": {}}})),
        Case::bad(
            "PATCH of a missing cluster, bad body",
            Method::PATCH,
            &cluster_path("rg1", "missing"),
            "InvalidRequestContent",
        )
        .body("{"),
        Case::bad(
            "PATCH, stale tag, bad tags",
            Method::PATCH,
            &cluster,
            "InvalidRequestContent",
        )
        .header("If-Match", &stale)
        .json(json!({"tags": [1]})),
    ];
    check_all(&server, &cases);
}

/// Builds a valid cluster PUT body padded with spaces to exactly `size` bytes.
fn padded_cluster_body(size: usize) -> Vec<u8> {
    let mut body = json!({"location": "westeurope", "properties": {"note": "large"}})
        .to_string()
        .into_bytes();
    assert!(body.len() <= size);
    body.resize(size, b' ');
    body
}
