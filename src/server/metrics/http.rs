//! The metrics listener: plain HTTP/1.1, `GET /metrics` and nothing else.
//!
//! Anyone who can reach the address can connect, so every connection is bounded: at most
//! `MAX_CONNECTIONS` (16) at once, more being closed at accept; `HEADER_TIMEOUT` (5 s) to send a
//! request head; and `CONNECTION_TIMEOUT` (60 s) in all. Put it on loopback or a private interface: the
//! numbers reveal traffic patterns, not secrets.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, render};
use crate::server::core::Core;

/// Scrapers connected at once; Prometheus uses one.
const MAX_CONNECTIONS: usize = 16;
/// Time to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of one connection, keep-alive included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `/metrics` on `listener` until `shutdown` is cancelled.
pub async fn serve(core: Arc<Core>, listener: TcpListener, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics listener: accept failed: {e}");
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("metrics listener: {MAX_CONNECTIONS} connections open; closing another");
            continue;
        };
        let core = Arc::downgrade(&core);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| {
                        let core = core.upgrade();
                        async move { Ok::<_, Infallible>(answer(core, &request).await) }
                    }),
                );
            tokio::select! {
                () = shutdown.cancelled() => {}
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {}
            }
        });
    }
}

async fn answer(core: Option<Arc<Core>>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let Some(core) = core else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    };
    match render(&core).await {
        Ok(text) => response(StatusCode::OK, CONTENT_TYPE, text),
        Err(e) => {
            tracing::error!("rendering metrics failed: {e:#}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n")
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", text.to_owned())
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
