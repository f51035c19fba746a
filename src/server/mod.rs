//! The message center (`confab serve`): accounts, sessions, the durable inbox, presence, blocks,
//! the address handshake and the Admin service, served over gRPC.
//!
//! Start here: [`start`] opens the store, builds the [`core::Core`] and serves the three services
//! plus reflection and health on one port until its shutdown token is cancelled.

pub mod accounts;
pub mod blocks;
pub mod config;
pub mod consent;
pub mod core;
pub mod datadir;
pub mod error;
pub mod lockout;
pub mod ratelimit;
pub mod rpc;
pub mod sessions;
pub mod storage;
pub mod store;
pub mod stream;
pub mod wire;
pub mod writer;

/// Server traits generated from `proto/chat.proto` (see `build.rs`).
#[allow(clippy::all, unreachable_pub, missing_docs)] // generated code
pub mod services {
    include!(concat!(env!("OUT_DIR"), "/server/confab.v1.rs"));
}

use std::{io::Write, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming};

pub use config::Config;

use self::{
    core::Core,
    rpc::{admin::AdminService, auth::AuthService, chat::ChatService},
    services::{admin_server::AdminServer, auth_server::AuthServer, chat_server::ChatServer},
    sessions::Sessions,
    writer::Writer,
};
use crate::{pb::SessionEndReason, types::Secret};

/// How long a graceful shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running server.
pub struct Handle {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The operator token for the Admin service.
    pub admin_token: String,
    /// Cancel to shut down gracefully.
    pub shutdown: CancellationToken,
    /// Resolves when the server has stopped and flushed.
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Binds `config.listen` and starts serving in a background task.
///
/// # Errors
/// The address cannot be bound, plaintext on a non-loopback address without `allow_insecure`,
/// or the store cannot be opened.
pub async fn start(config: Config) -> anyhow::Result<Handle> {
    check_transport(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (core, data_dir) = build(config).await?;
    let admin_token = core.admin_token.expose().to_owned();
    let shutdown = CancellationToken::new();
    let serving = serve(core, listener, shutdown.clone());
    // The data directory stays locked until the server has stopped and flushed.
    let task = tokio::spawn(async move {
        let _data_dir = data_dir;
        serving.await
    });
    tracing::info!(%addr, "confab is listening");
    Ok(Handle {
        addr,
        admin_token,
        shutdown,
        task,
    })
}

/// Passwords and tokens must not cross a network in clear.
fn check_transport(config: &Config) -> anyhow::Result<()> {
    if config.tls.is_none() && !config.listen.ip().is_loopback() && !config.allow_insecure {
        bail!(
            "refusing to listen on {} without TLS: passwords and session tokens would cross the \
             network in clear. Give --tls-cert and --tls-key, or --allow-insecure if you really mean it",
            config.listen
        );
    }
    Ok(())
}

async fn build(config: Config) -> anyhow::Result<(Arc<Core>, datadir::DataDir)> {
    let storage::Storage { dir, store } = storage::open(&config)?;
    let admin_token = admin_token(&config.admin_token_path())?;
    let (slow_tx, mut slow_rx) = tokio::sync::mpsc::unbounded_channel();
    let sessions = Arc::new(Sessions::new(slow_tx));
    let (writer, _thread) = Writer::start(store.clone(), sessions.clone());
    let core = Arc::new(Core::new(config, store, writer, sessions, admin_token)?);
    if let Some(path) = core.config.users_file.clone() {
        import_users(&core, &path).await?;
    }

    // Sessions whose stream queue overflowed are ended here, outside the pushing code's locks.
    let slow_core = Arc::downgrade(&core);
    tokio::spawn(async move {
        while let Some(session) = slow_rx.recv().await {
            let Some(core) = slow_core.upgrade() else {
                break;
            };
            if core.end_session(&session, SessionEndReason::TooSlow) {
                tracing::warn!(user = %session.name(), "stream stopped reading; session ended");
            }
        }
    });
    // The session reaper.
    let reap_core = Arc::downgrade(&core);
    let tick =
        (core.config.session_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let Some(core) = reap_core.upgrade() else {
                break;
            };
            core.reap();
        }
    });
    Ok((core, dir))
}

async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
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
    let max_request = core.config.max_message_bytes + 16 * 1024;
    let mut builder = Server::builder().tcp_nodelay(true);
    if let Some(tls) = &core.config.tls {
        let cert =
            std::fs::read(&tls.cert).with_context(|| format!("reading {}", tls.cert.display()))?;
        let key =
            std::fs::read(&tls.key).with_context(|| format!("reading {}", tls.key.display()))?;
        builder =
            builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
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
        for s in stop_core.sessions.all() {
            stop_core.end_session(&s, SessionEndReason::ServerShutdown);
        }
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
    core.writer.flush().await?;
    let store = core.store.clone();
    tokio::task::spawn_blocking(move || store.close()).await??;
    tracing::info!("stopped; everything written is committed");
    Ok(())
}

/// Reads the admin token from `path`, or creates one there readable by the owner only.
fn admin_token(path: &Path) -> anyhow::Result<Secret> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim();
        if token.len() < 16 {
            bail!(
                "the admin token in {} is shorter than 16 characters",
                path.display()
            );
        }
        return Ok(Secret::new(token));
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating the admin token file {}", path.display()))?;
    writeln!(file, "{token}")?;
    tracing::info!(path = %path.display(), "generated the admin token");
    Ok(Secret::new(token))
}

/// Creates the accounts of an assignment-style credentials file that do not exist yet.
async fn import_users(core: &Arc<Core>, path: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut jobs = tokio::task::JoinSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, password)) = line.split_once(char::is_whitespace) else {
            bail!("{}:{}: expected `username password`", path.display(), n + 1);
        };
        let (name, password) = (name.to_owned(), password.trim().to_owned());
        if core.accounts.get(&name).is_some() {
            continue;
        }
        let core = core.clone();
        let where_ = format!("{}:{}", path.display(), n + 1);
        jobs.spawn(async move {
            match core.create_user(&name, Secret::new(password)).await {
                Ok(_) | Err(error::Error::NameTaken(_)) => Ok(()),
                Err(e) => Err(anyhow::anyhow!("{where_}: {e}")),
            }
        });
    }
    let mut created = 0usize;
    while let Some(result) = jobs.join_next().await {
        result??;
        created += 1;
    }
    tracing::info!(created, "imported the users file");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_refused_off_loopback_unless_asked_for_or_encrypted() {
        let config = |listen: &str| Config::new(listen.parse().unwrap(), "unused".into());
        assert!(check_transport(&config("127.0.0.1:4119")).is_ok());
        assert!(check_transport(&config("[::1]:4119")).is_ok());
        let public = config("0.0.0.0:4119");
        let refusal = check_transport(&public).unwrap_err().to_string();
        assert!(refusal.contains("--allow-insecure"), "{refusal}");
        assert!(check_transport(&config("192.0.2.7:4119")).is_err());
        let insecure = Config {
            allow_insecure: true,
            ..public.clone()
        };
        assert!(check_transport(&insecure).is_ok());
        let tls = Config {
            tls: Some(config::TlsFiles {
                cert: "cert.pem".into(),
                key: "key.pem".into(),
            }),
            ..public
        };
        assert!(check_transport(&tls).is_ok());
    }
}
