//! Carrying out a transfer's steps on the engine's thread: the machine says what is next,
//! the operation's inline form (op/) does it with a non-blocking syscall, until the
//! transfer must wait, has had its share, or is done. The fallback runs every transfer this
//! way; io_uring runs inline-mode transfers (readiness from `IORING_OP_POLL_ADD`) and
//! copies this way.

use crate::error::{Error, Op};
use crate::op::{OpResult, copy, copy_range, direct, drain, fill, record, sendfile};
use crate::stats::Stats;
use crate::sys::{self, SigpipeGuard};

use super::id::Id;
use super::machine::{Action, Route};
use super::pipes::Pipes;
use super::plan::Via;
use super::slots::Running;

/// How far past a chunk `cachestat` must find the file cached before the chunk is sent
/// inline: the default `read_ahead_kb` of many block devices (8 MiB on this VM's virtio
/// disk; 128 KiB on others).
const LOOKAHEAD: u64 = 8 << 20;

/// Most syscalls one transfer makes in one pass, so a stream of tiny results cannot hold
/// the loop.
const MAX_CALLS: u32 = 64;

/// Why inline work on a transfer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Park {
    /// Wait until the source is readable.
    Readable,
    /// Wait until the destination is writable.
    Writable,
    /// Waiting for the pipe budget; the transfer is queued for a returned pipe.
    NeedPipe,
    /// Its next fill would wait for the disk: hand it to the kernel's workers.
    Offload,
    /// Its share of this pass is used up; run it again on the next pass.
    Yield,
    /// Done: finish it.
    Finish,
}

/// What a run may use.
#[derive(Debug)]
pub(crate) struct Step<'a> {
    pub(crate) id: Id,
    pub(crate) pipes: &'a mut Pipes,
    pub(crate) stats: &'a mut Stats,
    /// [`Builder::fairness_bytes`](crate::Builder::fairness_bytes).
    pub(crate) budget: u64,
    pub(crate) guard: SigpipeGuard,
    /// Bytes delivered in this run.
    pub(crate) moved: u64,
}

/// Runs a transfer inline until it must wait, has had its share, or is done.
pub(crate) fn run(r: &mut Running, cx: &mut Step<'_>) -> Park {
    let mut calls = 0;
    loop {
        let action = r.m.next();
        if matches!(
            action,
            Action::Fill { .. } | Action::Drain { .. } | Action::Direct { .. }
        ) {
            if cx.moved >= cx.budget || calls >= MAX_CALLS {
                return Park::Yield;
            }
            calls += 1;
            cx.stats.inline_calls += 1;
        }
        let park = match action {
            Action::Finish => Some(Park::Finish),
            Action::WaitReadable if r.plan.src_pollable() => {
                // An idle transfer keeps no small copy buffer (a few KiB each across
                // thousands of waiting messages); large ones are kept, since freeing and
                // making them again would cost mmap/munmap per wait.
                if r.m.staged() == 0
                    && r.buf
                        .as_ref()
                        .is_some_and(|b| b.data.len() <= copy::KEEP_BUF)
                {
                    r.buf = None;
                }
                Some(Park::Readable)
            }
            Action::WaitWritable if r.plan.dst_pollable() => Some(Park::Writable),
            Action::WaitReadable | Action::WaitWritable => {
                r.m.ready(); // a regular file is always ready
                None
            }
            Action::Fill { len } => fill_step(r, cx, len),
            Action::Drain { len } => {
                drain_step(r, cx, len);
                None
            }
            Action::Direct { len } => {
                direct_step(r, cx, len);
                None
            }
        };
        if r.m.take_copy_fallback() {
            cx.stats.copy_fallbacks += 1;
        }
        if let Some(p) = park {
            return p;
        }
    }
}

fn fill_step(r: &mut Running, cx: &mut Step<'_>, len: usize) -> Option<Park> {
    match r.m.route() {
        Route::Records => {
            fill_record(r);
            None
        }
        Route::Pipe if r.plan.offload.is_some() => send_cached_or_offload(r, cx, len),
        Route::Pipe => {
            if !r.lease(cx.id, cx.pipes, true) {
                return Some(Park::NeedPipe);
            }
            // No pipe after a lease: its creation failed, and the machine holds the error.
            let (w, cap) = r.pipe.as_ref().map(|p| (p.write_fd(), p.capacity()))?;
            let len = len.min(cap);
            let res = fill::call(r.plan.src, r.m.src_off(), w, len);
            r.m.on_fill(res);
            r.m.hint_short_read(len, res);
            if r.m.staged() == 0 {
                r.release_pipe_if_idle(cx.pipes);
            }
            None
        }
        Route::Copy | Route::Direct => {
            let res = copy::fill(r.plan.src, r.m.src_off(), &mut r.buf, len);
            r.m.on_fill(res);
            r.m.hint_short_read(len, res);
            None
        }
    }
}

/// A file chunk bound for a socket: sent at once with `sendfile` when it is in the page
/// cache, else filled into the pipe by an io-wq worker (`Park::Offload`).
fn send_cached_or_offload(r: &mut Running, cx: &mut Step<'_>, len: usize) -> Option<Park> {
    let facts = r.plan.offload.unwrap_or_default();
    let (off, remaining) = (r.m.src_off(), r.m.remaining());
    let taken = r.m.delivered() + r.m.staged();
    let at = off.or(facts.pos_base.map(|b| b + taken)).unwrap_or(0);
    // Reading a cached page can start the kernel's asynchronous readahead from this
    // thread, and submitting it can wait (block mapping, request slots): ask about what
    // readahead would fetch next as well, up to the end of what this transfer reads.
    let end = match remaining {
        Some(n) => at + n,
        None => facts.size.unwrap_or(u64::MAX),
    };
    let span = (len as u64 + LOOKAHEAD).min(end.saturating_sub(at));
    if span == 0 || sys::page_cached(r.plan.src, at, span as usize) {
        // In the page cache: straight to the socket, no pipe of ours.
        let res = sendfile::call(r.plan.src, off, r.plan.dst, len, cx.guard);
        count(cx, res);
        r.m.on_direct(res);
        let sent = res.map_or(0, |n| n as u64);
        r.m.hint_short_write(len, res, at + sent < end);
        return None;
    }
    if !r.lease(cx.id, cx.pipes, true) {
        return Some(Park::NeedPipe);
    }
    // Not counted as an inline call: the kernel's worker makes it.
    cx.stats.inline_calls -= 1;
    Some(Park::Offload)
}

/// Takes the next record whole (see op/record.rs).
fn fill_record(r: &mut Running) {
    let fd = r.plan.src;
    let m = &mut r.m;
    match record::fill(fd, &mut r.buf, |len| m.admit_record(len)) {
        record::Taken::Refused => {} // the machine holds RecordTooLong
        record::Taken::Whole(res) => m.on_fill(res),
        record::Taken::Cut(len) => {
            // Another reader took the record that was peeked at and this one was cut: the
            // part that fit is delivered, and the transfer stops with the record's loss.
            m.on_fill(Ok(len));
            m.fail_source(Error::errno(Op::Recv, fd, libc::EMSGSIZE));
        }
    }
}

fn drain_step(r: &mut Running, cx: &mut Step<'_>, len: usize) {
    let (dst, off, socket) = (r.plan.dst, r.m.dst_off(), r.plan.dst_socket);
    let pipe_r = r.pipe.as_ref().map(|p| p.read_fd());
    let res = if r.m.route() == Route::Pipe {
        let rfd = pipe_r.expect("invariant: staged bytes are in the pipe");
        drain::call(rfd, dst, off, len, (cx.guard, socket))
    } else {
        let sink = copy::Sink {
            fd: dst,
            off,
            socket,
            pipe_r,
        };
        copy::drain(&mut r.buf, sink, cx.guard)
    };
    count(cx, res);
    r.m.on_drain(res);
    if r.m.take_copy_fallback() {
        cx.stats.copy_fallbacks += 1;
    }
    r.release_pipe_if_idle(cx.pipes);
}

fn direct_step(r: &mut Running, cx: &mut Step<'_>, len: usize) {
    let (src, dst) = (r.plan.src, r.plan.dst);
    let (so, doff) = (r.m.src_off(), r.m.dst_off());
    let res = match r.plan.via {
        Via::Splice => direct::call(src, so, dst, doff, len, cx.guard),
        Via::Sendfile => sendfile::call(src, so, dst, len, cx.guard),
        Via::CopyFileRange => copy_range::call(src, so, dst, doff, len),
    };
    count(cx, res);
    r.m.on_direct(res);
    r.m.hint_short_read(len, res);
    if r.plan.via == Via::Sendfile {
        // Without the file's size a short send may be its end: only an exact length says
        // there is more.
        let more = r.m.remaining().is_some();
        r.m.hint_short_write(len, res, more);
    }
}

fn count(cx: &mut Step<'_>, res: OpResult) {
    if let Ok(n) = res {
        cx.moved += n as u64;
    }
}
