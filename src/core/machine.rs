//! The per-transfer state machine: what to do next and what a result means. Plain data and
//! logic, no syscalls; both backends and both strategies drive it, so byte accounting lives
//! in exactly one place.
//!
//! A transfer moves bytes along one of three routes:
//! - `Pipe`: `src → engine pipe → dst` (neither side is a pipe);
//! - `Direct`: one `splice` from `src` to `dst` (one side is a pipe);
//! - `Copy`: `read` into a buffer, `write` out (splice refused the pair);
//! - `Records`: one whole record at a time from a datagram or seqpacket socket into a
//!   buffer that holds it, then `write` out. Splicing such a socket into a pipe would keep
//!   only the part of a record that fits and drop the rest.
//!
//! "Staged" bytes were taken from the source and not yet written: they sit in the engine's
//! pipe (or buffer) and are drained before anything else happens.

use crate::error::{Error, Op};
use crate::op::{Dir, OpResult, poll};

/// How bytes travel from source to destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Pipe,
    Direct,
    Copy,
    Records,
}

/// The next step the backend should carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Move up to `len` bytes from the source into the staging pipe or buffer.
    Fill { len: usize },
    /// Move up to `len` staged bytes into the destination.
    Drain { len: usize },
    /// Move up to `len` bytes from the source straight into the destination.
    Direct { len: usize },
    /// Wait until the source is readable.
    WaitReadable,
    /// Wait until the destination is writable.
    WaitWritable,
    /// Nothing more to do: [`Machine::outcome`] tells how it ended.
    Finish,
}

/// Which side a failure came from: after a source error, staged bytes are still drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Nothing,
    Readable,
    Writable,
}

/// The state of one transfer.
#[derive(Debug)]
pub(crate) struct Machine {
    route: Route,
    /// Bytes still to take from the source; `None` until end of file.
    remaining: Option<u64>,
    expected: Option<u64>,
    staged: u64,
    delivered: u64,
    src_off: Option<u64>,
    dst_off: Option<u64>,
    chunk: usize,
    src_eof: bool,
    want: Want,
    /// For the direct route: which readiness was last waited for, since `EAGAIN` does not say
    /// which side was not ready.
    last_wait: Want,
    src_always_ready: bool,
    dst_always_ready: bool,
    /// The syscall behind a direct transfer, for error reports.
    direct_op: Op,
    error: Option<(Side, Error)>,
    cancelled: bool,
    timed_out: bool,
    copy_fallback: bool,
    src_fd: i32,
    dst_fd: i32,
}

impl Machine {
    pub(crate) fn new(
        route: Route,
        length: Option<u64>,
        src_off: Option<u64>,
        dst_off: Option<u64>,
        chunk: usize,
        fds: (i32, i32),
    ) -> Machine {
        Machine {
            route,
            remaining: length,
            expected: length,
            staged: 0,
            delivered: 0,
            src_off,
            dst_off,
            chunk: chunk.max(1),
            src_eof: false,
            want: Want::Nothing,
            last_wait: Want::Nothing,
            src_always_ready: false,
            dst_always_ready: false,
            direct_op: Op::Splice,
            error: None,
            cancelled: false,
            timed_out: false,
            copy_fallback: false,
            src_fd: fds.0,
            dst_fd: fds.1,
        }
    }

    pub(crate) fn route(&self) -> Route {
        self.route
    }
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }
    pub(crate) fn staged(&self) -> u64 {
        self.staged
    }
    pub(crate) fn src_off(&self) -> Option<u64> {
        self.src_off
    }
    pub(crate) fn dst_off(&self) -> Option<u64> {
        self.dst_off
    }
    /// True once, when splice refused the pair and the route became `Copy`.
    pub(crate) fn take_copy_fallback(&mut self) -> bool {
        std::mem::take(&mut self.copy_fallback)
    }

    /// Limits the chunk to what a pipe can hold.
    pub(crate) fn cap_chunk(&mut self, cap: usize) {
        self.chunk = self.chunk.min(cap.max(1));
    }

    /// Bytes the next fill or direct splice may ask for.
    pub(crate) fn next_len(&self) -> usize {
        match self.remaining {
            Some(r) => (r.min(self.chunk as u64)) as usize,
            None => self.chunk,
        }
    }

    /// Bytes still to be read from the source (`None`: until end of file).
    pub(crate) fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    pub(crate) fn cancel(&mut self) {
        self.cancelled = true;
    }

    /// Cancels because a deadline or idle timeout passed: the outcome is `TimedOut`.
    pub(crate) fn time_out(&mut self) {
        self.cancelled = true;
        self.timed_out = true;
    }

    /// Readiness the machine waited for has arrived.
    pub(crate) fn ready(&mut self) {
        if self.want != Want::Nothing {
            self.last_wait = self.want;
        }
        self.want = Want::Nothing;
    }

    /// Applies the end of a readiness wait, from either driver: the side waited for is
    /// ready, or the wait failed and fails the transfer on that side ([`poll::outcome`]
    /// says which results are failures, the same for `POLL_ADD` and epoll). Returns
    /// whether the side is ready.
    pub(crate) fn on_ready(&mut self, dir: Dir, res: Result<u32, i32>) -> bool {
        let ready = poll::outcome(res);
        match (ready, dir) {
            (Ok(()), _) => self.ready(),
            (Err(e), Dir::Read) => {
                let err = Error::errno(Op::Poll, self.src_fd, e);
                self.set_error(Side::Source, err);
            }
            (Err(e), Dir::Write) => {
                let err = Error::errno(Op::Poll, self.dst_fd, e);
                self.set_error(Side::Destination, err);
            }
        }
        ready.is_ok()
    }

    /// Fails the transfer from outside (pipe creation failure, …).
    pub(crate) fn fail_source(&mut self, e: Error) {
        self.set_error(Side::Source, e);
    }

    pub(crate) fn fail_destination(&mut self, e: Error) {
        self.set_error(Side::Destination, e);
    }

    fn set_error(&mut self, side: Side, e: Error) {
        if self.error.is_none() {
            self.error = Some((side, e));
        }
    }

    fn took_from_source(&mut self, n: usize) {
        let n = n as u64;
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(n);
        }
        if let Some(o) = &mut self.src_off {
            *o += n;
        }
    }

    fn gave_to_destination(&mut self, n: usize) {
        let n = n as u64;
        self.delivered += n;
        if let Some(o) = &mut self.dst_off {
            *o += n;
        }
    }

    /// Whether `EINVAL` now means "splice can't do this pair": nothing has moved yet.
    ///
    /// `EINVAL` is splice's and sendfile's answer for a pair they cannot serve (datagram
    /// sockets, ttys, `O_APPEND` files); `copy_file_range` adds `EXDEV`, `ENOSYS` and
    /// `EOPNOTSUPP`. This is the list Go's `genericReadFrom` fallback reacts to.
    fn may_fall_back(&self, errno: i32) -> bool {
        matches!(
            errno,
            libc::EINVAL | libc::ENOSYS | libc::EXDEV | libc::EOPNOTSUPP
        ) && self.delivered == 0
            && !matches!(self.route, Route::Copy | Route::Records)
    }

    /// Decides whether the next record, `len` bytes long, may be taken from the source: not
    /// when it is longer than what an exact length has left, since taking part of a record
    /// drops the rest. The transfer then fails with [`Error::RecordTooLong`] and the record
    /// stays in the socket.
    pub(crate) fn admit_record(&mut self, len: usize) -> bool {
        match self.remaining {
            Some(r) if len as u64 > r => {
                self.set_error(
                    Side::Source,
                    Error::RecordTooLong {
                        fd: self.src_fd,
                        record: len as u64,
                        room: r,
                    },
                );
                false
            }
            _ => true,
        }
    }

    /// Names the syscall behind [`Action::Direct`] (splice unless told otherwise).
    pub(crate) fn set_direct_op(&mut self, op: Op) {
        self.direct_op = op;
    }

    /// Tells the machine which sides can never make a direct transfer wait: a regular file
    /// is always ready, so `EAGAIN` on a direct transfer from a file means the destination
    /// is full, and one into a file means the source is empty.
    pub(crate) fn set_always_ready(&mut self, src: bool, dst: bool) {
        self.src_always_ready = src;
        self.dst_always_ready = dst;
    }

    /// Applies the result of a [`Action::Fill`].
    pub(crate) fn on_fill(&mut self, res: OpResult) {
        match res {
            Ok(0) => self.src_eof = true,
            Ok(n) => {
                self.staged += n as u64;
                self.took_from_source(n);
            }
            Err(libc::EAGAIN) => self.want = Want::Readable,
            Err(libc::EINTR) => {}
            Err(e) if self.may_fall_back(e) && self.staged == 0 => {
                self.route = Route::Copy;
                self.copy_fallback = true;
            }
            Err(e) => {
                let op = self.fill_op();
                let fd = self.src_fd;
                self.set_error(Side::Source, Error::errno(op, fd, e))
            }
        }
    }

    /// After a read from a pollable source that returned less than asked, the source is
    /// most likely drained: wait for readiness rather than probe with one more call that
    /// would fail with `EAGAIN`. (If data arrived meanwhile, the poll fires at once.)
    pub(crate) fn hint_short_read(&mut self, asked: usize, res: OpResult) {
        if let Ok(n) = res
            && n > 0
            && n < asked
            && !self.src_always_ready
            && self.want == Want::Nothing
        {
            self.want = Want::Readable;
        }
    }

    /// After a send from a regular file into a pollable destination that moved less than
    /// asked while the file has more (`more`), the destination is full: wait for it to be
    /// writable rather than probe with one more call that would fail with `EAGAIN` (a
    /// `sendfile` that fails so still reads a pipe's worth of the file first).
    pub(crate) fn hint_short_write(&mut self, asked: usize, res: OpResult, more: bool) {
        if let Ok(n) = res
            && n > 0
            && n < asked
            && more
            && self.src_always_ready
            && !self.dst_always_ready
            && self.remaining != Some(0)
            && self.want == Want::Nothing
        {
            self.want = Want::Writable;
        }
    }

    /// Applies the result of a [`Action::Drain`].
    pub(crate) fn on_drain(&mut self, res: OpResult) {
        match res {
            Ok(0) => {
                if self.staged > 0 {
                    let (op, fd) = (self.drain_op(), self.dst_fd);
                    self.set_error(Side::Destination, Error::errno(op, fd, libc::EPIPE));
                }
            }
            Ok(n) => {
                let n = n.min(self.staged as usize);
                self.staged -= n as u64;
                self.gave_to_destination(n);
            }
            Err(libc::EAGAIN) => {
                if self.staged > 0 {
                    self.want = Want::Writable
                }
            }
            Err(libc::EINTR) => {}
            // The destination refuses splice (an O_APPEND file, say): the staged bytes are
            // copied out of the pipe by the copy route's drain.
            Err(e) if self.may_fall_back(e) => {
                self.route = Route::Copy;
                self.copy_fallback = true;
            }
            Err(e) => {
                let (op, fd) = (self.drain_op(), self.dst_fd);
                self.set_error(Side::Destination, Error::errno(op, fd, e))
            }
        }
    }

    /// Applies the result of a [`Action::Direct`].
    pub(crate) fn on_direct(&mut self, res: OpResult) {
        match res {
            Ok(0) => self.src_eof = true,
            Ok(n) => {
                self.took_from_source(n);
                self.gave_to_destination(n);
            }
            Err(libc::EAGAIN) => {
                self.want = if self.src_always_ready {
                    Want::Writable
                } else if self.dst_always_ready {
                    Want::Readable
                } else if self.last_wait == Want::Readable {
                    Want::Writable
                } else {
                    Want::Readable
                };
            }
            Err(libc::EINTR) => {}
            Err(e) if self.may_fall_back(e) => {
                self.route = Route::Copy;
                self.copy_fallback = true;
            }
            // A direct splice does not say which side failed; the destination is the safer
            // guess since nothing is staged either way.
            Err(e) => self.set_error(
                Side::Destination,
                Error::errno(self.direct_op, self.dst_fd, e),
            ),
        }
    }

    fn fill_op(&self) -> Op {
        match self.route {
            Route::Copy => Op::Read,
            Route::Records => Op::Recv,
            Route::Pipe | Route::Direct => Op::SpliceIn,
        }
    }

    fn drain_op(&self) -> Op {
        match self.route {
            Route::Copy | Route::Records => Op::Write,
            Route::Pipe | Route::Direct => Op::SpliceOut,
        }
    }

    /// The next step.
    pub(crate) fn next(&self) -> Action {
        if self.cancelled {
            return Action::Finish;
        }
        if let Some((Side::Destination, _)) = self.error {
            return Action::Finish;
        }
        if self.staged > 0 {
            return if self.want == Want::Writable {
                Action::WaitWritable
            } else {
                Action::Drain {
                    len: self.staged.min(usize::MAX as u64) as usize,
                }
            };
        }
        if self.error.is_some() || self.src_eof || self.remaining == Some(0) {
            return Action::Finish;
        }
        match self.want {
            Want::Readable => return Action::WaitReadable,
            Want::Writable => return Action::WaitWritable,
            Want::Nothing => {}
        }
        let len = self.next_len();
        match self.route {
            Route::Direct => Action::Direct { len },
            Route::Pipe | Route::Copy | Route::Records => Action::Fill { len },
        }
    }

    /// How the transfer ended; call once [`Machine::next`] says `Finish`. Consumes the error.
    pub(crate) fn outcome(&mut self) -> Result<(), Error> {
        if let Some((_, e)) = self.error.take() {
            return Err(e);
        }
        if self.timed_out {
            return Err(Error::TimedOut);
        }
        if self.cancelled {
            return Err(Error::Cancelled);
        }
        match (self.expected, self.remaining) {
            (Some(expected), Some(r)) if r > 0 => Err(Error::UnexpectedEof {
                expected,
                delivered: self.delivered,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(route: Route, len: Option<u64>) -> Machine {
        Machine::new(route, len, None, None, 100, (3, 4))
    }

    #[test]
    fn pipe_route_fills_then_drains_until_eof() {
        let mut m = m(Route::Pipe, None);
        assert_eq!(m.next(), Action::Fill { len: 100 });
        m.on_fill(Ok(60));
        assert_eq!(m.next(), Action::Drain { len: 60 });
        m.on_drain(Ok(20));
        assert_eq!(m.next(), Action::Drain { len: 40 });
        m.on_drain(Err(libc::EAGAIN));
        assert_eq!(m.next(), Action::WaitWritable);
        m.ready();
        m.on_drain(Ok(40));
        assert_eq!(m.next(), Action::Fill { len: 100 });
        m.on_fill(Err(libc::EAGAIN));
        assert_eq!(m.next(), Action::WaitReadable);
        m.ready();
        m.on_fill(Ok(0));
        assert_eq!(m.next(), Action::Finish);
        assert!(m.outcome().is_ok());
        assert_eq!(m.delivered(), 60);
    }

    #[test]
    fn exact_length_caps_reads_and_reports_short_source() {
        let mut m = m(Route::Pipe, Some(150));
        m.on_fill(Ok(100));
        m.on_drain(Ok(100));
        assert_eq!(m.next(), Action::Fill { len: 50 });
        m.on_fill(Ok(0));
        assert_eq!(m.next(), Action::Finish);
        match m.outcome() {
            Err(Error::UnexpectedEof {
                expected: 150,
                delivered: 100,
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exact_length_finishes_without_reading_eof() {
        let mut m = m(Route::Direct, Some(30));
        assert_eq!(m.next(), Action::Direct { len: 30 });
        m.on_direct(Ok(30));
        assert_eq!(m.next(), Action::Finish);
        assert!(m.outcome().is_ok());
    }

    #[test]
    fn source_error_still_drains_staged_bytes() {
        let mut m = m(Route::Pipe, None);
        m.on_fill(Ok(10));
        m.on_fill(Err(libc::ECONNRESET));
        assert_eq!(m.next(), Action::Drain { len: 10 });
        m.on_drain(Ok(10));
        assert_eq!(m.next(), Action::Finish);
        assert_eq!(
            m.outcome().unwrap_err().raw_os_error(),
            Some(libc::ECONNRESET)
        );
        assert_eq!(m.delivered(), 10);
    }

    #[test]
    fn destination_error_stops_with_bytes_staged() {
        let mut m = m(Route::Pipe, None);
        m.on_fill(Ok(10));
        m.on_drain(Ok(4));
        m.on_drain(Err(libc::EPIPE));
        assert_eq!(m.next(), Action::Finish);
        assert_eq!(m.staged(), 6);
        assert_eq!(m.delivered(), 4);
        assert!(m.outcome().is_err());
    }

    #[test]
    fn einval_before_any_byte_switches_to_copy() {
        let mut m = m(Route::Pipe, None);
        m.on_fill(Err(libc::EINVAL));
        assert_eq!(m.route(), Route::Copy);
        assert!(m.take_copy_fallback());
        assert!(!m.take_copy_fallback());
        assert_eq!(m.next(), Action::Fill { len: 100 });
        // After bytes moved, EINVAL is a real error.
        m.on_fill(Ok(5));
        m.on_drain(Ok(5));
        m.on_fill(Err(libc::EINVAL));
        assert_eq!(m.next(), Action::Finish);
        assert!(m.outcome().is_err());
    }

    #[test]
    fn direct_eagain_alternates_which_side_to_wait_for() {
        let mut m = m(Route::Direct, None);
        m.on_direct(Err(libc::EAGAIN));
        assert_eq!(m.next(), Action::WaitReadable);
        m.ready();
        m.on_direct(Err(libc::EAGAIN));
        assert_eq!(m.next(), Action::WaitWritable);
        m.ready();
        m.on_direct(Ok(7));
        assert_eq!(m.delivered(), 7);
    }

    #[test]
    fn direct_eagain_from_a_file_waits_for_the_destination() {
        let mut m = m(Route::Direct, None);
        m.set_always_ready(true, false);
        m.on_direct(Err(libc::EAGAIN));
        assert_eq!(m.next(), Action::WaitWritable);
        let mut m2 = Machine::new(Route::Direct, None, None, None, 100, (3, 4));
        m2.set_always_ready(false, true);
        m2.on_direct(Err(libc::EAGAIN));
        assert_eq!(m2.next(), Action::WaitReadable);
    }

    #[test]
    fn short_read_from_a_socket_waits_after_draining() {
        let mut m = m(Route::Pipe, None);
        m.on_fill(Ok(40));
        m.hint_short_read(100, Ok(40));
        assert_eq!(m.next(), Action::Drain { len: 40 });
        m.on_drain(Ok(40));
        assert_eq!(m.next(), Action::WaitReadable);
        // A file source is never waited for.
        let mut f = Machine::new(Route::Pipe, None, None, None, 100, (3, 4));
        f.set_always_ready(true, false);
        f.on_fill(Ok(40));
        f.hint_short_read(100, Ok(40));
        f.on_drain(Ok(40));
        assert_eq!(f.next(), Action::Fill { len: 100 });
    }

    #[test]
    fn short_send_from_a_file_waits_for_the_destination() {
        let mut f = m(Route::Direct, Some(1000));
        f.set_always_ready(true, false);
        f.on_direct(Ok(300));
        f.hint_short_write(1000, Ok(300), true);
        assert_eq!(f.next(), Action::WaitWritable);
        // At the file's end a short send is its end, not a full socket.
        let mut e = m(Route::Direct, None);
        e.set_always_ready(true, false);
        e.on_direct(Ok(300));
        e.hint_short_write(1000, Ok(300), false);
        assert_eq!(e.next(), Action::Direct { len: 100 });
        // A full send, or a socket source, says nothing about the destination.
        let mut s = m(Route::Direct, None);
        s.on_direct(Ok(300));
        s.hint_short_write(1000, Ok(300), true);
        assert_eq!(s.next(), Action::Direct { len: 100 });
    }

    #[test]
    fn offsets_advance_by_results() {
        let mut m = Machine::new(Route::Pipe, None, Some(1000), Some(5), 100, (3, 4));
        m.on_fill(Ok(100));
        assert_eq!(m.src_off(), Some(1100));
        m.on_drain(Ok(30));
        assert_eq!(m.dst_off(), Some(35));
    }

    #[test]
    fn cancel_reports_staged_bytes() {
        let mut m = m(Route::Pipe, Some(1000));
        m.on_fill(Ok(100));
        m.cancel();
        assert_eq!(m.next(), Action::Finish);
        assert_eq!(m.staged(), 100);
        assert!(matches!(m.outcome(), Err(Error::Cancelled)));
    }

    #[test]
    fn zero_length_finishes_at_once() {
        let mut m = m(Route::Pipe, Some(0));
        assert_eq!(m.next(), Action::Finish);
        assert!(m.outcome().is_ok());
    }

    #[test]
    fn a_record_longer_than_what_is_left_is_refused_and_not_taken() {
        let mut m = m(Route::Records, Some(150));
        assert!(m.admit_record(100));
        m.on_fill(Ok(100));
        m.on_drain(Ok(100));
        assert!(!m.admit_record(51));
        assert_eq!(m.next(), Action::Finish);
        match m.outcome() {
            Err(Error::RecordTooLong { record, room, .. }) => assert_eq!((record, room), (51, 50)),
            other => panic!("{other:?}"),
        }
        assert_eq!((m.delivered(), m.staged()), (100, 0));
    }

    #[test]
    fn records_never_fall_back_and_fill_past_the_chunk() {
        let mut m = m(Route::Records, None);
        // A record longer than the chunk is taken whole.
        assert!(m.admit_record(1000));
        m.on_fill(Ok(1000));
        assert_eq!(m.next(), Action::Drain { len: 1000 });
        m.on_drain(Err(libc::EINVAL));
        assert_eq!(m.route(), Route::Records);
        assert!(matches!(m.outcome(), Err(Error::Io { op: Op::Write, .. })));
    }
}
