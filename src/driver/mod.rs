//! Drivers deliver readiness and completions, and nothing else: what to do with them is
//! the core's (core/) and the engine's (engine.rs) business.
//! - [`uring`]: io_uring — rounds of linked operations (SQEs from op/), `IORING_OP_POLL_ADD`
//!   readiness, an `IORING_OP_TIMEOUT` for the earliest transfer timer;
//! - [`epoll`]: epoll readiness (one-shot interests), a timerfd; every step runs inline.
//!
//! Both wake a caller's own event loop through one fd ([`Wake`]).

pub(crate) mod epoll;
pub(crate) mod event;
pub(crate) mod uring;
pub(crate) mod wake;

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::core::id::Id;
use crate::error::Result;
use crate::op::{Dir, OpKind};
use crate::stats::Stats;

pub(crate) use event::{Event, RoundFds};
pub(crate) use wake::Sleep;

/// One of the two drivers.
#[derive(Debug)]
pub(crate) enum Driver {
    Uring(Box<uring::Uring>),
    Epoll(epoll::Epoll),
}

/// Calls the same method on whichever driver runs.
macro_rules! each {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            Driver::Uring($d) => $e,
            Driver::Epoll($d) => $e,
        }
    };
}

impl Driver {
    /// io_uring, or why it cannot be had.
    pub(crate) fn uring(cfg: &Config) -> std::result::Result<Driver, String> {
        uring::Uring::setup(cfg).map(|u| Driver::Uring(Box::new(u)))
    }

    pub(crate) fn epoll() -> Result<Driver> {
        epoll::Epoll::new().map(Driver::Epoll)
    }

    /// Whether this driver runs io_uring rounds (chains, offloaded fills).
    pub(crate) fn has_rounds(&self) -> bool {
        matches!(self, Driver::Uring(_))
    }

    /// The fd a caller's loop waits on.
    pub(crate) fn event_fd(&self) -> RawFd {
        each!(self, d => d.event_fd())
    }

    /// Makes the engine's fd readable.
    pub(crate) fn wake(&mut self) {
        each!(self, d => d.wake.signal())
    }

    pub(crate) fn begin_turn(&mut self) {
        each!(self, d => d.begin_turn())
    }

    /// Leaves the engine's fd readable exactly when the caller has a reason to `poll`
    /// again: `runnable` work, or events not yet reaped.
    pub(crate) fn end_turn(&mut self, runnable: bool) {
        each!(self, d => d.end_turn(runnable))
    }

    /// Waits for `fd` to be ready for `dir`; an [`Event`] follows.
    pub(crate) fn arm(&mut self, id: Id, fd: RawFd, dir: Dir, stats: &mut Stats) {
        stats.polls += 1;
        each!(self, d => d.arm(id, fd, dir, stats))
    }

    /// Pushes one io_uring round; an [`Event::Round`] follows.
    pub(crate) fn push_round(
        &mut self,
        id: Id,
        ops: &[(OpKind, usize)],
        fds: RoundFds,
        stats: &mut Stats,
    ) {
        match self {
            Driver::Uring(u) => u.push_round(id, ops, fds, stats),
            Driver::Epoll(_) => unreachable!("the epoll driver has no rounds"),
        }
    }

    /// Gives a finished round's result buffer back for reuse.
    pub(crate) fn recycle(&mut self, ops: Vec<(OpKind, i32)>) {
        if let Driver::Uring(u) = self {
            u.recycle(ops);
        }
    }

    /// Collects what is ready without blocking. Returns whether anything was.
    pub(crate) fn reap(&mut self, out: &mut Vec<Event>, stats: &mut Stats) -> Result<bool> {
        each!(self, d => d.reap(out, stats))
    }

    /// Submits what was pushed (io_uring; nothing for epoll).
    pub(crate) fn submit(&mut self, stats: &mut Stats) -> Result<()> {
        match self {
            Driver::Uring(u) => u.submit(stats),
            Driver::Epoll(_) => Ok(()),
        }
    }

    /// Whether anything is with the kernel that can wake a blocking wait.
    pub(crate) fn waiting(&self) -> bool {
        each!(self, d => d.waiting())
    }

    /// Blocks until an event or `left` passes (`None`: no limit), collecting events.
    pub(crate) fn block(
        &mut self,
        left: Option<Duration>,
        out: &mut Vec<Event>,
        stats: &mut Stats,
    ) -> Result<()> {
        each!(self, d => d.block(left, out, stats))
    }

    /// Keeps a timer armed for `at`, so a caller's loop wakes when it passes.
    pub(crate) fn arm_timer(&mut self, at: Option<Instant>, stats: &mut Stats) -> Result<()> {
        match at {
            Some(at) => each!(self, d => d.arm_timer(at, stats)),
            None => Ok(()),
        }
    }

    /// Stops waiting for a transfer. `true`: nothing of it is left with the driver, so it
    /// can finish now; `false`: its events are due (io_uring cancels its operations).
    pub(crate) fn cancel(&mut self, id: Id, fds: (RawFd, RawFd), stats: &mut Stats) -> bool {
        each!(self, d => d.cancel(id, fds, stats))
    }

    /// Forgets a finished transfer (whose fds are still open).
    pub(crate) fn forget(&mut self, id: Id, fds: (RawFd, RawFd)) {
        each!(self, d => d.forget(id, fds))
    }

    /// Frees a pipe held idle by a round waiting for its source (io_uring): `holds_idle`
    /// says whether a transfer's pipe is empty and only held.
    pub(crate) fn reclaim_idle_pipe(
        &mut self,
        holds_idle: impl FnMut(Id) -> bool,
        stats: &mut Stats,
    ) {
        if let Driver::Uring(u) = self {
            u.reclaim_idle_pipe(holds_idle, stats);
        }
    }

    /// The most operations one round may hold (0: no rounds).
    pub(crate) fn round_cap(&self) -> usize {
        match self {
            Driver::Uring(u) => u.round_cap(),
            Driver::Epoll(_) => 0,
        }
    }

    /// Whether events may be ready right now (CQEs posted during the last submit, an
    /// `epoll_wait` that returned some): worth another round of work before blocking.
    pub(crate) fn pending(&mut self) -> bool {
        each!(self, d => d.pending())
    }

    /// Cancels everything and waits (boundedly) for the kernel to give it back. Returns
    /// the transfers the kernel may still use.
    pub(crate) fn shutdown(&mut self, stats: &mut Stats) -> Vec<Id> {
        match self {
            Driver::Uring(u) => u.shutdown(stats),
            Driver::Epoll(_) => Vec::new(),
        }
    }
}
