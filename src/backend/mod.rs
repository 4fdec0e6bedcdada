//! The two backends. Each turns the state machine's decisions into syscalls:
//! - [`uring`]: io_uring, with linked `IORING_OP_SPLICE` chains and `IORING_OP_POLL_ADD`
//!   readiness for inline splices;
//! - [`fallback`]: epoll readiness and inline syscalls, for kernels and sandboxes without
//!   io_uring splice.
//!
//! [`inline`] is the part both share: carrying out the machine's steps on the engine's own
//! thread.

pub(crate) mod fallback;
pub(crate) mod inline;
pub(crate) mod uring;

/// One operation of an io_uring round, with its result once the CQE has arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundOp {
    pub(crate) kind: RoundKind,
    pub(crate) res: Option<i32>,
}

/// What a round operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoundKind {
    /// Wait until the source is readable.
    PollIn,
    /// Wait until the destination is writable.
    PollOut,
    /// Source to pipe.
    Fill,
    /// Pipe to destination.
    Drain,
    /// Source to destination.
    Direct,
}
