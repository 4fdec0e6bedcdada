//! FanOut: one source to many destinations, its per-destination policies, and what each
//! destination got ([`Branch`] in the [`Completion`](crate::Completion)).

use std::fmt;
use std::time::Duration;

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::transfer::Length;

/// Fewest destinations a fan-out takes (one is an ordinary [`Transfer`](crate::Transfer)).
pub const MIN_FAN_OUT: usize = 2;
/// Most destinations a fan-out takes.
pub const MAX_FAN_OUT: usize = 64;

/// What happens to the whole fan-out when one destination is slow or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The destination gets every byte: while it is slow it holds the source back (no
    /// more is read than it has room for), and its failure fails the whole fan-out.
    #[default]
    Required,
    /// A mirror: it never holds the source back. It buffers what its destination has not
    /// accepted yet in pipes of its own, up to `max_lag` bytes (or `max_lag` ÷
    /// [`Builder::pipe_size`](crate::Builder::pipe_size) pipes, rounded up). When the
    /// others have moved on past what it could buffer it is dropped, with
    /// [`Error::Lagged`] and the bytes it missed counted; or with [`Error::PipeBudget`]
    /// when the budget has no pipe for it at that moment. When it fails (its peer resets,
    /// say) only it stops; the others go on untouched. Once the main path is done it has
    /// the fan-out's [linger](FanOut::linger) to deliver the rest.
    BestEffort {
        /// Bytes taken from the source and not yet accepted by this destination, at most.
        max_lag: u64,
    },
}

/// One source to 2 to 64 destinations: every destination gets the same bytes, duplicated
/// inside the kernel with `tee(2)` (page references, no copy). Submit it with
/// [`Engine::submit_fan_out`](crate::Engine::submit_fan_out); its
/// [`Completion`](crate::Completion) has one [`Branch`] per destination, in the order they
/// were added.
///
/// ```no_run
/// # use ringsplice::{Engine, FanOut, Length, Policy};
/// # fn f(engine: &mut Engine, client: std::net::TcpStream, upstream: std::net::TcpStream,
/// #      mirror: std::net::TcpStream) -> Result<(), Box<dyn std::error::Error>> {
/// let id = engine.submit_fan_out(
///     FanOut::new(client)
///         .destination(upstream, Policy::Required)
///         .destination(mirror, Policy::BestEffort { max_lag: 1 << 20 })
///         .length(Length::UntilEof)
///         .tag(7),
/// )?;
/// # Ok(()) }
/// ```
pub struct FanOut {
    pub(crate) src: Endpoint,
    pub(crate) dsts: Vec<(Endpoint, Policy)>,
    pub(crate) len: Length,
    pub(crate) tag: u64,
    pub(crate) shutdown_destinations: bool,
    pub(crate) linger: Option<Duration>,
}

/// How long best-effort destinations may go on delivering once the main path is done,
/// unless [`FanOut::linger`] says otherwise.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(1);

impl FanOut {
    /// A fan-out of everything `source` yields until end of file; add destinations with
    /// [`destination`](FanOut::destination).
    pub fn new(source: impl Into<Endpoint>) -> FanOut {
        FanOut {
            src: source.into(),
            dsts: Vec::new(),
            len: Length::UntilEof,
            tag: 0,
            shutdown_destinations: false,
            linger: Some(DEFAULT_LINGER),
        }
    }

    /// Adds a destination with its policy.
    pub fn destination(mut self, dst: impl Into<Endpoint>, policy: Policy) -> FanOut {
        self.dsts.push((dst.into(), policy));
        self
    }

    /// How much to take from the source (default: [`Length::UntilEof`]).
    pub fn length(mut self, len: Length) -> FanOut {
        self.len = len;
        self
    }

    /// The caller's own tag, returned in the completion.
    pub fn tag(mut self, tag: u64) -> FanOut {
        self.tag = tag;
        self
    }

    /// Pass the half-close on (as
    /// [`Transfer::shutdown_destination`](crate::Transfer::shutdown_destination) does):
    /// shut down the write side of every socket destination that got every byte. The
    /// required ones are shut down as soon as the main path is done (see
    /// [`linger`](FanOut::linger)), so a best-effort destination still behind never holds
    /// back the end of stream its peers wait for; best-effort ones when the fan-out
    /// completes `Ok`.
    pub fn shutdown_destinations(mut self, yes: bool) -> FanOut {
        self.shutdown_destinations = yes;
        self
    }

    /// How long best-effort destinations may go on once the main path is done — the
    /// source is done and every required destination has every byte (default
    /// [`DEFAULT_LINGER`]; `None`: as long as they need). At that point the required
    /// branches have succeeded; a best-effort destination that still has not got every
    /// byte when the linger ends is dropped with [`Error::TimedOut`] and what it missed
    /// counted, and the fan-out completes. So a mirror that stops reading near the end of
    /// a stream — within its `max_lag`, so never dropped for lag — delays the completion
    /// by at most this, and the required destinations not at all.
    pub fn linger(mut self, limit: Option<Duration>) -> FanOut {
        self.linger = limit;
        self
    }

    /// Takes the fan-out apart, giving back its endpoints.
    pub fn into_endpoints(self) -> (Endpoint, Vec<Endpoint>) {
        (self.src, self.dsts.into_iter().map(|d| d.0).collect())
    }
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("src", &self.src)
            .field("dsts", &self.dsts)
            .field("len", &self.len)
            .field("tag", &self.tag)
            .field("shutdown_destinations", &self.shutdown_destinations)
            .field("linger", &self.linger)
            .finish()
    }
}

/// What one destination of a fan-out got.
#[derive(Debug)]
#[non_exhaustive]
pub struct Branch {
    /// The destination endpoint, handed back.
    pub destination: Endpoint,
    /// Its policy.
    pub policy: Policy,
    /// Exactly how many bytes this destination accepted.
    pub delivered: u64,
    /// Bytes taken from the source that this destination did not accept (0 when it got
    /// everything: the completion's `delivered`).
    pub missed: u64,
    /// `Ok` when it got every byte taken from the source, or what stopped it:
    /// its own error, [`Error::Lagged`] or [`Error::PipeBudget`] (a best-effort one
    /// dropped), [`Error::DestinationFailed`] (a required one failed and stopped the
    /// others), [`Error::Cancelled`].
    pub result: Result<(), Error>,
}

/// A fan-out `submit_fan_out` refused, with the fan-out handed back.
pub struct RejectedFanOut {
    /// Why it was refused.
    pub error: Error,
    /// The fan-out, untouched.
    pub fan_out: Box<FanOut>,
}

impl fmt::Debug for RejectedFanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectedFanOut")
            .field("error", &self.error)
            .field("fan_out", &self.fan_out)
            .finish()
    }
}

impl fmt::Display for RejectedFanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fan-out rejected: {}", self.error)
    }
}

impl std::error::Error for RejectedFanOut {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<RejectedFanOut> for Error {
    fn from(r: RejectedFanOut) -> Error {
        r.error
    }
}

impl From<RejectedFanOut> for std::io::Error {
    fn from(r: RejectedFanOut) -> std::io::Error {
        r.error.into()
    }
}
