//! What an fd is, and its flags: `fstat`, `fcntl`, `getsockopt(SO_TYPE)`, `shutdown`.

use std::io;
use std::os::fd::RawFd;

use super::basic::cvt;

/// What kind of file an fd refers to, as far as choosing a route is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdKind {
    /// A regular file: always "ready", reads may block on the disk, has offsets.
    File,
    /// A pipe or FIFO.
    Pipe,
    /// A socket of any family and type.
    Socket,
    /// A character device or anything else pollable.
    Other,
    /// A directory: never a valid endpoint.
    Directory,
}

/// What the engine learnt about one fd when a transfer started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FdInfo {
    pub(crate) kind: FdKind,
    /// (device, inode).
    pub(crate) id: (u64, u64),
    /// Status flags; for sockets just `O_RDWR` (their access mode), not read from the kernel.
    pub(crate) flags: i32,
    /// A socket that keeps record boundaries (`SOCK_DGRAM`, `SOCK_SEQPACKET`): splicing it
    /// into a pipe cuts any record that does not fit and drops the rest of it, so it is
    /// only ever read a whole record at a time.
    pub(crate) records: bool,
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer for one `struct stat`.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `fstat(2)`: the kind of the fd and its (device, inode) identity.
pub(crate) fn fd_kind(fd: RawFd) -> io::Result<(FdKind, (u64, u64))> {
    let st = fstat(fd)?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FdKind::File,
        libc::S_IFIFO => FdKind::Pipe,
        libc::S_IFSOCK => FdKind::Socket,
        libc::S_IFDIR => FdKind::Directory,
        _ => FdKind::Other,
    };
    Ok((kind, (st.st_dev, st.st_ino)))
}

/// A file's size (`fstat`).
pub(crate) fn file_size(fd: RawFd) -> io::Result<u64> {
    Ok(fstat(fd)?.st_size.max(0) as u64)
}

/// The file position (`lseek(fd, 0, SEEK_CUR)`).
pub(crate) fn file_position(fd: RawFd) -> io::Result<u64> {
    // SAFETY: lseek takes no pointers.
    let r = cvt(unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) })?;
    Ok(r as u64)
}

/// Whether a socket keeps record boundaries: `getsockopt(SO_TYPE)` is `SOCK_DGRAM` or
/// `SOCK_SEQPACKET` (`SOCK_RAW` and `SOCK_RDM` deliver records too).
pub(crate) fn socket_keeps_records(fd: RawFd) -> io::Result<bool> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let p = (&mut ty as *mut libc::c_int).cast();
    // SAFETY: `ty` and `len` are valid out-pointers; `len` holds the size of `ty`.
    cvt(unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, p, &mut len) })?;
    Ok(matches!(
        ty,
        libc::SOCK_DGRAM | libc::SOCK_SEQPACKET | libc::SOCK_RAW | libc::SOCK_RDM
    ))
}

/// The file status flags (`F_GETFL`).
pub(crate) fn status_flags(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no pointer argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// Sets `O_NONBLOCK` if `flags` (from [`status_flags`]) lack it.
pub(crate) fn set_nonblocking(fd: RawFd, flags: i32) -> io::Result<()> {
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL takes an int argument.
        cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    }
    Ok(())
}

/// Sets `O_NONBLOCK` with one `ioctl(FIONBIO)`, without reading the flags first (for
/// sockets, whose access mode is always read-write).
pub(crate) fn set_nonblocking_ioctl(fd: RawFd) -> io::Result<()> {
    let mut on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one int through the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd, libc::FIONBIO, &mut on as *mut libc::c_int) })?;
    Ok(())
}

/// `shutdown(fd, SHUT_WR)`: the socket's peer reads end of stream.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes two ints.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) }).map(drop)
}
