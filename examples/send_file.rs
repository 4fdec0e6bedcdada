//! The first example: send one file to every client that connects.
//!
//! ```text
//! cargo run --release --example send_file -- --file /etc/services
//! nc 127.0.0.1 8002 | cmp - /etc/services          # in another terminal
//! ```
//!
//! One thread, one engine: `poll(2)` sleeps until a client connects or the engine's fd
//! says transfers moved; each client becomes one transfer (file → socket, the whole file),
//! whose completion says how many bytes reached it. The socket is closed right then, so a
//! client that sent something (curl's request) may lose the tail to a reset: `file_server`
//! drains before it closes, and handles signals and open errors too.

use std::error::Error;
use std::fs::File;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use ringsplice::{Engine, Transfer};

/// Sends one file to every client that connects.
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// the file every client gets
    #[argh(option)]
    file: PathBuf,
    /// address to listen on (default 127.0.0.1:8002)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 8002))")]
    listen: SocketAddr,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Args = argh::from_env();
    let mut engine = Engine::new()?;
    println!(
        "backend: {} ({})",
        engine.backend(),
        engine.backend_reason()
    );
    let listener = TcpListener::bind(args.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    println!("sending {} to every client of {addr}", args.file.display());

    let mut done = Vec::new();
    loop {
        let mut fds = [readable(listener.as_raw_fd()), readable(engine.as_raw_fd())];
        // SAFETY: two valid pollfds for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        loop {
            let (sock, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            // Opened per client: each transfer reads the file from its start.
            let file = File::open(&args.file)?;
            engine.submit(Transfer::new(file, sock).tag(peer.port().into()))?;
        }
        // Starts what was submitted, moves what is ready, never blocks.
        engine.poll(&mut done)?;
        for c in done.drain(..) {
            println!(
                "client port {}: {} bytes, {:?}",
                c.tag, c.delivered, c.result
            );
            // Dropping the completion closes the file and the socket.
        }
    }
}

fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
