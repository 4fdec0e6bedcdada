//! Engine: submit transfers, flush them to the kernel, poll or wait for completions.

use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use crate::backend::fallback::Epoll;
use crate::backend::uring::{self, Uring};
use crate::builder::{BackendPreference, Builder};
use crate::completion::Completion;
use crate::error::{Error, Rejected, Result};
use crate::inflight::InFlight;
use crate::probe::{self, Backend};
use crate::stats::Stats;
use crate::transfer::{Transfer, TransferId};

enum Driver {
    Uring(Box<Uring>),
    Fallback(Epoll),
}

/// A zero-copy transfer engine: one io_uring (or, where that is unavailable, one epoll
/// instance) driven by the caller's thread.
///
/// The caller owns the loop: [`submit`](Engine::submit) transfers, then
/// [`poll`](Engine::poll) or [`wait`](Engine::wait) for their completions. The engine's
/// fd ([`AsRawFd`]) becomes readable when there is progress to collect, so it can sit in a
/// mio/epoll loop beside the caller's sockets.
///
/// `Engine` is `Send` but not `Sync`: move it to the thread that drives it.
///
/// ```no_run
/// use ringsplice::{Engine, Transfer};
/// use std::time::Duration;
///
/// let mut engine = Engine::new()?;
/// let file = std::fs::File::open("/etc/hostname")?;
/// let sock = std::net::TcpStream::connect("127.0.0.1:8080")?;
/// engine.submit(Transfer::new(file, sock).tag(1))?;
/// let mut done = Vec::new();
/// while engine.in_flight() > 0 {
///     engine.wait(&mut done, Some(Duration::from_secs(1)))?;
/// }
/// assert!(done[0].is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Engine {
    fl: InFlight,
    driver: Driver,
    backend: Backend,
    reason: String,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend)
            .field("reason", &self.reason)
            .field("in_flight", &self.fl.slots.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with the default settings ([`Builder`]).
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> Result<Engine> {
        Builder::default().build()
    }

    /// Settings for a new engine.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn from_builder(cfg: Builder) -> Result<Engine> {
        let mut pref = cfg.backend;
        let mut why_env = String::new();
        // The operator's variable refines `Auto` only: a backend the code names wins.
        if cfg.env_override && cfg.backend == BackendPreference::Auto {
            match probe::env_preference() {
                Ok(Some(p)) => {
                    pref = p;
                    why_env = format!(" ({} set)", probe::BACKEND_ENV);
                }
                Ok(None) => {}
                Err(msg) => return Err(Error::InvalidInput(msg)),
            }
        }
        let (driver, backend, reason) = match pref {
            BackendPreference::Fallback => (
                Driver::Fallback(Epoll::new()?),
                Backend::Fallback,
                format!("fallback requested{why_env}"),
            ),
            BackendPreference::IoUring => match uring::setup(&cfg) {
                Ok(u) => (
                    Driver::Uring(Box::new(u)),
                    Backend::IoUring,
                    format!("io_uring requested{why_env}"),
                ),
                Err((_, why)) => return Err(Error::Unsupported(why)),
            },
            BackendPreference::Auto => match uring::setup(&cfg) {
                Ok(u) => (
                    Driver::Uring(Box::new(u)),
                    Backend::IoUring,
                    "io_uring with IORING_OP_SPLICE available".to_string(),
                ),
                Err((_, why)) => (
                    Driver::Fallback(Epoll::new()?),
                    Backend::Fallback,
                    format!("fell back: {why}"),
                ),
            },
        };
        Ok(Engine {
            fl: InFlight::new(cfg),
            driver,
            backend,
            reason,
            _not_sync: PhantomData,
        })
    }

    /// Which backend runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why this backend was chosen, for logs (e.g. "fell back: io_uring_setup refused:
    /// Operation not permitted").
    pub fn backend_reason(&self) -> &str {
        &self.reason
    }

    /// Queues a transfer. No syscall: the transfer starts at the next
    /// [`flush`](Engine::flush), [`poll`](Engine::poll) or [`wait`](Engine::wait).
    /// Problems with the fds themselves (closed, a directory, the same pipe on both sides)
    /// come back as the completion's error. Being syscall-free, `submit` does not make the
    /// engine's fd readable: a caller's loop calls `flush` (or `poll`) after submitting.
    ///
    /// # Errors
    /// [`Error::Full`] inside [`Rejected`] (with the transfer handed back) when the
    /// configured maximum of transfers is in flight; nothing changes then.
    pub fn submit(&mut self, t: Transfer) -> Result<TransferId, Rejected> {
        self.fl.submit(t)
    }

    /// Starts queued transfers and submits everything queued to the kernel in one
    /// `io_uring_enter` (io_uring) or arms their readiness (fallback). Never blocks.
    ///
    /// # Errors
    /// [`Error::Io`] if `io_uring_enter` or `epoll_wait` fails for a reason other than a
    /// full queue or an interruption.
    pub fn flush(&mut self) -> Result<()> {
        self.turn(None)?;
        if !self.fl.done.is_empty() {
            // Completions wait for the caller's next `poll`: its loop must wake for them.
            match &mut self.driver {
                Driver::Uring(u) => u.wake(),
                Driver::Fallback(e) => e.wake(),
            }
        }
        Ok(())
    }

    /// Makes all progress possible without blocking and appends finished transfers to
    /// `out`. Returns how many were appended.
    ///
    /// # Errors
    /// As [`flush`](Engine::flush).
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> Result<usize> {
        self.turn(None)?;
        Ok(self.collect(out))
    }

    /// Like [`poll`](Engine::poll), but blocks until at least one completion is ready or
    /// `timeout` passes (`None`: no limit). Returns at once when nothing is in flight.
    ///
    /// # Errors
    /// As [`flush`](Engine::flush).
    pub fn wait(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> Result<usize> {
        if self.fl.done.is_empty() {
            self.turn(Some(timeout))?;
        }
        Ok(self.collect(out))
    }

    fn turn(&mut self, block: Option<Option<Duration>>) -> Result<()> {
        match &mut self.driver {
            Driver::Uring(u) => u.turn(&mut self.fl, block),
            Driver::Fallback(e) => e.turn(&mut self.fl, block),
        }
    }

    fn collect(&mut self, out: &mut Vec<Completion>) -> usize {
        let n = self.fl.done.len();
        self.fl.stats.completed += n as u64;
        out.extend(self.fl.done.drain(..));
        n
    }

    /// Cancels a transfer. Its completion (with [`Error::Cancelled`] — or the error that had
    /// already stopped the transfer, if one had — the bytes delivered and the bytes taken
    /// but undelivered) arrives from a later `poll`/`wait`, once the kernel has given back
    /// every operation of it; a transfer cancelled here never completes `Ok`. Returns `false` if the id is not in
    /// flight (already completed, or never issued by this engine).
    pub fn cancel(&mut self, id: TransferId) -> bool {
        let Some(k) = self.fl.key_of(id) else {
            return false;
        };
        match &mut self.driver {
            Driver::Uring(u) => u.cancel(&mut self.fl, k),
            Driver::Fallback(e) => e.cancel(&mut self.fl, k),
        }
        true
    }

    /// Runs every transfer in flight to its completion: [`wait`](Engine::wait)s until
    /// [`in_flight`](Engine::in_flight) is 0, appending each completion to `out`, or until
    /// `timeout` has passed. Returns how many completions were appended.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # fn f(engine: &mut ringsplice::Engine) -> ringsplice::Result<()> {
    /// let mut done = Vec::new();
    /// engine.wait_all(&mut done, Duration::from_secs(30))?;
    /// assert!(done.iter().all(|c| c.is_ok()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::TimedOut`] when `timeout` passes with transfers still in flight: they go on
    /// (cancel them or call again), and the completions collected so far are in `out`.
    /// Otherwise as [`flush`](Engine::flush).
    pub fn wait_all(&mut self, out: &mut Vec<Completion>, timeout: Duration) -> Result<usize> {
        let deadline = std::time::Instant::now() + timeout;
        let mut n = 0;
        while self.in_flight() > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::TimedOut);
            }
            n += self.wait(out, Some(left))?;
        }
        Ok(n)
    }

    /// Bytes the transfer has delivered to its destination so far; `None` once its
    /// completion has been queued (it then carries the final count). [`Stats::bytes`]
    /// counts completed transfers only; this is the progress of one still running.
    pub fn delivered(&self, id: TransferId) -> Option<u64> {
        self.fl.key_of(id).map(|k| self.fl.delivered(k))
    }

    /// Transfers submitted whose completion has not yet been returned.
    pub fn in_flight(&self) -> usize {
        self.fl.slots.len() + self.fl.done.len()
    }

    /// Counters since the engine was built.
    pub fn stats(&self) -> Stats {
        self.fl.stats()
    }
}

impl AsRawFd for Engine {
    /// The eventfd registered with the ring (io_uring) or the epoll fd (fallback): readable
    /// when `poll` has progress to make, and quiet when it has none.
    ///
    /// Register it level- or edge-triggered (mio registers edge-triggered): every `poll`
    /// that leaves work behind signals it afresh. With the io_uring backend the kernel may
    /// run io_uring task work in the caller's thread, which makes a blocking
    /// `epoll_wait`/`poll` in that thread return `EINTR` with no signal delivered: retry it.
    fn as_raw_fd(&self) -> RawFd {
        match &self.driver {
            Driver::Uring(u) => u.event_fd(),
            Driver::Fallback(e) => e.event_fd(),
        }
    }
}

impl AsFd for Engine {
    #[allow(unsafe_code)]
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd belongs to the driver, which lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl Drop for Engine {
    /// Cancels every transfer and waits (at most a few seconds) for the kernel to give back
    /// their operations before their fds and pipes are closed. Operations the kernel still
    /// holds after that keep their fds open (leaked) rather than risk the kernel using a
    /// reused fd number.
    fn drop(&mut self) {
        let stuck = match &mut self.driver {
            Driver::Uring(u) => u.shutdown(&mut self.fl),
            Driver::Fallback(_) => Vec::new(),
        };
        for key in stuck {
            let slot = self.fl.slots.remove(key);
            std::mem::forget(slot);
        }
        self.fl.done.clear();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn engine_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<super::Engine>();
        assert_send::<crate::Completion>();
        assert_send::<crate::Transfer>();
    }
}
