//! Every raw call ringsplice makes, each returning `io::Result` (or, for calls that cannot
//! fail in a way the engine acts on, nothing). Nothing here knows about transfers.
//!
//! # Safety
//! The functions here take raw fds and plain buffers. A bad fd can only make the kernel
//! answer `EBADF` (or act on an unrelated fd of this process, which is why the engine keeps
//! every endpoint open while it is in use); buffers are passed as slices, so their length is
//! always right. Each `unsafe` block names the pointer contract it upholds.

mod basic;
mod cachestat;
mod epoll;
mod eventfd;
mod fd;
mod io;
mod pipe;
mod signal;
mod timer;

pub(crate) use basic::timeout_ms;
pub(crate) use cachestat::page_cached;
pub(crate) use epoll::{Epoll, EpollEvent};
pub(crate) use eventfd::{eventfd, eventfd_clear, eventfd_signal, poll_in};
pub(crate) use fd::{
    FdInfo, FdKind, fd_kind, file_position, file_size, set_nonblocking, set_nonblocking_ioctl,
    shutdown_write, socket_keeps_records, status_flags,
};
pub(crate) use io::{
    SPLICE_FLAGS, copy_file_range, peek_record_len, read, recv_record, sendfile, splice, tee, write,
};
pub(crate) use pipe::{
    bytes_readable, granted_pipe_size, open_null, pipe, pipe_size, set_pipe_size,
};
pub(crate) use signal::SigpipeGuard;
pub(crate) use timer::{timerfd, timerfd_set};
