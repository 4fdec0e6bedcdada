//! The engine's core: plain data and decisions, no io_uring and no epoll. It holds the
//! transfers ([`slots`]), plans each one ([`plan`], [`round`]), runs its state machine
//! ([`machine`]), carries out inline steps ([`step`]) and leases pipes ([`pipes`]).
//! The engine (engine.rs) connects it to a driver (driver/).

pub(crate) mod fds;
pub(crate) mod id;
pub(crate) mod machine;
pub(crate) mod pipes;
pub(crate) mod plan;
pub(crate) mod round;
pub(crate) mod slots;
pub(crate) mod step;

use std::collections::VecDeque;

use crate::completion::Completion;
use crate::config::Config;
use crate::error::{Error, Op, Rejected, Result};
use crate::stats::Stats;
use crate::sys::{self, FdInfo, SigpipeGuard};
use crate::transfer::{Transfer, TransferId};

use id::Id;
use machine::Machine;
use pipes::Pipes;
use plan::{Caps, FileFacts, Mode, Plan, Request};
use slots::{Running, Slots, State};
use step::{Park, Step};

/// The transfers and everything they share.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) slots: Slots,
    pub(crate) pipes: Pipes,
    /// Running transfers with inline work to do.
    pub(crate) ready: VecDeque<Id>,
    pub(crate) stats: Stats,
    pub(crate) cfg: Config,
    known: fds::Known,
    /// Started transfers in [`Mode::Chain`]: only they can hold a pipe while idle, so
    /// with none there is no pipe to reclaim.
    pub(crate) chains: usize,
    guard: SigpipeGuard,
}

impl Core {
    pub(crate) fn new(cfg: Config) -> Core {
        Core {
            slots: Slots::new(cfg.max_transfers),
            pipes: Pipes::new(cfg.pipe_size, cfg.pipe_pool_size, cfg.pipe_budget),
            ready: VecDeque::new(),
            stats: Stats::default(),
            cfg,
            known: fds::Known::default(),
            chains: 0,
            guard: SigpipeGuard::for_this_process(),
        }
    }

    /// Queues a transfer; no syscall.
    pub(crate) fn submit(&mut self, t: Transfer) -> Result<TransferId, Rejected> {
        let id = self.slots.insert(t)?;
        self.stats.submitted += 1;
        Ok(id.transfer_id())
    }

    /// Starts a queued transfer: learns what its fds are, plans it and builds its machine.
    /// Bad input builds the machine already failed, so the transfer completes with the
    /// error at once.
    pub(crate) fn start(&mut self, id: Id, chains: bool) {
        let caps = Caps {
            chains,
            copy_threshold: self.cfg.copy_threshold,
        };
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let State::Queued(req) = slot.state else {
            return;
        };
        let (src, dst) = slots::fds_of(slot);
        let recalled = [self.known.recall(&slot.src), self.known.recall(&slot.dst)];
        let planned = learn((src, recalled[0]), (dst, recalled[1]), &req, caps);
        let (plan, known, failure) = match planned {
            Ok((plan, s, d)) => {
                self.known.hold(&mut slot.src, s);
                self.known.hold(&mut slot.dst, d);
                (plan, true, None)
            }
            Err(e) => (Plan::failed(src, dst), false, Some(e)),
        };
        let (len, offs, chunk) = (req.length, (req.src_off, req.dst_off), self.cfg.chunk_size);
        let mut m = Machine::new(plan.route, len, offs.0, offs.1, chunk, (src, dst));
        if let Some(e) = failure {
            m.fail_destination(e);
        }
        m.set_always_ready(plan.src_file, plan.dst_file);
        m.set_direct_op(plan.via.op());
        self.stats.record_copies += u64::from(plan.route == machine::Route::Records);
        self.stats.copies += u64::from(plan.chose_copy);
        self.chains += usize::from(plan.mode == Mode::Chain);
        slot.state = State::Running(Running {
            m,
            plan,
            pipe: None,
            buf: None,
            with_driver: false,
            just_ready: false,
            waiting_pipe: false,
            known,
        });
    }

    /// Removes a finished transfer (nothing of it with the driver) and queues its
    /// completion.
    pub(crate) fn finish(&mut self, id: Id) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        debug_assert!(slot.running().is_none_or(|r| !r.with_driver));
        let slot = self.slots.remove(id);
        let (delivered, staged, result, pipe) = match slot.state {
            State::Queued(_) => (0, 0, Err(Error::Cancelled), None),
            State::Running(mut r) => {
                self.chains -= usize::from(r.plan.mode == Mode::Chain);
                if r.known {
                    self.known.release(&slot.src);
                    self.known.release(&slot.dst);
                }
                let mut result = r.m.outcome();
                if result.is_ok() && r.plan.shutdown_dst {
                    let fd = r.plan.dst;
                    result = sys::shutdown_write(fd).map_err(|e| Error::io(Op::Shutdown, fd, e));
                }
                (r.m.delivered(), r.m.staged(), result, r.pipe.take())
            }
        };
        if let Some(p) = pipe {
            self.pipes.give(p, staged > 0);
        }
        self.hand_out_pipes();
        self.stats.bytes += delivered;
        self.slots.done.push_back(Completion {
            id: id.transfer_id(),
            tag: slot.tag,
            delivered,
            undelivered: staged,
            result,
            source: slot.src,
            destination: slot.dst,
        });
    }

    /// Runs a transfer's inline steps (see step.rs). `None`: no such running transfer.
    pub(crate) fn run_inline(&mut self, id: Id) -> Option<(Park, u64)> {
        let r = self.slots.running(id)?;
        let mut cx = Step {
            id,
            pipes: &mut self.pipes,
            stats: &mut self.stats,
            budget: self.cfg.fairness_bytes as u64,
            guard: self.guard,
            moved: 0,
        };
        let park = step::run(r, &mut cx);
        let moved = cx.moved;
        self.hand_out_pipes();
        Some((park, moved))
    }

    /// Gives pipes returned while transfers waited to those transfers, and wakes them.
    pub(crate) fn hand_out_pipes(&mut self) {
        while self.pipes.has_handoffs() {
            for (w, pipe) in self.pipes.take_handoffs() {
                let Some(r) = self.slots.running(w) else {
                    // Finished meanwhile: the next waiter gets it.
                    match pipe {
                        Some(p) => self.pipes.give(p, false),
                        None => self.pipes.wake_next(),
                    }
                    continue;
                };
                r.waiting_pipe = false;
                match pipe {
                    Some(p) if r.pipe.is_none() => {
                        r.m.cap_chunk(p.capacity());
                        r.pipe = Some(p);
                        self.pipes.pool.counters.reused += 1;
                    }
                    Some(p) => self.pipes.pool.give(p, false),
                    None => {}
                }
                self.ready.push_back(w);
            }
        }
    }

    /// The counters, with the pool's.
    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.stats;
        let c = &self.pipes.pool.counters;
        s.pipes_created = c.created;
        s.pipes_reused = c.reused;
        s.pipes_discarded = c.discarded;
        s.pipe_bytes = self.pipes.pool.live_bytes() as u64;
        s
    }
}

/// Learns what the fds are (unless already known), checks them, makes sockets and pipes
/// non-blocking, and plans the transfer.
fn learn(
    (src, src_known): (i32, Option<FdInfo>),
    (dst, dst_known): (i32, Option<FdInfo>),
    req: &Request,
    caps: Caps,
) -> Result<(Plan, FdInfo, FdInfo)> {
    let mut s = match src_known {
        Some(i) => i,
        None => fds::probe(src)?,
    };
    let mut d = match dst_known {
        Some(i) => i,
        None => fds::probe(dst)?,
    };
    plan::check((src, &s), (dst, &d), req)?;
    if src_known.is_none() {
        fds::make_nonblocking(src, &mut s)?;
    }
    if dst_known.is_none() {
        fds::make_nonblocking(dst, &mut d)?;
    }
    let facts = plan::may_offload(&s, &d, req, caps).then(|| file_facts(src, req));
    let plan = plan::plan((src, &s), (dst, &d), req, caps, facts.flatten());
    Ok((plan, s, d))
}

/// Without an offset the file's own position is used (and advanced): cachestat is asked
/// about `position at start + bytes taken`, a hint that is right unless something else
/// moves the position meanwhile. Until end of file, the size now bounds the look-ahead.
fn file_facts(src: i32, req: &Request) -> Option<FileFacts> {
    let pos_base = match req.src_off {
        None => Some(sys::file_position(src).ok()?),
        Some(_) => None,
    };
    let size = match req.length {
        None => Some(sys::file_size(src).ok()?),
        Some(_) => None,
    };
    Some(FileFacts { pos_base, size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    fn pair() -> (Arc<OwnedFd>, Arc<OwnedFd>) {
        let (a, b) = UnixStream::pair().expect("socketpair");
        (Arc::new(a.into()), Arc::new(b.into()))
    }

    fn shared(fd: &Arc<OwnedFd>) -> Endpoint {
        Endpoint::shared(Arc::clone(fd))
    }

    fn id(core: &Core, t: TransferId) -> Id {
        core.slots.find(t).expect("in flight")
    }

    /// The shared-fd memo counts every transfer holding a shared fd and forgets the fd when
    /// the last one finishes, so a later `Arc` at the same address is asked about afresh.
    #[test]
    fn known_shared_fds_are_counted_and_forgotten() {
        let mut core = Core::new(Config::default());
        let (a, b) = pair();
        let t1 = core.submit(Transfer::new(shared(&a), shared(&b))).unwrap();
        let t2 = core.submit(Transfer::new(shared(&b), shared(&a))).unwrap();
        // Source and destination the same shared fd: counted twice.
        let t3 = core.submit(Transfer::new(shared(&a), shared(&a))).unwrap();
        let ids: Vec<Id> = [t1, t2, t3].iter().map(|&t| id(&core, t)).collect();
        for &i in &ids {
            core.start(i, false);
        }
        assert_eq!(core.known.holds(&shared(&a)), Some(4));
        assert_eq!(core.known.holds(&shared(&b)), Some(2));
        core.finish(ids[2]);
        assert_eq!(core.known.holds(&shared(&a)), Some(2));
        core.finish(ids[0]);
        core.finish(ids[1]);
        assert!(core.known.is_empty());
    }

    /// A transfer whose endpoints fail the checks is not counted.
    #[test]
    fn a_rejected_transfer_leaves_no_known_fd() {
        let mut core = Core::new(Config::default());
        let (a, b) = pair();
        let t = core
            .submit(Transfer::new(shared(&a), shared(&b)).source_offset(0))
            .unwrap();
        let i = id(&core, t);
        core.start(i, false);
        assert!(core.known.is_empty());
        core.finish(i);
        let c = core.slots.done.pop_front().unwrap();
        assert!(
            matches!(c.result, Err(Error::InvalidInput(_))),
            "{:?}",
            c.result
        );
    }
}
