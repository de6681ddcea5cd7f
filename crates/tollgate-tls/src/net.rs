//! The network under every connection Tollgate makes or accepts: the
//! operating system's TCP, or, in a deterministic simulation, turmoil's
//! simulated TCP (feature `sim`).
//!
//! Servers take their listener from outside (a [`TcpListener`] made from a
//! tokio or a turmoil listener). Clients connect with
//! [`TcpStream::connect`], which dials the simulated network when it is
//! called from a simulation's host (`turmoil::in_simulation`), and the
//! operating system's otherwise.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP connection, real or simulated.
#[derive(Debug)]
pub enum TcpStream {
    /// The operating system's.
    Os(tokio::net::TcpStream),
    /// A simulation's.
    #[cfg(feature = "sim")]
    Sim(turmoil::net::TcpStream),
}

impl From<tokio::net::TcpStream> for TcpStream {
    fn from(stream: tokio::net::TcpStream) -> Self {
        TcpStream::Os(stream)
    }
}

#[cfg(feature = "sim")]
impl From<turmoil::net::TcpStream> for TcpStream {
    fn from(stream: turmoil::net::TcpStream) -> Self {
        TcpStream::Sim(stream)
    }
}

impl TcpStream {
    /// Connect to `host:port`, with Nagle's algorithm off.
    pub async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
        #[cfg(feature = "sim")]
        if turmoil::in_simulation() {
            return Ok(TcpStream::Sim(
                turmoil::net::TcpStream::connect((host, port)).await?,
            ));
        }
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(TcpStream::Os(stream))
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpStream::Os(s) => s.peer_addr(),
            #[cfg(feature = "sim")]
            TcpStream::Sim(s) => s.peer_addr(),
        }
    }

    /// The address of this end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpStream::Os(s) => s.local_addr(),
            #[cfg(feature = "sim")]
            TcpStream::Sim(s) => s.local_addr(),
        }
    }

    /// Turn Nagle's algorithm off (a simulated stream has none).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match self {
            TcpStream::Os(s) => s.set_nodelay(nodelay),
            #[cfg(feature = "sim")]
            TcpStream::Sim(_) => Ok(()),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            TcpStream::Os($io) => {
                let $io = Pin::new($io);
                $call
            }
            #[cfg(feature = "sim")]
            TcpStream::Sim($io) => {
                let $io = Pin::new($io);
                $call
            }
        }
    };
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            TcpStream::Os(io) => io.is_write_vectored(),
            #[cfg(feature = "sim")]
            TcpStream::Sim(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }
}

/// A listening socket, real or simulated.
pub enum TcpListener {
    /// The operating system's.
    Os(tokio::net::TcpListener),
    /// A simulation's.
    #[cfg(feature = "sim")]
    Sim(turmoil::net::TcpListener),
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.local_addr() {
            Ok(addr) => write!(f, "TcpListener({addr})"),
            Err(_) => f.write_str("TcpListener"),
        }
    }
}

impl From<tokio::net::TcpListener> for TcpListener {
    fn from(listener: tokio::net::TcpListener) -> Self {
        TcpListener::Os(listener)
    }
}

#[cfg(feature = "sim")]
impl From<turmoil::net::TcpListener> for TcpListener {
    fn from(listener: turmoil::net::TcpListener) -> Self {
        TcpListener::Sim(listener)
    }
}

impl TcpListener {
    /// The next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        match self {
            TcpListener::Os(l) => l.accept().await.map(|(s, a)| (TcpStream::Os(s), a)),
            #[cfg(feature = "sim")]
            TcpListener::Sim(l) => l.accept().await.map(|(s, a)| (TcpStream::Sim(s), a)),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpListener::Os(l) => l.local_addr(),
            #[cfg(feature = "sim")]
            TcpListener::Sim(l) => l.local_addr(),
        }
    }

    /// The operating system's listener, or this one back if it is a
    /// simulation's (a server that spreads connections over threads of its
    /// own serves a simulated one on the host's runtime instead).
    pub fn into_os(self) -> Result<tokio::net::TcpListener, TcpListener> {
        match self {
            TcpListener::Os(l) => Ok(l),
            #[cfg(feature = "sim")]
            other => Err(other),
        }
    }
}

/// How many connections the kernel completes and holds for a listener
/// before the server accepts them; Linux caps it at
/// `net.core.somaxconn` (4,096 by default since 5.4).
///
/// Rust's and tokio's `bind` ask for 128. A burst larger than that (every
/// SDK client of a region reconnecting after a failover, or a flood) then
/// overflows the queue: Linux drops SYNs, which clients resend after 1 s,
/// 3 s, 7 s, or answers them with SYN cookies and drops the final ACK
/// while the queue is full, leaving a client that believes in a
/// connection the server never had until it sends. A deep queue costs a
/// little kernel memory per waiting connection, and each still holds one
/// of its port's slots once accepted (see [`crate::limits`]).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Listens on `addr` (address reuse on, as tokio's `bind` sets it) with a
/// queue of [`LISTEN_BACKLOG`] connections. Every port of a node binds
/// through here.
pub fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Whether the caller runs inside a simulation's host.
pub fn in_simulation() -> bool {
    #[cfg(feature = "sim")]
    if turmoil::in_simulation() {
        return true;
    }
    false
}

/// Runs `work` off the async threads: on tokio's blocking pool, or, inside
/// a simulation, inline (a thread of its own would make the run depend on
/// the operating system's scheduler, and no longer replay from its seed).
pub async fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if in_simulation() {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await
}
