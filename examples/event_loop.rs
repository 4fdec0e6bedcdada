//! The engine inside a user's own mio event loop: an echo server whose byte moving is done
//! by ringsplice.
//!
//! ```text
//! cargo run --release --example event_loop [-- --clients N --conns N --bytes N]
//! ```
//!
//! The engine's fd ([`AsRawFd`]) is registered in a [`mio::Poll`] through
//! [`mio::unix::SourceFd`], beside a [`mio::net::TcpListener`]. One loop accepts
//! connections, submits one transfer per connection (the socket to itself: an echo, both
//! endpoints [`Endpoint::shared`]), and reaps completions when the engine's fd is readable.
//! At end of file the server shuts the socket down for writing, so the client sees the end
//! of the echo.
//!
//! It stops by itself: `--clients` threads (default 4) each open `--conns` connections
//! (default 50) one after another, send `--bytes` bytes (default 1 MiB) on each while
//! reading the echo, and check it byte for byte. The process exits 0 when every echo
//! matched, 1 otherwise, so CI can run it. With `RINGSPLICE_BACKEND=fallback` it runs on
//! the fallback backend.
//!
//! mio registrations are edge-triggered. The engine re-signals its fd when it leaves work
//! for a later pass, but this loop also checks the fd's level (a zero-timeout `poll(2)`)
//! before it goes back to sleep, so it never depends on how many edges the engine makes.

use std::collections::HashMap;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use ringsplice::{Completion, Endpoint, Engine, Transfer};

#[path = "support/flags.rs"]
mod flags;

type BoxResult<T> = Result<T, Box<dyn Error>>;

const ENGINE: Token = Token(0);
const LISTENER: Token = Token(1);
/// The whole run must finish within this, or it fails (a hang in CI must not go unseen).
const DEADLINE: Duration = Duration::from_secs(120);

/// An echo server on ringsplice inside a mio loop, with clients that check every byte of
/// the echo; exits 0 when all matched.
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// client threads (default 4)
    #[argh(option, default = "4", from_str_fn(flags::positive))]
    clients: usize,
    /// connections per client, one after another (default 50)
    #[argh(option, default = "50", from_str_fn(flags::positive))]
    conns: usize,
    /// bytes sent on each connection (default 1048576)
    #[argh(option, default = "1 << 20")]
    bytes: usize,
}

/// Whether `fd` is readable right now (a zero-timeout `poll(2)`).
fn readable_now(fd: RawFd) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    match n {
        n if n >= 0 => Ok(n > 0),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(true)
            } else {
                Err(e)
            }
        }
    }
}

/// One client: `conns` connections in turn, each sending `bytes` bytes (seeded by the
/// client and connection numbers) and checking the echo.
fn client(addr: SocketAddr, who: usize, conns: usize, bytes: usize) -> Result<(), String> {
    for c in 0..conns {
        let seed = (who * 1_000_003 + c * 7919) as u32;
        let data: Arc<Vec<u8>> = Arc::new(
            (0..bytes as u32)
                .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
                .collect(),
        );
        let ctx = |e: io::Error| format!("client {who} conn {c}: {e}");
        let mut s = TcpStream::connect(addr).map_err(ctx)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(ctx)?;
        let mut w = s.try_clone().map_err(ctx)?;
        let d = Arc::clone(&data);
        // Write on a second thread while this one reads, so neither side's buffers fill.
        let writer = thread::spawn(move || -> io::Result<()> {
            w.write_all(&d)?;
            w.shutdown(Shutdown::Write)
        });
        let mut got = Vec::with_capacity(bytes);
        s.read_to_end(&mut got).map_err(ctx)?;
        match writer.join() {
            Ok(r) => r.map_err(ctx)?,
            Err(_) => return Err(format!("client {who} conn {c}: writer panicked")),
        }
        if got[..] != data[..] {
            let at = got.iter().zip(data.iter()).position(|(a, b)| a != b);
            return Err(format!(
                "client {who} conn {c}: echo differs: {} of {bytes} bytes back, first \
                 difference at {at:?}",
                got.len()
            ));
        }
    }
    Ok(())
}

/// What the server keeps per connection: its socket, until the echo completes.
type Conns = HashMap<u64, Arc<OwnedFd>>;

fn on_completion(c: Completion, conns: &mut Conns, failures: &mut u64) {
    let Some(sock) = conns.remove(&c.tag) else {
        return;
    };
    match c.result {
        // The client finished sending and everything came back: end the echo.
        Ok(()) => {
            if let Ok(fd) = sock.try_clone() {
                let _ = TcpStream::from(fd).shutdown(Shutdown::Write);
            }
        }
        Err(e) => {
            *failures += 1;
            eprintln!(
                "server: connection {}: {e} after {} bytes",
                c.tag, c.delivered
            );
        }
    }
    // `sock` and the completion's endpoints drop here: the socket closes.
}

fn main() -> BoxResult<()> {
    let args: Args = argh::from_env();
    let mut engine = Engine::new()?;
    println!(
        "backend: {} ({})",
        engine.backend(),
        engine.backend_reason()
    );

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let engine_fd = engine.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&engine_fd), ENGINE, Interest::READABLE)?;
    let mut listener = TcpListener::bind("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!(
        "echo server on {addr}: {} clients x {} connections x {} bytes",
        args.clients, args.conns, args.bytes
    );

    let clients: Vec<_> = (0..args.clients)
        .map(|who| {
            let (conns, bytes) = (args.conns, args.bytes);
            thread::spawn(move || client(addr, who, conns, bytes))
        })
        .collect();
    let expected = (args.clients * args.conns) as u64;

    let started = Instant::now();
    let mut conns: Conns = HashMap::new();
    let mut next_tag = 0u64;
    let mut failures = 0u64;
    let mut completed = 0u64;
    let mut done = Vec::new();
    while completed < expected {
        if started.elapsed() > DEADLINE {
            return Err(format!(
                "not finished after {DEADLINE:?}: {completed} of {expected} echoes done, \
                 {} in flight, {:?}",
                engine.in_flight(),
                engine.stats()
            )
            .into());
        }
        match poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Ok(()) => {}
            // With the io_uring backend the kernel interrupts this thread's blocking calls
            // to run io_uring task work (completions of the ring this thread created):
            // `epoll_wait` then returns EINTR, which is not an error.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        let mut engine_ready = false;
        for ev in events.iter() {
            match ev.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            let fd = Arc::new(OwnedFd::from(TcpStream::from(sock)));
                            let t = Transfer::new(
                                Endpoint::shared(Arc::clone(&fd)),
                                Endpoint::shared(Arc::clone(&fd)),
                            )
                            .tag(next_tag);
                            engine.submit(t)?;
                            conns.insert(next_tag, fd);
                            next_tag += 1;
                            // New transfers start at the engine's next poll.
                            engine_ready = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                },
                ENGINE => engine_ready = true,
                _ => {}
            }
        }
        // Run the engine while its fd is readable (edge-triggered registration: do not go
        // back to sleep with work left behind).
        while engine_ready {
            engine.poll(&mut done)?;
            for c in done.drain(..) {
                completed += 1;
                on_completion(c, &mut conns, &mut failures);
            }
            engine_ready = readable_now(engine_fd)?;
        }
    }
    let mut client_errors = 0;
    for h in clients {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("{e}");
                client_errors += 1;
            }
            Err(_) => {
                eprintln!("a client thread panicked");
                client_errors += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = engine.stats();
    println!("stats: {stats:?}");
    println!(
        "{completed} echoes, {} bytes each way in {secs:.2} s; {failures} server errors, \
         {client_errors} client errors",
        stats.bytes
    );
    if failures > 0 || client_errors > 0 || stats.bytes != expected * args.bytes as u64 {
        std::process::exit(1);
    }
    Ok(())
}
