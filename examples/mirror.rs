//! A mirroring TCP proxy: relays every connection to the upstream like `examples/proxy.rs`,
//! and sends a best-effort copy of the client → upstream bytes to a mirror (a shadow
//! backend, a recorder). The copy is a fan-out leg with `Policy::BestEffort`: a mirror that
//! is down, slow or resets is dropped from that connection and changes nothing for the
//! client.
//!
//! ```text
//! cargo run --release --example mirror -- --listen 127.0.0.1:8000 \
//!     --upstream 127.0.0.1:9000 --mirror 127.0.0.1:9100
//! ```
//!
//! - client → upstream: a [`FanOut`] from the client socket to the upstream
//!   (`Policy::Required`) and the mirror (`Policy::BestEffort`), half-close passed on;
//! - the upstream gets the client's half-close as soon as it has every byte; a mirror still
//!   behind then has the fan-out's linger (`ringsplice::DEFAULT_LINGER`, one second) to
//!   catch up before it is dropped;
//! - upstream → client: an ordinary [`Transfer`];
//! - the mirror is connected with a short timeout (`--mirror-timeout-ms`, default 200); if
//!   that fails the connection is relayed without a mirror. One thread, one engine, one
//!   `poll(2)` on the listener and the engine's fd; `SIGINT`/`SIGTERM` stop it.

use std::collections::HashMap;
use std::error::Error;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use ringsplice::{Completion, Endpoint, Engine, FanOut, Policy, Transfer, TransferId};

#[path = "support/signals.rs"]
mod signals;

#[path = "support/flags.rs"]
mod flags;

/// A TCP proxy that mirrors what clients send to a second address.
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// address to listen on (default 127.0.0.1:8000)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 8000))")]
    listen: SocketAddr,
    /// address every connection is relayed to
    #[argh(option)]
    upstream: SocketAddr,
    /// address that gets a best-effort copy of what each client sends
    #[argh(option)]
    mirror: SocketAddr,
    /// bytes the mirror may fall behind before it is dropped (default 4194304)
    #[argh(option, default = "4 << 20", from_str_fn(flags::positive))]
    max_lag: u64,
    /// how long to wait for the mirror's connect, in ms (default 200)
    #[argh(option, default = "200", from_str_fn(flags::positive))]
    mirror_timeout_ms: u64,
    /// a line per connection
    #[argh(switch)]
    verbose: bool,
}

/// One connection's sockets and its two directions (`None` once completed).
struct Conn {
    client: Arc<OwnedFd>,
    dirs: [Option<TransferId>; 2],
}

type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> BoxResult<()> {
    let args: Args = argh::from_env();
    signals::handle_signals()?;
    let listener = TcpListener::bind(args.listen)?;
    listener.set_nonblocking(true)?;
    eprintln!(
        "mirror: {} → {} (copy to {})",
        listener.local_addr()?,
        args.upstream,
        args.mirror
    );
    let mut engine = Engine::new()?;
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next = 0u64;
    let mut done = Vec::new();
    while !signals::stopping() {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: engine.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 500) };
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(io::Error::last_os_error().into());
        }
        while let Ok((client, peer)) = listener.accept() {
            match open(&mut engine, &args, client, next) {
                Ok(c) => {
                    conns.insert(next, c);
                    if args.verbose {
                        eprintln!("{peer}: connection {next}");
                    }
                }
                Err(e) => eprintln!("{peer}: {e}"),
            }
            next += 1;
        }
        engine.poll(&mut done)?;
        for c in done.drain(..) {
            on_completion(&mut engine, &mut conns, c, args.verbose);
        }
    }
    Ok(())
}

/// Connects the upstream (required) and the mirror (best effort), and submits both
/// directions.
fn open(engine: &mut Engine, args: &Args, client: TcpStream, tag: u64) -> BoxResult<Conn> {
    let up = TcpStream::connect_timeout(&args.upstream, Duration::from_secs(3))?;
    let wait = Duration::from_millis(args.mirror_timeout_ms);
    let mirror = TcpStream::connect_timeout(&args.mirror, wait);
    let client = Arc::new(OwnedFd::from(client));
    let up = Arc::new(OwnedFd::from(up));
    let to_up = match mirror {
        Ok(m) => {
            let f = FanOut::new(Endpoint::shared(client.clone()))
                .destination(Endpoint::shared(up.clone()), Policy::Required)
                .destination(
                    m,
                    Policy::BestEffort {
                        max_lag: args.max_lag,
                    },
                )
                .shutdown_destinations(true)
                .tag(tag);
            engine.submit_fan_out(f)?
        }
        Err(e) => {
            if args.verbose {
                eprintln!("connection {tag}: no mirror ({e}), relaying without it");
            }
            let t = Transfer::new(
                Endpoint::shared(client.clone()),
                Endpoint::shared(up.clone()),
            );
            engine.submit(t.shutdown_destination(true).tag(tag))?
        }
    };
    let back = Transfer::new(Endpoint::shared(up), Endpoint::shared(client.clone()))
        .shutdown_destination(true)
        .tag(tag);
    let from_up = engine.submit(back)?;
    engine.flush()?;
    Ok(Conn {
        client,
        dirs: [Some(to_up), Some(from_up)],
    })
}

/// A direction is done: on failure the other is cancelled; both done closes the
/// connection (dropping the last references to its sockets).
fn on_completion(engine: &mut Engine, conns: &mut HashMap<u64, Conn>, c: Completion, v: bool) {
    let Some(conn) = conns.get_mut(&c.tag) else {
        return;
    };
    for b in &c.branches {
        if let (Policy::BestEffort { .. }, Err(e)) = (b.policy, &b.result)
            && v
        {
            eprintln!(
                "connection {}: mirror dropped after {} bytes: {e}",
                c.tag, b.delivered
            );
        }
    }
    let other = conn.dirs.iter().position(|d| *d != Some(c.id));
    for d in conn.dirs.iter_mut().filter(|d| **d == Some(c.id)) {
        *d = None;
    }
    if let Err(e) = &c.result {
        if v {
            eprintln!("connection {}: {e}", c.tag);
        }
        if let Some(id) = other.and_then(|i| conn.dirs[i]) {
            engine.cancel(id);
        }
    }
    if conn.dirs.iter().all(Option::is_none) {
        let _ = conn.client.as_raw_fd();
        conns.remove(&c.tag);
    }
}
