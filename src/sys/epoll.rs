//! `epoll_create1`, `epoll_ctl`, `epoll_wait`: the fallback driver's readiness.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::basic::cvt;

/// One event as `epoll_wait` reports it: the registration's data and the ready bits.
pub(crate) type EpollEvent = libc::epoll_event;

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: epoll_create1 returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// `EPOLL_CTL_ADD` (`add`) or `EPOLL_CTL_MOD` of `fd` with `events`, tagged `data`.
    pub(crate) fn ctl(&self, add: bool, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let op = if add {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_MOD
        };
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// `EPOLL_CTL_DEL`; errors are ignored (the fd may already have left the set).
    pub(crate) fn delete(&self, fd: RawFd) {
        let null = std::ptr::null_mut();
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
        let _ = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, null) };
    }

    /// `epoll_wait` into `events` (its whole length); returns how many were filled.
    pub(crate) fn wait(&self, events: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
        let (p, n) = (
            events.as_mut_ptr(),
            events.len().min(i32::MAX as usize) as i32,
        );
        // SAFETY: the buffer holds `n` entries and epoll_wait writes at most that many.
        let r = cvt(unsafe { libc::epoll_wait(self.fd.as_raw_fd(), p, n, timeout_ms) })?;
        Ok(r as usize)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
