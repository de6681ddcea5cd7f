//! An HTTP/1.1 client over the simulated network, for the REST API and the
//! nodes' `/v1/status`: one connection per request (the workload's calls
//! are few and each must fail on its own), JSON in and out.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tollgate_tls::net::TcpStream;

/// Why a request got no answer.
#[derive(Debug, Clone)]
pub enum HttpError {
    /// No connection: the request was never sent.
    Connect(String),
    /// Sent, or perhaps sent: the answer did not come (timeout, a
    /// connection closed before it).
    Lost(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect: {e}"),
            HttpError::Lost(e) => f.write_str(e),
        }
    }
}

/// A JSON request to `host:port`, bounded by `timeout` in all.
pub async fn call(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<(u16, Value), HttpError> {
    match tokio::time::timeout(timeout, exchange(host, port, method, path, token, body)).await {
        Ok(answer) => answer,
        Err(_) => Err(HttpError::Lost(format!("no answer within {timeout:?}"))),
    }
}

async fn exchange(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), HttpError> {
    let stream = TcpStream::connect(host, port)
        .await
        .map_err(|e| HttpError::Connect(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Connect(format!("handshake: {e}")))?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("{host}:{port}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(body).map_err(|e| HttpError::Connect(e.to_string()))?)
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(bytes))
        .map_err(|e| HttpError::Connect(format!("building the request: {e}")))?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| HttpError::Lost(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Lost(format!("reading the body: {e}")))?
            .to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok((status, value))
    }
    .await;
    driver.abort();
    answer
}
