//! The workloads as ARM requests to akstore.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::{Method, StatusCode};

use crate::dataset::Fleet;
use crate::http::{Connection, Reply};
use crate::runner::{Outcome, Worker};

/// Conditional cluster PUTs: each sends `If-Match` with the eTag its previous write of that
/// cluster returned. Workers own disjoint clusters, so every 412 is a fault.
pub struct Update {
    fleet: Fleet,
    clusters: Vec<usize>,
    etags: Vec<String>,
    next: usize,
    generation: u64,
}

/// GETs of single clusters, cycling through the fleet.
pub struct Read {
    fleet: Fleet,
    clusters: Vec<usize>,
    next: usize,
}

/// Walks the fleet's subscription list page by page through `nextLink`, starting over at the
/// end.
pub struct List {
    first_page: String,
    next_page: Option<String>,
}

impl Update {
    /// Workers for `connections` connections over clusters `0..clusters`, each owning every
    /// `connections`-th cluster.
    pub fn workers(fleet: Fleet, clusters: usize, connections: usize) -> Vec<Update> {
        (0..connections)
            .map(|worker| Update {
                fleet,
                clusters: (worker..clusters).step_by(connections).collect(),
                etags: Vec::new(),
                next: 0,
                generation: 1,
            })
            .collect()
    }
}

impl Worker for Update {
    async fn prepare(&mut self, connection: &mut Connection) -> Result<(), String> {
        self.etags.clear();
        for &index in &self.clusters {
            self.etags
                .push(current_etag(connection, &self.fleet, index).await?);
        }
        Ok(())
    }

    async fn step(&mut self, connection: &mut Connection) -> Outcome {
        let slot = self.next % self.clusters.len();
        self.next += 1;
        self.generation += 1;
        let index = self.clusters[slot];
        let body = self.fleet.cluster_body(index, self.generation);
        let reply = connection
            .send(
                Method::PUT,
                &self.fleet.cluster_path(index),
                &[("if-match", &self.etags[slot])],
                Some(body),
            )
            .await;
        match reply {
            Ok(reply) if reply.status == StatusCode::OK => match etag_header(&reply) {
                Some(etag) => {
                    self.etags[slot] = etag;
                    Outcome::Ok
                }
                None => Outcome::Error("a 200 response carried no ETag header".into()),
            },
            Ok(reply) if reply.status == StatusCode::PRECONDITION_FAILED => {
                // Learn the current eTag so that this cluster's next write can succeed.
                if let Ok(etag) = current_etag(connection, &self.fleet, index).await {
                    self.etags[slot] = etag;
                }
                Outcome::PreconditionFailed
            }
            Ok(reply) => unexpected(&reply),
            Err(error) => Outcome::Error(error),
        }
    }
}

impl Read {
    pub fn workers(fleet: Fleet, clusters: usize, connections: usize) -> Vec<Read> {
        (0..connections)
            .map(|worker| Read {
                fleet,
                clusters: (worker..clusters).step_by(connections).collect(),
                next: 0,
            })
            .collect()
    }
}

impl Worker for Read {
    async fn step(&mut self, connection: &mut Connection) -> Outcome {
        let index = self.clusters[self.next % self.clusters.len()];
        self.next += 1;
        let path = self.fleet.cluster_path(index);
        match connection.send(Method::GET, &path, &[], None).await {
            Ok(reply) if reply.status == StatusCode::OK => Outcome::Ok,
            Ok(reply) => unexpected(&reply),
            Err(error) => Outcome::Error(error),
        }
    }
}

impl List {
    pub fn workers(fleet: Fleet, connections: usize) -> Vec<List> {
        (0..connections)
            .map(|_| List {
                first_page: fleet.list_path(),
                next_page: None,
            })
            .collect()
    }
}

impl Worker for List {
    async fn step(&mut self, connection: &mut Connection) -> Outcome {
        let path = self
            .next_page
            .take()
            .unwrap_or_else(|| self.first_page.clone());
        match connection.send(Method::GET, &path, &[], None).await {
            Ok(reply) if reply.status == StatusCode::OK => match next_link_path(&reply.body) {
                Ok(next) => {
                    self.next_page = next;
                    Outcome::Ok
                }
                Err(error) => Outcome::Error(error),
            },
            Ok(reply) => unexpected(&reply),
            Err(error) => Outcome::Error(error),
        }
    }
}

/// Creates clusters `range` of `fleet` with `If-None-Match: *` over `connections`
/// connections. A cluster that already exists is left as it is.
pub async fn seed(
    addr: SocketAddr,
    fleet: Fleet,
    range: std::ops::Range<usize>,
    connections: usize,
) -> Result<(), String> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let next = Arc::clone(&next);
        let end = range.end;
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::new(addr);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    return Ok::<(), String>(());
                }
                let reply = connection
                    .send(
                        Method::PUT,
                        &fleet.cluster_path(index),
                        &[("if-none-match", "*")],
                        Some(fleet.cluster_body(index, 0)),
                    )
                    .await?;
                if reply.status != StatusCode::CREATED
                    && reply.status != StatusCode::PRECONDITION_FAILED
                {
                    return Err(reply.describe());
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(())
}

async fn current_etag(
    connection: &mut Connection,
    fleet: &Fleet,
    index: usize,
) -> Result<String, String> {
    let reply = connection
        .send(Method::GET, &fleet.cluster_path(index), &[], None)
        .await?;
    if reply.status != StatusCode::OK {
        return Err(reply.describe());
    }
    etag_header(&reply).ok_or_else(|| "a GET response carried no ETag header".into())
}

/// Returns the `ETag` header exactly as sent, quotes included, ready for `If-Match`.
fn etag_header(reply: &Reply) -> Option<String> {
    reply
        .headers
        .get(hyper::header::ETAG)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// Extracts the path and query of a list page's `nextLink`, or `None` on the last page.
///
/// akstore writes `nextLink` last in the page object, so the search starts from the end and
/// does not parse the page's items.
fn next_link_path(body: &[u8]) -> Result<Option<String>, String> {
    const FIELD: &[u8] = b"\"nextLink\":";
    let start = body
        .windows(FIELD.len())
        .rposition(|window| window == FIELD)
        .ok_or("a list page has no nextLink field")?
        + FIELD.len();
    let tail = &body[start..];
    let end = tail
        .iter()
        .rposition(|&byte| byte == b'}')
        .ok_or("a list page does not end with '}'")?;
    let tail: serde_json::Value = serde_json::from_slice(&tail[..end])
        .map_err(|error| format!("the nextLink of a list page is not JSON: {error}"))?;
    let Some(link) = tail.as_str() else {
        return Ok(None);
    };
    // The link is absolute; the connection already points at its host.
    let after_scheme = link.split_once("://").map_or(link, |(_, rest)| rest);
    let path = after_scheme
        .find('/')
        .map(|slash| &after_scheme[slash..])
        .ok_or_else(|| format!("nextLink {link:?} has no path"))?;
    Ok(Some(path.to_owned()))
}

fn unexpected(reply: &Reply) -> Outcome {
    Outcome::Error(reply.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_path_strips_scheme_and_host() {
        let body = br#"{"value":[{"name":"a"}],"nextLink":"http://127.0.0.1:8080/subscriptions/s/providers/x?api-version=1&%24skipToken=a%2Fb"}"#;
        assert_eq!(
            next_link_path(body).unwrap().as_deref(),
            Some("/subscriptions/s/providers/x?api-version=1&%24skipToken=a%2Fb")
        );
    }

    #[test]
    fn next_link_path_ends_on_null() {
        let body = br#"{"value":[],"nextLink":null}"#;
        assert_eq!(next_link_path(body).unwrap(), None);
    }
}
