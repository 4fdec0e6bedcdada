//! Stats: counters an operator can print or export.

/// Counters since the engine was built. Cheap to copy; read with
/// [`Engine::stats`](crate::Engine::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Transfers accepted by `submit`.
    pub submitted: u64,
    /// Completions handed to the caller.
    pub completed: u64,
    /// Bytes delivered to destinations by transfers whose completion has been queued (in
    /// a completion already returned or about to be). Bytes of transfers still running are
    /// not counted until they complete: see [`Engine::delivered`](crate::Engine::delivered)
    /// for one transfer's progress.
    pub bytes: u64,
    /// `io_uring_enter(2)` calls (io_uring backend) or `epoll_wait(2)` calls (fallback).
    pub enters: u64,
    /// Submission queue entries pushed (io_uring backend).
    pub sqes: u64,
    /// Readiness waits armed (`IORING_OP_POLL_ADD` or epoll interest changes).
    pub polls: u64,
    /// `splice(2)`, `read(2)` and `write(2)` calls made inline by the engine's thread.
    pub inline_calls: u64,
    /// Rounds of linked `IORING_OP_SPLICE` operations submitted (a single fill of a file
    /// chunk that is not in the page cache counts as one).
    pub chain_rounds: u64,
    /// Pipes created.
    pub pipes_created: u64,
    /// Pipes taken from the pool instead of being created.
    pub pipes_reused: u64,
    /// Pipes closed because they still held bytes (never pooled).
    pub pipes_discarded: u64,
    /// Capacity of the pipes alive now (leased or pooled), in bytes: what the pipe budget
    /// bounds.
    pub pipe_bytes: u64,
    /// Times the completion queue had overflowed (the kernel kept CQEs aside, FEAT_NODROP)
    /// and the engine flushed them back: a sign `ring_entries` is small for the load.
    pub cq_overflows: u64,
    /// Transfers that fell back to a read/write copy because splice refused the pair.
    pub copy_fallbacks: u64,
    /// Transfers started on the read/write copy route by choice: [`Strategy::Copy`], or
    /// [`Strategy::Auto`] for a small transfer (see `Builder::copy_threshold`).
    ///
    /// [`Strategy::Copy`]: crate::Strategy::Copy
    /// [`Strategy::Auto`]: crate::Strategy::Auto
    pub copies: u64,
    /// Transfers from a datagram or seqpacket source: moved one whole record at a time
    /// through an engine buffer (never through a pipe, which would cut records).
    pub record_copies: u64,
}
