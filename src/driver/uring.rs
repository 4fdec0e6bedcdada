//! The io_uring driver: pushes rounds of linked operations and readiness waits, reaps their
//! CQEs, and reports a round once all its CQEs are in, so CQE order does not matter and a
//! slot is never touched by the kernel after it is freed. `-ECANCELED` (the rest of a chain
//! after a short splice, or a cancel) means "not run".
//!
//! Every operation carries the token `Id::token(index)` (core/slots.rs): the transfer id
//! and the operation's place in its round. The round state (results so far, cancels sent)
//! lives in this driver's own table, indexed like the slab.
//!
//! # Safety
//! Pushing an SQE is unsafe because the kernel may use what it points to until the CQE. The
//! entries built here point at nothing in user memory (splice and poll take fds and
//! integers only) except the timer's timespec, which this driver owns (boxed) and
//! overwrites only after the kernel has read it at submission. The fds they name belong to
//! transfers the engine keeps, with their endpoints and pipe, until the round is reported.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, opcode, squeue, types};

use super::event::{Event, RoundFds};
use super::wake::{Timer, Wake};
use crate::config::Config;
use crate::core::id::{Id, MAX_ROUND_OPS, RESERVED_TOKENS};
use crate::error::{Error, Op, Result};
use crate::op::{Dir, OpKind, direct, drain, fill, poll};
use crate::stats::Stats;
use crate::sys;

/// Token of operations whose CQE needs no handling (cancels).
const INTERNAL: u64 = u64::MAX;
/// Token of the ring's timer (`IORING_OP_TIMEOUT`) for the earliest transfer timeout.
const TIMER: u64 = u64::MAX - 1;
/// How long dropping the engine waits for the kernel to give back cancelled operations.
const DROP_DEADLINE: Duration = Duration::from_secs(5);
/// A result not yet in.
const PENDING: i32 = i32::MIN;

/// One transfer's operations in the kernel.
#[derive(Debug, Default)]
struct Round {
    id: Option<Id>,
    ops: Vec<(OpKind, i32)>,
    pending: u32,
    cancel_sent: bool,
    /// The driver asked the kernel to give back this round's idle pipe.
    reclaim_sent: bool,
}

/// The ring and what drives it.
pub(crate) struct Uring {
    ring: IoUring,
    pub(super) wake: Wake,
    ext_arg: bool,
    sq_cap: usize,
    /// Rounds that did not fit in the submission queue; pushed first at the next submit.
    backlog: VecDeque<Vec<squeue::Entry>>,
    cqes: Vec<(u64, i32)>,
    /// Operations in the kernel (or the backlog) whose CQE has not been reaped.
    outstanding: usize,
    rounds: Vec<Round>,
    spare: Vec<Vec<(OpKind, i32)>>,
    /// The timer's expiry, read by the kernel when the `IORING_OP_TIMEOUT` is submitted.
    timer_ts: Box<types::Timespec>,
    timer: Timer,
    has_timeout_op: bool,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("ring_fd", &self.ring.as_raw_fd())
            .field("wake", &self.wake)
            .field("sq_entries", &self.sq_cap)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

impl Uring {
    /// Sets the ring up, or says why io_uring cannot be had here.
    pub(crate) fn setup(cfg: &Config) -> std::result::Result<Uring, String> {
        let entries = cfg.ring_entries.next_power_of_two();
        let ring = IoUring::builder()
            .setup_cqsize(entries.saturating_mul(2))
            .build(entries)
            .map_err(|e| format!("io_uring_setup refused: {e}"))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("IORING_REGISTER_PROBE refused: {e}"))?;
        for (code, name) in [
            (opcode::Splice::CODE, "IORING_OP_SPLICE"),
            (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
            (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        ] {
            let hidden = cfg.probe_hide_splice && code == opcode::Splice::CODE;
            if hidden || !probe.is_supported(code) {
                return Err(format!("the kernel's io_uring lacks {name}"));
            }
        }
        let wake = Wake::new().map_err(|e| format!("eventfd failed: {e}"))?;
        ring.submitter()
            .register_eventfd(wake.fd())
            .map_err(|e| format!("IORING_REGISTER_EVENTFD refused: {e}"))?;
        // Bound io-wq so splices that do block cannot spawn a thread each. Linux 5.15+;
        // older kernels answer EINVAL and keep their defaults.
        let n = cfg.iowq_max_workers.max(1);
        let _ = ring.submitter().register_iowq_max_workers(&mut [n, n]);
        let ext_arg = ring.params().is_feature_ext_arg();
        let sq_cap = ring.params().sq_entries() as usize;
        let mut wake = wake;
        wake.mark(); // the kernel may signal it from the first CQE on
        Ok(Uring {
            ring,
            wake,
            ext_arg,
            sq_cap,
            backlog: VecDeque::new(),
            cqes: Vec::new(),
            outstanding: 0,
            rounds: Vec::new(),
            spare: Vec::new(),
            timer_ts: Box::new(types::Timespec::new()),
            timer: Timer::default(),
            has_timeout_op: probe.is_supported(opcode::Timeout::CODE),
        })
    }

    /// The most operations one round may hold: the submission queue, and the index bits
    /// of a token.
    pub(crate) fn round_cap(&self) -> usize {
        self.sq_cap.min(MAX_ROUND_OPS)
    }

    pub(super) fn event_fd(&self) -> RawFd {
        self.wake.fd()
    }

    pub(super) fn begin_turn(&mut self) {}

    /// The kernel signals the eventfd for every CQE; it is reset only after a turn that
    /// reaped CQEs (a read on every turn would cost a syscall per `poll` for nothing), and
    /// reset before the final check so a CQE posted meanwhile signals anew.
    pub(super) fn end_turn(&mut self, runnable: bool) {
        self.wake.clear();
        if runnable || !self.ring.completion().is_empty() {
            self.wake.signal();
        }
    }

    fn round_mut(&mut self, id: Id) -> &mut Round {
        let i = id.index();
        if self.rounds.len() <= i {
            self.rounds.resize_with(i + 1, Round::default);
        }
        &mut self.rounds[i]
    }

    /// Records a round's operations and pushes its entries.
    fn start_round(
        &mut self,
        id: Id,
        kinds: impl Iterator<Item = OpKind>,
        entries: &[squeue::Entry],
        stats: &mut Stats,
    ) {
        let mut ops = self.spare.pop().unwrap_or_default();
        ops.clear();
        ops.extend(kinds.map(|k| (k, PENDING)));
        let round = self.round_mut(id);
        debug_assert!(round.id.is_none(), "two rounds of one transfer at once");
        *round = Round {
            id: Some(id),
            pending: ops.len() as u32,
            ops,
            cancel_sent: false,
            reclaim_sent: false,
        };
        self.push(entries, stats);
    }

    pub(super) fn arm(&mut self, id: Id, fd: RawFd, dir: Dir, stats: &mut Stats) {
        let kind = match dir {
            Dir::Read => OpKind::PollIn,
            Dir::Write => OpKind::PollOut,
        };
        let e = poll::sqe(fd, dir).user_data(id.token(0));
        self.start_round(id, std::iter::once(kind), &[e], stats);
    }

    /// Pushes the operations `ops` of one transfer, linked in order (a fill hard-linked to
    /// what follows, so a short fill still drains what it moved).
    pub(crate) fn push_round(
        &mut self,
        id: Id,
        ops: &[(OpKind, usize)],
        fds: RoundFds,
        stats: &mut Stats,
    ) {
        debug_assert!(!ops.is_empty() && ops.len() <= self.round_cap());
        let (mut src_off, mut dst_off) = (fds.src_off, fds.dst_off);
        let last = ops.len() - 1;
        let mut entries = Vec::with_capacity(ops.len());
        for (i, &(kind, len)) in ops.iter().enumerate() {
            let pipe = fds.pipe;
            let e = match kind {
                OpKind::PollIn => poll::sqe(fds.src, Dir::Read),
                OpKind::PollOut => poll::sqe(fds.dst, Dir::Write),
                OpKind::Fill => {
                    let (_, w) = pipe.expect("invariant: a fill's pipe is leased");
                    let e = fill::sqe(fds.src, src_off, w, len);
                    src_off = src_off.map(|o| o + len as u64);
                    e
                }
                OpKind::Drain => {
                    let (r, _) = pipe.expect("invariant: staged bytes are in a pipe");
                    let e = drain::sqe(r, fds.dst, dst_off, len);
                    dst_off = dst_off.map(|o| o + len as u64);
                    e
                }
                OpKind::Direct => direct::sqe(fds.src, src_off, fds.dst, dst_off, len),
            };
            let flags = match (i == last, kind) {
                (true, _) => squeue::Flags::empty(),
                // A short fill (the usual case for sockets) must still drain what it moved.
                (false, OpKind::Fill) => squeue::Flags::IO_HARDLINK,
                (false, _) => squeue::Flags::IO_LINK,
            };
            entries.push(e.flags(flags).user_data(id.token(i)));
        }
        stats.chain_rounds += 1;
        stats.polls += ops
            .iter()
            .filter(|(k, _)| matches!(k, OpKind::PollIn | OpKind::PollOut))
            .count() as u64;
        self.start_round(id, ops.iter().map(|o| o.0), &entries, stats);
    }

    pub(super) fn recycle(&mut self, ops: Vec<(OpKind, i32)>) {
        if self.spare.len() < 64 {
            self.spare.push(ops);
        }
    }

    /// Pushes entries whole (one link chain), submitting to make room if needed.
    fn push(&mut self, entries: &[squeue::Entry], stats: &mut Stats) {
        stats.sqes += entries.len() as u64;
        let mine = entries
            .iter()
            .filter(|e| e.get_user_data() < RESERVED_TOKENS);
        self.outstanding += mine.count();
        if self.backlog.is_empty() {
            for attempt in 0..2 {
                let mut sq = self.ring.submission();
                if sq.capacity() - sq.len() >= entries.len() {
                    // SAFETY: see the module's `# Safety`.
                    unsafe { sq.push_multiple(entries) }.expect("invariant: room was checked");
                    return;
                }
                drop(sq);
                if attempt == 0 {
                    stats.enters += 1;
                    let _ = self.ring.submit();
                }
            }
        }
        self.backlog.push_back(entries.to_vec());
    }

    fn drain_backlog(&mut self) {
        while let Some(round) = self.backlog.front() {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() < round.len() {
                return;
            }
            // SAFETY: see the module's `# Safety`.
            unsafe { sq.push_multiple(round) }.expect("invariant: room was checked");
            drop(sq);
            self.backlog.pop_front();
        }
    }

    /// Submits queued SQEs (one `io_uring_enter`) and moves the backlog in.
    pub(super) fn submit(&mut self, stats: &mut Stats) -> Result<()> {
        loop {
            self.drain_backlog();
            if self.ring.submission().is_empty() {
                return Ok(());
            }
            stats.enters += 1;
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The CQ is full (EBUSY) or the kernel is short of memory (EAGAIN): the
                // entries stay queued; the next turn reaps and tries again.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    return Ok(());
                }
                Err(e) => return Err(Error::io(Op::IoUringEnter, self.ring.as_raw_fd(), e)),
            }
            if self.backlog.is_empty() {
                return Ok(());
            }
        }
    }

    /// Reaps every CQE; a round whose last CQE is in becomes an event.
    pub(super) fn reap(&mut self, out: &mut Vec<Event>, stats: &mut Stats) -> Result<bool> {
        let before = out.len();
        for _ in 0..16 {
            self.cqes.clear();
            self.cqes
                .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            if self.cqes.is_empty() {
                if self.ring.submission().cq_overflow() {
                    // CQEs the kernel kept aside when the CQ was full (FEAT_NODROP): an
                    // enter with GETEVENTS flushes them into the ring.
                    stats.enters += 1;
                    stats.cq_overflows += 1;
                    let _ = self.ring.submit();
                    continue;
                }
                break;
            }
            self.wake.mark();
            let cqes = std::mem::take(&mut self.cqes);
            for &(token, res) in &cqes {
                self.on_cqe(token, res, out);
            }
            self.cqes = cqes;
        }
        Ok(out.len() > before)
    }

    fn on_cqe(&mut self, token: u64, res: i32, out: &mut Vec<Event>) {
        if token == INTERNAL {
            return;
        }
        if token == TIMER {
            self.timer.fired();
            return;
        }
        let (id, idx) = Id::from_token(token);
        let Some(round) = self.rounds.get_mut(id.index()).filter(|r| r.id == Some(id)) else {
            debug_assert!(false, "CQE for no round: {token:#x}");
            return;
        };
        let Some(op) = round.ops.get_mut(idx) else {
            debug_assert!(false, "CQE for an op outside the round: {token:#x}");
            return;
        };
        op.1 = res;
        round.pending -= 1;
        self.outstanding -= 1;
        if round.pending == 0 {
            round.id = None;
            let ops = std::mem::take(&mut round.ops);
            out.push(Event::Round { id, ops });
        }
    }

    pub(super) fn pending(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    pub(super) fn waiting(&self) -> bool {
        self.outstanding > 0
    }

    pub(super) fn block(
        &mut self,
        left: Option<Duration>,
        out: &mut Vec<Event>,
        stats: &mut Stats,
    ) -> Result<()> {
        self.wait_for_cqe(left, stats)?;
        self.reap(out, stats).map(drop)
    }

    fn wait_for_cqe(&mut self, left: Option<Duration>, stats: &mut Stats) -> Result<()> {
        stats.enters += 1;
        let r = if self.ext_arg {
            match left {
                Some(l) => {
                    let ts = types::Timespec::from(l);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                }
                None => self.ring.submitter().submit_and_wait(1),
            }
        } else {
            // Before Linux 5.11 there is no timeout argument: wait on the eventfd instead.
            self.ring
                .submit()
                .and_then(|_| sys::poll_in(self.wake.fd(), sys::timeout_ms(left)))
                .map(|_| 0)
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::io(Op::IoUringEnter, self.ring.as_raw_fd(), e)),
        }
    }

    /// Keeps an `IORING_OP_TIMEOUT` armed for the earliest transfer timeout, so its CQE
    /// makes the eventfd readable for a caller's own event loop when the time comes.
    pub(super) fn arm_timer(&mut self, at: Instant, stats: &mut Stats) -> Result<()> {
        if !self.has_timeout_op || !self.timer.needs(at) {
            return Ok(());
        }
        let d = at.saturating_duration_since(Instant::now());
        *self.timer_ts = types::Timespec::from(d.max(Duration::from_micros(1)));
        let ts: *const types::Timespec = &*self.timer_ts;
        let e = opcode::Timeout::new(ts).build().user_data(TIMER);
        self.timer.armed(at);
        self.push(&[e], stats);
        // Submit now: the kernel reads the timespec at submission, and a later arm may
        // overwrite it.
        self.submit(stats)
    }

    /// Cancels a transfer's operations still in the kernel; their CQEs end the round.
    pub(super) fn cancel(&mut self, id: Id, _fds: (RawFd, RawFd), stats: &mut Stats) -> bool {
        let Some(round) = self.rounds.get_mut(id.index()).filter(|r| r.id == Some(id)) else {
            return true;
        };
        if round.cancel_sent {
            return false;
        }
        round.cancel_sent = true;
        let targets: Vec<u64> = (round.ops.iter().enumerate())
            .filter(|(_, op)| op.1 == PENDING)
            .map(|(i, _)| id.token(i))
            .collect();
        for t in targets {
            let e = opcode::AsyncCancel::new(t).build().user_data(INTERNAL);
            self.push(&[e], stats);
        }
        false
    }

    pub(super) fn forget(&mut self, id: Id, _fds: (RawFd, RawFd)) {
        if let Some(r) = self.rounds.get_mut(id.index()).filter(|r| r.id == Some(id)) {
            debug_assert!(false, "a transfer finished with a round in the kernel");
            r.id = None;
        }
    }

    /// Frees a pipe held idle: a chain round `POLL_ADD → SPLICE → SPLICE` leases its pipe
    /// before the source is ready, so idle sources could hold the whole budget while
    /// ready transfers wait. Cancelling one such poll ends its round (every op
    /// `-ECANCELED`, nothing moved); the empty pipe goes to the waiter, and the idle
    /// transfer waits for readiness without a pipe.
    pub(super) fn reclaim_idle_pipe(
        &mut self,
        mut holds_idle: impl FnMut(Id) -> bool,
        stats: &mut Stats,
    ) {
        let victim = self.rounds.iter_mut().find(|r| {
            r.id.is_some()
                && !r.reclaim_sent
                && !r.cancel_sent
                && r.ops.len() > 1
                && r.ops[0] == (OpKind::PollIn, PENDING)
                && r.id.is_some_and(&mut holds_idle)
        });
        let Some(round) = victim else { return };
        round.reclaim_sent = true;
        let id = round.id.expect("invariant: found above");
        let e = opcode::AsyncCancel::new(id.token(0))
            .build()
            .user_data(INTERNAL);
        self.push(&[e], stats);
    }

    /// Cancels everything and reaps until the kernel holds nothing of ours, or until the
    /// deadline. Returns the transfers the kernel may still use.
    pub(super) fn shutdown(&mut self, stats: &mut Stats) -> Vec<Id> {
        let live: Vec<Id> = self.rounds.iter().filter_map(|r| r.id).collect();
        for id in live {
            self.cancel(id, (-1, -1), stats);
        }
        let deadline = Instant::now() + DROP_DEADLINE;
        let mut events = Vec::new();
        while self.outstanding > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let _ = self.submit(stats);
            if self
                .block(
                    Some(left.min(Duration::from_millis(100))),
                    &mut events,
                    stats,
                )
                .is_err()
            {
                break;
            }
            events.clear();
        }
        self.rounds.iter().filter_map(|r| r.id).collect()
    }
}
