//! The epoll driver: readiness for the fallback backend, Go's netpoller design, for kernels
//! and sandboxes without io_uring splice. Every step then runs inline (core/step.rs).
//!
//! Every fd is registered at most once (epoll refuses a second registration of the same
//! file), with the union of what the transfers using it wait for: a proxy's socket is the
//! source of one transfer and the destination of another, and several transfers may wait
//! on one fd in the same direction (all are woken; those that find nothing wait again).
//! Registrations are one-shot and re-armed with what is still wanted; a transfer's fds are
//! deregistered when it finishes, while the engine still holds them open.
//!
//! Regular files are not pollable (`epoll_ctl` answers `EPERM`): a wait on one ends at
//! once, ready. A file source is read inline, and a cold page cache blocks the engine's
//! thread for the disk read (one chunk per step, a bounded share per pass).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::event::Event;
use super::wake::{Timer, Wake};
use crate::core::id::Id;
use crate::error::{Error, Op, Result};
use crate::op::{Dir, poll};
use crate::stats::Stats;
use crate::sys::{self, EpollEvent};

/// Event data of the engine's own wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// Event data of the timerfd for the earliest transfer timeout.
const TIMER: u64 = u64::MAX - 1;

/// Who waits on one fd.
#[derive(Debug, Default)]
struct Waiters {
    readers: Vec<Id>,
    writers: Vec<Id>,
    in_epoll: bool,
}

impl Waiters {
    fn is_empty(&self) -> bool {
        self.readers.is_empty() && self.writers.is_empty()
    }
}

/// The epoll instance and the registrations.
#[derive(Debug)]
pub(crate) struct Epoll {
    ep: sys::Epoll,
    pub(super) wake: Wake,
    regs: HashMap<RawFd, Waiters>,
    events: Vec<EpollEvent>,
    /// Waits ended without the kernel (an fd that cannot be polled, a failed `epoll_ctl`),
    /// reported at the next reap.
    now: Vec<Event>,
    /// Waits registered with epoll.
    waiting: usize,
    /// A timerfd in the epoll set, created on first use.
    timerfd: Option<OwnedFd>,
    timer: Timer,
    /// The last `epoll_wait` filled its buffer, so more events may be waiting.
    events_left: bool,
    /// Transfers' events the last `epoll_wait` returned.
    last_events: usize,
}

impl Epoll {
    pub(crate) fn new() -> Result<Epoll> {
        let ep = sys::Epoll::new().map_err(|e| Error::io(Op::Epoll, -1, e))?;
        let wake = Wake::new()?;
        ep.ctl(true, wake.fd(), libc::EPOLLIN as u32, WAKE)
            .map_err(|e| Error::io(Op::Epoll, wake.fd(), e))?;
        Ok(Epoll {
            ep,
            wake,
            regs: HashMap::new(),
            events: vec![EpollEvent { events: 0, u64: 0 }; 256],
            now: Vec::new(),
            waiting: 0,
            timerfd: None,
            timer: Timer::default(),
            events_left: false,
            last_events: 0,
        })
    }

    /// The fd a caller's event loop waits on: the epoll fd itself.
    pub(super) fn event_fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }

    /// The wake-up eventfd is in the epoll set, level-triggered: quiet it first, or every
    /// `epoll_wait` of this turn would return at once.
    pub(super) fn begin_turn(&mut self) {
        self.wake.clear();
    }

    pub(super) fn end_turn(&mut self, runnable: bool) {
        // Also when the last epoll_wait filled its buffer: events may be left in the set,
        // and a caller's edge-triggered registration sees no new edge for them.
        if runnable || self.events_left || !self.now.is_empty() {
            self.wake.signal();
        }
    }

    pub(super) fn arm(&mut self, id: Id, fd: RawFd, dir: Dir, _stats: &mut Stats) {
        let reg = self.regs.entry(fd).or_default();
        let list = match dir {
            Dir::Read => &mut reg.readers,
            Dir::Write => &mut reg.writers,
        };
        debug_assert!(!list.contains(&id), "a transfer waits once per direction");
        list.push(id);
        self.waiting += 1;
        match self.update(fd) {
            Ok(true) => {}
            // Not pollable: always ready.
            Ok(false) => self.end_wait(fd, id, dir, Ok((libc::EPOLLIN | libc::EPOLLOUT) as u32)),
            Err(e) => self.end_wait(fd, id, dir, Err(e)),
        }
    }

    /// Ends one wait without the kernel; reported at the next reap.
    fn end_wait(&mut self, fd: RawFd, id: Id, dir: Dir, res: std::result::Result<u32, i32>) {
        self.drop_interest(fd, id);
        self.now.push(Event::Ready { id, dir, res });
    }

    /// Applies a registration's interest to epoll. `Ok(false)`: this fd cannot be polled
    /// (a regular file, some devices). `Err`: the errno of `epoll_ctl`.
    fn update(&mut self, fd: RawFd) -> std::result::Result<bool, i32> {
        let reg = self
            .regs
            .get_mut(&fd)
            .expect("invariant: caller registered it");
        let events = poll::epoll_interest(!reg.readers.is_empty(), !reg.writers.is_empty());
        let mut add = !reg.in_epoll;
        for _ in 0..2 {
            match self.ep.ctl(add, fd, events, fd as u64) {
                Ok(()) => {
                    reg.in_epoll = true;
                    return Ok(true);
                }
                // A stale view of the set (the fd was closed and reused): try the other op.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => add = true,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => add = false,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(false),
                Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }
        Err(libc::EEXIST)
    }

    pub(super) fn reap(&mut self, out: &mut Vec<Event>, stats: &mut Stats) -> Result<bool> {
        let before = out.len();
        out.append(&mut self.now);
        self.wait_events(0, out, stats)?;
        Ok(out.len() > before)
    }

    pub(super) fn pending(&mut self) -> bool {
        self.last_events > 0 || !self.now.is_empty()
    }

    pub(super) fn waiting(&self) -> bool {
        self.waiting > 0
    }

    pub(super) fn block(
        &mut self,
        left: Option<Duration>,
        out: &mut Vec<Event>,
        stats: &mut Stats,
    ) -> Result<()> {
        self.wait_events(sys::timeout_ms(left), out, stats)
    }

    /// One `epoll_wait`; ends the waits whose fds are ready.
    fn wait_events(
        &mut self,
        timeout_ms: i32,
        out: &mut Vec<Event>,
        stats: &mut Stats,
    ) -> Result<()> {
        stats.enters += 1;
        let n = loop {
            match self.ep.wait(&mut self.events, timeout_ms) {
                Ok(n) => break n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    if timeout_ms != 0 {
                        return Ok(());
                    }
                }
                Err(e) => return Err(Error::io(Op::Epoll, self.ep.as_raw_fd(), e)),
            }
        };
        self.events_left = n == self.events.len();
        self.last_events = 0;
        for i in 0..n {
            let EpollEvent {
                events: bits,
                u64: data,
            } = self.events[i];
            match data {
                WAKE => {}
                TIMER => {
                    if let Some(t) = &self.timerfd {
                        sys::eventfd_clear(t.as_raw_fd()); // reads the 8-byte expiry count
                    }
                    self.timer.fired();
                }
                fd => {
                    self.last_events += 1;
                    self.on_event(fd as RawFd, bits, out)
                }
            }
        }
        Ok(())
    }

    fn on_event(&mut self, fd: RawFd, bits: u32, out: &mut Vec<Event>) {
        let Some(reg) = self.regs.get_mut(&fd) else {
            return;
        };
        let (read, write) = poll::epoll_woken(bits);
        let readers = if read {
            std::mem::take(&mut reg.readers)
        } else {
            Vec::new()
        };
        let writers = if write {
            std::mem::take(&mut reg.writers)
        } else {
            Vec::new()
        };
        self.waiting -= readers.len() + writers.len();
        // One-shot: re-arm for whatever is still wanted.
        if !reg.is_empty() {
            let _ = self.update(fd);
        }
        let ready = |dir| {
            move |id| Event::Ready {
                id,
                dir,
                res: Ok(bits),
            }
        };
        out.extend(readers.into_iter().map(ready(Dir::Read)));
        out.extend(writers.into_iter().map(ready(Dir::Write)));
    }

    /// Keeps the timerfd armed for the earliest transfer timeout.
    pub(super) fn arm_timer(&mut self, at: Instant, _stats: &mut Stats) -> Result<()> {
        if !self.timer.needs(at) {
            return Ok(());
        }
        if self.timerfd.is_none() {
            let t = sys::timerfd().map_err(|e| Error::io(Op::Epoll, -1, e))?;
            self.ep
                .ctl(true, t.as_raw_fd(), libc::EPOLLIN as u32, TIMER)
                .map_err(|e| Error::io(Op::Epoll, t.as_raw_fd(), e))?;
            self.timerfd = Some(t);
        }
        let t = self.timerfd.as_ref().expect("invariant: created above");
        let d = at.saturating_duration_since(Instant::now());
        sys::timerfd_set(t.as_raw_fd(), d).map_err(|e| Error::io(Op::Epoll, t.as_raw_fd(), e))?;
        self.timer.armed(at);
        Ok(())
    }

    /// Drops a transfer's waits: nothing of it is in the kernel, so it can finish now.
    pub(super) fn cancel(
        &mut self,
        id: Id,
        (src, dst): (RawFd, RawFd),
        _stats: &mut Stats,
    ) -> bool {
        self.forget(id, (src, dst));
        self.now
            .retain(|e| !matches!(e, Event::Ready { id: i, .. } if *i == id));
        true
    }

    pub(super) fn forget(&mut self, id: Id, (src, dst): (RawFd, RawFd)) {
        self.drop_interest(src, id);
        if dst != src {
            self.drop_interest(dst, id);
        }
    }

    /// Drops a transfer's interest in an fd; deregisters the fd when nobody waits on it.
    fn drop_interest(&mut self, fd: RawFd, id: Id) {
        let Some(reg) = self.regs.get_mut(&fd) else {
            return;
        };
        let before = reg.readers.len() + reg.writers.len();
        reg.readers.retain(|&w| w != id);
        reg.writers.retain(|&w| w != id);
        self.waiting -= before - (reg.readers.len() + reg.writers.len());
        if reg.is_empty() {
            if reg.in_epoll {
                // The fd is still open: the finishing transfer holds it.
                self.ep.delete(fd);
            }
            self.regs.remove(&fd);
        }
    }
}
