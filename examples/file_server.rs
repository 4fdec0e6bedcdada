//! Serves one file: every accepted connection receives the whole file, then is closed.
//!
//! ```text
//! cargo run --release --example file_server -- --listen 127.0.0.1:8001 --file /path/to/file
//! curl -s --http0.9 http://127.0.0.1:8001/ | cmp - /path/to/file   # or: nc 127.0.0.1 8001
//! ```
//!
//! - Each connection gets a fresh `File::open`, so each transfer reads from offset 0 with its
//!   own file position, and a file replaced on disk is picked up by the next connection.
//! - After the completion the socket is shut down for writing and lingers until the client
//!   closes (or for 10 s), reading and discarding whatever the client sent: closing a
//!   socket with unread input would send a reset and could drop the file's tail still in
//!   the send buffer.
//! - One thread, one `poll(2)`: the listener, the engine's fd and the lingering sockets.
//!   With `--threads N`, N such threads, each with its own engine and its own listener on
//!   the same address (`SO_REUSEPORT`, as `examples/proxy.rs` does): the kernel spreads the
//!   connections over them, and they share nothing.
//! - `SIGINT`/`SIGTERM` stop the loop; dropping the engine cancels what is in flight.
//!
//! The bytes are spliced from the page cache: a write to the file while it is being sent
//! can change what a client receives (see the README's Guarantees).

use std::error::Error;
use std::fs::File;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringsplice::{Engine, Transfer};

#[path = "support/listen.rs"]
mod listen;
use listen::{listen_per_thread, spawn_per_listener};

#[path = "support/signals.rs"]
mod signals;

#[path = "support/flags.rs"]
mod flags;

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// How long a served socket waits for the client to close before it is closed anyway.
const LINGER: Duration = Duration::from_secs(10);

/// Serves one file: every connection gets the whole file, then a graceful close.
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// address to listen on (default 127.0.0.1:8001)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 8001))")]
    listen: SocketAddr,
    /// the file every client gets
    #[argh(option)]
    file: PathBuf,
    /// threads, each with its own engine and SO_REUSEPORT listener (default 1)
    #[argh(option, default = "1", from_str_fn(flags::positive))]
    threads: usize,
    /// a line per connection
    #[argh(switch)]
    verbose: bool,
}

/// Counters printed on exit.
#[derive(Debug, Default)]
struct Counts {
    accepted: u64,
    served: u64,
    failed: u64,
    bytes: u64,
}

/// A served socket waiting for its client to close.
struct Lingering {
    sock: TcpStream,
    until: Instant,
}

impl Lingering {
    /// Reads and discards input; `true` when the socket can be closed now.
    fn drain(&mut self, buf: &mut [u8]) -> bool {
        loop {
            match self.sock.read(buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Instant::now() >= self.until;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }
}

fn main() -> BoxResult<()> {
    let args: Args = argh::from_env();
    let len = std::fs::metadata(&args.file)?.len();
    signals::handle_signals()?;
    // One listener per thread, all on one address (SO_REUSEPORT when there are several).
    let listeners = listen_per_thread(args.listen, args.threads)?;
    let addr = listeners[0].local_addr()?;
    let (file, verbose) = (args.file.clone(), args.verbose);
    let (workers, ready) = spawn_per_listener(listeners, move |listener, ready| {
        serve(listener, &file, verbose, ready)
    });
    // Every thread's engine is built before the line that says the server is up.
    for backend in ready.iter().take(args.threads) {
        println!("backend: {backend}");
    }
    println!(
        "serving {} ({len} bytes) on {addr} with {} thread(s) (Ctrl-C to stop)",
        args.file.display(),
        args.threads
    );
    for w in workers {
        w.join().map_err(|_| "a server thread panicked")??;
    }
    Ok(())
}

/// One thread of the server, on its own engine (built here: an io_uring is driven by the
/// thread that made it) and listener, until SIGINT/SIGTERM. Sends the engine's backend on
/// `ready` once it is built.
fn serve(
    listener: TcpListener,
    path: &Path,
    verbose: bool,
    ready: mpsc::Sender<String>,
) -> Result<(), String> {
    let run = || -> BoxResult<()> {
        let mut engine = Engine::new()?;
        let _ = ready.send(format!(
            "{} ({})",
            engine.backend(),
            engine.backend_reason()
        ));
        drop(ready);
        serve_loop(&listener, &mut engine, path, verbose)
    };
    run().map_err(|e| {
        eprintln!("file_server: {e}");
        e.to_string()
    })
}

fn serve_loop(
    listener: &TcpListener,
    engine: &mut Engine,
    path: &Path,
    verbose: bool,
) -> BoxResult<()> {
    listener.set_nonblocking(true)?;

    let mut counts = Counts::default();
    let mut lingering: Vec<Lingering> = Vec::new();
    let mut done = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !signals::stopping() {
        fds.clear();
        for fd in [listener.as_raw_fd(), engine.as_raw_fd()] {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        fds.extend(lingering.iter().map(|l| libc::pollfd {
            fd: l.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        // SAFETY: `fds` holds `fds.len()` valid pollfds for the duration of the call. The
        // timeout bounds how late a signal, or a lingering socket's deadline, is seen.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 500) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        let accepted = fds[0].revents != 0;
        if accepted {
            loop {
                let (sock, peer) = match listener.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!("accept: {e}");
                        break;
                    }
                };
                counts.accepted += 1;
                let file = match File::open(path) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("{peer}: open {}: {e}", path.display());
                        counts.failed += 1;
                        continue;
                    }
                };
                if let Err(r) = engine.submit(Transfer::new(file, sock).tag(counts.accepted)) {
                    eprintln!("{peer}: {r}");
                    counts.failed += 1;
                }
            }
        }
        if accepted || fds[1].revents != 0 {
            engine.poll(&mut done)?;
        }
        for c in done.drain(..) {
            counts.bytes += c.delivered;
            match &c.result {
                Ok(()) => counts.served += 1,
                Err(e) => {
                    counts.failed += 1;
                    eprintln!("connection {}: {e} after {} bytes", c.tag, c.delivered);
                }
            }
            if verbose {
                println!(
                    "connection {}: {} bytes, {:?}",
                    c.tag, c.delivered, c.result
                );
            }
            if c.result.is_err() {
                continue; // closed as the completion drops
            }
            if let Some(fd) = c.destination.into_owned_fd() {
                let sock = TcpStream::from(fd);
                let _ = sock.shutdown(Shutdown::Write);
                // The engine left the socket non-blocking, as draining needs.
                lingering.push(Lingering {
                    sock,
                    until: Instant::now() + LINGER,
                });
            }
        }
        // Lingering sockets were polled from index 2 on; those added since were not.
        let polled = fds.len() - 2;
        let mut k = 0;
        lingering.retain_mut(|l| {
            let ready = k < polled && fds[2 + k].revents != 0;
            k += 1;
            let close = (ready && l.drain(&mut buf)) || Instant::now() >= l.until;
            !close
        });
    }
    println!(
        "stopping: {} transfers in flight, {} sockets lingering; {counts:?}",
        engine.in_flight(),
        lingering.len()
    );
    println!("stats: {:?}", engine.stats());
    // Dropping the engine (the caller's) cancels the transfers still running; their
    // sockets then close.
    Ok(())
}
