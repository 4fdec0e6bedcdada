//! Every raw call ringsplice makes, each returning `io::Result` (or, for calls that cannot
//! fail in a way the engine acts on, nothing). Nothing here knows about transfers.
//!
//! # Safety
//! The functions here take raw fds and plain buffers. A bad fd can only make the kernel
//! answer `EBADF` (or act on an unrelated fd of this process, which is why the engine keeps
//! every endpoint open while it is in use); buffers are passed as slices, so their length is
//! always right. Each `unsafe` block names the pointer contract it upholds.

mod cachestat;
mod epoll;
mod eventfd;
mod fd;
mod io;
mod pipe;
mod signal;
mod timer;

pub(crate) use cachestat::page_cached;
pub(crate) use epoll::{Epoll, EpollEvent};
pub(crate) use eventfd::{eventfd, eventfd_clear, eventfd_signal, poll_in};
pub(crate) use fd::{
    FdInfo, FdKind, fd_kind, file_position, file_size, set_nonblocking, set_nonblocking_ioctl,
    shutdown_write, socket_keeps_records, status_flags,
};
pub(crate) use io::{
    SPLICE_FLAGS, copy_file_range, peek_record_len, read, recv_record, sendfile, splice, write,
};
pub(crate) use pipe::{bytes_readable, granted_pipe_size, pipe, pipe_size, set_pipe_size};
pub(crate) use signal::SigpipeGuard;
pub(crate) use timer::{timerfd, timerfd_set};

/// A raw return value whose `-1` means "see errno".
pub(crate) trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}
impl MinusOne for i32 {
    const MINUS_ONE: i32 = -1;
}
impl MinusOne for isize {
    const MINUS_ONE: isize = -1;
}
impl MinusOne for i64 {
    const MINUS_ONE: i64 = -1;
}

/// Turns a libc return value of `-1` into `io::Error::last_os_error()`. The `unsafe` call
/// stays at the call site, where its `// SAFETY:` comment is.
pub(crate) fn cvt<T: MinusOne>(r: T) -> std::io::Result<T> {
    if r == T::MINUS_ONE {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    p.max(4096) as usize
}

/// Converts an optional timeout into `poll`/`epoll_wait` milliseconds, rounding up so a short
/// timeout does not become a busy loop.
pub(crate) fn timeout_ms(t: Option<std::time::Duration>) -> i32 {
    match t {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}
