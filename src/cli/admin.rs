//! `confab admin …` (the Admin service) and `confab register`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::{client::api, pb, types::Secret};

/// Where to reach the server.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Server URL (`https://…` for TLS).
    #[arg(long, env = "CONFAB_SERVER", default_value = crate::types::DEFAULT_SERVER_URL)]
    pub(crate) server: String,
    /// PEM certificate authority to trust for an https server.
    #[arg(long, env = "CONFAB_CA")]
    pub(crate) ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The username to register.
    #[arg(long, env = "CONFAB_USER")]
    user: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long, env = "CONFAB_PASSWORD_STDIN")]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// File holding the admin token (the server writes DATA_DIR/admin.token).
    #[arg(
        long,
        env = "CONFAB_ADMIN_TOKEN_FILE",
        default_value = "./confab-data/admin.token"
    )]
    token_file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, env = "CONFAB_JSON")]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Every account.
    Users,
    /// Every live session.
    Sessions,
    /// Counters since the server started.
    Stats,
    /// End a user's session.
    Kick {
        /// Whose session.
        user: String,
    },
    /// Lift a login lockout.
    Unlock {
        /// Whose lockout.
        user: String,
    },
    /// Create an account (also when registration is off); the password is prompted for.
    CreateUser {
        /// The new username.
        user: String,
        /// Read the password from the first line of stdin.
        #[arg(long, env = "CONFAB_PASSWORD_STDIN")]
        password_stdin: bool,
    },
    /// Check a stopped server's store (offline): the write-ahead log, the schema, SQLite's
    /// quick_check. Exits non-zero if it cannot be trusted.
    Check {
        /// The server's data directory.
        #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./confab-data")]
        data_dir: PathBuf,
    },
    /// Recover what is readable from a stopped server's damaged store into a fresh one, keeping
    /// the damaged files in DATA_DIR/damaged-TIME/ (offline; does nothing to a healthy store).
    Repair {
        /// The server's data directory.
        #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./confab-data")]
        data_dir: PathBuf,
    },
}

/// Reads a password: `CONFAB_PASSWORD`, the first line of stdin, or a prompt without echo.
pub(crate) fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<Secret> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        return Ok(Secret::new(line.trim_end_matches(['\r', '\n'])));
    }
    if let Ok(p) = std::env::var("CONFAB_PASSWORD") {
        return Ok(Secret::new(p));
    }
    let p = rpassword::prompt_password(prompt).context("reading the password")?;
    Ok(Secret::new(p))
}

pub(crate) async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let password = read_password(
        args.password_stdin,
        &format!("password for {}: ", args.user),
    )?;
    let channel = api::connect(&args.server.server, args.server.ca.as_deref()).await?;
    let response = api::auth(channel)
        .register(pb::RegisterRequest {
            username: args.user,
            password: password.expose().to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!(api::sentence(&s)))?;
    println!("registered {}", response.into_inner().username);
    Ok(())
}

fn ms(t: i64) -> String {
    if t <= 0 {
        return "-".into();
    }
    let secs = (crate::now_ms() - t).max(0) / 1000;
    format!(
        "{} ago",
        crate::types::human_duration(std::time::Duration::from_secs(secs as u64))
    )
}

pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let AdminArgs {
        server,
        token_file,
        json,
        command,
    } = args;
    match command {
        // Offline: they work on the files of a stopped server, never through one.
        AdminCommand::Check { data_dir } => super::storage::check(&data_dir, json),
        AdminCommand::Repair { data_dir } => super::storage::repair(&data_dir, json),
        command => online(&server, &token_file, json, command).await,
    }
}

async fn online(
    server: &ServerArgs,
    token_file: &std::path::Path,
    json: bool,
    command: AdminCommand,
) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("reading the admin token from {}", token_file.display()))?;
    let channel = api::connect(&server.server, server.ca.as_deref()).await?;
    let mut admin = api::admin(channel, token.trim())?;
    let fail = |s: tonic::Status| anyhow::anyhow!(api::sentence(&s));
    match command {
        AdminCommand::Check { .. } | AdminCommand::Repair { .. } => {
            anyhow::bail!("check and repair work offline, on the data directory")
        }
        AdminCommand::Users => {
            let users = admin
                .list_users(pb::ListUsersRequest {})
                .await
                .map_err(fail)?
                .into_inner()
                .users;
            for u in users {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"username": u.username, "online": u.online,
                            "created_at_ms": u.created_at_ms, "last_login_ms": u.last_login_ms,
                            "locked_until_ms": u.locked_until_ms})
                    );
                } else {
                    let locked = if u.locked_until_ms > 0 {
                        "  locked"
                    } else {
                        ""
                    };
                    let online = if u.online { "online" } else { "" };
                    println!(
                        "{:<32} {:<7} last login {}{locked}",
                        u.username,
                        online,
                        ms(u.last_login_ms)
                    );
                }
            }
        }
        AdminCommand::Sessions => {
            let sessions = admin
                .list_sessions(pb::ListSessionsRequest {})
                .await
                .map_err(fail)?
                .into_inner()
                .sessions;
            for s in sessions {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"username": s.username, "address": s.address,
                            "since_ms": s.since_ms, "last_heartbeat_ms": s.last_heartbeat_ms,
                            "pending_inbox": s.pending_inbox, "subscribed": s.subscribed})
                    );
                } else {
                    println!(
                        "{:<32} {:<22} since {:<10} heartbeat {:<10} inbox {}{}",
                        s.username,
                        s.address,
                        ms(s.since_ms),
                        ms(s.last_heartbeat_ms),
                        s.pending_inbox,
                        if s.subscribed { "" } else { "  (no stream)" }
                    );
                }
            }
        }
        AdminCommand::Stats => {
            let s = admin
                .get_stats(pb::GetStatsRequest {})
                .await
                .map_err(fail)?
                .into_inner();
            let rows = [
                ("uptime_seconds", s.uptime_seconds),
                ("users", s.users),
                ("sessions", s.sessions),
                ("logins", s.logins),
                ("failed_logins", s.failed_logins),
                ("lockouts", s.lockouts),
                ("messages_relayed", s.messages_relayed),
                ("messages_delivered_live", s.messages_delivered_live),
                ("broadcasts", s.broadcasts),
                ("broadcast_deliveries", s.broadcast_deliveries),
                ("address_requests", s.address_requests),
                ("address_grants", s.address_grants),
                ("streams_too_slow", s.streams_too_slow),
                ("storage_commits", s.storage_commits),
            ];
            if json {
                let map: serde_json::Map<String, serde_json::Value> = rows
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).into()))
                    .collect();
                println!("{}", serde_json::Value::Object(map));
            } else {
                for (k, v) in rows {
                    println!("{k:<24} {v}");
                }
            }
        }
        AdminCommand::Kick { user } => {
            let r = admin
                .kick_user(pb::KickUserRequest {
                    username: user.clone(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            println!(
                "{}",
                if r.was_online {
                    format!("kicked {user}")
                } else {
                    format!("{user} had no session")
                }
            );
        }
        AdminCommand::Unlock { user } => {
            admin
                .unlock_user(pb::UnlockUserRequest {
                    username: user.clone(),
                })
                .await
                .map_err(fail)?;
            println!("unlocked {user}");
        }
        AdminCommand::CreateUser {
            user,
            password_stdin,
        } => {
            let password = read_password(password_stdin, &format!("password for {user}: "))?;
            let r = admin
                .create_user(pb::CreateUserRequest {
                    username: user,
                    password: password.expose().to_owned(),
                })
                .await
                .map_err(fail)?
                .into_inner();
            println!("created {}", r.username);
        }
    }
    Ok(())
}
