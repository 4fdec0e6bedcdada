//! Relays on tokio, each in its own process, on 127.0.0.1: clients → relay → sink.
//!
//! ```text
//! cargo bench --features tokio --bench tokio_relay                 # 64 × 32 MiB, 1000 × 1 MiB
//! cargo bench --features tokio --bench tokio_relay -- --conns 8 --mib 1 --rounds 1
//! ```
//!
//! Relays (`--relays`, comma-separated, default all):
//! - `splicer`: `examples/tokio_proxy` (ringsplice's `Splicer`, one shard per core);
//!   `splicer:N` the same with `--shards N`, `splicer:N:W` also with `--workers W`;
//! - `tokio-copy`: this binary re-run as a tokio proxy with `tokio::io::copy_bidirectional`;
//! - `tokio-splice2`: the same with `tokio_splice2::copy_bidirectional` (splice(2) from
//!   tokio tasks, a pipe per direction);
//! - `proxy`: `examples/proxy`, one engine on one thread (`--listen --upstream`).
//!
//! Same approach as `examples/relay_bench`: one client thread and one sink thread driven by
//! mio, so the load costs the same for every relay; the relay's CPU is its own process's
//! user + system time over the load (every thread, io-wq workers included, from
//! `/proc/PID/stat`), per GB moved client → sink; throughput is those bytes over the
//! load's wall time. Medians of `--rounds` (default 3), relays interleaved in each round.

use std::error::Error;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

#[path = "../examples/support/flags.rs"]
mod flags;
#[path = "../examples/support/listen.rs"]
mod listen;
#[path = "support/relay_load.rs"]
mod relay_load;
use listen::listen_wide;
use relay_load::{load, median, process_cpu_secs};

type BoxResult<T> = Result<T, Box<dyn Error>>;

const RELAYS: [&str; 4] = ["splicer", "tokio-copy", "tokio-splice2", "proxy"];

/// The relay benchmark on tokio: the Splicer (examples/tokio_proxy) beside tokio's own
/// copy_bidirectional, tokio-splice2 and examples/proxy, in the same rounds.
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Flags {
    /// connections of the one workload to run (default: 64 x 32 MiB and 1000 x 1 MiB;
    /// with only --mib or --kib, 64)
    #[argh(option, from_str_fn(flags::positive))]
    conns: Option<usize>,
    /// size of each connection's load in MiB (default 32 when --conns is given)
    #[argh(option, from_str_fn(flags::positive))]
    mib: Option<u64>,
    /// size of each connection's load in KiB, instead of --mib
    #[argh(option, from_str_fn(flags::positive))]
    kib: Option<u64>,
    /// rounds; the table shows medians (default 3)
    #[argh(option, default = "3", from_str_fn(flags::positive))]
    rounds: usize,
    /// relays to run: splicer[:SHARDS[:WORKERS]], tokio-copy, tokio-splice2, proxy
    #[argh(option, from_str_fn(relay_list))]
    relays: Option<flags::List<String>>,
}

struct Args {
    workloads: Vec<(usize, u64)>,
    rounds: usize,
    relays: Vec<String>,
}

/// `--relays`: each name checked here, so a typo fails before any run.
fn relay_list(s: &str) -> Result<flags::List<String>, String> {
    let relays: flags::List<String> = s.parse()?;
    let known = |r: &str| match r.split_once(':') {
        Some(("splicer", n)) => n
            .split(':')
            .all(|n| n.parse::<usize>().is_ok_and(|n| n > 0)),
        _ => RELAYS.contains(&r),
    };
    match relays.0.iter().find(|r| !known(r)) {
        Some(bad) => Err(format!("unknown relay {bad:?}: one of {RELAYS:?}")),
        None => Ok(relays),
    }
}

fn parse_args() -> BoxResult<Args> {
    let f: Flags = flags::from_args_or_exit("tokio_relay", &flags::bench_args());
    let defaults = [(64, 32 << 20), (1000, 1 << 20)];
    let workloads = relay_load::workloads(f.conns, f.mib, f.kib, &defaults)?;
    let relays = match f.relays {
        Some(r) => r.0,
        None => RELAYS.iter().map(|s| s.to_string()).collect(),
    };
    Ok(Args {
        workloads,
        rounds: f.rounds,
        relays,
    })
}

// ---------------------------------------------------------------------------------------
// The comparison relays, served by this binary: `--serve tokio-copy|tokio-splice2`.
// ---------------------------------------------------------------------------------------

fn serve(mode: &str, listen: &str, upstream: &str) -> BoxResult<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let splice2 = match mode {
        "tokio-copy" => false,
        "tokio-splice2" => true,
        other => return Err(format!("--serve {other:?}").into()),
    };
    let upstream: SocketAddr = upstream.parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(listen.parse()?)?;
        let listener = socket.listen(4096)?;
        println!("proxy: {} -> {upstream} ({mode})", listener.local_addr()?);
        let mut term = signal(SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                r = listener.accept() => {
                    let Ok((mut client, _)) = r else { continue };
                    tokio::spawn(async move {
                        let mut up = tokio::net::TcpStream::connect(upstream).await?;
                        if splice2 {
                            tokio_splice2::copy_bidirectional(&mut client, &mut up).await?;
                        } else {
                            tokio::io::copy_bidirectional(&mut client, &mut up).await?;
                        }
                        io::Result::Ok(())
                    });
                }
            }
        }
        println!("stats: -");
        BoxResult::Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Load: clients and a sink, as in examples/relay_bench.
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Relay processes and their CPU.
// ---------------------------------------------------------------------------------------

/// The example binaries, built (or found fresh) by cargo: `target/<profile>/examples/`.
fn examples() -> BoxResult<PathBuf> {
    let ok = Command::new(env!("CARGO"))
        .args(["build", "--release", "--features", "tokio"])
        .args(["--example", "proxy", "--example", "tokio_proxy"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()?
        .success();
    if !ok {
        return Err("cargo build --release --example proxy --example tokio_proxy failed".into());
    }
    // This binary is target/release/deps/tokio_relay-HASH.
    let me = std::env::current_exe()?;
    let release = me
        .parent()
        .and_then(|d| d.parent())
        .ok_or("no target dir")?;
    Ok(release.join("examples"))
}

struct Relay {
    child: Child,
    addr: SocketAddr,
    out: BufReader<std::process::ChildStdout>,
}

fn start_relay(name: &str, upstream: SocketAddr, examples: &std::path::Path) -> BoxResult<Relay> {
    let up = upstream.to_string();
    let mut cmd = match name {
        "splicer" => Command::new(examples.join("tokio_proxy")),
        _ if name.starts_with("splicer:") => {
            let mut c = Command::new(examples.join("tokio_proxy"));
            let mut n = name["splicer:".len()..].split(':');
            c.args(["--shards", n.next().unwrap_or("1")]);
            if let Some(w) = n.next() {
                c.args(["--workers", w]);
            }
            c
        }
        "proxy" => {
            let mut c = Command::new(examples.join("proxy"));
            c.args(["--max-conns", "20000"]);
            c
        }
        _ => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["--serve", name]);
            c
        }
    };
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0", "--upstream", &up])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            return Err(format!("relay {name} exited before listening").into());
        }
        if let Some(rest) = line.strip_prefix("proxy: ") {
            break rest
                .split_whitespace()
                .next()
                .ok_or("bad proxy line")?
                .parse()?;
        }
    };
    Ok(Relay { child, addr, out })
}

impl Drop for Relay {
    /// A relay left running by an error is killed, not orphaned.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM, then the relay's `stats:` line.
fn stop_relay(mut r: Relay) -> BoxResult<String> {
    Command::new("kill")
        .args(["-TERM", &r.child.id().to_string()])
        .status()?;
    let mut rest = String::new();
    r.out.read_to_string(&mut rest)?;
    r.child.wait()?;
    Ok(rest
        .lines()
        .find(|l| l.starts_with("stats:"))
        .unwrap_or("")
        .to_string())
}

fn main() -> BoxResult<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--serve") {
        let get = |flag: &str| {
            let i = argv.iter().position(|a| a == flag)?;
            argv.get(i + 1).cloned()
        };
        let (mode, listen, up) = (get("--serve"), get("--listen"), get("--upstream"));
        return match (mode, listen, up) {
            (Some(m), Some(l), Some(u)) => serve(&m, &l, &u),
            _ => Err("--serve MODE --listen ADDR --upstream ADDR".into()),
        };
    }
    let args = parse_args()?;
    let examples = examples()?;
    println!(
        "machine: {} cores (shared: clients, sink and relay run on the same cores), {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("Linux {}", s.trim()))
            .unwrap_or_default()
    );
    for &(n, bytes) in &args.workloads {
        let total = n as u64 * bytes;
        let gb = total as f64 / 1e9;
        // Per relay: (GB/s, CPU-s/GB) per round.
        let mut rows: Vec<(Vec<f64>, Vec<f64>, String)> =
            vec![(Vec::new(), Vec::new(), String::new()); args.relays.len()];
        for _round in 0..args.rounds {
            for (i, name) in args.relays.iter().enumerate() {
                // The sink's backlog must hold a burst of a thousand connects from the relay:
                // std's 128 would drop SYNs, and their retransmits would stall the load.
                let l = listen_wide("127.0.0.1:0".parse()?)?;
                let relay = start_relay(name, l.local_addr()?, &examples)?;
                let pid = relay.child.id();
                let cpu0 = process_cpu_secs(pid)?;
                let secs = load(l, relay.addr, n, bytes)?;
                let cpu = process_cpu_secs(pid)? - cpu0;
                rows[i].2 = stop_relay(relay)?;
                rows[i].0.push(gb / secs);
                rows[i].1.push(cpu / gb);
            }
        }
        let size = if bytes % (1 << 20) == 0 {
            format!("{} MiB", bytes >> 20)
        } else {
            format!("{} KiB", bytes >> 10)
        };
        println!(
            "\n{n} connections x {size}, medians of {} rounds (GB = 1e9 bytes, client -> sink)",
            args.rounds
        );
        println!(
            "{:<14} {:>7} {:>9} {:>13}",
            "relay", "GB/s", "CPU-s/GB", "splicer / it"
        );
        let cpu = |name: &str| {
            let i = args.relays.iter().position(|r| r == name)?;
            Some(median(&rows[i].1))
        };
        for (name, (gbps, cpu_gb, _)) in args.relays.iter().zip(&rows) {
            // "-" where a run was too short for the 10 ms ticks of /proc/PID/stat.
            let ratio = cpu("splicer")
                .map(|s| s / median(cpu_gb))
                .filter(|r| r.is_finite())
                .map_or(String::from("-"), |r| format!("{r:.2}"));
            println!(
                "{:<14} {:>7.2} {:>9.3} {:>13}",
                name,
                median(gbps),
                median(cpu_gb),
                ratio
            );
        }
        for (name, (_, _, stats)) in args.relays.iter().zip(&rows) {
            if !stats.is_empty() && stats != "stats: -" {
                println!("{name} (last round) {stats}");
            }
        }
    }
    Ok(())
}
