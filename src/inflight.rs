//! The slab of transfers in flight: each slot's endpoints, state machine and leased pipe,
//! plus what both backends share: starting a transfer (classifying its fds and choosing its
//! route and strategy) and finishing it (building the completion, returning the pipe).
//!
//! A slot is freed only by [`InFlight::finish`], which the backends call only when no
//! operation of the transfer is still in the kernel, so a stale CQE can never reach a
//! reused slot; ids also carry a generation so a stale `cancel` cannot hit a new transfer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::builder::Builder;
use crate::completion::Completion;
use crate::endpoint::Endpoint;
use crate::error::{Error, Op, Rejected, Result};
use crate::machine::{Machine, Route};
use crate::pipe_pool::{Pipe, PipePool};
use crate::stats::Stats;
use crate::sys::{self, FdInfo, FdKind};
use crate::transfer::{Length, Strategy, Transfer, TransferId};

/// The strategy a started transfer runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Chain,
    Inline,
}

/// The syscall behind a direct transfer (no staging pipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `splice(2)`: one side is a pipe.
    Splice,
    /// `sendfile(2)`: regular file to socket (fallback backend).
    Sendfile,
    /// `copy_file_range(2)`: regular file to regular file (fallback backend).
    CopyFileRange,
}

/// The read/write buffer of a transfer on the copy route.
#[derive(Debug)]
pub(crate) struct CopyBuf {
    pub(crate) data: Box<[u8]>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// One transfer in flight.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) generation: u32,
    pub(crate) tag: u64,
    pub(crate) src: Endpoint,
    pub(crate) dst: Endpoint,
    pub(crate) src_fd: RawFd,
    pub(crate) dst_fd: RawFd,
    pub(crate) src_pollable: bool,
    pub(crate) dst_pollable: bool,
    pub(crate) dst_socket: bool,
    /// `None` until the transfer is started (classified) at the next flush.
    pub(crate) machine: Option<Machine>,
    pending: Option<(Length, Option<u64>, Option<u64>, Strategy)>,
    pub(crate) mode: Mode,
    pub(crate) via: Via,
    pub(crate) pipe: Option<Pipe>,
    pub(crate) buf: Option<CopyBuf>,
    /// Operations of this transfer submitted to the kernel whose CQE has not arrived.
    pub(crate) in_kernel: u32,
    /// The backend's record of the operations in flight (io_uring round).
    pub(crate) round: Vec<crate::backend::RoundOp>,
    /// A readiness wait just reported ready: the next round need not poll first.
    pub(crate) fresh: bool,
    pub(crate) cancel_sent: bool,
    /// The backend asked the kernel to give back this slot's idle pipe (it cancelled the
    /// readiness wait the pipe was held for).
    pub(crate) reclaim_sent: bool,
    /// Whether a pipe is being waited for (the slot is in the pipe-waiters queue).
    pub(crate) waiting_pipe: bool,
    /// Whether this slot's shared endpoints are counted in [`InFlight::known`].
    known: bool,
    /// A file source on the inline strategy whose fills run inline only when the chunk is
    /// in the page cache, and go to an io-wq worker otherwise (io_uring, `Auto`, file to
    /// socket).
    pub(crate) offload_fills: bool,
    /// For `offload_fills` without a source offset: the file position at start.
    pub(crate) pos_base: Option<u64>,
    /// For `offload_fills` until end of file: the file's size at start.
    pub(crate) src_size: Option<u64>,
    /// [`Transfer::shutdown_destination`]: shut the destination's write side at success.
    shutdown_dst: bool,
    deadline: Option<Instant>,
    idle: Option<Duration>,
    /// When bytes last reached the destination (or the transfer was submitted).
    last_progress: Instant,
    progress_mark: u64,
}

impl Slot {
    pub(crate) fn machine(&mut self) -> &mut Machine {
        self.machine
            .as_mut()
            .expect("invariant: a started slot has a machine")
    }
}

/// A (slot key, generation) pair, as queued for later work.
pub(crate) type Key = (usize, u32);

/// The transfers in flight and what both backends share.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) slots: Slab<Slot>,
    next_gen: u32,
    pub(crate) max: usize,
    pub(crate) pool: PipePool,
    /// Submitted, not yet started.
    pub(crate) starting: Vec<Key>,
    /// Ready for inline work.
    pub(crate) ready: VecDeque<Key>,
    /// Waiting for the pipe budget.
    pub(crate) pipe_waiters: VecDeque<Key>,
    pub(crate) done: VecDeque<Completion>,
    pub(crate) stats: Stats,
    pub(crate) cfg: Builder,
    /// Deadlines and idle checks, earliest first; entries of finished slots are skipped.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Shared fds that started transfers still hold, by `Arc` identity: what was learnt
    /// about each, and how many slots hold it. The two directions of a proxied connection
    /// share both sockets, so the second direction starts without a syscall.
    known: HashMap<usize, (FdInfo, u32)>,
    /// Started transfers in [`Mode::Chain`]: only they can hold a pipe while idle, so
    /// with none the backend need not look for one to reclaim.
    pub(crate) chains: usize,
}

impl InFlight {
    pub(crate) fn new(cfg: Builder) -> InFlight {
        InFlight {
            slots: Slab::new(),
            next_gen: 0,
            max: cfg.max_transfers,
            pool: PipePool::new(cfg.pipe_size, cfg.pipe_pool_size, cfg.pipe_budget),
            starting: Vec::new(),
            ready: VecDeque::new(),
            pipe_waiters: VecDeque::new(),
            done: VecDeque::new(),
            stats: Stats::default(),
            cfg,
            timers: BinaryHeap::new(),
            known: HashMap::new(),
            chains: 0,
        }
    }

    /// Queues a transfer; no syscall.
    pub(crate) fn submit(&mut self, t: Transfer) -> Result<TransferId, Rejected> {
        if self.slots.len() >= self.max {
            return Err(Rejected {
                error: Error::Full { max: self.max },
                transfer: Box::new(t),
            });
        }
        let now = Instant::now();
        self.next_gen = self.next_gen.wrapping_add(1) & 0xFF_FFFF;
        let generation = self.next_gen;
        let src_fd = t.src.as_raw_fd();
        let dst_fd = t.dst.as_raw_fd();
        let key = self.slots.insert(Slot {
            generation,
            tag: t.tag,
            src: t.src,
            dst: t.dst,
            src_fd,
            dst_fd,
            src_pollable: false,
            dst_pollable: false,
            dst_socket: false,
            machine: None,
            pending: Some((t.len, t.src_off, t.dst_off, t.strategy)),
            mode: Mode::Inline,
            via: Via::Splice,
            pipe: None,
            buf: None,
            in_kernel: 0,
            round: Vec::new(),
            fresh: false,
            cancel_sent: false,
            reclaim_sent: false,
            waiting_pipe: false,
            known: false,
            offload_fills: false,
            pos_base: None,
            src_size: None,
            shutdown_dst: t.shutdown_destination,
            deadline: t.timeout.map(|d| now + d),
            idle: t.idle_timeout,
            last_progress: now,
            progress_mark: 0,
        });
        let first = [t.timeout, t.idle_timeout].into_iter().flatten().min();
        if let Some(d) = first {
            self.timers.push(Reverse((now + d, key, generation)));
        }
        self.starting.push((key, generation));
        self.stats.submitted += 1;
        Ok(id_of(key, generation))
    }

    /// The slot of a key, if it still holds the same transfer.
    pub(crate) fn get(&mut self, k: Key) -> Option<&mut Slot> {
        self.slots.get_mut(k.0).filter(|s| s.generation == k.1)
    }

    /// Looks up the slot behind an id.
    pub(crate) fn key_of(&self, id: TransferId) -> Option<Key> {
        let key = (id.0 & 0xFFFF_FFFF) as usize;
        let generation = (id.0 >> 32) as u32;
        self.slots
            .get(key)
            .filter(|s| s.generation == generation)
            .map(|_| (key, generation))
    }

    /// Classifies the endpoints and builds the state machine. On bad input the machine is
    /// built already failed, so the transfer completes with the error at once.
    /// `chain_available`: whether the backend has the chain strategy.
    pub(crate) fn start(&mut self, k: Key, chain_available: bool) {
        let chunk = self.cfg.chunk_size;
        let Some(slot) = self.get(k) else { return };
        let Some((len, src_off, dst_off, strategy)) = slot.pending.take() else {
            return;
        };
        let length = match len {
            Length::Exact(n) => Some(n),
            Length::UntilEof => None,
        };
        let fds = (slot.src_fd, slot.dst_fd);
        let shutdown_dst = slot.shutdown_dst;
        let keys = [slot.src.shared_key(), slot.dst.shared_key()];
        let memo = [slot.src.known, slot.dst.known];
        let cached: [Option<FdInfo>; 2] = std::array::from_fn(|i| {
            memo[i].or_else(|| keys[i].and_then(|k| self.known.get(&k)).map(|e| e.0))
        });
        let classified = classify(
            (fds.0, cached[0]),
            (fds.1, cached[1]),
            (src_off, dst_off),
            shutdown_dst,
        );
        let (mut route, src_kind, dst_kind, err) = match classified {
            Ok((route, s, d)) => {
                for (key, info) in keys.into_iter().zip([s, d]) {
                    if let Some(key) = key {
                        self.known.entry(key).or_insert((info, 0)).1 += 1;
                    }
                }
                let slot = self.get(k).expect("invariant: looked up above");
                if slot.src.may_remember() {
                    slot.src.known = Some(s);
                }
                if slot.dst.may_remember() {
                    slot.dst.known = Some(d);
                }
                (route, s.kind, d.kind, None)
            }
            Err(e) => (Route::Pipe, FdKind::Other, FdKind::Other, Some(e)),
        };
        let copy_threshold = self.cfg.copy_threshold;
        // A small message between pollable endpoints is cheaper to copy than to splice
        // through a pipe (README, Performance: small transfers).
        // (A pipe on either side is one direct splice, cheaper than read + write; a file
        // source may block on the disk.)
        let small = length.is_some_and(|n| n <= copy_threshold)
            && route == Route::Pipe
            && src_kind != FdKind::File
            && dst_kind == FdKind::Socket;
        let records = route == Route::Records;
        if records {
            self.stats.record_copies += 1;
        }
        let copy = err.is_none()
            && !records
            && (strategy == Strategy::Copy || (strategy == Strategy::Auto && small));
        if copy {
            route = Route::Copy;
            self.stats.copies += 1;
        }
        let slot = self.get(k).expect("invariant: looked up above");
        slot.known = err.is_none();
        // The fallback serves file sources as Go does: sendfile to sockets,
        // copy_file_range to files. The io_uring backend splices through its own 1 MiB
        // pipes instead: sendfile's internal pipe is the default 64 KiB.
        slot.via = Via::Splice;
        if !chain_available && src_kind == FdKind::File && err.is_none() && !copy && !records {
            match dst_kind {
                FdKind::Socket => slot.via = Via::Sendfile,
                FdKind::File => slot.via = Via::CopyFileRange,
                _ => {}
            }
            if slot.via != Via::Splice {
                route = Route::Direct;
            }
        }
        let mut m = Machine::new(route, length, src_off, dst_off, chunk, fds);
        m.set_always_ready(src_kind == FdKind::File, dst_kind == FdKind::File);
        m.set_direct_op(match slot.via {
            Via::Splice => Op::Splice,
            Via::Sendfile => Op::Sendfile,
            Via::CopyFileRange => Op::CopyFileRange,
        });
        if let Some(e) = err {
            m.fail_destination(e);
        }
        slot.src_pollable = src_kind != FdKind::File;
        slot.dst_pollable = dst_kind != FdKind::File;
        slot.dst_socket = dst_kind == FdKind::Socket;
        // A file sent to a socket: chunks in the page cache are sent inline with one
        // `sendfile` (it cannot wait for the disk), other chunks are filled into the pipe
        // by io-wq and drained inline as for sockets. Chains would hand every drain to a
        // worker too, and a short drain into a full socket cancels the rest of the chain.
        slot.offload_fills = chain_available
            && !copy
            && strategy == Strategy::Auto
            && src_kind == FdKind::File
            && dst_kind == FdKind::Socket
            && route == Route::Pipe;
        // Without an offset the file's own position is used (and advanced): cachestat is
        // asked about `position at start + bytes taken`, a hint that is right unless
        // something else moves the position meanwhile.
        if slot.offload_fills && src_off.is_none() {
            match sys::file_position(fds.0) {
                Ok(p) => slot.pos_base = Some(p),
                Err(_) => slot.offload_fills = false,
            }
        }
        // Until end of file: the size now bounds the look-ahead (see inline::run).
        if slot.offload_fills && length.is_none() {
            match sys::file_size(fds.0) {
                Ok(n) => slot.src_size = Some(n),
                Err(_) => slot.offload_fills = false,
            }
        }
        slot.mode = match strategy {
            _ if !chain_available || copy || records || slot.offload_fills => Mode::Inline,
            Strategy::Chain => Mode::Chain,
            Strategy::Inline => Mode::Inline,
            Strategy::Auto if src_kind == FdKind::File => Mode::Chain,
            Strategy::Auto | Strategy::Copy => Mode::Inline,
        };
        if slot.offload_fills {
            // Cached chunks go out with one sendfile (see inline::run).
            m.set_direct_op(Op::Sendfile);
        }
        let chain = slot.mode == Mode::Chain;
        slot.machine = Some(m);
        if chain {
            self.chains += 1;
        }
    }

    /// Leases a pipe for a slot that needs one. `false`: none to be had within the budget;
    /// with `queue` the slot then waits in the pipe-waiters queue until one comes back. A
    /// pipe creation error fails the transfer (and returns `true`: the machine says finish).
    pub(crate) fn lease_pipe(&mut self, k: Key, queue: bool) -> bool {
        let Some(slot) = self.slots.get(k.0) else {
            return false;
        };
        if slot.pipe.is_some() {
            return true;
        }
        match self.pool.take() {
            Ok(Some(p)) => {
                let slot = &mut self.slots[k.0];
                slot.machine().cap_chunk(p.capacity());
                slot.pipe = Some(p);
                true
            }
            Ok(None) => {
                let slot = &mut self.slots[k.0];
                if queue && !slot.waiting_pipe {
                    slot.waiting_pipe = true;
                    self.pipe_waiters.push_back(k);
                }
                false
            }
            Err(e) => {
                self.slots[k.0].machine().fail_source(e);
                true
            }
        }
    }

    /// Gives a slot's pipe back when it is empty and no operation may still use it; wakes a
    /// transfer waiting for one.
    pub(crate) fn release_pipe_if_idle(&mut self, k: Key) {
        let Some(slot) = self.slots.get_mut(k.0) else {
            return;
        };
        if slot.in_kernel > 0 || slot.pipe.is_none() {
            return;
        }
        let staged = slot.machine.as_ref().map_or(0, |m| m.staged());
        if staged > 0 {
            return;
        }
        if let Some(p) = slot.pipe.take() {
            debug_assert_eq!(sys::bytes_readable(p.read_fd()).unwrap_or(0), 0);
            self.return_pipe(p, false);
        }
    }

    /// Takes a pipe back from a transfer. A transfer waiting for a pipe gets it directly
    /// (an empty one is handed over, so the transfer that just gave it up cannot take it
    /// back first and starve the waiter); otherwise it goes to the pool, or is closed if
    /// it still holds bytes, which frees budget for a waiter.
    fn return_pipe(&mut self, p: Pipe, holds_bytes: bool) {
        let waiter = loop {
            match self.pipe_waiters.pop_front() {
                None => break None,
                Some(w) if self.get(w).is_some() => break Some(w),
                Some(_) => {} // finished meanwhile
            }
        };
        let Some(w) = waiter else {
            self.pool.give(p, holds_bytes);
            return;
        };
        let slot = self.get(w).expect("invariant: checked above");
        slot.waiting_pipe = false;
        if holds_bytes || slot.pipe.is_some() {
            self.pool.give(p, holds_bytes);
        } else {
            if let Some(m) = slot.machine.as_mut() {
                m.cap_chunk(p.capacity());
            }
            slot.pipe = Some(p);
            self.pool.counters.reused += 1;
        }
        self.ready.push_back(w);
    }

    /// Removes a finished transfer (no operation of it in the kernel) and queues its
    /// completion.
    pub(crate) fn finish(&mut self, k: Key) {
        let Some(slot) = self.get(k) else { return };
        debug_assert_eq!(slot.in_kernel, 0);
        let slot = self.slots.remove(k.0);
        if slot.machine.is_some() && slot.mode == Mode::Chain {
            self.chains -= 1;
        }
        if slot.known {
            for key in [slot.src.shared_key(), slot.dst.shared_key()]
                .into_iter()
                .flatten()
            {
                if let Some(e) = self.known.get_mut(&key) {
                    e.1 -= 1;
                    if e.1 == 0 {
                        self.known.remove(&key);
                    }
                }
            }
        }
        let mut m = slot.machine;
        let (delivered, staged, mut result) = match m.as_mut() {
            Some(m) => (m.delivered(), m.staged(), m.outcome()),
            None => (0, 0, Err(Error::Cancelled)),
        };
        if result.is_ok() && slot.shutdown_dst {
            result = sys::shutdown_write(slot.dst_fd)
                .map_err(|e| Error::io(Op::Shutdown, slot.dst_fd, e));
        }
        if let Some(p) = slot.pipe {
            self.return_pipe(p, staged > 0);
        }
        self.stats.bytes += delivered;
        self.done.push_back(Completion {
            id: id_of(k.0, k.1),
            tag: slot.tag,
            delivered,
            undelivered: staged,
            result,
            source: slot.src,
            destination: slot.dst,
        });
    }

    /// Bytes a transfer in flight has delivered so far.
    pub(crate) fn delivered(&self, k: Key) -> u64 {
        self.slots
            .get(k.0)
            .and_then(|s| s.machine.as_ref())
            .map_or(0, |m| m.delivered())
    }

    /// Records progress for the idle timeout; call after bytes may have moved.
    pub(crate) fn note_progress(&mut self, k: Key) {
        let Some(slot) = self.get(k) else { return };
        if slot.idle.is_none() {
            return;
        }
        let d = slot.machine.as_ref().map_or(0, |m| m.delivered());
        if d != slot.progress_mark {
            slot.progress_mark = d;
            slot.last_progress = Instant::now();
        }
    }

    /// Transfers whose deadline or idle timeout has passed (their machines are marked
    /// timed out; the backend cancels them). Idle checks that find progress are re-armed.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<Key> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, key, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let k = (key, generation);
            let Some(slot) = self.get(k) else { continue };
            let Some(m) = slot.machine.as_ref() else {
                // Not started yet: check again right after the next start.
                self.timers.push(Reverse((now, key, generation)));
                break;
            };
            let d = m.delivered();
            if d != slot.progress_mark {
                slot.progress_mark = d;
                slot.last_progress = now;
            }
            let idle_at = slot.idle.map(|i| slot.last_progress + i);
            let due = [slot.deadline, idle_at].into_iter().flatten().min();
            match due {
                Some(t) if t <= now => {
                    slot.machine().time_out();
                    out.push(k);
                }
                Some(t) => self.timers.push(Reverse((t, key, generation))),
                None => {}
            }
        }
        out
    }

    /// The earliest pending timer, if any.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|r| r.0.0)
    }

    /// Copies the pool's counters into the stats.
    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.pipes_created = self.pool.counters.created;
        s.pipes_reused = self.pool.counters.reused;
        s.pipes_discarded = self.pool.counters.discarded;
        s.pipe_bytes = self.pool.live_bytes() as u64;
        s
    }
}

pub(crate) fn id_of(key: usize, generation: u32) -> TransferId {
    TransferId(((generation as u64) << 32) | key as u64)
}

/// What an fd is: `fstat`, then `getsockopt(SO_TYPE)` for a socket or `F_GETFL` for
/// anything else.
fn probe_fd(fd: RawFd) -> Result<FdInfo> {
    let (kind, id) = sys::fd_kind(fd).map_err(|e| Error::io(Op::Fstat, fd, e))?;
    let (flags, records) = if kind == FdKind::Socket {
        let records = sys::socket_keeps_records(fd).map_err(|e| Error::io(Op::Fstat, fd, e))?;
        (libc::O_RDWR, records)
    } else {
        let flags = sys::status_flags(fd).map_err(|e| Error::io(Op::Fcntl, fd, e))?;
        (flags, false)
    };
    Ok(FdInfo {
        kind,
        id,
        flags,
        records,
    })
}

/// Checks a transfer's endpoints, makes sockets and pipes non-blocking, and chooses the
/// route. `known` is what an earlier transfer learnt about a shared fd it still holds: such
/// an fd is not asked about again (nor made non-blocking again).
fn classify(
    (src, src_known): (RawFd, Option<FdInfo>),
    (dst, dst_known): (RawFd, Option<FdInfo>),
    (src_off, dst_off): (Option<u64>, Option<u64>),
    shutdown_dst: bool,
) -> Result<(Route, FdInfo, FdInfo)> {
    let s = match src_known {
        Some(i) => i,
        None => probe_fd(src)?,
    };
    let d = match dst_known {
        Some(i) => i,
        None => probe_fd(dst)?,
    };
    let (sk, dk) = (s.kind, d.kind);
    let invalid = |msg: String| Err(Error::InvalidInput(msg));
    if sk == FdKind::Directory {
        return invalid(format!("source fd {src} is a directory"));
    }
    if dk == FdKind::Directory {
        return invalid(format!("destination fd {dst} is a directory"));
    }
    if sk == FdKind::Pipe && dk == FdKind::Pipe && s.id == d.id {
        return invalid(format!(
            "source fd {src} and destination fd {dst} are the same pipe"
        ));
    }
    if src_off.is_some() && sk != FdKind::File {
        return invalid(format!(
            "source fd {src}: offsets apply only to regular files"
        ));
    }
    if dst_off.is_some() && dk != FdKind::File {
        return invalid(format!(
            "destination fd {dst}: offsets apply only to regular files"
        ));
    }
    if s.flags & libc::O_ACCMODE == libc::O_WRONLY {
        return invalid(format!("source fd {src} is not open for reading"));
    }
    if d.flags & libc::O_ACCMODE == libc::O_RDONLY {
        return invalid(format!("destination fd {dst} is not open for writing"));
    }
    if shutdown_dst && dk != FdKind::Socket {
        return invalid(format!(
            "destination fd {dst}: shutdown_destination applies only to sockets"
        ));
    }
    // A byte stream written into a datagram or seqpacket socket would be cut into records
    // wherever a write happened to end: refuse it. A record source feeds it one record per
    // write.
    if d.records && !s.records {
        return invalid(format!(
            "destination fd {dst} is a datagram or seqpacket socket and source fd {src} is \
             a byte stream: records would be cut at arbitrary points"
        ));
    }
    let mut infos = [s, d];
    for ((fd, known), info) in [(src, src_known), (dst, dst_known)]
        .into_iter()
        .zip(&mut infos)
    {
        if known.is_some() {
            continue;
        }
        match info.kind {
            FdKind::Socket => sys::set_nonblocking_ioctl(fd),
            FdKind::Pipe => sys::set_nonblocking(fd, info.flags),
            _ => continue,
        }
        .map_err(|e| Error::io(Op::Fcntl, fd, e))?;
        info.flags |= libc::O_NONBLOCK;
    }
    let route = if s.records {
        Route::Records
    } else if sk == FdKind::Pipe || dk == FdKind::Pipe {
        Route::Direct
    } else {
        Route::Pipe
    };
    Ok((route, infos[0], infos[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// The shared-fd cache counts every slot holding a shared fd and forgets the fd when the
    /// last one finishes, so a later `Arc` at the same address is asked about afresh.
    #[test]
    fn known_shared_fds_are_counted_and_forgotten() {
        let mut f = InFlight::new(Builder::default());
        let (a, b) = pair();
        let k1 = f.submit(Transfer::new(shared(&a), shared(&b))).unwrap();
        let k2 = f.submit(Transfer::new(shared(&b), shared(&a))).unwrap();
        // Source and destination the same shared fd: counted twice.
        let k3 = f.submit(Transfer::new(shared(&a), shared(&a))).unwrap();
        let keys: Vec<Key> = [k1, k2, k3]
            .iter()
            .map(|&id| f.key_of(id).unwrap())
            .collect();
        for &k in &keys {
            f.start(k, false);
        }
        let refs =
            |f: &InFlight, fd: &Arc<OwnedFd>| f.known.get(&(Arc::as_ptr(fd) as usize)).map(|e| e.1);
        assert_eq!(refs(&f, &a), Some(4));
        assert_eq!(refs(&f, &b), Some(2));
        f.finish(keys[2]);
        assert_eq!(refs(&f, &a), Some(2));
        f.finish(keys[0]);
        f.finish(keys[1]);
        assert!(f.known.is_empty(), "{:?}", f.known);
    }

    /// A transfer whose endpoints fail classification is not counted.
    #[test]
    fn a_rejected_transfer_leaves_no_known_fd() {
        let mut f = InFlight::new(Builder::default());
        let (a, b) = pair();
        let t = Transfer::new(shared(&a), shared(&b)).source_offset(0);
        let id = f.submit(t).unwrap();
        let k = f.key_of(id).unwrap();
        f.start(k, false);
        assert!(f.known.is_empty());
        f.finish(k);
        let c = f.done.pop_front().unwrap();
        assert!(
            matches!(c.result, Err(Error::InvalidInput(_))),
            "{:?}",
            c.result
        );
    }
}
