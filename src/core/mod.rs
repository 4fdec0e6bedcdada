//! The engine's core: plain data and decisions, no io_uring and no epoll. It holds the
//! transfers ([`slots`]), plans each one ([`plan`], [`round`]), runs its state machine
//! ([`machine`]), carries out inline steps ([`step`]) and leases pipes ([`pipes`]).
//! The engine (engine.rs) connects it to a driver (driver/).

pub(crate) mod fan;
pub(crate) mod fan_step;
pub(crate) mod fds;
pub(crate) mod id;
pub(crate) mod machine;
pub(crate) mod pipes;
pub(crate) mod plan;
pub(crate) mod round;
pub(crate) mod slots;
pub(crate) mod step;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::completion::Completion;
use crate::config::Config;
use crate::endpoint::Endpoint;
use crate::error::{Error, Op, Rejected, Result};
use crate::fan_out::{FanOut, Policy, RejectedFanOut};
use crate::op::{Dir, poll};
use crate::stats::Stats;
use crate::sys::{self, FdInfo, SigpipeGuard};
use crate::transfer::{Transfer, TransferId};

use fan_step::{FanCx, FanPark};
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
    /// `/dev/null`, opened for the first fan-out: where a trunk's bytes that every leg has
    /// received are discarded.
    null: Option<OwnedFd>,
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
            null: None,
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
        if matches!(slot.state, State::Fan(_)) {
            self.start_fan(id);
            return;
        }
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
            State::Queued(_) | State::Fan(_) | State::Leg { .. } => {
                (0, 0, Err(Error::Cancelled), None)
            }
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
            branches: Vec::new(),
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
                if let Some(f) = self.slots.fan(w) {
                    f.waiting_pipe = false;
                    if let Some(p) = pipe {
                        match f.spare.replace(p) {
                            Some(old) => self.pipes.pool.give(old, false),
                            None => self.pipes.pool.counters.reused += 1,
                        }
                    }
                    self.queue_fan(w);
                    continue;
                }
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

/// A readiness wait to arm: the waiting slot, the fd, the direction.
pub(crate) type Wait = (Id, RawFd, Dir);

/// Fan-outs (fan.rs decides, fan_step.rs runs): one source, 2 to 64 destinations.
impl Core {
    /// Queues a fan-out; no syscall.
    pub(crate) fn submit_fan(&mut self, f: FanOut) -> Result<TransferId, RejectedFanOut> {
        let id = self.slots.insert_fan(f)?;
        self.stats.submitted += 1;
        Ok(id.transfer_id())
    }

    /// A fan-out's linger is over: its best-effort legs still behind are dropped and it
    /// runs again to finish. `false`: `id` is no fan-out.
    pub(crate) fn end_linger(&mut self, id: Id) -> bool {
        let Some(f) = self.slots.fan(id) else {
            return false;
        };
        f.end_linger();
        self.queue_fan(id);
        true
    }

    /// Puts a fan-out on the ready queue, once.
    pub(crate) fn queue_fan(&mut self, id: Id) {
        if let Some(f) = self.slots.fan(id)
            && !f.queued
        {
            f.queued = true;
            self.ready.push_back(id);
        }
    }

    /// Starts a fan-out: learns what its fds are and checks them; bad input stops it with
    /// the error at once (it finishes at its first run).
    fn start_fan(&mut self, id: Id) {
        let budget_ok = self.pipes.pool.room_for(2);
        let mut null_err = None;
        if self.null.is_none() {
            match sys::open_null() {
                Ok(n) => self.null = Some(n),
                Err(e) => null_err = Some(Error::io(Op::Pipe, -1, e)),
            }
        }
        let Some(f) = self.slots.fan(id) else { return };
        f.started = true;
        let src = f.src;
        let dsts: Vec<RawFd> = f.legs.iter().map(|l| l.dst).collect();
        let r = learn_fan(src, &dsts).and_then(|kinds| {
            let needs_pipes = kinds.iter().skip(1).any(|k| !k.direct);
            if needs_pipes && !budget_ok {
                return Err(Error::PipeBudget(
                    "a fan-out needs two pipes at least (its trunk and one destination's) \
                     within the budget"
                        .into(),
                ));
            }
            Ok(kinds)
        });
        let Some(f) = self.slots.fan(id) else { return };
        match r {
            Ok(kinds) => {
                f.src_pollable = kinds[0].pollable;
                for (l, k) in f.legs.iter_mut().zip(&kinds[1..]) {
                    l.direct = k.direct && l.policy == Policy::Required;
                    l.socket = k.socket;
                    l.pollable = k.pollable;
                }
                if let Some(e) = null_err {
                    f.src_error = Some(e);
                    f.stop = Some(fan::Stop::Source);
                }
            }
            Err(e) => {
                f.src_error = Some(e);
                f.stop = Some(fan::Stop::Source);
            }
        }
        self.queue_fan(id);
    }

    /// The end of a readiness wait of a fan-out's source or leg: `None` if `part` is
    /// neither (an ordinary transfer); else the fan-out, queued to run. `res`: `None` for a
    /// wait the kernel gave back cancelled.
    pub(crate) fn fan_ready(&mut self, part: Id, res: Option<Result<u32, i32>>) -> Option<()> {
        let (hub, leg) = match self.slots.leg(part) {
            Some((hub, i)) => (hub, Some(i)),
            None => {
                self.slots.fan(part)?;
                (part, None)
            }
        };
        let f = self.slots.fan(hub)?;
        f.on_ready(leg, res.map(poll::outcome));
        self.queue_fan(hub);
        Some(())
    }

    /// Whether `id` is a fan-out or one of its legs.
    pub(crate) fn is_fan_part(&mut self, id: Id) -> bool {
        self.slots.leg(id).is_some() || self.slots.fan(id).is_some()
    }

    /// Runs a fan-out inline. Returns why it stopped, the bytes it took, and the waits to
    /// arm: `(id, fd, dir)`.
    pub(crate) fn run_fan(&mut self, id: Id) -> Option<(FanPark, u64, Vec<Wait>)> {
        let null = self.null.as_ref().map_or(-1, |n| n.as_raw_fd());
        let f = self.slots.fan(id)?;
        f.queued = false;
        let mut cx = FanCx {
            id,
            pipes: &mut self.pipes,
            stats: &mut self.stats,
            budget: self.cfg.fairness_bytes as u64,
            guard: self.guard,
            null,
            moved: 0,
        };
        let was_done = f.main_done;
        let park = fan_step::run(f, &mut cx);
        let moved = cx.moved;
        // The main path got done in this run with a best-effort leg still behind.
        let linger = f
            .linger
            .filter(|_| !was_done && f.main_done && f.lingering());
        let mut arms = Vec::new();
        if park == FanPark::Wait {
            if f.want_read && !f.src_with_driver && f.src_pollable {
                f.src_with_driver = true;
                arms.push((id, f.src, Dir::Read));
            }
            for l in f.legs.iter_mut().filter(|l| l.live() && l.want_write) {
                if !l.with_driver && l.pollable {
                    l.with_driver = true;
                    arms.push((l.id, l.dst, Dir::Write));
                }
            }
        }
        if let Some(d) = linger {
            self.slots.start_timer(id, d);
        }
        self.hand_out_pipes();
        Some((park, moved, arms))
    }

    /// A stopped fan-out's waits still with the driver: `(id, fds)` of each.
    pub(crate) fn fan_waits(&mut self, id: Id) -> Vec<(Id, (RawFd, RawFd))> {
        let Some(f) = self.slots.fan(id) else {
            return Vec::new();
        };
        let mut v = Vec::new();
        if f.src_with_driver {
            v.push((id, (f.src, -1)));
        }
        v.extend(
            f.legs
                .iter()
                .filter(|l| l.with_driver)
                .map(|l| (l.id, (-1, l.dst))),
        );
        v
    }

    /// Notes that the driver has let go of a fan-out's wait `part` (it was dropped).
    pub(crate) fn fan_wait_dropped(&mut self, part: Id) {
        self.fan_ready(part, None);
    }

    /// Every slot of a fan-out (its own, then its legs') with its fds.
    pub(crate) fn fan_parts(&mut self, id: Id) -> Vec<(Id, (RawFd, RawFd))> {
        let Some(f) = self.slots.fan(id) else {
            return Vec::new();
        };
        let mut v = vec![(id, (f.src, -1))];
        v.extend(f.legs.iter().map(|l| (l.id, (-1, l.dst))));
        v
    }

    /// Removes a finished fan-out (nothing of it with the driver) and its legs, gives back
    /// its pipes (closing those holding bytes) and queues its completion.
    pub(crate) fn finish_fan(&mut self, id: Id) {
        let Some(f) = self.slots.fan(id) else { return };
        debug_assert!(!f.outstanding());
        let leg_ids: Vec<Id> = f.legs.iter().map(|l| l.id).collect();
        let slot = self.slots.remove(id);
        let State::Fan(mut f) = slot.state else {
            return;
        };
        let dsts: Vec<Endpoint> = leg_ids.iter().map(|&l| self.slots.remove(l).dst).collect();
        if let Some(p) = f.trunk.take() {
            self.pipes.give(p, f.head != f.taken);
        }
        for l in &mut f.legs {
            for s in l.backlog.drain(..) {
                self.pipes.give(s.pipe, s.bytes > 0);
            }
        }
        fan_step::release_idle(&mut f, &mut self.pipes);
        self.hand_out_pipes();
        let mut result = f.outcome();
        let undelivered = if result.is_ok() { 0 } else { f.undelivered() };
        let mut branches = f.branches(dsts);
        if result.is_ok() && f.shutdown {
            result = shutdown_legs(&mut branches);
        }
        self.stats.bytes += f.taken;
        self.slots.done.push_back(Completion {
            id: id.transfer_id(),
            tag: slot.tag,
            delivered: f.taken,
            undelivered,
            result,
            source: slot.src,
            destination: Endpoint::detached(),
            branches,
        });
    }
}

/// Shuts down the write side of every best-effort socket destination that got every byte;
/// the first failure is the fan-out's result. (A fan-out completes `Ok` only after its main
/// path was done, when `fan_step` shut the required ones down already.)
fn shutdown_legs(branches: &mut [crate::fan_out::Branch]) -> Result<()> {
    let mut out = Ok(());
    let best_effort = branches.iter_mut().filter(|b| b.policy != Policy::Required);
    for b in best_effort.filter(|b| b.result.is_ok()) {
        let fd = b.destination.as_raw_fd();
        if sys::fd_kind(fd).is_ok_and(|(k, _)| k == sys::FdKind::Socket)
            && let Err(e) = sys::shutdown_write(fd)
            && out.is_ok()
        {
            out = Err(Error::io(Op::Shutdown, fd, e));
        }
    }
    out
}

/// What a fan-out needs to know of one of its fds.
#[derive(Debug, Clone, Copy)]
struct FanFd {
    pollable: bool,
    socket: bool,
    /// A pipe: teed into directly (a destination).
    direct: bool,
}

/// Learns a fan-out's fds (source first), checks them and makes sockets and pipes
/// non-blocking. Byte streams only: a record socket would have its records cut.
fn learn_fan(src: RawFd, dsts: &[RawFd]) -> Result<Vec<FanFd>> {
    let mut out = Vec::with_capacity(dsts.len() + 1);
    for (i, &fd) in std::iter::once(&src).chain(dsts).enumerate() {
        let what = if i == 0 { "source" } else { "destination" };
        let mut info = fds::probe(fd)?;
        let kind = info.kind;
        let ok = matches!(
            kind,
            sys::FdKind::Socket | sys::FdKind::Pipe | sys::FdKind::File
        );
        if !ok || info.records {
            return Err(Error::InvalidInput(format!(
                "fan-out {what} fd {fd}: only byte streams (TCP, Unix stream sockets, pipes, \
                 regular files) can be fanned out"
            )));
        }
        if i > 0 && (fd == src || dsts[..i - 1].contains(&fd)) {
            return Err(Error::InvalidInput(format!(
                "fan-out destination fd {fd} appears twice (or is the source)"
            )));
        }
        fds::make_nonblocking(fd, &mut info)?;
        out.push(FanFd {
            pollable: kind != sys::FdKind::File,
            socket: kind == sys::FdKind::Socket,
            direct: kind == sys::FdKind::Pipe,
        });
    }
    Ok(out)
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
