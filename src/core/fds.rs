//! What the engine learns about an endpoint's fd when a transfer starts (`fstat`, then
//! `getsockopt(SO_TYPE)` for a socket or `F_GETFL` for anything else), making it
//! non-blocking, and the memo that lets a shared fd another transfer holds start without
//! asking again (the two directions of a proxied connection share both sockets).

use std::collections::HashMap;
use std::os::fd::RawFd;

use crate::endpoint::Endpoint;
use crate::error::{Error, Op, Result};
use crate::sys::{self, FdInfo, FdKind};

/// `fstat` and the socket type or status flags of one fd.
pub(crate) fn probe(fd: RawFd) -> Result<FdInfo> {
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

/// Makes a socket or pipe non-blocking (files need not be).
pub(crate) fn make_nonblocking(fd: RawFd, info: &mut FdInfo) -> Result<()> {
    match info.kind {
        FdKind::Socket => sys::set_nonblocking_ioctl(fd),
        FdKind::Pipe => sys::set_nonblocking(fd, info.flags),
        _ => return Ok(()),
    }
    .map_err(|e| Error::io(Op::Fcntl, fd, e))?;
    info.flags |= libc::O_NONBLOCK;
    Ok(())
}

/// Shared fds that started transfers still hold, by `Arc` identity: what was learnt about
/// each, and how many transfers hold it. While any transfer holds that `Arc`, the fd it
/// names stays open and means the same file.
#[derive(Debug, Default)]
pub(crate) struct Known {
    shared: HashMap<usize, (FdInfo, u32)>,
}

impl Known {
    /// What is already known about an endpoint's fd (remembered by the endpoint itself, or
    /// by another transfer holding the same shared fd).
    pub(crate) fn recall(&self, e: &Endpoint) -> Option<FdInfo> {
        e.known.or_else(|| {
            e.shared_key()
                .and_then(|k| self.shared.get(&k))
                .map(|v| v.0)
        })
    }

    /// Counts a started transfer's hold on its shared endpoints; the endpoints themselves
    /// remember what was learnt, for when they are submitted again.
    pub(crate) fn hold(&mut self, e: &mut Endpoint, info: FdInfo) {
        if let Some(k) = e.shared_key() {
            self.shared.entry(k).or_insert((info, 0)).1 += 1;
        }
        if e.may_remember() {
            e.known = Some(info);
        }
    }

    /// Drops a finished transfer's hold; the last one forgets the fd, so a later `Arc` at
    /// the same address is asked about afresh.
    pub(crate) fn release(&mut self, e: &Endpoint) {
        let Some(k) = e.shared_key() else { return };
        if let Some(v) = self.shared.get_mut(&k) {
            v.1 -= 1;
            if v.1 == 0 {
                self.shared.remove(&k);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn holds(&self, e: &Endpoint) -> Option<u32> {
        e.shared_key()
            .and_then(|k| self.shared.get(&k))
            .map(|v| v.1)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.shared.is_empty()
    }
}
