//! The fallback backend: epoll readiness and inline syscalls, Go's netpoller design, for
//! kernels and sandboxes without io_uring splice.
//!
//! Every fd is registered at most once (epoll refuses a second registration of the same
//! file), with the union of what the transfers using it wait for: a proxy's socket is the
//! source of one transfer and the destination of another. Registrations are one-shot and
//! re-armed with what is still wanted; a transfer's fds are deregistered when it finishes,
//! while the engine still holds them open.
//!
//! Regular files are not pollable: a file source is read inline, and a cold page cache
//! blocks the engine's thread for the disk read (one chunk per step, a bounded share per
//! pass). The io_uring backend's chain strategy is the one that takes such reads off the
//! caller's thread.
//!
//! # Safety
//! `epoll_wait` writes into a buffer whose length is passed with it; nothing else here is
//! unsafe beyond plain syscalls on fds the engine keeps open.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::inline::{self, Dir, Readiness};
use crate::error::{Error, Op, Result};
use crate::inflight::{InFlight, Key, Slot};
use crate::sys::{self, syscall};

/// `epoll_event.u64` of the engine's own wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// `epoll_event.u64` of the timerfd for the earliest transfer timeout.
const TIMER: u64 = u64::MAX - 1;

#[derive(Debug, Default)]
struct FdReg {
    reader: Option<Key>,
    writer: Option<Key>,
    in_epoll: bool,
}

/// The epoll instance and the registrations.
#[derive(Debug)]
pub(crate) struct Epoll {
    epfd: OwnedFd,
    wake: OwnedFd,
    regs: HashMap<RawFd, FdReg>,
    events: Vec<libc::epoll_event>,
    /// Slots parked on readiness.
    waiting: usize,
    sigpipe_guard: bool,
    /// A timerfd in the epoll set, armed for the earliest transfer timeout, so a caller's
    /// own loop wakes when it passes. Created on first use.
    timer: Option<OwnedFd>,
    timer_armed: Option<Instant>,
    /// Whether the wake-up eventfd may be readable (only this engine signals it).
    wake_signaled: bool,
    /// The last `epoll_wait` filled its buffer, so more events may be waiting.
    events_left: bool,
}

impl Epoll {
    pub(crate) fn new() -> Result<Epoll> {
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))
            .map_err(|e| Error::io(Op::Epoll, -1, e))?;
        // SAFETY: epoll_create1 returned a new fd that nothing else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let wake = sys::eventfd().map_err(|e| Error::io(Op::Eventfd, -1, e))?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        syscall!(epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_raw_fd(),
            &mut ev
        ))
        .map_err(|e| Error::io(Op::Epoll, wake.as_raw_fd(), e))?;
        Ok(Epoll {
            epfd,
            wake,
            regs: HashMap::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            waiting: 0,
            sigpipe_guard: !sys::sigpipe_ignored(),
            timer: None,
            timer_armed: None,
            wake_signaled: false,
            events_left: false,
        })
    }

    /// The fd a caller's event loop waits on: the epoll fd itself.
    pub(crate) fn event_fd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    pub(crate) fn turn(
        &mut self,
        fl: &mut InFlight,
        block: Option<Option<Duration>>,
    ) -> Result<()> {
        if std::mem::take(&mut self.wake_signaled) {
            sys::eventfd_clear(self.wake.as_raw_fd());
        }
        let deadline = block.flatten().map(|t| Instant::now() + t);
        loop {
            for k in std::mem::take(&mut fl.starting) {
                fl.start(k, false);
                let Some(slot) = fl.get(k) else { continue };
                let action = slot.machine().next();
                inline::advance(self, fl, k, action);
            }
            for k in fl.expired(Instant::now()) {
                self.cancel(fl, k);
            }
            for _ in 0..3 {
                let guard = self.sigpipe_guard;
                inline::run_ready(self, fl, guard);
                let n = self.wait_events(fl, 0)?;
                if n == 0 && fl.ready.is_empty() {
                    break;
                }
            }
            if !fl.done.is_empty() || block.is_none() || fl.slots.is_empty() {
                break;
            }
            if !fl.ready.is_empty() || !fl.starting.is_empty() {
                continue;
            }
            if self.waiting == 0 {
                break;
            }
            let Some(left) = super::block_time(deadline, fl.next_timer()) else {
                break;
            };
            self.wait_events(fl, sys::timeout_ms(left))?;
        }
        self.arm_timer(fl)?;
        if !fl.ready.is_empty() || !fl.starting.is_empty() || self.events_left {
            // Also when the last epoll_wait filled its buffer: events may be left in the
            // set, and a caller's edge-triggered registration sees no new edge for them.
            self.wake();
        }
        Ok(())
    }

    /// Makes the epoll fd readable until the next turn.
    pub(crate) fn wake(&mut self) {
        if !self.wake_signaled {
            sys::eventfd_signal(self.wake.as_raw_fd());
            self.wake_signaled = true;
        }
    }

    fn arm_timer(&mut self, fl: &mut InFlight) -> Result<()> {
        let Some(at) = fl.next_timer() else {
            return Ok(());
        };
        if self.timer_armed.is_some_and(|a| a <= at) {
            return Ok(());
        }
        if self.timer.is_none() {
            let t = sys::timerfd().map_err(|e| Error::io(Op::Epoll, -1, e))?;
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: TIMER,
            };
            // SAFETY: `ev` is a valid epoll_event for the duration of the call.
            syscall!(epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                t.as_raw_fd(),
                &mut ev
            ))
            .map_err(|e| Error::io(Op::Epoll, t.as_raw_fd(), e))?;
            self.timer = Some(t);
        }
        let t = self.timer.as_ref().expect("invariant: created above");
        let d = at.saturating_duration_since(Instant::now());
        sys::timerfd_set(t.as_raw_fd(), d).map_err(|e| Error::io(Op::Epoll, t.as_raw_fd(), e))?;
        self.timer_armed = Some(at);
        Ok(())
    }

    /// One `epoll_wait`; wakes the transfers whose fds are ready. Returns the events seen.
    fn wait_events(&mut self, fl: &mut InFlight, timeout_ms: i32) -> Result<usize> {
        fl.stats.enters += 1;
        let n = loop {
            // SAFETY: the buffer holds `events.len()` entries and epoll_wait writes at most
            // that many.
            let r = syscall!(epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms
            ));
            match r {
                Ok(n) => {
                    self.events_left = n as usize == self.events.len();
                    break n as usize;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    if timeout_ms != 0 {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(Error::io(Op::Epoll, self.epfd.as_raw_fd(), e)),
            }
        };
        for i in 0..n {
            let ev = self.events[i];
            let (data, bits) = (ev.u64, ev.events);
            if data == WAKE {
                continue;
            }
            if data == TIMER {
                if let Some(t) = &self.timer {
                    sys::eventfd_clear(t.as_raw_fd()); // reads the 8-byte expiry count
                }
                self.timer_armed = None;
                continue;
            }
            self.on_event(fl, data as RawFd, bits);
        }
        Ok(n)
    }

    fn on_event(&mut self, fl: &mut InFlight, fd: RawFd, bits: u32) {
        let Some(reg) = self.regs.get_mut(&fd) else {
            return;
        };
        reg.in_epoll = true;
        let err = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let mut woken = Vec::with_capacity(2);
        if bits & (libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32 | err) != 0 {
            woken.extend(reg.reader.take());
        }
        if bits & (libc::EPOLLOUT as u32 | err) != 0 {
            woken.extend(reg.writer.take());
        }
        // One-shot: re-arm for whatever is still wanted.
        if reg.reader.is_some() || reg.writer.is_some() {
            let _ = self.update(fd);
        }
        for k in woken {
            self.waiting -= 1;
            if let Some(slot) = fl.get(k) {
                slot.in_kernel = 0;
                slot.machine().ready();
                fl.ready.push_back(k);
            }
        }
    }

    /// Applies a registration's interest to epoll. `Ok(false)`: this fd cannot be polled
    /// (a regular file, some devices) and is always ready.
    fn update(&mut self, fd: RawFd) -> Result<bool> {
        let reg = self
            .regs
            .get_mut(&fd)
            .expect("invariant: caller registered it");
        let mut events = libc::EPOLLONESHOT as u32;
        if reg.reader.is_some() {
            events |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if reg.writer.is_some() {
            events |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event {
            events,
            u64: fd as u64,
        };
        let mut op = if reg.in_epoll {
            libc::EPOLL_CTL_MOD
        } else {
            libc::EPOLL_CTL_ADD
        };
        for _ in 0..2 {
            // SAFETY: `ev` is a valid epoll_event for the duration of the call.
            match syscall!(epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev)) {
                Ok(_) => {
                    reg.in_epoll = true;
                    return Ok(true);
                }
                // A stale view of the set (the fd was closed and reused): try the other op.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => op = libc::EPOLL_CTL_ADD,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => op = libc::EPOLL_CTL_MOD,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => return Ok(false),
                Err(e) => return Err(Error::io(Op::Epoll, fd, e)),
            }
        }
        Err(Error::io(
            Op::Epoll,
            fd,
            std::io::Error::from_raw_os_error(libc::EEXIST),
        ))
    }

    /// Drops a finished transfer's interest in its fds and deregisters fds nobody waits on.
    fn forget(&mut self, fd: RawFd, k: Key) {
        let Some(reg) = self.regs.get_mut(&fd) else {
            return;
        };
        if reg.reader == Some(k) {
            reg.reader = None;
            self.waiting -= 1;
        }
        if reg.writer == Some(k) {
            reg.writer = None;
            self.waiting -= 1;
        }
        if reg.reader.is_none() && reg.writer.is_none() {
            if reg.in_epoll {
                // SAFETY: a null event is allowed for EPOLL_CTL_DEL. The fd is still open:
                // the finishing slot holds it.
                let _ = syscall!(epoll_ctl(
                    self.epfd.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut()
                ));
            }
            self.regs.remove(&fd);
        }
    }

    pub(crate) fn cancel(&mut self, fl: &mut InFlight, k: Key) {
        let Some(slot) = fl.get(k) else { return };
        if let Some(m) = slot.machine.as_mut() {
            m.cancel();
        }
        self.finish(fl, k);
    }
}

impl Readiness for Epoll {
    fn arm(&mut self, fl: &mut InFlight, k: Key, dir: Dir) {
        let Some(slot) = fl.get(k) else { return };
        let fd = match dir {
            Dir::Read => slot.src_fd,
            Dir::Write => slot.dst_fd,
        };
        let reg = self.regs.entry(fd).or_default();
        let place = match dir {
            Dir::Read => &mut reg.reader,
            Dir::Write => &mut reg.writer,
        };
        if place.is_some_and(|other| other != k) {
            slot.machine().fail_source(Error::InvalidInput(format!(
                "fd {fd} is already waited on in the same direction by another transfer"
            )));
            fl.ready.push_back(k);
            return;
        }
        if place.is_none() {
            self.waiting += 1;
        }
        *place = Some(k);
        slot.in_kernel = 1;
        fl.stats.polls += 1;
        match self.update(fd) {
            Ok(true) => {}
            Ok(false) => {
                // Not pollable: always ready.
                self.forget_interest(fd, k, fl);
                if let Some(slot) = fl.get(k) {
                    slot.machine().ready();
                    fl.ready.push_back(k);
                }
            }
            Err(e) => {
                self.forget_interest(fd, k, fl);
                if let Some(slot) = fl.get(k) {
                    slot.machine().fail_source(e);
                    fl.ready.push_back(k);
                }
            }
        }
    }

    fn finish(&mut self, fl: &mut InFlight, k: Key) {
        let Some(slot) = fl.get(k) else { return };
        slot.in_kernel = 0;
        let (s, d) = (slot.src_fd, slot.dst_fd);
        self.forget(s, k);
        self.forget(d, k);
        fl.finish(k);
    }

    fn advance_other(&mut self, _fl: &mut InFlight, _k: Key) {
        unreachable!("the fallback runs every transfer inline")
    }

    fn runs_inline(&self, _slot: &Slot) -> bool {
        true
    }
}

impl Epoll {
    fn forget_interest(&mut self, fd: RawFd, k: Key, fl: &mut InFlight) {
        self.forget(fd, k);
        if let Some(slot) = fl.get(k) {
            slot.in_kernel = 0;
        }
    }
}
