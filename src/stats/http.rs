//! A minimal HTTP/1.x server for `GET /metrics`: one request per connection, bounded reads,
//! then the connection is closed. It never panics on bad input: anything it cannot parse
//! gets a 400 (or is dropped when the client goes silent).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::listener::bind_tcp;
use super::prometheus::{encode_metrics, METRICS_CONTENT_TYPE};

/// The request head (request line and headers) may be at most this long.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client must send its request head, and take the reply, within this time.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more are closed at once.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// Binds the `--metrics` listener: SO_REUSEADDR (no SO_REUSEPORT: two processes sharing a
/// metrics port would answer scrapes at random), backlog SOMAXCONN. Must run inside a tokio
/// runtime.
pub fn bind_metrics(addr: SocketAddr) -> io::Result<TcpListener> {
    bind_tcp(addr, false)
}

/// What to answer.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Parses the request line of a complete request head.
fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = &head[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head_only: false },
        "HEAD" => Route::Metrics { head_only: true },
        _ => Route::MethodNotAllowed,
    }
}

/// Where the head ends (after the blank line), if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

fn response(status: &str, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )
    .into_bytes();
    if status.starts_with("405") {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

fn plain(status: &str) -> Vec<u8> {
    let body = format!("{status}\n");
    response(status, "text/plain; charset=utf-8", body.as_bytes(), false)
}

async fn handle(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let reply = loop {
        if let Some(end) = head_end(&buf) {
            break match route(&buf[..end]) {
                Route::Metrics { head_only } => {
                    let text = encode_metrics(registry);
                    response("200 OK", METRICS_CONTENT_TYPE, text.as_bytes(), head_only)
                }
                Route::NotFound => plain("404 Not Found"),
                Route::MethodNotAllowed => plain("405 Method Not Allowed"),
                Route::BadRequest => plain("400 Bad Request"),
            };
        }
        if buf.len() >= MAX_REQUEST_HEAD {
            break plain("431 Request Header Fields Too Large");
        }
        let want = chunk.len().min(MAX_REQUEST_HEAD - buf.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Ok(()); // the client left before finishing its request
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    stream.write_all(&reply).await?;
    stream.shutdown().await
}

/// Serves `GET /metrics` from `registry` until the task is aborted.
pub async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>) {
    let permits = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("metrics: too many scrapes, closing {peer}");
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HTTP_TIMEOUT, handle(stream, &registry)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("metrics: {peer}: {e}"),
                Err(_) => debug!("metrics: {peer}: timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Route::Metrics { head_only: false };
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), m);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), m);
        assert_eq!(route(b"GET /metrics HTTP/1.1\n\n"), m);
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                route(bad),
                Route::BadRequest,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..2000 {
            let mut bytes = Vec::with_capacity(len % 64);
            for _ in 0..len % 64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = b"GET /metrics HTTP/1.1\r\n \x00\xff";
                bytes.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = route(&bytes);
            let _ = head_end(&bytes);
        }
    }
}
