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
use crate::fan_out::{FanOut, MAX_FAN_OUT, MIN_FAN_OUT, RejectedFanOut};
use crate::op::copy::CopyBuf;
use crate::transfer::{Length, Transfer, TransferId};

use super::fan::{Fan, Leg};
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
    /// A fan-out (queued until `Fan::started`); its destinations are its legs' slots.
    Fan(Box<Fan>),
    /// One destination of the fan-out `hub`: the identity of its readiness waits.
    Leg { hub: Id, index: usize },
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
            _ => None,
        }
    }

    fn delivered(&self) -> u64 {
        match &self.state {
            State::Running(r) => r.m.delivered(),
            State::Fan(f) => f.taken,
            State::Queued(_) | State::Leg { .. } => 0,
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
    /// Slots that are fan-out legs, not transfers of their own.
    legs: usize,
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
            legs: 0,
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
        let generation = self.next_id();
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
            _ => None,
        }
    }

    /// The id behind a caller's [`TransferId`], if that transfer is in flight (a fan-out's
    /// legs are not transfers of their own).
    pub(crate) fn find(&self, t: TransferId) -> Option<Id> {
        let id = Id::from_transfer_id(t);
        let slot = self.slab.get(id.index())?;
        let leg = matches!(slot.state, State::Leg { .. });
        (slot.generation == id.generation() && !leg).then_some(id)
    }

    /// The fan-out of an id, if it is one.
    pub(crate) fn fan(&mut self, id: Id) -> Option<&mut Fan> {
        match &mut self.get(id)?.state {
            State::Fan(f) => Some(f),
            _ => None,
        }
    }

    /// The fan-out a leg's slot belongs to, and the leg's place in it.
    pub(crate) fn leg(&self, id: Id) -> Option<(Id, usize)> {
        let slot = self.slab.get(id.index())?;
        match slot.state {
            State::Leg { hub, index } if slot.generation == id.generation() => Some((hub, index)),
            _ => None,
        }
    }

    fn next_id(&mut self) -> u32 {
        self.next_generation = (self.next_generation + 1) & ((1 << GENERATION_BITS) - 1);
        self.next_generation
    }

    /// Queues a fan-out: its slot, and one per destination; no syscall.
    pub(crate) fn insert_fan(&mut self, f: FanOut) -> Result<Id, RejectedFanOut> {
        let n = f.dsts.len();
        let error = if !(MIN_FAN_OUT..=MAX_FAN_OUT).contains(&n) {
            Some(Error::InvalidInput(format!(
                "a fan-out takes {MIN_FAN_OUT} to {MAX_FAN_OUT} destinations, not {n}"
            )))
        } else if self.slab.len() + 1 + n > self.max {
            Some(Error::Full { max: self.max })
        } else {
            None
        };
        if let Some(error) = error {
            let fan_out = Box::new(f);
            return Err(RejectedFanOut { error, fan_out });
        }
        let length = match f.len {
            Length::Exact(n) => Some(n),
            Length::UntilEof => None,
        };
        let mut fan = Fan::new(f.src.as_raw_fd(), length, f.shutdown_destinations);
        fan.linger = f.linger;
        let now = Instant::now();
        let slot = |generation, src, dst, state| Slot {
            generation,
            tag: f.tag,
            src,
            dst,
            timing: Timing {
                deadline: None,
                idle: None,
                last_progress: now,
                progress_mark: 0,
            },
            state,
        };
        let generation = self.next_id();
        let state = State::Fan(Box::new(fan));
        let index = self
            .slab
            .insert(slot(generation, f.src, Endpoint::detached(), state));
        let hub = Id::new(index, generation);
        let mut legs = Vec::with_capacity(n);
        for (i, (dst, policy)) in f.dsts.into_iter().enumerate() {
            let g = self.next_id();
            let fd = dst.as_raw_fd();
            let state = State::Leg { hub, index: i };
            let key = self.slab.insert(slot(g, Endpoint::detached(), dst, state));
            legs.push(Leg::new(Id::new(key, g), fd, policy));
        }
        self.legs += n;
        if let Some(fan) = self.fan(hub) {
            fan.legs = legs;
        }
        self.queued.push(hub);
        Ok(hub)
    }

    /// Bytes a transfer in flight has delivered so far.
    pub(crate) fn delivered(&self, id: Id) -> u64 {
        self.slab.get(id.index()).map_or(0, Slot::delivered)
    }

    /// Removes a slot.
    pub(crate) fn remove(&mut self, id: Id) -> Slot {
        let slot = self.slab.remove(id.index());
        self.legs -= usize::from(matches!(slot.state, State::Leg { .. }));
        slot
    }

    /// Transfers in the slab (a fan-out counts once).
    pub(crate) fn len(&self) -> usize {
        self.slab.len() - self.legs
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

    /// Starts a deadline `limit` from now on a running slot (a fan-out's linger).
    pub(crate) fn start_timer(&mut self, id: Id, limit: Duration) {
        let Some(slot) = self.get(id) else { return };
        let Some(at) = Instant::now().checked_add(limit) else {
            return; // never, in effect
        };
        slot.timing.deadline = Some(at);
        self.timers.push(Reverse((at, id.index(), id.generation())));
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
