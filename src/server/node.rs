//! Starting a cluster node (the assembly beside `server/mod.rs` when `--bus` is given): checks the settings, connects the bus and the directory, starts
//! the core, and runs the node's background work (events from the other nodes, the lease and
//! the search for dead nodes, the presence batches, catching up after the bus comes back).

use std::{sync::Arc, time::Duration};

use anyhow::bail;

use crate::{
    server::{
        cluster::{Cluster, check_node_id, nats::NatsBus},
        config::{Config, defaults},
        core::Core,
        store::{Store, pg_directory::PgDirectory},
    },
    types::Secret,
};

/// The bus URL if `config` makes a cluster node.
///
/// # Errors
/// A bus without the PostgreSQL store, a bad node id, or a node id without a bus.
pub fn bus_url(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(bus) = &config.bus else {
        if config.node_id.is_some() {
            bail!("--node-id names a node of a cluster; give --bus nats://… too");
        }
        return Ok(None);
    };
    if config.store.is_none() {
        bail!(
            "--bus makes this server a node of a cluster, whose nodes share one database: give \
             --store postgres://… too (SQLite is one node's file)"
        );
    }
    if let Some(id) = &config.node_id {
        check_node_id(id).map_err(|e| anyhow::anyhow!("--node-id: {e}"))?;
    }
    Ok(Some(bus.expose().to_owned()))
}

/// Joins the cluster on the bus at `url` and starts the core as one of its nodes.
///
/// # Errors
/// PostgreSQL or NATS cannot be reached.
pub async fn start(
    config: Config,
    url: &str,
    store: Arc<dyn Store>,
    admin_token: Secret,
) -> anyhow::Result<Arc<Core>> {
    let presence_window = config.cluster_presence_window;
    let node = config
        .node_id
        .clone()
        .unwrap_or_else(|| defaults::node_id(config.listen));
    let directory = PgDirectory::open(config.store.as_ref().expect("checked").expose())?;
    let cluster_id = directory.cluster_id().await?;
    let (bus, incoming) =
        NatsBus::connect(url, config.bus_ca.as_deref(), &cluster_id, &node).await?;
    let cluster = Arc::new(Cluster::new(
        Arc::new(bus),
        directory,
        config.session_timeout,
    ));
    // Sessions this node held before it died are nobody's now.
    let leftovers = cluster.directory().clear_node(&node).await?;
    let (swept, _) = cluster.renew(true, "{}".into()).await?;
    let core = Core::start_node(config, store, admin_token, Some(cluster.clone()))?;
    core.sessions_gone(leftovers.into_iter().chain(swept).collect());
    core.resync().await?;
    let weak = Arc::downgrade(&core);
    let mut events = incoming.events;
    let mut reconnected = incoming.reconnected;
    tokio::spawn({
        let weak = weak.clone();
        async move {
            while let Some(envelope) = events.recv().await {
                let Some(core) = weak.upgrade() else { break };
                core.apply_remote(envelope).await;
            }
        }
    });
    tokio::spawn({
        let weak = weak.clone();
        async move {
            while reconnected.changed().await.is_ok() {
                let Some(core) = weak.upgrade() else { break };
                if let Err(e) = core.resync().await {
                    tracing::warn!(
                        "could not catch up with the cluster after the bus came back: {e:#}"
                    );
                }
            }
        }
    });
    tokio::spawn(Cluster::publish_presence(
        Arc::downgrade(&cluster),
        presence_window,
    ));
    tokio::spawn(lease(weak, cluster.lease_tick()));
    tracing::info!(node, cluster = cluster_id, "joined the cluster");
    Ok(core)
}

/// Renews this node's lease and takes the sessions of dead nodes away, every `tick`.
///
/// After this node could not reach PostgreSQL, it takes nobody away for a whole lease: when
/// PostgreSQL itself was down, every node's lease ran out together, and the first node back must
/// not take the others, which are renewing too, for dead.
async fn lease(core: std::sync::Weak<Core>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut last_failure: Option<tokio::time::Instant> = None;
    loop {
        interval.tick().await;
        let Some(core) = core.upgrade() else { break };
        let Some(cluster) = core.cluster().cloned() else {
            break;
        };
        let sweep = last_failure.is_none_or(|at| at.elapsed() > cluster.lease());
        let stats = serde_json::to_string(&core.counters()).unwrap_or_else(|_| "{}".into());
        match cluster.renew(sweep, stats).await {
            Ok((gone, presumed_dead)) => {
                if presumed_dead {
                    // Stalled past its lease: the others have taken its sessions away and
                    // shown its users offline. End them here too, so clients log in again
                    // and are seen again, rather than live on unseen.
                    tracing::warn!(
                        "this node missed its lease and was taken for dead; ending its sessions"
                    );
                    core.end_all(crate::server::core::EndReason::TimedOut);
                }
                if failing {
                    tracing::info!("the session directory is reachable again");
                    failing = false;
                }
                if !gone.is_empty() {
                    tracing::warn!(
                        sessions = gone.len(),
                        "a node stopped renewing its lease; its sessions have ended"
                    );
                    core.sessions_gone(gone);
                }
            }
            Err(e) => {
                last_failure = Some(tokio::time::Instant::now());
                if !failing {
                    tracing::warn!("could not renew this node's lease: {e:#}");
                    failing = true;
                }
            }
        }
    }
}
