//! Fill: source → the engine's pipe.

use io_uring::{opcode, squeue, types};

use super::{OpResult, res, sqe_len, sqe_offset};
use crate::sys;

/// `IORING_OP_SPLICE(src → pipe)`.
pub(crate) fn sqe(src: i32, off: Option<u64>, pipe_w: i32, len: usize) -> squeue::Entry {
    opcode::Splice::new(
        types::Fd(src),
        sqe_offset(off),
        types::Fd(pipe_w),
        -1,
        sqe_len(len),
    )
    .flags(sys::SPLICE_FLAGS)
    .build()
}

/// `splice(2)` src → pipe, non-blocking.
pub(crate) fn call(src: i32, off: Option<u64>, pipe_w: i32, len: usize) -> OpResult {
    res(sys::splice(src, off, pipe_w, None, len))
}
