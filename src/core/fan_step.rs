//! Carrying out a fan-out's steps on the engine's thread, on both backends: readiness from
//! the driver, then non-blocking `splice(2)` and `tee(2)` (op/), until nothing more can
//! move without waiting or the fan-out has had its share. fan.rs decides; this calls.

use std::os::fd::RawFd;

use crate::error::{Error, Op};
use crate::op::{drain, fill, tee};
use crate::stats::Stats;
use crate::sys::{self, SigpipeGuard};

use super::fan::{Fan, Segment, Stop};
use super::id::Id;
use super::pipes::{Lease, Pipe, Pipes};

/// Most rounds of drain, tee, discard and fill in one run.
const MAX_ROUNDS: u32 = 64;

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FanPark {
    /// Waiting: for the readiness the fan-out wants (the engine arms it), or a pipe.
    Wait,
    /// Its share of this pass is used up.
    Yield,
    /// Stopped early, or done with waits still armed: the engine takes back its waits,
    /// then finishes it.
    Stop,
    /// Done.
    Finish,
}

/// What a run may use.
#[derive(Debug)]
pub(crate) struct FanCx<'a> {
    /// The fan-out's own id: the one that waits for the pipe budget.
    pub(crate) id: Id,
    pub(crate) pipes: &'a mut Pipes,
    pub(crate) stats: &'a mut Stats,
    pub(crate) budget: u64,
    pub(crate) guard: SigpipeGuard,
    /// `/dev/null`, where the trunk's bytes every leg has go.
    pub(crate) null: RawFd,
    /// Bytes taken from the source in this run.
    pub(crate) moved: u64,
}

/// Runs a fan-out until it must wait, has had its share, or is done.
pub(crate) fn run(f: &mut Fan, cx: &mut FanCx<'_>) -> FanPark {
    let mut park = FanPark::Yield;
    for _ in 0..MAX_ROUNDS {
        if f.stop.is_some() {
            park = FanPark::Stop;
            break;
        }
        let mut progress = drain_legs(f, cx);
        progress |= tee_legs(f, cx);
        f.drop_laggards();
        progress |= discard(f, cx);
        for i in f.end_main_path() {
            shut_down_early(f, i);
        }
        if f.finished() {
            // A wait still with the driver (a dropped leg's, the source's) is taken back
            // first: the kernel must not hold an fd the completion hands back.
            park = if f.stop.is_some() || f.outstanding() {
                FanPark::Stop
            } else {
                FanPark::Finish
            };
            break;
        }
        progress |= fill_trunk(f, cx);
        if !progress {
            park = FanPark::Wait;
            break;
        }
        if cx.moved >= cx.budget {
            break;
        }
    }
    release_idle(f, cx.pipes);
    park
}

/// A required leg has every byte and the main path is done: its socket's write side is
/// shut down now if the fan-out passes half-closes on, without waiting for best-effort
/// legs. A failure fails the fan-out.
fn shut_down_early(f: &mut Fan, i: usize) {
    let l = &mut f.legs[i];
    if !f.shutdown || !l.socket {
        return;
    }
    if let Err(e) = sys::shutdown_write(l.dst) {
        l.end = Some(Err(Error::io(Op::Shutdown, l.dst, e)));
        f.stop.get_or_insert(Stop::Failed(i));
    }
}

/// Every live leg with a backlog splices from its oldest pipe into its destination.
fn drain_legs(f: &mut Fan, cx: &mut FanCx<'_>) -> bool {
    let mut progress = false;
    for i in 0..f.legs.len() {
        loop {
            let l = &f.legs[i];
            if !l.live() || l.want_write {
                break;
            }
            let Some(s) = l.backlog.front() else { break };
            if s.bytes == 0 {
                if l.backlog.len() == 1 {
                    break;
                }
                let s = f.legs[i].backlog.pop_front().expect("invariant: checked");
                cx.pipes.give(s.pipe, false);
                continue;
            }
            let len = s.bytes.min(usize::MAX as u64) as usize;
            let (r, dst, socket) = (s.pipe.read_fd(), l.dst, l.socket);
            cx.stats.inline_calls += 1;
            let res = drain::call(r, dst, None, len, (cx.guard, socket));
            f.on_drain(i, res);
            if !matches!(res, Ok(n) if n > 0) {
                break;
            }
            progress = true;
        }
    }
    progress
}

/// Every live leg at the trunk's start tees what the trunk holds (into its newest backlog
/// pipe, taking another where its policy allows, or straight into a pipe destination).
fn tee_legs(f: &mut Fan, cx: &mut FanCx<'_>) -> bool {
    let Some(trunk) = f.trunk.as_ref().map(Pipe::read_fd) else {
        return false;
    };
    let mut progress = false;
    for i in 0..f.legs.len() {
        for _ in 0..4 {
            let len = f.tee_len(i);
            if len == 0 || (f.legs[i].direct && f.legs[i].want_write) {
                break;
            }
            let Some(out) = tee_target(f, i, cx) else {
                break;
            };
            cx.stats.inline_calls += 1;
            let res = tee::call(trunk, out, len, cx.guard);
            let full = matches!(res, Err(libc::EAGAIN)) || matches!(res, Ok(n) if n < len);
            f.on_tee(i, res);
            progress |= matches!(res, Ok(n) if n > 0);
            if !full || f.legs[i].direct {
                break;
            }
            // The newest pipe is full: the next try takes another, if allowed.
            let cap = f.legs[i].backlog.back().map_or(0, |s| s.pipe.capacity());
            if f.legs[i].backlog.len() >= f.legs[i].max_pipes(cap) {
                break;
            }
            let Some(pipe) = take_pipe(f, cx, Some(i)) else {
                break;
            };
            f.legs[i].backlog.push_back(Segment { pipe, bytes: 0 });
        }
    }
    progress
}

/// The fd leg `i` tees into: its destination (a direct leg), or its newest backlog pipe,
/// leased if it has none. `None`: no pipe to be had now.
fn tee_target(f: &mut Fan, i: usize, cx: &mut FanCx<'_>) -> Option<RawFd> {
    if f.legs[i].direct {
        return Some(f.legs[i].dst);
    }
    if f.legs[i].backlog.is_empty() {
        let p = take_pipe(f, cx, Some(i))?;
        f.legs[i].backlog.push_back(Segment { pipe: p, bytes: 0 });
    }
    f.legs[i].backlog.back().map(|s| s.pipe.write_fd())
}

/// A pipe for the trunk (`leg` `None`) or a leg: the one handed over, or one from the
/// budget. A best-effort leg does not queue for one (it must never hold the others back):
/// it is marked starved instead.
fn take_pipe(f: &mut Fan, cx: &mut FanCx<'_>, leg: Option<usize>) -> Option<Pipe> {
    let best_effort = leg.is_some_and(|i| !f.legs[i].required());
    if let Some(i) = leg {
        f.legs[i].starved = false;
    }
    if let Some(p) = f.spare.take() {
        return Some(p);
    }
    let queue = !best_effort && !f.waiting_pipe;
    match cx.pipes.take(cx.id, queue) {
        Lease::Pipe(p) => Some(p),
        Lease::Wait { queued } => {
            f.waiting_pipe |= queued;
            if let (Some(i), true) = (leg, best_effort) {
                f.legs[i].starved = true;
            }
            None
        }
        Lease::Failed(e) => {
            f.src_error.get_or_insert(e);
            None
        }
    }
}

/// Discards the trunk's bytes that every live leg has received.
fn discard(f: &mut Fan, cx: &mut FanCx<'_>) -> bool {
    let c = f.consumable();
    let Some(trunk) = f.trunk.as_ref().map(Pipe::read_fd) else {
        return false;
    };
    if c == 0 {
        return false;
    }
    cx.stats.inline_calls += 1;
    match drain::call(trunk, cx.null, None, c as usize, (cx.guard, false)) {
        Ok(n) => {
            f.head += n as u64;
            n > 0
        }
        Err(e) => {
            // /dev/null refusing a splice would be a kernel without splice_write_null.
            let err = Error::errno(Op::SpliceOut, cx.null, e);
            f.src_error.get_or_insert(err);
            f.stop.get_or_insert(Stop::Source);
            false
        }
    }
}

/// Takes more from the source once the trunk is empty.
fn fill_trunk(f: &mut Fan, cx: &mut FanCx<'_>) -> bool {
    if f.source_done() || f.want_read || f.head != f.taken || cx.moved >= cx.budget {
        return false;
    }
    if f.trunk.is_none() {
        match take_pipe(f, cx, None) {
            Some(p) => f.trunk = Some(p),
            None => return false,
        }
    }
    let Some(t) = f.trunk.as_ref() else {
        return false;
    };
    let cap = t.capacity() as u64;
    let len = f.remaining().map_or(cap, |r| r.min(cap)) as usize;
    cx.stats.inline_calls += 1;
    let res = fill::call(f.src, None, t.write_fd(), len);
    f.on_fill(res, len);
    if let Ok(n) = res {
        cx.moved += n as u64;
    }
    matches!(res, Ok(n) if n > 0) || f.src_eof
}

/// Gives back what an idle fan-out holds: an empty trunk, empty backlog pipes, a spare.
pub(crate) fn release_idle(f: &mut Fan, pipes: &mut Pipes) {
    if f.head == f.taken
        && let Some(p) = f.trunk.take()
    {
        pipes.give(p, false);
    }
    for l in &mut f.legs {
        while l.backlog.front().is_some_and(|s| s.bytes == 0 || !l.live()) {
            let s = l.backlog.pop_front().expect("invariant: checked");
            pipes.give(s.pipe, s.bytes > 0);
        }
    }
    if let Some(p) = f.spare.take() {
        pipes.give(p, false);
    }
}
