//! Tee: duplicate the start of one pipe into another without consuming it (a fan-out's
//! trunk into each destination's pipe, or into a destination that is a pipe).

use io_uring::{opcode, squeue, types};

use super::{OpResult, res, sqe_len};
use crate::sys::{self, SigpipeGuard};

/// `IORING_OP_TEE(pipe_in → pipe_out)`, non-blocking. Available since Linux 5.8; probe
/// `opcode::Tee::CODE` before use. The fan-out runs its tees inline today (see
/// core/fan.rs), so this form is not submitted yet.
#[allow(dead_code)] // the SQE form beside the inline call, as every op/ file has it
pub(crate) fn sqe(pipe_in: i32, pipe_out: i32, len: usize) -> squeue::Entry {
    opcode::Tee::new(types::Fd(pipe_in), types::Fd(pipe_out), sqe_len(len))
        .flags(libc::SPLICE_F_NONBLOCK)
        .build()
}

/// `tee(2)` pipe → pipe, non-blocking, guarded against `SIGPIPE` (the output may be a
/// destination pipe whose reader has gone).
pub(crate) fn call(pipe_in: i32, pipe_out: i32, len: usize, guard: SigpipeGuard) -> OpResult {
    guard.run(true, || res(sys::tee(pipe_in, pipe_out, len)))
}
