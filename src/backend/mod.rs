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

/// How long a blocking wait may sleep: until the caller's deadline or the earliest
/// transfer timer, whichever comes first. `None`: the caller's deadline has passed.
pub(crate) fn block_time(
    deadline: Option<std::time::Instant>,
    timer: Option<std::time::Instant>,
) -> Option<Option<std::time::Duration>> {
    let now = std::time::Instant::now();
    let left = match deadline {
        Some(d) => match d.checked_duration_since(now) {
            Some(l) if !l.is_zero() => Some(l),
            _ => return None,
        },
        None => None,
    };
    let to_timer = timer.map(|t| t.saturating_duration_since(now));
    Some(match (left, to_timer) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
