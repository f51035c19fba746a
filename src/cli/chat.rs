//! `confab chat`: raw flags in, a checked [`Config`](crate::client::Config) out. Deciding
//! whether the input is a terminal happens here too, once.

use std::{io::IsTerminal as _, net::SocketAddr, path::PathBuf};

use anyhow::{anyhow, bail};
use clap::Args;

use super::admin::read_password;
use crate::{
    client::{self, Consent, login::Credentials, servers::Servers, ticket::Tickets},
    peer::file::DEFAULT_MAX_FILE_BYTES,
    types::check_username,
};

#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// Server URL (`https://…` for TLS), or the nodes of one cluster separated by commas
    /// (`http://10.0.0.1:4119,http://10.0.0.2:4119`): tried in that order at start, and when
    /// the node in use goes away the chat logs in at the next one by itself.
    #[arg(long, env = "CONFAB_SERVER", default_value = crate::types::DEFAULT_SERVER_URL)]
    server: String,
    /// PEM file for https: the server's own certificate (pinned: trusted as it is, e.g. from
    /// `openssl req -x509`) or the authority that signed it.
    #[arg(long, env = "CONFAB_CA")]
    ca: Option<PathBuf>,
    /// Your username (or `user = "…"` in the config file).
    #[arg(long, env = "CONFAB_USER")]
    user: Option<String>,
    /// Settings file (TOML; keys are these flags' names, e.g. `server = "https://…"`); by
    /// default ~/.config/confab/config.toml ($XDG_CONFIG_HOME honoured) if it exists. Flags and
    /// environment variables beat it.
    #[arg(long, env = "CONFAB_CHAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read the password from the first line of stdin; the following lines are commands.
    /// (Otherwise: CONFAB_PASSWORD, or a prompt that does not echo.)
    #[arg(long, env = "CONFAB_PASSWORD_STDIN")]
    password_stdin: bool,
    /// Address for the listener that receives private messages directly from peers.
    #[arg(long, env = "CONFAB_PEER_LISTEN", default_value = "0.0.0.0:0")]
    peer_listen: SocketAddr,
    /// Host (name or IP) peers should dial for private messages, instead of the address the
    /// server sees you connect from (e.g. behind NAT).
    #[arg(long, env = "CONFAB_ADVERTISE_HOST")]
    advertise_host: Option<String>,
    /// Print every event and result as one JSON object per line.
    #[arg(long, env = "CONFAB_JSON")]
    json: bool,
    /// Give your address to everybody who asks, without a prompt (for bots).
    #[arg(long, env = "CONFAB_AUTO_ACCEPT", conflicts_with = "auto_deny")]
    auto_accept: bool,
    /// Refuse every address request without a prompt.
    #[arg(long, env = "CONFAB_AUTO_DENY")]
    auto_deny: bool,
    /// Where files sent to you are saved (created at the first one), and nowhere else.
    #[arg(long, env = "CONFAB_DOWNLOAD_DIR", default_value = "confab-downloads")]
    download_dir: PathBuf,
    /// The largest file you accept, in bytes; larger offers are refused without asking.
    #[arg(long, env = "CONFAB_MAX_FILE_BYTES", default_value_t = DEFAULT_MAX_FILE_BYTES)]
    max_file_bytes: u64,
    /// Accept every file offered by a user you gave your address to, without asking (bots).
    #[arg(long, env = "CONFAB_AUTO_ACCEPT_FILES")]
    auto_accept_files: bool,
    /// Send files at most this many bytes per second (at least 8192), to leave the link to
    /// others; unset, as fast as the path allows.
    #[arg(long, env = "CONFAB_MAX_FILE_RATE", value_parser = clap::value_parser!(u64).range(8192..))]
    max_file_rate: Option<u64>,
    /// On a terminal, ring its bell for a message, broadcast or address request that arrives
    /// when no line was entered for this long (e.g. `30s`, `0s` for every one).
    #[arg(long, env = "CONFAB_BELL_AFTER", default_value = "30s", value_parser = crate::types::parse_duration)]
    bell_after: std::time::Duration,
    /// Never ring the terminal's bell.
    #[arg(long, env = "CONFAB_NO_BELL")]
    no_bell: bool,
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let Some(user) = args.user else {
        bail!(
            "whose chat? give --user NAME (or CONFAB_USER, or user = \"NAME\" in {})",
            client::dirs::config_file()
                .map_or("the config file".into(), |p| p.display().to_string())
        );
    };
    check_username(&user).map_err(|why| anyhow!("--user: {why}"))?;
    let servers = Servers::parse(&args.server).map_err(|why| anyhow!(why))?;
    // The server first: one that is down or mistyped is said before anybody types a password.
    let (at, channel) = servers.connect_first(args.ca.as_deref()).await?;
    // A person at a prompt can type a wrong password again; a script's password is what it is.
    let prompted = !args.password_stdin
        && std::env::var_os("CONFAB_PASSWORD").is_none()
        && std::io::stdin().is_terminal();
    let password = read_password(args.password_stdin, &format!("password for {user}: "))?;
    let consent = match (args.auto_accept, args.auto_deny) {
        (true, _) => Consent::Accept,
        (_, true) => Consent::Deny,
        _ => Consent::Ask,
    };
    // After --password-stdin the rest of stdin is a script, even when it is a terminal.
    let terminal =
        !args.password_stdin && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let tickets = Tickets::new(servers.urls(), &user);
    client::run(
        client::Config {
            ca: args.ca,
            credentials: Credentials {
                servers,
                tickets,
                user,
                password: client::login::SharedSecret::new(password),
                advertise_host: args.advertise_host.filter(|h| !h.trim().is_empty()),
            },
            peer_listen: args.peer_listen,
            json: args.json,
            consent,
            terminal,
            download_dir: args.download_dir,
            max_file_bytes: args.max_file_bytes,
            auto_accept_files: args.auto_accept_files,
            max_file_rate: args.max_file_rate,
            prompted,
            bell_after: (!args.no_bell).then_some(args.bell_after),
        },
        at,
        channel,
    )
    .await
}
