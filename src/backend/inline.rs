//! Inline execution: the engine's own thread carries out the state machine's steps with
//! non-blocking `splice(2)`, `read(2)` and `write(2)`. Both backends use it: io_uring for
//! transfers on the inline strategy (readiness from `IORING_OP_POLL_ADD`) and for copies,
//! the fallback for everything (readiness from epoll).

use crate::error::{Error, Op};
use crate::inflight::{CopyBuf, InFlight, Key, Via};
use crate::machine::{Action, OpResult, Route};
use crate::sys;

/// Which readiness a parked transfer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// The source readable.
    Read,
    /// The destination writable.
    Write,
}

/// What a backend supplies to run transfers inline: a way to wait for readiness and a way
/// to finish a transfer (releasing whatever the backend holds for it).
pub(crate) trait Readiness {
    /// Waits for the slot's source (`Read`) or destination (`Write`) to be ready, then puts
    /// the slot back on the ready queue.
    fn arm(&mut self, fl: &mut InFlight, k: Key, dir: Dir);
    /// Removes a finished transfer.
    fn finish(&mut self, fl: &mut InFlight, k: Key);
    /// Moves a transfer that does not run inline (io_uring chains) on; the fallback runs
    /// everything inline and never gets here.
    fn advance_other(&mut self, fl: &mut InFlight, k: Key);
    /// Whether the slot's next steps are carried out inline.
    fn runs_inline(&self, slot: &crate::inflight::Slot) -> bool;
    /// A transfer has queued for the pipe budget: free a pipe that is only held idle, if
    /// the backend has any.
    fn pipe_wanted(&mut self, _fl: &mut InFlight) {}
    /// Runs the slot's next fill (from a file not in the page cache) off the engine's
    /// thread. Only io_uring can; the fallback never marks a slot for it, and reads inline.
    fn offload_fill(&mut self, fl: &mut InFlight, k: Key) {
        if let Some(slot) = fl.get(k) {
            slot.offload_fills = false;
        }
        fl.ready.push_back(k);
    }
}

/// Runs every transfer on the ready queue once (transfers that yield go to the back, for
/// the next pass), until [`PASS_SHARES`] transfers' shares of bytes have moved in all: one
/// `poll` then returns after tens of milliseconds at most, not after every ready transfer
/// has moved its share (32 file transfers × 4 MiB kept the caller's loop for ~100 ms).
/// What is left stays at the front of the queue, and the engine's fd stays readable.
pub(crate) fn run_ready<R: Readiness>(r: &mut R, fl: &mut InFlight, sigpipe_guard: bool) {
    let n = fl.ready.len();
    let pass_budget = (fl.cfg.fairness_bytes as u64).saturating_mul(PASS_SHARES);
    let mut moved = 0u64;
    for _ in 0..n {
        if moved >= pass_budget {
            break;
        }
        let Some(k) = fl.ready.pop_front() else { break };
        let Some(slot) = fl.get(k) else { continue };
        if slot.in_kernel > 0 {
            continue; // waiting on the kernel, which will move it on
        }
        if !r.runs_inline(slot) {
            r.advance_other(fl, k);
            continue;
        }
        let before = slot.machine.as_ref().map_or(0, |m| m.delivered());
        let park = run(fl, k, sigpipe_guard);
        if let Some(m) = fl.get(k).and_then(|s| s.machine.as_ref()) {
            moved += m.delivered() - before;
        }
        fl.note_progress(k);
        match park {
            Park::Readable => r.arm(fl, k, Dir::Read),
            Park::Writable => r.arm(fl, k, Dir::Write),
            Park::NeedPipe => r.pipe_wanted(fl),
            Park::Offload => r.offload_fill(fl, k),
            Park::Yield => fl.ready.push_back(k),
            Park::Finish => r.finish(fl, k),
        }
    }
}

/// Moves an inline transfer with nothing in flight on: wait, run, or finish.
pub(crate) fn advance<R: Readiness>(r: &mut R, fl: &mut InFlight, k: Key, action: Action) {
    let Some(slot) = fl.get(k) else { return };
    match action {
        Action::Finish => r.finish(fl, k),
        Action::WaitReadable if slot.src_pollable => r.arm(fl, k, Dir::Read),
        Action::WaitWritable if slot.dst_pollable => r.arm(fl, k, Dir::Write),
        _ => {
            if !slot.waiting_pipe {
                fl.ready.push_back(k)
            }
        }
    }
}

/// Why inline work on a transfer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Park {
    /// Wait until the source is readable.
    Readable,
    /// Wait until the destination is writable.
    Writable,
    /// Waiting for the pipe budget; the slot is queued for a returned pipe.
    NeedPipe,
    /// Its next fill would wait for the disk: hand it to the kernel's workers.
    Offload,
    /// Its share of this pass is used up; run it again on the next pass.
    Yield,
    /// Done: finish it.
    Finish,
}

/// How far past a chunk `cachestat` must find the file cached before the chunk is sent
/// inline: the default `read_ahead_kb` of many block devices (8 MiB on this VM's virtio
/// disk; 128 KiB on others).
const LOOKAHEAD: u64 = 8 << 20;

/// How many transfers' [`fairness_bytes`](crate::Builder::fairness_bytes) one pass over the
/// ready queue moves at most.
const PASS_SHARES: u64 = 4;

/// The largest read/write buffer of a copy.
const COPY_BUF: usize = 256 << 10;
/// Copy buffers up to this size are freed while their transfer waits for its source.
const KEEP_BUF: usize = 64 << 10;
/// Most syscalls one transfer makes in one pass, so a stream of tiny results cannot hold
/// the loop.
const MAX_CALLS: u32 = 64;

fn res(r: std::io::Result<usize>) -> OpResult {
    r.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// Runs a transfer inline until it must wait, has had its share, or is done.
pub(crate) fn run(fl: &mut InFlight, k: Key, sigpipe_guard: bool) -> Park {
    let budget = fl.cfg.fairness_bytes as u64;
    let mut moved: u64 = 0;
    let mut calls = 0;
    loop {
        let Some(slot) = fl.get(k) else {
            return Park::Finish;
        };
        let action = slot.machine().next();
        if matches!(
            action,
            Action::Fill { .. } | Action::Drain { .. } | Action::Direct { .. }
        ) {
            if moved >= budget || calls >= MAX_CALLS {
                return Park::Yield;
            }
            calls += 1;
            fl.stats.inline_calls += 1;
        }
        let slot = fl.get(k).expect("invariant: checked above");
        match action {
            Action::Finish => return Park::Finish,
            Action::WaitReadable => {
                if slot.src_pollable {
                    // An idle transfer keeps no small copy buffer (a few KiB each across
                    // thousands of waiting messages); large ones are kept, since freeing
                    // and making them again would cost mmap/munmap per wait.
                    if slot.machine().staged() == 0
                        && slot.buf.as_ref().is_some_and(|b| b.data.len() <= KEEP_BUF)
                    {
                        slot.buf = None;
                    }
                    return Park::Readable;
                }
                slot.machine().ready();
            }
            Action::WaitWritable => {
                if slot.dst_pollable {
                    return Park::Writable;
                }
                slot.machine().ready();
            }
            Action::Fill { len } => {
                let route = slot.machine().route();
                if route == Route::Records {
                    if let Some(r) = fill_record(slot) {
                        slot.machine().on_fill(r);
                    }
                    continue;
                }
                if route == Route::Pipe && slot.offload_fills {
                    let (src, dst) = (slot.src_fd, slot.dst_fd);
                    let m = slot.machine();
                    let (off, remaining) = (m.src_off(), m.remaining());
                    let taken = m.delivered() + m.staged();
                    let at = off.or(slot.pos_base.map(|b| b + taken)).unwrap_or(0);
                    // Reading a cached page can start the kernel's asynchronous readahead
                    // from this thread, and submitting it can wait (block mapping, request
                    // slots): ask about what readahead would fetch next as well, up to the
                    // end of what this transfer reads.
                    let end = match remaining {
                        Some(r) => at + r,
                        None => slot.src_size.unwrap_or(u64::MAX),
                    };
                    let span = (len as u64 + LOOKAHEAD).min(end.saturating_sub(at));
                    if span == 0 || sys::page_cached(src, at, span as usize) {
                        // In the page cache: straight to the socket, no pipe of ours.
                        let r = guarded(sigpipe_guard, || res(sys::sendfile(dst, src, off, len)));
                        if let Ok(n) = r {
                            moved += n as u64;
                        }
                        slot.machine().on_direct(r);
                        continue;
                    }
                    if !fl.lease_pipe(k, true) {
                        return Park::NeedPipe;
                    }
                    // Not counted as an inline call: the kernel's worker makes it.
                    fl.stats.inline_calls -= 1;
                    return Park::Offload;
                }
                if route == Route::Pipe {
                    if !fl.lease_pipe(k, true) {
                        return Park::NeedPipe;
                    }
                    let slot = fl.get(k).expect("invariant: slot exists");
                    let Some((wfd, cap)) = slot.pipe.as_ref().map(|p| (p.write_fd(), p.capacity()))
                    else {
                        continue; // pipe creation failed; the machine holds the error
                    };
                    let len = len.min(cap);
                    let off = slot.machine().src_off();
                    let r = res(sys::splice(slot.src_fd, off, wfd, None, len));
                    slot.machine().on_fill(r);
                    slot.machine().hint_short_read(len, r);
                    if slot.machine().staged() == 0 {
                        fl.release_pipe_if_idle(k);
                    }
                } else {
                    let buf = copy_buf(&mut slot.buf, len);
                    let len = len.min(buf.data.len());
                    let off = slot.machine.as_ref().and_then(|m| m.src_off());
                    let r = res(sys::read(slot.src_fd, off, &mut buf.data[..len]));
                    if let Ok(n) = r {
                        buf.start = 0;
                        buf.end = n;
                    }
                    slot.machine().on_fill(r);
                    slot.machine().hint_short_read(len, r);
                }
            }
            Action::Drain { len } => {
                let route = slot.machine().route();
                let dst = slot.dst_fd;
                let off = slot.machine().dst_off();
                let r = if route == Route::Pipe {
                    let pipe = slot
                        .pipe
                        .as_ref()
                        .expect("invariant: staged bytes are in the pipe");
                    let rfd = pipe.read_fd();
                    guarded(sigpipe_guard && slot.dst_socket, || {
                        res(sys::splice(rfd, None, dst, off, len))
                    })
                } else {
                    drain_copy(slot, dst, off, sigpipe_guard)
                };
                if let Ok(n) = r {
                    moved += n as u64;
                }
                let m = slot.machine();
                m.on_drain(r);
                if m.take_copy_fallback() {
                    fl.stats.copy_fallbacks += 1;
                }
                fl.release_pipe_if_idle(k);
            }
            Action::Direct { len } => {
                let (src, dst, via) = (slot.src_fd, slot.dst_fd, slot.via);
                let m = slot.machine();
                let (so, doff) = (m.src_off(), m.dst_off());
                let r = guarded(sigpipe_guard, || {
                    res(match via {
                        Via::Splice => sys::splice(src, so, dst, doff, len),
                        Via::Sendfile => sys::sendfile(dst, src, so, len),
                        Via::CopyFileRange => sys::copy_file_range(src, so, dst, doff, len),
                    })
                });
                // copy_file_range answers EBADF for an O_APPEND destination (the fds were
                // checked open at start): a refusal of the pair, like splice's EINVAL.
                let r = match r {
                    Err(libc::EBADF) if via == Via::CopyFileRange => Err(libc::EINVAL),
                    r => r,
                };
                if let Ok(n) = r {
                    moved += n as u64;
                }
                m.on_direct(r);
                m.hint_short_read(len, r);
            }
        }
        if let Some(slot) = fl.get(k)
            && slot.machine().take_copy_fallback()
        {
            fl.stats.copy_fallbacks += 1;
        }
    }
}

/// Takes the next record of a datagram or seqpacket source whole into the transfer's
/// buffer, grown to hold it. `None`: the machine refused the record (longer than the
/// transfer has left), which stays queued on the socket.
fn fill_record(slot: &mut crate::inflight::Slot) -> Option<OpResult> {
    let fd = slot.src_fd;
    let len = match res(sys::peek_record_len(fd)) {
        Ok(n) => n,
        Err(e) => return Some(Err(e)),
    };
    if len > 0 && !slot.machine().admit_record(len) {
        return None;
    }
    let buf = copy_buf(&mut slot.buf, len);
    if buf.data.len() < len {
        // Past COPY_BUF: a record is taken whole, so the buffer holds the largest seen.
        buf.data = vec![0u8; len].into_boxed_slice();
    }
    // Length 0 is end of stream, or an empty record, which this takes off the socket.
    match res(sys::recv_record(fd, &mut buf.data[..len])) {
        Ok(n) if n > len => {
            // Another reader took the record that was peeked at and this one was cut: the
            // part that fit is delivered, and the transfer stops with the record's loss.
            buf.start = 0;
            buf.end = len;
            slot.machine().on_fill(Ok(len));
            slot.machine()
                .fail_source(crate::error::Error::errno(Op::Recv, fd, libc::EMSGSIZE));
            None
        }
        r => {
            if let Ok(n) = r {
                buf.start = 0;
                buf.end = n;
            }
            Some(r)
        }
    }
}

/// The transfer's copy buffer, made on first use with room for `want` bytes (at most
/// [`COPY_BUF`]): a small message gets a buffer its size.
fn copy_buf(b: &mut Option<CopyBuf>, want: usize) -> &mut CopyBuf {
    b.get_or_insert_with(|| CopyBuf {
        data: vec![0u8; want.clamp(1, COPY_BUF)].into_boxed_slice(),
        start: 0,
        end: 0,
    })
}

/// The copy route's drain: write what the buffer holds; when it is empty but bytes are
/// staged, they are in the pipe (splice refused the destination after a fill), so read
/// them out of the pipe first.
fn drain_copy(
    slot: &mut crate::inflight::Slot,
    dst: i32,
    off: Option<u64>,
    sigpipe_guard: bool,
) -> OpResult {
    let socket = slot.dst_socket;
    let pipe_fd = slot.pipe.as_ref().map(|p| p.read_fd());
    let buf = copy_buf(&mut slot.buf, COPY_BUF);
    if buf.start == buf.end {
        let Some(pfd) = pipe_fd else {
            return Err(libc::EIO);
        };
        match sys::read(pfd, None, &mut buf.data) {
            Ok(n) => {
                buf.start = 0;
                buf.end = n;
            }
            Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }
    let chunk = &buf.data[buf.start..buf.end];
    let r = guarded(sigpipe_guard && !socket, || {
        res(sys::write(dst, off, chunk, socket))
    });
    if let Ok(n) = r {
        buf.start += n;
    }
    r
}

/// Runs `f` with `SIGPIPE` blocked and a pending one consumed, for hosts that have not
/// ignored it: a splice or write into a closed pipe or socket then fails with `EPIPE`
/// instead of killing the process.
///
/// The pending signal is taken whatever `f` returned: before Linux 6.5 a splice into a
/// socket goes through `sendpage` one pipe buffer at a time, and when a later buffer meets
/// the closed peer the kernel raises `SIGPIPE` yet the splice returns the bytes the earlier
/// buffers moved (`splice_from_pipe` keeps a partial count). Found by the kernel matrix on
/// 6.1 (`faults::destination_closed_early_does_not_raise_sigpipe`).
fn guarded(on: bool, f: impl FnOnce() -> OpResult) -> OpResult {
    if !on {
        return f();
    }
    let old = sys::block_sigpipe();
    let r = f();
    // Whatever the result (a partial count can come with the signal): one `sigtimedwait`,
    // paid only by hosts that keep SIGPIPE's default action.
    sys::consume_sigpipe();
    sys::restore_sigmask(old);
    r
}

/// An error for a readiness wait that failed.
pub(crate) fn poll_error(fd: i32, errno: i32) -> Error {
    Error::errno(Op::Poll, fd, errno)
}
