//! Transfer: what to move, from where to where, and the caller's tag.

use std::fmt;
use std::time::Duration;

use crate::endpoint::Endpoint;

/// How much to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Exactly this many bytes; a source that ends sooner completes the transfer with
    /// [`Error::UnexpectedEof`](crate::Error::UnexpectedEof).
    Exact(u64),
    /// Until the source reports end of file.
    UntilEof,
}

/// How a transfer's bytes move. The fallback backend always works inline; it honours
/// [`Copy`](Strategy::Copy) and the small-transfer choice of [`Auto`](Strategy::Auto) too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Chosen per transfer: [`Chain`](Strategy::Chain) for regular-file sources (their reads
    /// may block, and the io-wq worker takes that off the caller's thread),
    /// [`Inline`](Strategy::Inline) for pollable sources (sockets, pipes), and
    /// [`Copy`](Strategy::Copy) when a socket sends a known length of at most
    /// [`Builder::copy_threshold`](crate::Builder::copy_threshold) bytes (default 0: never) to a socket
    /// (splicing a few KiB through a pipe costs more than copying them; a pipe on either
    /// side is one direct splice, and a file source may block on the disk, so those are
    /// never copied by `Auto`).
    #[default]
    Auto,
    /// Linked `IORING_OP_SPLICE` operations run by the kernel: `SPLICE(src → pipe)` then
    /// `SPLICE(pipe → dst)`, gated by `IORING_OP_POLL_ADD` for pollable endpoints.
    /// io_uring backend only (Linux 5.7+: `IORING_OP_SPLICE`; the hard links it relies on
    /// are 5.6+); the fallback runs such a transfer inline.
    Chain,
    /// `IORING_OP_POLL_ADD` reports readiness (epoll on the fallback), then the engine's
    /// own thread calls non-blocking `splice(2)` inside `poll`/`wait`. Any kernel.
    Inline,
    /// Readiness as for [`Inline`](Strategy::Inline), then non-blocking `read(2)`/`write(2)`
    /// through an engine buffer (no pipe): for small messages. A regular-file source is
    /// read on the engine's thread, so a cold page cache blocks `poll`/`wait` while the
    /// disk answers.
    Copy,
}

/// Identifies a submitted transfer until its completion has been returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(pub(crate) u64);

impl TransferId {
    /// The id as a number (unique among the transfers of one engine).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// One transfer: bytes from `source` to `destination`.
///
/// ```no_run
/// # use ringsplice::{Transfer, Length};
/// # fn f(file: std::fs::File, sock: std::net::TcpStream) {
/// let t = Transfer::new(file, sock)
///     .length(Length::Exact(4096))
///     .source_offset(512)
///     .tag(7);
/// # }
/// ```
pub struct Transfer {
    pub(crate) src: Endpoint,
    pub(crate) dst: Endpoint,
    pub(crate) len: Length,
    pub(crate) src_off: Option<u64>,
    pub(crate) dst_off: Option<u64>,
    pub(crate) tag: u64,
    pub(crate) strategy: Strategy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) shutdown_destination: bool,
}

impl Transfer {
    /// A transfer of everything `source` yields until end of file into `destination`.
    pub fn new(source: impl Into<Endpoint>, destination: impl Into<Endpoint>) -> Transfer {
        Transfer {
            src: source.into(),
            dst: destination.into(),
            len: Length::UntilEof,
            src_off: None,
            dst_off: None,
            tag: 0,
            strategy: Strategy::Auto,
            timeout: None,
            idle_timeout: None,
            shutdown_destination: false,
        }
    }

    /// How much to move (default: [`Length::UntilEof`]).
    pub fn length(mut self, len: Length) -> Transfer {
        self.len = len;
        self
    }

    /// Read the source at this offset (a regular file), like `pread`; the file position is
    /// left alone. Without it, a file source is read from, and advances, its file position.
    pub fn source_offset(mut self, off: u64) -> Transfer {
        self.src_off = Some(off);
        self
    }

    /// Write the destination at this offset (a regular file), like `pwrite`.
    pub fn destination_offset(mut self, off: u64) -> Transfer {
        self.dst_off = Some(off);
        self
    }

    /// The caller's own tag, returned in the completion.
    pub fn tag(mut self, tag: u64) -> Transfer {
        self.tag = tag;
        self
    }

    /// Force a strategy (default [`Strategy::Auto`]).
    pub fn strategy(mut self, s: Strategy) -> Transfer {
        self.strategy = s;
        self
    }

    /// Cancel the transfer with [`Error::TimedOut`](crate::Error::TimedOut) if it has not
    /// finished this long after `submit`.
    pub fn timeout(mut self, limit: Duration) -> Transfer {
        self.timeout = Some(limit);
        self
    }

    /// Cancel the transfer with [`Error::TimedOut`](crate::Error::TimedOut) when no byte
    /// has reached the destination for this long.
    pub fn idle_timeout(mut self, limit: Duration) -> Transfer {
        self.idle_timeout = Some(limit);
        self
    }

    /// Once every byte has been delivered (the transfer completes `Ok`), shut down the
    /// destination socket's write side (`shutdown(SHUT_WR)`), so its peer reads end of
    /// stream while the socket stays open for the other direction: a half-close passed on,
    /// as a proxy does when one side finishes sending (default `false`). The destination
    /// must be a socket ([`Error::InvalidInput`](crate::Error::InvalidInput) otherwise); a
    /// failed shutdown is the completion's error ([`Op::Shutdown`](crate::Op::Shutdown)).
    /// Nothing is shut down when the transfer fails or is cancelled.
    pub fn shutdown_destination(mut self, yes: bool) -> Transfer {
        self.shutdown_destination = yes;
        self
    }

    /// Takes the transfer apart, giving back its endpoints.
    pub fn into_endpoints(self) -> (Endpoint, Endpoint) {
        (self.src, self.dst)
    }
}

impl fmt::Debug for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfer")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("len", &self.len)
            .field("src_off", &self.src_off)
            .field("dst_off", &self.dst_off)
            .field("tag", &self.tag)
            .field("strategy", &self.strategy)
            .field("timeout", &self.timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("shutdown_destination", &self.shutdown_destination)
            .finish()
    }
}
