//! The two syscalls the shard threads need that std does not wrap: `eventfd(2)` for the
//! submission wake-up and `poll(2)` on the engine's fd beside it. Everything else (`dup`
//! through `try_clone_to_owned`, eventfd reads and writes through `File`) is std's safe API.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec eventfd with a count of 0, as a `File` (reads and writes
/// of 8 bytes are the eventfd protocol).
#[allow(unsafe_code)]
pub(super) fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd, is open, and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Adds 1 to an eventfd's count, making it readable. It cannot fail short of the count
/// reaching 2^64 - 1, which a wake-up flag (one write per sleep) never approaches.
pub(super) fn signal(efd: &File) {
    let _ = (&*efd).write(&1u64.to_ne_bytes());
}

/// Resets an eventfd's count to 0 (it is non-blocking: an empty one answers `EAGAIN`).
pub(super) fn clear(efd: &File) {
    let mut buf = [0u8; 8];
    let _ = (&*efd).read(&mut buf);
}

/// Blocks in `poll(2)` until one of the two fds is readable (or the call is interrupted:
/// `EINTR` comes back as `Ok([false, false])`, the caller just goes round its loop).
/// Returns which of them are readable (or in error or hung up, which a read reports).
#[allow(unsafe_code)]
pub(super) fn poll_readable(fds: [BorrowedFd<'_>; 2]) -> io::Result<[bool; 2]> {
    let mut p = fds.map(|fd| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `p` is an array of two initialised pollfds that outlives the call, and the
    // fds are borrowed, so open, for its duration.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, -1) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([false, false]);
        }
        return Err(e);
    }
    Ok(p.map(|x| x.revents != 0))
}
