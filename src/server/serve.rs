//! Serving: the gRPC services, reflection and health on one port, TLS, and the graceful
//! shutdown that tells every stream before the connections close.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use super::{
    core::Core,
    listen,
    metrics::rpc::RpcMetricsLayer,
    rpc::{
        admin::AdminService,
        auth::AuthService,
        chat::ChatService,
        services::{admin_server::AdminServer, auth_server::AuthServer, chat_server::ChatServer},
    },
};

/// How long a graceful shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Gives a response its `date` header marked sensitive, which HPACK sends as a literal "never
/// indexed". Otherwise hyper adds one that h2 indexes: a new value every second enters each
/// connection's header table, which grows until full, so every connection's memory crept up
/// for minutes (measured at 10 000 users, BENCHMARKS "The climb at 10 000 users"). hyper keeps a
/// `date` the response already has.
fn unindexed_date<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    use tonic::codegen::http::header::{DATE, HeaderValue};
    if let Ok(mut date) =
        HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
    {
        date.set_sensitive(true);
        response.headers_mut().insert(DATE, date);
    }
    response
}

/// Serves `core` on `listener` until `shutdown` is cancelled, then flushes the writer.
pub(super) async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    tls: Option<Identity>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthServer<AuthService>>().await;
    health.set_serving::<ChatServer<ChatService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // Requests are small; bound what one request may make the server buffer.
    let max_request = core.config().max_message_bytes + 16 * 1024;
    let config = core.config();
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_concurrent_streams(config.max_streams_per_connection);
    if let Some(identity) = tls {
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let incoming = listen::incoming(listener, listen::Limits::from(config));
    // Each request tells its connection that the HTTP/2 handshake is over; every call is
    // counted and timed for /metrics.
    let mut builder = builder
        .layer(tower::util::MapRequestLayer::new(
            listen::note_request::<tonic::body::Body>,
        ))
        .layer(RpcMetricsLayer::new(&core.stats))
        .layer(tower::util::MapResponseLayer::new(unindexed_date));
    let stop_core = core.clone();
    let stop = shutdown.clone();
    let router = builder
        .add_service(
            AuthServer::new(AuthService(core.clone())).max_decoding_message_size(max_request),
        )
        .add_service(
            ChatServer::new(ChatService(core.clone())).max_decoding_message_size(max_request),
        )
        .add_service(
            AdminServer::new(AdminService(core.clone())).max_decoding_message_size(max_request),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let serving = router.serve_with_incoming_shutdown(incoming, async move {
        stop.cancelled().await;
        tracing::info!("shutting down");
        health.set_not_serving::<AuthServer<AuthService>>().await;
        health.set_not_serving::<ChatServer<ChatService>>().await;
        // Streams end once told, which lets the server's graceful shutdown finish.
        stop_core.shut_down();
    });
    // A client that stopped reading can hold its stream (and so the graceful shutdown) open
    // forever; after the grace period the server stops without it.
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = serving => served?,
        () = grace => tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    core.leave().await;
    core.writer.flush().await?;
    let store = core.store.clone();
    tokio::task::spawn_blocking(move || store.close()).await??;
    tracing::info!("stopped; everything written is committed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_a_date_that_is_never_indexed() {
        let response = unindexed_date(tonic::codegen::http::Response::new(()));
        let date = response.headers().get("date").expect("a date");
        assert!(date.is_sensitive());
        let when = httpdate::parse_http_date(date.to_str().unwrap()).unwrap();
        assert!(when.elapsed().unwrap_or_default() < Duration::from_secs(60));
    }
}
