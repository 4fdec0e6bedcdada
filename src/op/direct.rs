//! Direct: source → destination in one splice, when one side is a pipe.

use io_uring::{opcode, squeue, types};

use super::{OpResult, res, sqe_len, sqe_offset};
use crate::sys::{self, SigpipeGuard};

/// `IORING_OP_SPLICE(src → dst)`.
pub(crate) fn sqe(
    src: i32,
    src_off: Option<u64>,
    dst: i32,
    dst_off: Option<u64>,
    len: usize,
) -> squeue::Entry {
    opcode::Splice::new(
        types::Fd(src),
        sqe_offset(src_off),
        types::Fd(dst),
        sqe_offset(dst_off),
        sqe_len(len),
    )
    .flags(sys::SPLICE_FLAGS)
    .build()
}

/// `splice(2)` src → dst, non-blocking, guarded against `SIGPIPE`.
pub(crate) fn call(
    src: i32,
    src_off: Option<u64>,
    dst: i32,
    dst_off: Option<u64>,
    len: usize,
    guard: SigpipeGuard,
) -> OpResult {
    guard.run(true, || res(sys::splice(src, src_off, dst, dst_off, len)))
}
