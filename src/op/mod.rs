//! Each operation once, with every form it takes side by side: its SQE for io_uring, its
//! syscall for inline execution on the engine's thread, its readiness interest for epoll
//! (as monoio's `OpAble` and compio's `sys/op/<family>/<backend>.rs` do), so the two
//! backends cannot drift apart.
//!
//! | operation | io_uring SQE | inline syscall |
//! | --- | --- | --- |
//! | [`fill`]: source → engine pipe | `IORING_OP_SPLICE` | `splice(2)` |
//! | [`drain`]: engine pipe → destination | `IORING_OP_SPLICE` | `splice(2)` |
//! | [`direct`]: source → destination, one a pipe | `IORING_OP_SPLICE` | `splice(2)` |
//! | [`sendfile`]: file → socket | — | `sendfile(2)` |
//! | [`copy_range`]: file → file | — | `copy_file_range(2)` |
//! | [`copy`]: through an engine buffer | — | `read(2)` / `write(2)` |
//! | [`record`]: one whole datagram or seqpacket record | — | `recv(2)` |
//! | [`tee`]: pipe → pipe, duplicated, not consumed | `IORING_OP_TEE` (5.8+) | `tee(2)` |
//! | [`poll`]: readiness | `IORING_OP_POLL_ADD` | epoll interest |

pub(crate) mod copy;
pub(crate) mod copy_range;
pub(crate) mod direct;
pub(crate) mod drain;
pub(crate) mod fill;
pub(crate) mod poll;
pub(crate) mod record;
pub(crate) mod sendfile;
pub(crate) mod tee;

/// A syscall or CQE result: bytes moved, or a positive errno.
pub(crate) type OpResult = Result<usize, i32>;

/// An `io::Result` as an [`OpResult`].
pub(crate) fn res(r: std::io::Result<usize>) -> OpResult {
    r.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// An io_uring CQE's `res` as an [`OpResult`].
pub(crate) fn cqe_res(res: i32) -> OpResult {
    if res >= 0 {
        Ok(res as usize)
    } else {
        Err(-res)
    }
}

/// Which side a readiness wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// The source readable.
    Read,
    /// The destination writable.
    Write,
}

/// One operation of an io_uring round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
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

/// Offsets as io_uring's splice takes them: `-1` for "the fd's own position".
pub(crate) fn sqe_offset(off: Option<u64>) -> i64 {
    off.map_or(-1, |v| v as i64)
}

/// A length as an SQE's 32-bit field.
pub(crate) fn sqe_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
