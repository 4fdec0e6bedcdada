//! The calls that move bytes: `splice`, `sendfile`, `copy_file_range`, `read`/`pread`,
//! `write`/`pwrite`/`send`, and `recv` of whole records. Offsets given are used, never
//! advanced here: the state machine advances its own copy by the result.

use std::io;
use std::os::fd::RawFd;

use super::basic::cvt;

/// `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`: never block in the pipe; move pages where possible.
pub(crate) const SPLICE_FLAGS: u32 = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;

/// Calls `f` with pointers to copies of two optional offsets (null for `None`), the form
/// `splice` and `copy_file_range` take them in. The copies are discarded.
fn with_offsets<R>(
    a: Option<u64>,
    b: Option<u64>,
    f: impl FnOnce(*mut libc::loff_t, *mut libc::loff_t) -> R,
) -> R {
    let mut ta = a.unwrap_or(0) as libc::loff_t;
    let mut tb = b.unwrap_or(0) as libc::loff_t;
    let pa = if a.is_some() {
        &mut ta as *mut _
    } else {
        std::ptr::null_mut()
    };
    let pb = if b.is_some() {
        &mut tb as *mut _
    } else {
        std::ptr::null_mut()
    };
    f(pa, pb)
}

/// `splice(2)` with [`SPLICE_FLAGS`].
pub(crate) fn splice(
    fd_in: RawFd,
    off_in: Option<u64>,
    fd_out: RawFd,
    off_out: Option<u64>,
    len: usize,
) -> io::Result<usize> {
    with_offsets(off_in, off_out, |pi, po| {
        // SAFETY: the offset pointers are null or point at locals that outlive the call.
        cvt(unsafe { libc::splice(fd_in, pi, fd_out, po, len, SPLICE_FLAGS) }).map(|n| n as usize)
    })
}

/// `tee(2)` with `SPLICE_F_NONBLOCK`: duplicates up to `len` bytes from the start of pipe
/// `fd_in` into pipe `fd_out` without consuming them (page references, no copy).
/// Linux 2.6.17+.
///
/// # References
/// tee(2); `link_pipe` in the kernel's fs/splice.c.
pub(crate) fn tee(fd_in: RawFd, fd_out: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: tee takes two fds and integers only.
    cvt(unsafe { libc::tee(fd_in, fd_out, len, libc::SPLICE_F_NONBLOCK) }).map(|n| n as usize)
}

/// `sendfile(2)` from a regular file.
pub(crate) fn sendfile(
    out_fd: RawFd,
    in_fd: RawFd,
    off: Option<u64>,
    len: usize,
) -> io::Result<usize> {
    with_offsets(off, None, |p, _| {
        // SAFETY: `p` is null or points at a local `loff_t` that outlives the call.
        cvt(unsafe { libc::sendfile64(out_fd, in_fd, p, len) }).map(|n| n as usize)
    })
}

/// `copy_file_range(2)`.
pub(crate) fn copy_file_range(
    fd_in: RawFd,
    off_in: Option<u64>,
    fd_out: RawFd,
    off_out: Option<u64>,
    len: usize,
) -> io::Result<usize> {
    with_offsets(off_in, off_out, |pi, po| {
        // SAFETY: the offset pointers are null or point at locals that outlive the call.
        cvt(unsafe { libc::copy_file_range(fd_in, pi, fd_out, po, len, 0) }).map(|n| n as usize)
    })
}

/// `read(2)` or, with an offset, `pread(2)`.
pub(crate) fn read(fd: RawFd, off: Option<u64>, buf: &mut [u8]) -> io::Result<usize> {
    let (p, n) = (buf.as_mut_ptr().cast(), buf.len());
    let r = match off {
        // SAFETY: `buf` is valid for `n` bytes of writes.
        Some(o) => unsafe { libc::pread(fd, p, n, o as libc::off_t) },
        // SAFETY: as above.
        None => unsafe { libc::read(fd, p, n) },
    };
    cvt(r).map(|n| n as usize)
}

/// `write(2)` or, with an offset, `pwrite(2)`. Sockets use `send(MSG_NOSIGNAL)` so a closed
/// peer gives `EPIPE` instead of `SIGPIPE`.
pub(crate) fn write(fd: RawFd, off: Option<u64>, buf: &[u8], socket: bool) -> io::Result<usize> {
    let (p, n) = (buf.as_ptr().cast(), buf.len());
    let r = match off {
        // SAFETY: `buf` is valid for `n` bytes of reads.
        Some(o) => unsafe { libc::pwrite(fd, p, n, o as libc::off_t) },
        // SAFETY: as above.
        None if socket => unsafe { libc::send(fd, p, n, libc::MSG_NOSIGNAL) },
        // SAFETY: as above.
        None => unsafe { libc::write(fd, p, n) },
    };
    cvt(r).map(|n| n as usize)
}

/// The length of the next record queued on a record socket, without taking it:
/// `recv(MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT)` returns the record's full length whatever the
/// buffer's size (UDP since Linux 2.6, AF_UNIX datagram and seqpacket since 3.4). `Ok(0)`:
/// end of stream, or a record of zero bytes (the kernel reports both alike).
///
/// # References
/// recv(2), `MSG_TRUNC`; `unix_dgram_recvmsg`, `udp_recvmsg` in the kernel sources.
pub(crate) fn peek_record_len(fd: RawFd) -> io::Result<usize> {
    let mut byte = 0u8;
    let flags = libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT;
    // SAFETY: the buffer is one valid byte; with length 0 the kernel writes none of it.
    cvt(unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 0, flags) }).map(|n| n as usize)
}

/// Takes the next record whole: `recv(MSG_TRUNC | MSG_DONTWAIT)` into `buf`. The result is
/// the record's full length; more than `buf.len()` means the kernel cut it (another reader
/// took the record [`peek_record_len`] saw and left a longer one).
pub(crate) fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let flags = libc::MSG_TRUNC | libc::MSG_DONTWAIT;
    let (p, n) = (buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: `buf` is valid for `n` bytes of writes.
    cvt(unsafe { libc::recv(fd, p, n, flags) }).map(|n| n as usize)
}
