//! Criterion benchmarks of ringsplice transfers beside a plain read/write copy.
//!
//! ```text
//! cargo bench --bench transfer                    # everything, a few minutes
//! cargo bench --bench transfer -- 'socket->socket/1MiB'   # one group
//! ```
//!
//! Kinds: socket→socket, file→socket, pipe→socket, file→file. Sizes: 4 KiB, 16 KiB (64 at
//! once: the default copy threshold), 64 KiB, 1 MiB, 64 MiB (one transfer only). Concurrency: 1 and 64 transfers at once, and 1000 for 4 KiB
//! with socket destinations. Each is run by:
//! - `io_uring`: an engine on the io_uring backend (`Strategy::Auto`); skipped, with a note
//!   on stderr, where io_uring is unavailable;
//! - `fallback`: an engine on the fallback backend (epoll + inline syscalls);
//! - `read-write`: the baseline, one thread running every transfer with non-blocking
//!   `read`/`write` (`pread`/`pwrite` for files) through a 64 KiB buffer and `poll(2)`.
//!
//! The fds persist across iterations (transfers of `Length::Exact`, files at offset 0). A
//! helper thread writes each iteration's bytes into the sockets or pipes the transfers read
//! and reads them out of the far ends of the destination sockets; an iteration ends when the
//! helper has read every byte, so socket buffers are not counted as delivered. Throughput
//! is bytes per iteration (size × transfers).
//!
//! Samples are few and short so the whole run takes minutes; compare within one run.
//!
//! Environment:
//! - `RINGSPLICE_BENCH_CPU=1`: each iteration is timed by the CPU time of the thread that
//!   moves the bytes (`CLOCK_THREAD_CPUTIME_ID`: the engine's thread, or the read/write loop's)
//!   instead of wall time; the helper threads and the scheduler's noise are left out. io-wq
//!   workers are left out too, so use it for inline work (sockets, the copy route), not for
//!   chains.
//! - `RINGSPLICE_COPY_THRESHOLD=N`: the engines' `Builder::copy_threshold` (0 splices
//!   everything), to compare the copy route with splicing at the same sizes.

use std::cell::RefCell;
use std::fs::File;
use std::hint::black_box;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use ringsplice::{Backend, BackendPreference, Completion, Endpoint, Engine, Length, Transfer};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The baseline's buffer, and the helper's.
const BUF: usize = 64 << 10;
/// An iteration that takes longer than this is a hang: the bench panics with a message.
const HANG: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    SocketToSocket,
    FileToSocket,
    PipeToSocket,
    FileToFile,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SocketToSocket => "socket->socket",
            Kind::FileToSocket => "file->socket",
            Kind::PipeToSocket => "pipe->socket",
            Kind::FileToFile => "file->file",
        }
    }
    fn file_source(self) -> bool {
        matches!(self, Kind::FileToSocket | Kind::FileToFile)
    }
}

fn size_name(size: u64) -> String {
    if size >= MIB {
        format!("{}MiB", size / MIB)
    } else {
        format!("{}KiB", size / KIB)
    }
}

/// `read(2)`/`pread(2)` on an fd we hold.
fn read_fd(fd: &OwnedFd, off: Option<u64>, buf: &mut [u8]) -> io::Result<usize> {
    let (fd, p, n) = (fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
    let r = match off {
        // SAFETY: `fd` is open (borrowed for the call) and `buf` is valid for `n` bytes.
        Some(o) => unsafe { libc::pread(fd, p, n, o as libc::off_t) },
        // SAFETY: as above.
        None => unsafe { libc::read(fd, p, n) },
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `write(2)`/`pwrite(2)` on an fd we hold.
fn write_fd(fd: &OwnedFd, off: Option<u64>, buf: &[u8]) -> io::Result<usize> {
    let (fd, p, n) = (fd.as_raw_fd(), buf.as_ptr().cast(), buf.len());
    let r = match off {
        // SAFETY: `fd` is open (borrowed for the call) and `buf` is valid for `n` bytes.
        Some(o) => unsafe { libc::pwrite(fd, p, n, o as libc::off_t) },
        // SAFETY: as above.
        None => unsafe { libc::write(fd, p, n) },
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd we hold; no pointers.
    let r = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `poll(2)` on a set of fds; EINTR counts as "something may be ready".
fn poll_fds(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// A temporary file, removed on drop.
struct TempFile {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl TempFile {
    fn new(tag: &str, len: u64) -> io::Result<TempFile> {
        let path =
            std::env::temp_dir().join(format!("ringsplice-bench-{}-{tag}", std::process::id()));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let fd = Arc::new(OwnedFd::from(f));
        let chunk: Vec<u8> = (0..BUF).map(|i| (i * 31 % 251) as u8).collect();
        let mut at = 0;
        while at < len {
            let n = (len - at).min(BUF as u64) as usize;
            let k = write_fd(&fd, Some(at), &chunk[..n])?;
            at += k as u64;
        }
        Ok(TempFile { path, fd })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Feeds sources and drains destinations for the transfers, one iteration at a time.
struct Helper {
    go: Option<Sender<u64>>,
    done: Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
}

impl Helper {
    /// `feeds`: fds to write each iteration's bytes into; `sinks`: fds to read them from.
    fn spawn(feeds: Vec<OwnedFd>, sinks: Vec<OwnedFd>) -> Helper {
        let (go_tx, go_rx) = channel::<u64>();
        let (done_tx, done_rx) = channel();
        let thread = thread::spawn(move || {
            let data = vec![0x5au8; BUF];
            let mut buf = vec![0u8; BUF];
            while let Ok(size) = go_rx.recv() {
                let r = pump(&feeds, &sinks, size, &data, &mut buf);
                if done_tx.send(r).is_err() {
                    return;
                }
            }
        });
        Helper {
            go: Some(go_tx),
            done: done_rx,
            thread: Some(thread),
        }
    }

    fn start(&self, size: u64) {
        if let Some(go) = &self.go {
            go.send(size).expect("helper thread gone");
        }
    }

    fn finish(&self) {
        match self.done.recv_timeout(HANG) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("helper: {e}"),
            Err(e) => panic!("helper did not finish within {HANG:?}: {e}"),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.go = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `size` bytes into every feed and reads `size` bytes from every sink.
fn pump(
    feeds: &[OwnedFd],
    sinks: &[OwnedFd],
    size: u64,
    data: &[u8],
    buf: &mut [u8],
) -> Result<(), String> {
    let mut to_write: Vec<u64> = vec![size; feeds.len()];
    let mut to_read: Vec<u64> = vec![size; sinks.len()];
    let started = Instant::now();
    let mut fds = Vec::new();
    loop {
        fds.clear();
        for (fd, left) in feeds.iter().zip(to_write.iter_mut()) {
            while *left > 0 {
                let n = (*left).min(data.len() as u64) as usize;
                match write_fd(fd, None, &data[..n]) {
                    Ok(k) => *left -= k as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        fds.push(libc::pollfd {
                            fd: fd.as_raw_fd(),
                            events: libc::POLLOUT,
                            revents: 0,
                        });
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("feed: {e}")),
                }
            }
        }
        for (fd, left) in sinks.iter().zip(to_read.iter_mut()) {
            while *left > 0 {
                let n = (*left).min(buf.len() as u64) as usize;
                match read_fd(fd, None, &mut buf[..n]) {
                    Ok(0) => return Err("sink: unexpected end of file".into()),
                    Ok(k) => *left -= k as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        fds.push(libc::pollfd {
                            fd: fd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("sink: {e}")),
                }
            }
        }
        if fds.is_empty() {
            return Ok(());
        }
        if started.elapsed() > HANG {
            return Err(format!("no end after {HANG:?}"));
        }
        poll_fds(&mut fds, 1000).map_err(|e| e.to_string())?;
    }
}

/// The fds of `n` transfers of one kind, kept across iterations.
struct Fixture {
    kind: Kind,
    srcs: Vec<Arc<OwnedFd>>,
    dsts: Vec<Arc<OwnedFd>>,
    /// The endpoints of each transfer, handed back by its completion and submitted again
    /// at the next iteration, as an application relaying message after message would:
    /// they carry what the engine learnt about their fds.
    endpoints: RefCell<Vec<Option<(Endpoint, Endpoint)>>>,
    helper: Option<Helper>,
    _files: Vec<TempFile>,
}

/// A connected loopback pair, both ends non-blocking: (connected end, accepted end).
fn tcp_pair(l: &TcpListener) -> io::Result<(OwnedFd, OwnedFd)> {
    let a = TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((a.into(), b.into()))
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = io::pipe()?;
    let (r, w): (OwnedFd, OwnedFd) = (r.into(), w.into());
    set_nonblocking(&r)?;
    set_nonblocking(&w)?;
    Ok((r, w))
}

impl Fixture {
    fn new(kind: Kind, n: usize, max_size: u64) -> io::Result<Fixture> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let (mut srcs, mut dsts, mut feeds, mut sinks, mut files) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if kind.file_source() {
            // One file read at offset 0 by every transfer.
            let f = TempFile::new(
                &format!("{}-src-{n}", kind.name().replace('>', "")),
                max_size,
            )?;
            srcs = vec![Arc::clone(&f.fd); n];
            files.push(f);
        }
        for i in 0..n {
            match kind {
                Kind::SocketToSocket => {
                    let (feed, src) = tcp_pair(&l)?;
                    feeds.push(feed);
                    srcs.push(Arc::new(src));
                }
                Kind::PipeToSocket => {
                    let (r, w) = pipe_pair()?;
                    feeds.push(w);
                    srcs.push(Arc::new(r));
                }
                Kind::FileToSocket | Kind::FileToFile => {}
            }
            if kind == Kind::FileToFile {
                let f = TempFile::new(&format!("dst-{n}-{i}"), 0)?;
                dsts.push(Arc::clone(&f.fd));
                files.push(f);
            } else {
                let (dst, sink) = tcp_pair(&l)?;
                dsts.push(Arc::new(dst));
                sinks.push(sink);
            }
        }
        let helper = (!feeds.is_empty() || !sinks.is_empty()).then(|| Helper::spawn(feeds, sinks));
        let endpoints = srcs
            .iter()
            .zip(&dsts)
            .map(|(s, d)| {
                Some((
                    Endpoint::shared(Arc::clone(s)),
                    Endpoint::shared(Arc::clone(d)),
                ))
            })
            .collect();
        Ok(Fixture {
            kind,
            srcs,
            dsts,
            endpoints: RefCell::new(endpoints),
            helper,
            _files: files,
        })
    }

    /// One iteration: every transfer moves `size` bytes; returns how long it took.
    fn iteration(&self, size: u64, mover: &mut Mover) -> Duration {
        let t0 = Instant::now();
        let cpu0 = cpu_mode().then(thread_cpu);
        if let Some(h) = &self.helper {
            h.start(size);
        }
        match mover {
            Mover::Engine(engine, done) => self.run_engine(engine, done, size),
            Mover::ReadWrite(buf) => self.run_copy(buf, size),
        }
        let cpu = cpu0.map(|c0| thread_cpu().saturating_sub(c0));
        if let Some(h) = &self.helper {
            h.finish();
        }
        cpu.unwrap_or_else(|| t0.elapsed())
    }

    fn run_engine(&self, engine: &mut Engine, done: &mut Vec<Completion>, size: u64) {
        let mut endpoints = self.endpoints.borrow_mut();
        for (i, slot) in endpoints.iter_mut().enumerate() {
            let (src, dst) = slot.take().expect("endpoints came back");
            let mut t = Transfer::new(src, dst)
                .length(Length::Exact(size))
                .tag(i as u64);
            if self.kind.file_source() {
                t = t.source_offset(0);
            }
            if self.kind == Kind::FileToFile {
                t = t.destination_offset(0);
            }
            engine.submit(t).expect("engine full");
        }
        let started = Instant::now();
        while engine.in_flight() > 0 {
            engine
                .wait(done, Some(Duration::from_secs(1)))
                .expect("engine wait");
            for c in done.drain(..) {
                assert!(
                    c.is_ok() && c.delivered == size,
                    "{}: {:?} after {} of {size} bytes",
                    self.kind.name(),
                    c.result,
                    c.delivered
                );
                endpoints[c.tag as usize] = Some((c.source, c.destination));
            }
            assert!(started.elapsed() < HANG, "engine: no end after {HANG:?}");
        }
    }

    /// The baseline: every transfer on this thread, non-blocking read/write and poll(2).
    fn run_copy(&self, bufs: &mut Vec<CopyState>, size: u64) {
        let n = self.srcs.len();
        bufs.resize_with(n, CopyState::default);
        for b in bufs.iter_mut() {
            b.reset(size);
        }
        let src_off = self.kind.file_source();
        let dst_off = self.kind == Kind::FileToFile;
        let started = Instant::now();
        let mut fds = Vec::new();
        loop {
            fds.clear();
            for ((src, dst), st) in self.srcs.iter().zip(&self.dsts).zip(bufs.iter_mut()) {
                if let Some(p) = st.step(src, dst, src_off, dst_off) {
                    fds.push(p);
                }
            }
            if bufs.iter().all(CopyState::done) {
                return;
            }
            assert!(
                started.elapsed() < HANG,
                "read-write: no end after {HANG:?}"
            );
            if !fds.is_empty() {
                poll_fds(&mut fds, 1000).expect("poll");
            }
        }
    }
}

/// One baseline transfer: its buffer and progress.
struct CopyState {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    read: u64,
    written: u64,
    size: u64,
}

impl Default for CopyState {
    fn default() -> CopyState {
        CopyState {
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            read: 0,
            written: 0,
            size: 0,
        }
    }
}

impl CopyState {
    fn reset(&mut self, size: u64) {
        (self.start, self.end, self.read, self.written, self.size) = (0, 0, 0, 0, size);
    }

    fn done(&self) -> bool {
        self.written == self.size
    }

    /// Moves as much as it can; returns what to wait for when it has to.
    fn step(
        &mut self,
        src: &OwnedFd,
        dst: &OwnedFd,
        src_off: bool,
        dst_off: bool,
    ) -> Option<libc::pollfd> {
        let wait = |fd: &OwnedFd, events| {
            Some(libc::pollfd {
                fd: fd.as_raw_fd(),
                events,
                revents: 0,
            })
        };
        while !self.done() {
            if self.start == self.end {
                let n = (self.size - self.read).min(BUF as u64) as usize;
                let off = src_off.then_some(self.read);
                match read_fd(src, off, &mut self.buf[..n]) {
                    Ok(0) => panic!("read-write: source ended early"),
                    Ok(k) => {
                        (self.start, self.end) = (0, k);
                        self.read += k as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return wait(src, libc::POLLIN);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("read-write: read: {e}"),
                }
            }
            let off = dst_off.then_some(self.written);
            match write_fd(dst, off, &self.buf[self.start..self.end]) {
                Ok(k) => {
                    self.start += k;
                    self.written += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return wait(dst, libc::POLLOUT);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("read-write: write: {e}"),
            }
        }
        None
    }
}

/// What moves the bytes.
enum Mover {
    /// Boxed: an `Engine` is a few hundred bytes, the baseline's state a `Vec`.
    Engine(Box<Engine>, Vec<Completion>),
    ReadWrite(Vec<CopyState>),
}

/// `RINGSPLICE_BENCH_CPU=1`: time iterations by the moving thread's CPU.
fn cpu_mode() -> bool {
    std::env::var("RINGSPLICE_BENCH_CPU").is_ok_and(|v| v == "1")
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`: the scheduler's own count,
/// in nanoseconds, not ticks).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn movers() -> Vec<(&'static str, Mover)> {
    let mut v = Vec::new();
    for (name, pref) in [
        ("io_uring", BackendPreference::IoUring),
        ("fallback", BackendPreference::Fallback),
    ] {
        let mut b = Engine::builder().backend(pref).honor_env(false);
        if let Some(t) = std::env::var("RINGSPLICE_COPY_THRESHOLD")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            b = b.copy_threshold(t);
        }
        match b.build() {
            Ok(e) => {
                debug_assert!(
                    pref != BackendPreference::Fallback || e.backend() == Backend::Fallback
                );
                v.push((name, Mover::Engine(Box::new(e), Vec::new())));
            }
            Err(e) => eprintln!("skipping {name}: {e}"),
        }
    }
    v.push(("read-write", Mover::ReadWrite(Vec::new())));
    v
}

/// (size, concurrency) pairs run for a kind.
fn cases(kind: Kind) -> Vec<(u64, usize)> {
    let mut v = vec![
        (4 * KIB, 1),
        (4 * KIB, 64),
        (16 * KIB, 64),
        (64 * KIB, 1),
        (64 * KIB, 64),
        (MIB, 1),
        (MIB, 64),
        (64 * MIB, 1),
    ];
    if matches!(kind, Kind::SocketToSocket | Kind::FileToSocket) {
        v.insert(2, (4 * KIB, 1000));
    }
    v
}

fn transfers(c: &mut Criterion) {
    let mut movers = movers();
    for kind in [
        Kind::SocketToSocket,
        Kind::FileToSocket,
        Kind::PipeToSocket,
        Kind::FileToFile,
    ] {
        let cases = cases(kind);
        let mut concurrency: Vec<usize> = cases.iter().map(|c| c.1).collect();
        concurrency.dedup();
        concurrency.sort_unstable();
        concurrency.dedup();
        for n in concurrency {
            let sizes: Vec<u64> = cases.iter().filter(|c| c.1 == n).map(|c| c.0).collect();
            let max = sizes.iter().copied().max().unwrap_or(0);
            let fx = match Fixture::new(kind, n, max) {
                Ok(fx) => fx,
                Err(e) => {
                    eprintln!("skipping {} x{n}: fixture: {e}", kind.name());
                    continue;
                }
            };
            for size in sizes {
                let mut g = c.benchmark_group(format!("{}/{}", kind.name(), size_name(size)));
                g.throughput(Throughput::Bytes(size * n as u64))
                    .sample_size(10)
                    .warm_up_time(Duration::from_millis(300))
                    .measurement_time(Duration::from_secs(1));
                // Long iterations: fixed iteration counts per sample, a little more time.
                if size * n as u64 >= 4 * MIB {
                    g.sampling_mode(SamplingMode::Flat)
                        .measurement_time(Duration::from_secs(2));
                }
                for (name, mover) in movers.iter_mut() {
                    g.bench_function(BenchmarkId::new(*name, n), |b| {
                        b.iter_custom(|iters| {
                            (0..iters)
                                .map(|_| black_box(fx.iteration(size, mover)))
                                .sum()
                        })
                    });
                }
                g.finish();
            }
        }
    }
}

criterion_group!(benches, transfers);
criterion_main!(benches);
