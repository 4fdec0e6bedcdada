//! The crate's one error type.

use std::fmt;
use std::io;
use std::os::fd::RawFd;

use crate::transfer::Transfer;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operation that failed, named after the syscall or io_uring opcode behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `splice(2)` / `IORING_OP_SPLICE` from the source into the engine's pipe.
    SpliceIn,
    /// `splice(2)` / `IORING_OP_SPLICE` from the engine's pipe into the destination.
    SpliceOut,
    /// `splice(2)` / `IORING_OP_SPLICE` straight from source to destination (one side a pipe).
    Splice,
    /// `tee(2)`: a fan-out's trunk pipe duplicated into a destination's pipe (or into a
    /// destination that is a pipe).
    Tee,
    /// `sendfile(2)` from a regular file (fallback backend).
    Sendfile,
    /// `copy_file_range(2)` between regular files (fallback backend).
    CopyFileRange,
    /// `read(2)`/`pread(2)` of the read/write copy used where splice is refused.
    Read,
    /// `write(2)`/`pwrite(2)` of the read/write copy used where splice is refused.
    Write,
    /// `recv(2)` of one whole record from a datagram or seqpacket socket.
    Recv,
    /// `shutdown(2)` of the destination's write side ([`Transfer::shutdown_destination`]).
    ///
    /// [`Transfer::shutdown_destination`]: crate::Transfer::shutdown_destination
    Shutdown,
    /// `IORING_OP_POLL_ADD` or `epoll_ctl(2)` waiting for readiness.
    Poll,
    /// `fstat(2)` while classifying an endpoint.
    Fstat,
    /// `fcntl(2)` (non-blocking mode, pipe size).
    Fcntl,
    /// `pipe2(2)`.
    Pipe,
    /// `eventfd(2)`.
    Eventfd,
    /// `io_uring_setup(2)`.
    IoUringSetup,
    /// `io_uring_enter(2)`.
    IoUringEnter,
    /// `io_uring_register(2)`.
    IoUringRegister,
    /// `epoll_create1(2)` / `epoll_ctl(2)` / `epoll_wait(2)`.
    Epoll,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::SpliceIn => "splice (source to pipe)",
            Op::SpliceOut => "splice (pipe to destination)",
            Op::Splice => "splice",
            Op::Tee => "tee",
            Op::Sendfile => "sendfile",
            Op::CopyFileRange => "copy_file_range",
            Op::Read => "read",
            Op::Write => "write",
            Op::Recv => "recv",
            Op::Shutdown => "shutdown",
            Op::Poll => "poll",
            Op::Fstat => "fstat",
            Op::Fcntl => "fcntl",
            Op::Pipe => "pipe2",
            Op::Eventfd => "eventfd",
            Op::IoUringSetup => "io_uring_setup",
            Op::IoUringEnter => "io_uring_enter",
            Op::IoUringRegister => "io_uring_register",
            Op::Epoll => "epoll",
        })
    }
}

/// Everything that can go wrong in ringsplice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A syscall or io_uring operation failed; `source` keeps the errno.
    #[error("{op} failed on fd {fd}: {source}")]
    Io {
        /// Which operation failed.
        op: Op,
        /// The file descriptor it was applied to (`-1` where none applies).
        fd: RawFd,
        /// The OS error, with its errno (`source.raw_os_error()`).
        #[source]
        source: io::Error,
    },
    /// The source reached end of file before the exact length asked for.
    #[error("source ended after {delivered} of {expected} bytes")]
    UnexpectedEof {
        /// The exact length the transfer asked for.
        expected: u64,
        /// Bytes delivered to the destination.
        delivered: u64,
    },
    /// The next record of a datagram or seqpacket source is longer than what the
    /// transfer's exact length has left. The record was not taken: it is still queued on
    /// the source socket, and the bytes before it were delivered.
    #[error("source fd {fd}: next record is {record} bytes, only {room} left of the transfer")]
    RecordTooLong {
        /// The source socket.
        fd: RawFd,
        /// The record's length.
        record: u64,
        /// Bytes the transfer had left to take.
        room: u64,
    },
    /// The transfer was cancelled with [`Engine::cancel`](crate::Engine::cancel) or by
    /// dropping the engine.
    #[error("transfer cancelled")]
    Cancelled,
    /// The transfer's deadline ([`Transfer::timeout`](crate::Transfer::timeout)) or idle
    /// timeout ([`Transfer::idle_timeout`](crate::Transfer::idle_timeout)) passed; it was
    /// cancelled. For a best-effort fan-out destination: the
    /// [linger](crate::FanOut::linger) ended before it had every byte.
    #[error("transfer timed out")]
    TimedOut,
    /// `submit` was refused: the configured maximum of transfers is in flight.
    #[error("engine full: {max} transfers already in flight")]
    Full {
        /// The configured maximum (`Builder::max_transfers`).
        max: usize,
    },
    /// The transfer or the configuration cannot work (bad fd kind, same pipe on both sides,
    /// inconsistent builder settings, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The io_uring backend was asked for but this kernel or sandbox cannot provide it.
    #[error("io_uring backend unavailable: {0}")]
    Unsupported(String),
    /// The pipe memory budget cannot hold even one pipe of the configured size (or, for a
    /// fan-out, the two it needs at least; or a pipe for a best-effort destination that had
    /// to buffer at once).
    #[error("pipe memory budget exhausted: {0}")]
    PipeBudget(String),
    /// A best-effort destination of a fan-out fell too far behind and was dropped.
    #[error("destination dropped: {behind} bytes behind the source, past max_lag {max_lag}")]
    Lagged {
        /// Bytes taken from the source that it had not accepted when it was dropped.
        behind: u64,
        /// Its policy's `max_lag`.
        max_lag: u64,
    },
    /// A required destination of a fan-out failed (its own error is in its
    /// [`Branch`](crate::Branch)), which stopped the fan-out.
    #[error("fan-out stopped: required destination {index} failed")]
    DestinationFailed {
        /// Its place among the fan-out's destinations, from 0.
        index: usize,
    },
}

impl Error {
    pub(crate) fn io(op: Op, fd: RawFd, source: io::Error) -> Error {
        Error::Io { op, fd, source }
    }

    pub(crate) fn errno(op: Op, fd: RawFd, errno: i32) -> Error {
        Error::Io {
            op,
            fd,
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The errno behind this error, if it came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::UnexpectedEof { .. } => io::ErrorKind::UnexpectedEof,
            Error::RecordTooLong { .. } => io::ErrorKind::InvalidData,
            Error::Cancelled => io::ErrorKind::Interrupted,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::Full { .. } => io::ErrorKind::WouldBlock,
            Error::InvalidInput(_) => io::ErrorKind::InvalidInput,
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::PipeBudget(_) => io::ErrorKind::OutOfMemory,
            Error::Lagged { .. } => io::ErrorKind::TimedOut,
            Error::DestinationFailed { .. } => io::ErrorKind::BrokenPipe,
        };
        // The errno stays reachable: `get_ref()` downcasts to this `Error`, whose
        // `raw_os_error()` keeps it.
        io::Error::new(kind, e)
    }
}

/// A transfer that [`Engine::submit`](crate::Engine::submit) refused, handed back with the
/// reason so the caller keeps its file descriptors.
pub struct Rejected {
    /// Why it was refused.
    pub error: Error,
    /// The transfer, untouched (boxed to keep `Result<TransferId, Rejected>` small).
    pub transfer: Box<Transfer>,
}

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .field("transfer", &self.transfer)
            .finish()
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transfer rejected: {}", self.error)
    }
}

impl std::error::Error for Rejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<Rejected> for Error {
    fn from(r: Rejected) -> Error {
        r.error
    }
}

impl From<Rejected> for io::Error {
    fn from(r: Rejected) -> io::Error {
        r.error.into()
    }
}
