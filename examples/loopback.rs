//! Loopback throughput and CPU cost of ringsplice, against `std::io::copy`, in one run.
//!
//! ```text
//! cargo run --release --example loopback [-- --size-mib N --conns N --file-conns N --rounds N]
//! ```
//!
//! Two kinds of work, each at least `--size-mib` MiB (default 1024), over 127.0.0.1 only:
//! - **socket → socket relay**: `--conns` (default 64) client connections write into sockets
//!   accepted here; each accepted socket is relayed (one transfer) into a second connection
//!   whose far end a sink thread reads and checks byte for byte;
//! - **file → socket**: `--file-conns` (default 16) concurrent transfers, each sending the
//!   whole of one temporary file (opened afresh per transfer) to a sink connection.
//!
//! Each kind is moved by `std::io::copy` (one thread per transfer: the baseline), then by
//! one engine per run: io_uring with `Strategy::Auto`, `Strategy::Chain`, `Strategy::Inline`,
//! and the fallback backend. The writers and sinks are the same two threads (one mio loop
//! each) in every run, so the ratios compare only what moves the bytes.
//!
//! All ten runs make one round; `--rounds` rounds (default 3) are run back to back and the
//! table shows, per line, the median over rounds and the slowest and fastest round's GB/s.
//! Ratios are taken within a round (against that round's baseline), then their median is
//! shown, so a machine that slows down between rounds does not skew them.
//!
//! CPU is reported three ways, in CPU-seconds per GB (10^9 bytes):
//! - `process`: `getrusage(RUSAGE_SELF)` user+sys over the run: everything, the load
//!   threads included;
//! - `relay`: `process` minus the writer and sink threads' own `getrusage(RUSAGE_THREAD)`:
//!   the engine's thread plus io_uring's io-wq kernel workers (which belong to this
//!   process), or for the baseline its copy threads;
//! - `engine`: `getrusage(RUSAGE_THREAD)` of the engine's thread alone, which leaves out
//!   the io-wq workers that run `Strategy::Chain` splices.
//!
//! On loopback the kernel's TCP receive work often runs in the sender's context, so the
//! split between threads is approximate; the totals are not.

use std::error::Error;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use ringsplice::{Backend, BackendPreference, Engine, Stats, Strategy, Transfer};

#[path = "support/flags.rs"]
mod flags;

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Period of the byte pattern every stream carries: a prime, so no chunk or pipe size lines
/// up with it and a misplaced chunk is caught.
const PERIOD: usize = 1_048_573;
/// Largest single read or write of the load threads.
const IO_CHUNK: usize = 256 << 10;
/// A run that makes no progress for this long is reported as a hang.
const STALL: Duration = Duration::from_secs(60);

/// Loopback throughput and CPU cost of ringsplice against std::io::copy, on 127.0.0.1.
#[derive(Debug, Clone, argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// how much each kind of work moves, in MiB, at least (default 1024)
    #[argh(option, default = "1024", from_str_fn(flags::positive))]
    size_mib: u64,
    /// socket -> socket relays (default 64)
    #[argh(option, default = "64", from_str_fn(flags::positive))]
    conns: usize,
    /// concurrent file -> socket transfers (default 16)
    #[argh(option, default = "16", from_str_fn(flags::positive))]
    file_conns: usize,
    /// rounds; the table shows medians (default 3)
    #[argh(option, default = "3", from_str_fn(flags::positive))]
    rounds: usize,
}

/// The pattern, twice over, so any window of up to `PERIOD` bytes is one slice.
fn pattern() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let one: Vec<u8> = (0..PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mut two = one.clone();
    two.extend_from_slice(&one);
    Arc::new(two)
}

/// User+system CPU seconds of the process (`RUSAGE_SELF`) or the calling thread
/// (`RUSAGE_THREAD`).
fn cpu_seconds(who: libc::c_int) -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable `struct rusage`; `who` is RUSAGE_SELF or
    // RUSAGE_THREAD, both valid on Linux.
    let r = unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
    if r != 0 {
        return f64::NAN;
    }
    // SAFETY: getrusage succeeded, so it filled `ru` (and zeroed() made every byte valid).
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn make_file(len: u64, pat: &[u8]) -> BoxResult<TempFile> {
    let path = std::env::temp_dir().join(format!("ringsplice-loopback-{}", std::process::id()));
    let tmp = TempFile(path);
    let mut f = File::create(&tmp.0)?;
    let mut left = len;
    let mut pos = 0usize;
    while left > 0 {
        let n = (left as usize).min(IO_CHUNK);
        f.write_all(&pat[pos..pos + n])?;
        pos = (pos + n) % PERIOD;
        left -= n as u64;
    }
    // On disk before any run, so writeback does not land in one run's figures.
    f.sync_all()?;
    Ok(tmp)
}

/// One stream a load thread writes or reads: its socket, where in the pattern it starts,
/// and how many bytes it carries.
struct Stream {
    sock: TcpStream,
    start: usize,
    len: u64,
}

/// Writes each stream's bytes (non-blocking, one mio loop), closes each when done. Returns
/// the thread's own CPU seconds.
fn writer(streams: Vec<Stream>, pat: Arc<Vec<u8>>) -> io::Result<f64> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut live: Vec<Option<(mio::net::TcpStream, usize, u64)>> = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        s.sock.set_nonblocking(true)?;
        let mut m = mio::net::TcpStream::from_std(s.sock);
        poll.registry()
            .register(&mut m, Token(i), Interest::WRITABLE)?;
        live.push(Some((m, s.start, s.len)));
    }
    let mut left = live.len();
    while left > 0 {
        poll.poll(&mut events, Some(STALL))?;
        if events.is_empty() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "writer stalled"));
        }
        for ev in events.iter() {
            let Some(entry) = live.get_mut(ev.token().0) else {
                continue;
            };
            let Some((sock, pos, rest)) = entry else {
                continue;
            };
            while *rest > 0 {
                let n = (*rest as usize).min(IO_CHUNK);
                match sock.write(&pat[*pos..*pos + n]) {
                    Ok(k) => {
                        *pos = (*pos + k) % PERIOD;
                        *rest -= k as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if *rest == 0 {
                // Dropping closes the socket: the relay sees end of file.
                *entry = None;
                left -= 1;
            }
        }
    }
    Ok(cpu_seconds(libc::RUSAGE_THREAD))
}

/// Reads every stream to end of file, checking each byte against the pattern and the
/// length. Returns the thread's own CPU seconds.
fn sink(streams: Vec<Stream>, pat: Arc<Vec<u8>>) -> io::Result<f64> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut live: Vec<Option<(mio::net::TcpStream, usize, u64, u64)>> = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        s.sock.set_nonblocking(true)?;
        let mut m = mio::net::TcpStream::from_std(s.sock);
        poll.registry()
            .register(&mut m, Token(i), Interest::READABLE)?;
        live.push(Some((m, s.start, 0, s.len)));
    }
    let mut buf = vec![0u8; IO_CHUNK];
    let mut left = live.len();
    while left > 0 {
        poll.poll(&mut events, Some(STALL))?;
        if events.is_empty() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "sink stalled"));
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(entry) = live.get_mut(i) else {
                continue;
            };
            let Some((sock, pos, got, want)) = entry else {
                continue;
            };
            loop {
                match sock.read(&mut buf) {
                    Ok(0) => {
                        if *got != *want {
                            return Err(io::Error::other(format!(
                                "stream {i}: end of file after {got} of {want} bytes"
                            )));
                        }
                        *entry = None;
                        left -= 1;
                        break;
                    }
                    Ok(k) => {
                        if *got + k as u64 > *want || buf[..k] != pat[*pos..*pos + k] {
                            return Err(io::Error::other(format!(
                                "stream {i}: wrong bytes at offset {got}"
                            )));
                        }
                        *pos = (*pos + k) % PERIOD;
                        *got += k as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(cpu_seconds(libc::RUSAGE_THREAD))
}

/// A connected pair on loopback: (the end we connected, the end we accepted).
fn pair(l: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let a = TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    Ok((a, b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Relay,
    File,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Relay => "socket->socket",
            Kind::File => "file->socket",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Mover {
    StdCopy,
    Engine(BackendPreference, Strategy),
}

impl Mover {
    fn name(self) -> String {
        match self {
            Mover::StdCopy => "std::io::copy".into(),
            Mover::Engine(BackendPreference::Fallback, _) => "engine".into(),
            Mover::Engine(_, s) => format!("engine {s:?}"),
        }
    }
}

/// What one run measured.
#[derive(Clone)]
struct Row {
    kind: Kind,
    mover: String,
    backend: String,
    transfers: usize,
    bytes: u64,
    secs: f64,
    process_cpu: f64,
    relay_cpu: f64,
    engine_cpu: Option<f64>,
    stats: Option<Stats>,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.bytes as f64 / 1e9 / self.secs
    }
    fn per_gb(&self, cpu: f64) -> f64 {
        cpu / (self.bytes as f64 / 1e9)
    }
}

/// A transfer's source: an accepted socket (relay) or a file opened for it.
enum Source {
    Sock(TcpStream),
    File(File),
}

fn run(
    kind: Kind,
    mover: Mover,
    args: &Args,
    pat: &Arc<Vec<u8>>,
    file: &TempFile,
) -> BoxResult<Row> {
    let file_len = file_len(args);
    let ingress = TcpListener::bind("127.0.0.1:0")?;
    let egress = TcpListener::bind("127.0.0.1:0")?;
    let mut jobs: Vec<(Source, TcpStream, u64)> = Vec::new();
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    match kind {
        Kind::Relay => {
            let per = relay_len(args);
            for i in 0..args.conns {
                let (client, accepted) = pair(&ingress)?;
                let (out, far) = pair(&egress)?;
                // Each stream starts at its own place in the pattern, so streams crossed
                // over would be caught.
                let start = (i * 7919) % PERIOD;
                writes.push(Stream {
                    sock: client,
                    start,
                    len: per,
                });
                reads.push(Stream {
                    sock: far,
                    start,
                    len: per,
                });
                jobs.push((Source::Sock(accepted), out, per));
            }
        }
        Kind::File => {
            for _ in 0..args.file_conns {
                let (out, far) = pair(&egress)?;
                reads.push(Stream {
                    sock: far,
                    start: 0,
                    len: file_len,
                });
                jobs.push((Source::File(File::open(&file.0)?), out, file_len));
            }
        }
    }
    let transfers = jobs.len();
    let bytes: u64 = jobs.iter().map(|j| j.2).sum();
    let mut engine = match mover {
        Mover::StdCopy => None,
        Mover::Engine(pref, _) => Some(
            Engine::builder()
                .backend(pref)
                .honor_env(false)
                .max_transfers(transfers.max(1))
                .build()?,
        ),
    };

    let cpu0 = cpu_seconds(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let mut load: Vec<JoinHandle<io::Result<f64>>> = Vec::new();
    if !writes.is_empty() {
        let p = Arc::clone(pat);
        load.push(thread::spawn(move || writer(writes, p)));
    }
    let p = Arc::clone(pat);
    load.push(thread::spawn(move || sink(reads, p)));

    let mut engine_cpu = None;
    let mut problems: Vec<String> = Vec::new();
    match (&mut engine, mover) {
        (Some(engine), Mover::Engine(_, strategy)) => {
            let e0 = cpu_seconds(libc::RUSAGE_THREAD);
            let mut expect = Vec::with_capacity(transfers);
            for (i, (src, dst, len)) in jobs.into_iter().enumerate() {
                let t = match src {
                    Source::Sock(s) => Transfer::new(s, dst),
                    Source::File(f) => Transfer::new(f, dst),
                };
                engine.submit(t.strategy(strategy).tag(i as u64))?;
                expect.push(len);
            }
            let mut done = Vec::new();
            let mut last_completion = Instant::now();
            while engine.in_flight() > 0 {
                engine.wait(&mut done, Some(Duration::from_secs(1)))?;
                if !done.is_empty() {
                    last_completion = Instant::now();
                }
                for c in done.drain(..) {
                    let want = expect[c.tag as usize];
                    if c.result.is_err() || c.delivered != want || c.undelivered != 0 {
                        problems.push(format!(
                            "transfer {}: {:?}, delivered {} of {want}, undelivered {}",
                            c.tag, c.result, c.delivered, c.undelivered
                        ));
                    }
                    // Dropping the completion closes both sockets: the sink sees end of file.
                }
                if last_completion.elapsed() > STALL {
                    return Err(format!(
                        "{} / {}: no transfer finished for {STALL:?}, {} in flight, {:?}",
                        kind.name(),
                        mover.name(),
                        engine.in_flight(),
                        engine.stats()
                    )
                    .into());
                }
            }
            engine_cpu = Some(cpu_seconds(libc::RUSAGE_THREAD) - e0);
        }
        _ => {
            let copies: Vec<JoinHandle<io::Result<u64>>> = jobs
                .into_iter()
                .map(|(src, mut dst, _)| {
                    thread::spawn(move || {
                        let n = match src {
                            Source::Sock(mut s) => io::copy(&mut s, &mut dst)?,
                            Source::File(mut f) => io::copy(&mut f, &mut dst)?,
                        };
                        dst.shutdown(Shutdown::Write)?;
                        Ok(n)
                    })
                })
                .collect();
            for c in copies {
                match c.join() {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => problems.push(format!("copy thread: {e}")),
                    Err(_) => problems.push("copy thread panicked".into()),
                }
            }
        }
    }
    let mut load_cpu = 0.0;
    for h in load {
        match h.join() {
            Ok(Ok(cpu)) => load_cpu += cpu,
            Ok(Err(e)) => problems.push(format!("load thread: {e}")),
            Err(_) => problems.push("load thread panicked".into()),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let process_cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu0;
    if !problems.is_empty() {
        return Err(format!(
            "{} / {}: {}",
            kind.name(),
            mover.name(),
            problems.join("; ")
        )
        .into());
    }
    let backend = match &engine {
        None => "threads".to_string(),
        Some(e) => match e.backend() {
            Backend::IoUring => "io_uring".to_string(),
            Backend::Fallback => "fallback".to_string(),
        },
    };
    Ok(Row {
        kind,
        mover: mover.name(),
        backend,
        transfers,
        bytes,
        secs,
        process_cpu,
        relay_cpu: process_cpu - load_cpu,
        engine_cpu,
        stats: engine.map(|e| e.stats()),
    })
}

fn relay_len(a: &Args) -> u64 {
    (a.size_mib << 20).div_ceil(a.conns as u64)
}

fn file_len(a: &Args) -> u64 {
    (a.size_mib << 20).div_ceil(a.file_conns as u64)
}

/// The median of some figures (the mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// One line of the table: the same kind and mover over every round.
struct Line {
    first: Row,
    gbps: Vec<f64>,
    speed_ratio: Vec<f64>,
    process: Vec<f64>,
    relay: Vec<f64>,
    relay_ratio: Vec<f64>,
    engine: Vec<f64>,
    enters: Vec<f64>,
    last_stats: Option<Stats>,
}

/// Groups the rows by (kind, mover) in first-seen order; ratios are taken against the
/// baseline row of the same kind in the same round, then the medians are printed.
fn lines(rounds: &[Vec<Row>]) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    for round in rounds {
        for r in round {
            let base = round.iter().find(|b| b.kind == r.kind && b.stats.is_none());
            let (speed, cpu) = match base {
                Some(b) => (
                    r.gbps() / b.gbps(),
                    r.per_gb(r.relay_cpu) / b.per_gb(b.relay_cpu),
                ),
                None => (f64::NAN, f64::NAN),
            };
            let i = match out
                .iter()
                .position(|l| l.first.kind == r.kind && l.first.mover == r.mover)
            {
                Some(i) => i,
                None => {
                    out.push(Line {
                        first: r.clone(),
                        gbps: Vec::new(),
                        speed_ratio: Vec::new(),
                        process: Vec::new(),
                        relay: Vec::new(),
                        relay_ratio: Vec::new(),
                        engine: Vec::new(),
                        enters: Vec::new(),
                        last_stats: None,
                    });
                    out.len() - 1
                }
            };
            let l = &mut out[i];
            l.gbps.push(r.gbps());
            l.speed_ratio.push(speed);
            l.process.push(r.per_gb(r.process_cpu));
            l.relay.push(r.per_gb(r.relay_cpu));
            l.relay_ratio.push(cpu);
            l.engine.extend(r.engine_cpu.map(|c| r.per_gb(c)));
            l.enters.extend(r.stats.map(|s| s.enters as f64));
            l.last_stats = r.stats;
        }
    }
    out
}

fn print_table(lines: &[Line]) {
    println!(
        "{:<15} {:<14} {:<8} {:>5} {:>5} {:>11} {:>5} {:>6} | {:>7} {:>6} {:>6} {:>6} | {:>6}",
        "kind",
        "run",
        "backend",
        "xfers",
        "MiB",
        "GB/s range",
        "GB/s",
        "x copy",
        "process",
        "relay",
        "x copy",
        "engine",
        "enters"
    );
    for l in lines {
        let r = &l.first;
        let lo = l.gbps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = l.gbps.iter().copied().fold(0.0, f64::max);
        let opt = |v: &[f64], prec: usize| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.prec$}", median(v))
            }
        };
        let baseline = r.stats.is_none();
        println!(
            "{:<15} {:<14} {:<8} {:>5} {:>5} {:>11} {:>5.2} {:>6} | {:>7.3} {:>6.3} {:>6} {:>6} | {:>6}",
            r.kind.name(),
            r.mover,
            r.backend,
            r.transfers,
            r.bytes >> 20,
            format!("{lo:.2}-{hi:.2}"),
            median(&l.gbps),
            if baseline {
                "1.00".into()
            } else {
                opt(&l.speed_ratio, 2)
            },
            median(&l.process),
            median(&l.relay),
            if baseline {
                "1.00".into()
            } else {
                opt(&l.relay_ratio, 2)
            },
            opt(&l.engine, 3),
            opt(&l.enters, 0)
        );
    }
}

fn main() -> BoxResult<()> {
    let args: Args = argh::from_env();
    let default = Engine::new()?;
    println!(
        "backend: {} ({})",
        default.backend(),
        default.backend_reason()
    );
    drop(default);
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "loopback: {} MiB per kind on {cores} cores; socket->socket: {} relayed connections x {} bytes; \
         file->socket: {} transfers x {} bytes (one file, page-cache warm)",
        args.size_mib,
        args.conns,
        relay_len(&args),
        args.file_conns,
        file_len(&args)
    );
    println!(
        "baseline: std::io::copy, one thread per transfer; load: 1 writer + 1 sink thread (mio), \
         every byte checked"
    );
    let pat = pattern();
    let file = make_file(file_len(&args), &pat)?;

    let movers = [
        Mover::StdCopy,
        Mover::Engine(BackendPreference::Auto, Strategy::Auto),
        Mover::Engine(BackendPreference::Auto, Strategy::Chain),
        Mover::Engine(BackendPreference::Auto, Strategy::Inline),
        Mover::Engine(BackendPreference::Fallback, Strategy::Auto),
    ];
    let started = Instant::now();
    let mut rounds = Vec::new();
    for _ in 0..args.rounds {
        // Each round runs every mover once per kind, so slow drift of a noisy machine lands
        // on all of them; ratios are taken within a round.
        let mut rows = Vec::new();
        for kind in [Kind::Relay, Kind::File] {
            for mover in movers {
                rows.push(run(kind, mover, &args, &pat, &file)?);
            }
        }
        rounds.push(rows);
    }
    println!();
    println!(
        "Medians over {} rounds. GB/s range: slowest-fastest round. CPU columns: CPU-seconds per GB \
         (1 GB = 10^9 bytes);",
        args.rounds
    );
    println!(
        "  process: getrusage(RUSAGE_SELF), everything including the writer and sink threads;"
    );
    println!(
        "  relay: process minus the writer/sink threads' own RUSAGE_THREAD: the engine thread + \
         io-wq workers (for std::io::copy, its copy threads);"
    );
    println!("  engine: RUSAGE_THREAD of the engine's own thread only (leaves out io-wq workers).");
    println!(
        "x copy: GB/s (left) and relay CPU per GB (right) divided by the std::io::copy row of \
         the same kind in the same round (median of rounds)."
    );
    println!("enters: io_uring_enter calls (io_uring) or epoll_wait calls (fallback).");
    println!();
    let lines = lines(&rounds);
    print_table(&lines);
    println!();
    println!("Stats of each engine (last round):");
    for l in &lines {
        if let Some(s) = l.last_stats {
            println!(
                "{} / {} ({}): {s:?}",
                l.first.kind.name(),
                l.first.mover,
                l.first.backend
            );
        }
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
