//! Every raw libc call ringsplice makes, each returning `io::Result`.
//!
//! # Safety
//! The functions here take raw fds and plain buffers. A bad fd can only make the kernel
//! answer `EBADF` (or act on an unrelated fd of this process, which is why the engine keeps
//! every endpoint open while it is in use); buffers are passed as slices, so their length is
//! always right.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Calls a libc function and turns `-1` into `io::Error::last_os_error()`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller of the macro passes arguments that satisfy the syscall's contract;
        // each call site documents why.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`: never block in the pipe; move pages where possible.
pub(crate) const SPLICE_FLAGS: u32 = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;

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
#[derive(Debug, Clone, Copy)]
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

/// Whether a socket keeps record boundaries: `getsockopt(SO_TYPE)` is `SOCK_DGRAM` or
/// `SOCK_SEQPACKET` (`SOCK_RAW` and `SOCK_RDM` deliver records too).
pub(crate) fn socket_keeps_records(fd: RawFd) -> io::Result<bool> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are valid out-pointers; `len` holds the size of `ty`.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_TYPE,
        (&mut ty as *mut libc::c_int).cast(),
        &mut len
    ))?;
    Ok(matches!(
        ty,
        libc::SOCK_DGRAM | libc::SOCK_SEQPACKET | libc::SOCK_RAW | libc::SOCK_RDM
    ))
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
    syscall!(recv(fd, (&mut byte as *mut u8).cast(), 0, flags)).map(|n| n as usize)
}

/// Takes the next record whole: `recv(MSG_TRUNC | MSG_DONTWAIT)` into `buf`. The result is
/// the record's full length; more than `buf.len()` means the kernel cut it (another reader
/// took the record [`peek_record_len`] saw and left a longer one).
pub(crate) fn recv_record(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let flags = libc::MSG_TRUNC | libc::MSG_DONTWAIT;
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
    syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags)).map(|n| n as usize)
}

/// `fstat(2)`: the kind of the fd and its (device, inode) identity.
pub(crate) fn fd_kind(fd: RawFd) -> io::Result<(FdKind, (u64, u64))> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer for one `struct stat`.
    syscall!(fstat(fd, st.as_mut_ptr()))?;
    // SAFETY: fstat succeeded, so it filled `st`.
    let st = unsafe { st.assume_init() };
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FdKind::File,
        libc::S_IFIFO => FdKind::Pipe,
        libc::S_IFSOCK => FdKind::Socket,
        libc::S_IFDIR => FdKind::Directory,
        _ => FdKind::Other,
    };
    Ok((kind, (st.st_dev, st.st_ino)))
}

/// Sets `O_NONBLOCK` if `flags` (from [`status_flags`]) lack it.
pub(crate) fn set_nonblocking(fd: RawFd, flags: i32) -> io::Result<()> {
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: F_SETFL takes an int argument.
        syscall!(fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// Sets `O_NONBLOCK` with one `ioctl(FIONBIO)`, without reading the flags first (for
/// sockets, whose access mode is always read-write).
pub(crate) fn set_nonblocking_ioctl(fd: RawFd) -> io::Result<()> {
    let mut on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one int through the pointer, which is valid for the call.
    syscall!(ioctl(fd, libc::FIONBIO, &mut on as *mut libc::c_int))?;
    Ok(())
}

/// The file status flags (`F_GETFL`).
pub(crate) fn status_flags(fd: RawFd) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no pointer argument.
    syscall!(fcntl(fd, libc::F_GETFL))
}

/// `pipe2(O_CLOEXEC | O_NONBLOCK)`: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK))?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `F_SETPIPE_SZ`; returns the size the kernel chose.
pub(crate) fn set_pipe_size(fd: RawFd, size: usize) -> io::Result<usize> {
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ takes an int argument.
    syscall!(fcntl(fd, libc::F_SETPIPE_SZ, size)).map(|n| n as usize)
}

/// The size `F_SETPIPE_SZ` grants for a request of `size` bytes: a power-of-two number of
/// pages (`round_pipe_size()` in the kernel's fs/pipe.c).
pub(crate) fn granted_pipe_size(size: usize) -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    size.div_ceil(page).max(1).next_power_of_two() * page
}

/// `cachestat(2)` (Linux 6.5+) is missing or forbidden here: stop asking.
static NO_CACHESTAT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether every page of `[off, off + len)` of a regular file is in the page cache, so a
/// read of it will not wait for the disk: `cachestat(2)`, one syscall for any range. `false`
/// when unknown (no cachestat: Linux before 6.5, a seccomp filter, a filesystem without
/// it). A page evicted between this call and the read makes that read wait after all; the
/// window is one syscall wide.
pub(crate) fn page_cached(fd: RawFd, off: u64, len: usize) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    if len == 0 || NO_CACHESTAT.load(Relaxed) {
        return false;
    }
    /// `struct cachestat_range` (include/uapi/linux/mman.h).
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    /// `struct cachestat`: only `nr_cache` is read.
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        rest: [u64; 4],
    }
    // 451 on every architecture: cachestat was added (6.5, commit cf264e1329fb) after the
    // syscall tables were unified; libc 0.2 names it only for some targets.
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range {
        off,
        len: len as u64,
    };
    let mut st = Stat::default();
    // SAFETY: both pointers are valid for the call; flags must be 0.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const Range,
            &mut st as *mut Stat,
            0 as libc::c_uint,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error().raw_os_error();
        if matches!(e, Some(libc::ENOSYS) | Some(libc::EPERM)) {
            NO_CACHESTAT.store(true, Relaxed);
        }
        return false;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let pages = (off + len as u64).div_ceil(page) - off / page;
    st.nr_cache >= pages
}

/// A file's size (`fstat`).
pub(crate) fn file_size(fd: RawFd) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a valid out-pointer for one `struct stat`.
    syscall!(fstat(fd, st.as_mut_ptr()))?;
    // SAFETY: fstat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() }.st_size.max(0) as u64)
}

/// The file position (`lseek(fd, 0, SEEK_CUR)`).
pub(crate) fn file_position(fd: RawFd) -> io::Result<u64> {
    // SAFETY: lseek takes no pointers.
    let r = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// `F_GETPIPE_SZ`.
pub(crate) fn pipe_size(fd: RawFd) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ takes no argument.
    syscall!(fcntl(fd, libc::F_GETPIPE_SZ)).map(|n| n as usize)
}

/// `FIONREAD`: bytes waiting in a pipe.
pub(crate) fn bytes_readable(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer.
    syscall!(ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int))?;
    Ok(n.max(0) as usize)
}

/// Calls `f` with pointers to copies of two optional offsets (null for `None`), the form
/// `splice` and `copy_file_range` take them in. The copies are discarded: the state machine
/// advances its own offsets by the result.
fn with_offsets<R>(
    a: Option<u64>,
    b: Option<u64>,
    f: impl FnOnce(*mut libc::loff_t, *mut libc::loff_t) -> R,
) -> R {
    let (mut ta, mut tb) = (
        a.unwrap_or(0) as libc::loff_t,
        b.unwrap_or(0) as libc::loff_t,
    );
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

/// `splice(2)` with `SPLICE_F_NONBLOCK | SPLICE_F_MOVE`. An offset given is used and not
/// advanced here: the state machine advances its own copy by the result.
pub(crate) fn splice(
    fd_in: RawFd,
    off_in: Option<u64>,
    fd_out: RawFd,
    off_out: Option<u64>,
    len: usize,
) -> io::Result<usize> {
    with_offsets(off_in, off_out, |pi, po| {
        // SAFETY: the offset pointers are null or point at locals that outlive the call.
        syscall!(splice(fd_in, pi, fd_out, po, len, SPLICE_FLAGS)).map(|n| n as usize)
    })
}

/// `sendfile(2)` from a regular file; an offset given is used, not advanced.
pub(crate) fn sendfile(
    out_fd: RawFd,
    in_fd: RawFd,
    off: Option<u64>,
    len: usize,
) -> io::Result<usize> {
    with_offsets(off, None, |p, _| {
        // SAFETY: `p` is null or points at a local `loff_t` (`off64_t`) that outlives the
        // call.
        syscall!(sendfile64(out_fd, in_fd, p, len)).map(|n| n as usize)
    })
}

/// `copy_file_range(2)`; offsets given are used, not advanced.
pub(crate) fn copy_file_range(
    fd_in: RawFd,
    off_in: Option<u64>,
    fd_out: RawFd,
    off_out: Option<u64>,
    len: usize,
) -> io::Result<usize> {
    with_offsets(off_in, off_out, |pi, po| {
        // SAFETY: the offset pointers are null or point at locals that outlive the call.
        syscall!(copy_file_range(fd_in, pi, fd_out, po, len, 0)).map(|n| n as usize)
    })
}

/// `read(2)` or, with an offset, `pread(2)`.
pub(crate) fn read(fd: RawFd, off: Option<u64>, buf: &mut [u8]) -> io::Result<usize> {
    let p = buf.as_mut_ptr().cast();
    match off {
        // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
        Some(o) => syscall!(pread(fd, p, buf.len(), o as libc::off_t)),
        // SAFETY: as above.
        None => syscall!(read(fd, p, buf.len())),
    }
    .map(|n| n as usize)
}

/// `write(2)` or, with an offset, `pwrite(2)`. Sockets use `send(MSG_NOSIGNAL)` so a closed
/// peer gives `EPIPE` instead of `SIGPIPE`.
pub(crate) fn write(fd: RawFd, off: Option<u64>, buf: &[u8], socket: bool) -> io::Result<usize> {
    let p = buf.as_ptr().cast();
    match off {
        // SAFETY: `buf` is valid for `buf.len()` bytes of reads.
        Some(o) => syscall!(pwrite(fd, p, buf.len(), o as libc::off_t)),
        // SAFETY: as above.
        None if socket => syscall!(send(fd, p, buf.len(), libc::MSG_NOSIGNAL)),
        // SAFETY: as above.
        None => syscall!(write(fd, p, buf.len())),
    }
    .map(|n| n as usize)
}

/// `shutdown(fd, SHUT_WR)`: the socket's peer reads end of stream.
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown takes two ints.
    syscall!(shutdown(fd, libc::SHUT_WR)).map(drop)
}

/// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
    // SAFETY: eventfd succeeded; the fd is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd (makes it readable).
pub(crate) fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local. EAGAIN (counter saturated) means it is readable
    // already, which is all a signal needs, so the result is ignored.
    let _ = syscall!(write(fd, (&one as *const u64).cast(), 8));
}

/// Resets an eventfd to zero (not readable).
pub(crate) fn eventfd_clear(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a local. EAGAIN (already zero) is fine, so it is ignored.
    let _ = syscall!(read(fd, (&mut v as *mut u64).cast(), 8));
}

/// `poll(2)` on one fd for `POLLIN`, with a timeout in milliseconds (-1: forever).
pub(crate) fn poll_in(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = syscall!(poll(&mut p, 1, timeout_ms))?;
    Ok(n > 0)
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

/// Whether `SIGPIPE` is ignored in this process (Rust binaries ignore it before `main`; a
/// C host may not).
pub(crate) fn sigpipe_ignored() -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a null new action only queries; `old` is a valid out-pointer.
    let r = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) };
    if r != 0 {
        return false;
    }
    // SAFETY: sigaction succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    old.sa_sigaction == libc::SIG_IGN
}

fn sigpipe_set() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset takes a valid signal number.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        set.assume_init()
    }
}

/// Blocks `SIGPIPE` in this thread; returns the previous mask.
pub(crate) fn block_sigpipe() -> libc::sigset_t {
    let set = sigpipe_set();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: both pointers are valid sigsets. pthread_sigmask cannot fail with a valid `how`.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr());
        old.assume_init()
    }
}

/// Takes a pending `SIGPIPE` (raised for this thread by a write into a closed peer) off the
/// pending set, so unblocking it does not deliver it.
pub(crate) fn consume_sigpipe() {
    let set = sigpipe_set();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid set and timeout; EAGAIN (none pending) is fine.
    unsafe {
        libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
    }
}

/// Restores a mask saved by [`block_sigpipe`].
pub(crate) fn restore_sigmask(old: libc::sigset_t) {
    // SAFETY: `old` is a valid sigset from pthread_sigmask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// `timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)`.
pub(crate) fn timerfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers.
    let fd = syscall!(timerfd_create(
        libc::CLOCK_MONOTONIC,
        libc::TFD_NONBLOCK | libc::TFD_CLOEXEC
    ))?;
    // SAFETY: the fd is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms a timerfd to fire once, `after` from now (at least 1 µs: zero would disarm it).
pub(crate) fn timerfd_set(fd: RawFd, after: std::time::Duration) -> io::Result<()> {
    let after = after.max(std::time::Duration::from_micros(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            tv_nsec: after.subsec_nanos() as libc::c_long,
        },
    };
    // SAFETY: `spec` is valid for reads; the old value is not asked for.
    syscall!(timerfd_settime(fd, 0, &spec, std::ptr::null_mut()))?;
    Ok(())
}
