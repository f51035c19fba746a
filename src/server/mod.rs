//! The message center (`confab serve`): accounts, sessions, the durable inbox, presence, blocks,
//! the address handshake and the Admin service, served over gRPC.
//!
//! Start here: [`start`] opens the store, builds the [`core::Core`] and serves the three services
//! plus reflection and health on one port (`serve.rs`) until its shutdown token is cancelled.

pub mod accounts;
mod admin_token;
pub mod blocks;
pub mod cluster;
pub mod config;
pub mod consent;
pub mod core;
pub mod datadir;
pub mod decode;
pub mod domain;
pub mod error;
pub mod listen;
pub mod lockout;
pub mod metrics;
pub mod node;
pub mod ratelimit;
pub mod raw;
pub mod rpc;
mod serve;
pub mod storage;
pub mod store;
pub mod stream;
mod tls;
pub mod wire;
pub mod writer;

use std::{net::SocketAddr, sync::Arc};

use anyhow::{Context, bail};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use config::Config;

use self::core::Core;

/// A running server.
pub struct Handle {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address `/metrics` is served on, if `--metrics-listen` was given.
    pub metrics_addr: Option<SocketAddr>,
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
/// the TLS files are missing or wrong, or the store cannot be opened.
pub async fn start(config: Config) -> anyhow::Result<Handle> {
    check_transport(&config)?;
    // Checked before binding: nothing may say "listening" for a server that cannot serve.
    let tls = config.tls.as_ref().map(tls::load).transpose()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            TcpListener::bind(at)
                .await
                .with_context(|| format!("binding the metrics address {at}"))?,
        ),
        None => None,
    };
    let (core, data_dir, claim) = build(config).await?;
    let admin_token = core.admin_token.expose().to_owned();
    let shutdown = CancellationToken::new();
    let metrics_addr = match metrics_listener {
        Some(listener) => {
            let at = listener.local_addr()?;
            tokio::spawn(metrics::http::serve(
                core.clone(),
                listener,
                shutdown.clone(),
            ));
            tracing::info!(addr = %at, "metrics are served at /metrics");
            Some(at)
        }
        None => None,
    };
    let serving = serve::serve(core, listener, tls, shutdown.clone());
    // The data directory stays locked, and the database claimed, until the server has stopped
    // and flushed.
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let _data_dir = data_dir;
        let Some(mut claim) = claim else {
            return serving.await;
        };
        let mut serving = std::pin::pin!(serving);
        let lost = tokio::select! {
            served = &mut serving => {
                claim.release().await;
                return served;
            }
            lost = claim.lost() => lost,
        };
        tracing::error!("{lost:#}");
        stop.cancel();
        let _ = serving.await;
        Err(lost)
    });
    tracing::info!(%addr, "confab is listening");
    Ok(Handle {
        addr,
        metrics_addr,
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

async fn build(
    config: Config,
) -> anyhow::Result<(Arc<Core>, datadir::DataDir, Option<store::pg_claim::Claim>)> {
    let bus = node::bus_url(&config)?;
    let storage::Storage { dir, store } = storage::open(&config)?;
    // Before anything is read into memory: a lone server's picture of the database is only
    // right if nobody else writes to it.
    let claim = match &config.store {
        Some(url) => {
            let role = match bus {
                None => store::pg_claim::Role::Lone,
                Some(_) => store::pg_claim::Role::Node,
            };
            Some(store::pg_claim::claim(url.expose(), role).await?)
        }
        None => None,
    };
    let admin_token = admin_token::load_or_create(&config.admin_token_path())?;
    let users_file = config.users_file.clone();
    let core = match bus {
        None => Core::start(config, store, admin_token)?,
        Some(url) => node::start(config, &url, store, admin_token).await?,
    };
    if let Some(path) = users_file {
        core.import_users(&path).await?;
    }
    Ok((core, dir, claim))
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
