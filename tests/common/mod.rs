//! Shared helpers for ringsplice's integration tests.
//!
//! - [`serial`]: one test at a time per test binary, since fd and thread counts are
//!   process-wide;
//! - [`LeakCheck`]: no fd, pipe or thread left behind;
//! - [`for_each_config`]: the backend × strategy matrix, naming the configuration in every
//!   panic and skipping io_uring loudly where it is unavailable;
//! - endpoints of every kind ([`Kind`], [`stream_pair`], [`TempFile`]), helper threads that
//!   are always joined ([`spawn_writer`], [`spawn_reader`], [`join_within`]);
//! - a xorshift PRNG ([`Rng`]) and a checksum ([`checksum`]);
//! - the few libc calls the tests need, declared by hand ([`sys`]): the crate's tests may
//!   not depend on `libc`.
//!
//! Every wait here has a deadline ([`HANG_GUARD`]) and panics with a clear message when it
//! passes: the deadlines are hang guards, never timing assertions.

#![allow(dead_code)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringsplice::{BackendPreference, Builder, Completion, Engine, Error, Strategy, Transfer};

/// How long any single wait may take before the test declares a hang. Generous: it only
/// turns a hang into a clear failure.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// How long a leak check waits for io-wq workers (and the harness's own threads) to go.
pub const LEAK_SETTLE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Hand-declared libc (x86_64 / aarch64 Linux, glibc or musl).

/// The libc functions and constants the tests need, declared by hand.
pub mod sys {
    use std::ffi::{c_int, c_ulong, c_void};

    pub const SOL_SOCKET: c_int = 1;
    pub const SO_SNDBUF: c_int = 7;
    pub const SO_RCVBUF: c_int = 8;
    pub const SO_LINGER: c_int = 13;
    pub const F_GETFD: c_int = 1;
    pub const F_GETFL: c_int = 3;
    pub const F_SETFL: c_int = 4;
    pub const O_NONBLOCK: c_int = 0o4000;
    pub const POLLIN: i16 = 0x1;
    pub const SIGPIPE: c_int = 13;
    pub const SIG_DFL: usize = 0;

    pub const EBADF: i32 = 9;
    pub const EPIPE: i32 = 32;
    pub const ECONNRESET: i32 = 104;

    /// `struct pollfd`.
    #[repr(C)]
    #[derive(Debug)]
    pub struct PollFd {
        pub fd: c_int,
        pub events: i16,
        pub revents: i16,
    }

    /// `struct linger`.
    #[repr(C)]
    #[derive(Debug)]
    pub struct Linger {
        pub l_onoff: c_int,
        pub l_linger: c_int,
    }

    pub const MSG_PEEK: c_int = 0x2;
    pub const MSG_DONTWAIT: c_int = 0x40;

    unsafe extern "C" {
        pub fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
        pub fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_void,
            len: u32,
        ) -> c_int;
        pub fn poll(fds: *mut PollFd, nfds: c_ulong, timeout_ms: c_int) -> c_int;
        pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
        pub fn signal(sig: c_int, handler: usize) -> usize;
    }
}

fn setsockopt_raw<T>(fd: RawFd, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of exactly the length passed.
    let r = unsafe {
        sys::setsockopt(
            fd,
            sys::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_LINGER {on, 0}`: closing the socket then sends a RST instead of a FIN.
pub fn set_linger_zero(s: &impl AsRawFd) {
    let l = sys::Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt_raw(s.as_raw_fd(), sys::SO_LINGER, &l).expect("setsockopt(SO_LINGER)");
}

/// A small `SO_SNDBUF` (the kernel doubles it and applies its minimum).
pub fn set_sndbuf(s: &impl AsRawFd, bytes: i32) {
    setsockopt_raw(s.as_raw_fd(), sys::SO_SNDBUF, &bytes).expect("setsockopt(SO_SNDBUF)");
}

/// A small `SO_RCVBUF` (the kernel doubles it and applies its minimum).
pub fn set_rcvbuf(s: &impl AsRawFd, bytes: i32) {
    setsockopt_raw(s.as_raw_fd(), sys::SO_RCVBUF, &bytes).expect("setsockopt(SO_RCVBUF)");
}

/// Bytes waiting in a socket's receive queue, up to `max` (`recv(MSG_PEEK | MSG_DONTWAIT)`:
/// nothing is consumed and nothing blocks).
pub fn queued(s: &impl AsRawFd, max: usize) -> usize {
    let mut buf = vec![0u8; max];
    // SAFETY: `buf` is valid for `max` bytes of writes.
    let n = unsafe {
        sys::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            max,
            sys::MSG_PEEK | sys::MSG_DONTWAIT,
        )
    };
    n.max(0) as usize
}

/// `poll(fd, POLLIN, timeout)`: whether the fd became readable in time.
pub fn poll_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut p = sys::PollFd {
        fd,
        events: sys::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: one valid, live pollfd.
        let n = unsafe { sys::poll(&mut p, 1, ms) };
        if n >= 0 {
            return n > 0 && p.revents & sys::POLLIN != 0;
        }
        let e = io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            io::ErrorKind::Interrupted,
            "poll({fd}) failed: {e}"
        );
    }
}

/// Whether `fd` is open in this process (`fcntl(F_GETFD)`).
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no argument and touches no memory.
    unsafe { sys::fcntl(fd, sys::F_GETFD) != -1 }
}

/// Sets or clears `O_NONBLOCK` (the engine makes the pollable fds it is given non-blocking;
/// tests reading them back want them blocking).
pub fn set_nonblocking(fd: &impl AsRawFd, on: bool) {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL takes no argument.
    let flags = unsafe { sys::fcntl(fd, sys::F_GETFL) };
    assert!(
        flags >= 0,
        "fcntl(F_GETFL, {fd}): {}",
        io::Error::last_os_error()
    );
    let new = if on {
        flags | sys::O_NONBLOCK
    } else {
        flags & !sys::O_NONBLOCK
    };
    // SAFETY: F_SETFL takes one int argument.
    let r = unsafe { sys::fcntl(fd, sys::F_SETFL, new) };
    assert!(
        r >= 0,
        "fcntl(F_SETFL, {fd}): {}",
        io::Error::last_os_error()
    );
}

/// Restores `SIGPIPE`'s default disposition (terminate), as a C host would have it. Rust
/// programs ignore it before `main`, which would hide a SIGPIPE the engine lets through.
pub fn sigpipe_default() {
    // SAFETY: installs the default disposition; no handler code is involved.
    unsafe { sys::signal(sys::SIGPIPE, sys::SIG_DFL) };
}

/// A raw fd number that is not open, far above anything the tests allocate (the kernel
/// hands out the lowest free number), so nothing can reuse it during a test.
pub fn closed_fd() -> RawFd {
    let fd = 15_000;
    assert!(!fd_is_open(fd), "fd {fd} is unexpectedly open");
    fd
}

// ---------------------------------------------------------------------------------------
// Serialization.

static LOCK: Mutex<()> = Mutex::new(());
/// Threads libtest runs tests on (registered by [`serial`]): not leaks.
static HARNESS_THREADS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

thread_local! {
    static HOLDS_SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Held for the whole test: tests of one binary run one at a time.
#[must_use = "hold the guard for the whole test"]
pub struct Serial {
    _guard: MutexGuard<'static, ()>,
}

impl Drop for Serial {
    fn drop(&mut self) {
        HOLDS_SERIAL.with(|h| h.set(false));
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Serial")
    }
}

/// Takes the binary-wide test lock (recovering it from a test that panicked). Call it first
/// in every test: `let _g = common::serial();`.
pub fn serial() -> Serial {
    HARNESS_THREADS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(current_tid());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    HOLDS_SERIAL.with(|h| h.set(true));
    Serial { _guard: guard }
}

fn assert_serial() {
    assert!(
        HOLDS_SERIAL.with(|h| h.get()),
        "take `let _g = common::serial();` at the start of the test"
    );
}

fn current_tid() -> u32 {
    // "/proc/thread-self" links to "<pid>/task/<tid>".
    let link = std::fs::read_link("/proc/thread-self").expect("readlink /proc/thread-self");
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/thread-self link {link:?}"))
}

/// The name of the running test (libtest names its threads after the tests).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

// ---------------------------------------------------------------------------------------
// Leak checks.

/// Open fds of this process: number → what it refers to (`/proc/self/fd` link target).
pub fn fd_snapshot() -> BTreeMap<RawFd, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
        let entry = entry.expect("/proc/self/fd entry");
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile (the directory's own fd, after the listing)
        };
        let target = target.to_string_lossy().into_owned();
        // The fd of the directory listing itself.
        if target.starts_with("/proc/") && target.ends_with("/fd") {
            continue;
        }
        out.insert(fd, target);
    }
    out
}

/// Threads of this process: tid → name (`comm`; io-wq workers are `iou-wrk-<tid>`).
pub fn task_snapshot() -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let entry = entry.expect("/proc/self/task entry");
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "<gone>".into());
        out.insert(tid, comm);
    }
    out
}

/// The number of threads of this process (`/proc/self/task`).
pub fn thread_count() -> usize {
    task_snapshot().len()
}

/// Snapshot of the process's fds and threads; [`check`](LeakCheck::check) asserts they
/// come back to it (waiting up to [`LEAK_SETTLE`] for io-wq workers to exit).
#[derive(Debug)]
pub struct LeakCheck {
    what: String,
    fds: BTreeMap<RawFd, String>,
    tasks: BTreeSet<u32>,
    /// Whether an fd of the baseline that was closed counts as a failure.
    pub report_closed: bool,
}

impl LeakCheck {
    /// Takes the baseline. `what` names the scope in failure messages.
    pub fn new(what: impl Into<String>) -> LeakCheck {
        LeakCheck {
            what: what.into(),
            fds: fd_snapshot(),
            tasks: task_snapshot().into_keys().collect(),
            report_closed: true,
        }
    }

    fn differences(&self) -> Option<String> {
        let now = fd_snapshot();
        let mut msg = String::new();
        for (fd, target) in &now {
            match self.fds.get(fd) {
                Some(t) if t == target => {}
                _ => msg += &format!("\n  leaked fd {fd} -> {target}"),
            }
        }
        for (fd, target) in &self.fds {
            if self.report_closed && !now.contains_key(fd) {
                msg += &format!("\n  fd {fd} -> {target} was closed by someone else");
            }
        }
        let harness = HARNESS_THREADS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (tid, comm) in task_snapshot() {
            if !self.tasks.contains(&tid) && !harness.contains(&tid) {
                msg += &format!("\n  leaked thread {tid} ({comm})");
            }
        }
        (!msg.is_empty()).then_some(msg)
    }

    /// Asserts no fd or thread is left behind, allowing [`LEAK_SETTLE`] for threads to exit.
    pub fn check(self) {
        let deadline = Instant::now() + LEAK_SETTLE;
        loop {
            let Some(diff) = self.differences() else {
                return;
            };
            if Instant::now() >= deadline {
                panic!("{}: left behind after {:?}:{diff}", self.what, LEAK_SETTLE);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---------------------------------------------------------------------------------------
// io-wq workers: what a dropped engine leaves behind, per kernel.

/// io_uring's io-wq workers and the thread they belong to.
pub mod iowq {
    use super::*;

    /// The io-wq workers of the thread `tid` (their `comm` is `iou-wrk-<tid>`).
    pub fn workers_of(tid: u32) -> usize {
        let name = format!("iou-wrk-{tid}");
        task_snapshot().values().filter(|c| **c == name).count()
    }

    /// The io-wq workers of the calling thread.
    pub fn mine() -> usize {
        workers_of(current_tid())
    }

    /// The calling thread's id.
    pub fn tid() -> u32 {
        current_tid()
    }

    /// Idle workers a thread keeps after its last ring is gone on kernels without
    /// exit-on-idle: io-wq never lets the last worker of an accounting class (bounded,
    /// unbounded) time out, so one of each stays until the thread exits.
    pub const KEPT_PER_THREAD: usize = 2;

    /// Whether this kernel's io-wq lets idle workers exit once their task has no ring left
    /// ("io-wq: add exit-on-idle state", 2026): probed as the kernel function that patch
    /// adds, `io_wq_set_exit_on_idle`, in `/proc/kallsyms` (names are listed even where
    /// addresses are hidden). Without it, [`KEPT_PER_THREAD`] workers stay with the thread.
    pub fn exit_on_idle() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| {
            let syms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
            let on = syms
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some("io_wq_set_exit_on_idle"));
            if syms.is_empty() {
                say("note: /proc/kallsyms unreadable: io-wq exit-on-idle assumed absent");
            }
            on
        })
    }

    /// What a dropped engine leaves on its (still running) thread, stated for every
    /// kernel: with exit-on-idle, no worker once they are idle; without it, at most
    /// [`KEPT_PER_THREAD`] once the others have timed out (io-wq's idle timeout is 5 s).
    /// Either way they end when the thread exits, which [`run_configs`]' leak check
    /// asserts.
    pub fn assert_released_after_drop(what: &str) {
        let limit = if exit_on_idle() { 0 } else { KEPT_PER_THREAD };
        wait_until(
            &format!(
                "{what}: at most {limit} io-wq workers left after the drop (exit-on-idle: {})",
                exit_on_idle()
            ),
            || mine() <= limit,
        );
    }
}

// ---------------------------------------------------------------------------------------
// The backend × strategy matrix.

/// One engine configuration of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub backend: BackendPreference,
    pub strategy: Strategy,
}

/// Both backends.
pub const BACKENDS: [BackendPreference; 2] =
    [BackendPreference::IoUring, BackendPreference::Fallback];
/// Every strategy.
pub const STRATEGIES: [Strategy; 3] = [Strategy::Chain, Strategy::Inline, Strategy::Auto];

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = match self.backend {
            BackendPreference::IoUring => "io_uring",
            BackendPreference::Fallback => "fallback",
            BackendPreference::Auto => "auto",
        };
        write!(f, "{b}/{:?}", self.strategy)
    }
}

impl Config {
    /// A builder for this backend, deaf to `RINGSPLICE_BACKEND`.
    pub fn builder(&self) -> Builder {
        Engine::builder().backend(self.backend).honor_env(false)
    }

    /// An engine for this configuration (panics, naming it, if it cannot be built).
    pub fn engine(&self) -> Engine {
        self.engine_from(self.builder())
    }

    /// Builds `b` (made from [`Config::builder`]) and checks the backend is the one asked.
    pub fn engine_from(&self, b: Builder) -> Engine {
        let e = b
            .build()
            .unwrap_or_else(|e| panic!("[{self}] building the engine failed: {e}"));
        let want = match self.backend {
            BackendPreference::IoUring => ringsplice::Backend::IoUring,
            _ => ringsplice::Backend::Fallback,
        };
        assert_eq!(
            e.backend(),
            want,
            "[{self}] wrong backend: {}",
            e.backend_reason()
        );
        e
    }

    /// A transfer with this configuration's strategy.
    pub fn transfer(
        &self,
        src: impl Into<ringsplice::Endpoint>,
        dst: impl Into<ringsplice::Endpoint>,
    ) -> Transfer {
        Transfer::new(src, dst).strategy(self.strategy)
    }
}

/// Whether an io_uring engine can be built here: `Err(why)` when the kernel or sandbox
/// refuses (`Error::Unsupported`). Any other error is a bug and panics.
pub fn io_uring_status() -> Result<(), String> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS
        .get_or_init(|| {
            match Engine::builder()
                .backend(BackendPreference::IoUring)
                .honor_env(false)
                .build()
            {
                Ok(e) => {
                    drop(e);
                    Ok(())
                }
                Err(Error::Unsupported(why)) => Err(why),
                Err(e) => panic!("building an io_uring engine failed unexpectedly: {e}"),
            }
        })
        .clone()
}

/// Writes straight to fd 2: libtest captures `eprintln!` of passing tests, and a skip must
/// be seen.
pub fn say(msg: &str) {
    let _ = writeln!(io::stderr(), "{msg}");
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Runs `f` under each configuration, each inside its own leak check. A configuration that
/// fails does not stop the others: at the end, one panic lists every failing configuration
/// with its message. io_uring configurations are skipped with a `skipped:` line on stderr
/// where io_uring is unavailable.
pub fn run_configs(configs: &[Config], mut f: impl FnMut(Config) + Send) {
    assert_serial();
    let test = test_name();
    let mut failures = Vec::new();
    for &cfg in configs {
        if cfg.backend == BackendPreference::IoUring
            && let Err(why) = io_uring_status()
        {
            say(&format!(
                "skipped: {test} [{cfg}]: io_uring backend unavailable: {why}"
            ));
            continue;
        }
        let mut leaks = LeakCheck::new(format!("{test} [{cfg}]"));
        // After a failure, helper threads of the failed configuration may still close
        // their fds: only new fds and threads count as leaks then.
        leaks.report_closed = failures.is_empty();
        // Each configuration runs on a thread of its own, which has exited when the leak
        // check runs: io-wq workers belong to the thread that submitted their work, and on
        // kernels without io-wq's exit-on-idle the last idle worker of each class lives as
        // long as that thread (see `iowq`).
        match on_own_thread(&test, || f(cfg)) {
            Ok(()) => {
                if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| leaks.check())) {
                    failures.push(format!("[{cfg}] {}", panic_text(&*p)));
                }
            }
            Err(p) => {
                let msg = panic_text(&*p);
                if msg.contains(&format!("[{cfg}]")) {
                    failures.push(msg);
                } else {
                    failures.push(format!("[{cfg}] {msg}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} configurations failed:\n{}",
            failures.len(),
            configs.len(),
            failures.join("\n")
        );
    }
}

/// Runs `f` on a new thread named `name` (so [`test_name`] still works inside it) and
/// waits for it to exit; a panic inside comes back as `Err`.
pub fn on_own_thread<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> std::thread::Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(s, f)
            .expect("spawn a test thread")
            .join()
    })
}

/// Every backend × every strategy.
pub fn all_configs() -> Vec<Config> {
    configs(&STRATEGIES)
}

/// Every backend × the given strategies.
pub fn configs(strategies: &[Strategy]) -> Vec<Config> {
    let mut v = Vec::new();
    for backend in BACKENDS {
        for &strategy in strategies {
            v.push(Config { backend, strategy });
        }
    }
    v
}

/// Runs `f` under both backends × all three strategies.
pub fn for_each_config(f: impl FnMut(Config) + Send) {
    run_configs(&all_configs(), f);
}

// ---------------------------------------------------------------------------------------
// Waiting for completions.

/// Waits until `n` completions have arrived; panics after [`HANG_GUARD`].
pub fn wait_n(e: &mut Engine, n: usize, what: &str) -> Vec<Completion> {
    let deadline = Instant::now() + HANG_GUARD;
    let mut out = Vec::new();
    while out.len() < n {
        if e.in_flight() == 0 {
            panic!(
                "{what}: {} of {n} completions arrived and nothing is in flight: {out:#?}",
                out.len()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: hang guard: {} of {n} completions after {HANG_GUARD:?}; in flight {}; \
                 stats {:?}",
                out.len(),
                e.in_flight(),
                e.stats()
            );
        }
        e.wait(&mut out, Some(Duration::from_millis(250)))
            .unwrap_or_else(|err| panic!("{what}: Engine::wait failed: {err}"));
    }
    assert_eq!(
        out.len(),
        n,
        "{what}: more completions than transfers: {out:#?}"
    );
    out
}

/// Waits for one completion.
pub fn wait_one(e: &mut Engine, what: &str) -> Completion {
    wait_n(e, 1, what).pop().expect("one completion")
}

/// Drives the engine with `poll` (and short `wait`s) until `cond` holds, collecting any
/// completions that arrive meanwhile. Panics after [`HANG_GUARD`].
pub fn pump_until(e: &mut Engine, what: &str, mut cond: impl FnMut() -> bool) -> Vec<Completion> {
    let deadline = Instant::now() + HANG_GUARD;
    let mut out = Vec::new();
    loop {
        e.poll(&mut out)
            .unwrap_or_else(|err| panic!("{what}: Engine::poll failed: {err}"));
        if cond() {
            return out;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: hang guard: condition not reached after {HANG_GUARD:?}; completions \
                 {out:#?}; stats {:?}",
                e.stats()
            );
        }
        e.wait(&mut out, Some(Duration::from_millis(5)))
            .unwrap_or_else(|err| panic!("{what}: Engine::wait failed: {err}"));
    }
}

/// Waits for a condition without an engine (a helper thread's progress, say).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: hang guard: not reached after {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Asserts a completion's bookkeeping: id, tag, result `Ok`, exact delivered count, nothing
/// undelivered.
pub fn assert_ok_completion(
    c: &Completion,
    id: ringsplice::TransferId,
    tag: u64,
    delivered: u64,
    what: &str,
) {
    assert!(
        c.result.is_ok(),
        "{what}: result {:?} (completion {c:?})",
        c.result
    );
    assert!(c.is_ok(), "{what}: is_ok() disagrees with result");
    assert_eq!(c.id, id, "{what}: completion id");
    assert_eq!(c.tag, tag, "{what}: completion tag");
    assert_eq!(c.delivered, delivered, "{what}: delivered");
    assert_eq!(c.undelivered, 0, "{what}: undelivered on success");
}

// ---------------------------------------------------------------------------------------
// Helper threads.

/// Spawns a named helper thread (names show in leak reports).
pub fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("spawn helper thread")
}

/// Joins a helper thread, panicking (naming it) if it does not finish within `limit` or if
/// it panicked.
pub fn join_within<T>(h: JoinHandle<T>, limit: Duration, what: &str) -> T {
    let deadline = Instant::now() + limit;
    while !h.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what}: hang guard: helper thread still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    h.join()
        .unwrap_or_else(|p| panic!("{what}: helper thread panicked: {}", panic_text(&*p)))
}

/// Joins with [`HANG_GUARD`].
pub fn join<T>(h: JoinHandle<T>, what: &str) -> T {
    join_within(h, HANG_GUARD, what)
}

// ---------------------------------------------------------------------------------------
// Endpoints.

/// A kind of endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Tcp,
    Unix,
    Pipe,
}

/// Every kind.
pub const KINDS: [Kind; 4] = [Kind::File, Kind::Tcp, Kind::Unix, Kind::Pipe];
/// The kinds that are streams (not regular files).
pub const STREAM_KINDS: [Kind; 3] = [Kind::Tcp, Kind::Unix, Kind::Pipe];

/// A connected TCP pair on 127.0.0.1: (connecting side, accepted side).
pub fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let a = TcpStream::connect(l.local_addr().expect("local_addr")).expect("connect");
    let (b, _) = l.accept().expect("accept");
    (a, b)
}

/// A destination that holds only a few KiB on every kernel: a TCP pair on 127.0.0.1 with
/// small buffers (the receiver's set on the listener, so its window is small from the
/// handshake on), as (the engine's sending end, the peer that reads). A Unix stream socket
/// with a small `SO_SNDBUF` is no such destination before Linux 6.5: splicing into it went
/// through `unix_stream_sendpage`, which kept appending pages past the send buffer (seen on
/// Debian's 6.1: a transfer emptied its 64 KiB pipe into a Unix socket with a 4 KiB
/// `SO_SNDBUF` whose reader never read).
pub fn tcp_pair_small_buffers() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    set_rcvbuf(&l, 2048);
    let a = std::net::TcpStream::connect(l.local_addr().expect("local_addr")).expect("connect");
    set_sndbuf(&a, 4096);
    let (b, _) = l.accept().expect("accept");
    (a, b)
}

/// A TCP listener on 127.0.0.1 and `n` connected pairs made through it.
pub fn tcp_pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = l.local_addr().expect("local_addr");
    (0..n)
        .map(|_| {
            let a = TcpStream::connect(addr).expect("connect");
            let (b, _) = l.accept().expect("accept");
            (a, b)
        })
        .collect()
}

/// The test's end of a stream whose other end the engine holds.
#[derive(Debug)]
pub enum Peer {
    Tcp(TcpStream),
    Unix(UnixStream),
    PipeReader(PipeReader),
    PipeWriter(PipeWriter),
}

impl Peer {
    /// A read timeout (hang guard) for sockets; pipes have none (their helper threads are
    /// joined with a deadline instead).
    pub fn set_read_timeout(&self, d: Duration) {
        match self {
            Peer::Tcp(s) => s.set_read_timeout(Some(d)).expect("set_read_timeout"),
            Peer::Unix(s) => s.set_read_timeout(Some(d)).expect("set_read_timeout"),
            _ => {}
        }
    }
}

impl AsRawFd for Peer {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Peer::Tcp(s) => s.as_raw_fd(),
            Peer::Unix(s) => s.as_raw_fd(),
            Peer::PipeReader(p) => p.as_raw_fd(),
            Peer::PipeWriter(p) => p.as_raw_fd(),
        }
    }
}

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Peer::Tcp(s) => s.read(buf),
            Peer::Unix(s) => s.read(buf),
            Peer::PipeReader(p) => p.read(buf),
            Peer::PipeWriter(_) => Err(io::Error::other("reading a pipe's write end")),
        }
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Peer::Tcp(s) => s.write(buf),
            Peer::Unix(s) => s.write(buf),
            Peer::PipeWriter(p) => p.write(buf),
            Peer::PipeReader(_) => Err(io::Error::other("writing a pipe's read end")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connected stream of `kind` (not `File`): the engine's end as an `OwnedFd`, and the
/// test's end. `engine_reads`: the engine's end is a source (else a destination); for a
/// pipe that picks which end the engine gets.
pub fn stream_pair(kind: Kind, engine_reads: bool) -> (OwnedFd, Peer) {
    match kind {
        Kind::Tcp => {
            let (a, b) = tcp_pair();
            (b.into(), Peer::Tcp(a))
        }
        Kind::Unix => {
            let (a, b) = UnixStream::pair().expect("socketpair");
            (b.into(), Peer::Unix(a))
        }
        Kind::Pipe => {
            let (r, w) = io::pipe().expect("pipe");
            if engine_reads {
                (r.into(), Peer::PipeWriter(w))
            } else {
                (w.into(), Peer::PipeReader(r))
            }
        }
        Kind::File => panic!("stream_pair(File)"),
    }
}

/// Writes `data` to `peer` from a helper thread, then closes it (end of file). Returns the
/// bytes written (all of them, or the write error).
pub fn spawn_writer(mut peer: Peer, data: Vec<u8>) -> JoinHandle<io::Result<usize>> {
    spawn_named("rs-test-writer", move || {
        peer.write_all(&data)?;
        drop(peer);
        Ok(data.len())
    })
}

/// Reads `peer` to end of file from a helper thread (sockets get a read timeout as a hang
/// guard).
pub fn spawn_reader(mut peer: Peer) -> JoinHandle<io::Result<Vec<u8>>> {
    peer.set_read_timeout(HANG_GUARD);
    spawn_named("rs-test-reader", move || {
        let mut v = Vec::new();
        peer.read_to_end(&mut v)?;
        Ok(v)
    })
}

/// Reads an fd the engine handed back to end of file (made blocking again first; sockets
/// get a read timeout as a hang guard).
pub fn read_to_eof(kind: Kind, fd: OwnedFd) -> Vec<u8> {
    set_nonblocking(&fd, false);
    let mut v = Vec::new();
    match kind {
        Kind::Tcp => {
            let mut s = TcpStream::from(fd);
            s.set_read_timeout(Some(HANG_GUARD))
                .expect("set_read_timeout");
            s.read_to_end(&mut v)
                .expect("read the handed-back TCP socket");
        }
        Kind::Unix => {
            let mut s = UnixStream::from(fd);
            s.set_read_timeout(Some(HANG_GUARD))
                .expect("set_read_timeout");
            s.read_to_end(&mut v)
                .expect("read the handed-back Unix socket");
        }
        Kind::Pipe | Kind::File => {
            File::from(fd)
                .read_to_end(&mut v)
                .expect("read the handed-back fd");
        }
    }
    v
}

/// What feeds a source made by [`source_of`]: the temporary file it reads, or the helper
/// thread writing into its stream.
#[derive(Debug)]
pub enum Feed {
    File(TempFile),
    Stream(JoinHandle<io::Result<usize>>),
}

impl Feed {
    /// Waits for the writer, if any (panics, naming `what`, if it failed); removes the file.
    pub fn finish(self, what: &str) {
        if let Feed::Stream(w) = self {
            join(w, &format!("{what}: writer"))
                .unwrap_or_else(|e| panic!("{what}: writing the source: {e}"));
        }
    }
}

/// A transfer source of `kind` that yields `payload`: a temporary file holding it (named
/// with `tag`), or the engine's end of a stream whose other end a helper thread writes it
/// into and then closes.
pub fn source_of(kind: Kind, tag: &str, payload: &[u8]) -> (OwnedFd, Feed) {
    match kind {
        Kind::File => {
            let tf = TempFile::with_contents(tag, payload);
            (tf.open_read().into(), Feed::File(tf))
        }
        k => {
            let (fd, peer) = stream_pair(k, true);
            (fd, Feed::Stream(spawn_writer(peer, payload.to_vec())))
        }
    }
}

/// Where the bytes of a destination made by [`destination_of`] end up: its temporary file,
/// or the helper thread reading its stream to end of file.
#[derive(Debug)]
pub enum Sink {
    File(TempFile),
    Stream(JoinHandle<io::Result<Vec<u8>>>),
}

impl Sink {
    /// Everything the destination holds: the whole file, or what the reader got. Call it
    /// once the engine's end is closed (the reader waits for end of file).
    pub fn contents(self, what: &str) -> Vec<u8> {
        match self {
            Sink::File(tf) => tf.contents(),
            Sink::Stream(r) => join(r, &format!("{what}: reader"))
                .unwrap_or_else(|e| panic!("{what}: reading the destination: {e}")),
        }
    }
}

/// A transfer destination of `kind`: a temporary file holding `initial` (named with `tag`),
/// opened for writing, or the engine's end of a stream that a helper thread reads to end
/// of file.
pub fn destination_of(kind: Kind, tag: &str, initial: &[u8]) -> (OwnedFd, Sink) {
    match kind {
        Kind::File => {
            let tf = TempFile::with_contents(tag, initial);
            (tf.open_write().into(), Sink::File(tf))
        }
        k => {
            let (fd, peer) = stream_pair(k, false);
            (fd, Sink::Stream(spawn_reader(peer)))
        }
    }
}

/// A file in the temp directory, removed on drop.
#[derive(Debug)]
pub struct TempFile {
    pub path: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// A new file holding `data`.
    pub fn with_contents(tag: &str, data: &[u8]) -> TempFile {
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ringsplice-test-{}-{n}-{tag}", std::process::id()));
        std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        TempFile { path }
    }

    /// Opened read-only.
    pub fn open_read(&self) -> File {
        File::open(&self.path).unwrap_or_else(|e| panic!("open {:?}: {e}", self.path))
    }

    /// Opened write-only (no truncation, no append).
    pub fn open_write(&self) -> File {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("open {:?} for writing: {e}", self.path))
    }

    /// The whole contents.
    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_else(|e| panic!("read {:?}: {e}", self.path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Random data and checksums.

/// xorshift64* — small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value, zero included).
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// A generator seeded from a test-specific string.
    pub fn for_test(salt: &str) -> Rng {
        Rng::new(checksum(salt.as_bytes()))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Fills a buffer.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// A 64-bit checksum (xxhash-style word mixing, then an avalanche), length included.
pub fn checksum(data: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let mut h = P2 ^ (data.len() as u64).wrapping_mul(P1);
    let (words, rest) = data.as_chunks::<8>();
    for w in words {
        let w = u64::from_le_bytes(*w);
        h = (h ^ w.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1);
    }
    for &b in rest {
        h = (h ^ u64::from(b)).wrapping_mul(P1).rotate_left(11);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h
}

/// Asserts two byte strings are equal, naming their lengths, checksums and first differing
/// offset when they are not.
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes (checksum {:#018x}), want {} bytes (checksum {:#018x}); first \
         difference at offset {first}",
        got.len(),
        checksum(got),
        want.len(),
        checksum(want)
    );
}

// ---------------------------------------------------------------------------------------
// Child processes (for behaviour that must be observed with SIGPIPE at its default).

/// The environment variable that tells a test it runs as a child.
pub const CHILD_ENV: &str = "RINGSPLICE_INTEGRATION_CHILD";

/// Whether this process is a child started by [`run_child`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs the test `test` (its full path in this binary) alone in a child process with
/// [`CHILD_ENV`] set, and asserts it exits successfully (not killed by a signal). Its output
/// is shown on failure.
pub fn run_child(test: &str) {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let out_pipe = child.stdout.take().expect("stdout");
    let err_pipe = child.stderr.take().expect("stderr");
    let out = spawn_named("rs-test-child-out", move || {
        let mut s = String::new();
        let _ = { out_pipe }.read_to_string(&mut s);
        s
    });
    let err = spawn_named("rs-test-child-err", move || {
        let mut s = String::new();
        let _ = { err_pipe }.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {test}: hang guard: still running after 120 s (killed)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = join(out, "child stdout reader");
    let err = join(err, "child stderr reader");
    if let Some(sig) = status.signal() {
        panic!(
            "child {test} was killed by signal {sig}{}\n--- stdout\n{out}\n--- stderr\n{err}",
            if sig == sys::SIGPIPE {
                " (SIGPIPE)"
            } else {
                ""
            }
        );
    }
    assert!(
        status.success(),
        "child {test} failed: {status}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    assert!(
        out.contains("1 passed"),
        "child {test} did not run the test:\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}
