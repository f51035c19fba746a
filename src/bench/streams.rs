//! `confab bench --stream-rounds N`: what a connection that opens as many streams as the server
//! allows leaves behind once it closes. One connection at a time opens `--streams` `SendStream`s
//! (the server's `--max-streams-per-connection`, 128 by default), sends one message on each and
//! waits for every answer, so all of them are live in the server at once; then it closes, and
//! the next connection does the same. The server's resident memory is read from /proc before
//! the first round, at each round's peak, and after each close once the server has let go.
//!
//! Only a flat line after the closes means nothing is held; what the rounds leave above the
//! first one is the figure that matters (the first round also pays for one-off allocations).

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    args::{ServerSource, Settings},
    confab::{ConfabTarget, PASSWORD},
    proc, spawn,
    target::Target,
};
use crate::{client::api, pb};

/// How long after a close the server gets to notice and free the connection before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);

/// What `--stream-rounds` prints (`--json`: this, as JSON). Memory in MiB.
#[derive(Debug, Serialize)]
struct StreamsReport {
    streams: usize,
    rounds: usize,
    before_mib: f64,
    /// Per round: RSS with every stream open.
    peak_mib: Vec<f64>,
    /// Per round: RSS after the connection closed.
    after_close_mib: Vec<f64>,
}

/// Runs the rounds against the server `settings` names (or one it spawns).
///
/// # Errors
/// The server cannot be reached or refuses a stream.
pub(crate) async fn run(settings: &Settings, rounds: usize, streams: usize) -> anyhow::Result<()> {
    let (url, pid, spawned) = match &settings.server {
        ServerSource::Spawn => {
            let server = spawn::confab().await?;
            (server.url.clone(), Some(server.pid), Some(server))
        }
        ServerSource::External { url, pid } => (url.clone(), *pid, None),
    };
    let pid = pid.context(
        "--stream-rounds reads the server's memory: give --server-pid or --spawn-server",
    )?;
    let report = measure(&url, pid, settings, rounds, streams).await;
    if let Some(server) = spawned {
        server.stop().await;
    }
    let report = report?;
    if settings.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let list = |v: &[f64]| {
            v.iter()
                .map(|m| format!("{m:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{} rounds of one connection with {} SendStreams, server RSS in MiB\n\
             before: {:.1}\npeak:   {}\nclosed: {}",
            report.rounds,
            report.streams,
            report.before_mib,
            list(&report.peak_mib),
            list(&report.after_close_mib)
        );
    }
    Ok(())
}

async fn measure(
    url: &str,
    pid: u32,
    settings: &Settings,
    rounds: usize,
    streams: usize,
) -> anyhow::Result<StreamsReport> {
    let (sender, recipient) = (settings.user(0), settings.user(1));
    ConfabTarget::new(url.to_owned(), Some(pid))
        .register(&[sender.clone(), recipient.clone()], 2)
        .await?;
    let rss = || -> anyhow::Result<f64> { Ok(proc::sample(pid)?.rss_kib as f64 / 1024.0) };
    let mut report = StreamsReport {
        streams,
        rounds,
        before_mib: rss()?,
        peak_mib: Vec::new(),
        after_close_mib: Vec::new(),
    };
    for round in 0..rounds {
        let channel = api::connect(url, None).await?;
        let login = api::auth(channel.clone())
            .login(pb::LoginRequest {
                username: sender.clone(),
                password: PASSWORD.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("login: {}", api::sentence(&s)))?
            .into_inner();
        let chat = api::chat(channel, &login.token)?;
        let mut open = Vec::with_capacity(streams);
        for i in 0..streams {
            let (tx, rx) = mpsc::channel(1);
            let mut responses = chat
                .clone()
                .send_stream(ReceiverStream::new(rx))
                .await
                .map_err(|s| anyhow!("SendStream {i}: {}", api::sentence(&s)))?
                .into_inner();
            tx.send(pb::SendStreamRequest {
                message: Some(pb::SendMessageRequest {
                    to: recipient.clone(),
                    body: format!("round {round} stream {i}"),
                    message_id: format!("r{round}-s{i}"),
                }),
            })
            .await?;
            responses
                .message()
                .await
                .map_err(|s| anyhow!("SendStream {i}: {}", api::sentence(&s)))?
                .context("a SendStream ended before its answer")?;
            open.push((tx, responses));
        }
        report.peak_mib.push(rss()?);
        // Dropping every handle closes the streams and the connection.
        drop(open);
        drop(chat);
        tokio::time::sleep(SETTLE).await;
        report.after_close_mib.push(rss()?);
    }
    Ok(report)
}
