//! Engine: submit transfers, flush them to the kernel, poll or wait for completions — and
//! the one turn loop, which connects the core (what each transfer does next) to a driver
//! (readiness and completions from io_uring or epoll).

use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use crate::backend::{self, Backend};
use crate::completion::Completion;
use crate::config::Config;
use crate::core::fan_step::FanPark;
use crate::core::id::Id;
use crate::core::machine::{Action, Route};
use crate::core::plan::Mode;
use crate::core::slots::{self, Running};
use crate::core::step::Park;
use crate::core::{Core, round};
use crate::driver::{Driver, Event, RoundFds, Sleep};
use crate::error::{Error, Rejected, Result};
use crate::fan_out::{FanOut, RejectedFanOut};
use crate::op::{Dir, OpKind, cqe_res};
use crate::stats::Stats;
use crate::transfer::{Transfer, TransferId};

/// How many transfers' [`fairness_bytes`](crate::Builder::fairness_bytes) one pass over the
/// ready queue moves at most.
const PASS_SHARES: u64 = 4;

/// Whether a turn may block, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Never: make what progress is possible now.
    No,
    /// Until a completion is ready, or this long (`None`: no limit).
    For(Option<Duration>),
}

/// A zero-copy transfer engine: one io_uring (or, where that is unavailable, one epoll
/// instance) driven by the caller's thread.
///
/// The caller owns the loop: [`submit`](Engine::submit) transfers, then
/// [`poll`](Engine::poll) or [`wait`](Engine::wait) for their completions. The engine's
/// fd ([`AsRawFd`]) becomes readable when there is progress to collect, so it can sit in a
/// mio/epoll loop beside the caller's sockets.
///
/// `Engine` is `Send` but not `Sync`: move it to the thread that drives it. With io_uring,
/// drive it from one thread for its whole life: io_uring runs a request's task work in
/// the thread that submitted it, and cancels the requests of a thread that exits.
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
    core: Core,
    driver: Driver,
    backend: Backend,
    reason: String,
    /// Events reaped and not yet applied (kept to reuse its allocation).
    events: Vec<Event>,
    /// Fill/drain pairs per chain round, and operations per round at most.
    round_limits: (usize, usize),
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.backend)
            .field("reason", &self.reason)
            .field("in_flight", &self.core.slots.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for checked settings (see `Builder::build`).
    pub(crate) fn with_config(cfg: Config) -> Result<Engine> {
        let (driver, backend, reason) = backend::select(&cfg)?;
        let cap = driver.round_cap();
        let depth = cfg.chain_depth.min(cap / 2).max(1);
        Ok(Engine {
            core: Core::new(cfg),
            driver,
            backend,
            reason,
            events: Vec::new(),
            round_limits: (depth, cap),
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
        self.core.submit(t)
    }

    /// Queues a fan-out: one source to 2 to 64 destinations (see [`FanOut`]). Like
    /// [`submit`](Engine::submit), no syscall; its one [`Completion`] has a
    /// [`Branch`](crate::Branch) per destination. It takes 1 + the number of destinations
    /// of [`Builder::max_transfers`](crate::Builder::max_transfers)' slots, counts once in
    /// [`in_flight`](Engine::in_flight), and can be cancelled with
    /// [`cancel`](Engine::cancel). Its steps run on the engine's thread on both backends
    /// (readiness, then non-blocking `splice(2)` and `tee(2)`).
    ///
    /// # Errors
    /// Inside [`RejectedFanOut`], with the fan-out handed back: [`Error::InvalidInput`] for
    /// fewer than 2 or more than 64 destinations, [`Error::Full`] when its slots do not fit.
    pub fn submit_fan_out(&mut self, f: FanOut) -> Result<TransferId, RejectedFanOut> {
        self.core.submit_fan(f)
    }

    /// Starts queued transfers and submits everything queued to the kernel in one
    /// `io_uring_enter` (io_uring) or arms their readiness (fallback). Never blocks.
    ///
    /// # Errors
    /// [`Error::Io`] if `io_uring_enter` or `epoll_wait` fails for a reason other than a
    /// full queue or an interruption.
    pub fn flush(&mut self) -> Result<()> {
        self.turn(Block::No)?;
        if !self.core.slots.done.is_empty() {
            // Completions wait for the caller's next `poll`: its loop must wake for them.
            self.driver.wake();
        }
        Ok(())
    }

    /// Makes all progress possible without blocking and appends finished transfers to
    /// `out`. Returns how many were appended.
    ///
    /// # Errors
    /// As [`flush`](Engine::flush).
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> Result<usize> {
        self.turn(Block::No)?;
        Ok(self.collect(out))
    }

    /// Like [`poll`](Engine::poll), but blocks until at least one completion is ready or
    /// `timeout` passes (`None`: no limit). Returns at once when nothing is in flight.
    ///
    /// # Errors
    /// As [`flush`](Engine::flush).
    pub fn wait(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> Result<usize> {
        if self.core.slots.done.is_empty() {
            self.turn(Block::For(timeout))?;
        }
        Ok(self.collect(out))
    }

    fn collect(&mut self, out: &mut Vec<Completion>) -> usize {
        let done = &mut self.core.slots.done;
        let n = done.len();
        self.core.stats.completed += n as u64;
        out.extend(done.drain(..));
        n
    }

    /// Cancels a transfer. Its completion (with [`Error::Cancelled`] — or the error that had
    /// already stopped the transfer, if one had — the bytes delivered and the bytes taken
    /// but undelivered) arrives from a later `poll`/`wait`, once the kernel has given back
    /// every operation of it; a transfer cancelled here never completes `Ok`. Returns
    /// `false` if the id is not in flight (already completed, or never issued by this
    /// engine).
    pub fn cancel(&mut self, id: TransferId) -> bool {
        let Some(id) = self.core.slots.find(id) else {
            return false;
        };
        self.cancel_id(id);
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
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        while self.in_flight() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
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
        let slots = &self.core.slots;
        slots.find(id).map(|id| slots.delivered(id))
    }

    /// Transfers submitted whose completion has not yet been returned.
    pub fn in_flight(&self) -> usize {
        self.core.slots.len() + self.core.slots.done.len()
    }

    /// Counters since the engine was built.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }
}

/// The turn loop.
impl Engine {
    /// One turn: start new transfers, expire timers, apply what the driver reports, run
    /// inline work, submit. With [`Block::For`], waits until at least one completion is
    /// ready (or the timeout passes).
    fn turn(&mut self, block: Block) -> Result<()> {
        let deadline = match block {
            Block::For(Some(t)) => Some(Instant::now() + t),
            _ => None,
        };
        self.driver.begin_turn();
        loop {
            self.start_queued();
            self.expire(Instant::now());
            for _ in 0..3 {
                self.reap()?;
                self.run_ready();
                self.driver.submit(&mut self.core.stats)?;
                if !self.driver.pending() {
                    break;
                }
            }
            let core = &self.core;
            if !core.slots.done.is_empty() || block == Block::No || core.slots.is_empty() {
                break;
            }
            if !core.ready.is_empty() || !core.slots.queued.is_empty() {
                continue;
            }
            if !self.driver.waiting() {
                break; // nothing in the kernel and nothing runnable: nothing can wake us
            }
            let sleep = Sleep::until(deadline, core.slots.next_timer());
            if sleep == Sleep::Never {
                break;
            }
            let mut events = std::mem::take(&mut self.events);
            self.driver
                .block(sleep.timeout(), &mut events, &mut self.core.stats)?;
            self.apply(&mut events);
            self.events = events;
        }
        let next = self.core.slots.next_timer();
        self.driver.arm_timer(next, &mut self.core.stats)?;
        let runnable = !self.core.ready.is_empty() || !self.core.slots.queued.is_empty();
        self.driver.end_turn(runnable);
        Ok(())
    }

    fn start_queued(&mut self) {
        let chains = self.driver.has_rounds();
        for id in std::mem::take(&mut self.core.slots.queued) {
            self.core.start(id, chains);
            self.advance(id);
        }
    }

    fn expire(&mut self, now: Instant) {
        for id in self.core.slots.expired(now) {
            if !self.core.end_linger(id) {
                self.cancel_id(id);
            }
        }
    }

    /// Collects and applies what the driver has ready.
    fn reap(&mut self) -> Result<()> {
        let mut events = std::mem::take(&mut self.events);
        let r = self.driver.reap(&mut events, &mut self.core.stats);
        self.apply(&mut events);
        self.events = events;
        r.map(drop)
    }

    fn apply(&mut self, events: &mut Vec<Event>) {
        for e in events.drain(..) {
            match e {
                Event::Ready { id, res, .. } if self.core.is_fan_part(id) => {
                    self.core.fan_ready(id, Some(res));
                }
                Event::Round { id, ops } if self.core.is_fan_part(id) => {
                    for &(_, res) in &ops {
                        let res = match res {
                            r if r == -libc::ECANCELED => None,
                            r if r >= 0 => Some(Ok(r as u32)),
                            r => Some(Err(-r)),
                        };
                        self.core.fan_ready(id, res);
                    }
                    self.driver.recycle(ops);
                }
                Event::Ready { id, dir, res } => {
                    if let Some(r) = self.core.slots.running(id) {
                        r.with_driver = false;
                        r.m.on_ready(dir, res);
                        self.advance(id);
                    }
                }
                Event::Round { id, ops } => {
                    self.apply_round(id, &ops);
                    self.driver.recycle(ops);
                }
            }
        }
    }

    /// Applies a finished round's results to the state machine, in submission order.
    fn apply_round(&mut self, id: Id, ops: &[(OpKind, i32)]) {
        let Some(r) = self.core.slots.running(id) else {
            debug_assert!(false, "a round of no running transfer");
            return;
        };
        r.with_driver = false;
        let mut fresh = false;
        for &(kind, res) in ops {
            if res == -libc::ECANCELED {
                continue;
            }
            let mask = if res >= 0 { Ok(res as u32) } else { Err(-res) };
            fresh = false;
            match kind {
                OpKind::PollIn | OpKind::PollOut => {
                    let dir = if kind == OpKind::PollIn {
                        Dir::Read
                    } else {
                        Dir::Write
                    };
                    fresh = r.m.on_ready(dir, mask);
                }
                OpKind::Fill => r.m.on_fill(cqe_res(res)),
                OpKind::Drain => r.m.on_drain(cqe_res(res)),
                OpKind::Direct => r.m.on_direct(cqe_res(res)),
            }
        }
        r.just_ready = fresh;
        if r.m.take_copy_fallback() {
            self.core.stats.copy_fallbacks += 1;
        }
        r.release_pipe_if_idle(&mut self.core.pipes);
        self.core.hand_out_pipes();
        self.core.slots.note_progress(id);
        self.advance(id);
    }

    /// Runs every transfer on the ready queue once (transfers that yield go to the back,
    /// for the next pass), until [`PASS_SHARES`] transfers' shares of bytes have moved in
    /// all: one `poll` then returns after tens of milliseconds at most, not after every
    /// ready transfer has moved its share (32 file transfers × 4 MiB kept the caller's loop
    /// for ~100 ms). What is left stays at the front of the queue, and the engine's fd
    /// stays readable.
    fn run_ready(&mut self) {
        let n = self.core.ready.len();
        let pass_budget = (self.core.cfg.fairness_bytes as u64).saturating_mul(PASS_SHARES);
        let mut moved = 0u64;
        for _ in 0..n {
            if moved >= pass_budget {
                break;
            }
            let Some(id) = self.core.ready.pop_front() else {
                break;
            };
            if let Some((park, m, arms)) = self.core.run_fan(id) {
                moved += m;
                self.park_fan(id, park, arms);
                continue;
            }
            let Some(r) = self.core.slots.running(id) else {
                continue;
            };
            if r.with_driver {
                continue; // the driver's event will move it on
            }
            if !runs_inline(r) {
                self.advance(id);
                continue;
            }
            let Some((park, m)) = self.core.run_inline(id) else {
                continue;
            };
            moved += m;
            self.core.slots.note_progress(id);
            self.park(id, park);
        }
    }

    /// Acts on why inline work on a transfer stopped.
    fn park(&mut self, id: Id, park: Park) {
        match park {
            Park::Readable => self.arm(id, Dir::Read),
            Park::Writable => self.arm(id, Dir::Write),
            Park::NeedPipe => self.pipe_wanted(),
            Park::Offload => self.offload(id),
            Park::Yield => self.core.ready.push_back(id),
            Park::Finish => self.finish(id),
        }
    }

    /// Acts on why a fan-out's run stopped: arms its waits, or stops or finishes it.
    fn park_fan(&mut self, id: Id, park: FanPark, arms: Vec<crate::core::Wait>) {
        for (part, fd, dir) in arms {
            self.driver.arm(part, fd, dir, &mut self.core.stats);
        }
        match park {
            FanPark::Wait => {}
            FanPark::Yield => self.core.queue_fan(id),
            FanPark::Stop => self.stop_fan(id),
            FanPark::Finish => self.finish(id),
        }
    }

    /// Takes back a stopped fan-out's waits; it finishes once the driver holds none.
    fn stop_fan(&mut self, id: Id) {
        for (part, fds) in self.core.fan_waits(id) {
            if self.driver.cancel(part, fds, &mut self.core.stats) {
                self.core.fan_wait_dropped(part);
            }
        }
        if self.core.fan_waits(id).is_empty() {
            self.finish(id);
        }
    }

    /// Moves a transfer with nothing with the driver on: wait, run, chain, or finish.
    fn advance(&mut self, id: Id) {
        let Some(r) = self.core.slots.running(id) else {
            return;
        };
        if r.with_driver {
            return;
        }
        let action = r.m.next();
        if action == Action::Finish {
            self.finish(id);
        } else if !runs_inline(r) {
            self.advance_chain(id, action);
        } else {
            match action {
                Action::WaitReadable if r.plan.src_pollable() => self.arm(id, Dir::Read),
                Action::WaitWritable if r.plan.dst_pollable() => self.arm(id, Dir::Write),
                _ if r.waiting_pipe => {} // a returned pipe wakes it
                _ => self.core.ready.push_back(id),
            }
        }
    }

    /// Plans and pushes a chained transfer's next round (core/round.rs).
    fn advance_chain(&mut self, id: Id, action: Action) {
        let Some(r) = self.core.slots.running(id) else {
            return;
        };
        let fresh = std::mem::take(&mut r.just_ready);
        if round::needs_pipe(action, &r.m) {
            let wait = round::waits_for_source(action, &r.plan, fresh);
            if !r.lease(id, &mut self.core.pipes, !wait) {
                if wait {
                    self.arm(id, Dir::Read);
                } else {
                    self.pipe_wanted();
                }
                return;
            }
            if r.m.next() == Action::Finish {
                self.finish(id); // pipe creation failed: the machine holds the error
                return;
            }
        }
        let ops = round::ops(action, &r.m, &r.plan, fresh, self.round_limits);
        self.push_round(id, &ops);
    }

    fn arm(&mut self, id: Id, dir: Dir) {
        let Some(r) = self.core.slots.running(id) else {
            return;
        };
        r.with_driver = true;
        let fd = match dir {
            Dir::Read => r.plan.src,
            Dir::Write => r.plan.dst,
        };
        self.driver.arm(id, fd, dir, &mut self.core.stats);
    }

    fn push_round(&mut self, id: Id, ops: &[(OpKind, usize)]) {
        let Some(r) = self.core.slots.running(id) else {
            return;
        };
        r.with_driver = true;
        let fds = RoundFds {
            src: r.plan.src,
            dst: r.plan.dst,
            pipe: r.pipe.as_ref().map(|p| (p.read_fd(), p.write_fd())),
            src_off: r.m.src_off(),
            dst_off: r.m.dst_off(),
        };
        self.driver.push_round(id, ops, fds, &mut self.core.stats);
    }

    /// One `SPLICE(file → pipe)` on an io-wq worker, for a chunk not in the page cache; the
    /// drain that follows runs inline again.
    fn offload(&mut self, id: Id) {
        let Some(r) = self.core.slots.running(id) else {
            return;
        };
        let cap = r.pipe.as_ref().map_or(0, |p| p.capacity());
        let len = r.m.next_len().min(cap);
        debug_assert!(len > 0, "offload without a leased pipe");
        self.push_round(id, &[(OpKind::Fill, len)]);
    }

    /// A transfer queued for the pipe budget: free a pipe that a chain round holds only
    /// while it waits for its source, if there is one.
    fn pipe_wanted(&mut self) {
        if self.core.chains == 0 {
            return; // inline transfers hold pipes only while the pipes hold bytes
        }
        let Core { slots, stats, .. } = &mut self.core;
        let holds_idle = |id| {
            slots.peek(id).is_some_and(|r| {
                r.plan.mode == Mode::Chain && r.pipe.is_some() && r.m.staged() == 0
            })
        };
        self.driver.reclaim_idle_pipe(holds_idle, stats);
    }

    /// Removes a finished transfer (nothing of it with the driver) and queues its
    /// completion.
    fn finish(&mut self, id: Id) {
        if self.core.slots.fan(id).is_some() {
            for (part, fds) in self.core.fan_parts(id) {
                self.driver.forget(part, fds);
            }
            self.core.finish_fan(id);
            return;
        }
        let Some(slot) = self.core.slots.get(id) else {
            return;
        };
        let fds = slots::fds_of(slot);
        self.driver.forget(id, fds);
        self.core.finish(id);
    }

    /// Cancels a transfer: at once if nothing of it is with the driver, else once the
    /// driver has given it back.
    fn cancel_id(&mut self, id: Id) {
        if let Some(f) = self.core.slots.fan(id) {
            f.cancel();
            if f.started {
                self.core.queue_fan(id); // its next run stops it
            } else {
                self.finish(id);
            }
            return;
        }
        let Some(slot) = self.core.slots.get(id) else {
            return;
        };
        let fds = slots::fds_of(slot);
        let Some(r) = slot.running() else {
            self.core.finish(id); // not started: completes Cancelled
            return;
        };
        r.m.cancel();
        if !r.with_driver || self.driver.cancel(id, fds, &mut self.core.stats) {
            if let Some(r) = self.core.slots.running(id) {
                r.with_driver = false;
            }
            self.finish(id);
        }
    }
}

/// Whether a transfer's steps run on the engine's thread (else: io_uring chains).
fn runs_inline(r: &Running) -> bool {
    r.plan.mode == Mode::Inline || matches!(r.m.route(), Route::Copy | Route::Records)
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
        self.driver.event_fd()
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
        for id in self.driver.shutdown(&mut self.core.stats) {
            std::mem::forget(self.core.slots.remove(id));
        }
        self.core.slots.done.clear();
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
