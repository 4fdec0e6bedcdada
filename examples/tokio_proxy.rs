//! `examples/proxy`'s job on tokio: accept with tokio, relay each connection with
//! [`Splicer::copy_bidirectional_owned`] (both directions as transfers on one shard's engine,
//! half-close passed on).
//!
//! ```text
//! cargo run --release --features tokio --example tokio_proxy -- \
//!     --listen 127.0.0.1:8000 --upstream 127.0.0.1:9000
//! ```
//!
//! Flags: `--listen ADDR` (default `127.0.0.1:8000`), `--upstream ADDR` (required),
//! `--shards N` (default: one per core), `--workers N` (tokio worker threads, default one
//! per core), `--exit-after N` (stop once N connections have closed, for benchmarks),
//! `--verbose`. The backend is the default choice, which `RINGSPLICE_BACKEND=io-uring|fallback`
//! overrides. On Ctrl-C or SIGTERM (or `--exit-after`) it stops accepting, prints the
//! backend's counters per shard and exits; dropping the splicer cancels what is in flight.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ringsplice::tokio::Splicer;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// The proxy example's job on tokio: accept with tokio, relay each connection with a
/// ringsplice Splicer (engines on their own shard threads).
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// address to listen on (default 127.0.0.1:8000)
    #[argh(option, default = "\"127.0.0.1:8000\".parse().expect(\"address\")")]
    listen: SocketAddr,
    /// the upstream every connection is relayed to
    #[argh(option)]
    upstream: SocketAddr,
    /// engines (shard threads) of the Splicer (default: the available parallelism)
    #[argh(option, default = "0")]
    shards: usize,
    /// tokio worker threads (default: tokio's, one per core)
    #[argh(option, default = "0")]
    workers: usize,
    /// exit after this many connections have closed (for benchmarks)
    #[argh(option)]
    exit_after: Option<u64>,
    /// print each connection's counts
    #[argh(switch)]
    verbose: bool,
}

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

/// One connection: the upstream connect, then both directions until each has ended.
async fn serve(splicer: Splicer, client: TcpStream, args: Arc<Args>, counts: Arc<Counts>) {
    let r = match TcpStream::connect(args.upstream).await {
        Ok(up) => splicer.copy_bidirectional_owned(client, up).await,
        Err(e) => Err(e),
    };
    match r {
        Ok((to_up, to_client)) => {
            counts.bytes.fetch_add(to_up + to_client, Ordering::Relaxed);
            if args.verbose {
                println!("{to_up} bytes up, {to_client} down");
            }
        }
        Err(e) => {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            if args.verbose {
                eprintln!("connection: {e}");
            }
        }
    }
    counts.closed.fetch_add(1, Ordering::Relaxed);
}

fn main() -> BoxResult<()> {
    let args: Arc<Args> = Arc::new(argh::from_env());
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.workers > 0 {
        rt.worker_threads(args.workers);
    }
    let rt = rt.enable_all().build()?;
    let splicer = Splicer::builder(ringsplice::Engine::builder().max_transfers(20_000))
        .shards(args.shards)
        .build()?;
    println!(
        "backend: {} ({}), {} shards",
        splicer.backend(),
        splicer.backend_reason(),
        splicer.shards()
    );
    let counts = Arc::new(Counts::default());
    rt.block_on(async {
        // A backlog of 4096 (std's and tokio's `bind` use 1024 at most), for bursts of
        // a thousand connects.
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(args.listen)?;
        let listener: TcpListener = socket.listen(4096)?;
        println!(
            "proxy: {} -> {} (Ctrl-C to stop)",
            listener.local_addr()?,
            args.upstream
        );
        let (mut int, mut term) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
        let done = Arc::new(tokio::sync::Notify::new());
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = done.notified() => break,
                r = listener.accept() => {
                    let Ok((client, _)) = r else { continue };
                    counts.accepted.fetch_add(1, Ordering::Relaxed);
                    let (s, a, c, d) = (splicer.clone(), Arc::clone(&args), Arc::clone(&counts), Arc::clone(&done));
                    tokio::spawn(async move {
                        serve(s, client, Arc::clone(&a), Arc::clone(&c)).await;
                        if a.exit_after.is_some_and(|n| c.closed.load(Ordering::Relaxed) >= n) {
                            d.notify_one();
                        }
                    });
                }
            }
        }
        println!(
            "stopping: accepted {}, closed {}, failed {}, {} bytes relayed; {} transfers in flight",
            counts.accepted.load(Ordering::Relaxed),
            counts.closed.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed),
            counts.bytes.load(Ordering::Relaxed),
            splicer.in_flight()
        );
        println!("stats: {:?}", splicer.stats().await);
        BoxResult::Ok(())
    })?;
    // Connections still open are cancelled: first their tasks go with the runtime, then the
    // last splicer clone shuts the shards down (each waits for its kernel operations).
    drop(rt);
    drop(splicer);
    Ok(())
}
