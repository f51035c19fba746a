//! Per-RPC counts and latency: a tower layer around the whole gRPC router, so every service
//! (ours, health, reflection) is measured the same way without a line in any handler.
//!
//! **Invariant:** label values are bounded. A path is only as trustworthy as the client that
//! sent it, so calls the server does not serve (answered `UNIMPLEMENTED` by the router) are
//! counted under `method="unknown"` rather than under whatever the client wrote.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use tower::{Layer, Service};

use crate::server::core::stats::{RpcCall, RpcMethod, Stats, observe};

/// Wraps a gRPC router so each call is counted in [`Stats::rpc_calls`] and timed in
/// [`Stats::rpc_seconds`].
#[derive(Clone)]
pub struct RpcMetricsLayer {
    calls: Family<RpcCall, Counter>,
    seconds: Family<RpcMethod, Histogram>,
}

impl RpcMetricsLayer {
    /// Records into `stats`.
    pub fn new(stats: &Stats) -> Self {
        RpcMetricsLayer {
            calls: stats.rpc_calls.clone(),
            seconds: stats.rpc_seconds.clone(),
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] builds.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    layer: RpcMetricsLayer,
}

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let started = Instant::now();
        let response = self.inner.call(request);
        let layer = self.layer.clone();
        Box::pin(async move {
            let response = response.await;
            if let Ok(response) = &response {
                layer.record(method, status_code(response), started);
            }
            response
        })
    }
}

impl RpcMetricsLayer {
    fn record(&self, method: String, code: i32, started: Instant) {
        let code = tonic::Code::from(code);
        let method = if code == tonic::Code::Unimplemented {
            "unknown".to_owned()
        } else {
            method
        };
        self.calls
            .get_or_create(&RpcCall {
                method: method.clone(),
                code: code_name(code).to_owned(),
            })
            .inc();
        observe(
            &self.seconds.get_or_create(&RpcMethod { method }),
            started.elapsed(),
        );
    }
}

/// The gRPC status of a response: in its headers when the call failed before a body
/// (tonic answers errors that way), otherwise `OK` as far as the headers tell.
fn status_code<R>(response: &http::Response<R>) -> i32 {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

/// The canonical upper-case name of `code`, as gRPC documents it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_to_paths_nobody_serves_share_one_label() {
        let stats = Stats::default();
        let layer = RpcMetricsLayer::new(&stats);
        let now = Instant::now();
        layer.record("confab.v1.Chat/SendMessage".into(), 0, now);
        layer.record("attacker/path-1".into(), 12, now);
        layer.record("attacker/path-2".into(), 12, now);
        let calls = |method: &str, code: &str| {
            stats
                .rpc_calls
                .get_or_create(&RpcCall {
                    method: method.into(),
                    code: code.into(),
                })
                .get()
        };
        assert_eq!(calls("confab.v1.Chat/SendMessage", "OK"), 1);
        assert_eq!(calls("unknown", "UNIMPLEMENTED"), 2);
        assert_eq!(calls("attacker/path-1", "UNIMPLEMENTED"), 0);
    }
}
