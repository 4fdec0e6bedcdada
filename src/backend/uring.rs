//! The io_uring backend.
//!
//! Every operation carries `user_data = generation << 40 | slot << 8 | index`, where `index`
//! is its place in the slot's current round. A round is one link chain:
//! - inline strategy: `[POLL_ADD]`; when it fires, the engine's thread splices
//!   ([`super::inline`]);
//! - chain strategy, pollable source: `POLL_ADD(src) → SPLICE(src → pipe) =hard=> SPLICE(pipe →
//!   dst)`; regular-file source: up to `chain_depth` pairs `SPLICE(file → pipe) =hard=>
//!   SPLICE(pipe → dst) → …`; bytes left in the pipe: `POLL_ADD(dst, POLLOUT) → SPLICE(pipe →
//!   dst)`; one side a pipe: `POLL_ADD → SPLICE(src → dst)`.
//!
//! Results are recorded as CQEs arrive and applied to the state machine in submission
//! order once the round's last CQE is in, so CQE order does not matter and a slot is never
//! touched by the kernel after it is freed. `-ECANCELED` (the rest of a chain after a short
//! splice, or a cancel) means "not run".
//!
//! # Safety
//! Pushing an SQE is unsafe because the kernel may use what it points to until the CQE. The
//! entries built here point at nothing in user memory (splice and poll take fds and
//! integers only), and the fds they name belong to slots that stay allocated, with their
//! endpoints and pipe, until every CQE of the round has been reaped.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, opcode, squeue, types};

use super::inline::{self, Dir, Readiness};
use super::{RoundKind, RoundOp};
use crate::builder::Builder;
use crate::error::{Error, Op, Result};
use crate::inflight::{InFlight, Key, Mode};
use crate::machine::{Action, Route};
use crate::sys;

/// `user_data` of operations whose CQE needs no handling (cancels).
const INTERNAL: u64 = u64::MAX;
/// `user_data` of the ring's timer (`IORING_OP_TIMEOUT`) for the earliest transfer timeout.
const TIMER: u64 = u64::MAX - 1;
/// How long dropping the engine waits for the kernel to give back cancelled operations.
const DROP_DEADLINE: Duration = Duration::from_secs(5);

/// Most operations one round may hold: the index has 8 bits of `user_data`
/// ([`Builder::build`] bounds `chain_depth` to fit, and `advance` truncates to it).
pub(crate) const MAX_ROUND_OPS: usize = 256;

fn user_data(k: Key, idx: usize) -> u64 {
    debug_assert!(idx < MAX_ROUND_OPS && k.0 <= u32::MAX as usize && k.1 < 1 << 24);
    ((k.1 as u64) << 40) | ((k.0 as u64) << 8) | idx as u64
}

fn parse_user_data(ud: u64) -> (Key, usize) {
    let idx = (ud & 0xFF) as usize;
    let key = ((ud >> 8) & 0xFFFF_FFFF) as usize;
    let generation = (ud >> 40) as u32;
    ((key, generation), idx)
}

/// What the kernel can do, as far as this backend is concerned.
pub(crate) fn setup(cfg: &Builder) -> std::result::Result<Uring, (Error, String)> {
    let entries = cfg.ring_entries.next_power_of_two();
    let ring = IoUring::builder()
        .setup_cqsize(entries.saturating_mul(2))
        .build(entries)
        .map_err(|e| {
            let why = format!("io_uring_setup refused: {e}");
            (Error::io(Op::IoUringSetup, -1, e), why)
        })?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        let why = format!("IORING_REGISTER_PROBE refused: {e}");
        (Error::io(Op::IoUringRegister, ring.as_raw_fd(), e), why)
    })?;
    for (code, name) in [
        (opcode::Splice::CODE, "IORING_OP_SPLICE"),
        (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
    ] {
        let hidden = cfg.probe_hide_splice && code == opcode::Splice::CODE;
        if hidden || !probe.is_supported(code) {
            let why = format!("the kernel's io_uring lacks {name}");
            return Err((Error::Unsupported(why.clone()), why));
        }
    }
    let eventfd = sys::eventfd().map_err(|e| {
        let why = format!("eventfd failed: {e}");
        (Error::io(Op::Eventfd, -1, e), why)
    })?;
    ring.submitter()
        .register_eventfd(eventfd.as_raw_fd())
        .map_err(|e| {
            let why = format!("IORING_REGISTER_EVENTFD refused: {e}");
            (Error::io(Op::IoUringRegister, ring.as_raw_fd(), e), why)
        })?;
    // Bound io-wq so splices that do block cannot spawn a thread each. Linux 5.15+; older
    // kernels answer EINVAL and keep their defaults.
    let n = cfg.iowq_max_workers.max(1);
    let _ = ring.submitter().register_iowq_max_workers(&mut [n, n]);
    let ext_arg = ring.params().is_feature_ext_arg();
    let sq_cap = ring.params().sq_entries() as usize;
    Ok(Uring {
        ring,
        eventfd,
        ext_arg,
        sq_cap,
        depth: cfg.chain_depth,
        backlog: VecDeque::new(),
        cqes: Vec::new(),
        outstanding: 0,
        sigpipe_guard: !sys::sigpipe_ignored(),
        timer_ts: Box::new(types::Timespec::new()),
        timer_armed: None,
        has_timeout_op: probe.is_supported(opcode::Timeout::CODE),
        eventfd_dirty: true,
    })
}

/// The ring and what drives it.
pub(crate) struct Uring {
    ring: IoUring,
    eventfd: OwnedFd,
    ext_arg: bool,
    sq_cap: usize,
    depth: usize,
    /// Rounds that did not fit in the submission queue; pushed first at the next submit.
    backlog: VecDeque<Vec<squeue::Entry>>,
    cqes: Vec<(u64, i32)>,
    /// Operations in the kernel (or the backlog) whose CQE has not been reaped.
    outstanding: usize,
    sigpipe_guard: bool,
    /// The timer's expiry, read by the kernel when the `IORING_OP_TIMEOUT` is submitted.
    timer_ts: Box<types::Timespec>,
    /// When the armed timer fires; `None` when none is armed.
    timer_armed: Option<Instant>,
    has_timeout_op: bool,
    /// Whether the eventfd may be readable: CQEs were seen or the engine signalled it.
    eventfd_dirty: bool,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("ring_fd", &self.ring.as_raw_fd())
            .field("eventfd", &self.eventfd)
            .field("sq_entries", &self.sq_cap)
            .field("outstanding", &self.outstanding)
            .finish()
    }
}

impl Uring {
    pub(crate) fn event_fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// One turn of the engine: start new transfers, reap CQEs, run inline work, submit.
    /// With `block`, waits (up to the timeout) until at least one completion is ready.
    pub(crate) fn turn(
        &mut self,
        fl: &mut InFlight,
        block: Option<Option<Duration>>,
    ) -> Result<()> {
        let deadline = block.flatten().map(|t| Instant::now() + t);
        loop {
            for k in std::mem::take(&mut fl.starting) {
                fl.start(k, true);
                self.advance(fl, k);
            }
            for k in fl.expired(Instant::now()) {
                self.cancel(fl, k);
            }
            for _ in 0..3 {
                self.reap(fl);
                let guard = self.sigpipe_guard;
                inline::run_ready(self, fl, guard);
                self.submit(fl)?;
                if self.ring.completion().is_empty() {
                    break;
                }
            }
            if !fl.done.is_empty() || block.is_none() || fl.slots.is_empty() {
                break;
            }
            if !fl.ready.is_empty() || !fl.starting.is_empty() {
                continue;
            }
            if self.outstanding == 0 {
                // Nothing in the kernel and nothing runnable: nothing can wake us.
                break;
            }
            let Some(left) = super::block_time(deadline, fl.next_timer()) else {
                break;
            };
            self.block_for_cqe(fl, left)?;
        }
        self.arm_timer(fl)?;
        self.settle_eventfd(fl);
        Ok(())
    }

    /// Leaves the eventfd readable exactly when the caller's loop has a reason to call
    /// `poll` again. The kernel signals it for every CQE; it is reset only after a turn
    /// that reaped CQEs (a read on every turn would cost a syscall per `poll` for
    /// nothing), and reset before the final check so a CQE posted meanwhile signals anew.
    fn settle_eventfd(&mut self, fl: &InFlight) {
        let fd = self.eventfd.as_raw_fd();
        if std::mem::take(&mut self.eventfd_dirty) {
            sys::eventfd_clear(fd);
        }
        let more = !fl.ready.is_empty() || !fl.starting.is_empty();
        if more || !self.ring.completion().is_empty() {
            self.wake();
        }
    }

    /// Makes the eventfd readable until the next turn that reaps.
    pub(crate) fn wake(&mut self) {
        sys::eventfd_signal(self.eventfd.as_raw_fd());
        self.eventfd_dirty = true;
    }

    /// Keeps an `IORING_OP_TIMEOUT` armed for the earliest transfer timeout, so its CQE
    /// makes the eventfd readable for a caller's own event loop when the time comes.
    fn arm_timer(&mut self, fl: &mut InFlight) -> Result<()> {
        let Some(at) = fl.next_timer() else {
            return Ok(());
        };
        if !self.has_timeout_op || self.timer_armed.is_some_and(|a| a <= at) {
            return Ok(());
        }
        let d = at.saturating_duration_since(Instant::now());
        *self.timer_ts = types::Timespec::from(d.max(Duration::from_micros(1)));
        let ts: *const types::Timespec = &*self.timer_ts;
        let e = opcode::Timeout::new(ts).build().user_data(TIMER);
        self.timer_armed = Some(at);
        self.push(fl, &[e]);
        // Submit now: the kernel reads the timespec at submission, and a later arm may
        // overwrite it.
        self.submit(fl)
    }

    fn block_for_cqe(&mut self, fl: &mut InFlight, left: Option<Duration>) -> Result<()> {
        fl.stats.enters += 1;
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
                .and_then(|_| sys::poll_in(self.eventfd.as_raw_fd(), sys::timeout_ms(left)))
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

    /// Submits queued SQEs (one `io_uring_enter`) and moves the backlog in.
    fn submit(&mut self, fl: &mut InFlight) -> Result<()> {
        loop {
            self.drain_backlog();
            if self.ring.submission().is_empty() {
                return Ok(());
            }
            fl.stats.enters += 1;
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

    fn drain_backlog(&mut self) {
        while let Some(round) = self.backlog.front() {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() < round.len() {
                return;
            }
            // SAFETY: see the module's `# Safety`: the entries reference no user memory and
            // their fds stay open until their CQEs are reaped.
            unsafe { sq.push_multiple(round) }.expect("invariant: room was checked");
            drop(sq);
            self.backlog.pop_front();
        }
    }

    /// Pushes one round (a link chain) whole, submitting to make room if needed.
    fn push(&mut self, fl: &mut InFlight, entries: &[squeue::Entry]) {
        fl.stats.sqes += entries.len() as u64;
        self.outstanding += entries.iter().filter(|e| e.get_user_data() < TIMER).count();
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
                    fl.stats.enters += 1;
                    let _ = self.ring.submit();
                }
            }
        }
        self.backlog.push_back(entries.to_vec());
    }

    /// Reaps every CQE, applying finished rounds.
    fn reap(&mut self, fl: &mut InFlight) {
        for _ in 0..16 {
            self.cqes.clear();
            self.cqes
                .extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            if !self.cqes.is_empty() {
                self.eventfd_dirty = true;
            }
            if self.cqes.is_empty() {
                if self.ring.submission().cq_overflow() {
                    // CQEs the kernel kept aside when the CQ was full (FEAT_NODROP): an
                    // enter with GETEVENTS flushes them into the ring.
                    fl.stats.enters += 1;
                    fl.stats.cq_overflows += 1;
                    let _ = self.ring.submit();
                    continue;
                }
                return;
            }
            let cqes = std::mem::take(&mut self.cqes);
            for &(ud, res) in &cqes {
                self.on_cqe(fl, ud, res);
            }
            self.cqes = cqes;
        }
    }

    fn on_cqe(&mut self, fl: &mut InFlight, ud: u64, res: i32) {
        if ud == INTERNAL {
            return;
        }
        if ud == TIMER {
            self.timer_armed = None;
            return;
        }
        let (k, idx) = parse_user_data(ud);
        let Some(slot) = fl.get(k) else {
            debug_assert!(false, "CQE for a freed slot: {ud:#x}");
            return;
        };
        let Some(op) = slot.round.get_mut(idx) else {
            debug_assert!(false, "CQE for an op outside the round: {ud:#x}");
            return;
        };
        op.res = Some(res);
        slot.in_kernel -= 1;
        self.outstanding -= 1;
        if slot.in_kernel == 0 {
            apply_round(fl, k);
            fl.note_progress(k);
            self.advance(fl, k);
        }
    }

    /// Decides what a transfer with nothing in the kernel does next.
    fn advance(&mut self, fl: &mut InFlight, k: Key) {
        let Some(slot) = fl.get(k) else { return };
        if slot.in_kernel > 0 || slot.machine.is_none() {
            return;
        }
        let action = slot.machine().next();
        if action == Action::Finish || self.runs_inline(slot) {
            inline::advance(self, fl, k, action);
        } else {
            self.plan_chain(fl, k, action);
        }
    }

    fn arm_poll(&mut self, fl: &mut InFlight, k: Key, kind: RoundKind) {
        let Some(slot) = fl.get(k) else { return };
        let (fd, events) = match kind {
            RoundKind::PollIn => (slot.src_fd, libc::POLLIN),
            _ => (slot.dst_fd, libc::POLLOUT),
        };
        slot.round.clear();
        slot.round.push(RoundOp { kind, res: None });
        slot.in_kernel = 1;
        let e = opcode::PollAdd::new(types::Fd(fd), events as u32)
            .build()
            .user_data(user_data(k, 0));
        fl.stats.polls += 1;
        self.push(fl, &[e]);
    }

    /// Plans and pushes one chain round.
    fn plan_chain(&mut self, fl: &mut InFlight, k: Key, action: Action) {
        let depth = self.depth.min(self.sq_cap / 2).max(1);
        // A round never outgrows the submission queue, nor the index bits of `user_data`.
        let cap = self.sq_cap.min(MAX_ROUND_OPS);
        let slot = fl.get(k).expect("invariant: caller checked the slot");
        let fresh = std::mem::take(&mut slot.fresh);
        let mut kinds: Vec<(RoundKind, usize)> = Vec::with_capacity(1 + 2 * depth);
        match action {
            Action::Drain { len } => {
                // Bytes left in the pipe after a short drain: the destination was full.
                if slot.dst_pollable && !fresh {
                    kinds.push((RoundKind::PollOut, 0));
                }
                kinds.push((RoundKind::Drain, len));
            }
            Action::WaitWritable => {
                kinds.push((RoundKind::PollOut, 0));
                let m = slot.machine();
                match m.route() {
                    Route::Direct => kinds.push((RoundKind::Direct, m.next_len())),
                    _ => kinds.push((RoundKind::Drain, m.staged() as usize)),
                }
            }
            Action::WaitReadable | Action::Direct { .. } | Action::Fill { .. } => {
                let wait = action == Action::WaitReadable || (slot.src_pollable && !fresh);
                let direct = slot.machine().route() == Route::Direct;
                if !direct {
                    // Lease the pipe now; with no pipe to be had, wait for readiness
                    // first so an idle source holds no pipe.
                    let queue = !wait;
                    if !fl.lease_pipe(k, queue) {
                        if wait {
                            self.arm_poll(fl, k, RoundKind::PollIn);
                        } else {
                            self.pipe_wanted(fl);
                        }
                        return;
                    }
                }
                let slot = fl.get(k).expect("invariant: slot exists");
                if slot
                    .machine
                    .as_ref()
                    .is_some_and(|m| m.next() == Action::Finish)
                {
                    // Pipe creation failed: the machine holds the error.
                    fl.finish(k);
                    return;
                }
                if wait {
                    kinds.push((RoundKind::PollIn, 0));
                }
                let pairs = if slot.src_pollable { 1 } else { depth };
                let m = slot.machine();
                if direct {
                    kinds.push((RoundKind::Direct, m.next_len()));
                } else {
                    let cap_pairs = (cap - kinds.len()) / 2;
                    let mut left = m.remaining();
                    let chunk = m.next_len();
                    for _ in 0..pairs.min(cap_pairs).max(1) {
                        let len = match left {
                            Some(0) => break,
                            Some(r) => (r as usize).min(chunk),
                            None => chunk,
                        };
                        kinds.push((RoundKind::Fill, len));
                        kinds.push((RoundKind::Drain, len));
                        if let Some(r) = &mut left {
                            *r -= len as u64;
                        }
                    }
                }
            }
            Action::Finish => unreachable!("advance finishes these"),
        }
        kinds.truncate(cap);
        self.push_round(fl, k, &kinds);
    }

    /// Pushes one round: the operations `kinds` of slot `k`, linked in order (a fill
    /// hard-linked to what follows, so a short fill still drains what it moved).
    fn push_round(&mut self, fl: &mut InFlight, k: Key, kinds: &[(RoundKind, usize)]) {
        let slot = fl.get(k).expect("invariant: slot exists");
        let m = slot.machine.as_ref().expect("invariant: started");
        let pipe = slot.pipe.as_ref().map(|p| (p.read_fd(), p.write_fd()));
        let (src, dst) = (slot.src_fd, slot.dst_fd);
        let mut src_off = m.src_off();
        let mut dst_off = m.dst_off();
        let off = |o: Option<u64>| o.map_or(-1, |v| v as i64);
        let mut entries = Vec::with_capacity(kinds.len());
        let last = kinds.len() - 1;
        slot.round.clear();
        for (i, &(kind, len)) in kinds.iter().enumerate() {
            let len32 = u32::try_from(len).unwrap_or(u32::MAX);
            let e = match kind {
                RoundKind::PollIn => {
                    opcode::PollAdd::new(types::Fd(src), libc::POLLIN as u32).build()
                }
                RoundKind::PollOut => {
                    opcode::PollAdd::new(types::Fd(dst), libc::POLLOUT as u32).build()
                }
                RoundKind::Fill => {
                    let (_, w) = pipe.expect("invariant: leased above");
                    let e =
                        opcode::Splice::new(types::Fd(src), off(src_off), types::Fd(w), -1, len32)
                            .flags(sys::SPLICE_FLAGS)
                            .build();
                    src_off = src_off.map(|o| o + len as u64);
                    e
                }
                RoundKind::Drain => {
                    let (r, _) = pipe.expect("invariant: staged bytes are in a pipe");
                    let e =
                        opcode::Splice::new(types::Fd(r), -1, types::Fd(dst), off(dst_off), len32)
                            .flags(sys::SPLICE_FLAGS)
                            .build();
                    dst_off = dst_off.map(|o| o + len as u64);
                    e
                }
                RoundKind::Direct => opcode::Splice::new(
                    types::Fd(src),
                    off(src_off),
                    types::Fd(dst),
                    off(dst_off),
                    len32,
                )
                .flags(sys::SPLICE_FLAGS)
                .build(),
            };
            let flags = if i == last {
                squeue::Flags::empty()
            } else if kind == RoundKind::Fill {
                // A short fill (the usual case for sockets) must still drain what it moved.
                squeue::Flags::IO_HARDLINK
            } else {
                squeue::Flags::IO_LINK
            };
            entries.push(e.flags(flags).user_data(user_data(k, i)));
            slot.round.push(RoundOp { kind, res: None });
        }
        slot.in_kernel = entries.len() as u32;
        fl.stats.chain_rounds += 1;
        fl.stats.polls += kinds
            .iter()
            .filter(|(k, _)| matches!(k, RoundKind::PollIn | RoundKind::PollOut))
            .count() as u64;
        self.push(fl, &entries);
    }

    /// Cancels a transfer: at once if nothing of it is in the kernel, else by cancelling
    /// its operations and finishing when their CQEs are in.
    pub(crate) fn cancel(&mut self, fl: &mut InFlight, k: Key) {
        let Some(slot) = fl.get(k) else { return };
        match slot.machine.as_mut() {
            Some(m) => m.cancel(),
            None => {
                fl.finish(k);
                return;
            }
        }
        if slot.in_kernel == 0 {
            fl.finish(k);
            return;
        }
        if slot.cancel_sent {
            return;
        }
        slot.cancel_sent = true;
        let targets: Vec<u64> = slot
            .round
            .iter()
            .enumerate()
            .filter(|(_, op)| op.res.is_none())
            .map(|(i, _)| user_data(k, i))
            .collect();
        for t in targets {
            let e = opcode::AsyncCancel::new(t).build().user_data(INTERNAL);
            self.push(fl, &[e]);
        }
    }

    /// Cancels everything and reaps until the kernel holds nothing of ours, or until the
    /// deadline. Returns the keys of slots the kernel may still use.
    pub(crate) fn shutdown(&mut self, fl: &mut InFlight) -> Vec<usize> {
        let keys: Vec<Key> = fl.slots.iter().map(|(i, s)| (i, s.generation)).collect();
        for k in keys {
            self.cancel(fl, k);
        }
        let deadline = Instant::now() + DROP_DEADLINE;
        while self.outstanding > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let _ = self.submit(fl);
            if self
                .block_for_cqe(fl, Some(left.min(Duration::from_millis(100))))
                .is_err()
            {
                break;
            }
            self.reap_for_shutdown(fl);
        }
        fl.slots
            .iter()
            .filter(|(_, s)| s.in_kernel > 0)
            .map(|(i, _)| i)
            .collect()
    }

    fn reap_for_shutdown(&mut self, fl: &mut InFlight) {
        self.reap(fl);
        // Rounds that finished were advanced; a cancelled machine finishes at once.
        fl.ready.clear();
    }
}

/// Applies a finished round's results to the state machine, in submission order.
fn apply_round(fl: &mut InFlight, k: Key) {
    let Some(slot) = fl.get(k) else { return };
    let round = std::mem::take(&mut slot.round);
    let (src_fd, dst_fd) = (slot.src_fd, slot.dst_fd);
    let mut fresh = false;
    for op in &round {
        let res = op.res.expect("invariant: every CQE of the round is in");
        if res == -libc::ECANCELED {
            continue;
        }
        let r = if res >= 0 {
            Ok(res as usize)
        } else {
            Err(-res)
        };
        let m = slot.machine();
        fresh = false;
        match op.kind {
            RoundKind::PollIn | RoundKind::PollOut => match r {
                Ok(mask) if mask & libc::POLLNVAL as usize != 0 => {
                    let fd = if op.kind == RoundKind::PollIn {
                        src_fd
                    } else {
                        dst_fd
                    };
                    m.fail_source(inline::poll_error(fd, libc::EBADF));
                }
                Ok(_) => {
                    m.ready();
                    fresh = true;
                }
                Err(e) if op.kind == RoundKind::PollIn => {
                    m.fail_source(inline::poll_error(src_fd, e))
                }
                Err(e) => m.fail_destination(inline::poll_error(dst_fd, e)),
            },
            RoundKind::Fill => m.on_fill(r),
            RoundKind::Drain => m.on_drain(r),
            RoundKind::Direct => m.on_direct(r),
        }
    }
    slot.fresh = fresh;
    slot.reclaim_sent = false;
    let mut round = round;
    round.clear();
    slot.round = round;
    if slot.machine().take_copy_fallback() {
        fl.stats.copy_fallbacks += 1;
    }
    fl.release_pipe_if_idle(k);
}

impl Readiness for Uring {
    fn arm(&mut self, fl: &mut InFlight, k: Key, dir: Dir) {
        let kind = match dir {
            Dir::Read => RoundKind::PollIn,
            Dir::Write => RoundKind::PollOut,
        };
        self.arm_poll(fl, k, kind);
    }

    fn finish(&mut self, fl: &mut InFlight, k: Key) {
        fl.finish(k);
    }

    fn advance_other(&mut self, fl: &mut InFlight, k: Key) {
        self.advance(fl, k);
    }

    /// Frees a pipe held idle: a chain round `POLL_ADD → SPLICE → SPLICE` leases its pipe
    /// before the source is ready, so idle sources could hold the whole budget while
    /// ready transfers wait. Cancelling one such poll ends its round (every op
    /// `-ECANCELED`, nothing moved); the empty pipe is handed to the waiter, and the idle
    /// transfer waits for readiness without a pipe.
    fn pipe_wanted(&mut self, fl: &mut InFlight) {
        if fl.chains == 0 {
            return; // inline transfers hold pipes only while the pipes hold bytes
        }
        let victim = fl.slots.iter().find_map(|(i, s)| {
            let idle_hold = s.mode == Mode::Chain
                && s.pipe.is_some()
                && !s.reclaim_sent
                && !s.cancel_sent
                && s.machine.as_ref().is_some_and(|m| m.staged() == 0)
                && s.round.first().is_some_and(|op| {
                    op.kind == RoundKind::PollIn && op.res.is_none() && s.round.len() > 1
                });
            idle_hold.then_some((i, s.generation))
        });
        let Some(k) = victim else { return };
        if let Some(slot) = fl.get(k) {
            slot.reclaim_sent = true;
        }
        let e = opcode::AsyncCancel::new(user_data(k, 0))
            .build()
            .user_data(INTERNAL);
        self.push(fl, &[e]);
    }

    /// One `SPLICE(file → pipe)` on an io-wq worker, for a chunk not in the page cache; the
    /// drain that follows runs inline again.
    fn offload_fill(&mut self, fl: &mut InFlight, k: Key) {
        let Some(slot) = fl.get(k) else { return };
        let cap = slot.pipe.as_ref().map_or(0, |p| p.capacity());
        let len = slot.machine().next_len().min(cap);
        debug_assert!(len > 0, "offload without a leased pipe");
        self.push_round(fl, k, &[(RoundKind::Fill, len)]);
    }

    fn runs_inline(&self, slot: &crate::inflight::Slot) -> bool {
        slot.mode == Mode::Inline
            || slot
                .machine
                .as_ref()
                .is_some_and(|m| matches!(m.route(), Route::Copy | Route::Records))
    }
}
