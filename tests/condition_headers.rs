//! Proves the grammar of `If-Match` and `If-None-Match` on writes over a real socket. It covers
//! quoted and bare tags, lists, several header lines forming one list, commas inside quotes,
//! weak tags that never match, empty values that set no condition, and header names in any
//! case.
//! Each case is a PUT or DELETE against a resource whose current eTag is known, so the status
//! shows whether the tag matched.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Server, cluster_body, cluster_path, pool_body, pool_path, start_fresh, unknown_etag};
use reqwest::Method;

/// Creates `path` and returns its eTag.
fn create(server: &Server, path: &str) -> String {
    let created = server.put(path, &cluster_body(&["np1"]));
    assert_eq!(created.status, 201, "{}", created.body);
    created.etag()
}

/// PUTs `path` with `headers` and returns the status.
fn put_status(server: &Server, path: &str, headers: &[(&str, &str)]) -> u16 {
    let reply = server.send(Method::PUT, path, headers, Some(&cluster_body(&["np1"])));
    reply.status
}

#[test]
fn quoted_and_bare_tags_match() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let mut etag = create(&server, &path);
    for form in ["\"{}\"", "{}", "  \"{}\"  ", "\t{}\t"] {
        let value = form.replace("{}", &etag);
        let reply = server.send(
            Method::PUT,
            &path,
            &[("If-Match", &value)],
            Some(&cluster_body(&["np1"])),
        );
        assert_eq!(reply.status, 200, "If-Match: {value:?}: {}", reply.body);
        etag = reply.etag();
    }
}

#[test]
fn tag_lists_match_any_member() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let etag = create(&server, &path);
    let other = format!("\"{}\"", unknown_etag());

    let mixed = format!("{other}, {etag}");
    assert_eq!(put_status(&server, &path, &[("If-Match", &mixed)]), 200);
    let etag = server.get(&path).etag();

    let quoted = format!("{other},\"{etag}\"");
    assert_eq!(put_status(&server, &path, &[("If-Match", &quoted)]), 200);
    let etag = server.get(&path).etag();

    // Empty list elements are allowed around the tags.
    let sparse = format!(" , {other} ,, \"{etag}\" ,");
    assert_eq!(put_status(&server, &path, &[("If-Match", &sparse)]), 200);

    let none_match = format!("{other}, \"{}\"", unknown_etag());
    assert_eq!(
        put_status(&server, &path, &[("If-Match", &none_match)]),
        412
    );
}

#[test]
fn header_lines_form_one_list() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let etag = create(&server, &path);
    let other = format!("\"{}\"", unknown_etag());
    let quoted = format!("\"{etag}\"");

    let lines = [("If-Match", other.as_str()), ("If-Match", quoted.as_str())];
    assert_eq!(put_status(&server, &path, &lines), 200);

    let stale = [("If-Match", other.as_str()), ("If-Match", quoted.as_str())];
    assert_eq!(
        put_status(&server, &path, &stale),
        412,
        "old eTag after the write"
    );

    // An empty line among others adds nothing to the list.
    let etag = server.get(&path).etag();
    let with_empty = [("If-Match", ""), ("If-Match", etag.as_str())];
    assert_eq!(put_status(&server, &path, &with_empty), 200);
}

#[test]
fn commas_inside_quotes_do_not_split() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let etag = create(&server, &path);

    // One tag whose text merely contains the eTag: splitting at the comma would match it.
    let one_tag = format!("\"other,{etag}\"");
    assert_eq!(put_status(&server, &path, &[("If-Match", &one_tag)]), 412);

    // The list goes on after a quoted comma.
    let list = format!("\"a,b\", \"{etag}\"");
    assert_eq!(put_status(&server, &path, &[("If-Match", &list)]), 200);
}

#[test]
fn weak_tags_never_match() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let etag = create(&server, &path);

    let weak = format!("W/\"{etag}\"");
    let reply = server.send(Method::DELETE, &path, &[("If-Match", &weak)], None);
    assert_eq!(reply.status, 412, "{}", reply.body);
    assert_eq!(reply.error_code(), "PreconditionFailed");
    assert_eq!(
        server.get(&path).etag(),
        etag,
        "the failed DELETE changed nothing"
    );

    // A strong tag next to the weak one still matches.
    let mixed = format!("W/\"{etag}\", \"{etag}\"");
    let reply = server.send(Method::DELETE, &path, &[("If-Match", &mixed)], None);
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn empty_values_set_no_condition() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");

    let blank = [("If-Match", ""), ("If-None-Match", "  ")];
    assert_eq!(put_status(&server, &path, &blank), 201, "create");
    assert_eq!(put_status(&server, &path, &blank), 200, "update");

    // An empty header beside a non-empty one leaves the other in force.
    let star = [("If-Match", ""), ("If-None-Match", "*")];
    assert_eq!(put_status(&server, &path, &star), 412);
    let other = format!("\"{}\"", unknown_etag());
    let tag = [("If-Match", other.as_str()), ("If-None-Match", "")];
    assert_eq!(put_status(&server, &path, &tag), 412);

    let reply = server.send(Method::DELETE, &path, &blank, None);
    assert_eq!(reply.status, 200);
}

#[test]
fn pool_writes_share_the_grammar() {
    let (_dir, server) = start_fresh(&[]);
    create(&server, &cluster_path("rg1", "c1"));
    let path = pool_path("rg1", "c1", "np1");
    let etag = server.get(&path).etag();

    let bare = server.send(
        Method::PUT,
        &path,
        &[("If-Match", &etag)],
        Some(&pool_body(2)),
    );
    assert_eq!(bare.status, 200, "{}", bare.body);

    let lines = [("If-Match", "\"a,b\""), ("If-Match", &bare.etag() as &str)];
    let listed = server.send(Method::PUT, &path, &lines, Some(&pool_body(3)));
    assert_eq!(listed.status, 200, "{}", listed.body);

    let weak = format!("W/\"{}\"", listed.etag());
    let reply = server.send(Method::DELETE, &path, &[("If-Match", &weak)], None);
    assert_eq!(reply.status, 412);
}

#[test]
fn header_names_in_any_case() {
    let (_dir, server) = start_fresh(&[]);
    let path = cluster_path("rg1", "c1");
    let etag = create(&server, &path);

    // reqwest sends header names in lower case, so this request is written by hand.
    let other = unknown_etag();
    let status = raw_delete(&server, &path, &format!("IF-MATCH: \"{other}\""));
    assert_eq!(status, 412);
    let status = raw_delete(&server, &path, &format!("If-Match: \"{etag}\""));
    assert_eq!(status, 200);
    let status = raw_delete(&server, &path, "IF-NONE-MATCH: *");
    assert_eq!(status, 204);
}

/// Sends a DELETE with one raw header line over a new connection and returns the status.
fn raw_delete(server: &Server, path: &str, header_line: &str) -> u16 {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let request = format!(
        "DELETE {path}?api-version={} HTTP/1.1\r\nHost: {}\r\n{header_line}\r\nConnection: close\r\n\r\n",
        common::API_VERSION,
        server.addr
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status_line = response.lines().next().unwrap_or_default();
    status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}
