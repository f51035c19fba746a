//! One accepted connection: the socket, its place in the count, what the RPC layer has learnt
//! about it, and the deadline that closes it if it neither finishes the HTTP/2 handshake nor
//! logs in in time.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};
use tonic::{codegen::http, transport::server::Connected};

use super::{Limits, caps::Slot};

/// How far a connection has come; decides which deadline applies.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted; no HTTP/2 request yet.
    Handshake = 0,
    /// Speaks HTTP/2, has not proved who it is.
    Anonymous = 1,
    /// A `Login`/`Register` succeeded on it, or an authenticated call: no deadline any more.
    Admitted = 2,
}

/// What the RPC layer may tell the listener about one connection.
#[derive(Debug, Default)]
pub struct ConnState {
    phase: AtomicU8,
}

impl ConnState {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Handshake,
            1 => Phase::Anonymous,
            _ => Phase::Admitted,
        }
    }

    /// A request arrived: the HTTP/2 handshake is over.
    fn requested(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Handshake as u8,
            Phase::Anonymous as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// A call on this connection proved who is calling: it may stay open as long as it likes.
    pub fn admit(&self) {
        self.phase.store(Phase::Admitted as u8, Ordering::Release);
    }
}

/// The connection a request came on, as request extensions carry it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address as the server's socket sees it.
    pub remote: SocketAddr,
    /// Shared with the connection's IO, which enforces the deadlines.
    pub state: Arc<ConnState>,
}

/// The connection of a request (plain or TLS), if it came through this listener.
pub fn conn_info(extensions: &tonic::Extensions) -> Option<&ConnInfo> {
    extensions.get::<ConnInfo>().or_else(|| {
        extensions
            .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
            .map(|tls| tls.get_ref())
    })
}

/// The tower step that tells a connection its handshake is over, for every request.
pub fn note_request<B>(request: http::Request<B>) -> http::Request<B> {
    if let Some(info) = request.extensions().get::<ConnInfo>() {
        info.state.requested();
    } else if let Some(tls) = request
        .extensions()
        .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
    {
        tls.get_ref().state.requested();
    }
    request
}

/// An accepted connection: the socket, its slot, and the deadline that closes it if it neither
/// finishes the handshake nor logs in in time.
///
/// The deadline is checked whenever hyper reads, which it always waits on; when it passes, the
/// read fails, hyper drops the connection and the socket closes.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    info: ConnInfo,
    accepted: Instant,
    handshake_timeout: Duration,
    login_timeout: Duration,
    /// The phase `deadline` was set for.
    timed: Phase,
    deadline: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, remote: SocketAddr, slot: Slot, limits: &Limits) -> Self {
        let accepted = Instant::now();
        Conn {
            stream,
            info: ConnInfo {
                remote,
                state: Arc::new(ConnState::default()),
            },
            accepted,
            handshake_timeout: limits.handshake_timeout,
            login_timeout: limits.login_timeout,
            timed: Phase::Handshake,
            deadline: Box::pin(tokio::time::sleep_until(
                accepted + limits.handshake_timeout,
            )),
            _slot: slot,
        }
    }

    /// Fails once the deadline of the connection's phase has passed.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let phase = self.info.state.phase();
        if phase == Phase::Admitted {
            return Ok(());
        }
        if phase != self.timed {
            // Both deadlines count from accept: a slow handshake leaves less time to log in.
            self.timed = phase;
            self.deadline
                .as_mut()
                .reset(self.accepted + self.login_timeout);
        }
        if self.deadline.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        let (what, after) = match phase {
            Phase::Handshake => ("finish the HTTP/2 handshake", self.handshake_timeout),
            _ => ("log in", self.login_timeout),
        };
        tracing::debug!(remote = %self.info.remote, "closing a connection that did not {what} within {after:?}");
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the connection did not {what} within {after:?}"),
        ))
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_deadline(cx)?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
