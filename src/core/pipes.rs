//! Pooled, sized pipes under a memory budget, and the transfers waiting for one. Only empty
//! pipes go back to the pool: a pipe that still holds bytes is closed (and counted), never
//! handed to another transfer.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::error::{Error, Op};
use crate::sys;

use super::id::Id;

/// One pipe: the engine's staging area between a source and a destination.
#[derive(Debug)]
pub(crate) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

impl Pipe {
    pub(crate) fn read_fd(&self) -> RawFd {
        self.r.as_raw_fd()
    }
    pub(crate) fn write_fd(&self) -> RawFd {
        self.w.as_raw_fd()
    }
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }
}

/// Counters the pool keeps for [`Stats`](crate::Stats).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PoolCounters {
    pub(crate) created: u64,
    pub(crate) reused: u64,
    pub(crate) discarded: u64,
}

#[derive(Debug)]
pub(crate) struct PipePool {
    idle: Vec<Pipe>,
    max_idle: usize,
    size: usize,
    /// What the kernel grants for `size` (a power-of-two number of pages): what a new
    /// pipe is checked against the budget with.
    granted: usize,
    budget: usize,
    /// Capacity of every pipe alive, leased or idle.
    live: usize,
    pub(crate) counters: PoolCounters,
}

impl PipePool {
    pub(crate) fn new(size: usize, max_idle: usize, budget: usize) -> PipePool {
        PipePool {
            idle: Vec::new(),
            max_idle,
            size,
            granted: sys::granted_pipe_size(size),
            budget,
            live: 0,
            counters: PoolCounters::default(),
        }
    }

    /// A pipe, from the pool or new. `Ok(None)` when the budget has no room: the caller waits
    /// for a pipe to come back.
    pub(crate) fn take(&mut self) -> Result<Option<Pipe>, Error> {
        if let Some(p) = self.idle.pop() {
            self.counters.reused += 1;
            return Ok(Some(p));
        }
        if self.live + self.granted > self.budget {
            return Ok(None);
        }
        let (r, w) = sys::pipe().map_err(|e| Error::io(Op::Pipe, -1, e))?;
        // EPERM past the user's pipe quota (or the size over pipe-max-size for an
        // unprivileged user) leaves the pipe at its default size: read back what we got.
        let cap = match sys::set_pipe_size(w.as_raw_fd(), self.size) {
            Ok(n) => n,
            Err(_) => {
                sys::pipe_size(w.as_raw_fd()).map_err(|e| Error::io(Op::Fcntl, w.as_raw_fd(), e))?
            }
        };
        if self.live + cap > self.budget {
            // The kernel gave more than asked (its default size after a refused resize):
            // over budget, so the pipe is not kept. With none alive, none will come back.
            if self.live == 0 {
                return Err(Error::PipeBudget(format!(
                    "the kernel granted a {cap}-byte pipe, over the budget of {} bytes",
                    self.budget
                )));
            }
            return Ok(None);
        }
        self.live += cap;
        self.counters.created += 1;
        Ok(Some(Pipe { r, w, cap }))
    }

    /// Returns a pipe. `holds_bytes` pipes are closed, as are pipes past the idle limit.
    pub(crate) fn give(&mut self, p: Pipe, holds_bytes: bool) {
        if holds_bytes {
            self.counters.discarded += 1;
        }
        if holds_bytes || self.idle.len() >= self.max_idle {
            self.live -= p.cap;
            drop(p);
        } else {
            self.idle.push(p);
        }
    }

    /// Whether the budget has room for `n` pipes (idle or new) when none is leased.
    pub(crate) fn room_for(&self, n: usize) -> bool {
        n.saturating_mul(self.granted) <= self.budget
    }

    /// Capacity of every pipe alive.
    pub(crate) fn live_bytes(&self) -> usize {
        self.live
    }
}

/// What asking for a pipe gave.
#[derive(Debug)]
pub(crate) enum Lease {
    Pipe(Pipe),
    /// None within the budget; `queued`: the asker waits for one.
    Wait {
        queued: bool,
    },
    /// Making a pipe failed.
    Failed(Error),
}

/// The pool plus who waits for it. A pipe given back while a transfer waits is handed to
/// that transfer (through [`Pipes::take_handoffs`]), so the transfer that just gave it up
/// cannot take it back first and starve the waiter.
#[derive(Debug)]
pub(crate) struct Pipes {
    pub(crate) pool: PipePool,
    waiters: VecDeque<Id>,
    /// Pipes (or, for a pipe closed because it held bytes, freed budget) for waiters.
    handoffs: Vec<(Id, Option<Pipe>)>,
}

impl Pipes {
    pub(crate) fn new(size: usize, max_idle: usize, budget: usize) -> Pipes {
        Pipes {
            pool: PipePool::new(size, max_idle, budget),
            waiters: VecDeque::new(),
            handoffs: Vec::new(),
        }
    }

    /// A pipe from the pool or new, within the budget; with none to be had and `queue`,
    /// `id` waits for one to come back.
    pub(crate) fn take(&mut self, id: Id, queue: bool) -> Lease {
        match self.pool.take() {
            Ok(Some(p)) => Lease::Pipe(p),
            Ok(None) => {
                if queue {
                    self.waiters.push_back(id);
                }
                Lease::Wait { queued: queue }
            }
            Err(e) => Lease::Failed(e),
        }
    }

    /// Takes a pipe back: to the first waiter, else to the pool (closed if it holds bytes,
    /// which frees budget: then the waiter is woken to take a new one).
    pub(crate) fn give(&mut self, p: Pipe, holds_bytes: bool) {
        match self.waiters.pop_front() {
            None => self.pool.give(p, holds_bytes),
            Some(w) if holds_bytes => {
                self.pool.give(p, true);
                self.handoffs.push((w, None));
            }
            Some(w) => self.handoffs.push((w, Some(p))),
        }
    }

    /// Pipes given back for waiters since the last call: the caller hands each to its
    /// waiter, or (a waiter gone or served meanwhile) back with [`Pipes::give`].
    pub(crate) fn take_handoffs(&mut self) -> Vec<(Id, Option<Pipe>)> {
        std::mem::take(&mut self.handoffs)
    }

    /// Budget was freed for a waiter that is gone: wake the next one instead.
    pub(crate) fn wake_next(&mut self) {
        if let Some(w) = self.waiters.pop_front() {
            self.handoffs.push((w, None));
        }
    }

    pub(crate) fn has_handoffs(&self) -> bool {
        !self.handoffs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_only_empty_pipes_and_respects_budget() {
        let mut pool = PipePool::new(64 << 10, 4, 128 << 10);
        let a = pool.take().unwrap().unwrap();
        assert!(a.capacity() >= 4096);
        let b = pool.take().unwrap().unwrap();
        // Two 64 KiB pipes fill a 128 KiB budget.
        assert!(pool.take().unwrap().is_none());
        pool.give(a, false);
        let c = pool.take().unwrap().unwrap();
        assert_eq!(pool.counters.reused, 1);
        pool.give(b, true);
        assert_eq!(pool.counters.discarded, 1);
        assert_eq!(pool.live_bytes(), c.capacity());
        pool.give(c, false);
        assert_eq!(pool.counters.created, 2);
    }

    /// The kernel rounds 48 KiB up to 64 KiB: the budget is checked with the rounded size,
    /// so 15 such pipes fit under 1 MiB - 8 KiB, not 16.
    #[test]
    fn budget_counts_the_size_the_kernel_grants() {
        assert_eq!(sys::granted_pipe_size(48 << 10), 64 << 10);
        assert_eq!(sys::granted_pipe_size(1), 4096);
        assert_eq!(sys::granted_pipe_size(1 << 20), 1 << 20);
        let budget = (1 << 20) - (8 << 10);
        let mut pool = PipePool::new(48 << 10, 64, budget);
        let mut held = Vec::new();
        while let Some(p) = pool.take().unwrap() {
            assert_eq!(p.capacity(), 64 << 10);
            held.push(p);
            assert!(
                pool.live_bytes() <= budget,
                "{} > {budget}",
                pool.live_bytes()
            );
        }
        assert_eq!(held.len(), 15);
    }
}
