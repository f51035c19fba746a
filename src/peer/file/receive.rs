//! The receiving side of a file transfer, run by the listener for a connection whose hello asked
//! for one: read the offer, answer it (automatically, or with the user's answer through
//! [`FileEvent::Offered`]), then hand the connection to the data phase (`chunks_in.rs`), which
//! takes the chunks into the `.part` file on blocking threads.
//!
//! Cuts the sender off, leaving nothing under the final name, on a size or checksum lie, a
//! malformed frame or a stall; what was received and authenticated before a cut-off that was not
//! a lie stays in the `.part` for a resume. Never logs names or content, only sizes and why.

use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::chunks_in::DataPhase;
use super::downloads::Downloads;
use super::{FileEvent, FileLimits, IncomingFile, MAX_OFFERED_NAME, MAX_TRANSFER_ID, Progress};
use crate::pb::{FileAnswer, FileDecision, FileOffer};
use crate::peer::frame;
use crate::peer::noise::Transport;

/// What the listener needs to receive files; set once by `PeerListener::receive_files`.
#[derive(Debug)]
pub(crate) struct FileReceiving {
    pub(crate) downloads: Arc<Downloads>,
    pub(crate) events: mpsc::Sender<FileEvent>,
    pub(crate) limits: FileLimits,
    /// One permit per transfer in progress (or waiting for its answer).
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) next_id: AtomicU64,
}

/// Receives one file over a connection whose handshake is done. `Ok` says what happened in a
/// few words for the `debug!` line; the user learns the outcome through [`FileEvent`]s.
pub(crate) async fn receive(
    mut stream: TcpStream,
    mut transport: Transport,
    from: String,
    from_key: Vec<u8>,
    ctx: Arc<FileReceiving>,
    stop: CancellationToken,
) -> Result<&'static str, String> {
    let limits = &ctx.limits;
    let sealed = tokio::time::timeout(limits.stall, frame::read(&mut stream, frame::MAX_LEN))
        .await
        .map_err(|_| "no offer in time".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or("closed before the offer")?;
    let plain = transport.open(&sealed).map_err(|e| e.to_string())?;
    let offer = FileOffer::decode(plain.as_slice()).map_err(|e| e.to_string())?;

    let refuse = |decision: FileDecision, reason: String| FileAnswer {
        decision: decision as i32,
        offset: 0,
        reason,
    };
    if let Err(why) = check(&from, &offer) {
        let answer = refuse(FileDecision::Invalid, why.into());
        send_answer(&mut stream, &mut transport, &answer).await?;
        return Ok("invalid offer refused");
    }
    if offer.size > limits.max_bytes {
        let reason = format!(
            "the file is {} bytes; {} takes at most {} bytes",
            offer.size, offer.to, limits.max_bytes
        );
        send_answer(
            &mut stream,
            &mut transport,
            &refuse(FileDecision::TooLarge, reason),
        )
        .await?;
        return Ok("too large");
    }
    let busy = || {
        refuse(
            FileDecision::Busy,
            "the receiver is taking as many files as it will at once; try again later".into(),
        )
    };
    let Ok(_slot) = ctx.slots.clone().try_acquire_owned() else {
        send_answer(&mut stream, &mut transport, &busy()).await?;
        return Ok("busy");
    };
    let Some(part) = ctx.downloads.claim(&from, &offer.transfer_id, &offer.name) else {
        send_answer(&mut stream, &mut transport, &busy()).await?;
        return Ok("already receiving this transfer");
    };
    let size = offer.size;
    let (part, resumed) = tokio::task::spawn_blocking(move || {
        let resumed = part.resume(size);
        (part, resumed)
    })
    .await
    .map_err(|e| e.to_string())?;
    let (offset, hash) = match resumed {
        Ok(resumed) => resumed,
        Err(e) => {
            let reason = format!("the receiver cannot write to its download directory: {e}");
            send_answer(
                &mut stream,
                &mut transport,
                &refuse(FileDecision::Denied, reason),
            )
            .await?;
            return Ok("download directory unusable");
        }
    };

    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let progress = Progress::new();
    let (answer, answered) = oneshot::channel();
    let incoming = IncomingFile {
        id,
        from,
        from_key,
        name: part.plain.clone(),
        size,
        offset,
        progress: progress.clone(),
        answer,
    };
    if ctx.events.try_send(FileEvent::Offered(incoming)).is_err() {
        send_answer(&mut stream, &mut transport, &busy()).await?;
        return Ok("client not taking offers");
    }
    let accepted = tokio::select! {
        _ = stop.cancelled() => return Err("listener shutting down".into()),
        answered = tokio::time::timeout(limits.answer_wait, answered) => answered,
    };
    match accepted {
        Ok(Ok(true)) => {}
        Ok(_) => {
            let reason = format!("{} declined the file", offer.to);
            send_answer(
                &mut stream,
                &mut transport,
                &refuse(FileDecision::Denied, reason),
            )
            .await?;
            return Ok("declined");
        }
        Err(_) => {
            let reason = format!(
                "{} did not answer within {} s",
                offer.to,
                limits.answer_wait.as_secs()
            );
            send_answer(
                &mut stream,
                &mut transport,
                &refuse(FileDecision::Denied, reason),
            )
            .await?;
            return Ok("not answered");
        }
    }
    let accept = FileAnswer {
        decision: FileDecision::Accepted as i32,
        offset,
        reason: String::new(),
    };
    send_answer(&mut stream, &mut transport, &accept).await?;
    progress.start_at(offset);

    let socket = stream.into_std().map_err(|e| e.to_string())?;
    let setup = || -> std::io::Result<std::net::TcpStream> {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(limits.stall))?;
        socket.set_write_timeout(Some(limits.stall))?;
        socket.try_clone()
    };
    let closer = setup().map_err(|e| e.to_string())?;
    // The blocking thread cannot watch the token; shutting the socket down wakes its read.
    let _watch = AbortOnDropHandle::new(tokio::spawn(async move {
        stop.cancelled().await;
        let _ = closer.shutdown(Shutdown::Both);
    }));
    let data = DataPhase {
        transport,
        part,
        size,
        held: offset,
        hash,
        progress,
        stall: limits.stall,
        transfer_id: offer.transfer_id,
    };
    let outcome = tokio::task::spawn_blocking(move || data.run(socket))
        .await
        .unwrap_or_else(|e| Err(format!("the transfer failed: {e}")));
    let summary = if outcome.is_ok() {
        "file received"
    } else {
        "transfer cut off"
    };
    // The client may be gone (logging out); the outcome then has nobody to tell.
    let _ = ctx.events.send(FileEvent::Finished { id, outcome }).await;
    Ok(summary)
}

/// The rules an offer must meet (see `proto/chat.proto`).
fn check(user: &str, offer: &FileOffer) -> Result<(), &'static str> {
    if !offer.from.eq_ignore_ascii_case(user) {
        return Err("`from` is not the user whose key did the handshake");
    }
    if offer.to.is_empty() {
        return Err("`to` is empty");
    }
    if offer.transfer_id.is_empty() || offer.transfer_id.len() > MAX_TRANSFER_ID {
        return Err("`transfer_id` is not 1-64 bytes");
    }
    if offer.name.is_empty() || offer.name.len() > MAX_OFFERED_NAME {
        return Err("`name` is not 1-1024 bytes");
    }
    Ok(())
}

async fn send_answer(
    stream: &mut TcpStream,
    transport: &mut Transport,
    answer: &FileAnswer,
) -> Result<(), String> {
    let sealed = transport
        .seal(&answer.encode_to_vec())
        .map_err(|e| e.to_string())?;
    frame::write(stream, &sealed)
        .await
        .map_err(|e| e.to_string())
}
