//! Slow links: a small userspace TCP proxy that delays every byte it
//! forwards by a settable latency (plus jitter), in both directions,
//! without reordering and without limiting throughput (bytes in flight
//! wait side by side, each until its own due time).
//!
//! iptables can drop packets but cannot delay them, and `tc netem` is a
//! kernel module this harness does not want to depend on. So every link the
//! nemesis may slow down is routed through a proxy from the start, with no
//! delay until a fault sets one:
//!
//! - each region node's Raft port: the node listens on 7100, a proxy in its
//!   namespace on 7101 forwards there, and members advertise 7101, so every
//!   Raft connection to a node, request and answer, passes its proxy;
//! - each region's link to the origin: a proxy per region in the origin's
//!   namespace forwards to the origin's feed port.
//!
//! The proxies run inside the namespaces of the nodes they front (a thread
//! that entered the namespace with `setns(2)`, and its own single-threaded
//! runtime), so the iptables faults in that namespace cut proxied traffic
//! exactly as they cut direct traffic.

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Largest read forwarded as one piece.
const CHUNK_BYTES: usize = 64 * 1024;
/// Pieces waiting for their due time per direction of a connection; past
/// it the reader waits (backpressure instead of unbounded buffering).
const PIECES_IN_FLIGHT: usize = 256;

/// The latency a proxy adds, shared with the nemesis that changes it. A
/// piece of data read at `t` is written at `t + delay + U(0, jitter)`, or
/// after the piece before it, whichever is later.
#[derive(Debug, Clone, Default)]
pub struct LinkDelay(Arc<DelayInner>);

#[derive(Debug, Default)]
struct DelayInner {
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

impl LinkDelay {
    pub fn set(&self, delay: Duration, jitter: Duration) {
        self.0
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
        self.0
            .jitter_ms
            .store(jitter.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.set(Duration::ZERO, Duration::ZERO);
    }

    /// `(delay, jitter)` now.
    pub fn get(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.0.delay_ms.load(Ordering::Relaxed)),
            Duration::from_millis(self.0.jitter_ms.load(Ordering::Relaxed)),
        )
    }

    fn sample(&self, random: &mut u64) -> Duration {
        let (delay, jitter) = self.get();
        let jitter_ms = jitter.as_millis() as u64;
        if jitter_ms == 0 {
            return delay;
        }
        // xorshift64: jitter needs no reproducibility (thread timing
        // already differs between runs), only spread.
        *random ^= *random << 13;
        *random ^= *random >> 7;
        *random ^= *random << 17;
        delay + Duration::from_millis(*random % (jitter_ms + 1))
    }
}

/// One forwarding rule: connections to `listen` are forwarded to `target`.
#[derive(Debug, Clone)]
pub struct Route {
    pub listen: SocketAddr,
    pub target: SocketAddr,
    pub delay: LinkDelay,
}

/// Proxies running on their own thread (inside a network namespace, or in
/// the harness's own). Dropping it stops them and closes every connection.
pub struct ProxyThread {
    /// Where each route listens (a port 0 in the route is resolved here).
    pub bound: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ProxyThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Enters the network namespace `netns` (a name under `/run/netns`) on the
/// calling thread only.
fn enter_netns(netns: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{netns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns(2) on a file descriptor we own and keep open for the
    // call; CLONE_NEWNET moves only this thread into that namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}

/// Starts `routes` on a new thread, inside `netns` when given. Returns once
/// every listener is bound (or with the first error).
pub fn spawn(netns: Option<&str>, routes: Vec<Route>) -> anyhow::Result<ProxyThread> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<Vec<SocketAddr>>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let netns = netns.map(str::to_string);
    let name = format!("proxy-{}", netns.as_deref().unwrap_or("host"));
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let runtime = match netns.as_deref().map(enter_netns).transpose().and_then(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("a runtime for the proxies")
            }) {
                Ok(r) => r,
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut bound = Vec::new();
                let mut listeners = Vec::new();
                for route in routes {
                    match TcpListener::bind(route.listen).await {
                        Ok(l) => {
                            bound.push(l.local_addr().unwrap_or(route.listen));
                            listeners.push((l, route));
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(anyhow::Error::new(error)
                                .context(format!("binding the proxy at {}", route.listen))));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(bound));
                for (listener, route) in listeners {
                    tokio::spawn(accept_loop(listener, route));
                }
                // Until the handle is dropped; the runtime's drop then
                // cancels every task and closes every socket.
                let _ = stop_rx.await;
            });
        })
        .context("starting a proxy thread")?;
    let bound = ready_rx
        .recv()
        .context("the proxy thread ended before it was ready")??;
    Ok(ProxyThread {
        bound,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn accept_loop(listener: TcpListener, route: Route) {
    let mut seed = 0x2545_F491_4F6C_DD1D_u64 ^ u64::from(route.listen.port());
    loop {
        let (inbound, _) = match listener.accept().await {
            Ok(c) => c,
            Err(error) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!(listen = %route.listen, %error, "The proxy could not accept.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1) | 1;
        tokio::spawn(forward(inbound, route.target, route.delay.clone(), seed));
    }
}

/// Forwards one connection until both directions have ended. A target that
/// refuses (its node is down) closes the inbound connection, as the node
/// itself would have.
async fn forward(inbound: TcpStream, target: SocketAddr, delay: LinkDelay, seed: u64) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    // A reset on one side ends that direction's reader, which shuts the
    // other side's write half; its peer then closes, ending the other
    // direction: nothing half-dead stays open.
    tokio::join!(
        pump(in_read, out_write, delay.clone(), seed),
        pump(out_read, in_write, delay, seed.rotate_left(17) | 1),
    );
}

/// Copies `from` to `to`, each piece delayed; on end of input, shuts `to`'s
/// write side once everything before it was written.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: LinkDelay,
    mut random: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(PIECES_IN_FLIGHT);
    let reader = async move {
        let mut last_due = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            // Never before the piece ahead of it: TCP keeps order.
            let due = (Instant::now() + delay.sample(&mut random)).max(last_due);
            last_due = due;
            if tx.send((due, buf)).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, piece)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&piece).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    async fn round_trip(client: &mut TcpStream) -> Duration {
        let started = Instant::now();
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        started.elapsed()
    }

    fn proxy_to(target: SocketAddr, delay: &LinkDelay) -> ProxyThread {
        spawn(
            None,
            vec![Route {
                listen: "127.0.0.1:0".parse().unwrap(),
                target,
                delay: delay.clone(),
            }],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn bytes_pass_both_ways_in_order_and_end_of_stream_propagates() {
        let delay = LinkDelay::default();
        delay.set(Duration::from_millis(2), Duration::from_millis(5));
        let proxy = proxy_to(echo_server().await, &delay);
        let mut client = TcpStream::connect(proxy.bound[0]).await.unwrap();
        // More than one chunk, with jitter on every piece: order must hold.
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut r, mut w) = client.split();
        let write = async {
            for piece in sent.chunks(10_000) {
                w.write_all(piece).await.unwrap();
            }
            w.shutdown().await.unwrap();
        };
        let mut received = Vec::new();
        let read = r.read_to_end(&mut received);
        let (_, n) = tokio::join!(write, read);
        assert_eq!(n.unwrap(), sent.len());
        assert!(received == sent, "the echo differs from what was sent");
    }

    #[tokio::test]
    async fn a_set_delay_holds_every_round_trip_back_and_clearing_it_restores_the_link() {
        let delay = LinkDelay::default();
        let proxy = proxy_to(echo_server().await, &delay);
        let mut client = TcpStream::connect(proxy.bound[0]).await.unwrap();
        round_trip(&mut client).await;
        delay.set(Duration::from_millis(150), Duration::ZERO);
        // Both directions are delayed: at least twice the delay. (Only a
        // lower bound: a loaded machine may add to it, never take away.)
        let slow = round_trip(&mut client).await;
        assert!(slow >= Duration::from_millis(300), "{slow:?}");
        delay.clear();
        assert_eq!(delay.get(), (Duration::ZERO, Duration::ZERO));
        round_trip(&mut client).await;
    }

    #[tokio::test]
    async fn a_target_that_is_down_closes_the_connection() {
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = unused.local_addr().unwrap();
        drop(unused);
        let proxy = proxy_to(target, &LinkDelay::default());
        let mut client = TcpStream::connect(proxy.bound[0]).await.unwrap();
        let mut buf = Vec::new();
        // End of stream (or a reset), not a connection left hanging.
        let n = client.read_to_end(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
    }

    #[test]
    fn a_namespace_that_does_not_exist_is_an_error() {
        let error = spawn(Some("tgc-no-such-namespace"), vec![])
            .err()
            .expect("no such namespace");
        assert!(
            format!("{error:#}").contains("tgc-no-such-namespace"),
            "{error:#}"
        );
    }
}
