//! Small operations on raw fds: socket options, queue sizes, readiness, `O_NONBLOCK`,
//! `SIGPIPE`'s disposition.

use std::ffi::{c_int, c_ulong};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::sys;

fn setsockopt_raw<T>(fd: RawFd, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of exactly the length passed.
    let r = unsafe {
        sys::setsockopt(
            fd,
            sys::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises a socket buffer (`send`: the send buffer, else the receive buffer): the `FORCE`
/// form (root) past `wmem_max`/`rmem_max`, else the plain one.
pub(crate) fn raise_buffer(fd: RawFd, send: bool, bytes: i32) {
    let (force, plain) = if send {
        (sys::SO_SNDBUFFORCE, sys::SO_SNDBUF)
    } else {
        (sys::SO_RCVBUFFORCE, sys::SO_RCVBUF)
    };
    if setsockopt_raw(fd, force, &bytes).is_err() {
        setsockopt_raw(fd, plain, &bytes).expect("setsockopt buffer size");
    }
}

/// `SO_LINGER {on, 0}`: closing the socket then sends a RST instead of a FIN.
pub(crate) fn set_linger_zero(s: &impl AsRawFd) {
    let l = sys::Linger {
        l_onoff: 1,
        l_linger: 0,
    };
    setsockopt_raw(s.as_raw_fd(), sys::SO_LINGER, &l).expect("setsockopt(SO_LINGER)");
}

/// A small `SO_SNDBUF` (the kernel doubles it and applies its minimum).
pub(crate) fn set_sndbuf(s: &impl AsRawFd, bytes: i32) {
    setsockopt_raw(s.as_raw_fd(), sys::SO_SNDBUF, &bytes).expect("setsockopt(SO_SNDBUF)");
}

/// A small `SO_RCVBUF` (the kernel doubles it and applies its minimum).
pub(crate) fn set_rcvbuf(s: &impl AsRawFd, bytes: i32) {
    setsockopt_raw(s.as_raw_fd(), sys::SO_RCVBUF, &bytes).expect("setsockopt(SO_RCVBUF)");
}

/// Bytes waiting in a socket's receive queue, up to `max` (`recv(MSG_PEEK | MSG_DONTWAIT)`:
/// nothing is consumed and nothing blocks).
pub(crate) fn queued(s: &impl AsRawFd, max: usize) -> usize {
    let mut buf = vec![0u8; max];
    // SAFETY: `buf` is valid for `max` bytes of writes.
    let n = unsafe {
        sys::recv(
            s.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            max,
            sys::MSG_PEEK | sys::MSG_DONTWAIT,
        )
    };
    n.max(0) as usize
}

/// `poll(fd, POLLIN, timeout)`: whether the fd became readable in time.
pub(crate) fn poll_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut p = sys::PollFd {
        fd,
        events: sys::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: one valid, live pollfd.
        let n = unsafe { sys::poll(&mut p, 1, ms) };
        if n >= 0 {
            return n > 0 && p.revents & sys::POLLIN != 0;
        }
        let e = io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            io::ErrorKind::Interrupted,
            "poll({fd}) failed: {e}"
        );
    }
}

/// Whether `fd` is open in this process (`fcntl(F_GETFD)`).
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no argument and touches no memory.
    unsafe { sys::fcntl(fd, sys::F_GETFD) != -1 }
}

/// Sets or clears `O_NONBLOCK` (the engine makes the pollable fds it is given non-blocking;
/// tests reading them back want them blocking).
pub(crate) fn set_nonblocking(fd: &impl AsRawFd, on: bool) {
    let fd = fd.as_raw_fd();
    // SAFETY: F_GETFL takes no argument.
    let flags = unsafe { sys::fcntl(fd, sys::F_GETFL) };
    assert!(
        flags >= 0,
        "fcntl(F_GETFL, {fd}): {}",
        io::Error::last_os_error()
    );
    let new = if on {
        flags | sys::O_NONBLOCK
    } else {
        flags & !sys::O_NONBLOCK
    };
    // SAFETY: F_SETFL takes one int argument.
    let r = unsafe { sys::fcntl(fd, sys::F_SETFL, new) };
    assert!(
        r >= 0,
        "fcntl(F_SETFL, {fd}): {}",
        io::Error::last_os_error()
    );
}

/// Restores `SIGPIPE`'s default disposition (terminate), as a C host would have it. Rust
/// programs ignore it before `main`, which would hide a SIGPIPE the engine lets through.
pub(crate) fn sigpipe_default() {
    // SAFETY: installs the default disposition; no handler code is involved.
    unsafe { sys::signal(sys::SIGPIPE, sys::SIG_DFL) };
}

/// A raw fd number that is not open, far above anything the tests allocate (the kernel
/// hands out the lowest free number), so nothing can reuse it during a test.
pub(crate) fn closed_fd() -> RawFd {
    let fd = 15_000;
    assert!(!fd_is_open(fd), "fd {fd} is unexpectedly open");
    fd
}

/// The int an `ioctl` reports for a socket ([`sys::SIOCINQ`], [`sys::SIOCOUTQ`]).
pub(crate) fn sock_ioctl(fd: RawFd, request: c_ulong) -> usize {
    let mut n: c_int = 0;
    // SAFETY: both requests write one int through the pointer, which is live and writable.
    let r = unsafe { sys::ioctl(fd, request, &mut n as *mut c_int) };
    assert!(
        r == 0,
        "ioctl({fd}, {request:#x}): {}",
        io::Error::last_os_error()
    );
    usize::try_from(n).unwrap_or(0)
}

/// Whether `fd` is writable right now (`poll(POLLOUT)` with no timeout).
pub(crate) fn writable_now(fd: RawFd) -> bool {
    let mut p = sys::PollFd {
        fd,
        events: sys::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid, live pollfd.
    let n = unsafe { sys::poll(&mut p, 1, 0) };
    n > 0 && p.revents & sys::POLLOUT != 0
}

/// Sleeps until one of `fds` is ready or a few milliseconds pass: an idle wait for helper
/// threads that recheck readiness on their next pass (so the result does not matter).
pub(crate) fn wait_ready(fds: &mut [sys::PollFd]) {
    // SAFETY: `fds` is a valid array of live pollfds of the length passed.
    let _ = unsafe { sys::poll(fds.as_mut_ptr(), fds.len() as c_ulong, 5) };
}
