//! `confab admin …` (the Admin service) and `confab register`.

use std::{io::IsTerminal, path::PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::table::Table;
use tonic::transport::Channel;

use crate::{
    client::{api, connect},
    pb,
    server::config::defaults,
    types::Secret,
};

/// Where to reach the server.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// Server URL (`https://…` for TLS).
    #[arg(long, global = true, env = "CONFAB_SERVER", default_value = crate::types::DEFAULT_SERVER_URL)]
    pub(crate) server: String,
    /// PEM file for https: the server's own certificate (pinned: trusted as it is, e.g. from
    /// `openssl req -x509`) or the authority that signed it.
    #[arg(long, global = true, env = "CONFAB_CA")]
    pub(crate) ca: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The username to register (or `user` in the chat's config file).
    #[arg(long, env = "CONFAB_USER")]
    user: Option<String>,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long, env = "CONFAB_PASSWORD_STDIN")]
    password_stdin: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The server's data directory, where it wrote `admin.token` (as given to `confab serve`).
    #[arg(long, global = true, env = "CONFAB_DATA_DIR", default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,
    /// File holding the admin token (default: DATA_DIR/admin.token).
    #[arg(long, global = true, env = "CONFAB_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true, env = "CONFAB_JSON")]
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
    /// Revoke a user's device tickets (a lost laptop): until their next successful login, their
    /// devices are locked out by failed attempts like anyone's.
    RevokeTickets {
        /// Whose tickets.
        user: String,
    },
    /// Disable an account: its session ends and it cannot log in until enabled.
    Disable {
        /// Whose account.
        user: String,
    },
    /// Let a disabled account log in again.
    Enable {
        /// Whose account.
        user: String,
    },
    /// Delete an account with its inbox and blocks; the name becomes free.
    Delete {
        /// Whose account.
        user: String,
    },
    /// Set an account's password (prompted for, or CONFAB_PASSWORD, or stdin's first line).
    SetPassword {
        /// Whose account.
        user: String,
        /// Read the password from the first line of stdin.
        #[arg(long, env = "CONFAB_PASSWORD_STDIN")]
        password_stdin: bool,
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
    /// integrity_check. Exits non-zero if it cannot be trusted.
    /// (`--data-dir` names the directory.)
    Check,
    /// Recover what is readable from a stopped server's damaged store into a fresh one, keeping
    /// the damaged files in DATA_DIR/damaged-TIME/ (offline; does nothing to a healthy store).
    /// (`--data-dir` names the directory.)
    Repair,
}

/// Reads a password: the first line of stdin when asked (`from_stdin`), else
/// `CONFAB_PASSWORD`, else a prompt without echo on a terminal, else (stdin is a pipe or a
/// file, as in scripts) the first line of stdin.
pub(crate) fn read_password(from_stdin: bool, prompt: &str) -> anyhow::Result<Secret> {
    if !from_stdin {
        if let Ok(p) = std::env::var("CONFAB_PASSWORD") {
            return Ok(Secret::new(p));
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password(prompt).context("reading the password")?;
            return Ok(Secret::new(p));
        }
    }
    let mut line = String::new();
    let n = std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    if n == 0 {
        bail!(
            "no password: stdin is not a terminal and ended before a line; pipe the password \
             in (`echo … | confab …`) or set CONFAB_PASSWORD"
        );
    }
    Ok(Secret::new(line.trim_end_matches(['\r', '\n'])))
}

/// The admin token: from `--token-file`, else `DATA_DIR/admin.token`; a missing file is
/// reported with the full path looked at and how to point elsewhere.
fn read_token(args: &AdminArgs) -> anyhow::Result<String> {
    let (path, why) = match &args.token_file {
        Some(path) => (path.clone(), "--token-file"),
        None => (
            args.data_dir.join(defaults::ADMIN_TOKEN_FILE),
            "--data-dir/CONFAB_DATA_DIR",
        ),
    };
    let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    match std::fs::read_to_string(&path) {
        Ok(token) => Ok(token.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no admin token at {} (following {why}); the server writes admin.token into its data \
             directory at first start: give the same --data-dir as `confab serve` (or \
             CONFAB_DATA_DIR), or --token-file",
            shown.display()
        ),
        Err(e) => {
            Err(e).with_context(|| format!("reading the admin token from {}", shown.display()))
        }
    }
}

/// A yes/no cell.
fn yes(on: bool) -> String {
    if on { "yes".into() } else { String::new() }
}

pub(crate) async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let user = args.user.ok_or_else(|| {
        anyhow::anyhow!(
            "name the account to register with --user NAME (or user = \"NAME\" in the config file)"
        )
    })?;
    // The server first: one that is down is said before anybody types a password. A list of
    // a cluster's nodes (as `confab chat` takes) is tried in order: they share the accounts.
    let servers = crate::client::servers::Servers::parse(&args.server.server)
        .map_err(|why| anyhow::anyhow!(why))?;
    let ca = args.server.ca.as_deref();
    let (at, channel) = servers.connect_first(ca).await?;
    let server = servers.url(at);
    let password = read_password(args.password_stdin, &format!("password for {user}: "))?;
    let response = api::auth(channel)
        .register(pb::RegisterRequest {
            username: user,
            password: password.expose().to_owned(),
        })
        .await;
    let response = match response {
        Ok(r) => r,
        Err(status) => {
            let why = connect::first_call_failed(server, ca, &status).await;
            anyhow::bail!(why)
        }
    };
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
    match args.command {
        // Offline: they work on the files of a stopped server, never through one.
        AdminCommand::Check => super::storage::check(&args.data_dir, args.json),
        AdminCommand::Repair => super::storage::repair(&args.data_dir, args.json),
        _ => online(args).await,
    }
}

async fn online(args: AdminArgs) -> anyhow::Result<()> {
    let token = read_token(&args)?;
    let server = connect::server_url(&args.server.server).map_err(|why| anyhow::anyhow!(why))?;
    let ca = args.server.ca.clone();
    let channel = api::connect(&server, ca.as_deref()).await?;
    match call(args, channel, &token).await {
        Err(e) => match e.downcast::<tonic::Status>() {
            // Made on this side (the status has a cause): what is wrong with the connection,
            // found out as for `confab chat`'s first call (plain http to a TLS port, say).
            Ok(status) if std::error::Error::source(&status).is_some() => {
                anyhow::bail!(connect::first_call_failed(&server, ca.as_deref(), &status).await)
            }
            Ok(status) => anyhow::bail!(api::sentence(&status)),
            Err(e) => Err(e),
        },
        Ok(()) => Ok(()),
    }
}

/// The Admin call `args` asks for, its answer printed; a failed call is its `Status`.
async fn call(args: AdminArgs, channel: Channel, token: &str) -> anyhow::Result<()> {
    let mut admin = api::admin(channel, token)?;
    let json = args.json;
    match args.command {
        AdminCommand::Check | AdminCommand::Repair => {
            anyhow::bail!("check and repair work offline, on the data directory")
        }
        AdminCommand::Users => {
            let users = admin
                .list_users(pb::ListUsersRequest {})
                .await?
                .into_inner()
                .users;
            let mut table = Table::new(&["USER", "ONLINE", "LAST LOGIN", "LOCKED", "DISABLED"]);
            for u in users {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"username": u.username, "online": u.online,
                            "created_at_ms": u.created_at_ms, "last_login_ms": u.last_login_ms,
                            "locked_until_ms": u.locked_until_ms, "disabled": u.disabled})
                    );
                } else {
                    table.row(vec![
                        u.username,
                        yes(u.online),
                        ms(u.last_login_ms),
                        yes(u.locked_until_ms > 0),
                        yes(u.disabled),
                    ]);
                }
            }
            if !json {
                print!("{}", table.render());
            }
        }
        AdminCommand::Sessions => {
            let sessions = admin
                .list_sessions(pb::ListSessionsRequest {})
                .await?
                .into_inner()
                .sessions;
            // A NODE column only for a cluster (a lone server's sessions have none).
            let cluster = sessions.iter().any(|s| !s.node.is_empty());
            let mut headers = vec!["USER", "ADDRESS", "SINCE", "HEARTBEAT", "INBOX", "STREAM"];
            if cluster {
                headers.push("NODE");
            }
            let mut table = Table::new(&headers);
            for s in sessions {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"username": s.username, "address": s.address,
                            "since_ms": s.since_ms, "last_heartbeat_ms": s.last_heartbeat_ms,
                            "pending_inbox": s.pending_inbox, "subscribed": s.subscribed,
                            "node": s.node})
                    );
                } else {
                    let mut row = vec![
                        s.username,
                        s.address,
                        ms(s.since_ms),
                        ms(s.last_heartbeat_ms),
                        s.pending_inbox.to_string(),
                        yes(s.subscribed),
                    ];
                    if cluster {
                        row.push(s.node);
                    }
                    table.row(row);
                }
            }
            if !json {
                print!("{}", table.render());
            }
        }
        AdminCommand::Stats => {
            let s = admin.get_stats(pb::GetStatsRequest {}).await?.into_inner();
            super::stats::print(&s, json);
        }
        AdminCommand::Kick { user } => {
            let r = admin
                .kick_user(pb::KickUserRequest {
                    username: user.clone(),
                })
                .await?
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
                .await?;
            println!("unlocked {user}");
        }
        AdminCommand::RevokeTickets { user } => {
            admin
                .revoke_device_tickets(pb::RevokeDeviceTicketsRequest {
                    username: user.clone(),
                })
                .await?;
            println!(
                "revoked {user}'s device tickets: their next logins face the lockout like anyone's"
            );
        }
        AdminCommand::Disable { user } => {
            let r = admin
                .disable_user(pb::DisableUserRequest {
                    username: user.clone(),
                })
                .await?
                .into_inner();
            let ended = if r.was_online {
                "; their session was ended"
            } else {
                ""
            };
            println!("disabled {user}{ended}");
        }
        AdminCommand::Enable { user } => {
            admin
                .enable_user(pb::EnableUserRequest {
                    username: user.clone(),
                })
                .await?;
            println!("enabled {user}");
        }
        AdminCommand::Delete { user } => {
            admin
                .delete_user(pb::DeleteUserRequest {
                    username: user.clone(),
                })
                .await?;
            println!("deleted {user}");
        }
        AdminCommand::SetPassword {
            user,
            password_stdin,
        } => {
            let password = read_password(password_stdin, &format!("new password for {user}: "))?;
            admin
                .set_password(pb::SetPasswordRequest {
                    username: user.clone(),
                    password: password.expose().to_owned(),
                })
                .await?;
            println!("set the password of {user}");
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
                .await?
                .into_inner();
            println!("created {}", r.username);
        }
    }
    Ok(())
}
