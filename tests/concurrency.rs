//! Proves that concurrent requests on one resource behave as if run one at a time, over real
//! sockets: of 32 writes released together with the same current eTag exactly one succeeds and
//! the rest get 412, of 32 `If-None-Match: *` creates exactly one gets 201, for clusters and
//! for pools, and the winner's eTag is the one left on disk. Of 32 guarded DELETEs one removes
//! the cluster and the rest find it missing.

mod common;

use std::sync::Barrier;

use common::{Server, cluster_body, cluster_path, pool_body, pool_path, start_fresh};
use reqwest::Method;
use serde_json::{Value, json};

/// Requests released at once by a barrier.
const CONCURRENT_REQUESTS: usize = 32;

/// Marks a body with the index of the thread that sends it, so the stored resource shows
/// which writer won.
type Mark = fn(&mut Value, usize);

fn mark_cluster(body: &mut Value, index: usize) {
    body["tags"] = json!({"writer": index.to_string()});
}

fn mark_pool(body: &mut Value, index: usize) {
    body["properties"]["writer"] = json!(index);
}

/// Sends the same write, its body marked per thread, from `CONCURRENT_REQUESTS` threads at
/// once and returns each response's status and body, in no particular order.
fn race(
    server: &Server,
    method: Method,
    path: &str,
    header: (&str, &str),
    body: Option<(Value, Mark)>,
) -> Vec<(u16, Value)> {
    let barrier = Barrier::new(CONCURRENT_REQUESTS);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CONCURRENT_REQUESTS)
            .map(|index| {
                let (barrier, method) = (&barrier, method.clone());
                let body = body.clone().map(|(mut body, mark)| {
                    mark(&mut body, index);
                    body
                });
                scope.spawn(move || {
                    barrier.wait();
                    let reply = server.send(method, path, &[header], body.as_ref());
                    (reply.status, reply.body)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("request thread"))
            .collect()
    })
}

/// Asserts exactly one `winner` status and `CONCURRENT_REQUESTS - 1` of 412, and returns the
/// winner's body.
fn single_winner(results: Vec<(u16, Value)>, winner: u16) -> Value {
    let mut winners = Vec::new();
    for (status, body) in results {
        match status {
            412 => assert_eq!(body["error"]["code"], "PreconditionFailed"),
            status if status == winner => winners.push(body),
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winner} answers");
    winners.remove(0)
}

#[test]
fn one_cluster_update_wins() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let etag = server.put(&path, &cluster_body(&["np1"])).etag();
    let quoted = format!("\"{etag}\"");

    let results = race(
        &server,
        Method::PUT,
        &path,
        ("If-Match", &quoted),
        Some((cluster_body(&["np1"]), mark_cluster)),
    );
    let winner = single_winner(results, 200);
    let stored = server.get(&path).body;
    assert_eq!(stored["eTag"], winner["eTag"]);
    assert_eq!(stored["tags"], winner["tags"]);

    let etag = winner["eTag"].as_str().unwrap().to_owned();
    let patch = Some((
        json!({"properties": {"note": "patched"}}),
        mark_cluster as Mark,
    ));
    let results = race(&server, Method::PATCH, &path, ("If-Match", &etag), patch);
    let winner = single_winner(results, 200);
    let stored = server.get(&path).body;
    assert_eq!(stored["eTag"], winner["eTag"]);
    assert_eq!(stored["tags"], winner["tags"]);
}

#[test]
fn one_cluster_create_wins() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let results = race(
        &server,
        Method::PUT,
        &path,
        ("If-None-Match", "*"),
        Some((cluster_body(&["np1"]), mark_cluster)),
    );
    let winner = single_winner(results, 201);
    let stored = server.get(&path).body;
    assert_eq!(stored["eTag"], winner["eTag"]);
    assert_eq!(stored["tags"], winner["tags"]);
}

#[test]
fn one_cluster_delete_wins() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let etag = server.put(&path, &cluster_body(&["np1"])).etag();
    let results = race(&server, Method::DELETE, &path, ("If-Match", &etag), None);

    // One DELETE removes the cluster; the others then find it missing, which is 204.
    let removed = results.iter().filter(|(status, _)| *status == 200).count();
    let absent = results.iter().filter(|(status, _)| *status == 204).count();
    assert_eq!(removed, 1, "{results:?}");
    assert_eq!(absent, CONCURRENT_REQUESTS - 1, "{results:?}");
    assert_eq!(server.get(&path).status, 404);
}

#[test]
fn one_pool_update_wins() {
    let (_dir, server) = start_fresh(&[]);
    let cluster = cluster_path("rg1", "c1");
    let cluster_etag = server.put(&cluster, &cluster_body(&["np1"])).etag();
    let path = pool_path("rg1", "c1", "np1");
    let etag = server.get(&path).etag();

    let body = Some((pool_body(1), mark_pool as Mark));
    let results = race(
        &server,
        Method::PUT,
        &path,
        ("If-Match", &etag),
        body.clone(),
    );
    let winner = single_winner(results, 200);
    let stored = server.get(&path).body;
    assert_eq!(stored["properties"]["eTag"], winner["properties"]["eTag"]);
    assert_eq!(
        stored["properties"]["writer"],
        winner["properties"]["writer"]
    );

    let etag = winner["properties"]["eTag"].as_str().unwrap().to_owned();
    let results = race(&server, Method::PATCH, &path, ("If-Match", &etag), body);
    let winner = single_winner(results, 200);
    assert_eq!(
        server.get(&path).body["properties"]["eTag"],
        winner["properties"]["eTag"]
    );
    assert_eq!(
        server.get(&cluster).etag(),
        cluster_etag,
        "pool writes keep the cluster eTag"
    );
}

#[test]
fn one_pool_create_wins() {
    let (_dir, server) = start_fresh(&[]);
    assert_eq!(
        server
            .put(&cluster_path("rg1", "c1"), &cluster_body(&[]))
            .status,
        201
    );
    let path = pool_path("rg1", "c1", "np1");
    let body = Some((pool_body(1), mark_pool as Mark));
    let results = race(&server, Method::PUT, &path, ("If-None-Match", "*"), body);
    let winner = single_winner(results, 201);
    let stored = server.get(&path).body;
    assert_eq!(stored["properties"]["eTag"], winner["properties"]["eTag"]);
    assert_eq!(
        stored["properties"]["writer"],
        winner["properties"]["writer"]
    );
}
