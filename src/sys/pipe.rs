//! Pipes: `pipe2`, `/dev/null` (where a pipe's bytes are discarded), their size (`F_SETPIPE_SZ`/`F_GETPIPE_SZ`) and contents (`FIONREAD`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::basic::cvt;

/// `pipe2(O_CLOEXEC | O_NONBLOCK)`: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `/dev/null` opened write-only: a pipe spliced into it gives up exactly the bytes asked
/// for, with no copy (`splice_write_null` in the kernel's drivers/char/mem.c).
pub(crate) fn open_null() -> io::Result<OwnedFd> {
    let path = c"/dev/null";
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: open succeeded, so `fd` is open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `F_SETPIPE_SZ`; returns the size the kernel chose.
pub(crate) fn set_pipe_size(fd: RawFd, size: usize) -> io::Result<usize> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ takes an int argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) }).map(|n| n as usize)
}

/// `F_GETPIPE_SZ`.
pub(crate) fn pipe_size(fd: RawFd) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ takes no argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) }).map(|n| n as usize)
}

/// The size `F_SETPIPE_SZ` grants for a request of `size` bytes: a power-of-two number of
/// pages (`round_pipe_size()` in the kernel's fs/pipe.c).
pub(crate) fn granted_pipe_size(size: usize) -> usize {
    let page = super::basic::page_size();
    size.div_ceil(page).max(1).next_power_of_two() * page
}

/// `FIONREAD`: bytes waiting in a pipe.
pub(crate) fn bytes_readable(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) })?;
    Ok(n.max(0) as usize)
}
