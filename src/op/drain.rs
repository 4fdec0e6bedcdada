//! Drain: the engine's pipe → destination.

use io_uring::{opcode, squeue, types};

use super::{OpResult, res, sqe_len, sqe_offset};
use crate::sys::{self, SigpipeGuard};

/// `IORING_OP_SPLICE(pipe → dst)`. (io-wq workers are kernel threads: a closed peer gives
/// `-EPIPE`, never a signal to this process.)
pub(crate) fn sqe(pipe_r: i32, dst: i32, off: Option<u64>, len: usize) -> squeue::Entry {
    opcode::Splice::new(
        types::Fd(pipe_r),
        -1,
        types::Fd(dst),
        sqe_offset(off),
        sqe_len(len),
    )
    .flags(sys::SPLICE_FLAGS)
    .build()
}

/// `splice(2)` pipe → dst, non-blocking, guarded against `SIGPIPE` for sockets.
pub(crate) fn call(
    pipe_r: i32,
    dst: i32,
    off: Option<u64>,
    len: usize,
    guard: (SigpipeGuard, bool),
) -> OpResult {
    guard
        .0
        .run(guard.1, || res(sys::splice(pipe_r, None, dst, off, len)))
}
