//! A TCP proxy on one engine per thread: every accepted connection is joined to a new
//! connection to the upstream, and both directions run as transfers on the same engine.
//!
//! ```text
//! cargo run --release --example proxy -- --listen 127.0.0.1:8000 --upstream 127.0.0.1:9000
//! cargo run --release --example proxy -- --upstream 127.0.0.1:9000 --threads 2
//! ```
//!
//! - Each socket is shared ([`Endpoint::shared`]) so it is the source of one transfer and
//!   the destination of the other.
//! - When one direction reaches end of file, its destination gets `shutdown(SHUT_WR)`: the
//!   half-close is passed on, and the other direction keeps running until its own end of
//!   file. When a direction fails, the other is cancelled. A connection is closed when both
//!   are done.
//! - Each thread has one `poll(2)` on two fds: its listener and its engine's fd. The
//!   upstream connect is a blocking `connect` with a short timeout, which is fine for an
//!   upstream on the same host; a proxy for remote upstreams would connect without blocking.
//! - Multi-core without an async runtime (`--threads N`): N threads, each with its own
//!   engine and its own listener on the same address, bound with `SO_REUSEPORT`, so the
//!   kernel spreads new connections over the threads and they share nothing. A connection
//!   stays on the thread that accepted it.
//! - `SIGINT`/`SIGTERM` stop the loop; dropping the engine cancels what is in flight.
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:8000`), `--upstream ADDR` (required),
//! `--max-conns N` per thread (default 4096), `--strategy auto|chain|inline|copy` (default
//! auto), `--threads N` (default 1), `--verbose` (a line per connection).
//!
//! There is no idle timeout: `Transfer::idle_timeout` applies to one direction, and a
//! healthy connection often has one direction silent for a long time (a client waiting for
//! a download), so it would need both directions' progress, which this example does not
//! track.

use std::collections::HashMap;
use std::error::Error;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use ringsplice::{Completion, Endpoint, Engine, Stats, Strategy, Transfer, TransferId};

#[path = "support/listen.rs"]
mod listen;
use listen::{listen_per_thread, spawn_per_listener};

#[path = "support/signals.rs"]
mod signals;

#[path = "support/flags.rs"]
mod flags;

type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// `shutdown(2)` on a shared socket. Errors (`ENOTCONN` after a reset) change nothing for
/// the proxy, so they are ignored.
fn shutdown(fd: &OwnedFd, how: libc::c_int) {
    // SAFETY: `fd` is open for the duration of the call (we hold a reference to it).
    unsafe { libc::shutdown(fd.as_raw_fd(), how) };
}

/// A TCP proxy on one engine per thread: both directions of every connection are transfers.
#[derive(Clone, argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// address to listen on (default 127.0.0.1:8000)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 8000))")]
    listen: SocketAddr,
    /// address every connection is relayed to
    #[argh(option)]
    upstream: SocketAddr,
    /// most connections at once, per thread (default 4096)
    #[argh(option, default = "4096", from_str_fn(flags::positive))]
    max_conns: usize,
    /// threads, each with its own engine and SO_REUSEPORT listener (default 1)
    #[argh(option, default = "1", from_str_fn(flags::positive))]
    threads: usize,
    /// auto|chain|inline|copy (default auto)
    #[argh(option, default = "Strategy::Auto", from_str_fn(flags::strategy))]
    strategy: Strategy,
    /// a line per connection
    #[argh(switch)]
    verbose: bool,
}

/// One proxied connection: the two sockets and its two directions.
struct Conn {
    client: Arc<OwnedFd>,
    upstream: Arc<OwnedFd>,
    /// `[client → upstream, upstream → client]`, `None` once completed.
    dirs: [Option<TransferId>; 2],
}

/// Counters printed on exit.
#[derive(Debug, Default)]
struct Counts {
    accepted: u64,
    upstream_failed: u64,
    refused_full: u64,
    closed: u64,
    direction_errors: u64,
}

struct Proxy {
    engine: Engine,
    conns: HashMap<u64, Conn>,
    next: u64,
    args: Args,
    counts: Counts,
}

impl Proxy {
    fn accept_all(&mut self, listener: &TcpListener) -> io::Result<()> {
        loop {
            let (client, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of fds or a connection reset while queued: keep serving the others.
                Err(e) => {
                    eprintln!("accept: {e}");
                    return Ok(());
                }
            };
            self.counts.accepted += 1;
            if self.conns.len() >= self.args.max_conns {
                self.counts.refused_full += 1;
                continue; // dropping closes it
            }
            let up = match TcpStream::connect_timeout(&self.args.upstream, Duration::from_secs(3)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{peer}: upstream {}: {e}", self.args.upstream);
                    self.counts.upstream_failed += 1;
                    continue;
                }
            };
            self.open(client, up, peer);
        }
    }

    fn open(&mut self, client: TcpStream, up: TcpStream, peer: SocketAddr) {
        let id = self.next;
        self.next += 1;
        let client = Arc::new(OwnedFd::from(client));
        let upstream = Arc::new(OwnedFd::from(up));
        let mut conn = Conn {
            client: Arc::clone(&client),
            upstream: Arc::clone(&upstream),
            dirs: [None, None],
        };
        let pairs = [(&client, &upstream), (&upstream, &client)];
        for (dir, (src, dst)) in pairs.into_iter().enumerate() {
            let t = Transfer::new(
                Endpoint::shared(Arc::clone(src)),
                Endpoint::shared(Arc::clone(dst)),
            )
            .tag(id << 1 | dir as u64)
            .strategy(self.args.strategy);
            match self.engine.submit(t) {
                Ok(tid) => conn.dirs[dir] = Some(tid),
                Err(rejected) => {
                    eprintln!("{peer}: {rejected}");
                    self.counts.refused_full += 1;
                    // The direction already submitted (if any) is cancelled; its completion
                    // closes the connection.
                    if let Some(first) = conn.dirs[0] {
                        self.engine.cancel(first);
                    }
                    break;
                }
            }
        }
        if conn.dirs.iter().any(Option::is_some) {
            if self.args.verbose {
                println!("conn {id}: {peer} open");
            }
            self.conns.insert(id, conn);
        }
    }

    fn on_completion(&mut self, c: Completion) {
        let id = c.tag >> 1;
        let dir = (c.tag & 1) as usize;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.dirs[dir] = None;
        let (dst, other) = if dir == 0 {
            (&conn.upstream, conn.dirs[1])
        } else {
            (&conn.client, conn.dirs[0])
        };
        match &c.result {
            // End of file from the source: pass the half-close on.
            Ok(()) => shutdown(dst, libc::SHUT_WR),
            Err(e) => {
                if !matches!(e, ringsplice::Error::Cancelled) {
                    self.counts.direction_errors += 1;
                    if self.args.verbose {
                        eprintln!("conn {id} dir {dir}: {e} after {} bytes", c.delivered);
                    }
                }
                if let Some(o) = other {
                    self.engine.cancel(o);
                }
            }
        }
        if self.args.verbose {
            println!(
                "conn {id} {}: {} bytes, {:?}",
                ["client->upstream", "upstream->client"][dir],
                c.delivered,
                c.result
            );
        }
        if conn.dirs.iter().all(Option::is_none) {
            // Our references go; the completions held the engine's, so the sockets close
            // with the last of them.
            self.conns.remove(&id);
            self.counts.closed += 1;
        }
    }
}

fn main() -> BoxResult<()> {
    let args: Args = argh::from_env();
    signals::handle_signals()?;
    // One listener per thread, all on one address (SO_REUSEPORT when there are several).
    let listeners = listen_per_thread(args.listen, args.threads)?;
    let addr = listeners[0].local_addr()?;
    let serve_args = args.clone();
    let (workers, ready) = spawn_per_listener(listeners, move |listener, ready| {
        serve(listener, serve_args.clone(), ready).unwrap_or_else(|e| {
            eprintln!("proxy: {e}");
            std::process::exit(1)
        })
    });
    // Every thread's engine is built before the line that says the proxy is up.
    for (i, backend) in ready.iter().take(args.threads).enumerate() {
        println!("backend: {backend}{}", thread_tag(&args, i));
    }
    println!(
        "proxy: {addr} -> {} on {} thread(s) (Ctrl-C to stop)",
        args.upstream, args.threads
    );
    for (i, w) in workers.into_iter().enumerate() {
        let (open, counts, stats) = w.join().map_err(|_| "a proxy thread panicked")?;
        let tag = thread_tag(&args, i);
        println!("stopping{tag}: {open} connections open; {counts:?}");
        println!("stats{tag}: {stats:?}");
    }
    Ok(())
}

/// `" (thread I)"` when there is more than one.
fn thread_tag(args: &Args, i: usize) -> String {
    if args.threads > 1 {
        format!(" (thread {i})")
    } else {
        String::new()
    }
}

/// One thread of the proxy, on its own engine and listener, until SIGINT/SIGTERM. Sends the
/// engine's backend on `ready` once it is built; returns the connections still open, the
/// counts and the engine's stats.
fn serve(
    listener: TcpListener,
    args: Args,
    ready: mpsc::Sender<String>,
) -> BoxResult<(usize, Counts, Stats)> {
    let engine = Engine::builder()
        .max_transfers(args.max_conns * 2)
        .build()?;
    let _ = ready.send(format!(
        "{} ({})",
        engine.backend(),
        engine.backend_reason()
    ));
    listener.set_nonblocking(true)?;
    let mut p = Proxy {
        engine,
        conns: HashMap::new(),
        next: 0,
        args,
        counts: Counts::default(),
    };
    let mut done = Vec::new();
    while !signals::stopping() {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: p.engine.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        // The timeout bounds how late a signal that lands just before the call is seen
        // (and by every thread, not only the one the signal interrupted).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 500) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if fds[0].revents != 0 {
            p.accept_all(&listener)?;
        }
        // After accepting (new transfers start here) or when the engine has progress.
        if fds[0].revents != 0 || fds[1].revents != 0 {
            p.engine.poll(&mut done)?;
            for c in done.drain(..) {
                p.on_completion(c);
            }
        }
    }
    let summary = (
        p.conns.len(),
        std::mem::take(&mut p.counts),
        p.engine.stats(),
    );
    // Dropping the engine cancels the transfers still running and waits for the kernel to
    // give back their operations; then the sockets close.
    drop(p);
    Ok(summary)
}
