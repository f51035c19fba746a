//! `confab.v1.Admin`: the operator's view and controls, behind the admin token.

use std::{collections::HashMap, sync::Arc};

use tonic::{Request, Response, Status};

use super::{admit, bearer, services::admin_server::Admin};
use crate::{
    pb,
    server::{
        core::{Core, stats::Counters},
        error::Error,
    },
    types::Secret,
};

/// The `Admin` service.
pub struct AdminService(pub Arc<Core>);

impl AdminService {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = bearer(request.metadata()).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), self.0.admin_token.expose().as_bytes()) {
            return Err(Error::Unauthenticated(
                "this call needs the admin token (from the server's admin.token file) as `authorization: Bearer <token>`",
            )
            .into());
        }
        admit(request);
        Ok(())
    }
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.check(&request)?;
        let core = &self.0;
        let mut users: Vec<pb::UserInfo> = core
            .accounts
            .all()
            .into_iter()
            .map(|a| pb::UserInfo {
                username: a.name.to_string(),
                created_at_ms: a.created_ms,
                online: core.sessions.by_user(a.id).is_some(),
                locked_until_ms: core.locked_until_ms(&a.name),
                last_login_ms: a.last_login(),
                disabled: a.is_disabled(),
            })
            .collect();
        users.sort_by_key(|u| u.username.to_ascii_lowercase());
        Ok(Response::new(pb::ListUsersResponse { users }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.check(&request)?;
        let core = &self.0;
        // Pending acknowledgements are committed first so the counts are current.
        core.writer.flush().await.map_err(Error::from)?;
        let store = core.store.clone();
        let counts: HashMap<_, _> = tokio::task::spawn_blocking(move || store.inbox_counts())
            .await
            .map_err(|e| Error::Internal(e.into()))?
            .map_err(Error::from)?
            .into_iter()
            .collect();
        let mut sessions: Vec<pb::SessionInfo> = core
            .sessions
            .all()
            .into_iter()
            .map(|s| pb::SessionInfo {
                username: s.name().to_owned(),
                address: s.remote.to_string(),
                since_ms: s.since_ms,
                last_heartbeat_ms: s.last_activity(),
                pending_inbox: counts.get(&s.user_id()).copied().unwrap_or(0),
                subscribed: s.subscribed(),
                node: core
                    .cluster()
                    .map(|c| c.node().to_owned())
                    .unwrap_or_default(),
            })
            .collect();
        if let Some(cluster) = core.cluster() {
            // The directory, not the mirror: an operator wants what PostgreSQL says.
            for e in cluster.directory().all().await.map_err(Error::from)? {
                if e.node == cluster.node() {
                    continue;
                }
                let Some(account) = core.accounts.by_id(e.user) else {
                    continue;
                };
                sessions.push(pb::SessionInfo {
                    username: account.name.to_string(),
                    address: e.remote,
                    since_ms: e.since_ms,
                    last_heartbeat_ms: 0,
                    pending_inbox: counts.get(&e.user).copied().unwrap_or(0),
                    subscribed: false,
                    node: e.node,
                });
            }
        }
        sessions.sort_by_key(|s| s.username.to_ascii_lowercase());
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        self.check(&request)?;
        let core = &self.0;
        let own = core.counters();
        let (node, cluster_sessions, per_node) = match core.cluster() {
            None => (String::new(), own.sessions, Vec::new()),
            Some(c) => {
                let nodes = c
                    .directory()
                    .node_stats(crate::now_ms())
                    .await
                    .map_err(Error::from)?;
                let per_node = nodes
                    .into_iter()
                    .map(|(name, json)| {
                        let counters = if name == c.node() {
                            own.clone()
                        } else {
                            serde_json::from_str(&json).unwrap_or_else(|e| {
                                tracing::warn!(node = %name, "unreadable counters of a node: {e}");
                                Counters::default()
                            })
                        };
                        node_stats(name, counters)
                    })
                    .collect();
                let elsewhere = c.remote.len() as u64;
                (c.node().to_owned(), own.sessions + elsewhere, per_node)
            }
        };
        Ok(Response::new(pb::GetStatsResponse {
            node,
            cluster_sessions,
            nodes: (per_node.len() as u64).max(1),
            per_node,
            users: core.accounts.len() as u64,
            uptime_seconds: own.uptime_seconds,
            sessions: own.sessions,
            logins: own.logins,
            failed_logins: own.failed_logins,
            lockouts: own.lockouts,
            messages_relayed: own.messages_relayed,
            messages_delivered_live: own.messages_delivered_live,
            broadcasts: own.broadcasts,
            broadcast_deliveries: own.broadcast_deliveries,
            address_requests: own.address_requests,
            address_grants: own.address_grants,
            streams_too_slow: own.streams_too_slow,
            storage_commits: own.storage_commits,
        }))
    }

    async fn kick_user(
        &self,
        request: Request<pb::KickUserRequest>,
    ) -> Result<Response<pb::KickUserResponse>, Status> {
        self.check(&request)?;
        let core = &self.0;
        let account = core.account(&request.into_inner().username)?;
        let was_online = core.kick(account.id);
        tracing::info!(user = %account.name, was_online, "kicked by an operator");
        Ok(Response::new(pb::KickUserResponse { was_online }))
    }

    async fn unlock_user(
        &self,
        request: Request<pb::UnlockUserRequest>,
    ) -> Result<Response<pb::UnlockUserResponse>, Status> {
        self.check(&request)?;
        self.0.unlock(&request.into_inner().username).await?;
        Ok(Response::new(pb::UnlockUserResponse {}))
    }

    async fn revoke_device_tickets(
        &self,
        request: Request<pb::RevokeDeviceTicketsRequest>,
    ) -> Result<Response<pb::RevokeDeviceTicketsResponse>, Status> {
        self.check(&request)?;
        self.0
            .revoke_device_tickets(&request.into_inner().username)
            .await?;
        Ok(Response::new(pb::RevokeDeviceTicketsResponse {}))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::CreateUserResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        let account = self
            .0
            .create_user(&req.username, Secret::new(req.password))
            .await?;
        Ok(Response::new(pb::CreateUserResponse {
            username: account.name.to_string(),
        }))
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> Result<Response<pb::DisableUserResponse>, Status> {
        self.check(&request)?;
        let was_online = self
            .0
            .set_disabled(&request.into_inner().username, true)
            .await?;
        Ok(Response::new(pb::DisableUserResponse { was_online }))
    }

    async fn enable_user(
        &self,
        request: Request<pb::EnableUserRequest>,
    ) -> Result<Response<pb::EnableUserResponse>, Status> {
        self.check(&request)?;
        self.0
            .set_disabled(&request.into_inner().username, false)
            .await?;
        Ok(Response::new(pb::EnableUserResponse {}))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        self.check(&request)?;
        let was_online = self.0.delete_user(&request.into_inner().username).await?;
        Ok(Response::new(pb::DeleteUserResponse { was_online }))
    }

    async fn set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Result<Response<pb::SetPasswordResponse>, Status> {
        self.check(&request)?;
        let req = request.into_inner();
        self.0
            .set_password(&req.username, Secret::new(req.password))
            .await?;
        Ok(Response::new(pb::SetPasswordResponse {}))
    }
}

/// A node's counters in their protobuf form.
fn node_stats(node: String, c: Counters) -> pb::NodeStats {
    pb::NodeStats {
        node,
        uptime_seconds: c.uptime_seconds,
        sessions: c.sessions,
        logins: c.logins,
        failed_logins: c.failed_logins,
        lockouts: c.lockouts,
        messages_relayed: c.messages_relayed,
        messages_delivered_live: c.messages_delivered_live,
        broadcasts: c.broadcasts,
        broadcast_deliveries: c.broadcast_deliveries,
        address_requests: c.address_requests,
        address_grants: c.address_grants,
        streams_too_slow: c.streams_too_slow,
        storage_commits: c.storage_commits,
    }
}
