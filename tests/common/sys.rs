//! The libc functions and constants the tests need, declared by hand (x86_64 / aarch64
//! Linux, glibc or musl). Safe wrappers are in `fd.rs`.

use std::ffi::{c_int, c_ulong, c_void};

pub const SOL_SOCKET: c_int = 1;
pub const SO_SNDBUF: c_int = 7;
pub const SO_RCVBUF: c_int = 8;
pub const SO_LINGER: c_int = 13;
pub const F_GETFD: c_int = 1;
pub const F_GETFL: c_int = 3;
pub const F_SETFL: c_int = 4;
pub const O_NONBLOCK: c_int = 0o4000;
pub const POLLIN: i16 = 0x1;
pub const POLLOUT: i16 = 0x4;
pub const SIGPIPE: c_int = 13;
pub const SIG_DFL: usize = 0;

pub const EBADF: i32 = 9;
pub const EPIPE: i32 = 32;
pub const ECONNRESET: i32 = 104;

/// `ioctl(2)` requests: bytes in a socket's receive queue (`SIOCINQ`, alias `FIONREAD`) and
/// in its send queue, sent but unacknowledged or unsent (`SIOCOUTQ`, alias `TIOCOUTQ`).
pub const SIOCINQ: c_ulong = 0x541B;
pub const SIOCOUTQ: c_ulong = 0x5411;

/// `struct pollfd`.
#[repr(C)]
#[derive(Debug)]
pub struct PollFd {
    pub fd: c_int,
    pub events: i16,
    pub revents: i16,
}

/// `struct linger`.
#[repr(C)]
#[derive(Debug)]
pub struct Linger {
    pub l_onoff: c_int,
    pub l_linger: c_int,
}

pub const MSG_PEEK: c_int = 0x2;
pub const MSG_DONTWAIT: c_int = 0x40;

unsafe extern "C" {
    pub fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize;
    pub fn setsockopt(
        fd: c_int,
        level: c_int,
        name: c_int,
        value: *const c_void,
        len: u32,
    ) -> c_int;
    pub fn poll(fds: *mut PollFd, nfds: c_ulong, timeout_ms: c_int) -> c_int;
    pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    pub fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    pub fn signal(sig: c_int, handler: usize) -> usize;
}
