//! The slab of transfers: each slot queued or running, the one packing of a transfer's
//! identity (into [`TransferId`] and into io_uring's `user_data`), timers, and the queue of
//! completions not yet collected.
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
use crate::transfer::{Length, Strategy, Transfer, TransferId};

use super::machine::Machine;
use super::pipes::Pipe;
use super::plan::Plan;

/// Bits of a slot index: [`MAX_TRANSFERS`] slots at most.
const INDEX_BITS: u32 = 31;
/// Bits of a slot's generation.
const GENERATION_BITS: u32 = 24;
/// Bits of an operation's place in its io_uring round.
const OP_BITS: u32 = 8;

/// Most transfers one engine may hold: slot indexes have [`INDEX_BITS`] bits.
pub(crate) const MAX_TRANSFERS: usize = 1 << INDEX_BITS;
/// Most operations one io_uring round may hold: their index has [`OP_BITS`] bits.
pub(crate) const MAX_ROUND_OPS: usize = 1 << OP_BITS;

/// Tokens at and above this are the drivers' own (cancels, timers): no transfer's token
/// reaches them, since slot indexes stay below [`MAX_TRANSFERS`].
pub(crate) const RESERVED_TOKENS: u64 = u64::MAX - 15;

/// Checks that `max_transfers` slots and rounds of `round_ops` operations can be packed.
pub(crate) fn check_packing(max_transfers: usize, round_ops: usize) -> Result<(), String> {
    if max_transfers == 0 || max_transfers > MAX_TRANSFERS {
        return Err(format!(
            "max_transfers must be between 1 and {MAX_TRANSFERS}"
        ));
    }
    if round_ops > MAX_ROUND_OPS {
        return Err(format!(
            "an io_uring round of {round_ops} operations cannot be numbered in {OP_BITS} bits \
             (at most {MAX_ROUND_OPS})"
        ));
    }
    Ok(())
}

/// A transfer's identity: its slot and the slot's generation when it was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Id {
    index: u32,
    generation: u32,
}

impl Id {
    /// The slot index.
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }

    /// The id as the caller sees it: `generation << 32 | index`.
    pub(crate) fn transfer_id(self) -> TransferId {
        TransferId((u64::from(self.generation) << 32) | u64::from(self.index))
    }

    fn from_transfer_id(t: TransferId) -> Id {
        Id {
            index: (t.0 & 0xFFFF_FFFF) as u32,
            generation: (t.0 >> 32) as u32,
        }
    }

    /// The `user_data` of operation `op` of this transfer's round: the transfer id shifted
    /// past the op index, `generation << 40 | index << 8 | op`.
    pub(crate) fn token(self, op: usize) -> u64 {
        debug_assert!(op < MAX_ROUND_OPS, "round op {op} past {MAX_ROUND_OPS}");
        (self.transfer_id().0 << OP_BITS) | op as u64
    }

    /// The id and op index a token was made from.
    pub(crate) fn from_token(token: u64) -> (Id, usize) {
        let op = (token & ((1 << OP_BITS) - 1)) as usize;
        (Id::from_transfer_id(TransferId(token >> OP_BITS)), op)
    }
}

/// What a queued transfer asks for, kept until it starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub(crate) length: Option<u64>,
    pub(crate) src_off: Option<u64>,
    pub(crate) dst_off: Option<u64>,
    pub(crate) strategy: Strategy,
    pub(crate) shutdown_dst: bool,
}

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
        let id = Id {
            index: index as u32,
            generation,
        };
        self.queued.push(id);
        Ok(id)
    }

    /// The slot of an id, if it still holds the same transfer.
    pub(crate) fn get(&mut self, id: Id) -> Option<&mut Slot> {
        self.slab
            .get_mut(id.index())
            .filter(|s| s.generation == id.generation)
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
            .filter(|s| s.generation == id.generation)?;
        match &slot.state {
            State::Running(r) => Some(r),
            State::Queued(_) => None,
        }
    }

    /// The id behind a caller's [`TransferId`], if that transfer is in flight.
    pub(crate) fn find(&self, t: TransferId) -> Option<Id> {
        let id = Id::from_transfer_id(t);
        let slot = self.slab.get(id.index())?;
        (slot.generation == id.generation).then_some(id)
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
            let id = Id {
                index: index as u32,
                generation,
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One packing: a token carries the transfer id and the op index, whatever the bits.
    #[test]
    fn tokens_and_transfer_ids_round_trip_at_the_limits() {
        let gens = [0, 1, (1 << GENERATION_BITS) - 1];
        let indexes = [0, 1, MAX_TRANSFERS as u32 - 1];
        for generation in gens {
            for index in indexes {
                let id = Id { index, generation };
                assert_eq!(Id::from_transfer_id(id.transfer_id()), id);
                for op in [0, 1, MAX_ROUND_OPS - 1] {
                    let t = id.token(op);
                    assert!(t < RESERVED_TOKENS, "{t:#x}");
                    assert_eq!(Id::from_token(t), (id, op));
                }
            }
        }
    }

    #[test]
    fn packing_refuses_what_it_cannot_number() {
        assert!(check_packing(MAX_TRANSFERS, MAX_ROUND_OPS).is_ok());
        assert!(check_packing(MAX_TRANSFERS + 1, 1).is_err());
        assert!(check_packing(0, 1).is_err());
        assert!(check_packing(1, MAX_ROUND_OPS + 1).is_err());
    }
}
