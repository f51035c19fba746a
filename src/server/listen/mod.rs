//! The gRPC listener: which TCP connections the server takes, and how long an anonymous one may
//! stay.
//!
//! Owns the accept loop and every limit a socket meets before it has logged in: a cap on open
//! connections in total and per source address (IPv6 counted per /64), a deadline for the
//! HTTP/2 handshake (no request yet) and one for logging in (no successful `Login`/`Register`
//! and no authenticated call yet), and a backoff when the process runs out of file descriptors.
//! HTTP/2 keepalive and `MAX_CONCURRENT_STREAMS` are hyper's, set where the server is built.
//!
//! It does not know users or tokens: the RPC layer calls [`ConnState::admit`] once a call on the
//! connection proved who is calling, which lifts the deadlines for good.
//!
//! **Invariant:** every accepted socket holds a slot (`caps::Slot`) for as long as it is open, so
//! the counts are exact, and a connection over a cap is closed at once without being read.

mod caps;
mod conn;

use std::{io, sync::Arc, time::Duration};

use nix::{
    errno::Errno,
    sys::resource::{Resource, getrlimit, setrlimit},
};
use tokio::net::TcpListener;
use tokio_stream::Stream;

pub use self::conn::{Conn, ConnInfo, ConnState, conn_info, note_request};
use super::Config;
use caps::Table;

/// First pause of the accept loop when the process is out of file descriptors.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// Longest pause; a connection closing frees a descriptor, so retries need not be slower.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Descriptors the server needs besides its connections: the store's files, the runtime's,
/// the standard streams, a few spare.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The limits the listener enforces, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections, all addresses together.
    pub max_connections: usize,
    /// Open connections from one source address (an IPv6 /64).
    pub max_per_address: usize,
    /// From accept until the first HTTP/2 request.
    pub handshake_timeout: Duration,
    /// From accept until a call proves who is calling.
    pub login_timeout: Duration,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        Limits {
            max_connections: c.max_connections,
            max_per_address: c.max_connections_per_address,
            handshake_timeout: c.handshake_timeout,
            login_timeout: c.login_timeout,
        }
    }
}

/// Whether an accept error means the process or system is out of descriptors or memory, which
/// retrying at once cannot fix.
fn out_of_resources(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|code| {
        matches!(
            Errno::from_raw(code),
            Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
        )
    })
}

/// Raises the soft limit on open files to the hard limit (what the operator allows, which the
/// default soft limit of 1024 usually is not), and warns if that is still too low for the cap
/// on connections: past it the accept loop pauses instead of taking more.
fn check_descriptor_limit(max_connections: usize) {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let needed = (max_connections as u64).saturating_add(RESERVED_DESCRIPTORS);
    if limit < needed {
        tracing::warn!(
            "the open-file limit ({limit}) is below what --max-connections {max_connections} \
             needs (about {needed}); past about {} connections the server stops accepting until \
             some close. Raise `ulimit -n` or lower --max-connections",
            limit.saturating_sub(RESERVED_DESCRIPTORS)
        );
    }
}
/// The stream of connections the server serves: accepted from `listener`, over no cap, each
/// under its deadlines.
///
/// Accept errors never reach tonic (which would retry at once, spinning): out of descriptors,
/// the loop pauses with a growing backoff and says so once until an accept succeeds again;
/// anything else is logged at debug and retried after a short pause.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> impl Stream<Item = Result<Conn, io::Error>> + Send + 'static {
    check_descriptor_limit(limits.max_connections);
    let table = Arc::new(Table::new(limits));
    async_stream::stream! {
        let mut backoff: Option<Duration> = None;
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) if out_of_resources(&e) => {
                    let pause = match backoff {
                        None => {
                            tracing::warn!(
                                "cannot accept connections: {e}; pausing until descriptors are \
                                 free (raise `ulimit -n` or lower --max-connections)"
                            );
                            BACKOFF_FIRST
                        }
                        Some(pause) => (pause * 2).min(BACKOFF_MAX),
                    };
                    backoff = Some(pause);
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(e) => {
                    // A connection reset before it was accepted, and the like: the next one
                    // is unaffected, but never retry in a tight loop.
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(BACKOFF_FIRST).await;
                    continue;
                }
            };
            if backoff.take().is_some() {
                tracing::info!("accepting connections again");
            }
            let slot = match table.admit(remote.ip()) {
                Ok(slot) => slot,
                // Dropping the stream closes it before anything is read.
                Err(_) => continue,
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%remote, "setting TCP_NODELAY: {e}");
            }
            yield Ok(Conn::new(stream, remote, slot, &table.limits));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_descriptor_and_memory_exhaustion_pause_the_accept_loop() {
        for errno in [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM] {
            assert!(out_of_resources(&io::Error::from_raw_os_error(
                errno as i32
            )));
        }
        for errno in [Errno::ECONNABORTED, Errno::EINTR, Errno::EPROTO] {
            assert!(!out_of_resources(&io::Error::from_raw_os_error(
                errno as i32
            )));
        }
    }
}
