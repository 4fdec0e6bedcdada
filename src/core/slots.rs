//! The slab of transfers: each slot queued or running, what a running one holds, timers,
//! and the queue of completions not yet collected. Ids are packed in id.rs.
//!
//! A slot is freed only when no operation of its transfer is still with the kernel, so a
//! stale CQE can never reach a reused slot; ids carry a generation so a stale `cancel` (or
//! CQE) cannot hit a newer transfer in the same slot.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::completion::Completion;
use crate::endpoint::Endpoint;
use crate::error::{Error, Rejected};
use crate::op::copy::CopyBuf;
use crate::transfer::{Length, Transfer, TransferId};

use super::id::{GENERATION_BITS, Id, MAX_TRANSFERS};
use super::machine::Machine;
use super::pipes::{Lease, Pipe, Pipes};
use super::plan::{Plan, Request};

/// A started transfer: its plan, its state machine and what it holds.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) m: Machine,
    pub(crate) plan: Plan,
    pub(crate) pipe: Option<Pipe>,
    pub(crate) buf: Option<CopyBuf>,
    /// The driver holds it: a readiness wait, or io_uring operations whose CQEs are due.
    /// Only the driver's event gives it back.
    pub(crate) with_driver: bool,
    /// A readiness wait just reported ready: the next round need not poll first.
    pub(crate) just_ready: bool,
    /// Queued for a pipe from the budget.
    pub(crate) waiting_pipe: bool,
    /// Its shared endpoints are counted in the engine's memo of known fds.
    pub(crate) known: bool,
}

impl Running {
    /// Leases a pipe if the transfer has none. `false`: none to be had within the budget;
    /// with `queue` the transfer then waits for one to come back. A pipe creation error
    /// fails the transfer (and returns `true`: its machine says finish).
    pub(crate) fn lease(&mut self, id: Id, pipes: &mut Pipes, queue: bool) -> bool {
        if self.pipe.is_some() {
            return true;
        }
        match pipes.take(id, queue && !self.waiting_pipe) {
            Lease::Pipe(p) => {
                self.m.cap_chunk(p.capacity());
                self.pipe = Some(p);
                true
            }
            Lease::Wait { queued } => {
                self.waiting_pipe |= queued;
                false
            }
            Lease::Failed(e) => {
                self.m.fail_source(e);
                true
            }
        }
    }

    /// Gives the pipe back when it is empty and nothing of the kernel's may still use it.
    pub(crate) fn release_pipe_if_idle(&mut self, pipes: &mut Pipes) {
        if self.with_driver || self.m.staged() > 0 {
            return;
        }
        if let Some(p) = self.pipe.take() {
            debug_assert_eq!(crate::sys::bytes_readable(p.read_fd()).unwrap_or(0), 0);
            pipes.give(p, false);
        }
    }
}

/// Where a slot is in its life.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a slot turns Running in place; a box would allocate per transfer
pub(crate) enum State {
    /// Submitted; starts at the next turn.
    Queued(Request),
    /// Started.
    Running(Running),
}

/// Deadlines of one transfer.
#[derive(Debug)]
struct Timing {
    deadline: Option<Instant>,
    idle: Option<Duration>,
    /// When bytes last reached the destination (or the transfer was submitted).
    last_progress: Instant,
    progress_mark: u64,
}

/// One transfer in the slab.
#[derive(Debug)]
pub(crate) struct Slot {
    generation: u32,
    pub(crate) tag: u64,
    pub(crate) src: Endpoint,
    pub(crate) dst: Endpoint,
    timing: Timing,
    pub(crate) state: State,
}

impl Slot {
    /// The running transfer, if it has started.
    pub(crate) fn running(&mut self) -> Option<&mut Running> {
        match &mut self.state {
            State::Running(r) => Some(r),
            State::Queued(_) => None,
        }
    }

    fn delivered(&self) -> u64 {
        match &self.state {
            State::Running(r) => r.m.delivered(),
            State::Queued(_) => 0,
        }
    }
}

/// The transfers in flight, their timers, and completions not yet collected.
#[derive(Debug)]
pub(crate) struct Slots {
    slab: Slab<Slot>,
    next_generation: u32,
    max: usize,
    /// Submitted, not yet started.
    pub(crate) queued: Vec<Id>,
    /// Deadlines and idle checks, earliest first; entries of finished slots are skipped.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    pub(crate) done: VecDeque<Completion>,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            slab: Slab::new(),
            next_generation: 0,
            max,
            queued: Vec::new(),
            timers: BinaryHeap::new(),
            done: VecDeque::new(),
        }
    }

    /// Queues a transfer; no syscall.
    pub(crate) fn insert(&mut self, t: Transfer) -> Result<Id, Rejected> {
        if self.slab.len() >= self.max {
            let error = Error::Full { max: self.max };
            return Err(Rejected {
                error,
                transfer: Box::new(t),
            });
        }
        let now = Instant::now();
        self.next_generation = (self.next_generation + 1) & ((1 << GENERATION_BITS) - 1);
        let generation = self.next_generation;
        let request = Request {
            length: match t.len {
                Length::Exact(n) => Some(n),
                Length::UntilEof => None,
            },
            src_off: t.src_off,
            dst_off: t.dst_off,
            strategy: t.strategy,
            shutdown_dst: t.shutdown_destination,
        };
        let first = [t.timeout, t.idle_timeout].into_iter().flatten().min();
        let index = self.slab.insert(Slot {
            generation,
            tag: t.tag,
            src: t.src,
            dst: t.dst,
            timing: Timing {
                deadline: t.timeout.map(|d| now + d),
                idle: t.idle_timeout,
                last_progress: now,
                progress_mark: 0,
            },
            state: State::Queued(request),
        });
        debug_assert!(index < MAX_TRANSFERS);
        if let Some(d) = first {
            self.timers.push(Reverse((now + d, index, generation)));
        }
        let id = Id::new(index, generation);
        self.queued.push(id);
        Ok(id)
    }

    /// The slot of an id, if it still holds the same transfer.
    pub(crate) fn get(&mut self, id: Id) -> Option<&mut Slot> {
        self.slab
            .get_mut(id.index())
            .filter(|s| s.generation == id.generation())
    }

    /// The running transfer of an id.
    pub(crate) fn running(&mut self, id: Id) -> Option<&mut Running> {
        self.get(id).and_then(Slot::running)
    }

    /// The running transfer of an id, read-only.
    pub(crate) fn peek(&self, id: Id) -> Option<&Running> {
        let slot = self
            .slab
            .get(id.index())
            .filter(|s| s.generation == id.generation())?;
        match &slot.state {
            State::Running(r) => Some(r),
            State::Queued(_) => None,
        }
    }

    /// The id behind a caller's [`TransferId`], if that transfer is in flight.
    pub(crate) fn find(&self, t: TransferId) -> Option<Id> {
        let id = Id::from_transfer_id(t);
        let slot = self.slab.get(id.index())?;
        (slot.generation == id.generation()).then_some(id)
    }

    /// Bytes a transfer in flight has delivered so far.
    pub(crate) fn delivered(&self, id: Id) -> u64 {
        self.slab.get(id.index()).map_or(0, Slot::delivered)
    }

    /// Removes a slot.
    pub(crate) fn remove(&mut self, id: Id) -> Slot {
        self.slab.remove(id.index())
    }

    /// Transfers in the slab.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Records progress for the idle timeout; call after bytes may have moved.
    pub(crate) fn note_progress(&mut self, id: Id) {
        let Some(slot) = self.get(id) else { return };
        if slot.timing.idle.is_none() {
            return;
        }
        let d = slot.delivered();
        if d != slot.timing.progress_mark {
            slot.timing.progress_mark = d;
            slot.timing.last_progress = Instant::now();
        }
    }

    /// Transfers whose deadline or idle timeout has passed; their machines are marked timed
    /// out (the engine cancels them). Idle checks that find progress are re-armed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Id> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, index, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let id = Id::new(index, generation);
            let Some(slot) = self.get(id) else { continue };
            if matches!(slot.state, State::Queued(_)) {
                // Not started yet: check again right after the next start.
                self.timers.push(Reverse((now, index, generation)));
                break;
            }
            let d = slot.delivered();
            let t = &mut slot.timing;
            if d != t.progress_mark {
                t.progress_mark = d;
                t.last_progress = now;
            }
            let idle_at = t.idle.map(|i| t.last_progress + i);
            match [t.deadline, idle_at].into_iter().flatten().min() {
                Some(due) if due <= now => {
                    if let Some(r) = slot.running() {
                        r.m.time_out();
                    }
                    out.push(id);
                }
                Some(due) => self.timers.push(Reverse((due, index, generation))),
                None => {}
            }
        }
        out
    }

    /// The earliest pending timer, if any.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|r| r.0.0)
    }
}

/// The raw fds of a slot's endpoints.
pub(crate) fn fds_of(slot: &Slot) -> (i32, i32) {
    (slot.src.as_raw_fd(), slot.dst.as_raw_fd())
}
