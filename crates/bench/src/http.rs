//! One HTTP/1.1 keep-alive connection per load worker, on hyper's low-level client.
//!
//! Each worker owns its connection, so "64 connections" means exactly 64 sockets, each with
//! at most one request in flight. A connection that fails is dropped and reopened on the
//! next request; the failed request counts as an error.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A response with its body read to the end.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Formats the status and the start of the body for an error message.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let excerpt: String = body.chars().take(300).collect();
        format!("unexpected status {}: {excerpt}", self.status)
    }
}

/// A lazily opened keep-alive connection to one server.
pub struct Connection {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(addr: SocketAddr) -> Connection {
        let host = HeaderValue::from_str(&addr.to_string())
            .expect("a socket address is a valid Host header");
        Connection {
            addr,
            host,
            sender: None,
        }
    }

    /// Sends one request and reads the whole response. `headers` are added as given.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&'static str, &str)],
        body: Option<Bytes>,
    ) -> Result<Reply, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(HOST, self.host.clone());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|error| format!("invalid request: {error}"))?;

        let result = self.exchange(request).await;
        if result.is_err() {
            // The connection may be half-used; start the next request on a fresh one.
            self.sender = None;
        }
        result
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Reply, String> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.sender.insert(connect(self.addr).await?),
        };
        sender
            .ready()
            .await
            .map_err(|error| format!("connection not ready: {error}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|error| format!("reading the response body failed: {error}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| format!("connecting to {addr} failed: {error}"))?;
    stream
        .set_nodelay(true)
        .map_err(|error| format!("setting TCP_NODELAY failed: {error}"))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("HTTP handshake with {addr} failed: {error}"))?;
    tokio::spawn(async move {
        // The connection ends when the worker drops its sender or the server closes it. The
        // next request reconnects in both cases, so the error needs no handling here.
        let _ = connection.await;
    });
    Ok(sender)
}
