//! Starting `confab chat`: the peer listener, the first login (asking again for a mistyped
//! password), the input, and the loop's state put together.

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use tokio::task::JoinSet;
use tonic::{Code, transport::Channel};

use super::super::{
    Config, api,
    call::timed,
    connect,
    editor::Names,
    events::{self},
    files::Files,
    grants::Grants,
    input::{self},
    login::{Live, login},
    render::{Item, Printer},
    seen::Seen,
};
use crate::{
    pb::{self},
    peer::{
        PeerKeys, PeerListener,
        file::{Downloads, FileLimits},
    },
    types::{Secret, fingerprint},
};

use super::Repl;

/// Runs `confab chat` until logout or end of input.
///
/// # Errors
/// The server cannot be reached, the login is refused (the server's sentence), or the session
/// was ended by the server ([`SessionOver`](crate::client::SessionOver), already shown).
///
/// `channel` reaches server `at` of the configured list, the first that answered.
pub(crate) async fn run(mut config: Config, at: usize, channel: Channel) -> anyhow::Result<()> {
    let (listener, peer_rx) = PeerListener::bind(config.peer_listen, PeerKeys::generate())
        .await
        .with_context(|| {
            format!(
                "cannot listen for direct messages on {} (--peer-listen)",
                config.peer_listen
            )
        })?;
    let file_rx = listener.receive_files(
        Downloads::new(&config.download_dir),
        FileLimits {
            max_bytes: config.max_file_bytes,
            ..FileLimits::default()
        },
    );
    let (live, at, channel) = first_login(&mut config, at, channel, &listener).await?;
    let live = Arc::new(live);
    let names = Names::default();
    let (lines, sink) = if config.terminal {
        seed_names(&live, names.clone());
        // A terminal the editor cannot drive (TERM=dumb, an odd emulator) still works line by
        // line, without editing.
        input::terminal(format!("{}> ", live.user), names.clone()).unwrap_or_else(|e| {
            tracing::debug!("no line editing: {e:#}");
            input::plain()
        })
    } else {
        input::plain()
    };
    let mut printer = Printer::new(config.json, sink).with_bell(config.bell_after);
    printer.show(&Item::LoggedIn {
        user: live.user.clone(),
        fingerprint: fingerprint(live.keys.public()),
        peer_port: listener.local_addr().port(),
        again: false,
        server: None,
    });
    let password = config.credentials.password.clone();
    let route = events::Route {
        channel,
        at,
        ca: config.ca.clone(),
    };
    let events = events::start(route, config.credentials, listener.clone(), live.clone());
    let repl = Repl {
        printer,
        shown: events.shown.clone(),
        link: events.link.clone(),
        live,
        grants: Grants::new(listener.clone()),
        seen: Seen::default(),
        listener,
        consent: config.consent,
        background: JoinSet::new(),
        files: Files::new(
            config.json,
            config.terminal,
            config.auto_accept_files,
            config.max_file_rate,
        ),
        script: !config.terminal,
        failures: 0,
        names,
        password: password.clone(),
        secrets: None,
    };
    repl.run(lines, events, peer_rx, file_rx).await
}

/// The first login. A wrong password typed at a prompt is asked for again, as often as the
/// server allows before its lockout (which then ends it, with the server's sentence); a node
/// of a `--server` list that cannot serve now (`UNAVAILABLE`: its database is down, it is
/// draining) hands over to the next one that answers; a connection that fails is said in one
/// sentence. The login, and where it was made.
async fn first_login(
    config: &mut Config,
    mut at: usize,
    mut channel: Channel,
    listener: &PeerListener,
) -> anyhow::Result<(Live, usize, Channel)> {
    let first = at;
    let mut asked = 1;
    loop {
        let status = match login(&channel, at, &config.credentials, listener, 1).await {
            Ok(live) => return Ok((live, at, channel)),
            Err(status) => status,
        };
        let servers = &config.credentials.servers;
        if status.code() == Code::Unavailable
            && let Some((next, next_channel)) =
                servers.connect_next(at, first, config.ca.as_deref()).await
        {
            eprintln!(
                "{} cannot log you in now ({}); trying {}",
                servers.url(at),
                api::sentence(&status),
                servers.url(next)
            );
            (at, channel) = (next, next_channel);
            continue;
        }
        if config.prompted && status.code() == Code::Unauthenticated && asked < MAX_PROMPTS {
            eprintln!("{}", api::sentence(&status));
            let prompt = format!("password for {}: ", config.credentials.user);
            let password = tokio::task::spawn_blocking(move || {
                rpassword::prompt_password(prompt).map(Secret::new)
            })
            .await
            .context("reading the password")?
            .context("reading the password")?;
            config.credentials.password.set(password);
            asked += 1;
            continue;
        }
        let server = config.credentials.servers.url(at);
        let why = connect::first_call_failed(server, config.ca.as_deref(), &status);
        return Err(anyhow!(why.await));
    }
}

/// Fills `names` with who is online at login, for Tab completion; presence events keep it
/// current from then on. Nothing is shown: it is the editor's business only.
fn seed_names(live: &Live, names: Names) {
    let mut chat = live.chat.clone();
    tokio::spawn(async move {
        let request = pb::ListOnlineRequest { since_seconds: 0 };
        if let Ok(r) = timed(chat.list_online(request)).await {
            for user in r.into_inner().users {
                names.presence(&user.username, true);
            }
        }
    });
}

/// A bound on password prompts, whatever the server's lockout allows.
const MAX_PROMPTS: u32 = 10;
