//! A fan-out's state and its accounting: one source, 2 to 64 legs (destinations). Plain
//! data and decisions; the syscalls are in fan_step.rs.
//!
//! Bytes move `source → trunk pipe`, then `tee(trunk → leg pipe)` for every leg and
//! `splice(leg pipe → destination)`; a required leg whose destination is a pipe is teed
//! into directly. `tee` always duplicates from the *start* of the trunk, so positions are
//! kept in stream bytes: the trunk holds `[head, taken)`, and a leg has received
//! everything before its `teed` (`head <= teed <= taken`). A leg can tee only when its
//! `teed == head`; once every live leg is past a prefix, that prefix is discarded from the
//! trunk (spliced into `/dev/null`, which takes exactly the bytes asked for). A required
//! leg that has not taken a prefix holds the trunk, and so the source, back; a best-effort
//! leg never does: when the trunk must move past what it could buffer, it is dropped.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::endpoint::Endpoint;
use crate::error::{Error, Op};
use crate::fan_out::{Branch, Policy};
use crate::op::OpResult;

use super::id::Id;
use super::pipes::Pipe;

/// Why a fan-out stops before its source is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Cancelled,
    /// Required leg `i` failed.
    Failed(usize),
    /// Every leg has stopped; `i` was the last.
    NoneLeft(usize),
    /// The trunk could not be emptied: the source's error says why.
    Source,
}

impl Stop {
    fn error(self) -> Error {
        match self {
            Stop::Cancelled => Error::Cancelled,
            Stop::Failed(index) | Stop::NoneLeft(index) => Error::DestinationFailed { index },
            Stop::Source => Error::Cancelled,
        }
    }
}

/// A pipe of a leg's backlog and the bytes in it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) pipe: Pipe,
    pub(crate) bytes: u64,
}

/// One destination.
#[derive(Debug)]
pub(crate) struct Leg {
    /// Its slot: the identity of its writability waits.
    pub(crate) id: Id,
    pub(crate) dst: RawFd,
    pub(crate) policy: Policy,
    /// A pipe destination of a required leg: teed into directly, no backlog.
    pub(crate) direct: bool,
    pub(crate) socket: bool,
    pub(crate) pollable: bool,
    /// Teed, not yet delivered, oldest first; at most one pipe for a required leg.
    pub(crate) backlog: VecDeque<Segment>,
    pub(crate) teed: u64,
    pub(crate) delivered: u64,
    pub(crate) want_write: bool,
    pub(crate) with_driver: bool,
    /// A best-effort leg found no pipe within the budget.
    pub(crate) starved: bool,
    /// `Some`: stopped, with why.
    pub(crate) end: Option<Result<(), Error>>,
}

impl Leg {
    pub(crate) fn new(id: Id, dst: RawFd, policy: Policy) -> Leg {
        Leg {
            id,
            dst,
            policy,
            direct: false,
            socket: false,
            pollable: true,
            backlog: VecDeque::new(),
            teed: 0,
            delivered: 0,
            want_write: false,
            with_driver: false,
            starved: false,
            end: None,
        }
    }

    pub(crate) fn live(&self) -> bool {
        self.end.is_none()
    }

    pub(crate) fn required(&self) -> bool {
        self.policy == Policy::Required
    }

    /// Stopped with every byte it was to get.
    pub(crate) fn succeeded(&self) -> bool {
        matches!(self.end, Some(Ok(())))
    }

    /// Teed and not yet accepted by the destination.
    pub(crate) fn buffered(&self) -> u64 {
        self.teed - self.delivered
    }

    /// Most pipes its backlog may hold: one for a required leg, as many as `max_lag`
    /// needs for a best-effort one.
    pub(crate) fn max_pipes(&self, pipe_cap: usize) -> usize {
        match self.policy {
            Policy::Required => 1,
            Policy::BestEffort { max_lag } => {
                (max_lag.div_ceil(pipe_cap.max(1) as u64)).clamp(1, 1 << 16) as usize
            }
        }
    }
}

/// The state of one fan-out.
#[derive(Debug)]
pub(crate) struct Fan {
    pub(crate) src: RawFd,
    pub(crate) src_pollable: bool,
    pub(crate) length: Option<u64>,
    pub(crate) trunk: Option<Pipe>,
    /// A pipe handed over by the budget's waiter queue, for whatever needs one next.
    pub(crate) spare: Option<Pipe>,
    pub(crate) taken: u64,
    pub(crate) head: u64,
    pub(crate) src_eof: bool,
    pub(crate) src_error: Option<Error>,
    pub(crate) want_read: bool,
    pub(crate) src_with_driver: bool,
    pub(crate) legs: Vec<Leg>,
    pub(crate) stop: Option<Stop>,
    /// On the engine's ready queue.
    pub(crate) queued: bool,
    pub(crate) waiting_pipe: bool,
    pub(crate) started: bool,
    pub(crate) shutdown: bool,
    /// How long best-effort legs may go on once the main path is done (`None`: as long
    /// as they need).
    pub(crate) linger: Option<Duration>,
    /// The main path is done: the source, and every required leg has every byte.
    pub(crate) main_done: bool,
}

impl Fan {
    pub(crate) fn new(src: RawFd, length: Option<u64>, shutdown: bool) -> Fan {
        Fan {
            src,
            src_pollable: true,
            length,
            trunk: None,
            spare: None,
            taken: 0,
            head: 0,
            src_eof: false,
            src_error: None,
            want_read: false,
            src_with_driver: false,
            legs: Vec::new(),
            stop: None,
            queued: false,
            waiting_pipe: false,
            started: false,
            shutdown,
            linger: None,
            main_done: false,
        }
    }

    pub(crate) fn remaining(&self) -> Option<u64> {
        self.length.map(|n| n - self.taken)
    }

    /// Nothing more will be taken from the source.
    pub(crate) fn source_done(&self) -> bool {
        self.src_eof || self.src_error.is_some() || self.remaining() == Some(0)
    }

    /// Waits or operations of this fan-out the driver still holds.
    pub(crate) fn outstanding(&self) -> bool {
        self.src_with_driver || self.legs.iter().any(|l| l.with_driver)
    }

    /// Done: the source is done and every live leg has delivered all of it.
    pub(crate) fn finished(&self) -> bool {
        self.stop.is_some()
            || (self.source_done()
                && self.head == self.taken
                && self.legs.iter().all(|l| !l.live() || l.buffered() == 0))
    }

    /// How much leg `i` may tee now: the trunk's bytes, if it is at the trunk's start,
    /// within a best-effort leg's `max_lag`.
    pub(crate) fn tee_len(&self, i: usize) -> usize {
        let l = &self.legs[i];
        if !l.live() || l.teed != self.head || self.taken == self.head {
            return 0;
        }
        let mut n = self.taken - self.head;
        if let Policy::BestEffort { max_lag } = l.policy {
            n = n.min(max_lag.saturating_sub(l.buffered()));
        }
        n.min(usize::MAX as u64) as usize
    }

    /// Applies a tee into leg `i` (its backlog's last pipe, or its destination).
    pub(crate) fn on_tee(&mut self, i: usize, res: OpResult) {
        let l = &mut self.legs[i];
        match res {
            Ok(n) => {
                l.teed += n as u64;
                if l.direct {
                    l.delivered += n as u64;
                } else if let Some(s) = l.backlog.back_mut() {
                    s.bytes += n as u64;
                }
            }
            Err(libc::EAGAIN) if l.direct => l.want_write = true,
            Err(libc::EAGAIN | libc::EINTR) => {}
            Err(e) => {
                let err = Error::errno(Op::Tee, l.dst, e);
                self.fail_leg(i, err);
            }
        }
    }

    /// Applies a splice from leg `i`'s oldest backlog pipe into its destination.
    pub(crate) fn on_drain(&mut self, i: usize, res: OpResult) {
        let l = &mut self.legs[i];
        match res {
            Ok(0) => {
                let err = Error::errno(Op::SpliceOut, l.dst, libc::EPIPE);
                self.fail_leg(i, err);
            }
            Ok(n) => {
                l.delivered += n as u64;
                if let Some(s) = l.backlog.front_mut() {
                    s.bytes -= n as u64;
                }
            }
            Err(libc::EAGAIN) => l.want_write = true,
            Err(libc::EINTR) => {}
            Err(e) => {
                let err = Error::errno(Op::SpliceOut, l.dst, e);
                self.fail_leg(i, err);
            }
        }
    }

    /// Applies a fill of the trunk from the source.
    pub(crate) fn on_fill(&mut self, res: OpResult, asked: usize) {
        match res {
            Ok(0) => self.src_eof = true,
            Ok(n) => {
                self.taken += n as u64;
                // A short read from a pollable source: most likely drained.
                self.want_read = self.src_pollable && n < asked;
            }
            Err(libc::EAGAIN) => self.want_read = true,
            Err(libc::EINTR) => {}
            Err(e) => self.src_error = Some(Error::errno(Op::SpliceIn, self.src, e)),
        }
    }

    /// Applies the end of a readiness wait of the source (`dir` read) or of leg `leg`.
    pub(crate) fn on_ready(&mut self, leg: Option<usize>, res: Option<Result<(), i32>>) {
        match leg {
            None => {
                self.src_with_driver = false;
                match res {
                    Some(Ok(())) => self.want_read = false,
                    Some(Err(e)) => self.src_error = Some(Error::errno(Op::Poll, self.src, e)),
                    None => {}
                }
            }
            Some(i) => {
                let l = &mut self.legs[i];
                l.with_driver = false;
                match res {
                    Some(Ok(())) => l.want_write = false,
                    Some(Err(e)) => {
                        let err = Error::errno(Op::Poll, l.dst, e);
                        self.fail_leg(i, err);
                    }
                    None => {}
                }
            }
        }
    }

    /// Stops leg `i` with `err`; a required leg's failure stops the whole fan-out.
    pub(crate) fn fail_leg(&mut self, i: usize, err: Error) {
        let l = &mut self.legs[i];
        if !l.live() {
            return;
        }
        let required = l.required();
        l.end = Some(Err(err));
        l.want_write = false;
        if required {
            self.stop.get_or_insert(Stop::Failed(i));
        } else if !self.legs.iter().any(|l| l.live() || l.succeeded()) {
            self.stop.get_or_insert(Stop::NoneLeft(i));
        }
    }

    pub(crate) fn cancel(&mut self) {
        self.stop.get_or_insert(Stop::Cancelled);
    }

    /// Ends the main path once the source is done and every required leg has every byte:
    /// those legs succeed now (a best-effort leg still behind never holds them back: the
    /// caller may shut them down at once). Returns the legs that succeeded now.
    pub(crate) fn end_main_path(&mut self) -> Vec<usize> {
        if self.main_done || self.stop.is_some() || !self.source_done() {
            return Vec::new();
        }
        let taken = self.taken;
        let mut required = self.legs.iter().filter(|l| l.required());
        if !required.all(|l| l.delivered == taken) {
            return Vec::new();
        }
        self.main_done = true;
        let mut now = Vec::new();
        for (i, l) in self.legs.iter_mut().enumerate() {
            if l.required() && l.live() {
                l.end = Some(Ok(()));
                now.push(i);
            }
        }
        now
    }

    /// Whether leg `i` is still going and has not got every byte taken.
    fn behind(&self, i: usize) -> bool {
        self.legs[i].live() && self.legs[i].delivered < self.taken
    }

    /// Some best-effort leg is still behind: once the main path is done, the linger runs.
    pub(crate) fn lingering(&self) -> bool {
        (0..self.legs.len()).any(|i| self.behind(i))
    }

    /// The linger is over: every best-effort leg still behind is dropped, with what it
    /// missed counted.
    pub(crate) fn end_linger(&mut self) {
        for i in 0..self.legs.len() {
            if self.behind(i) {
                self.fail_leg(i, Error::TimedOut);
            }
        }
    }

    /// Drops the best-effort legs that the trunk must move past: they are short of where
    /// every required leg has got to (or, with no required leg, of everything taken) and
    /// can take no more — their pipes hold `max_lag` or are as many as it allows, or the
    /// budget had no pipe for them.
    pub(crate) fn drop_laggards(&mut self) {
        let bound = self
            .legs
            .iter()
            .filter(|l| l.required() && (l.live() || l.succeeded()))
            .map(|l| l.teed)
            .min()
            .unwrap_or(self.taken);
        for i in 0..self.legs.len() {
            let l = &self.legs[i];
            if !l.live() || l.required() || l.teed >= bound {
                continue;
            }
            let Policy::BestEffort { max_lag } = l.policy else {
                continue;
            };
            // Short of the others only because its newest pipe filled mid-trunk: it tees
            // the rest once the trunk's start has moved up to it, so it is kept.
            let cap = l.backlog.back().map_or(0, |s| s.pipe.capacity());
            let full = l.buffered() >= max_lag || l.backlog.len() >= l.max_pipes(cap);
            if !full && !l.starved {
                continue;
            }
            let behind = self.taken - l.delivered;
            let err = if l.starved && l.buffered() < max_lag {
                Error::PipeBudget(format!(
                    "no pipe within the budget for best-effort destination {i} ({behind} bytes \
                     behind)"
                ))
            } else {
                Error::Lagged { behind, max_lag }
            };
            self.fail_leg(i, err);
        }
    }

    /// Bytes at the trunk's start that every live leg has received: they can be discarded.
    pub(crate) fn consumable(&self) -> u64 {
        let low = self.legs.iter().filter(|l| l.live()).map(|l| l.teed).min();
        low.unwrap_or(self.taken) - self.head
    }

    /// The fan-out's result, once [`Fan::finished`].
    pub(crate) fn outcome(&mut self) -> Result<(), Error> {
        if let (Some(Stop::Source), Some(e)) = (self.stop, self.src_error.take()) {
            return Err(e);
        }
        if let Some(s) = self.stop {
            return Err(s.error());
        }
        if let Some(e) = self.src_error.take() {
            return Err(e);
        }
        match self.length {
            Some(expected) if self.taken < expected => Err(Error::UnexpectedEof {
                expected,
                delivered: self.taken,
            }),
            _ => Ok(()),
        }
    }

    /// The most any required leg missed.
    pub(crate) fn undelivered(&self) -> u64 {
        let req = self.legs.iter().filter(|l| l.required());
        req.map(|l| self.taken - l.delivered).max().unwrap_or(0)
    }

    /// Each leg's account, with its endpoint back.
    pub(crate) fn branches(&mut self, mut endpoints: Vec<Endpoint>) -> Vec<Branch> {
        let stop = self.stop;
        let taken = self.taken;
        endpoints
            .drain(..)
            .zip(self.legs.iter_mut())
            .map(|(destination, l)| {
                let result = match l.end.take() {
                    Some(r) => r,
                    None => stop.map_or(Ok(()), |s| Err(s.error())),
                };
                Branch {
                    destination,
                    policy: l.policy,
                    delivered: l.delivered,
                    missed: taken - l.delivered,
                    result,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan(policies: &[Policy]) -> Fan {
        let mut f = Fan::new(3, None, false);
        for (i, &p) in policies.iter().enumerate() {
            let mut l = Leg::new(Id::new(i + 1, 0), 10 + i as i32, p);
            l.direct = true; // no backlog pipes needed to test the accounting
            f.legs.push(l);
        }
        f
    }

    #[test]
    fn the_trunk_moves_only_past_what_every_leg_has() {
        let mut f = fan(&[Policy::Required, Policy::Required]);
        f.on_fill(Ok(100), 100);
        assert_eq!((f.tee_len(0), f.tee_len(1)), (100, 100));
        f.on_tee(0, Ok(100));
        f.on_tee(1, Ok(40));
        assert_eq!(f.consumable(), 40);
        f.head += 40;
        // Leg 0 is ahead of the trunk's start: it waits; leg 1 tees the rest.
        assert_eq!((f.tee_len(0), f.tee_len(1)), (0, 60));
        f.on_tee(1, Ok(60));
        assert_eq!(f.consumable(), 60);
        f.head += 60;
        f.on_fill(Ok(0), 100);
        assert!(f.finished());
        assert!(f.outcome().is_ok());
    }

    #[test]
    fn a_best_effort_leg_is_dropped_not_waited_for() {
        let lag = Policy::BestEffort { max_lag: 50 };
        let mut f = fan(&[Policy::Required, lag]);
        f.legs[1].direct = false;
        f.on_fill(Ok(100), 100);
        assert_eq!(f.tee_len(1), 50, "limited by max_lag");
        f.on_tee(0, Ok(100));
        f.on_tee(1, Ok(50));
        f.drop_laggards();
        assert!(matches!(
            f.legs[1].end,
            Some(Err(Error::Lagged {
                behind: 100,
                max_lag: 50
            }))
        ));
        assert_eq!(f.consumable(), 100);
        assert!(f.stop.is_none());
    }

    #[test]
    fn a_required_failure_stops_everything_with_exact_counts() {
        let mut f = fan(&[Policy::Required, Policy::Required]);
        f.on_fill(Ok(100), 100);
        f.on_tee(0, Ok(100));
        f.on_tee(1, Err(libc::EPIPE));
        assert_eq!(f.stop, Some(Stop::Failed(1)));
        assert!(f.finished());
        assert!(matches!(
            f.outcome(),
            Err(Error::DestinationFailed { index: 1 })
        ));
        assert_eq!(f.undelivered(), 100);
        let b = f.branches(vec![Endpoint::detached(), Endpoint::detached()]);
        assert_eq!((b[0].delivered, b[0].missed), (100, 0));
        assert_eq!((b[1].delivered, b[1].missed), (0, 100));
        assert!(matches!(
            b[0].result,
            Err(Error::DestinationFailed { index: 1 })
        ));
        assert_eq!(
            b[1].result.as_ref().unwrap_err().raw_os_error(),
            Some(libc::EPIPE)
        );
    }

    #[test]
    fn with_every_leg_gone_the_fan_out_stops() {
        let lag = Policy::BestEffort { max_lag: 0 };
        let mut f = fan(&[lag, lag]);
        f.on_fill(Ok(10), 10);
        f.drop_laggards();
        assert_eq!(f.stop, Some(Stop::NoneLeft(1)));
    }
}
