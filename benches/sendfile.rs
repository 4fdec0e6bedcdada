//! The file → socket comparison of issue 5: one file (1 GiB by default) sent whole, once per
//! round, to each of N concurrent clients on 127.0.0.1 by five servers in turn.
//!
//! ```text
//! cargo bench --bench sendfile                           # N = 1 and 32, 1 GiB, 3 rounds
//! cargo bench --bench sendfile -- --clients 8 --mib 256 --rounds 5
//! cargo bench --bench sendfile -- --cold                 # page cache dropped before each run
//! cargo bench --bench sendfile -- --servers uring,go     # a subset
//! ```
//!
//! Servers (`--servers`, all by default):
//! - `uring`: ringsplice on the io_uring backend (`BackendPreference::IoUring`,
//!   `Strategy::Auto`: chunks in the page cache spliced inline, cold fills on io-wq
//!   workers), one thread;
//! - `fallback`: ringsplice on the fallback backend (epoll + inline `sendfile`), one thread;
//! - `blocking`: a blocking `sendfile(2)` loop on a thread per client, asking for everything
//!   that is left in each call, as a C server would;
//! - `go`: Go's `poll.SendFile` on its netpoller, approximated by one epoll thread:
//!   non-blocking sockets registered edge-triggered, `sendfile` in chunks of at most 4 MiB
//!   (Go's `maxSendfileSize`) until `EAGAIN`, then wait for `EPOLLOUT`;
//! - `copy`: `std::io::copy(&mut File, &mut TcpStream)` on a thread per client (std sends no
//!   file to a socket with `sendfile`: an 8 KiB `read`/`write` loop).
//!
//! A server name may carry: `:N`, N engine threads for `uring`/`fallback` (each its own
//! engine and `SO_REUSEPORT` listener, as `file_server --threads N`); `@PATH`, another
//! build of this bench to serve from (the engine before a change against after it, in one
//! run); `+key=value` settings for an experiment, read by the ringsplice servers:
//! `fairness` and `chunk` (`Builder::fairness_bytes`, `chunk_size`), `sndbuf`, `lowat`,
//! `nodelay` and `cork` (`SO_SNDBUF`, `TCP_NOTSENT_LOWAT`, `TCP_NODELAY`, `TCP_CORK` on
//! each served socket), `strategy=inline` (splice
//! through a pipe instead of `sendfile`). E.g. `--servers uring,uring+fairness=16777216`.
//!
//! Every server runs in its own child process (this binary again, with the hidden
//! `--serve KIND`), so its CPU is its own: `getrusage(RUSAGE_SELF)` in the server from just
//! after it listens to its last byte, every thread included (io_uring's `iou-wrk-*` io-wq
//! workers are threads of the process; threads that have exited count too). The parent
//! also reads the child's `/proc/PID/stat` (utime + stime, clock ticks) around the load, as
//! a cross-check printed in the progress lines. The clients are threads of the parent, one
//! per connection, reading with a 256 KiB buffer and counting bytes: every client must get
//! exactly the file's length. GB/s is N × file size over the wall time from the clients'
//! start to the last client's end of file (1 GB = 10^9 bytes).
//!
//! `--cold` drops the file's pages (`posix_fadvise(POSIX_FADV_DONTNEED)`, after an
//! `fdatasync` when the file is made) before each server's run, and the progress lines show
//! how much of the file was resident (`mincore`) when the clients started. The columns that
//! matter then are the stalls:
//! - **stall**: the longest time the serving thread was busy in one go, i.e. could not serve
//!   any other client: for the single-thread servers (`uring`, `fallback`, `go`) one loop
//!   iteration, from `poll`/`epoll_wait` returning to the next wait (for ringsplice, the
//!   `engine.poll()` call and the accepts); for `blocking`, the longest single `sendfile`
//!   call, which by design blocks one client's thread only (and lasts the whole transfer on
//!   a blocking socket); not measured for `copy`.
//!   The wall time includes being preempted (32 client threads share 2 cores), so two
//!   columns split it for the event loops, from `getrusage(RUSAGE_THREAD)` around every
//!   iteration: **busy**, the most CPU one iteration used (the work one `engine.poll()`
//!   does), and **sleeps**, how many times the loop thread went to sleep inside an
//!   iteration (voluntary context switches: blocked on a disk read, or on a lock), per run.
//! - **gap**: the longest any client waited between two reads that returned data (from its
//!   connect to the first byte, then between reads), the largest over clients: what a cold
//!   read on a server's only thread does to the other clients.
//!
//! The machine may be shared: **other** is the CPU that neither the server nor this process
//! (the clients) used during a run — other jobs, and kernel work charged to no task — from
//! `/proc/stat`, as a share of all CPUs. A run above `--max-other` (default 15%) is run again
//! after 5 s, at most `--retries` (default 3) times; the table shows the largest value kept
//! and how many runs were repeated, so a disturbed row can be seen.
//!
//! Bounded: a server must listen within 10 s and finish within 60 s plus 10 s per GiB it
//! sends, a client read waits at most 30 s, and a server process gives up on its own after
//! 20 minutes. The file (in `--dir`, default the temp dir) is removed at exit, also on
//! SIGINT/SIGTERM.

use std::error::Error;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use ringsplice::{BackendPreference, Engine, Length, Strategy, Transfer};

#[path = "../examples/support/listen.rs"]
mod listen;
use listen::listen_per_thread;

#[path = "../examples/support/flags.rs"]
mod flags;
use flags::List;

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Largest `sendfile` count Go asks for (`maxSendfileSize` in internal/poll).
const GO_MAX_SENDFILE: usize = 4 << 20;
/// What each client reads at a time.
const CLIENT_BUF: usize = 256 << 10;
/// How long a client read may wait.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server process may live, whatever happens.
const SERVE_DEADLINE: Duration = Duration::from_secs(20 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uring,
    Fallback,
    Blocking,
    Go,
    Copy,
    /// A real Go server (`benches/support/go_sendfile_server.go`), from `--go-server`.
    GoReal,
}

const KINDS: [Kind; 6] = [
    Kind::Uring,
    Kind::Fallback,
    Kind::Blocking,
    Kind::Go,
    Kind::Copy,
    Kind::GoReal,
];

/// The Go server binary (`--go-server PATH`), which `go-real` runs.
static GO_SERVER: OnceLock<PathBuf> = OnceLock::new();

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Uring => "uring",
            Kind::Fallback => "fallback",
            Kind::Blocking => "blocking",
            Kind::Go => "go",
            Kind::Copy => "copy",
            Kind::GoReal => "go-real",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Uring => "ringsplice io_uring",
            Kind::Fallback => "ringsplice fallback",
            Kind::Blocking => "blocking sendfile loop",
            Kind::Go => "Go-style sendfile",
            Kind::Copy => "std::io::copy",
            Kind::GoReal => "Go io.Copy (real Go)",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        KINDS.into_iter().find(|k| k.key() == s).ok_or_else(|| {
            format!("unknown server {s:?} (uring, fallback, blocking, go, copy, go-real)")
        })
    }
}

/// A server to run: its kind, and for ringsplice the number of engine threads (`uring:2`:
/// two threads, each with its own engine and its own `SO_REUSEPORT` listener on one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Server {
    kind: Kind,
    threads: usize,
    /// Another build of this bench to serve from (`uring@/saved/sendfile-bench`): an
    /// engine before and after a change, in one run.
    bin: Option<&'static Path>,
    /// Settings for an experiment (`uring+fairness=16777216`): `SENDFILE_FAIRNESS=...` in
    /// the server's environment (see [`knob`]).
    env: &'static [(String, String)],
}

impl Server {
    fn label(self) -> String {
        let mut l = self.kind.label().to_string();
        if self.threads > 1 {
            l += &format!(", {} threads", self.threads);
        }
        if let Some(b) = self.bin {
            l += &format!(
                " [{}]",
                b.file_name().map_or("?".into(), |n| n.to_string_lossy())
            );
        }
        for (k, v) in self.env {
            l += &format!(" {}={v}", k.trim_start_matches("SENDFILE_").to_lowercase());
        }
        l
    }
}

impl std::str::FromStr for Server {
    type Err = String;

    fn from_str(s: &str) -> Result<Server, String> {
        let mut parts = s.split('+');
        let s = parts.next().unwrap_or_default();
        let env: Vec<(String, String)> = parts
            .map(|kv| {
                let (k, v) = kv.split_once('=').ok_or(format!("{kv:?}: KEY=VALUE"))?;
                Ok((format!("SENDFILE_{}", k.to_uppercase()), v.to_string()))
            })
            .collect::<Result<_, String>>()?;
        let env = &*Box::leak(env.into_boxed_slice());
        let (s, bin) = match s.split_once('@') {
            Some((k, b)) => (k, Some(&*Box::leak(PathBuf::from(b).into_boxed_path()))),
            None => (s, None),
        };
        let (kind, threads) = match s.split_once(':') {
            Some((k, t)) => (k, flags::positive(t)?),
            None => (s, 1),
        };
        let kind: Kind = kind.parse()?;
        if threads > 1 && !matches!(kind, Kind::Uring | Kind::Fallback) {
            return Err(format!(
                "{s:?}: only uring and fallback take a thread count"
            ));
        }
        Ok(Server {
            kind,
            threads,
            bin,
            env,
        })
    }
}

/// One file sent whole, once per round, to each of N concurrent clients on 127.0.0.1 by
/// each server in turn, every server in its own process.
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// client counts, one table each (default 1,32)
    #[argh(option, default = "List(vec![1, 32])", from_str_fn(client_counts))]
    clients: List<usize>,
    /// size of the file in MiB (default 1024)
    #[argh(option, default = "1024", from_str_fn(flags::positive))]
    mib: u64,
    /// rounds; the tables show medians (default 3)
    #[argh(option, default = "3", from_str_fn(flags::positive))]
    rounds: usize,
    /// drop the file's pages from the page cache before each server's run
    #[argh(switch)]
    cold: bool,
    /// directory for the file (default the temp dir)
    #[argh(option, default = "std::env::temp_dir()")]
    dir: PathBuf,
    /// servers to run: uring,fallback,blocking,go,copy,go-real (default all but go-real);
    /// uring:N and fallback:N run N engine threads; KIND@PATH serves from another build of
    /// this bench
    #[argh(option, default = "default_servers()")]
    servers: List<Server>,
    /// the real Go server that go-real runs (go build benches/support/go_sendfile_server.go)
    #[argh(option)]
    go_server: Option<PathBuf>,
    /// a run that saw more than this share (percent) of the machine used by others is
    /// repeated (default 15)
    #[argh(option, default = "15.0")]
    max_other: f64,
    /// how many times a disturbed run is repeated at most (default 3)
    #[argh(option, default = "3")]
    retries: usize,
}

fn default_servers() -> List<Server> {
    List(
        KINDS[..5]
            .iter()
            .map(|&kind| Server {
                kind,
                threads: 1,
                bin: None,
                env: &[],
            })
            .collect(),
    )
}

/// `--clients`: a list of counts, each above zero.
fn client_counts(s: &str) -> Result<List<usize>, String> {
    s.split(',')
        .map(flags::positive)
        .collect::<Result<_, _>>()
        .map(List)
}

/// The hidden child mode, `--serve KIND --file PATH --clients N`: this binary as one of the
/// servers (the Go server takes the same flags).
#[derive(argh::FromArgs)]
struct ServeArgs {
    /// which server
    #[argh(positional)]
    kind: Kind,
    /// the file each client gets
    #[argh(option)]
    file: PathBuf,
    /// how many clients to serve
    #[argh(option)]
    clients: usize,
    /// engine threads (uring, fallback; default 1)
    #[argh(option, default = "1")]
    threads: usize,
}

// ---------------------------------------------------------------------------------------
// Small syscall helpers.

/// `sendfile(2)` of up to `count` bytes from `file` at `*off` (advanced) into `sock`.
fn sendfile(sock: &impl AsRawFd, file: &File, off: &mut i64, count: usize) -> io::Result<usize> {
    // SAFETY: both fds are open for the duration of the call; `off` is a valid i64.
    let n = unsafe { libc::sendfile64(sock.as_raw_fd(), file.as_raw_fd(), off, count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// CPU seconds (user + system) and context switches (voluntary + involuntary) of this
/// whole process, every thread included, living or exited.
fn self_usage() -> (f64, u64) {
    // SAFETY: `ru` is a valid rusage for getrusage to fill.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(ru.ru_utime) + secs(ru.ru_stime),
        (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
    )
}

/// utime + stime of a process from `/proc/PID/stat`, in seconds (clock-tick resolution).
fn proc_cpu_secs(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let close = stat.rfind(')').ok_or(io::ErrorKind::InvalidData)?;
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let field = |i: usize| -> io::Result<f64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((field(11)? + field(12)?) / hz)
}

/// Busy CPU seconds of the whole machine, all CPUs (user, nice, system, irq, softirq from
/// `/proc/stat`; steal and idle left out), and the number of CPUs.
fn machine_busy_secs() -> io::Result<(f64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad /proc/stat");
    let line = stat.lines().next().ok_or_else(bad)?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().map_err(|_| bad()))
        .collect::<io::Result<_>>()?;
    if f.len() < 7 {
        return Err(bad());
    }
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(((f[0] + f[1] + f[2] + f[5] + f[6]) / hz, cpus.max(1)))
}

/// Drops the file's clean pages from the page cache.
fn drop_cache(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: fadvise on an open fd; offset 0, length 0 means the whole file.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// The fraction of the file's pages in the page cache (`mincore` over a mapping).
fn resident_fraction(path: &Path) -> io::Result<f64> {
    let f = File::open(path)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok(1.0);
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: a fresh read-only shared mapping of an open file, unmapped below; mincore
    // writes one byte per page of `len` into `vec`, which holds that many. Nothing reads
    // the mapping, so no page is faulted in.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let r = libc::mincore(p, len, vec.as_mut_ptr());
        let e = io::Error::last_os_error();
        libc::munmap(p, len);
        if r != 0 {
            return Err(e);
        }
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as f64 / vec.len() as f64)
}

// ---------------------------------------------------------------------------------------
// The servers (child process).

/// What a server reports: its longest stall, and the engine's stats if any.
struct Served {
    stall: Option<Duration>,
    /// Event-loop servers: the most CPU one iteration used, and the sleeps inside iterations.
    busy: Option<Duration>,
    sleeps: Option<u64>,
    stats: String,
}

/// The calling thread's CPU time and voluntary context switches (`RUSAGE_THREAD`).
fn thread_usage() -> (Duration, u64) {
    // SAFETY: `ru` is a valid rusage for getrusage to fill.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (
        Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime)),
        ru.ru_nvcsw as u64,
    )
}

/// An event loop's iterations, from its wait returning to its next wait: the longest (wall
/// time, which includes being preempted), the most CPU one used, and how often the thread
/// went to sleep inside one (a voluntary context switch: blocked, e.g. on a disk read).
#[derive(Default)]
struct LoopTimes {
    stall: Duration,
    busy: Duration,
    sleeps: u64,
}

impl LoopTimes {
    fn start() -> (Instant, (Duration, u64)) {
        (Instant::now(), thread_usage())
    }

    fn end(&mut self, (t0, (cpu0, vcsw0)): (Instant, (Duration, u64))) {
        self.stall = self.stall.max(t0.elapsed());
        let (cpu1, vcsw1) = thread_usage();
        self.busy = self.busy.max(cpu1.saturating_sub(cpu0));
        self.sleeps += vcsw1 - vcsw0;
    }

    fn served(self, stats: String) -> Served {
        Served {
            stall: Some(self.stall),
            busy: Some(self.busy),
            sleeps: Some(self.sleeps),
            stats,
        }
    }
}

/// An experiment's setting from the environment (bytes), for the server child.
fn knob(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// `SENDFILE_SNDBUF` (`SO_SNDBUF`), `SENDFILE_LOWAT` (`TCP_NOTSENT_LOWAT`),
/// `SENDFILE_NODELAY` (`TCP_NODELAY`, which Go sets on every TCP socket) and `SENDFILE_CORK`
/// (`TCP_CORK`, held until the socket is closed after its last byte) on a served socket,
/// when set.
fn socket_knobs(sock: &TcpStream) {
    for (name, level, opt) in [
        ("SENDFILE_SNDBUF", libc::SOL_SOCKET, libc::SO_SNDBUF),
        ("SENDFILE_LOWAT", libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
        ("SENDFILE_NODELAY", libc::IPPROTO_TCP, libc::TCP_NODELAY),
        ("SENDFILE_CORK", libc::IPPROTO_TCP, libc::TCP_CORK),
    ] {
        if let Some(v) = knob(name) {
            let v = v as libc::c_int;
            // SAFETY: setsockopt on an open socket with a valid int.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    level,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
    }
}

/// Counts shared by the engine threads of one server: connections accepted and served.
#[derive(Default)]
struct Shared {
    accepted: AtomicUsize,
    finished: AtomicUsize,
}

/// ringsplice with one engine per listener, each on its own thread; the loop times are the
/// worst over the threads.
fn serve_engines(
    pref: BackendPreference,
    listeners: Vec<TcpListener>,
    path: &Path,
    len: u64,
    n: usize,
) -> BoxResult<Served> {
    let shared = Arc::new(Shared::default());
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let (shared, path) = (shared.clone(), path.to_path_buf());
            thread::spawn(move || {
                serve_engine(pref, l, &path, len, n, &shared).map_err(|e| e.to_string())
            })
        })
        .collect();
    let (mut times, mut stats) = (LoopTimes::default(), Vec::new());
    for t in threads {
        let (t, s) = t.join().map_err(|_| "engine thread panicked")??;
        times.stall = times.stall.max(t.stall);
        times.busy = times.busy.max(t.busy);
        times.sleeps += t.sleeps;
        stats.push(s);
    }
    Ok(times.served(stats.join(" | ")))
}

fn serve_engine(
    pref: BackendPreference,
    listener: TcpListener,
    path: &Path,
    len: u64,
    n: usize,
    shared: &Shared,
) -> BoxResult<(LoopTimes, String)> {
    let mut b = Engine::builder()
        .backend(pref)
        .honor_env(false)
        .max_transfers(n);
    if let Some(v) = knob("SENDFILE_FAIRNESS") {
        b = b.fairness_bytes(v);
    }
    if let Some(v) = knob("SENDFILE_CHUNK") {
        b = b.chunk_size(v);
    }
    let mut engine = b.build()?;
    listener.set_nonblocking(true)?;
    let mut done = Vec::new();
    let mut times = LoopTimes::default();
    while shared.finished.load(Ordering::Relaxed) < n {
        let mut fds = [
            libc::pollfd {
                fd: if shared.accepted.load(Ordering::Relaxed) < n {
                    listener.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: engine.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds for the duration of the call. The timeout bounds how
        // late a thread sees that the others have served the last connection.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue; // io_uring task work interrupts waits
            }
            return Err(format!("poll: {e}").into());
        }
        let t0 = LoopTimes::start();
        let mut submitted = false;
        if fds[0].revents != 0 {
            loop {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let tag = shared.accepted.fetch_add(1, Ordering::Relaxed);
                        socket_knobs(&sock);
                        let file = File::open(path)?;
                        let mut t = Transfer::new(file, sock)
                            .length(Length::Exact(len))
                            .source_offset(0)
                            .tag(tag as u64);
                        if std::env::var("SENDFILE_STRATEGY").as_deref() == Ok("inline") {
                            t = t.strategy(Strategy::Inline); // splice through a pipe
                        }
                        engine.submit(t).map_err(|r| format!("submit: {r}"))?;
                        submitted = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("accept: {e}").into()),
                }
            }
        }
        if submitted || fds[1].revents != 0 {
            engine.poll(&mut done)?;
            for c in done.drain(..) {
                if let Err(e) = &c.result {
                    return Err(
                        format!("transfer {}: {e} after {} bytes", c.tag, c.delivered).into(),
                    );
                }
                if c.delivered != len {
                    return Err(
                        format!("transfer {}: {} of {len} bytes", c.tag, c.delivered).into(),
                    );
                }
                // Dropping the completion closes the socket.
                shared.finished.fetch_add(1, Ordering::Relaxed);
            }
        }
        times.end(t0);
    }
    Ok((times, format!("{:?}", engine.stats())))
}

/// One thread per client; `each` serves one socket and returns its longest call.
fn serve_threads(
    listener: TcpListener,
    n: usize,
    each: fn(TcpStream) -> io::Result<Duration>,
) -> BoxResult<Duration> {
    let mut threads = Vec::with_capacity(n);
    for _ in 0..n {
        let (sock, _) = listener.accept()?;
        threads.push(thread::spawn(move || each(sock)));
    }
    let mut longest = Duration::ZERO;
    for (i, t) in threads.into_iter().enumerate() {
        let d = t
            .join()
            .map_err(|_| format!("server thread {i} panicked"))?
            .map_err(|e| format!("server thread {i}: {e}"))?;
        longest = longest.max(d);
    }
    Ok(longest)
}

/// The path and length of the file, for the thread-per-client servers.
static FILE: OnceLock<(PathBuf, u64)> = OnceLock::new();

fn file() -> io::Result<&'static (PathBuf, u64)> {
    FILE.get().ok_or_else(|| io::Error::other("file not set"))
}

/// A blocking `sendfile` loop, each call asking for all that is left.
fn blocking_sendfile(sock: TcpStream) -> io::Result<Duration> {
    let (path, len) = file()?;
    let f = File::open(path)?;
    let mut off: i64 = 0;
    let mut longest = Duration::ZERO;
    while (off as u64) < *len {
        let t = Instant::now();
        let left = (*len - off as u64) as usize;
        let r = sendfile(&sock, &f, &mut off, left);
        longest = longest.max(t.elapsed());
        match r {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended early",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(longest)
}

/// `std::io::copy` from the file to the socket.
fn std_copy(mut sock: TcpStream) -> io::Result<Duration> {
    let (path, len) = file()?;
    let mut f = File::open(path)?;
    let n = io::copy(&mut f, &mut sock)?;
    if n != *len {
        return Err(io::Error::other(format!("copied {n} of {len} bytes")));
    }
    Ok(Duration::ZERO)
}

/// Go's `poll.SendFile` on one netpoller thread.
fn serve_go(listener: TcpListener, path: &Path, len: u64, n: usize) -> BoxResult<Served> {
    struct Conn {
        sock: TcpStream,
        file: File,
        off: i64,
    }
    const LISTENER: u64 = u64::MAX;
    listener.set_nonblocking(true)?;
    // SAFETY: epoll_create1 with a valid flag; the fd is owned below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(format!("epoll_create1: {}", io::Error::last_os_error()).into());
    }
    // SAFETY: a new fd nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let add = |fd: i32, events: u32, data: u64| -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    add(listener.as_raw_fd(), libc::EPOLLIN as u32, LISTENER)?;
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(n);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let (mut finished, mut times) = (0usize, LoopTimes::default());
    // Sends until done (true) or EAGAIN (false), like Go's SendFile loop.
    let pump = |c: &mut Conn| -> io::Result<bool> {
        loop {
            let left = len - c.off as u64;
            if left == 0 {
                return Ok(true);
            }
            let want = (left as usize).min(GO_MAX_SENDFILE);
            match sendfile(&c.sock, &c.file, &mut c.off, want) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file ended early",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    };
    while finished < n {
        // SAFETY: the buffer holds `events.len()` entries; epoll_wait writes at most that.
        let k = unsafe {
            libc::epoll_wait(
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                1000,
            )
        };
        if k < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}").into());
        }
        let t0 = LoopTimes::start();
        for ev in &events[..k as usize] {
            let mut ready = Vec::new();
            if ev.u64 == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            sock.set_nonblocking(true)?;
                            let idx = conns.len();
                            // What Go's netFD registers: everything, edge-triggered.
                            let bits =
                                libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
                            add(sock.as_raw_fd(), bits as u32, idx as u64)?;
                            conns.push(Some(Conn {
                                sock,
                                file: File::open(path)?,
                                off: 0,
                            }));
                            ready.push(idx); // Go tries the sendfile before waiting
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("accept: {e}").into()),
                    }
                }
            } else {
                ready.push(ev.u64 as usize);
            }
            for idx in ready {
                let Some(c) = conns.get_mut(idx).and_then(Option::as_mut) else {
                    continue;
                };
                if pump(c).map_err(|e| format!("connection {idx}: sendfile: {e}"))? {
                    conns[idx] = None; // closing removes it from the epoll set
                    finished += 1;
                }
            }
        }
        times.end(t0);
    }
    Ok(times.served(String::new()))
}

/// The child: `--serve KIND --file PATH --clients N`.
fn serve_main(a: ServeArgs) -> BoxResult<()> {
    let (kind, path, n, threads) = (a.kind, a.file, a.clients, a.threads);
    // The parent closes our stdin to end us (also by dying); a deadline ends us anyway.
    thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    thread::spawn(|| {
        thread::sleep(SERVE_DEADLINE);
        eprintln!("serve: still running after {SERVE_DEADLINE:?}; giving up");
        std::process::exit(3);
    });
    let len = std::fs::metadata(&path)?.len();
    let _ = FILE.set((path.clone(), len));
    let listeners = listen_per_thread("127.0.0.1:0".parse()?, threads)?;
    let listener = listeners[0].try_clone()?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening {}", listeners[0].local_addr()?)?;
    out.flush()?;
    let (cpu0, csw0) = self_usage();
    let served = match kind {
        Kind::Uring => serve_engines(BackendPreference::IoUring, listeners, &path, len, n)?,
        Kind::Fallback => serve_engines(BackendPreference::Fallback, listeners, &path, len, n)?,
        Kind::Blocking => Served {
            stall: Some(serve_threads(listener, n, blocking_sendfile)?),
            busy: None,
            sleeps: None,
            stats: String::new(),
        },
        Kind::Go => serve_go(listener, &path, len, n)?,
        Kind::GoReal => return Err("go-real is served by the --go-server binary".into()),
        Kind::Copy => {
            serve_threads(listener, n, std_copy)?;
            Served {
                stall: None,
                busy: None,
                sleeps: None,
                stats: String::new(),
            }
        }
    };
    let (cpu1, csw1) = self_usage();
    writeln!(
        out,
        "done cpu={:.6} csw={} stall_us={} busy_us={} sleeps={} stats={}",
        cpu1 - cpu0,
        csw1 - csw0,
        served.stall.map_or(-1, |d| d.as_micros() as i64),
        served.busy.map_or(-1, |d| d.as_micros() as i64),
        served.sleeps.map_or(-1, |n| n as i64),
        served.stats
    )?;
    out.flush()?;
    drop(out);
    loop {
        thread::park(); // until the stdin thread exits the process
    }
}

// ---------------------------------------------------------------------------------------
// The parent: the file, the clients, the runs and the tables.

/// Removes the bench's file and directory (on drop, and from the signal handler).
static CLEANUP: OnceLock<(CString, CString)> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    if let Some((file, dir)) = CLEANUP.get() {
        // SAFETY: unlink, rmdir and _exit are async-signal-safe; the strings live forever.
        unsafe {
            libc::unlink(file.as_ptr());
            libc::rmdir(dir.as_ptr());
        }
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(130) };
}

struct TestFile {
    dir: PathBuf,
    path: PathBuf,
    len: u64,
}

impl TestFile {
    fn create(parent: &Path, mib: u64) -> BoxResult<TestFile> {
        let dir = parent.join(format!("sendfile_bench-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let path = dir.join("file.bin");
        let t = TestFile {
            dir,
            path,
            len: mib << 20,
        };
        let _ = CLEANUP.set((
            CString::new(t.path.as_os_str().as_bytes())?,
            CString::new(t.dir.as_os_str().as_bytes())?,
        ));
        let handler: extern "C" fn(libc::c_int) = on_signal;
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler does only async-signal-safe calls.
            unsafe { libc::signal(sig, handler as libc::sighandler_t) };
        }
        let mut f = File::create(&t.path)?;
        let mut block: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for m in 0..mib {
            block[0] = m as u8;
            f.write_all(&block)?;
        }
        // Written back, so that --cold can drop the pages (dirty pages are not dropped).
        f.sync_all()?;
        drop(f);
        // Warm: read it once.
        let mut f = File::open(&t.path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match f.read(&mut buf)? {
                0 => break,
                k => total += k as u64,
            }
        }
        if total != t.len {
            return Err(format!("read back {total} of {} bytes", t.len).into());
        }
        Ok(t)
    }
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// What the clients did in one run: the wall time, the longest wait of any client between
/// reads, and the receiving side's cost summed over the client threads.
struct Clients {
    wall: Duration,
    gap: Duration,
    /// CPU (user + system) of the client threads (`getrusage(RUSAGE_THREAD)` in each).
    cpu: Duration,
    /// `read` calls that returned data.
    reads: u64,
    /// Times a client thread went to sleep (voluntary context switches): its wake-ups.
    sleeps: u64,
}

/// One client: connects, reads to end of file, and says what it got and what it cost.
fn client(addr: SocketAddr) -> io::Result<(u64, Duration, Duration, u64, u64)> {
    let (cpu0, vcsw0) = thread_usage();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(CLIENT_READ_TIMEOUT))?;
    let mut buf = vec![0u8; CLIENT_BUF];
    let (mut got, mut gap, mut last, mut reads) = (0u64, Duration::ZERO, Instant::now(), 0u64);
    loop {
        match s.read(&mut buf) {
            Ok(0) => {
                let (cpu1, vcsw1) = thread_usage();
                return Ok((got, gap, cpu1.saturating_sub(cpu0), reads, vcsw1 - vcsw0));
            }
            Ok(k) => {
                got += k as u64;
                reads += 1;
                let now = Instant::now();
                gap = gap.max(now - last);
                last = now;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no data for {CLIENT_READ_TIMEOUT:?} after {got} bytes"),
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// N clients, each reading the whole file from `addr`.
fn run_clients(addr: SocketAddr, n: usize, len: u64) -> BoxResult<Clients> {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|_| thread::spawn(move || client(addr)))
        .collect();
    let mut c = Clients {
        wall: Duration::ZERO,
        gap: Duration::ZERO,
        cpu: Duration::ZERO,
        reads: 0,
        sleeps: 0,
    };
    let mut first_err = None;
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok((got, g, cpu, reads, sleeps))) if got == len => {
                c.gap = c.gap.max(g);
                c.cpu += cpu;
                c.reads += reads;
                c.sleeps += sleeps;
            }
            Ok(Ok((got, ..))) => {
                first_err.get_or_insert(format!("client {i}: got {got} of {len} bytes"));
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(format!("client {i}: {e}"));
            }
            Err(_) => {
                first_err.get_or_insert(format!("client {i}: panicked"));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e.into());
    }
    c.wall = t0.elapsed();
    Ok(c)
}

/// A server child, killed if still there when dropped.
struct ServerProc {
    child: Child,
    lines: Receiver<String>,
}

impl ServerProc {
    fn start(server: Server, path: &Path, n: usize) -> BoxResult<ServerProc> {
        let kind = server.kind;
        let bin = match kind {
            Kind::GoReal => GO_SERVER.get().cloned().ok_or(
                "go-real needs --go-server PATH (go build benches/support/go_sendfile_server.go)",
            )?,
            _ => match server.bin {
                Some(b) => b.to_path_buf(),
                None => std::env::current_exe()?,
            },
        };
        let mut child = Command::new(bin)
            .arg("--serve")
            .arg(kind.key())
            .arg("--file")
            .arg(path)
            .arg("--clients")
            .arg(n.to_string())
            .args(
                (server.threads > 1)
                    .then(|| ["--threads".to_string(), server.threads.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .envs(server.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ServerProc { child, lines: rx })
    }

    fn line(&self, what: &str, timeout: Duration) -> BoxResult<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("server: no {what} within {timeout:?}").into())
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(format!("server exited before {what} (its error is above)").into())
            }
        }
    }

    /// Closes its stdin (it exits) and reaps it, killing it after 10 s.
    fn finish(mut self) -> BoxResult<()> {
        drop(self.child.stdin.take());
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err("server did not exit 10 s after its stdin closed".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One server's run.
struct Run {
    gbps: f64,
    cpu_per_gb: f64,
    csw_per_gib: f64,
    stall: Option<Duration>,
    busy: Option<Duration>,
    sleeps: Option<u64>,
    gap: Duration,
    /// The receiving side: the client threads' CPU per GB, bytes per `read` that returned
    /// data, and the client threads' sleeps (each one a wake-up later) per GiB.
    cli_cpu_per_gb: f64,
    bytes_per_read: f64,
    cli_wakes_per_gib: f64,
    /// CPU used by other processes during the run, as a share of the machine.
    other: f64,
    stats: String,
}

fn field<'a>(line: &'a str, key: &str) -> BoxResult<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .ok_or_else(|| format!("server line without {key}: {line:?}").into())
}

fn run_one(kind: Server, file: &TestFile, n: usize, cold: bool) -> BoxResult<Run> {
    let total = n as u64 * file.len;
    let server = ServerProc::start(kind, &file.path, n)?;
    let line = server.line("listening line", Duration::from_secs(10))?;
    let addr: SocketAddr = line
        .strip_prefix("listening ")
        .ok_or_else(|| format!("unexpected server line {line:?}"))?
        .parse()?;
    if cold {
        drop_cache(&file.path)?;
    }
    let resident = resident_fraction(&file.path)?;
    let pid = server.child.id();
    let proc0 = proc_cpu_secs(pid)?;
    let (busy0, cpus) = machine_busy_secs()?;
    let (me0, _) = self_usage();
    let clients = run_clients(addr, n, file.len)?;
    let (wall, gap) = (clients.wall, clients.gap);
    let (busy1, _) = machine_busy_secs()?;
    let (me1, _) = self_usage();
    let limit = Duration::from_secs(60 + 10 * total.div_ceil(1 << 30));
    let done = server.line(
        "result",
        limit.saturating_sub(wall).max(Duration::from_secs(10)),
    )?;
    let proc1 = proc_cpu_secs(pid)?;
    server.finish()?;
    if !done.starts_with("done ") {
        return Err(format!("unexpected server line {done:?}").into());
    }
    let cpu: f64 = field(&done, "cpu")?.parse()?;
    let csw: u64 = field(&done, "csw")?.parse()?;
    let stall_us: i64 = field(&done, "stall_us")?.parse()?;
    let busy_us: i64 = field(&done, "busy_us")?.parse()?;
    let sleeps: i64 = field(&done, "sleeps")?.parse()?;
    let stats = done.split_once("stats=").map_or("", |(_, s)| s).to_string();
    let gb = total as f64 / 1e9;
    // What neither the server nor this process (the clients) used: other jobs, and kernel
    // work not charged to any task (softirqs on idle CPUs, kernel threads). Tick-sampled.
    let other_secs = (busy1 - busy0) - (me1 - me0) - (proc1 - proc0);
    let other = (other_secs / (cpus as f64 * wall.as_secs_f64())).max(0.0);
    let run = Run {
        gbps: gb / wall.as_secs_f64(),
        cpu_per_gb: cpu / gb,
        csw_per_gib: csw as f64 / (total as f64 / (1u64 << 30) as f64),
        stall: (stall_us >= 0).then(|| Duration::from_micros(stall_us as u64)),
        busy: (busy_us >= 0).then(|| Duration::from_micros(busy_us as u64)),
        sleeps: (sleeps >= 0).then_some(sleeps as u64),
        gap,
        cli_cpu_per_gb: clients.cpu.as_secs_f64() / gb,
        bytes_per_read: total as f64 / clients.reads.max(1) as f64,
        cli_wakes_per_gib: clients.sleeps as f64 / (total as f64 / (1u64 << 30) as f64),
        other,
        stats,
    };
    eprintln!(
        "  {:<26} {:>6.2} GB/s ({:.2} s)  CPU {:.3} s (getrusage) / {:.2} s (/proc ticks)  \
         resident {:>5.1}%  stall {}  busy {}  sleeps {}  gap {:.1} ms  clients {:.3} CPU-s/GB \
         {:.0} KiB/read {:.0} wakes/GiB  other {:.0}%",
        kind.label(),
        run.gbps,
        wall.as_secs_f64(),
        cpu,
        proc1 - proc0,
        resident * 100.0,
        run.stall.map_or("-".to_string(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1e3
        )),
        run.busy.map_or("-".to_string(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1e3
        )),
        run.sleeps.map_or("-".to_string(), |n| n.to_string()),
        gap.as_secs_f64() * 1e3,
        run.cli_cpu_per_gb,
        run.bytes_per_read / 1024.0,
        run.cli_wakes_per_gib,
        other * 100.0,
    );
    Ok(run)
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn bench_main(args: Args) -> BoxResult<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "sendfile: {} MiB file, clients {:?}, {} rounds, {}; load average {}",
        args.mib,
        args.clients.0,
        args.rounds,
        if args.cold {
            "page cache DROPPED before each server's run (--cold)"
        } else {
            "page cache warm"
        },
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let file = TestFile::create(&args.dir, args.mib)?;
    println!("file: {} ({} bytes)", file.path.display(), file.len);
    let t_start = Instant::now();
    for &n in &args.clients.0 {
        let k = args.servers.0.len();
        let mut runs: Vec<Vec<Run>> = (0..k).map(|_| Vec::new()).collect();
        let mut repeated = vec![0usize; k];
        for round in 0..args.rounds {
            eprintln!("{n} clients, round {}/{}:", round + 1, args.rounds);
            // The order rotates each round, so no server is always first or last.
            for j in 0..k {
                let i = (j + round) % k;
                let kind = args.servers.0[i];
                let mut tries = 0;
                let r = loop {
                    let r = run_one(kind, &file, n, args.cold).map_err(|e| {
                        format!(
                            "{} with {n} clients, round {}: {e}",
                            kind.label(),
                            round + 1
                        )
                    })?;
                    if r.other * 100.0 <= args.max_other || tries >= args.retries {
                        break r;
                    }
                    tries += 1;
                    eprintln!(
                        "  (disturbed: other {:.0}% > {}%: run again in 5 s, {tries}/{})",
                        r.other * 100.0,
                        args.max_other,
                        args.retries
                    );
                    thread::sleep(Duration::from_secs(5));
                };
                repeated[i] += tries;
                runs[i].push(r);
            }
        }
        print_table(&args, n, file.len, &runs, &repeated);
    }
    println!("total {:.1} s", t_start.elapsed().as_secs_f64());
    Ok(())
}

fn print_table(args: &Args, n: usize, len: u64, runs: &[Vec<Run>], repeated: &[usize]) {
    let find = |k: Kind| {
        args.servers
            .0
            .iter()
            .position(|s| s.kind == k && s.threads == 1)
    };
    let blk = find(Kind::Blocking);
    let go = find(Kind::GoReal).or(find(Kind::Go));
    // Per round, this server's figure over the baseline's; the median of those.
    let ratio = |base: Option<usize>, i: usize, f: fn(&Run) -> f64| -> String {
        let Some(b) = base else {
            return "-".into();
        };
        let per_round: Vec<f64> = runs[i]
            .iter()
            .zip(&runs[b])
            .map(|(r, b)| f(r) / f(b))
            .collect();
        format!("{:.2}", median(&per_round))
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\n{n} client(s) x {} MiB ({} MiB per run), {}, medians of {} rounds",
        len >> 20,
        (n as u64 * len) >> 20,
        if args.cold {
            "cold page cache"
        } else {
            "page cache warm"
        },
        args.rounds
    );
    println!(
        "{:<44} {:>6} {:>11} {:>5} {:>5} | {:>8} {:>5} {:>5} | {:>8} {:>5} {:>8} {:>9} | {:>9} | {:>8} {:>7} {:>6} {:>8} | {:>6}",
        "server",
        "GB/s",
        "range",
        "x blk",
        "x go",
        "CPU-s/GB",
        "x blk",
        "x go",
        "cli CPU",
        "x go",
        "KiB/read",
        "wakes/GiB",
        "ctxsw/GiB",
        "stall ms",
        "busy ms",
        "sleeps",
        "gap ms",
        "other"
    );
    for (i, server) in args.servers.0.iter().enumerate() {
        let r = &runs[i];
        let g: Vec<f64> = r.iter().map(|x| x.gbps).collect();
        let (lo, hi) = g
            .iter()
            .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let med = |f: fn(&Run) -> f64| median(&r.iter().map(f).collect::<Vec<_>>());
        let med_of = |v: Vec<f64>, prec: usize| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.prec$}", median(&v))
            }
        };
        let stall = med_of(r.iter().filter_map(|x| x.stall.map(ms)).collect(), 1);
        let busy = med_of(r.iter().filter_map(|x| x.busy.map(ms)).collect(), 1);
        let sleeps = med_of(
            r.iter()
                .filter_map(|x| x.sleeps.map(|n| n as f64))
                .collect(),
            0,
        );
        println!(
            "{:<44} {:>6.2} {:>11} {:>5} {:>5} | {:>8.3} {:>5} {:>5} | {:>8.3} {:>5} {:>8.0} {:>9.0} | {:>9.0} | {:>8} {:>7} {:>6} {:>8.1} | {:>6}",
            server.label(),
            median(&g),
            format!("{lo:.2}-{hi:.2}"),
            ratio(blk, i, |x| x.gbps),
            ratio(go, i, |x| x.gbps),
            med(|x| x.cpu_per_gb),
            ratio(blk, i, |x| x.cpu_per_gb),
            ratio(go, i, |x| x.cpu_per_gb),
            med(|x| x.cli_cpu_per_gb),
            ratio(go, i, |x| x.cli_cpu_per_gb),
            med(|x| x.bytes_per_read) / 1024.0,
            med(|x| x.cli_wakes_per_gib),
            med(|x| x.csw_per_gib),
            stall,
            busy,
            sleeps,
            median(&r.iter().map(|x| ms(x.gap)).collect::<Vec<_>>()),
            format!(
                "{:.0}%{}",
                100.0 * r.iter().map(|x| x.other).fold(0f64, f64::max),
                if repeated[i] > 0 {
                    format!(" ({} rerun)", repeated[i])
                } else {
                    String::new()
                }
            ),
        );
    }
    println!(
        "x blk / x go: this server's figure over the blocking sendfile loop's / Go's (real Go \
         if run, else the Go-style server) in the same round (median of rounds). CPU-s/GB: \
         the server process only (getrusage, all threads incl. io-wq workers).\n\
         cli CPU: the receiving side, the client threads' CPU per GB (getrusage(RUSAGE_THREAD) \
         in each, summed); KiB/read: bytes per client read that returned data (256 KiB buffer); \
         wakes/GiB: client threads' sleeps (voluntary context switches) per GiB.\n\
         stall: longest iteration of a single-thread server's loop, wall time, preemption \
         included (blocking: longest sendfile call, a whole transfer on a blocking socket); \
         busy: most CPU one iteration used; sleeps: times the loop thread blocked inside an \
         iteration (voluntary context switches, e.g. waiting for the disk), per run; \
         gap: longest wait of any client between two reads.\n\
         other: the most CPU any round saw used outside the server and the clients (other jobs, \
         softirqs on idle CPUs), as a share of all CPUs; runs above --max-other were run again \
         (up to --retries times, counted as \"rerun\"): a high value is a run kept after its last retry."
    );
    for (i, server) in args.servers.0.iter().enumerate() {
        if let Some(r) = runs[i].last()
            && !r.stats.is_empty()
        {
            println!("{} (last round): {}", server.label(), r.stats);
        }
    }
}

fn main() {
    let args = flags::bench_args();
    let result = match args.split_first() {
        Some((serve, rest)) if serve == "--serve" => {
            serve_main(flags::from_args_or_exit("sendfile --serve", rest))
                .map_err(|e| format!("serve: {e}").into())
        }
        _ => {
            let args: Args = flags::from_args_or_exit("sendfile", &args);
            check(&args).and_then(|()| bench_main(args))
        }
    };
    if let Err(e) = result {
        eprintln!("sendfile: error: {e}");
        std::process::exit(1);
    }
}

/// What the flags alone cannot say: that `--go-server` names a file (`go-real` runs it).
fn check(args: &Args) -> BoxResult<()> {
    if let Some(p) = &args.go_server {
        if !p.is_file() {
            return Err(format!("--go-server {}: no such file", p.display()).into());
        }
        let _ = GO_SERVER.set(p.clone());
    }
    Ok(())
}
