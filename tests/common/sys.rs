//! The libc functions and constants the tests need, declared by hand (x86_64 / aarch64
//! Linux, glibc or musl). Safe wrappers are in `fd.rs`.

use std::ffi::{c_int, c_ulong, c_void};

pub(crate) const SOL_SOCKET: c_int = 1;
pub(crate) const SO_SNDBUF: c_int = 7;
pub(crate) const SO_RCVBUF: c_int = 8;
pub(crate) const SO_LINGER: c_int = 13;
pub(crate) const SO_SNDBUFFORCE: c_int = 32;
pub(crate) const SO_RCVBUFFORCE: c_int = 33;
pub(crate) const F_GETFD: c_int = 1;
pub(crate) const F_GETFL: c_int = 3;
pub(crate) const F_SETFL: c_int = 4;
pub(crate) const O_NONBLOCK: c_int = 0o4000;
pub(crate) const POLLIN: i16 = 0x1;
pub(crate) const POLLOUT: i16 = 0x4;
pub(crate) const SIGPIPE: c_int = 13;
pub(crate) const SIG_DFL: usize = 0;

pub(crate) const EBADF: i32 = 9;
pub(crate) const EPIPE: i32 = 32;
pub(crate) const ECONNRESET: i32 = 104;

/// `ioctl(2)` requests: bytes in a socket's receive queue (`SIOCINQ`, alias `FIONREAD`) and
/// in its send queue, sent but unacknowledged or unsent (`SIOCOUTQ`, alias `TIOCOUTQ`).
pub(crate) const SIOCINQ: c_ulong = 0x541B;
pub(crate) const SIOCOUTQ: c_ulong = 0x5411;

/// `struct pollfd`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PollFd {
    pub(crate) fd: c_int,
    pub(crate) events: i16,
    pub(crate) revents: i16,
}

/// `struct linger`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Linger {
    pub(crate) l_onoff: c_int,
    pub(crate) l_linger: c_int,
}

pub(crate) const MSG_PEEK: c_int = 0x2;
pub(crate) const MSG_DONTWAIT: c_int = 0x40;

unsafe extern "C" {
    pub(crate) fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    pub(crate) fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        value: *const c_void,
        len: u32,
    ) -> c_int;
    pub(crate) fn poll(fds: *mut PollFd, nfds: c_ulong, timeout_ms: c_int) -> c_int;
    pub(crate) fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub(crate) fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    pub(crate) fn signal(sig: c_int, handler: usize) -> usize;
}
