//! The precondition table of PUT, PATCH and DELETE, run cell by cell against a live server for
//! clusters and for pools.
//!
//! Each cell gets its own resource, either existing or missing. A missing resource is one that
//! was created and deleted, so the "matching tag" cell sends the eTag it had: a stale tag must
//! not revive it. After the request the cell checks the status, the error code, and the state:
//! a failed request leaves every cluster and pool as it was, a successful write leaves a fresh
//! eTag, and a successful DELETE leaves nothing.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Reply, Server, cluster_body, cluster_path, pool_body, pool_path, unknown_etag};

/// Resource group of the cluster-table cells and of the pool-table cells' parent cluster.
const RESOURCE_GROUP: &str = "table";
/// Parent cluster of the pool-table cells.
const PARENT_CLUSTER: &str = "parent";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Pool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Put,
    Patch,
    Delete,
}

/// The condition headers a cell sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    None,
    IfMatchAny,
    /// `If-Match` with the resource's current eTag, or its last eTag when it was deleted.
    IfMatchCurrent,
    /// `If-Match` with an eTag the resource never had.
    IfMatchOther,
    IfNoneMatchAny,
}

pub const CONDITIONS: [Condition; 5] = [
    Condition::None,
    Condition::IfMatchAny,
    Condition::IfMatchCurrent,
    Condition::IfMatchOther,
    Condition::IfNoneMatchAny,
];

/// Status of one cell of the table, with the default profile's 200 for a DELETE that removed
/// the resource.
pub fn expected_status(verb: Verb, condition: Condition, exists: bool) -> u16 {
    use Condition::*;
    match (verb, exists, condition) {
        (Verb::Put, false, None | IfNoneMatchAny) => 201,
        (Verb::Put, false, IfMatchAny | IfMatchCurrent | IfMatchOther) => 412,
        (Verb::Patch, false, _) => 404,
        (Verb::Delete, false, _) => 204,
        (_, true, None | IfMatchAny | IfMatchCurrent) => 200,
        (_, true, IfMatchOther | IfNoneMatchAny) => 412,
    }
}

/// Runs every cell of `verb`'s rows for `kind` and panics with the list of cells that failed.
pub fn run_rows(server: &Server, kind: Kind, verb: Verb) {
    if kind == Kind::Pool {
        let parent = server.put(
            &cluster_path(RESOURCE_GROUP, PARENT_CLUSTER),
            &cluster_body(&[]),
        );
        assert!(
            matches!(parent.status, 200 | 201),
            "parent: {}",
            parent.body
        );
    }
    let mut failures = Vec::new();
    let mut index = 0;
    for exists in [false, true] {
        for condition in CONDITIONS {
            index += 1;
            let cell = Cell {
                kind,
                verb,
                condition,
                exists,
                index,
            };
            if let Err(failure) = cell.check(server) {
                failures.push(format!("{cell:?}: {failure}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 10 cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[derive(Debug)]
struct Cell {
    kind: Kind,
    verb: Verb,
    condition: Condition,
    exists: bool,
    index: usize,
}

impl Cell {
    fn check(&self, server: &Server) -> Result<(), String> {
        let path = self.path();
        let etag = self.prepare(server, &path)?;

        let tag_value = match self.condition {
            Condition::IfMatchCurrent => format!("\"{etag}\""),
            _ => format!("\"{}\"", unknown_etag()),
        };
        let headers: Vec<(&str, &str)> = match self.condition {
            Condition::None => vec![],
            Condition::IfMatchAny => vec![("If-Match", "*")],
            Condition::IfMatchCurrent | Condition::IfMatchOther => {
                vec![("If-Match", tag_value.as_str())]
            }
            Condition::IfNoneMatchAny => vec![("If-None-Match", "*")],
        };
        let (method, body) = match self.verb {
            Verb::Put => (Method::PUT, Some(self.put_body())),
            Verb::Patch => (Method::PATCH, Some(self.patch_body())),
            Verb::Delete => (Method::DELETE, None),
        };

        let before = server.snapshot();
        let reply = server.send(method, &path, &headers, body.as_ref());
        let expected = expected_status(self.verb, self.condition, self.exists);
        if reply.status != expected {
            return Err(format!(
                "status {} instead of {expected}: {}",
                reply.status, reply.body
            ));
        }

        match reply.status {
            412 => {
                expect_code(&reply, "PreconditionFailed")?;
                let (header, value) = headers[0];
                let message = reply.error_message();
                if !(message.contains(header) && message.contains(value) && message.contains("GET"))
                {
                    return Err(format!(
                        "412 message does not name {header} {value} and say to GET: {message}"
                    ));
                }
                expect_unchanged(server, &before)
            }
            404 => {
                expect_code(&reply, "ResourceNotFound")?;
                expect_unchanged(server, &before)
            }
            204 => {
                if reply.body != Value::Null {
                    return Err(format!("204 with a body: {}", reply.body));
                }
                expect_unchanged(server, &before)
            }
            _ if self.verb == Verb::Delete => match server.get(&path).status {
                404 => Ok(()),
                status => Err(format!("after the DELETE, GET answers {status}")),
            },
            _ => self.expect_written(server, &path, &reply, &etag),
        }
    }

    fn path(&self) -> String {
        match self.kind {
            Kind::Cluster => {
                let verb = format!("{:?}", self.verb).to_lowercase();
                let condition = format!("{:?}", self.condition).to_lowercase();
                let state = if self.exists { "exists" } else { "missing" };
                cluster_path(RESOURCE_GROUP, &format!("{verb}-{condition}-{state}"))
            }
            Kind::Pool => pool_path(RESOURCE_GROUP, PARENT_CLUSTER, &format!("p{}", self.index)),
        }
    }

    /// Creates the resource, and deletes it again for a missing-resource cell; returns the
    /// eTag it has (or had).
    fn prepare(&self, server: &Server, path: &str) -> Result<String, String> {
        let created = server.put(path, &self.put_body());
        if created.status != 201 {
            return Err(format!(
                "set-up PUT answered {}: {}",
                created.status, created.body
            ));
        }
        if !self.exists {
            let deleted = server.send(Method::DELETE, path, &[], None);
            if deleted.status != 200 {
                return Err(format!("set-up DELETE answered {}", deleted.status));
            }
        }
        Ok(created.etag())
    }

    fn put_body(&self) -> Value {
        match self.kind {
            Kind::Cluster => cluster_body(&["np1"]),
            Kind::Pool => pool_body(1),
        }
    }

    fn patch_body(&self) -> Value {
        match self.kind {
            Kind::Cluster => json!({"tags": {"patched": "yes"}}),
            Kind::Pool => json!({"properties": {"count": 2}}),
        }
    }

    /// Checks a successful PUT or PATCH: a new eTag, the same in body, header and a later GET, and
    /// the written content.
    fn expect_written(
        &self,
        server: &Server,
        path: &str,
        reply: &Reply,
        old_etag: &str,
    ) -> Result<(), String> {
        let etag = reply.etag();
        if etag == old_etag {
            return Err(format!("the eTag {etag} did not change"));
        }
        if reply.etag_header() != Some(format!("\"{etag}\"")) {
            return Err(format!(
                "ETag header {:?} for eTag {etag}",
                reply.etag_header()
            ));
        }
        let read = server.get(path);
        if read.status != 200 || read.etag() != etag {
            return Err(format!(
                "GET after the write: {} {}",
                read.status, read.body
            ));
        }
        let patched = match self.kind {
            Kind::Cluster => read.body["tags"]["patched"] == "yes",
            Kind::Pool => read.body["properties"]["count"] == 2,
        };
        if self.verb == Verb::Patch && !patched {
            return Err(format!("the PATCH is not in the resource: {}", read.body));
        }
        Ok(())
    }
}

fn expect_code(reply: &Reply, code: &str) -> Result<(), String> {
    if reply.error_code() == code {
        Ok(())
    } else {
        Err(format!("code {} instead of {code}", reply.error_code()))
    }
}

fn expect_unchanged(server: &Server, before: &Value) -> Result<(), String> {
    let after = server.snapshot();
    if &after == before {
        Ok(())
    } else {
        Err(format!(
            "the failed request changed the state:\nbefore {before}\nafter  {after}"
        ))
    }
}

/// Checks the rules of a conditional GET: 404 for a missing resource whatever the headers,
/// 412 when `If-Match` does not match (checked first), 304 when `If-None-Match` matches.
/// `missing_code` is the error code of the missing resource's 404.
pub fn check_get_rules(server: &Server, existing: &str, missing: &str, missing_code: &str) {
    let stale = unknown_etag();
    for (name, value) in [
        ("If-Match", "*"),
        ("If-Match", &format!("\"{stale}\"") as &str),
        ("If-None-Match", "*"),
        ("If-None-Match", &format!("\"{stale}\"")),
    ] {
        let reply = server.send(Method::GET, missing, &[(name, value)], None);
        assert_eq!(
            reply.status, 404,
            "GET of a missing resource with {name}: {value}"
        );
        assert_eq!(reply.error_code(), missing_code, "{name}: {value}");
    }

    let etag = server.get(existing).etag();
    let quoted = format!("\"{etag}\"");
    let weak = format!("W/\"{etag}\"");
    let other = format!("\"{}\"", unknown_etag());
    let list = format!("{other}, {quoted}");
    let cases: [(&[(&str, &str)], u16); 15] = [
        (&[], 200),
        (&[("If-None-Match", &quoted)], 304),
        (&[("If-None-Match", &etag)], 304),
        (&[("If-None-Match", "*")], 304),
        (&[("If-None-Match", &list)], 304),
        (&[("If-None-Match", &other)], 200),
        (&[("If-None-Match", &weak)], 200),
        (&[("If-None-Match", "")], 200),
        (&[("If-Match", &quoted)], 200),
        (&[("If-Match", &etag)], 200),
        (&[("If-Match", "*")], 200),
        (&[("If-Match", &other)], 412),
        (&[("If-Match", &weak)], 412),
        (&[("If-Match", &other), ("If-None-Match", &quoted)], 412),
        (&[("If-Match", &quoted), ("If-None-Match", &quoted)], 304),
    ];
    for (headers, expected) in cases {
        let reply = server.send(Method::GET, existing, headers, None);
        assert_eq!(
            reply.status, expected,
            "GET with {headers:?}: {}",
            reply.body
        );
        match expected {
            200 => assert_eq!(reply.etag(), etag, "{headers:?}"),
            304 => assert_eq!(reply.body, Value::Null, "304 body with {headers:?}"),
            _ => assert_eq!(reply.error_code(), "PreconditionFailed", "{headers:?}"),
        }
        if expected != 412 {
            assert_eq!(
                reply.etag_header(),
                Some(quoted.clone()),
                "ETag with {headers:?}"
            );
        }
    }
}
